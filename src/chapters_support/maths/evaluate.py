"""Expression trees (:mod:`~chapters_support.maths.parse`) evaluated on torch tensors.

Written by hand because no library evaluates *this book's* notation: bold symbols are
column vectors and matrices (juxtaposition is a matrix product, ``^\\top`` a transpose),
``X_{ij}`` names entries, ``\\sum_i`` reduces over a named index, ``\\mathbf{1}`` takes its
size from what it meets, and partial derivatives are computed by autograd on the graph of
the bound symbols (never by the author's code), so they are an independent reference.

A value is a :class:`Val`: a tensor whose leading dimensions are named free indices
(``idx``, for entry-wise formulas and for test points) and whose trailing ``body`` is a
scalar, a column ``(n, 1)``, a row ``(1, n)``, a matrix, or an array (three or more axes).
Anything outside the subset raises :class:`~chapters_support.maths.parse.Unsupported`; a
symbol with no value raises :class:`Unbound`; a shape that cannot be, :class:`ShapeError`.
"""

from __future__ import annotations

import contextlib
import inspect
import keyword
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, cast, overload

import torch

from chapters_support.maths.parse import (
    GREEK,
    Apply,
    Binary,
    Block,
    Bound,
    Chain,
    Const,
    Func,
    Index,
    Interval,
    Iverson,
    Name,
    Node,
    Num,
    Partial,
    Reduce,
    Script,
    Space,
    Sqrt,
    Tuple,
    Unary,
    Unsupported,
    parse_symbol,
)


class Unbound(Exception):
    """A symbol the maths uses that is neither bound, defined in the derivation, nor known."""

    def __init__(self, spelling: str, hint: str = "") -> None:
        super().__init__(spelling)
        self.spelling = spelling
        self.hint = hint


class ShapeError(Exception):
    """Two values that cannot meet: the maths (or the binding) has the wrong shapes."""


class BindingError(Exception):
    """A binding that cannot be used as given (the message says why and how to fix it)."""


# -- values -----------------------------------------------------------------------------------


@dataclass
class Val:
    t: torch.Tensor
    idx: tuple[str, ...] = ()
    body: int = 0  # 0 scalar, 2 vector or matrix, >= 3 array
    integer: bool = False  # an index value or a count: exact arithmetic
    # integer data from a binding (class labels y_i in {0, ..., K-1}): a code counted from 0,
    # whatever number the chapter's sums start at
    code: bool = False

    @property
    def body_shape(self) -> tuple[int, ...]:
        return tuple(self.t.shape[len(self.idx) :])

    @property
    def sizes(self) -> dict[str, int]:
        return dict(zip(self.idx, self.t.shape[: len(self.idx)], strict=False))

    def describe(self) -> str:
        shape = self.body_shape
        if not shape:
            what = "a scalar"
        elif len(shape) == 2 and shape[1] == 1:
            what = f"a column of {shape[0]}"
        elif len(shape) == 2 and shape[0] == 1:
            what = f"a row of {shape[1]}"
        else:
            what = "a " + " x ".join(map(str, shape)) + (" matrix" if len(shape) == 2 else " array")
        if self.idx:
            named = [i for i in self.idx if not i.startswith("@")]
            if named:
                what += " for each " + ", ".join(named)
        return what


@dataclass
class Lazy:
    """``\\mathbf{1}``, ``\\mathbf{0}``, ``\\mathbf{I}`` (and what is built from them) before
    anything fixes their size: ``make(rows, cols)`` builds the value once the shape is known, and
    ``rows``/``cols`` hold what is known already (``\\mathbf{1}`` is a column: ``cols == 1``)."""

    make: Callable[[int, int], Val]
    rows: int | None = None
    cols: int | None = None
    square: bool = False
    what: str = "\\mathbf{1}"

    def materialize(self, rows: int, cols: int) -> Val:
        if (
            self.rows is not None
            and self.rows != rows
            or self.cols is not None
            and self.cols != cols
        ):
            raise ShapeError(
                f"{self.what} is {_dims(self.rows, self.cols)} but meets "
                f"{describe_shape((rows, cols))}"
            )
        if self.square and rows != cols:
            raise ShapeError(
                f"{self.what} meets {describe_shape((rows, cols))}, not a square matrix"
            )
        return _scalarize(self.make(rows, cols))


def _dims(rows: int | None, cols: int | None) -> str:
    return f"{rows if rows is not None else '?'} x {cols if cols is not None else '?'}"


def _base_lazy(kind: str, env_dtype: torch.dtype, device: torch.device) -> Lazy:
    def make(rows: int, cols: int) -> Val:
        if kind == "eye":
            t = torch.eye(rows, dtype=env_dtype, device=device)
        elif kind == "ones":
            t = torch.ones(rows, cols, dtype=env_dtype, device=device)
        else:
            t = torch.zeros(rows, cols, dtype=env_dtype, device=device)
        return Val(t, (), 2)

    if kind == "ones":
        return Lazy(make, cols=1, what="\\mathbf{1}")
    if kind == "eye":
        return Lazy(make, square=True, what="\\mathbf{I}")
    return Lazy(make, what="\\mathbf{0}")


def describe_shape(shape: Sequence[int]) -> str:
    return Val(torch.zeros(tuple(shape))).describe()


Value = Val | Lazy


# -- bindings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marked:
    """A binding with a role: ``fixed`` (not redrawn), ``points`` (a scalar's test points),
    ``reference`` (the value the derivation's check compares with)."""

    value: Any
    fixed: bool = False
    points: bool = False
    reference: bool = False


@dataclass
class Entry:
    key: str  # the canonical spelling
    name: Name
    value: Any  # tensor / number / callable / Marked / Node (a definition from the maths)
    kind: str  # leaf | dependent | family | definition | function-definition
    params: tuple[str, ...] = ()  # a callable's parameter names; a family's index comes first
    index: tuple[str, ...] = ()  # entry-wise definition (A_{ij} = ...) or family index names
    fixed: bool = False
    points: bool = False
    reference: bool = False
    source: str = "bound"  # bound | defined


PY_RENAMES = {"lambda": "lam"}


def python_name(name: Name, *, family: bool = False) -> str:
    """The code name of a LaTeX symbol (``\\tilde{\\mathbf{X}}`` -> ``X_tilde``, ``\\theta^\\star``
    -> ``theta_star``, ``\\mathbf{W}_1`` -> ``W1``, ``\\mathrm{d}\\mathbf{S}`` -> ``dS``,
    ``\\lambda_{\\max}`` -> ``lam_max``), as the notation page promises."""
    core = name.core
    accents: list[str] = []
    while True:
        for accent in ("hat", "tilde", "bar", "dot", "ddot", "vec", "check", "breve"):
            prefix = "\\" + accent + "{"
            if core.startswith(prefix) and core.endswith("}"):
                accents.append(accent)
                core = core[len(prefix) : -1]
                break
        else:
            break
    text = _plain(core)
    for accent in accents:
        text += "_" + accent
    for mark in name.decor:
        text += "_" + mark
    if name.sub is not None and not family:
        sub = _plain(name.sub.text).replace(",", "_")
        text += sub if sub.isdigit() else "_" + sub
    if name.fam is not None and not family:
        text += "_" + _plain(name.fam.text)
    text = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in text).strip("_")
    while "__" in text:
        text = text.replace("__", "_")
    if keyword.iskeyword(text) or text in PY_RENAMES:
        text = PY_RENAMES.get(text, text + "_")
    return text


@lru_cache(maxsize=4096)
def _plain(latex: str) -> str:
    out = latex
    for style in ("mathbf", "boldsymbol", "bm", "mathrm", "mathit", "operatorname", "text",
                  "mathcal", "mathsf", "mathtt"):  # fmt: skip
        out = out.replace("\\" + style + "{", "{")
    out = out.replace("\\#", "n_")
    for greek in sorted(GREEK, key=len, reverse=True):
        out = out.replace("\\" + greek, greek)
    out = out.replace("\\max", "max").replace("\\min", "min").replace("\\star", "star")
    out = out.replace("{", "").replace("}", "").replace("\\", "").replace("'", "_prime")
    return PY_RENAMES.get(out, out)


def key_of(text: str) -> Name:
    try:
        return parse_symbol(text)
    except Unsupported as error:
        raise BindingError(
            f"the key {text!r} is not a symbol as the maths writes one ({error.construct})"
        ) from None


# -- the environment --------------------------------------------------------------------------


