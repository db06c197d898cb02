"""``check_steps``: every relation the reader reads in a derivation, evaluated.

The kernel reads the chapter's own ``{derivation}`` block (display equations and inline
``$...$``), binds the chapter's tensors to its symbols by their LaTeX spelling, and checks
each ``=`` (and ``\\le``, ``\\approx``, ``\\in \\mathbb{R}^{m\\times n}``) on at least two random
draws of the free symbols. Partial derivatives are taken by autograd on the graph of the
bound symbols, never by the author's code. The verdict of every step travels in the one
check result, so the book shows it beside the derivation and fails the build on a FAIL.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from chapters_support.checks import config
from chapters_support.checks.core import (
    CheckInputError,
    TautologyError,
    _emit,
    _tolerance,
    _validate_label,
)
from chapters_support.checks.device import environment
from chapters_support.maths import extract
from chapters_support.maths.evaluate import (
    BUILTIN_FUNCTIONS,
    ELEMENTWISE,
    BindingError,
    Entry,
    Env,
    Evaluator,
    Marked,
    ShapeError,
    Unbound,
    Val,
    callable_params,
    compare,
    function_name,
    key_of,
    python_name,
    set_value,
)
from chapters_support.maths.parse import (
    Apply,
    Func,
    Interval,
    Name,
    Node,
    Space,
    Step,
    Unsupported,
)
from chapters_support.maths.parse import steps as parse_steps
from chapters_support.result import (
    CLAIM_STATUSES,
    FAIL,
    PASS,
    SOURCE_ENV,
    STEP_CONDITION,
    STEP_DEFINES,
    STEP_EXCLUDED,
    STEP_FAIL,
    STEP_PASS,
    STEP_UNBOUND,
    STEP_UNSUPPORTED,
    CheckResult,
    format_error,
    summarize_steps,
)

CONDITION, DEFINES, EXCLUDED = STEP_CONDITION, STEP_DEFINES, STEP_EXCLUDED
UNBOUND, UNSUPPORTED = STEP_UNBOUND, STEP_UNSUPPORTED


# -- what an author binds ---------------------------------------------------------------------


def fixed(value: Any) -> Marked:
    """A binding the random draws leave alone (a data set with a structure the maths needs)."""
    return _mark(value, fixed=True)


def points(value: Any) -> Marked:
    """Test points of a scalar symbol: ``x`` bound to ``torch.linspace(-4, 4, 41)`` makes every
    formula in ``x`` elementwise over those points."""
    return _mark(value, points=True)


def reference(value: Any) -> Marked:
    """The value the derivation's own check compares with (``torch.linalg.lstsq``'s solution,
    autograd's Hessian): the final displayed formula is then compared with that reference.
    The marks compose: ``reference(points(...))`` is a reference at test points."""
    return _mark(value, reference=True)


def _mark(value: Any, **role: bool) -> Marked:
    if isinstance(value, Marked):
        return replace(value, **role)
    return Marked(value, **role)


class Bindings(Mapping[str, Any]):
    """Symbols by their LaTeX spelling. Bind a chapter's shared symbols once and ``extend`` them
    per derivation, so each derivation binds only its new symbols::

        symbols = Bindings({r"\\mathbf{X}": X, r"\\mathbf{w}": w, "b": b, "n": n})
        check_steps("linreg-grad-w", symbols.extend({"L": lambda X, w, b, y: ...}))

    A value is a tensor or a number (redrawn for the second draw unless ``fixed``), or a
    function: bare in the maths it is called with the symbols its parameters name (by code
    name: ``X_tilde`` for ``\\tilde{\\mathbf{X}}``, ``theta_star`` for ``\\theta^\\star``),
    applied in the maths (``\\Phi(x)``) it is called with the arguments; a key with an index
    (``\\mathbf{h}_t``) bound to ``lambda t, ...`` is a family, called with the index first.
    """

    def __init__(self, symbols: Mapping[str, Any] | None = None, /, **more: Any) -> None:
        self._symbols: dict[str, Any] = {**(symbols or {}), **more}

    def extend(self, symbols: Mapping[str, Any] | None = None, /, **more: Any) -> Bindings:
        return Bindings({**self._symbols, **(symbols or {}), **more})

    def __getitem__(self, key: str) -> Any:
        return self._symbols[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._symbols)

    def __len__(self) -> int:
        return len(self._symbols)

    def __repr__(self) -> str:
        return f"Bindings({', '.join(self._symbols)})"


# -- finding the chapter ----------------------------------------------------------------------


def _source(label: str, source: str | os.PathLike[str] | None) -> Path:
    """The chapter file: as given, as the runner says (``CHAPTERS_SOURCE``), as Jupyter says,
    or the one file near the kernel's folder holding a derivation with this label."""
    candidates: list[Path] = []
    if source is not None:
        candidates.append(Path(source))
    for var in (SOURCE_ENV, "JPY_SESSION_NAME"):
        value = os.environ.get(var)
        if value:
            candidates.append(Path(value))
    for candidate in candidates:
        if candidate.suffix == ".ipynb":
            twin = candidate.with_suffix(".md")
            if twin.is_file():
                candidate = twin
        if candidate.is_file():
            return candidate
    folder = Path.cwd()
    for where in (folder, *list(folder.parents)[:2]):
        for path in sorted(where.glob("*.md")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if f":label: {label}" in text and extract.find(label, text) is not None:
                return path
    raise CheckInputError(
        label,
        "cannot find the chapter file holding this {derivation} (the book's runner sets "
        f"{SOURCE_ENV}; elsewhere pass source='chapter.md')",
    )


# -- the result of one step ----------------------------------------------------------------------


@dataclass
class StepResult:
    step: Step
    maths: extract.Maths
    status: str = STEP_PASS
    detail: str = ""
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    ratio: float | None = None
    margin: float | None = None
    draws: int = 0
    reference: bool = False  # compared with autograd or a value bound as the reference
    final: bool = False

    @property
    def claim(self) -> bool:
        return self.status in CLAIM_STATUSES

    def to_json(self, number: int) -> dict[str, Any]:
        return {
            "step": number,
            "display": self.maths.display,
            "equation": self.maths.index,
            "line": self.maths.line_at(self.step.pos),
            "lhs": _one_line(self.step.lhs.text),
            "rel": self.step.rel,
            "rhs": _one_line(self.step.rhs.text),
            "status": self.status,
            "claim": self.claim,
            "final": self.final,
            "reference": self.reference,
            "detail": self.detail,
            "max_abs_err": self.max_abs_err,
            "max_rel_err": self.max_rel_err,
            "ratio": self.ratio,
            "margin": self.margin,
            "draws": self.draws,
            "maths": self.maths.text,
            "name": f"step {number}",
            "passed": self.status != STEP_FAIL,
            "problem": self.detail if self.status == STEP_FAIL else None,
        }


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- building the environment -------------------------------------------------------------------


_DERIVATIVE_KEYS = ("\\partial", "\\nabla", "\\mathrm{d}")


def _entries(label: str, bind: Mapping[str, Any]) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    for key, raw in bind.items():
        if not isinstance(key, str):
            raise CheckInputError(
                label, f"binding keys are LaTeX strings, not {type(key).__name__}"
            )
        if any(mark in key for mark in _DERIVATIVE_KEYS):
            raise TautologyError(
                label,
                f"{key!r} is a derivative: derivatives are computed by autograd from the bound "
                "symbols, never bound (bind the loss and its inputs instead)",
            )
        try:
            name = key_of(key)
        except BindingError as error:
            raise CheckInputError(label, str(error)) from None
        marked = raw if isinstance(raw, Marked) else Marked(raw)
        value = marked.value
        kind = "leaf"
        params: tuple[str, ...] = ()
        index: tuple[str, ...] = ()
        if callable(value) and not isinstance(value, torch.Tensor):
            params = callable_params(value)
            script = name.fam if name.fam is not None else name.sub
            letters = (
                [python_name(i) for i in script.items if isinstance(i, Name) and i.is_index_letter]
                if script is not None and script.items
                else []
            )
            if letters and params[: len(letters)] == tuple(letters):
                kind = "family"
                index = tuple(i.spelling for i in script.items)  # type: ignore[union-attr]
            else:
                kind = "dependent"
        elif not isinstance(value, (torch.Tensor, int, float)) or isinstance(value, bool):
            raise CheckInputError(
                label,
                f"{key!r} is bound to a {type(value).__name__}: bind a tensor, a number or a "
                "function",
            )
        spelling = name.spelling
        entries[spelling] = Entry(
            key=spelling,
            name=name,
            value=value,
            kind=kind,
            params=params,
            index=index,
            # numbers and the book's constant \mathbf{1}, \mathbf{0}, \mathbf{I} are never redrawn
            fixed=marked.fixed
            or isinstance(value, (int, float))
            or name.spelling in {"\\mathbf{1}", "\\mathbf{0}", "\\mathbf{I}"},
            points=marked.points,
            reference=marked.reference,
        )
    return entries


def _definable(node: Node | None) -> tuple[str, Name, tuple[str, ...], tuple[str, ...]] | None:
    """What a left side can define: ``r``, ``\\theta^\\star``, ``A_{ij}`` (entries),
    ``\\mathbf{e}_t`` (a family), ``u(x)`` (a function). Returns (kind, name, index names,
    parameters)."""
    if isinstance(node, Name):
        if node.core.startswith("\\mathrm{d}"):
            return None
        if "prime" in node.decor and Name(core=node.core).spelling in ELEMENTWISE:
            return None  # \\sigma' = \\sigma(1 - \\sigma): a claim about a known derivative
        script = node.fam if node.fam is not None else node.sub
        if script is None:
            return ("definition", node, (), ())
        items = script.items
        if items and all(isinstance(i, Name) and i.is_index_letter for i in items):
            names = tuple(i.spelling for i in items if isinstance(i, Name))
            base = Name(core=node.core, bold=node.bold, decor=node.decor)
            if node.bold or node.fam is not None:
                return ("family", node, names, ())
            return ("entrywise", base, names, ())
        if items:
            # g_{j-(k-1)+\alpha} = ...: an entry at an index expression is a claim about an entry
            return None
        return ("definition", node, (), ())
    if (
        isinstance(node, Apply)
        and isinstance(node.func, Func)
        and not node.post
        and "'" not in node.func.name
        and (node.func.sub is not None or node.func.name not in BUILTIN_FUNCTIONS)
        and all(isinstance(a, Name) and a.sub is None for a in node.args)
    ):
        # \operatorname{GELU}_{\tanh}(x) = ...: a named function the book introduces
        params = tuple(a.spelling for a in node.args if isinstance(a, Name))
        return ("function", function_name(node.func), (), params)
    if isinstance(node, Apply) and isinstance(node.func, Name) and not node.post:
        func = node.func
        if "prime" in func.decor or func.sub is None and func.spelling in ELEMENTWISE:
            return None  # \\sigma'(x) = ... is a claim about a function the book knows
        if all(isinstance(a, Name) and a.sub is None for a in node.args):
            params = tuple(a.spelling for a in node.args if isinstance(a, Name))
            return ("function", node.func, (), params)
    return None


# -- the check ------------------------------------------------------------------------------------


def check_steps(
    label: str,
    bind: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    draws: int = 2,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    approx: float = 0.05,
    reason: str | None = None,
    index_base: int = 1,
    broadcast_scalars: bool = False,
    exclude: Mapping[str, str] | None = None,
    dtype: torch.dtype = torch.float64,
) -> CheckResult:
    """Evaluate every relation of the derivation ``label`` as the reader reads it.

    ``bind`` maps LaTeX spellings to values (see :class:`Bindings`), or is a function
    returning that map (so a binding that fails is reported with this label). Each claim is
    checked on ``draws`` (>= 2) random draws: the first with the bound values, the others
    with every unfixed floating tensor redrawn around them. ``approx`` is the relative
    tolerance of ``\\approx``; ``index_base`` the number of the first entry in sums such as
    ``\\sum_{u=0}`` (1, or 0 for chapters that count from 0); ``exclude`` maps a step's LaTeX
    (``"lhs = rhs"``, as written) to the reason it is not checked, for inline maths, where
    a ``% unchecked: reason`` comment cannot stand.
    """
    label = _validate_label(label)
    start = time.perf_counter()
    if draws < 2:
        raise CheckInputError(label, f"draws={draws}: every step is checked on at least 2 draws")
    tol = _tolerance(label, dtype, atol, rtol, reason)
    path = _source(label, source)
    derivation = extract.find_in_file(label, path)
    if derivation is None:
        raise CheckInputError(label, f"{path.name} has no {{derivation}} with this label")
    if callable(bind) and not isinstance(bind, Mapping):
        try:
            bind = bind()
        except Exception as error:
            raise CheckInputError(
                label, f"the bindings raised {type(error).__name__}: {error}"
            ) from error
    symbols = dict(bind or {})
    entries = _entries(label, symbols)
    dev = _device_of(symbols)
    env = Env(
        entries, dtype=dtype, device=dev, index_base=index_base, broadcast_scalars=broadcast_scalars
    )

    results: list[StepResult] = []
    for maths in derivation.maths:
        try:
            found = _read_steps(maths)
        except Unsupported as error:
            found = []
            results.append(_unparsable(maths, error.construct))
        results.extend(StepResult(step, maths) for step in found)
    _apply_exclude(label, results, exclude or {})
    _mark_final(derivation, results)
    _define(env, derivation, results)
    _apply_prose_conditions(results)
    for result in results:
        if result.status in {DEFINES, CONDITION, EXCLUDED} or not result.claim:
            continue
        if result.step.lhs.problem or result.step.rhs.problem:
            result.status = UNSUPPORTED
            result.detail = result.step.lhs.problem or result.step.rhs.problem or ""
        elif result.step.rel in {"->", "propto", ">>", "<<", "subset"}:
            result.status = UNSUPPORTED
            result.detail = {"->": "a limit (\\to)", "propto": "a proportionality"}.get(
                result.step.rel, f"the relation {result.step.rel}"
            )
    chains: dict[tuple[int, int], list[Node]] = {}
    for result in results:
        key = (result.maths.index, result.step.chain)
        chains.setdefault(key, []).extend(
            n for n in (result.step.lhs.node, result.step.rhs.node) if n is not None
        )
    for draw in range(draws):
        env.start_draw(draw, seed)
        for result in results:
            if result.status != STEP_PASS:  # a step that failed on one draw stays failed
                continue
            nodes = chains[(result.maths.index, result.step.chain)]
            _evaluate(label, env, result, tol, approx, draw, nodes)
    # a claim's two sides must not be the very same computation (a tautology)
    seconds = time.perf_counter() - start
    return _finish(label, derivation, path, results, dtype, dev, seconds, tol, reason, draws)


def _read_steps(maths: extract.Maths) -> list[Step]:
    return parse_steps(maths.text)


def _apply_prose_conditions(results: list[StepResult]) -> None:
    """ "for $x < 0$", "exactly when $k = y_i$": the prose makes the maths a case, not a claim,
    unless it introduces a symbol ("for $L = a^\\top x = \\sum_i a_i x_i$" defines L, and what
    follows the definition is claimed)."""
    defining = {
        (r.maths.index, r.step.chain) for r in results if r.step.first and r.status == DEFINES
    }
    for result in results:
        if not result.maths.condition or result.status == DEFINES:
            continue
        if (result.maths.index, result.step.chain) not in defining:
            result.status = CONDITION
            result.detail = "stated as a case in the prose"


def _unparsable(maths: extract.Maths, construct: str) -> StepResult:
    from chapters_support.maths.parse import Side

    side = Side(maths.text, 0, len(maths.text), problem=construct)
    step = Step(side, "=", side, 0)
    return StepResult(step, maths, status=UNSUPPORTED, detail=construct)


def _mark_final(derivation: extract.DerivationSource, results: list[StepResult]) -> None:
    """The derivation's result: its labelled equations, else its last displayed equation
    with a step the author did not exclude."""
    final = {m.index for m in derivation.maths if m.display and m.label}
    if not final:
        shown = [r.maths.index for r in results if r.maths.display and r.status != EXCLUDED]
        final = {shown[-1]} if shown else set()
    for result in results:
        result.final = result.maths.index in final


def _apply_exclude(label: str, results: list[StepResult], exclude: Mapping[str, str]) -> None:
    used = set()
    for result in results:
        step = result.step
        if step.excluded is not None:
            if not step.excluded.strip():
                raise CheckInputError(
                    label,
                    f"line {result.maths.line_at(step.pos)}: '% unchecked:' needs a reason "
                    "after the colon",
                )
            result.status = EXCLUDED
            result.detail = step.excluded
            continue
        for text, why in exclude.items():
            if _same_text(
                text, f"{step.lhs.text} {_REL_TEXT.get(step.rel, step.rel)} {step.rhs.text}"
            ):
                if step.form != "claim":  # a condition is no claim: nothing to exclude
                    used.add(text)
                    continue
                if not (why and why.strip()):
                    raise CheckInputError(label, f"exclude[{text!r}] needs a written reason")
                result.status = EXCLUDED
                result.detail = why
                used.add(text)
    unused = [t for t in exclude if t not in used]
    if unused:
        raise CheckInputError(label, f"exclude names no step of this derivation: {unused}")


_REL_TEXT = {"<=": "\\le", ">=": "\\ge", "!=": "\\ne", "~=": "\\approx", "in": "\\in", "->": "\\to"}


def _same_text(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


@dataclass
class _Candidate:
    result: StepResult | None  # None for the context (nothing to report)
    target: tuple[str, Name, tuple[str, ...], tuple[str, ...]]
    rhs: Node
    lhs: Node | None = None


def _candidates(results: list[StepResult], own: bool) -> list[_Candidate]:
    """The steps that may define a symbol (``s = expr``, ``A_{ij} = ...``, ``u(x) = ...``);
    updates and conditions get their verdicts on the way."""
    found = []
    for result in results:
        step = result.step
        if result.status in {UNSUPPORTED, EXCLUDED} or step.excluded is not None:
            continue
        if step.form == "update":
            if own:
                result.status = DEFINES
                result.detail = "an update rule"
            continue
        if step.form == "condition":
            if own:
                result.status = CONDITION
            target = _definable(step.lhs.node)
            if (
                target is not None
                and target[0] == "definition"
                and step.rel == "="
                and step.rhs.node is not None
                and not _is_index_like(target[1])
            ):
                found.append(
                    _Candidate(result if own else None, target, step.rhs.node, step.lhs.node)
                )
            continue
        if not step.first or step.rel != "=" or step.rhs.node is None:
            continue
        target = _definable(step.lhs.node)
        if target is not None:
            found.append(_Candidate(result if own else None, target, step.rhs.node, step.lhs.node))
    return found


def _known(env: Env, candidate: _Candidate) -> bool:
    kind, name, _, _ = candidate.target
    lhs = candidate.lhs
    if env.find(name) is not None:
        return True
    if isinstance(lhs, Name) and (env.find(lhs) or (lhs.sub or lhs.fam) and env.family_of(lhs)):
        return True
    if kind == "family" and env.family_of(name) is not None:
        return True
    if kind == "function" and env.jacobian_function(name) is not None:
        return True  # J_f(x) = ... with f known: a claim about f's Jacobian, never a definition
    return kind == "entrywise" and env.find_base(name) is not None


def _define(env: Env, derivation: extract.DerivationSource, results: list[StepResult]) -> None:
    """``s = expr`` where ``s`` is neither bound nor defined defines ``s`` (a symbol may be used
    before the sentence that defines it, as the book does). A definition whose right side
    names a symbol nothing gives a value to waits for one that does ("write θ = θ* + e"
    introduces e; it does not redefine θ, which the text defined before)."""
    groups: dict[int, list[extract.Maths]] = {}
    for maths in derivation.context:
        groups.setdefault(maths.group, []).append(maths)
    prose_groups: list[list[_Candidate]] = []
    earlier: list[_Candidate] = []
    for group in sorted(groups, reverse=True):
        found: list[StepResult] = []
        for maths in groups[group]:
            try:
                found.extend(StepResult(step, maths) for step in _read_steps(maths))
            except Unsupported:
                continue
        if groups[group][0].derived:
            earlier.extend(_candidates(found, own=False))
        else:
            prose_groups.append(_candidates(found, own=False))
    # the prose in reading order: a symbol means what it meant where the text introduced it
    # ("O = AV" before "in one line, O = softmax(...)V" keeps O a function of A)
    prose = [c for group_candidates in reversed(prose_groups) for c in group_candidates]
    # the chapter's own definitions (its prose before this derivation) hold here too, so a
    # derivation restating one ("then r = X̃θ - y") makes a claim; then this derivation's own
    # definitions; last those of earlier derivations, for symbols nothing else defines
    # a lone index letter ("substitute u = j - (k-1) + \alpha") is defined for its own
    # derivation only, never for the chapter
    prose = [c for c in prose if not _is_index_like(c.target[1])]
    earlier = [c for c in earlier if not _is_index_like(c.target[1])]
    for tier in (prose, _candidates(results, own=True), earlier):
        _settle_definitions(env, tier)


def _settle_definitions(env: Env, candidates: list[_Candidate]) -> None:
    pending = candidates
    while pending:
        waiting = []
        progress = False
        for candidate in pending:
            if _known(env, candidate):
                continue
            name = candidate.target[1]
            if env.depends_on(candidate.rhs, name) or not env.resolvable(candidate.rhs):
                waiting.append(candidate)
                continue
            _register_candidate(env, candidate)
            progress = True
        if not progress:
            # nothing more resolves: what is left defines its symbol all the same (its use
            # then names the missing symbol), unless it is a recurrence
            for candidate in waiting:
                if not _known(env, candidate) and not env.depends_on(
                    candidate.rhs, candidate.target[1]
                ):
                    _register_candidate(env, candidate)
            return
        pending = waiting


def _register_candidate(env: Env, candidate: _Candidate) -> None:
    _register(env, candidate.target, candidate.rhs)
    if candidate.result is not None:
        candidate.result.status = DEFINES
        candidate.result.detail = f"defines {candidate.target[1].spelling}"


def _is_index_like(name: Name) -> bool:
    return name.is_index_letter and name.core in {
        "i",
        "j",
        "k",
        "l",
        "p",
        "q",
        "t",
        "u",
        "o",
    }


def _register(
    env: Env, target: tuple[str, Name, tuple[str, ...], tuple[str, ...]], rhs: Node
) -> None:
    kind, name, index, params = target
    if kind == "function":
        key = name.spelling
        env.entries[key] = Entry(
            key, name, rhs, "function-definition", params=params, source="defined"
        )
    elif kind == "family":
        base = Name(core=name.core, bold=name.bold, decor=name.decor,
                    sub=name.sub if name.fam is None else None, fam=name.fam)  # fmt: skip
        env.entries[base.spelling] = Entry(
            base.spelling, base, rhs, "family", index=index, source="defined"
        )
    elif kind == "entrywise":
        env.entries[name.spelling] = Entry(
            name.spelling, name, rhs, "definition", index=index, source="defined"
        )
    else:
        env.entries[name.spelling] = Entry(name.spelling, name, rhs, "definition", source="defined")


def _evaluate(
    label: str,
    env: Env,
    result: StepResult,
    tol: config.Tolerance,
    approx: float,
    draw: int,
    chain: list[Node],
) -> None:
    step = result.step
    lhs, rhs = step.lhs.node, step.rhs.node
    assert lhs is not None and rhs is not None
    ev = Evaluator(env)  # the left side
    ev_rhs = Evaluator(env)  # the right side, apart: a tautology is judged per side
    try:
        with torch.no_grad():
            return _evaluate_sides(label, env, result, tol, approx, draw, chain, ev, ev_rhs)
    except RecursionError:
        result.status = UNSUPPORTED
        result.detail = "a recursion too deep to evaluate"
        return None


def _evaluate_sides(
    label: str,
    env: Env,
    result: StepResult,
    tol: config.Tolerance,
    approx: float,
    draw: int,
    chain: list[Node],
    ev: Evaluator,
    ev_rhs: Evaluator,
) -> None:
    step = result.step
    lhs, rhs = step.lhs.node, step.rhs.node
    assert lhs is not None and rhs is not None
    try:
        ev.size_indices(chain)
        a = ev.eval(lhs)
        b = set_value(rhs, ev_rhs) if isinstance(rhs, (Space, Interval)) else ev_rhs.eval(rhs)
        comparison = compare(
            a,
            b,
            step.rel,
            rtol=tol.rtol,
            atol=tol.atol,
            scale=max(ev.magnitude, ev_rhs.magnitude),
            approx_rtol=approx,
            ev=ev,
        )
    except Unsupported as error:
        result.status = UNSUPPORTED
        result.detail = error.construct
        return
    except Unbound as error:
        result.status = UNBOUND
        result.detail = error.spelling
        return
    except ShapeError as error:
        result.status = STEP_FAIL
        result.detail = f"shapes: {error}"
        result.draws = draw + 1
        return
    except BindingError as error:
        raise CheckInputError(label, f"line {result.maths.line_at(step.pos)}: {error}") from None
    except (RuntimeError, TypeError, ValueError, IndexError) as error:
        result.status = STEP_FAIL
        result.detail = f"evaluating it raised {type(error).__name__}: {_short(error)}"
        result.draws = draw + 1
        return
    except Exception as error:  # the evaluator's own fault: said, never a verdict on the maths
        result.status = UNSUPPORTED
        result.detail = f"an evaluator error ({type(error).__name__}: {_short(error)})"
        return
    result.draws = draw + 1
    result.reference = result.reference or any(
        e.uses_partial or e.uses_reference for e in (ev, ev_rhs)
    )
    if draw == 0 or comparison.max_abs_err is not None:
        _merge(result, comparison)
    if not comparison.passed:
        result.status = STEP_FAIL
        where = f" on draw {draw + 1}" if draw else ""
        result.detail = _fail_detail(comparison, step.rel, tol, approx) + where
    elif step.rel in {"=", "=="} and draw == 0:
        _refuse_tautology(label, env, (ev, ev_rhs), result, a, b)


def _merge(result: StepResult, comparison: Any) -> None:
    for attr in ("max_abs_err", "max_rel_err", "ratio"):
        new = getattr(comparison, attr, None)
        old = getattr(result, attr)
        if new is not None and (old is None or new > old):
            setattr(result, attr, new)
    if comparison.margin is not None:
        result.margin = (
            comparison.margin if result.margin is None else min(result.margin, comparison.margin)
        )
    if comparison.detail and result.status == STEP_PASS:
        result.detail = comparison.detail


def _fail_detail(comparison: Any, rel: str, tol: config.Tolerance, approx: float) -> str:
    if comparison.max_abs_err is None:
        return comparison.detail or "the sides differ"
    if rel in {"=", "=="}:
        return (
            f"the sides differ: max abs err {format_error(comparison.max_abs_err)}, rel err "
            f"{format_error(comparison.max_rel_err)} (tolerance atol {tol.atol:.0e} + rtol "
            f"{tol.rtol:.0e}·|side|; worst error/tolerance {comparison.ratio:.2g})"
        )
    if rel == "~=":
        return (
            f"not approximately equal: rel err {format_error(comparison.max_rel_err)} > {approx:g}"
        )
    return f"the inequality does not hold: {comparison.detail}"


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text[:200]


def _refuse_tautology(
    label: str,
    env: Env,
    evaluators: tuple[Evaluator, Evaluator],
    result: StepResult,
    a: Any,
    b: Any,
) -> None:
    """``s = expr`` with ``s`` bound to the very computation ``expr`` spells proves nothing:
    refused when the bound value equals the other side bit for bit and that side takes no
    derivative and reads no reference (an exact autograd result may well be bit-identical)."""
    step = result.step
    for side_node, this, other, other_node, other_ev in (
        (step.lhs.node, a, b, step.rhs.node, evaluators[1]),
        (step.rhs.node, b, a, step.lhs.node, evaluators[0]),
    ):
        if not isinstance(side_node, Name) or isinstance(other_node, Name):
            continue
        if other_ev.uses_partial or other_ev.uses_reference:
            continue
        entry = env.find(side_node)
        if entry is None or entry.source != "bound" or entry.reference:
            continue
        if not isinstance(this, Val) or not isinstance(other, Val) or this.integer or other.integer:
            continue
        if (
            this.t.shape == other.t.shape
            and this.t.numel() > 1
            and torch.equal(this.t.detach(), other.t.detach())
        ):
            if not this.t.is_floating_point() or bool((this.t == this.t.round()).all()):
                continue
            raise TautologyError(
                label,
                f"line {result.maths.line_at(step.pos)}: {side_node.spelling} is bound to exactly "
                f"what {step.rhs.text if side_node is step.lhs.node else step.lhs.text} "
                "computes, bit for bit, so the step proves nothing; leave it unbound (the maths "
                "defines it), bind an independent value, or mark an independent computation "
                "that happens to agree (torch's own) as reference(...)",
            )


def _device_of(symbols: Mapping[str, Any]) -> torch.device:
    for value in symbols.values():
        value = value.value if isinstance(value, Marked) else value
        if isinstance(value, torch.Tensor):
            return value.device
    from chapters_support.checks.device import device as chapter_device

    return chapter_device(announce=False)


def _finish(
    label: str,
    derivation: extract.DerivationSource,
    path: Path,
    results: list[StepResult],
    dtype: torch.dtype,
    dev: torch.device,
    seconds: float,
    tol: config.Tolerance,
    reason: str | None,
    draws: int,
) -> CheckResult:
    items = [r.to_json(k + 1) for k, r in enumerate(results)]
    claims = [r for r in results if r.claim]
    passed = [r for r in claims if r.status == STEP_PASS]
    failed = [k for k, r in enumerate(results) if r.status == STEP_FAIL]
    summary = summarize_steps(items)
    if failed:
        first = results[failed[0]]
        number = failed[0] + 1
        message = (
            f"step {number} of {len(results)} FAILS (line {first.maths.line_at(first.step.pos)}): "
            f"{_one_line(first.step.lhs.text)} {_REL_TEXT.get(first.step.rel, first.step.rel)} "
            f"{_one_line(first.step.rhs.text)}"
            f" — {first.detail}"
        )
        if len(failed) > 1:
            message += f"; {len(failed) - 1} more step(s) fail"
    else:
        message = (
            f"steps {len(passed)}/{len(claims)} pass ({summary['display']['pass']}/"
            f"{summary['display']['claims']} display, {summary['inline']['pass']}/"
            f"{summary['inline']['claims']} inline; {summary['defines']} define, "
            f"{summary['conditions']} conditions; {draws} draws)"
        )
        gaps = [f"{summary[k]} {k}" for k in (UNSUPPORTED, UNBOUND, EXCLUDED) if summary[k]]
        if gaps:
            message += "; not checked: " + ", ".join(gaps)
    ratios = [r.ratio for r in claims if r.ratio is not None and math.isfinite(r.ratio)]
    errs = [r.max_abs_err for r in claims if r.max_abs_err is not None]
    rels = [
        r.max_rel_err for r in claims if r.max_rel_err is not None and math.isfinite(r.max_rel_err)
    ]
    result = CheckResult(
        label=label,
        kind="steps",
        status=FAIL if failed else PASS,
        message=message,
        dtype=config.dtype_name(dtype),
        device=str(dev),
        seconds=seconds,
        max_abs_err=max(errs) if errs else None,
        max_rel_err=max(rels) if rels else None,
        atol=tol.atol,
        rtol=tol.rtol,
        ratio=max(ratios) if ratios else None,
        reason=reason,
        items=items,
        environment=environment(dev),
        digest=derivation.digest,
    )
    return _emit(result)


__all__ = ["Bindings", "check_steps", "fixed", "points", "reference"]