class Env:
    """Symbols, their values on one draw, and overrides for differentiation.

    ``entries`` maps canonical spellings to bound or defined symbols. Values are computed
    lazily and memoised per context; ``override`` starts a context in which one symbol is a
    fresh leaf, so everything computed from it (dependents, definitions) is recomputed on
    top of it and autograd can differentiate through.
    """

    def __init__(
        self,
        entries: Mapping[str, Entry],
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | None = None,
        index_base: int = 1,
        broadcast_scalars: bool = False,
    ) -> None:
        self.entries = dict(entries)
        self._by_python: tuple[tuple[tuple[str, int], ...], dict[str, str], tuple] | None = None
        self.dtype = dtype
        self.device = device or torch.device("cpu")
        self.index_base = index_base
        self.broadcast_scalars = broadcast_scalars
        self.draw = 0
        self.generator: torch.Generator | None = None
        self._leaves: dict[str, Any] = {}  # the (perturbed) leaf values of this draw
        self._stack: list[dict[Any, Any]] = [{}]
        self._overrides: list[dict[Any, Val]] = [{}]
        self._active: set[Any] = set()
        self.scope: list[dict[str, Val]] = []  # index variables in scope (innermost last)
        self.grad_depth = 0  # how many derivatives are being taken around the current evaluation
        self.climbing = False  # computing a recurrence's members from below
        self.index_sizes: dict[str, int] = {}

    # -- draws --
    def start_draw(self, draw: int, seed: int) -> None:
        self.draw = draw
        self._stack = [{}]
        self._overrides = [{}]
        self._leaves = {}
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 7919 * draw)

    def _leaf(self, entry: Entry) -> Any:
        if entry.key in self._leaves:
            return self._leaves[entry.key]
        value = entry.value
        if isinstance(value, torch.Tensor):
            value = value.detach()
            if value.is_floating_point():
                value = value.to(self.dtype)
            if self.draw > 0 and not entry.fixed and value.is_floating_point() and value.numel():
                assert self.generator is not None
                noise = torch.randn(value.shape, generator=self.generator, dtype=torch.float64)
                value = value * torch.exp(0.3 * noise).to(value.dtype).to(value.device)
        self._leaves[entry.key] = value
        return value

    # -- contexts --
    @contextlib.contextmanager
    def override(self, target: Any, value: Val) -> Iterator[None]:
        self._stack.append({})
        self._overrides.append({**self._overrides[-1], target: value})
        try:
            yield
        finally:
            self._stack.pop()
            self._overrides.pop()

    def memo(self, key: Any, compute: Callable[[], Any], ev: Evaluator | None = None) -> Any:
        """``compute()`` once per context. What computing it read (a value bound as the
        reference, a derivative by autograd) is remembered with it and passed on to ``ev``, the
        evaluator that reuses it, so a step that reads the reference through a remembered value
        is still a step compared with the reference."""
        if key in self._overrides[-1]:
            return self._overrides[-1][key]
        for level in reversed(self._stack):
            if key in level:
                value, reads = level[key]
                if ev is not None:
                    ev.uses_reference |= reads[0]
                    ev.uses_partial |= reads[1]
                return value
            # a value from an outer context is still right unless it depends on an override;
            # we do not track dependencies, so only the innermost context is reused
            break
        if key in self._active:
            raise Unsupported(
                f"a definition of {key if isinstance(key, str) else key[0]} that uses itself"
            )
        before = (ev.uses_reference, ev.uses_partial) if ev is not None else (False, False)
        if ev is not None:
            ev.uses_reference = ev.uses_partial = False
        self._active.add(key)
        try:
            value = compute()
        finally:
            self._active.discard(key)
            reads = (ev.uses_reference, ev.uses_partial) if ev is not None else (False, False)
            if ev is not None:
                ev.uses_reference, ev.uses_partial = before[0] | reads[0], before[1] | reads[1]
        self._stack[-1][key] = (value, reads)
        return value

    # -- lookups --
    def find(self, name: Name) -> Entry | None:
        """The symbol as spelled; a bold spelling also finds what the maths defines plain by its
        entries (``\\mu_j = ...`` makes ``\\boldsymbol{\\mu}``), never another binding: a plain
        ``a`` bound to test points is not the vector ``\\mathbf{a}``."""
        for position, key in enumerate(_variants(name)):
            entry = self.entries.get(key)
            if entry is not None and (position == 0 or not name.bold or entry.source == "defined"):
                return entry
        return None

    def find_base(self, name: Name) -> Entry | None:
        """The symbol whose entries ``X_{ij}`` are (``\\mathbf{X}``)."""
        base = Name(core=name.core, bold=name.bold, decor=name.decor)
        for key in _variants(base):
            entry = self.entries.get(key)
            if entry is not None:
                return entry
        return None

    def jacobian_function(self, name: Name) -> Entry | None:
        """The function ``f`` of ``\\mathbf{J}_{\\mathbf{f}}`` (the notation page's Jacobian),
        when the maths defines ``f`` as a function of one argument."""
        if _strip_bold(name.core) != "J" or name.sub is None:
            return None
        items = name.sub.items
        if not items or len(items) != 1 or not isinstance(items[0], Name):
            return None
        entry = self.find(items[0])
        if entry is None or entry.kind != "function-definition" or len(entry.params) != 1:
            return None
        return entry

    def family_of(self, name: Name) -> Entry | None:
        """The family ``name`` is a member of: ``\\mathbf{g}_k`` of ``\\mathbf{g}_t`` (a bold symbol
        with an index is always a member), ``\\theta_{t-1}`` or ``\\theta_0`` of ``\\theta_t``; but
        ``\\theta_j`` is an entry of ``\\theta`` when ``\\theta`` has a value."""
        for entry in self.entries.values():
            if entry.kind == "family" and _same_base(entry.name, name):
                fam_sub = entry.name.fam is not None
                same_kind = fam_sub == (name.fam is not None) and (fam_sub or name.sub is not None)
                if same_kind and (fam_sub or name.bold or self._member_letters(entry, name)):
                    return entry
        return None

    def _member_letters(self, entry: Entry, name: Name) -> bool:
        """``\\theta_{t-1}``, ``\\theta_0``, ``x_k`` under ``\\sum_{k=1}^{t}``: the subscript (its
        first items, ``h_{t+1,k}`` is entry k of a member) runs over the family's own index, a
        number, or an index a sum in scope ranges over; ``a_k`` elsewhere is an entry."""
        script = name.sub
        if script is None or script.items is None:
            return False
        items = script.items[: max(len(entry.index), 1)]
        scoped = {n for level in self.scope for n in level}
        letters = {n.spelling for item in items for n in names_in(item) if n.is_index_letter}
        return letters <= set(entry.index) | scoped

    def value_of(self, entry: Entry, ev: Evaluator) -> Any:
        """A symbol's value in the current context (tensor-shaped as the maths sees it)."""
        return self.memo(entry.key, lambda: ev.compute_entry(entry), ev)

    def depends_on(self, node: Node, target: Name, seen: set[str] | None = None) -> bool:
        """Whether ``node`` reads the symbol ``target``, directly or through what it uses (a
        bound function's parameter named as the symbol counts, defined yet or not)."""
        key = target.spelling
        code = python_name(target)
        seen = set() if seen is None else seen
        family = target.sub is not None or target.fam is not None
        for name in names_in(node):
            if (
                family
                and (name.sub is not None or name.fam is not None)
                and _same_base(name, target)
            ):
                return True  # \mathbf{e}_t = \mathbf{e}_{t-1} - ...: a recurrence, no definition
            entry = self.find(name) or (self.find_base(name) if name.sub or name.fam else None)
            if entry is None or entry.key in seen:
                continue
            if entry.key == key:
                return True
            seen.add(entry.key)
            if isinstance(entry.value, Node) and self.depends_on(entry.value, target, seen):
                return True
            for param in entry.params:
                other_key = self.symbol_for(param)
                if _loose(param) == _loose(code) or other_key == key:
                    return True
                if other_key is not None and other_key not in seen:
                    other = self.entries[other_key]
                    seen.add(other_key)
                    if isinstance(other.value, Node) and self.depends_on(other.value, target, seen):
                        return True
        return False

    def resolvable(self, node: Node) -> bool:
        """Whether every symbol a right side needs has a value (bound, defined, or a lone
        italic letter, which may be an index): bold and decorated names must be known."""
        for name in needed_names(node):
            if self.find(name) is not None:
                continue
            if (name.sub is not None or name.fam is not None) and (
                self.family_of(name) is not None or self.find_base(name) is not None
            ):
                continue
            if name.is_index_letter or name.spelling in {"e", "\\pi"} or name.core in {
                "\\mathbf{1}", "\\mathbf{0}", "\\mathbf{I}"}:  # fmt: skip
                continue
            if _strip_bold(name.core) in {"\\delta", "J"} or name.core.startswith("\\mathrm{d}"):
                continue
            if name.sub is None and name.spelling in ELEMENTWISE:
                continue
            return False
        return True

    @property
    def by_python(self) -> dict[str, str]:
        """Code names of the symbols (bound ones first, then those the maths defines); asked
        for every argument of every call of a bound function, so kept until an entry changes."""
        state = tuple((key, id(entry)) for key, entry in self.entries.items())
        if self._by_python is None or self._by_python[0] != state:
            # the entries are kept with the state, so no later entry can reuse their ids
            self._by_python = (state, self._code_names(), tuple(self.entries.values()))
        return self._by_python[1]

    def _code_names(self) -> dict[str, str]:
        names: dict[str, str] = {}
        for source in ("bound", "defined"):
            for key, entry in self.entries.items():
                if entry.source == source:
                    code = python_name(entry.name)
                    names.setdefault(_loose(code), key)
        return names

    def symbol_for(self, code: str) -> str | None:
        """The symbol a code name means (``theta_0`` and ``theta0`` alike, ``W1`` and ``W_1``)."""
        return self.by_python.get(_loose(code))

    def python_arguments(self, fn: Callable[..., Any], params: Sequence[str], ev: Evaluator,
                         skip: int = 0) -> dict[str, Any]:  # fmt: skip
        args: dict[str, Any] = {}
        signature = _signature(fn)
        for pname in params[skip:]:
            key = self.symbol_for(pname)
            if key is None:
                parameter = signature.parameters.get(pname) if signature else None
                if parameter is not None and parameter.default is not inspect.Parameter.empty:
                    continue
                known = ", ".join(sorted(self.by_python))
                raise BindingError(
                    f"parameter {pname!r} of a bound function names no bound symbol "
                    f"(parameters are matched by the code names of the symbols: {known})"
                )
            entry = self.entries[key]
            if entry.kind == "family":
                args[pname] = lambda *index, _e=entry: ev.to_python(ev.family_member(_e, index))
            else:
                args[pname] = ev.to_python(self.value_of(entry, ev))
        return args


def _loose(code: str) -> str:
    return re.sub(r"_(?=\d)", "", code)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _same_base(a: Name, b: Name) -> bool:
    same = _strip_bold(a.core) == _strip_bold(b.core) and a.decor == b.decor
    if same and (a.fam is not None or b.fam is not None):
        # \mathbf{r}_v^{(t)} and \mathbf{r}_\mu^{(t)} are two families
        return (a.sub.text if a.sub else None) == (b.sub.text if b.sub else None)
    return same


def _strip_bold(core: str) -> str:
    if core.startswith("\\mathbf{") and core.endswith("}") and core.count("{") == 1:
        return core[len("\\mathbf{") : -1]
    for accent in ("hat", "tilde", "bar"):
        prefix = "\\" + accent + "{\\mathbf{"
        if core.startswith(prefix):
            return "\\" + accent + "{" + core[len(prefix) : -2] + "}"
    return core


def _variants(name: Name) -> list[str]:
    """The spellings one symbol may be bound under: as written, then bold <-> plain."""
    first = name.spelling
    plain = Name(core=_strip_bold(name.core), decor=name.decor, sub=name.sub, fam=name.fam)
    if plain.core.startswith("\\") and plain.core[1:] in GREEK or len(plain.core) == 1:
        bold_core = "\\mathbf{" + plain.core + "}"
    elif plain.core.startswith(("\\hat{", "\\tilde{", "\\bar{")):
        accent, inner = plain.core[1:].split("{", 1)
        bold_core = "\\" + accent + "{\\mathbf{" + inner[:-1] + "}}"
    else:
        bold_core = plain.core
    bold = Name(core=bold_core, bold=True, decor=name.decor, sub=name.sub, fam=name.fam)
    out = [first]
    for other in (plain.spelling, bold.spelling):
        if other not in out:
            out.append(other)
    return out


# -- the evaluator ----------------------------------------------------------------------------

# functions the book uses by name; a binding of the same name wins
ELEMENTWISE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "log": torch.log,
    "ln": torch.log,
    "tanh": torch.tanh,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "erf": torch.special.erf,
    "sign": torch.sign,
    "sgn": torch.sign,
    "ReLU": torch.relu,
    "softplus": torch.nn.functional.softplus,
    "GELU": lambda x: x * 0.5 * (1 + torch.special.erf(x / math.sqrt(2))),
    "SiLU": lambda x: x * torch.sigmoid(x),
    "sigmoid": torch.sigmoid,
    "\\sigma": torch.sigmoid,
    "\\Phi": lambda x: 0.5 * (1 + torch.special.erf(x / math.sqrt(2))),
    "\\varphi": lambda x: torch.exp(-(x**2) / 2) / math.sqrt(2 * math.pi),
}
_FLOAT_FORMATS = {"16": torch.float16, "32": torch.float32, "64": torch.float64,
                  "bf16": torch.bfloat16}  # fmt: skip


@dataclass
class Evaluator:
    env: Env
    uses_partial: bool = False  # this evaluation took a derivative by autograd
    uses_reference: bool = False  # ... or read a value bound as the reference
    magnitude: float = 0.0  # the largest |value| met on the way (for cancellation tolerance)
    symbols: set[str] = field(default_factory=set)

    # -- derivatives --
    @contextlib.contextmanager
    def differentiating(self) -> Iterator[None]:
        """Autograd on for a derivative; outside every derivative the evaluation builds no
        graph (a long recurrence would otherwise keep one alive for nothing)."""
        self.env.grad_depth += 1
        try:
            with torch.enable_grad():
                yield
        finally:
            self.env.grad_depth -= 1

    def settle(self, t: torch.Tensor) -> torch.Tensor:
        """A derivative's value, on the graph only while an outer derivative needs it."""
        return t if self.env.grad_depth > 1 else t.detach()

    # -- free indices --
    def size_indices(self, nodes: Sequence[Node], reset: bool = True) -> None:
        """Free indices (``j`` in ∂L/∂x_j = a_j) take their range from what they index."""
        env = self.env
        if reset:
            env.index_sizes = {}
        for node in nodes:
            for inner, items in index_expressions(node):
                letters = [
                    (k, i) for k, i in enumerate(items) if isinstance(i, Name) and i.is_index_letter
                ]
                if not letters or all(i.spelling in env.index_sizes for _, i in letters):
                    continue
                try:
                    value = self.eval(inner)
                except (Unsupported, Unbound, ShapeError, BindingError, RuntimeError):
                    continue
                sizes = _axis_sizes(value, len(items))
                for k, letter in letters:
                    if sizes is not None:
                        env.index_sizes.setdefault(letter.spelling, sizes[k])
        for node in nodes:
            for name, item in index_letters(node):
                if not (isinstance(item, Name) and item.is_index_letter) or env.find(item):
                    continue
                if item.spelling in env.index_sizes:
                    continue
                base = env.find_base(name)
                if base is None or base.kind == "family" or name.sub is None:
                    continue
                try:
                    value = self._symbol_value(base)
                except (Unsupported, Unbound, ShapeError, BindingError, RuntimeError):
                    continue
                items = name.sub.items or ()
                position = next((k for k, i in enumerate(items) if i is item), None)
                sizes = _axis_sizes(value, len(items))
                if position is not None and sizes is not None:
                    env.index_sizes.setdefault(item.spelling, sizes[position])

    # -- conversions --
    def from_python(self, value: Any, points: bool = False) -> Val:
        if isinstance(value, Val):
            return value
        if isinstance(value, bool):
            return Val(torch.tensor(float(value), dtype=self.env.dtype, device=self.env.device))
        if isinstance(value, int):
            return Val(torch.tensor(float(value), dtype=self.env.dtype, device=self.env.device),
                       integer=True)  # fmt: skip
        if isinstance(value, float):
            return Val(torch.tensor(value, dtype=self.env.dtype, device=self.env.device))
        if isinstance(value, torch.Tensor):
            t = value
            if t.dtype == torch.bool:
                t = t.to(self.env.dtype)
            integer = not t.is_floating_point()
            if points:
                return Val(t, tuple(f"@{k}" for k in range(t.dim())), 0, integer, integer)
            if t.dim() == 0:
                return Val(t, (), 0, integer, integer)
            if t.dim() == 1:
                return Val(t.unsqueeze(-1), (), 2, integer, integer)
            return Val(t, (), t.dim(), integer, integer)
        raise BindingError(
            f"a binding is a {type(value).__name__}; bind tensors, numbers or functions"
        )

    def to_python(self, value: Any) -> Any:
        """A value as the author's code expects it: columns back to 1-D tensors."""
        if isinstance(value, Lazy):
            raise ShapeError("\\mathbf{1} has no size where it is passed to a function")
        if not isinstance(value, Val):
            return value
        if value.idx:
            if all(i.startswith("@") for i in value.idx) and value.body == 0:
                return value.t
            raise ShapeError(f"{value.describe()} passed to a function that takes one value")
        if value.body == 2 and value.t.shape[-1] == 1:
            return value.t[..., 0]
        if value.integer and not value.code and value.t.dim() == 0:
            return int(value.t)  # a size or a count: torch.zeros(n) wants a Python int
        return value.t

    def note(self, value: Value) -> Value:
        if isinstance(value, Val) and value.t.numel() and value.t.is_floating_point():
            m = float(value.t.detach().abs().nan_to_num(0.0, 0.0, 0.0).max())
            if m > self.magnitude:
                self.magnitude = m
        return value

    # -- symbols --
    def compute_entry(self, entry: Entry) -> Any:
        if entry.reference:
            self.uses_reference = True
        if entry.kind == "leaf":
            return self.from_python(self.env._leaf(entry), points=entry.points)
        if entry.kind == "dependent":
            fn = entry.value
            args = self.env.python_arguments(fn, entry.params, self)
            with torch.enable_grad():  # a reference may take autograd's derivative itself
                out = fn(**args)
            return self.from_python(out, points=entry.points)
        if entry.kind == "definition":
            node = entry.value
            if entry.index:
                return self.entrywise(node, entry.index)
            # a definition is closed: its indices (\rho = \max_i ...) range over its own symbols
            saved = self.env.index_sizes
            try:
                self.size_indices([node])
                return self.eval(node)
            finally:
                self.env.index_sizes = saved
        raise Unsupported(f"{entry.key} used as a value")

    def entrywise(self, node: Node, index: tuple[str, ...]) -> Val:
        """``A_{ij} = ...``: the right side over free ``i, j`` becomes the matrix ``A``."""
        saved = self.env.index_sizes
        try:
            self.size_indices([node])
            out = self.eval(node)
        finally:
            self.env.index_sizes = saved
        if isinstance(out, Lazy):
            raise ShapeError("an entry-wise definition of \\mathbf{1}")
        missing = [i for i in index if i not in out.idx]
        if missing:
            raise Unsupported(
                f"an entry-wise definition whose right side has no index {missing[0]}"
            )
        if out.body != 0:
            raise ShapeError("an entry-wise definition whose entries are not scalars")
        others = tuple(i for i in out.idx if i not in index)
        t = _permute(out, others + index)
        body = len(index)
        if body == 1:
            t = t.unsqueeze(-1)
            body = 2
        return Val(t, others, body, out.integer)

    def resolve(self, node: Name) -> Value:
        env = self.env
        self.symbols.add(node.spelling)
        # index variables in scope shadow everything
        if node.sub is None and node.fam is None:
            for level in reversed(env.scope):
                if node.spelling in level:
                    return level[node.spelling]
        entry = env.find(node)
        if entry is not None and entry.kind == "function-definition":
            return self.note(self.bare_definition(entry))
        if entry is not None and entry.kind != "family":
            return self.note(env.value_of(entry, self))
        if node.core.startswith("\\mathrm{d}"):
            return self.differential(node)
        if node.sub is not None or node.fam is not None:
            family = env.family_of(node)
            if family is not None:
                script = node.fam if node.fam is not None else node.sub
                assert script is not None
                if script.items is None:
                    raise Unsupported(f"the member {node.spelling} of a family")
                count = max(len(family.index), 1)
                index = tuple(self.eval(item) for item in script.items[:count])
                member = self.family_member(family, index)
                if len(script.items) > count:  # h_{t+1,k}: entry k of the member h_{t+1}
                    member = self.entries(member, script.items[count:], node.base_spelling)
                return self.note(member)
            jacobian = self.jacobian_symbol(node)
            if jacobian is not None:
                return jacobian
            base = env.find_base(node)
            if base is not None and base.kind != "family":
                if node.fam is not None or node.sub is None or node.sub.items is None:
                    raise Unbound(node.spelling)
                value = self._symbol_value(base)
                return self.note(self.entries(value, node.sub.items, node.base_spelling))
            row = self.row_of_matrix(node)
            if row is not None:
                return self.note(row)
            labelled = self.labelled_entries(node)
            if labelled is not None:
                return self.note(labelled)
            if _strip_bold(node.core) == "\\delta" and node.sub is not None and node.sub.items:
                items = node.sub.items
                if len(items) == 2:
                    a, b = (self.index_value(i) for i in items)
                    return _compare_vals(a, b, torch.eq)
            raise Unbound(node.spelling)
        # constants
        if node.spelling == "e":
            return Val(torch.tensor(math.e, dtype=env.dtype, device=env.device))
        if node.spelling == "\\pi":
            return Val(torch.tensor(math.pi, dtype=env.dtype, device=env.device))
        if (
            node.bold
            and node.core in {"\\mathbf{1}", "\\mathbf{0}", "\\mathbf{I}"}
            and not node.decor
        ):
            kind = {"\\mathbf{1}": "ones", "\\mathbf{0}": "zeros", "\\mathbf{I}": "eye"}[node.core]
            return _base_lazy(kind, env.dtype, env.device)
        if node.is_index_letter and node.spelling in env.index_sizes:
            return self.free_index(node.spelling)
        raise Unbound(node.spelling)

    def _symbol_value(self, entry: Entry) -> Value:
        if entry.kind == "function-definition":
            return self.bare_definition(entry)
        return self.env.value_of(entry, self)

    def jacobian_symbol(self, node: Name, args: Sequence[Node] | None = None) -> Val | None:
        """``\\mathbf{J}_{\\mathbf{f}}(\\mathbf{x})``: the notation page's Jacobian of a function,
        by autograd (at the bound point when written bare)."""
        if self.env.find(node) is not None:
            return None
        entry = self.env.jacobian_function(node)
        if entry is None:
            return None
        self.uses_partial = True
        point = (
            _as_val(self.eval(args[0]))
            if args
            else _as_val(self.resolve(Name(core=entry.params[0])))
        )
        leaf_t = _leaf_tensor(point.t)
        leaf = Val(leaf_t, point.idx, point.body)
        with self.differentiating():
            out = _as_val(self.apply_defined(entry, (leaf,)))
            jac = self.settle(_jacobian(out.t, leaf_t))
        if (
            out.body == 2
            and point.body == 2
            and out.body_shape[1] == 1
            and point.body_shape[1] == 1
        ):
            return Val(jac.reshape(out.body_shape[0], point.body_shape[0]), (), 2)
        raise Unsupported(f"the Jacobian of {entry.key} of {out.describe()}")

    def row_of_matrix(self, node: Name) -> Val | None:
        """``\\mathbf{x}_i`` is row i of ``\\mathbf{X}``, as a column (the notation page: row i of
        the batch is the example ``\\mathbf{x}_i^\\top``)."""
        letter = _strip_bold(node.core)
        items = node.sub.items if node.sub is not None else None
        if (
            not node.bold
            or len(letter) != 1
            or not letter.islower()
            or not items
            or len(items) != 1
        ):
            return None
        entry = self.env.find(Name(core="\\mathbf{" + letter.upper() + "}", bold=True))
        if entry is None or entry.kind == "family":
            return None
        matrix = self._symbol_value(entry)
        if not isinstance(matrix, Val) or matrix.body != 2 or 1 in matrix.body_shape:
            return None
        moved = Val(matrix.t.transpose(-1, -2), matrix.idx, 2, matrix.integer)
        row = _take(moved, self.index_value(items[0]), 1, self.env.index_base)
        return Val(row.t.unsqueeze(-1), row.idx, 2, row.integer)

    def _count_for(self, index: str) -> int | None:
        """``\\sum_t`` over T steps, ``\\sum_r`` over R replicas: the capital letter, bound to a
        whole number, counts what the lower-case index runs over."""
        if len(index) != 1 or not index.islower():
            return None
        entry = self.env.find(Name(core=index.upper()))
        if entry is None or entry.kind != "leaf" or not isinstance(entry.value, int):
            return None
        return int(entry.value) if entry.value > 0 else None

    def labelled_entries(self, node: Name) -> Val | None:
        """``r_{\\mu,j}``: entry j of the symbol ``\\mathbf{r}_\\mu``."""
        items = node.sub.items if node.sub is not None else None
        if not items or len(items) < 2 or not isinstance(items[0], Name):
            return None
        label = items[0]
        named = Name(core=node.core, bold=node.bold, decor=node.decor,
                     sub=Script(text=label.spelling, items=(label,)), fam=node.fam)  # fmt: skip
        entry = self.env.find(named)
        if entry is None or entry.kind == "family":
            return None
        return self.entries(self._symbol_value(entry), items[1:], named.spelling)

    def free_index(self, name: str) -> Val:
        size = self.env.index_sizes[name]
        values = (
            torch.arange(size, device=self.env.device, dtype=self.env.dtype) + self.env.index_base
        )
        return Val(values, (name,), 0, integer=True)

    def index_value(self, node: Node) -> Val:
        out = self.eval(node)
        if isinstance(out, Lazy) or out.body != 0:
            raise Unsupported("an index that is not a number")
        return out

    def entries(self, value: Any, items: Sequence[Node], spelling: str) -> Val:
        if isinstance(value, Lazy):
            raise Unsupported(f"entries of {spelling} whose size is unknown")
        if not isinstance(value, Val):
            raise Unsupported(f"entries of {spelling}")
        shape = value.body_shape
        if value.body == 2 and shape[1] == 1 and len(items) == 1:
            axes = [0]
        elif value.body == 2 and shape[0] == 1 and len(items) == 1:
            axes = [1]
        elif value.body == len(items) and value.body >= 2:
            axes = list(range(value.body))
        elif value.body == 0 and value.idx and not items:
            return value
        else:
            raise ShapeError(
                f"{spelling}_{{...}} with {len(items)} index(es), but {spelling} is "
                f"{value.describe()}"
            )
        indices = [self.index_value(item) for item in items]
        lead = len(value.idx)
        t = value.t
        if value.body == 2 and len(axes) == 1:
            # a vector: drop its singleton axis, so the entry axis is the only body axis
            t = t.squeeze(lead + (1 - axes[0]))
            result = Val(t, value.idx, 1, value.integer)
        else:
            result = Val(t, value.idx, value.body, value.integer)
        # take the entries axis by axis (the first index runs over the first axis); an index
        # outside the tensor reads 0, the padding convention of the convolution chapter
        for position, index in enumerate(indices):
            result = _take(result, index, len(indices) - position, self.env.index_base)
        return Val(result.t, result.idx, 0, result.integer, value.code)

    def family_member(self, entry: Entry, index: Sequence[Any]) -> Val:
        """``\\mathbf{h}_t`` for one t (or for every value of a named index, stacked)."""
        ints: list[Val] = [i if isinstance(i, Val) else self.from_python(i) for i in index]
        names: list[str] = []
        for v in ints:
            if isinstance(v, Lazy) or v.body != 0:
                raise Unsupported(f"a member of {entry.key} at a non-integer index")
            for n in v.idx:
                if n not in names:
                    names.append(n)
        if not names:
            values = tuple(_as_int(v.t) for v in ints)
            if len(values) == 1 and values[0] > 32 and not self.env.climbing:
                # a recurrence (h_t from h_{t-1}): climb to t from below, not down by recursion
                self.env.climbing = True
                try:
                    for lower in range(max(values[0] - 4096, 0), values[0], 16):
                        try:
                            self.env.memo(
                                (entry.key, (lower,)),
                                partial(self._call_family, entry, (lower,)),
                                self,
                            )
                        except (Unsupported, Unbound, ShapeError, RuntimeError):
                            break
                finally:
                    self.env.climbing = False
            return self.env.memo(
                (entry.key, values), lambda: self._call_family(entry, values), self
            )
        # a family over a named index: one member per value, stacked along that index
        grids = [_broadcast_to(v, names, self._sizes(ints, names)) for v in ints]
        shape = grids[0].shape
        members = []
        for flat in range(int(math.prod(shape))):
            position = tuple(int(p) for p in _unravel(flat, shape))
            values = tuple(_as_int(g[position]) for g in grids)
            members.append(
                self.env.memo(
                    (entry.key, values),
                    partial(self._call_family, entry, values),
                    self,
                )
            )
        first = members[0]
        stacked = torch.stack([_permute(m, m.idx) for m in members]).reshape(shape + first.t.shape)
        return Val(stacked, tuple(names) + first.idx, first.body, first.integer)

    @staticmethod
    def _sizes(vals: Sequence[Val], names: Sequence[str]) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for v in vals:
            sizes.update(v.sizes)
        return {n: sizes[n] for n in names}

    def _call_family(self, entry: Entry, index: tuple[int, ...]) -> Val:
        if entry.reference:
            self.uses_reference = True
        fn = entry.value
        if isinstance(fn, Node):  # a family defined in the maths: \mathbf{e}_t = ...
            scope = {name: self.from_python(i) for name, i in zip(entry.index, index, strict=True)}
            self.env.scope.append(scope)
            try:
                return _as_val(self.eval(fn))
            finally:
                self.env.scope.pop()
        args = self.env.python_arguments(fn, entry.params, self, skip=len(index))
        with torch.enable_grad():
            out = fn(*index, **args)
        return self.from_python(out)

    def differential(self, node: Name) -> Val:
        """``\\mathrm{d}\\mathbf{W}`` = ∂L/∂W, the gradient of the one scalar loss L."""
        inner = Name(node.pos, node.end, core=node.core[len("\\mathrm{d}") :], bold=node.bold,
                     decor=node.decor, sub=node.sub, fam=node.fam)  # fmt: skip
        return self.partial(Partial(num=Name(core="L"), wrt=(inner,)))

    # -- evaluation --
    def eval(self, node: Node) -> Value:
        method = getattr(self, "eval_" + type(node).__name__, None)
        if method is None:
            raise Unsupported(f"a {type(node).__name__}")
        return self.note(method(node))

    def eval_Num(self, node: Num) -> Val:
        integer = float(node.value).is_integer()
        return Val(
            torch.tensor(node.value, dtype=self.env.dtype, device=self.env.device), integer=integer
        )

    def eval_Const(self, node: Const) -> Val:
        value = {"infty": math.inf, "pi": math.pi}[node.name]
        return Val(torch.tensor(value, dtype=self.env.dtype, device=self.env.device))

    def eval_Name(self, node: Name) -> Value:
        return self.resolve(node)

    def bare_definition(self, entry: Entry) -> Value:
        """A function defined in the maths, used bare (``\\tanh u``, ``\\mathbf{f}``): its
        parameters are the symbols of the same names (memoised, so it can be overridden)."""

        def compute() -> Value:
            args = tuple(self.resolve(Name(core=p)) for p in entry.params)
            return self.apply_defined(entry, args)

        return self.env.memo(entry.key, compute, self)

    def eval_Unary(self, node: Unary) -> Value:
        x = self.eval(node.x)
        op = node.op
        if op == "-":
            return _neg(x)
        if isinstance(x, Lazy):
            if op == "transpose":
                return _transpose(x)
            raise Unsupported(f"{op} of {x.what} of unknown size")
        if op == "transpose":
            return _transpose(x)
        if op in {"inverse", "invtranspose"}:
            if x.body == 0:
                return Val(1.0 / x.t, x.idx, 0)
            if x.body == 2 and x.body_shape[0] == x.body_shape[1]:
                inv = torch.linalg.inv(x.t)
                return Val(inv.transpose(-1, -2) if op == "invtranspose" else inv, x.idx, 2)
            raise ShapeError(f"the inverse of {x.describe()}")
        if op == "abs":
            return Val(x.t.abs(), x.idx, x.body, x.integer)
        if op in {"floor", "ceil"}:
            f = torch.floor if op == "floor" else torch.ceil
            return Val(f(x.t), x.idx, x.body, True)
        if op == "norm":
            return self.norm(x, node.p)
        raise Unsupported(op)

    def norm(self, x: Val, p: str | None) -> Val:
        lead = len(x.idx)
        if x.body == 0:
            return Val(x.t.abs(), x.idx)
        shape = x.body_shape
        vector = x.body == 2 and 1 in shape
        flat = x.t.reshape(x.t.shape[:lead] + (-1,))
        if vector or p == "F":
            order = {"1": 1, "2": 2, None: 2, "F": 2, "\\infty": math.inf}.get(p)
            if order is None:
                raise Unsupported(f"the norm _{p}")
            return Val(torch.linalg.vector_norm(flat, ord=order, dim=-1), x.idx)
        if x.body == 2 and p in {None, "2"}:
            return Val(torch.linalg.matrix_norm(x.t, ord=2), x.idx)
        raise Unsupported(f"the norm _{p} of {x.describe()}")

    def eval_Binary(self, node: Binary) -> Value:
        if node.op == "pow":
            return self.power(node)
        a = self.eval(node.a)
        b = self.eval(node.b)
        op = node.op
        if op in {"+", "-"}:
            return _add(a, b, op, self.env.broadcast_scalars)
        if op == "matmul":
            return _product(a, b)
        if op == "cdot":
            return _product(a, b)
        if op == "hadamard":
            return _elementwise(a, b, torch.mul, "\\odot")
        if op == "div":
            return _divide(a, b)
        if op == "mod":
            return _elementwise(a, b, torch.remainder, "\\bmod")
        raise Unsupported(op)

    def power(self, node: Binary) -> Val:
        base_node = node.a
        if (
            isinstance(base_node, Name)
            and base_node.spelling == "e"
            and self.env.find(base_node) is None
        ):
            exponent = _as_val(self.eval(node.b))
            return Val(torch.exp(exponent.t), exponent.idx, exponent.body)
        base = _as_val(self.eval(base_node))
        exponent = _as_val(self.eval(node.b))
        if exponent.body != 0:
            raise ShapeError(f"a power whose exponent is {exponent.describe()}")
        if base.body == 2 and base.body_shape[0] == base.body_shape[1] and base.body_shape[0] > 1:
            if exponent.idx or not float(exponent.t).is_integer():
                raise Unsupported("a matrix to a non-integer power")
            return Val(torch.linalg.matrix_power(base.t, int(exponent.t)), base.idx, 2)
        return _elementwise(base, exponent, torch.pow, "^")

    def eval_Sqrt(self, node: Sqrt) -> Val:
        x = _as_val(self.eval(node.x))
        if node.n is None:
            return Val(torch.sqrt(x.t), x.idx, x.body)
        n = _as_val(self.eval(node.n))
        return _elementwise(x, _divide(_one(self.env), n), torch.pow, "root")

    def eval_Index(self, node: Index) -> Val:
        inner = self.eval(node.x)
        return self.entries(inner, node.items, "(...)")

    def eval_Apply(self, node: Apply) -> Value:
        func = node.func
        if isinstance(func, Func):
            return self.post(self.call_function(func, node.args), node.post)
        assert isinstance(func, Name)
        if self.applies(func):
            return self.post(self.call_name(func, node.args), node.post)
        # n(\bar{y} - \mu)^2, \delta_{ij}(\mathbf{A}\mathbf{x})_i: a value times a parenthesis
        if len(node.args) != 1:
            raise Unsupported(
                f"{func.spelling}(...) with {len(node.args)} arguments, but it is a value"
            )
        return _product(self.resolve(func), self.post(self.eval(node.args[0]), node.post))

    def applies(self, func: Name) -> bool:
        """Whether ``f(...)`` calls ``f`` (a function) or multiplies by it (a value)."""
        if self.jacobian_symbol(func) is not None if func.sub is not None else False:
            return True
        entry = self.env.find(func)
        if entry is not None:
            value = entry.value.value if isinstance(entry.value, Marked) else entry.value
            return entry.kind == "function-definition" or (
                entry.kind in {"dependent", "family"} and callable(value)
            )
        if any(d == "prime" for d in func.decor):
            return True
        if func.sub is None and func.spelling in ELEMENTWISE:
            return True
        if func.sub is not None and self.env.family_of(func) is not None:
            return False
        return False

    def post(self, value: Value, post: Sequence[tuple[str, Any]]) -> Value:
        for op, arg in post:
            if op == "pow":
                value = self.power(Binary(op="pow", a=_Literal(value=value), b=arg))
            elif op == "transpose":
                value = _transpose(value)
            else:
                value = self.entries(value, arg, "(...)")
        return value

    def eval__Literal(self, node: _Literal) -> Value:
        return node.value

    def call_name(self, func: Name, args: Sequence[Node]) -> Value:
        jacobian = self.jacobian_symbol(func, args) if func.sub is not None else None
        if jacobian is not None:
            return jacobian
        entry = self.env.find(func)
        primes = sum(1 for d in func.decor if d == "prime")
        if entry is None and primes:
            unprimed = tuple(d for d in func.decor if d != "prime")
            base = Name(core=func.core, bold=func.bold, decor=unprimed, sub=func.sub, fam=func.fam)
            return self.derivative_of(base, args, primes)
        if entry is None:
            if func.sub is None and func.spelling in ELEMENTWISE:
                return self.elementwise_call(ELEMENTWISE[func.spelling], args, func.spelling)
            family = self.env.family_of(func) if (func.sub or func.fam) else None
            if family is None and func.sub is not None and func.sub.items:
                # \gamma_k(u'): a function family indexed by k
                raise Unbound(func.spelling)
            raise Unbound(
                func.spelling, hint="bind it to a value, or to a function if it is applied"
            )
        if entry.kind == "function-definition":
            if len(args) == len(entry.params) and all(
                isinstance(a, Name) and a.spelling == p
                for a, p in zip(args, entry.params, strict=True)
            ):
                # f(x) at its own parameters is the symbol f itself (overridable, as in ∂L/∂f)
                return self.bare_definition(entry)
            values = tuple(self.eval(a) for a in args)
            return self.apply_defined(entry, values)
        if entry.kind in {"dependent", "leaf", "definition"} and not callable(entry.value):
            # n(\bar{y} - \mu): the parenthesis was a product
            if len(args) != 1:
                raise Unsupported(
                    f"{func.spelling}(...) with {len(args)} arguments, but it is a value"
                )
            return _product(self.resolve(func), self.eval(args[0]))
        fn = entry.value
        if isinstance(fn, Marked):
            fn = fn.value
        if not callable(fn):
            return _product(self.resolve(func), self.eval(args[0]))
        if entry.reference:
            self.uses_reference = True
        evaluated = [_as_val(self.eval(a)) for a in args]
        # g(\mathbf{f}) with g = lambda f, v: v @ f: the maths gives f, the symbols give v
        named = self.env.python_arguments(fn, entry.params, self, skip=len(evaluated))
        entrywise = [v for v in evaluated if v.idx and v.body == 0]
        if len(evaluated) == 1 and entrywise:
            # \phi(H_{ij}): a function of one number applied to every entry of its argument
            (value,) = evaluated
            with torch.enable_grad():
                out = fn(value.t, **named)
            if not isinstance(out, torch.Tensor) or out.shape != value.t.shape:
                raise ShapeError(
                    f"{func.spelling} applied entrywise changes the shape of its argument"
                )
            return Val(out, value.idx, 0)
        with torch.enable_grad():
            out = fn(*[self.to_python(v) for v in evaluated], **named)
        return self.from_python(out)

    def apply_defined(self, entry: Entry, args: Sequence[Value]) -> Value:
        """A function defined in the maths (``u(x) = ...``) applied to values."""
        if len(args) != len(entry.params):
            raise Unsupported(
                f"{entry.key} applied to {len(args)} arguments, defined with {len(entry.params)}"
            )
        overrides = []
        for param, arg in zip(entry.params, args, strict=True):
            target = self.env.find(Name(core=param))
            overrides.append((target.key if target else param, arg))
        with contextlib.ExitStack() as stack:
            for key, arg in overrides:
                stack.enter_context(self.env.override(key, _as_val(arg)))
            scope = {param: _as_val(arg) for param, arg in zip(entry.params, args, strict=True)}
            self.env.scope.append(scope)
            try:
                return self.eval(entry.value)
            finally:
                self.env.scope.pop()

    def derivative_of(self, base: Name, args: Sequence[Node], order: int) -> Val:
        """``\\sigma'(x)``, ``\\phi'(\\mathbf{H})``, ``u'(x)``: an elementwise derivative, by
        autograd."""
        if len(args) != 1:
            raise Unsupported(f"the derivative of {base.spelling} of {len(args)} arguments")
        self.uses_partial = True
        x = _as_val(self.eval(args[0]))
        leaf = _leaf_tensor(x.t)
        point = Val(leaf, x.idx, x.body)

        def f(v: Val) -> Val:
            return _as_val(self.call_name(base, (_Literal(value=v),)))

        with self.differentiating():
            y = f(point)
            grads = y.t
            for _ in range(order):
                (grads,) = torch.autograd.grad(
                    grads.sum(), leaf, create_graph=True, allow_unused=True
                )
                if grads is None:
                    grads = torch.zeros_like(leaf)
            grads = self.settle(grads)
        return Val(grads, x.idx, x.body)

    def elementwise_call(
        self, fn: Callable[[torch.Tensor], torch.Tensor], args: Sequence[Node], name: str
    ) -> Val:
        if len(args) != 1:
            raise Unsupported(f"{name} of {len(args)} arguments")
        x = _as_val(self.eval(args[0]))
        return Val(fn(x.t), x.idx, x.body)

    def call_function(self, func: Func, args: Sequence[Node]) -> Value:
        name = func.name
        primes = len(name) - len(name.rstrip("'"))
        bare = name.rstrip("'")
        bound = self.env.find(function_name(func)) or self.env.find(
            Name(core="\\mathrm{" + bare + "}", sub=func.sub)
        )
        if bound is not None and primes == 0:
            return self.call_name(bound.name, args)
        if primes:
            # GELU_{\tanh}' is not GELU': a subscripted function must be bound or defined
            target = function_name(func)
            if bound is not None:
                target = bound.name
            elif bare in ELEMENTWISE and func.sub is None:
                return self.elementwise_derivative(ELEMENTWISE[bare], args, primes)
            return self.derivative_of(target, args, primes)
        if func.sub is not None and bare in {"fl"}:
            fmt = _FLOAT_FORMATS.get(func.sub.text)
            if fmt is None:
                raise Unsupported(f"\\mathrm{{fl}}_{{{func.sub.text}}}")
            x = _as_val(self.eval(args[0]))
            return Val(x.t.to(fmt).to(x.t.dtype), x.idx, x.body)
        if func.sub is not None:
            raise Unbound(f"\\operatorname{{{bare}}}_{{{func.sub.text}}}")
        if bare in ELEMENTWISE:
            return self.elementwise_call(ELEMENTWISE[bare], args, bare)
        values = [_as_val(self.eval(a)) for a in args]
        if bare in {"max", "min"}:
            if len(values) < 2:
                raise Unsupported(f"\\{bare} of one argument")
            out = values[0]
            op = torch.maximum if bare == "max" else torch.minimum
            for v in values[1:]:
                out = _elementwise(out, v, op, bare)
            return out
        if len(values) != 1 and bare != "KL":
            raise Unsupported(f"{bare} of {len(values)} arguments")
        x = values[0]
        if bare == "softmax":
            return _vector_fn(x, lambda t: torch.softmax(t, dim=-1), "softmax")
        if bare == "lse":
            return _vector_fn(
                x, lambda t: torch.logsumexp(t, dim=-1, keepdim=True), "lse", reduce=True
            )
        if bare == "diag":
            return _diag(x)
        if bare == "tr":
            if x.body != 2 or x.body_shape[0] != x.body_shape[1]:
                raise ShapeError(f"the trace of {x.describe()}")
            return Val(torch.diagonal(x.t, dim1=-2, dim2=-1).sum(-1), x.idx)
        if bare == "det":
            if x.body != 2 or x.body_shape[0] != x.body_shape[1]:
                raise ShapeError(f"the determinant of {x.describe()}")
            return Val(torch.linalg.det(x.t), x.idx)
        if bare == "flip":
            if x.body != 2 or 1 not in x.body_shape:
                raise ShapeError(f"flip of {x.describe()}")
            return Val(torch.flip(x.t, dims=(-2, -1)), x.idx, 2)
        if bare == "KL":
            if len(values) != 2:
                raise Unsupported("KL of other than two distributions")
            p, q = values
            return _vector_fn(
                _elementwise(
                    p, _elementwise(p, q, torch.div, "KL"), lambda a, b: a * torch.log(b), "KL"
                ),
                lambda t: t.sum(dim=(-2, -1), keepdim=True),
                "KL",
                reduce=True,
            )
        raise Unbound(f"\\operatorname{{{bare}}}", hint="bind it to a function")

    def elementwise_derivative(
        self, fn: Callable[[torch.Tensor], torch.Tensor], args: Sequence[Node], order: int
    ) -> Val:
        if len(args) != 1:
            raise Unsupported("a derivative of several arguments")
        self.uses_partial = True
        x = _as_val(self.eval(args[0]))
        leaf = _leaf_tensor(x.t)
        with self.differentiating():
            grads = fn(leaf)
            for _ in range(order):
                (grads,) = torch.autograd.grad(grads.sum(), leaf, create_graph=True)
            grads = self.settle(grads)
        return Val(grads, x.idx, x.body)

    def eval_Block(self, node: Block) -> Val:
        rows = []
        for row in node.rows:
            rows.append([_as_block(_as_val_or_lazy(self.eval(c))) for c in row])
        # resolve lazy cells from their neighbours: rows share heights, columns share widths
        heights = [
            max((c.t.shape[-2] for c in r if isinstance(c, Val)), default=None) for r in rows
        ]
        ncols = max(len(r) for r in rows)
        widths = []
        for k in range(ncols):
            column = [r[k] for r in rows if k < len(r)]
            known = [c.t.shape[-1] for c in column if isinstance(c, Val)]
            widths.append(max(known) if known else None)
        built_rows = []
        for r, h in zip(rows, heights, strict=True):
            cells: list[Val] = []
            for k, c in enumerate(r):
                if isinstance(c, Lazy):
                    rows_k = h if h is not None else c.rows
                    cols_k = widths[k] if widths[k] is not None else c.cols
                    if rows_k is None or cols_k is None:
                        raise ShapeError(f"a block {c.what} whose size nothing fixes")
                    c = _as_block(c.materialize(rows_k, cols_k))
                cells.append(c)
            names = _union_idx(cells)
            sizes: dict[str, int] = {}
            for c in cells:
                sizes.update(c.sizes)
            tensors = [_broadcast_to(c, names, sizes) for c in cells]
            try:
                built_rows.append(torch.cat(tensors, dim=-1))
            except RuntimeError as error:
                raise ShapeError(f"the blocks of a row do not line up ({error})") from None
        try:
            t = torch.cat(built_rows, dim=-2)
        except RuntimeError as error:
            raise ShapeError(f"the rows of a block matrix do not line up ({error})") from None
        names = _union_idx([c for r in rows for c in r if isinstance(c, Val)])
        return Val(t, tuple(names), 2)

    def eval_Iverson(self, node: Iverson) -> Val:
        return self.condition(node.cond)

    def condition(self, chain: Chain) -> Val:
        sides = chain.sides
        if any(isinstance(s, Tuple) for s in sides):
            # (j, l) = (j^*, l^*): every pair of entries equal
            if len(sides) != 2 or chain.rels[0] not in {"=", "!="}:
                raise Unsupported("a comparison of index pairs other than = or \\ne")
            a, b = sides
            if not (isinstance(a, Tuple) and isinstance(b, Tuple) and len(a.items) == len(b.items)):
                raise Unsupported("index pairs of different lengths")
            pairs = [
                Chain(sides=(x, y), rels=("=",)) for x, y in zip(a.items, b.items, strict=True)
            ]
            out = self.condition(pairs[0])
            for pair in pairs[1:]:
                out = _elementwise(out, self.condition(pair), torch.mul, "and")
            if chain.rels[0] == "!=":
                out = Val(1 - out.t, out.idx, out.body, True)
            return out
        result: Val | None = None
        values = [self.index_or_value(s) for s in chain.sides]
        for rel, left, right in zip(chain.rels, values, values[1:], strict=False):
            op = {"=": torch.eq, "!=": torch.ne, "<": torch.lt, ">": torch.gt, "<=": torch.le,
                  ">=": torch.ge}.get(rel)  # fmt: skip
            if op is None:
                raise Unsupported(f"the condition relation {rel}")
            piece = _compare_vals(left, right, op)
            result = piece if result is None else _elementwise(result, piece, torch.mul, "and")
        assert result is not None
        return result

    def index_or_value(self, node: Node) -> Val:
        if isinstance(node, Block):
            raise Unsupported("a tuple in a condition")
        return _as_val(self.eval(node))

    def eval_Reduce(self, node: Reduce) -> Val:
        bound = node.bound
        names = bound.names
        scope: dict[str, Val] = {}
        if bound.lo is not None:
            lo = _as_val(self.eval(bound.lo))
            if bound.hi is None:
                raise Unsupported("a sum with a lower limit and no upper one")
            hi = _as_val(self.eval(bound.hi))
            if lo.idx or hi.idx:
                raise Unsupported("a sum whose limits depend on another index")
            a, b = _as_int(lo.t), _as_int(hi.t)
            if node.op == "prod" and a > b:
                values = torch.arange(a, b - 1, -1, device=self.env.device, dtype=self.env.dtype)
            else:
                values = torch.arange(a, b + 1, device=self.env.device, dtype=self.env.dtype)
            scope[names[0]] = Val(values, (names[0],), 0, integer=True)
        else:
            for name in names:
                if name not in self.env.index_sizes:
                    self.size_indices([node.body], reset=False)
                if name not in self.env.index_sizes:
                    count = self._count_for(name)
                    if count is not None:
                        self.env.index_sizes[name] = count
                if name not in self.env.index_sizes:
                    raise Unsupported(f"a sum over {name} whose range nothing fixes")
                scope[name] = self.free_index(name)
        self.env.scope.append(scope)
        try:
            body = _as_val_or_lazy(self.eval(node.body))
            mask = None
            if bound.cond is not None:
                mask = self.condition(bound.cond)
        finally:
            self.env.scope.pop()
        if isinstance(body, Lazy):
            raise Unsupported("a sum of \\mathbf{1} of unknown size")
        if mask is not None:
            body = _elementwise(body, mask, torch.mul, "condition") if node.op == "sum" else body
        for name in names:
            size = scope[name].t.shape[0]
            if name not in body.idx:
                # the body does not depend on the index: size copies of it
                body = Val(
                    body.t.unsqueeze(0).expand((size,) + body.t.shape),
                    (name,) + body.idx,
                    body.body,
                    body.integer,
                )
            axis = body.idx.index(name)
            rest = tuple(i for i in body.idx if i != name)
            if node.op == "sum":
                t = body.t.sum(axis)
            elif node.op == "max":
                t = body.t.amax(axis)
            elif node.op == "min":
                t = body.t.amin(axis)
            else:  # prod: an ordered product (matrices multiply in the order of the range)
                moved = body.t.movedim(axis, 0)
                t = moved[0]
                for k in range(1, moved.shape[0]):
                    t = t @ moved[k] if body.body == 2 else t * moved[k]
            body = Val(t, rest, body.body, body.integer)
        return body

    def eval_Partial(self, node: Partial) -> Val:
        return self.partial(node)

    def partial(self, node: Partial) -> Val:
        """∂N/∂D by autograd: D becomes a fresh leaf, N is recomputed on top of it."""
        self.uses_partial = True
        if len(node.wrt) > 1:
            inner = Partial(node.pos, node.end, num=node.num, wrt=node.wrt[:-1], at=None)
            outer = Partial(node.pos, node.end, num=inner, wrt=node.wrt[-1:], at=node.at)
            return self.partial(outer)
        if node.at is not None:
            if len(node.at) != 1:
                raise Unsupported("a derivative evaluated at several points")
            target = node.wrt[0]
            assert isinstance(target, Name)
            key, current = self.variable(target)
            point = _as_val(self.eval(node.at[0]))
            with self.env.override(key, point):
                return self.partial(Partial(node.pos, node.end, num=node.num, wrt=node.wrt))
        wrt = node.wrt[0]
        entries: tuple[Node, ...] | None
        if isinstance(wrt, Index) and isinstance(wrt.x, Name):
            # \partial (W_2)_{pq}: entries p, q of the symbol W_2
            key, whole, value = self.variable_with_entries(wrt.x)
            if whole is not None:
                raise Unsupported("a derivative with respect to entries of entries")
            entries = wrt.items
            wrt = wrt.x
        elif isinstance(wrt, Name):
            key, entries, value = self.variable_with_entries(wrt)
        else:
            raise Unsupported("a derivative with respect to an expression")
        # inside an outer derivative (∂²L/∂θ_j∂θ_k) the variable is already on the graph: keep it
        # there, or the outer derivative would see a constant
        leaf_t = _leaf_tensor(value.t)
        leaf = Val(leaf_t, value.idx, value.body, False)
        points = bool(value.idx) and all(i.startswith("@") for i in value.idx)
        with self.differentiating(), self.env.override(key, leaf):
            numerator = _as_val(self.eval(node.num))
            if isinstance(numerator, Lazy):
                raise Unsupported("the derivative of \\mathbf{1}")
            if points and entries is None and value.body == 0 and numerator.body == 0:
                # d/du of a formula at test points u: each point on its own (elementwise)
                if not numerator.t.requires_grad:
                    return Val(torch.zeros_like(numerator.t), numerator.idx, 0)
                (grad,) = torch.autograd.grad(
                    numerator.t.sum(), leaf_t, create_graph=True, allow_unused=True
                )
                grad = torch.zeros_like(leaf_t) if grad is None else grad
                return Val(self.settle(grad), value.idx, 0)
            jac = self.settle(_jacobian(numerator.t, leaf_t))
        # jac: numerator.t.shape + leaf.shape
        out_idx = numerator.idx
        n_lead = len(numerator.idx)
        num_body = numerator.body_shape
        var_lead = len(value.idx)
        t = jac
        # the variable's own named dims (rare: a family stacked over an index) must agree
        if var_lead:
            raise Unsupported("a derivative with respect to a value over a free index")
        var_shape = value.body_shape
        if entries is None:
            # the whole symbol: gradient (scalar numerator) or Jacobian (vector over vector)
            if not num_body:
                return Val(t, out_idx, value.body)
            if value.body == 1 and len(num_body) == 1:
                # a vector over a vector: the Jacobian, one row per output (\nabla^2 L)
                return Val(t, out_idx, 2)
            if value.body == 2 and num_body[1] == 1 and var_shape[1] == 1:
                t = t.reshape(t.shape[:n_lead] + (num_body[0], var_shape[0]))
                return Val(t, out_idx, 2)
            raise Unsupported(
                f"the derivative of {numerator.describe()} with respect to a "
                f"{describe_shape(var_shape)}"
            )
        # entries: \partial x_j, \partial W_{pq}: name the variable's axes by the indices
        items = entries
        if value.body == 2 and var_shape[1] == 1 and len(items) == 1:
            t = t.squeeze(-1)
            axes_count = 1
        elif value.body == 2 and var_shape[0] == 1 and len(items) == 1:
            t = t.squeeze(-2)
            axes_count = 1
        elif value.body == len(items):
            axes_count = len(items)
        else:
            raise ShapeError(
                f"the derivative with respect to {wrt.spelling}: {len(items)} index(es) for "
                f"{value.describe()}"
            )
        # move the numerator body to the end, the variable axes right after the numerator's idx
        nb = len(num_body)
        perm = (
            list(range(n_lead))
            + list(range(n_lead + nb, n_lead + nb + axes_count))
            + list(range(n_lead, n_lead + nb))
        )
        t = t.permute(perm)
        result = Val(t, out_idx + tuple(f"#{k}" for k in range(axes_count)), nb, False)
        # bind the #k axes to the index expressions (a diagonal where an index is shared)
        for k, item in enumerate(items):
            result = _select_axis(result, f"#{k}", self.index_value(item), self.env.index_base)
        return result

    def variable(self, name: Name) -> tuple[Any, Val]:
        key, entries, value = self.variable_with_entries(name)
        if entries is not None:
            raise Unsupported("evaluation at an entry")
        return key, value

    def variable_with_entries(self, name: Name) -> tuple[Any, tuple[Node, ...] | None, Val]:
        """What a ``\\partial D`` denominator names: a symbol (whole, or some of its entries) or a
        family member, as the key it is overridden under and its current value."""
        entry = self.env.find(name)
        if entry is not None and entry.kind != "family":
            return entry.key, None, _as_val(self._symbol_value(entry))
        if name.sub is not None or name.fam is not None:
            family = self.env.family_of(name)
            if family is not None:
                script = name.fam if name.fam is not None else name.sub
                assert script is not None and script.items is not None
                index = tuple(self.eval(i) for i in script.items)
                ints = []
                for v in index:
                    v = _as_val(v)
                    if v.idx:
                        raise Unsupported(
                            "a derivative with respect to a family member over a free index"
                        )
                    ints.append(_as_int(v.t))
                member = self.family_member(family, ints)
                return (family.key, tuple(ints)), None, member
            base = self.env.find_base(name)
            if (
                base is not None
                and name.sub is not None
                and name.sub.items is not None
                and base.kind != "family"
            ):
                return base.key, name.sub.items, _as_val(self._symbol_value(base))
        if (
            name.is_index_letter
            and name.spelling not in self.env.index_sizes
            and self.env.find(name) is None
        ):
            raise Unbound(name.spelling)
        raise Unbound(name.spelling)


@dataclass(frozen=True)
class _Literal(Node):
    value: Any = None


BUILTIN_FUNCTIONS = set(ELEMENTWISE) | {"max", "min", "softmax", "lse", "diag", "tr", "det",
                                         "flip", "KL", "fl", "sgn"}  # fmt: skip


def function_name(func: Func) -> Name:
    """``\\operatorname{GELU}_{\\tanh}`` as the symbol a binding or a definition names."""
    return Name(core="\\operatorname{" + func.name.rstrip("'") + "}", sub=func.sub)


def _leaf_tensor(t: torch.Tensor) -> torch.Tensor:
    """The variable of a derivative: a fresh leaf, unless an outer derivative's graph already
    runs through it (∂²L/∂θ_j∂θ_k)."""
    return t if t.requires_grad else t.detach().clone().requires_grad_(True)


def _axis_sizes(value: Any, count: int) -> list[int] | None:
    """The sizes the ``count`` indices of an entry ``v_{...}`` run over."""
    if not isinstance(value, Val):
        return None
    shape = value.body_shape
    if value.body == 2 and 1 in shape and count == 1:
        return [shape[0] if shape[1] == 1 else shape[1]]
    if value.body == count and count >= 2:
        return list(shape)
    return None


def _as_int(t: torch.Tensor) -> int:
    value = float(t)
    if not value.is_integer():
        raise Unsupported(f"an index {value:g} that is not an integer")
    return int(value)


def _unravel(flat: int, shape: Sequence[int]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(flat % size)
        flat //= size
    return list(reversed(out))


def _one(env: Env) -> Val:
    return Val(torch.tensor(1.0, dtype=env.dtype, device=env.device))


def _as_val(value: Any) -> Val:
    if isinstance(value, Lazy):
        raise ShapeError(f"{value.what} whose size nothing fixes")
    if not isinstance(value, Val):
        raise Unsupported(f"a {type(value).__name__} where a value is expected")
    return value


def _as_val_or_lazy(value: Any) -> Value:
    if isinstance(value, (Val, Lazy)):
        return value
    raise Unsupported(f"a {type(value).__name__} where a value is expected")


@overload
def _as_block(value: Val) -> Val: ...
@overload
def _as_block(value: Lazy) -> Lazy: ...
def _as_block(value: Value) -> Value:
    """A cell of a block matrix: a scalar is a 1 x 1 block, a column stays a column."""
    if isinstance(value, Lazy):
        return value
    if value.body == 0:
        return Val(value.t.unsqueeze(-1).unsqueeze(-1), value.idx, 2, value.integer)
    if value.body != 2:
        raise ShapeError(f"a block that is {value.describe()}")
    return value


# -- broadcasting by index name ---------------------------------------------------------------


def _union_idx(vals: Sequence[Val]) -> list[str]:
    names: list[str] = []
    for v in vals:
        for n in v.idx:
            if n not in names:
                names.append(n)
    return names


def _broadcast_to(v: Val, names: Sequence[str], sizes: Mapping[str, int]) -> torch.Tensor:
    """v's tensor with its index dims permuted to ``names`` (size-1 where v lacks one)."""
    t = v.t
    lead = len(v.idx)
    order = [v.idx.index(n) for n in names if n in v.idx]
    t = t.permute(order + list(range(lead, t.dim())))
    shape = list(t.shape)
    out_shape = []
    k = 0
    for n in names:
        if n in v.idx:
            out_shape.append(shape[k])
            k += 1
        else:
            out_shape.append(1)
    t = t.reshape(out_shape + shape[k:])
    return t.expand(
        [sizes.get(n, s) if s == 1 else s for n, s in zip(names, out_shape, strict=True)]
        + shape[k:]
    )


def _permute(v: Val, names: Sequence[str]) -> torch.Tensor:
    sizes = v.sizes
    return _broadcast_to(v, names, sizes)


def _align(a: Val, b: Val) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    names = _union_idx([a, b])
    sizes: dict[str, int] = {}
    for v in (a, b):
        for n, s in v.sizes.items():
            if n in sizes and sizes[n] != s and s != 1 and sizes[n] != 1:
                raise ShapeError(
                    f"the index {n} runs over {sizes[n]} values on one side and {s} on the other"
                )
            sizes[n] = max(sizes.get(n, 1), s)
    ta = _broadcast_to(a, names, sizes)
    tb = _broadcast_to(b, names, sizes)
    # the bodies must broadcast too: insert the missing body dims in front of the shorter
    if a.body != b.body:
        if a.body == 0:
            ta = ta.reshape(ta.shape + (1,) * b.body)
        elif b.body == 0:
            tb = tb.reshape(tb.shape + (1,) * a.body)
    return ta, tb, tuple(names)


def _take(v: Val, index: Val, axis_from_end: int, base: int) -> Val:
    """Entries along one body axis at integer positions ``index - base`` (0 outside)."""
    names = _union_idx([v, index])
    sizes = {**v.sizes, **index.sizes}
    t = _broadcast_to(v, names, sizes)
    pos = _broadcast_to(index, names, sizes).to(torch.long) - (0 if index.code else base)
    axis = t.dim() - axis_from_end
    size = t.shape[axis]
    valid = (pos >= 0) & (pos < size)
    clamped = pos.clamp(0, max(size - 1, 0))
    # move the axis last, gather along it with positions broadcast over the rest
    moved = t.movedim(axis, -1)
    other = moved.shape[len(names) : -1]
    gather_index = clamped.reshape(clamped.shape + (1,) * len(other) + (1,)).expand(
        moved.shape[:-1] + (1,)
    )
    taken = torch.gather(moved, -1, gather_index).squeeze(-1)
    mask = valid.reshape(valid.shape + (1,) * len(other)).to(taken.dtype)
    taken = taken * mask
    return Val(taken, tuple(names), v.body - 1, v.integer)


def _select_axis(v: Val, axis_name: str, index: Val, base: int) -> Val:
    """Name the axis ``axis_name`` by an index expression: a plain index renames it, a shared
    index takes the diagonal, an expression takes entries."""
    if not index.idx and index.body == 0:
        pos = _as_int(index.t) - base
        axis = v.idx.index(axis_name)
        size = v.t.shape[axis]
        if not 0 <= pos < size:
            raise ShapeError(
                f"the index {pos + base} is outside 1..{size}"
                if base
                else f"the index {pos} is outside 0..{size - 1}"
            )
        t = v.t.select(axis, pos)
        return Val(t, tuple(n for n in v.idx if n != axis_name), v.body, v.integer)
    if len(index.idx) == 1 and index.idx[0] not in v.idx:
        name = index.idx[0]
        values = index.t - base
        axis = v.idx.index(axis_name)
        if values.shape[0] == v.t.shape[axis] and bool(
            (
                values == torch.arange(values.shape[0], device=values.device, dtype=values.dtype)
            ).all()
        ):
            idx = tuple(name if n == axis_name else n for n in v.idx)
            return Val(v.t, idx, v.body, v.integer)
    # general: move the axis into the body and take entries
    axis = v.idx.index(axis_name)
    t = v.t.movedim(axis, -1)
    moved = Val(t, tuple(n for n in v.idx if n != axis_name), v.body + 1, v.integer)
    return _take(moved, index, 1, base)


def _compare_vals(a: Val, b: Val, op: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Val:
    ta, tb, names = _align(a, b)
    return Val(
        op(ta, tb).to(ta.dtype if ta.is_floating_point() else torch.float64),
        names,
        max(a.body, b.body),
        True,
    )


# -- arithmetic in the book's notation ----------------------------------------------------------


@overload
def _neg(x: Val) -> Val: ...
@overload
def _neg(x: Lazy) -> Lazy: ...
def _neg(x: Value) -> Value:
    if isinstance(x, Lazy):
        return _lazy_map(x, lambda v: _neg(v))
    return Val(-x.t, x.idx, x.body, x.integer)


def _transpose(x: Value) -> Value:
    if isinstance(x, Lazy):
        inner = x
        return Lazy(lambda r, c: _as_val(_transpose(inner.make(c, r))), x.cols, x.rows, x.square,
                    x.what + "^\\top")  # fmt: skip
    if x.body == 0:
        return x
    if x.body != 2:
        raise ShapeError(f"the transpose of {x.describe()}")
    return Val(x.t.transpose(-1, -2), x.idx, 2, x.integer)


def _lazy_map(x: Lazy, fn: Callable[[Val], Val]) -> Lazy:
    return Lazy(lambda r, c: fn(x.make(r, c)), x.rows, x.cols, x.square, x.what)


def _unlazy(value: Value, rows: int, cols: int) -> Val:
    return value.materialize(rows, cols) if isinstance(value, Lazy) else value


def _resolve_lazy(a: Value, b: Value) -> tuple[Val, Val]:
    """Give a lazy \\mathbf{1}/\\mathbf{I} the shape of what it is added to or compared with."""
    if isinstance(a, Lazy) and isinstance(b, Lazy):
        raise ShapeError(f"{a.what} meets {b.what}: nothing fixes their size")
    if isinstance(a, Lazy):
        other = _as_val(b)
        return _fit(a, other), other
    if isinstance(b, Lazy):
        other = _as_val(a)
        return other, _fit(b, other)
    return a, b


def _fit(lazy: Lazy, other: Val) -> Val:
    shape = other.body_shape
    if other.body != 2:
        raise ShapeError(f"{lazy.what} meets {other.describe()}")
    return _as_val(_unlazy(lazy, shape[0], shape[1]))


def _combine_lazy(a: Lazy, b: Lazy, fn: Callable[[Val, Val], Val]) -> Lazy:
    rows = a.rows if a.rows is not None else b.rows
    cols = a.cols if a.cols is not None else b.cols
    if (
        a.rows is not None
        and b.rows is not None
        and a.rows != b.rows
        or (a.cols is not None and b.cols is not None and a.cols != b.cols)
    ):
        raise ShapeError(f"{a.what} and {b.what} have different shapes")
    return Lazy(lambda r, c: fn(a.make(r, c), b.make(r, c)), rows, cols, a.square or b.square,
                a.what)  # fmt: skip


def _add(a: Value, b: Value, op: str, broadcast_scalars: bool) -> Value:
    if isinstance(a, Lazy) and isinstance(b, Lazy):
        return _combine_lazy(a, b, lambda x, y: _as_val(_add(x, y, op, broadcast_scalars)))
    if isinstance(a, Lazy) or isinstance(b, Lazy):
        scalar = b if isinstance(a, Lazy) else a
        assert isinstance(scalar, Val)
        if scalar.body == 0:
            raise ShapeError(
                f"a scalar {'plus' if op == '+' else 'minus'} \\mathbf{{1}} of unknown size"
            )
    a, b = _resolve_lazy(a, b)
    if (a.body == 0) != (b.body == 0) and not broadcast_scalars:
        scalar, other = (a, b) if a.body == 0 else (b, a)
        raise ShapeError(
            f"a scalar {'plus' if op == '+' else 'minus'} {other.describe()}: write the scalar "
            "times \\mathbf{1} (or pass broadcast_scalars=True where the book means it)"
        )
    if a.body and b.body and a.body_shape != b.body_shape:
        raise ShapeError(f"{a.describe()} {'plus' if op == '+' else 'minus'} {b.describe()}")
    fn = torch.add if op == "+" else torch.sub
    return _elementwise(a, b, fn, op)


def _elementwise(a: Value, b: Value, fn: Callable[..., torch.Tensor], what: str) -> Val:
    if isinstance(a, Lazy) and isinstance(b, Val) and b.body == 0:
        return _lazy_map(a, lambda v: _elementwise(v, b, fn, what))  # type: ignore[return-value]
    if isinstance(b, Lazy) and isinstance(a, Val) and a.body == 0:
        return _lazy_map(b, lambda v: _elementwise(a, v, fn, what))  # type: ignore[return-value]
    if isinstance(a, Lazy) and isinstance(b, Lazy):
        return _combine_lazy(a, b, lambda x, y: _elementwise(x, y, fn, what))  # type: ignore[return-value]
    a, b = _resolve_lazy(a, b)
    if a.body and b.body and a.body_shape != b.body_shape:
        raise ShapeError(f"{a.describe()} {what} {b.describe()}")
    ta, tb, names = _align(a, b)
    if not ta.is_floating_point() and tb.is_floating_point():
        ta = ta.to(tb.dtype)
    if not tb.is_floating_point() and ta.is_floating_point():
        tb = tb.to(ta.dtype)
    out = fn(ta, tb)
    body = max(a.body, b.body)
    integer = a.integer and b.integer and what in {"+", "-", "times", "\\bmod"}
    return Val(out, names, body, integer)


def _divide(a: Value, b: Value) -> Value:
    if isinstance(b, Lazy):
        raise ShapeError(f"a division by {b.what}")
    if isinstance(a, Lazy):
        return _lazy_map(a, lambda v: _as_val(_divide(v, b)))
    if b.body and a.body and a.body_shape != b.body_shape:
        raise ShapeError(f"{a.describe()} divided by {b.describe()}")
    return _elementwise(a, b, torch.div, "divided by")


def _product(a: Value, b: Value) -> Value:
    """Juxtaposition: scalar scaling, or a matrix product (a 1 x 1 result is a scalar); a lazy
    \\mathbf{1} takes the inner size from its partner."""
    if isinstance(a, Val) and a.body == 0 or isinstance(b, Val) and b.body == 0:
        return _elementwise(a, b, torch.mul, "times")
    if isinstance(a, Lazy) or isinstance(b, Lazy):
        return _lazy_product(a, b)
    if a.body != 2 or b.body != 2:
        raise ShapeError(f"{a.describe()} times {b.describe()}")
    if a.body_shape[1] != b.body_shape[0]:
        if a.body_shape == (1, 1) or b.body_shape == (1, 1):
            return _elementwise(_scalarize(a), _scalarize(b), torch.mul, "times")
        raise ShapeError(f"{a.describe()} times {b.describe()}")
    ta, tb, names = _align(a, b)
    out = torch.matmul(ta, tb)
    if out.shape[-2:] == (1, 1):
        return Val(out[..., 0, 0], names, 0)
    return Val(out, names, 2)


def _lazy_product(a: Value, b: Value) -> Value:
    if isinstance(a, Lazy) and isinstance(b, Lazy):
        shared = a.cols if a.cols is not None else b.rows
        if shared is None:
            raise ShapeError(
                f"{a.what} times {b.what}: nothing fixes the size of the product "
                "(bind \\mathbf{1} to torch.ones(n))"
            )
        if a.rows is not None and b.cols is not None:
            return _product(a.materialize(a.rows, shared), b.materialize(shared, b.cols))
        return Lazy(lambda r, c: _as_val(_product(a.make(r, shared), b.make(shared, c))),
                    a.rows, b.cols, False, a.what)  # fmt: skip
    if isinstance(a, Lazy):
        other = _as_val(b)
        if other.body != 2:
            raise ShapeError(f"{a.what} times {other.describe()}")
        inner, cols = other.body_shape
        if a.rows is not None:
            return _product(a.materialize(a.rows, inner), other)
        return Lazy(lambda r, c: _as_val(_product(a.make(r, inner), other)), None, cols, False,
                    a.what)  # fmt: skip
    other = _as_val(a)
    lazy = b
    assert isinstance(lazy, Lazy)
    if other.body != 2:
        raise ShapeError(f"{other.describe()} times {lazy.what}")
    rows, inner = other.body_shape
    if lazy.cols is not None:
        return _product(other, lazy.materialize(inner, lazy.cols))
    return Lazy(lambda r, c: _as_val(_product(other, lazy.make(inner, c))), rows, None, False,
                lazy.what)  # fmt: skip


def _scalarize(v: Val) -> Val:
    if v.body == 2 and v.body_shape == (1, 1):
        return Val(v.t[..., 0, 0], v.idx, 0, v.integer)
    return v


def _vector_fn(
    x: Val, fn: Callable[[torch.Tensor], torch.Tensor], name: str, reduce: bool = False
) -> Val:
    """softmax / lse over a vector's entries, or over each row of a matrix (the last axis)."""
    if x.body == 0 and x.idx:
        raise Unsupported(f"{name} of scalars over an index")
    if x.body != 2:
        raise ShapeError(f"{name} of {x.describe()}")
    rows, cols = x.body_shape
    if cols == 1:  # a column: over its entries
        t = fn(x.t.transpose(-1, -2)).transpose(-1, -2)
        if reduce:
            return Val(t[..., 0, 0], x.idx, 0)
        return Val(t, x.idx, 2)
    t = fn(x.t)
    if reduce:
        return Val(t, x.idx, 2)
    return Val(t, x.idx, 2)


def _diag(x: Val) -> Val:
    if x.body == 0 and len(x.idx) == 1:
        # diag((1 - \eta\lambda_i)^t): the entries over i
        return Val(torch.diag_embed(x.t), (), 2)
    if x.body != 2:
        raise ShapeError(f"diag of {x.describe()}")
    rows, cols = x.body_shape
    if cols == 1 or rows == 1:
        return Val(torch.diag_embed(x.t.reshape(x.t.shape[: len(x.idx)] + (-1,))), x.idx, 2)
    return Val(torch.diagonal(x.t, dim1=-2, dim2=-1).unsqueeze(-1), x.idx, 2)


def _jacobian(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dy/dx with shape y.shape + x.shape (zeros where y does not depend on x): one backward
    pass per row, or for a large Jacobian all rows in one batched pass (vmap) where every
    operation can be batched."""
    if not y.requires_grad or y.numel() == 0:
        return torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)
    flat = y.reshape(-1)
    count = flat.numel()
    if count > _LOOP_ROWS:
        eye = torch.eye(count, dtype=flat.dtype, device=flat.device)
        with contextlib.suppress(RuntimeError):
            (g,) = torch.autograd.grad(
                flat, x, eye, retain_graph=True, create_graph=True, allow_unused=True,
                is_grads_batched=True,
            )  # fmt: skip
            if g is None:
                return torch.zeros(y.shape + x.shape, dtype=x.dtype, device=x.device)
            return g.reshape(y.shape + x.shape)
    rows = []
    for k in range(count):
        (g,) = torch.autograd.grad(
            flat[k], x, retain_graph=True, create_graph=True, allow_unused=True
        )
        rows.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(rows).reshape(y.shape + x.shape)


# Up to this many rows a Jacobian takes one backward pass per row: the book's Jacobians are
# small, and a batched pass (grad_outputs given) costs each kernel a one-off import of torch's
# symbolic shapes (sympy, about 0.6 s) that nothing else in a chapter needs.
_LOOP_ROWS = 256


# -- comparing two sides --------------------------------------------------------------------------


@dataclass
class Comparison:
    passed: bool
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    ratio: float | None = None  # worst |a - b| / tolerance
    detail: str = ""
    margin: float | None = None  # for inequalities: min over entries of (b - a), signed


def compare(
    a: Value,
    b: Value | _SetValue,
    rel: str,
    *,
    rtol: float,
    atol: float,
    scale: float,
    approx_rtol: float,
    ev: Evaluator,
) -> Comparison:
    if rel == "in":
        return _membership(a, b, ev)
    a, b = _resolve_lazy(a, cast(Value, b))  # a set (R^n, an interval) belongs right of \in
    if rel in {"=", "==", "~=", "!="} and a.body and b.body and a.body_shape != b.body_shape:
        raise ShapeError(f"the left side is {a.describe()}, the right side {b.describe()}")
    if rel in {"=", "=="} and (a.body == 0) != (b.body == 0):
        scalar, other = (a, b) if a.body == 0 else (b, a)
        if other.t.numel() != 1 and not _is_zero_literal(scalar):
            raise ShapeError(f"the left side is {a.describe()}, the right side {b.describe()}")
    ta, tb, names = _align(a, b)
    ta = ta.detach().to(torch.float64)
    tb = tb.detach().to(torch.float64)
    finite = bool(torch.isfinite(ta).all()) and bool(torch.isfinite(tb).all())
    same_inf = bool((torch.isinf(ta) == torch.isinf(tb)).all()) and bool(
        ((ta == tb) | torch.isfinite(ta) | torch.isfinite(tb)).all()
    )
    if not finite and not (same_inf and not bool(torch.isnan(ta).any() or torch.isnan(tb).any())):
        return Comparison(False, detail="a side is not finite (nan or inf)")
    mask = torch.isfinite(ta) & torch.isfinite(tb)
    ta_f = torch.where(mask, ta, torch.zeros_like(ta))
    tb_f = torch.where(mask, tb, torch.zeros_like(tb))
    diff = (ta_f - tb_f).abs()
    ref = torch.maximum(ta_f.abs(), tb_f.abs())
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale_ref = float(ref.max()) if ref.numel() else 0.0
    max_rel = max_abs / scale_ref if scale_ref > 0 else (0.0 if max_abs == 0 else math.inf)
    if rel == "~=":
        bound = approx_rtol * ref + atol
        ratio_t = diff / bound.clamp_min(torch.finfo(torch.float64).tiny)
        ratio = float(ratio_t.max()) if ratio_t.numel() else 0.0
        return Comparison(ratio <= 1.0, max_abs, max_rel, ratio,
                          detail=f"approximately, within {approx_rtol:g} relative")  # fmt: skip
    # cancellation: the rounding of the terms a side was computed from, of the largest of them,
    # but never more than four orders of magnitude above the sides (e^80 met inside a log(1 +
    # e^x) must not make every difference pass)
    top = float(ref.max()) if ref.numel() else 0.0
    bound = atol + rtol * ref + 1e-12 * min(scale, 1e4 * max(top, atol))
    if rel in {"=", "=="}:
        ratio_t = diff / bound.clamp_min(torch.finfo(torch.float64).tiny)
        ratio = float(ratio_t.max()) if ratio_t.numel() else 0.0
        return Comparison(ratio <= 1.0, max_abs, max_rel, ratio)
    if rel == "!=":
        # over a free index (w_j \\ne 0) every entry must differ; two vectors differ in one entry
        over_index = any(not n.startswith("#") for n in names)
        differs = bool((diff > bound).all() if over_index else (diff > bound).any())
        return Comparison(
            differs, max_abs, max_rel, None, detail="" if differs else "the sides are equal"
        )
    # inequalities: a REL b elementwise, with the rounding slack on the side of the claim
    gap = tb - ta if rel in {"<", "<=", "<<"} else ta - tb
    gap = torch.where(mask, gap, torch.where(ta == tb, torch.zeros_like(gap), gap))
    slack = bound
    if rel in {"<", ">"}:
        holds = bool((gap > -slack).all()) and bool((gap > 0).any() or (gap > -slack).all())
    else:
        holds = bool((gap >= -slack).all())
    margin = float(gap.min()) if gap.numel() else 0.0
    return Comparison(holds, max_abs, max_rel, None, margin=margin,
                      detail=f"smallest margin {margin:.3g}")  # fmt: skip


def _is_zero_literal(v: Val) -> bool:
    return v.body == 0 and not v.idx and float(v.t) == 0.0


def _membership(a: Value, b: Value | _SetValue, ev: Evaluator) -> Comparison:
    if isinstance(a, Lazy):
        raise ShapeError("\\mathbf{1} of unknown size in a shape claim")
    if not isinstance(b, _SetValue):
        raise Unsupported("membership of a set that is not R^(m x n) or an interval")
    if b.kind == "space":
        want = b.dims
        got = list(a.body_shape)
        if a.body == 2 and got[1] == 1 and len(want) == 1:
            got = [got[0]]
        elif a.body == 2 and got[0] == 1 and len(want) == 1:
            got = [got[1]]
        passed = got == want
        detail = (
            f"shape {describe_shape(a.body_shape)}, claimed R^{'x'.join(map(str, want)) or '1'}"
        )
        return Comparison(passed, detail=detail)
    lo, hi = b.lo, b.hi
    t = a.t.detach()
    ok_lo = (t >= lo) if b.closed[0] else (t > lo)
    ok_hi = (t <= hi) if b.closed[1] else (t < hi)
    passed = bool((ok_lo & ok_hi).all())
    return Comparison(passed, detail=f"values in [{float(t.min()):.3g}, {float(t.max()):.3g}]")


@dataclass
class _SetValue:
    kind: str
    dims: list[int] = field(default_factory=list)
    lo: float = 0.0
    hi: float = 0.0
    closed: tuple[bool, bool] = (True, True)


def set_value(node: Node, ev: Evaluator) -> _SetValue:
    if isinstance(node, Space):
        dims = []
        for d in node.dims:
            v = _as_val(ev.eval(d))
            if v.idx or v.body:
                raise Unsupported("a dimension that is not a number")
            dims.append(_as_int(v.t))
        return _SetValue("space", dims)
    if isinstance(node, Interval):
        lo = float(_as_val(ev.eval(node.lo)).t)
        hi = float(_as_val(ev.eval(node.hi)).t)
        return _SetValue("interval", lo=lo, hi=hi, closed=node.closed)
    raise Unsupported("a set")


def callable_params(fn: Callable[..., Any]) -> tuple[str, ...]:
    signature = _signature(fn)
    if signature is None:
        return ()
    return tuple(
        p.name
        for p in signature.parameters.values()
        if p.kind
        in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
            inspect.Parameter.POSITIONAL_ONLY,
        )  # fmt: skip
    )


def index_letters(node: Node) -> Iterator[tuple[Name, Node]]:
    """Every (symbol, subscript item) pair in a tree, for sizing free indices."""
    if isinstance(node, Name):
        for script in (node.sub, node.fam):
            if script is not None and script.items:
                for item in script.items:
                    yield node, item
                    yield from index_letters(item)
        return
    for child in _children(node):
        yield from index_letters(child)


def index_expressions(node: Node) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    """Every ``(expr)_{jk}`` in a tree, to size the free indices it uses."""
    for child in _children(node):
        yield from index_expressions(child)
    if isinstance(node, Index):
        yield node.x, node.items


def _children(node: Node) -> Iterator[Node]:
    for value in vars(node).values():
        if isinstance(value, Node):
            yield value
        elif isinstance(value, tuple):
            for v in value:
                if isinstance(v, Node):
                    yield v
                elif isinstance(v, tuple):
                    yield from (w for w in v if isinstance(w, Node))


def needed_names(node: Node) -> Iterator[Name]:
    """The symbols an expression reads (not its index letters, not a sum's own index)."""
    if isinstance(node, Name):
        yield node
        return
    if isinstance(node, Reduce):
        bound = set(node.bound.names)
        for name in needed_names(node.body):
            if name.spelling not in bound:
                yield name
        for limit in (node.bound.lo, node.bound.hi):
            if limit is not None:
                yield from needed_names(limit)
        return
    if isinstance(node, Apply) and isinstance(node.func, Name):
        yield node.func
        for arg in node.args:
            yield from needed_names(arg)
        return
    for child in _children(node):
        yield from needed_names(child)


def names_in(node: Node) -> Iterator[Name]:
    if isinstance(node, Name):
        yield node
    for child in _children(node):
        yield from names_in(child)


__all__ = [
    "BindingError",
    "Bound",
    "Comparison",
    "Entry",
    "Env",
    "Evaluator",
    "Marked",
    "ShapeError",
    "Unbound",
    "Val",
    "callable_params",
    "compare",
    "index_expressions",
    "index_letters",
    "key_of",
    "names_in",
    "python_name",
    "set_value",
]
