"""``chapters mutate``: does each check kill deliberately wrong versions of its derived code?

A check proves something only if a wrong derivation makes it fail. For every check call of a
chapter (``check_close``, ``check_gradient``, ``check_statistic``) this module finds the code
that computes its *derived* side (the argument itself, and the functions and assignments of the
chapter it reads, transitively, that the reference side does not also read, and that are not
data: ``torch.randn(...)`` and friends), makes mutants of it with :mod:`ast` (a constant
scaled, ``+`` turned to ``-``, a term dropped, a transpose removed, the factors of ``@``
swapped, a reduction over the wrong dimension, a result negated), executes the chapter once per
mutant up to the check's cell in a fresh kernel (the book's execution layer, in parallel,
longest first; the book's cache is never read or written), and reads the check's own verdict:

- KILLED: a check of that label FAILs, or refuses its input (``CheckInputError``);
- SURVIVED: every check of that label PASSes with a different derived value;
- EQUIVALENT: they PASS with bit-identical derived values (``derived_digest``, or the same
  ``expected`` of a statistic): the mutant computes the same thing, and is not counted;
- INVALID: the chapter crashed before the verdict (a shape error, say): not counted either.

The score of a check is killed / (killed + survived).

Written by hand: mutation-testing tools for Python (mutmut, cosmic-ray, mutatest) mutate
importable modules and rerun a test suite for a pass/fail bit; here the code lives in notebook
cells, the unit is one check call and the part of the code feeding one of its arguments, and the
verdict is read from the check's result in the executed notebook. What they share with this is
only the idea and :mod:`ast`.
"""

from __future__ import annotations

import ast
import concurrent.futures as cf
import copy
import random
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import nbformat

from chapters_support.execution.notebooks import Chapter
from chapters_support.execution.notebooks import code_digest as notebook_digest
from chapters_support.result import FAIL, PASS, results_from_outputs

KILLED, SURVIVED, EQUIVALENT, INVALID = "killed", "survived", "equivalent", "invalid"
VERDICTS = (KILLED, SURVIVED, EQUIVALENT, INVALID)

# check -> (position, keyword) of the derived argument and of the reference argument
CHECKS: dict[str, tuple[tuple[int, str], tuple[int, str]]] = {
    "check_close": ((1, "derived"), (2, "reference")),
    "check_gradient": ((3, "derived"), (1, "loss_fn")),
    "check_statistic": ((2, "expected"), (1, "samples")),
    "check_bound": ((2, "bound"), (1, "value")),
}
# the operators, in the order a capped selection takes them round-robin
OPERATORS = (
    "drop-term",
    "add-to-sub",
    "negate",
    "scale-constant",
    "drop-transpose",
    "swap-matmul",
    "wrong-dim",
)
# assignments of these are data (test points), not derivation: never mutated, never followed
DATA_CALLS = {
    "randn", "rand", "randint", "randn_like", "rand_like", "randperm", "normal", "bernoulli",
    "linspace", "logspace", "arange", "tensor", "as_tensor", "zeros", "ones", "full", "eye",
    "empty", "zeros_like", "ones_like", "full_like", "manual_seed", "Generator", "device",
    "load", "Bindings",
}  # fmt: skip
# a value that draws any of these is test data, whatever else it computes
RANDOM_CALLS = {
    "randn", "rand", "randint", "randn_like", "rand_like", "randperm", "normal", "bernoulli",
    "manual_seed", "Generator", "multinomial",
}  # fmt: skip
# a reduction's first positional integer argument is a dimension
REDUCTIONS = {
    "sum", "mean", "prod", "max", "min", "amax", "amin", "softmax", "log_softmax", "logsumexp",
    "cumsum", "var", "std", "norm", "argmax", "argmin", "squeeze", "unsqueeze", "flip",
}  # fmt: skip
# a number in these places is a size or an index, not a coefficient of the maths
SHAPE_CALLS = {
    "range", "reshape", "view", "expand", "repeat", "unfold", "permute", "transpose", "narrow",
    "split", "chunk", "pad", "zeros", "ones", "eye", "arange", "full", "empty", "item", "size",
    "round",
}  # fmt: skip
DIM_KEYWORDS = {"dim", "axis", "dims", "keepdim", "start_dim", "end_dim"}
REFUSALS = {"CheckInputError", "TautologyError", "ToleranceError"}


class MutateError(RuntimeError):
    """A chapter that cannot be measured (it fails unmutated, or its cells do not parse)."""


# -- where the checks are, and what feeds their derived side -------------------------------------


@dataclass(frozen=True)
class Site:
    """A statement of a code cell that defines names (a function, an assignment)."""

    cell: int
    node: ast.stmt
    names: frozenset[str]

    @property
    def order(self) -> tuple[int, int]:
        return (self.cell, self.node.lineno)


@dataclass
class CheckCall:
    label: str
    function: str
    cell: int
    node: ast.Call
    derived: ast.expr
    reference: ast.expr | None
    regions: list[tuple[int, ast.AST]] = field(default_factory=list)  # (cell, node) to mutate


@dataclass(frozen=True)
class Mutant:
    label: str
    operator: str
    cell: int
    start: tuple[int, int]  # (line, column) in the cell, 1-based line, character column
    end: tuple[int, int]
    replacement: str
    source: str  # the whole mutated cell
    before: str  # the changed source line(s), as written
    after: str
    explained: str | None = None  # the author's "# mutate: equivalent" reason for this line

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.cell, self.start, self.end, self.replacement)


def _clean(source: str) -> str:
    """A cell's source with IPython magics and shell escapes blanked (line numbers kept)."""
    return "\n".join(
        "" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()
    )


def parse_cells(chapter: Chapter) -> dict[int, ast.Module]:
    trees: dict[int, ast.Module] = {}
    for index, cell in enumerate(chapter.notebook.cells):
        if cell.cell_type != "code":
            continue
        try:
            trees[index] = ast.parse(_clean(cell.source))
        except SyntaxError as error:
            raise MutateError(
                f"{chapter.docname}: the code cell at line {chapter.line_of_cell(index)} does "
                f"not parse: {error.msg} (cell line {error.lineno})"
            ) from None
    return trees


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _statements(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements at module level, also inside loops, ``if`` and ``with`` (not functions)."""
    for node in body:
        yield node
        if isinstance(node, (ast.For, ast.While, ast.If, ast.With, ast.Try)):
            for part in ("body", "orelse", "finalbody"):
                yield from _statements(getattr(node, part, []))
            for handler in getattr(node, "handlers", []):
                yield from _statements(handler.body)


def sites(trees: dict[int, ast.Module]) -> list[Site]:
    found = [
        Site(cell, node, frozenset(names))
        for cell, tree in sorted(trees.items())
        for node in _statements(tree.body)
        if (names := _defined(node))
    ]
    return sorted(found, key=lambda s: s.order)


def _called(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _argument(node: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for k in node.keywords:
        if k.arg == keyword:
            return k.value
    if len(node.args) > position and not any(isinstance(a, ast.Starred) for a in node.args):
        return node.args[position]
    return None


@dataclass(frozen=True)
class _Arguments:
    """A call of one of the checks and its label, derived and reference arguments."""

    check: str
    label: ast.expr | None
    derived: ast.expr | None
    reference: ast.expr | None


def _check_arguments(node: ast.AST) -> _Arguments | None:
    if not isinstance(node, ast.Call) or (name := _called(node)) not in CHECKS:
        return None
    (d_pos, d_kw), (r_pos, r_kw) = CHECKS[name]
    return _Arguments(
        name,
        _argument(node, 0, "label"),
        _argument(node, d_pos, d_kw),
        _argument(node, r_pos, r_kw),
    )


@dataclass(frozen=True)
class _Wrapper:
    """A chapter function that passes its ``label`` parameter on to a check, such as
    ``def check_derivative(label, phi, dphi, x, v): return check_gradient(label, ...)``: a call
    of it with a literal label is that check, whose derived side is the argument given for the
    one parameter the inner derived argument reads (``dphi``). Parameters are (position, name)."""

    check: str
    label: tuple[int, str]
    derived: tuple[int, str]
    reference: tuple[int, str] | None

    def arguments(self, call: ast.Call) -> _Arguments:
        reference = _argument(call, *self.reference) if self.reference is not None else None
        return _Arguments(
            self.check, _argument(call, *self.label), _argument(call, *self.derived), reference
        )


def _free_reads(node: ast.AST) -> set[str]:
    """The names an expression (or a function) reads, less the parameters of the functions
    and lambdas inside it: ``lambda x: f(x)`` reads ``f``, not the test points ``x``."""
    bound = {
        a.arg
        for n in ast.walk(node)
        if isinstance(n, (ast.Lambda, ast.FunctionDef, ast.AsyncFunctionDef))
        for a in (*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs)
    }
    return _reads(node) - bound


def _parameters_read(expr: ast.expr | None, params: list[str]) -> list[tuple[int, str]]:
    names = sorted(_free_reads(expr)) if expr is not None else []
    return [(params.index(x), x) for x in names if x in params]


def _wrappers(trees: dict[int, ast.Module]) -> tuple[dict[str, _Wrapper], set[int]]:
    """The chapter's wrapper functions by name, and the ids of the check calls inside them
    (measured at each call of their wrapper, not on their own)."""
    found: dict[str, _Wrapper] = {}
    inner: set[int] = set()
    for tree in trees.values():
        for fn in tree.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            params = [a.arg for a in (*fn.args.posonlyargs, *fn.args.args)]
            for node in ast.walk(fn):
                args = _check_arguments(node)
                if args is None or not (
                    isinstance(args.label, ast.Name) and args.label.id in params
                ):
                    continue
                inner.add(id(node))
                derived = _parameters_read(args.derived, params)
                reference = _parameters_read(args.reference, params)
                if len(derived) == 1:
                    found[fn.name] = _Wrapper(
                        args.check,
                        (params.index(args.label.id), args.label.id),
                        derived[0],
                        reference[0] if reference else None,
                    )
    return found, inner


def check_calls(trees: dict[int, ast.Module]) -> tuple[list[CheckCall], list[str]]:
    """Every check call with a literal label (directly, or through a chapter function that
    passes its label on); and why others were left out."""
    calls: list[CheckCall] = []
    skipped: list[str] = []
    wrappers, wrapped = _wrappers(trees)
    for cell, tree in sorted(trees.items()):
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or id(node) in wrapped:
                continue  # a check inside a wrapper: measured at each call of the wrapper
            wrapper = wrappers.get(node.func.id) if isinstance(node.func, ast.Name) else None
            args = wrapper.arguments(node) if wrapper is not None else _check_arguments(node)
            if args is None:
                continue
            label = args.label
            if not (isinstance(label, ast.Constant) and isinstance(label.value, str)):
                if wrapper is None:
                    skipped.append(
                        f"cell {cell}, line {node.lineno}: {args.check} without a literal label"
                    )
                continue
            if args.derived is None:
                if wrapper is None:
                    skipped.append(f"{label.value}: {args.check} without a derived argument")
                continue
            calls.append(
                CheckCall(label.value, args.check, cell, node, args.derived, args.reference)
            )
    return sorted(calls, key=lambda c: (c.cell, c.node.lineno)), skipped


def _reads(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _is_data(site: Site) -> bool:
    """Test points, not derivation: literal numbers (``n, d = 32, 4``), anything drawn at
    random (``torch.randn(n, d) * 3 + 0.5``), or a value built by a data call
    (``torch.linspace(...).to(dev)``)."""
    node = site.node
    value = getattr(node, "value", None)
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or value is None:
        return False
    if _literal(value):
        return True
    if any(isinstance(n, ast.Call) and _called(n) in RANDOM_CALLS for n in ast.walk(value)):
        return True
    call = value
    while isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
        if call.func.attr in DATA_CALLS:
            return _data_call(call)
        call = call.func.value  # torch.linspace(...).to(dev): look through the chain
    return isinstance(call, ast.Call) and _called(call) in DATA_CALLS and _data_call(call)


def _literal(node: ast.AST) -> bool:
    return all(
        isinstance(n, (ast.Constant, ast.Tuple, ast.List, ast.UnaryOp, ast.BinOp, ast.operator,
                       ast.unaryop, ast.expr_context))
        for n in ast.walk(node)
    )  # fmt: skip


def _data_call(call: ast.Call) -> bool:
    """``torch.tensor([...])`` of computed values (``[output_size(H, k, s, p) for ...]``) is
    the derivation's result put in a tensor, not test data: only literal contents are data."""
    if _called(call) in {"tensor", "as_tensor"} and call.args:
        return _literal(call.args[0])
    return True


def _closure(roots: set[str], before: tuple[int, int], all_sites: Sequence[Site]) -> list[Site]:
    """The definitions the names read, transitively: for each name, its last definition before
    the place that reads it."""
    out: list[Site] = []
    seen: set[int] = set()
    todo = [(name, before) for name in roots]
    while todo:
        name, where = todo.pop()
        candidates = [s for s in all_sites if name in s.names and s.order < where]
        if not candidates:
            continue
        site = candidates[-1]
        if id(site) in seen:
            continue
        seen.add(id(site))
        out.append(site)
        if _is_data(site):
            continue
        node = site.node
        region = node if isinstance(node, ast.FunctionDef) else getattr(node, "value", None)
        if region is not None:
            todo.extend((n, site.order) for n in _free_reads(region))
    return out


def attach_regions(call: CheckCall, all_sites: Sequence[Site]) -> None:
    """What a mutant of ``call`` may change: the derived argument, and the non-data
    definitions it reads that the reference does not read."""
    where = (call.cell, call.node.lineno)
    derived = _closure(_free_reads(call.derived), where, all_sites)
    shared = (
        {id(s) for s in _closure(_free_reads(call.reference), where, all_sites)}
        if call.reference is not None
        else set()
    )
    regions: list[tuple[int, ast.AST]] = []
    if not isinstance(call.derived, ast.Name):
        regions.append((call.cell, call.derived))
    for site in sorted(derived, key=lambda s: s.order):
        if id(site) in shared or _is_data(site):
            continue
        node = site.node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            regions.extend((site.cell, stmt) for stmt in node.body)
        elif getattr(node, "value", None) is not None:
            regions.append((site.cell, node.value))  # type: ignore[attr-defined]
    call.regions = regions


# -- making mutants ------------------------------------------------------------------------------


class _Cell:
    """A cell's text, addressed by ast positions (columns are UTF-8 byte offsets)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines(keepends=True)

    def offset(self, line: int, col: int) -> int:
        text = self.lines[line - 1]
        return sum(len(x) for x in self.lines[: line - 1]) + len(
            text.encode("utf-8")[:col].decode("utf-8", errors="ignore")
        )

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self.offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self.offset(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def text(self, node: ast.AST) -> str:
        a, b = self.span(node)
        return self.source[a:b]


def _edits(
    node: ast.AST, cell: _Cell, inside: Callable[[ast.AST], bool]
) -> Iterator[tuple[str, ast.AST, str]]:
    """(operator, node replaced, replacement text) for every mutation point under ``node``."""
    parents: dict[int, ast.AST] = {}
    for parent in ast.walk(node):
        for child in ast.iter_child_nodes(parent):
            parents[id(child)] = parent
    for sub in ast.walk(node):
        if not inside(sub):
            continue
        if isinstance(sub, ast.BinOp):
            left, right = f"({cell.text(sub.left)})", f"({cell.text(sub.right)})"
            if isinstance(sub.op, ast.Add):
                yield "add-to-sub", sub, f"({left} - {right})"
                yield "drop-term", sub, left
                yield "drop-term", sub, right
            elif isinstance(sub.op, ast.Sub):
                yield "add-to-sub", sub, f"({left} + {right})"
                yield "drop-term", sub, left
                yield "drop-term", sub, f"(-{right})"
            elif isinstance(sub.op, ast.MatMult):
                yield "swap-matmul", sub, f"({right} @ {left})"
        elif isinstance(sub, ast.Attribute) and sub.attr in {"T", "mT", "mH", "H"}:
            yield "drop-transpose", sub, f"({cell.text(sub.value)})"
        elif isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            if sub.func.attr in {"t", "transpose"} and (sub.func.attr == "t" or len(sub.args) == 2):
                yield "drop-transpose", sub, f"({cell.text(sub.func.value)})"
            if sub.func.attr in REDUCTIONS:
                dims = [k.value for k in sub.keywords if k.arg in {"dim", "axis"}]
                if not dims and sub.args:
                    dims = [sub.args[0]]
                for dim in dims:
                    if isinstance(dim, ast.Constant) and type(dim.value) is int:
                        yield "wrong-dim", dim, str(_other_dim(dim.value))
        elif isinstance(sub, ast.Constant) and type(sub.value) in (int, float):
            assert isinstance(sub.value, (int, float))  # for mypy: the test above
            if sub.value != 0 and not _in_shape_context(sub, parents):
                scaled = sub.value * 1.5 if isinstance(sub.value, float) else sub.value + 1
                yield "scale-constant", sub, repr(scaled)
        elif isinstance(sub, ast.Return) and sub.value is not None:
            if not isinstance(sub.value, (ast.Dict, ast.Tuple, ast.List)):
                yield "negate", sub.value, f"(-({cell.text(sub.value)}))"
            elif isinstance(sub.value, ast.Dict):
                for value in sub.value.values:
                    yield "negate", value, f"(-({cell.text(value)}))"


def _other_dim(dim: int) -> int:
    return {0: 1, 1: 0, -1: -2, -2: -1}.get(dim, 0)


def _in_shape_context(node: ast.AST, parents: dict[int, ast.AST]) -> bool:
    """A number that is an index, a size, a dimension or an exponent of 1/2 (sqrt) and the
    like: changing it tests the shape of the code, not the maths."""
    child, parent = node, parents.get(id(node))
    while parent is not None:
        if isinstance(parent, (ast.Subscript, ast.Slice)) and child is not getattr(
            parent, "value", None
        ):
            return True
        if isinstance(parent, ast.keyword):
            return parent.arg in DIM_KEYWORDS or parent.arg in {"dtype", "device", "generator"}
        if isinstance(parent, ast.Call):
            return _called(parent) in SHAPE_CALLS or (
                _called(parent) in REDUCTIONS and child in parent.args[:1]
            )
        if isinstance(parent, (ast.stmt, ast.Lambda, ast.Compare)):
            return isinstance(parent, ast.Compare)
        child, parent = parent, parents.get(id(parent))
    return False


def mutants_of(call: CheckCall, chapter: Chapter, trees: dict[int, ast.Module]) -> list[Mutant]:
    """Every mutant of a check's derived code (deduplicated, in a stable order)."""
    found: dict[tuple[Any, ...], Mutant] = {}
    # the check call's own other arguments (label, reference, inputs) are never mutated
    exclude = {id(n) for n in ast.walk(call.node)} - {id(n) for n in ast.walk(call.derived)}

    def allowed(node: ast.AST) -> bool:
        return id(node) not in exclude

    for cell_index, region in call.regions:
        source = _clean(chapter.notebook.cells[cell_index].source)
        cell = _Cell(source)
        for operator, node, replacement in _edits(region, cell, allowed):
            a, b = cell.span(node)
            new_source = source[:a] + replacement + source[b:]
            try:
                ast.parse(new_source)
            except SyntaxError:
                continue
            first = source.rfind("\n", 0, a) + 1
            last_end = source.find("\n", b)
            last_end = len(source) if last_end < 0 else last_end
            before = source[first:last_end]
            after = new_source[first : last_end + len(new_source) - len(source)]
            mutant = Mutant(
                label=call.label,
                operator=operator,
                cell=cell_index,
                start=(node.lineno, node.col_offset),  # type: ignore[attr-defined]
                end=(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
                replacement=replacement,
                source=_restore_magics(chapter.notebook.cells[cell_index].source, new_source),
                before=before.strip(),
                after=after.strip(),
            )
            mutant = replace(
                mutant, explained=_explained(_comment_above(source, first) + [before], operator)
            )
            if before.strip() != after.strip():
                found.setdefault(mutant.key, mutant)
    return sorted(found.values(), key=lambda m: (m.cell, m.start, m.end, m.replacement))


_EXPLAINED = re.compile(r"#\s*mutate:\s*equivalent(?:\[([\w,\s-]+)\])?\s*:\s*(.+)$")


def _comment_above(source: str, start: int) -> list[str]:
    """The comment block right above the line that starts at ``start``, joined into one line."""
    lines = source[:start].splitlines()
    block: list[str] = []
    while lines and lines[-1].strip().startswith("#"):
        block.insert(0, lines.pop().strip().lstrip("#").strip())
    return ["# " + " ".join(block)] if block else []


def _explained(lines: list[str], operator: str) -> str | None:
    """The reason of a ``# mutate: equivalent[operator, ...]: reason`` comment on the changed
    line(s) or in the comment block right above them: a mutant the author has shown to compute
    the same thing (a symmetric matrix, a claim that holds for every value of a test
    parameter). Without ``[...]`` it covers every operator there."""
    for line in (x for text in lines for x in text.splitlines()):
        found = _EXPLAINED.search(line)
        if found is None:
            continue
        operators = {o.strip() for o in (found.group(1) or "").split(",") if o.strip()}
        if not operators or operator in operators:
            return found.group(2).strip()
    return None


def _restore_magics(original: str, mutated: str) -> str:
    """The mutated cell with the magic lines :func:`_clean` blanked put back."""
    old, new = original.splitlines(), mutated.splitlines()
    magic = [line.lstrip().startswith(("%", "!")) for line in old]
    if len(old) != len(new):  # a multi-line edit joined lines: the magics go first
        return "\n".join([o for o, m in zip(old, magic, strict=True) if m] + new)
    return "\n".join(o if m else n for o, n, m in zip(old, new, magic, strict=True))


def select(mutants: Sequence[Mutant], cap: int, seed: str) -> list[Mutant]:
    """At most ``cap`` mutants, taken round-robin over the operators; within an operator, in
    an order shuffled by a seed made from the label (the same every run)."""
    rng = random.Random(zlib.crc32(seed.encode()))
    by_operator: dict[str, list[Mutant]] = {op: [] for op in OPERATORS}
    for mutant in mutants:
        by_operator[mutant.operator].append(mutant)
    for group in by_operator.values():
        rng.shuffle(group)
    chosen: list[Mutant] = []
    while len(chosen) < cap and any(by_operator.values()):
        for op in OPERATORS:
            if by_operator[op] and len(chosen) < cap:
                chosen.append(by_operator[op].pop(0))
    return chosen


# -- running them --------------------------------------------------------------------------------


@dataclass
class Run:
    """One execution: the unmutated chapter (``mutant`` None) or one mutant."""

    chapter: Chapter
    mutant: Mutant | None
    last_cell: int
    notebook: Any = None
    failure: dict[str, Any] | None = None
    seconds: float = 0.0


def _notebook_for(chapter: Chapter, mutant: Mutant | None, last_cell: int) -> Any:
    notebook = copy.deepcopy(chapter.notebook)
    notebook.cells = notebook.cells[: last_cell + 1]
    if mutant is not None:
        notebook.cells[mutant.cell].source = mutant.source
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    return notebook


def execute_runs(
    runs: Sequence[Run],
    *,
    jobs: int,
    expected: Callable[[Chapter], float] | None = None,
    on_done: Callable[[Run], None] | None = None,
    warm: tuple[bool, str] = (True, ""),
    preload: Sequence[str] | None = None,
) -> str:
    """Execute every run in its own kernel, ``jobs`` at a time, longest first; returns which
    kernels ran them (``WarmKernels.describe``)."""
    from chapters_support.execution.interrupt import Interrupted, stop_signals
    from chapters_support.execution.runner import kernel_pool

    if not runs:
        return "no kernels"
    order = sorted(
        runs, key=lambda r: (-(expected(r.chapter) if expected else 0.0), r.chapter.docname)
    )
    workers = max(1, min(jobs, len(order)))
    notebooks = {id(run): _notebook_for(run.chapter, run.mutant, run.last_cell) for run in order}
    with (
        stop_signals() as received,
        kernel_pool(
            workers,
            [run.chapter.notebook for run in order],
            kernel_name=order[0].chapter.kernel_name,
            warm=warm,
            preload=preload,
        ) as pool,
    ):
        futures = {}
        for run in order:
            futures[pool.submit(run.chapter, notebooks.pop(id(run)))] = run
        pending, finished = set(futures), 0
        # Ctrl-C or SIGTERM: every kernel is stopped at once, as in a build (execution/)
        while pending and not received:
            done, pending = cf.wait(pending, timeout=0.1, return_when=cf.FIRST_COMPLETED)
            for future in done:
                run = futures[future]
                try:
                    raw = future.result()
                except Exception as error:  # the worker died
                    run.failure = {"kind": "error", "message": f"{type(error).__name__}: {error}"}
                else:
                    run.notebook = nbformat.reads(raw["notebook"], as_version=4)
                    run.failure = raw["failure"]
                    run.seconds = raw["seconds"]
                finished += 1
                if on_done is not None:
                    on_done(run)
        if received:
            pool.stop()
            raise Interrupted(
                received[0],
                cached=0,
                not_run=len(order) - finished,
                failed=[],
                line=f"{finished} of {len(order)} runs finished; no score was recorded "
                "(run it again to measure)",
            )
        return str(pool.warm.describe())


def _results(run: Run, label: str) -> list[Any]:
    if run.notebook is None:
        return []
    return [
        r
        for cell in run.notebook.cells
        for r in results_from_outputs(cell.get("outputs", []))
        if r.label == label and r.kind != "steps"
    ]


def _fingerprint(result: Any) -> tuple[Any, ...]:
    return tuple(
        item.get("derived_digest", item.get("expected", item.get("reached")))
        for item in result.items
    )


def verdict(run: Run, baseline: Run, label: str) -> tuple[str, str]:
    """The mutant's verdict and a few words why."""
    got, want = _results(run, label), _results(baseline, label)
    failure = run.failure or {}
    if any(r.status == FAIL for r in got):
        failed = next(r for r in got if r.status == FAIL)
        return KILLED, f"{failed.kind} check fails: {failed.message[:120]}"
    if failure.get("ename") in REFUSALS:
        return KILLED, f"refused: {failure.get('ename')}: {str(failure.get('evalue'))[:120]}"
    if len(got) < len(want) or not got:
        return INVALID, f"crashed before the verdict: {failure.get('message', 'no result')}"[:160]
    if all(r.status == PASS for r in got) and [_fingerprint(r) for r in got] == [
        _fingerprint(r) for r in want
    ]:
        return EQUIVALENT, "the derived values are bit-identical to the unmutated ones"
    if run.mutant is not None and run.mutant.explained:
        return EQUIVALENT, f"explained in the chapter: {run.mutant.explained}"
    return SURVIVED, "every check of the label passes"


# -- the measurement -----------------------------------------------------------------------------


@dataclass
class MutantResult:
    mutant: Mutant
    verdict: str
    why: str
    line: int | None  # in the chapter file

    def to_json(self) -> dict[str, Any]:
        return {
            "operator": self.mutant.operator,
            "verdict": self.verdict,
            "why": self.why,
            "line": self.line,
            "before": self.mutant.before,
            "after": self.mutant.after,
        }


@dataclass
class CheckScore:
    label: str
    chapter: str
    candidates: int = 0
    results: list[MutantResult] = field(default_factory=list)

    def count(self, verdict_name: str) -> int:
        return sum(r.verdict == verdict_name for r in self.results)

    @property
    def score(self) -> float | None:
        killed, survived = self.count(KILLED), self.count(SURVIVED)
        return killed / (killed + survived) if killed + survived else None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "chapter": self.chapter,
            "candidates": self.candidates,
            **{v: self.count(v) for v in VERDICTS},
            "score": self.score,
            "mutants": [r.to_json() for r in self.results],
        }


def line_in_file(chapter: Chapter, cell: int, line: int, text: Sequence[str]) -> int | None:
    """The line of the chapter file (whose lines are ``text``) holding line ``line`` of code
    cell ``cell``."""
    start = chapter.line_of_cell(cell)
    if start is None:
        return None
    source = chapter.notebook.cells[cell].source.splitlines()
    first = next((s for s in source if s.strip()), None)
    if first is None:
        return None
    for n in range(start - 1, min(len(text), start + 40)):
        if text[n] == first:
            offset = source.index(first)
            return n + 1 + (line - 1 - offset)
    return None


def plan_chapter(
    chapter: Chapter, cap: int
) -> tuple[list[CheckCall], dict[str, list[Mutant]], dict[str, int], list[str]]:
    """The chapter's check calls, the chosen mutants per label, how many there were."""
    trees = parse_cells(chapter)
    calls, skipped = check_calls(trees)
    all_sites = sites(trees)
    by_label: dict[str, list[Mutant]] = {}
    for call in calls:
        attach_regions(call, all_sites)
        by_label.setdefault(call.label, [])
        known = {m.key for m in by_label[call.label]}
        by_label[call.label].extend(
            m for m in mutants_of(call, chapter, trees) if m.key not in known
        )
    candidates = {label: len(found) for label, found in by_label.items()}
    chosen = {label: select(found, cap, label) for label, found in by_label.items()}
    return calls, chosen, candidates, skipped


def measure(
    chapters: Sequence[Chapter],
    *,
    cap: int = 12,
    jobs: int = 1,
    expected: Callable[[Chapter], float] | None = None,
    on_done: Callable[[Run], None] | None = None,
    on_planned: Callable[[int], None] | None = None,
    on_kernels: Callable[[str], None] | None = None,
    warm: tuple[bool, str] = (True, ""),
    preload: Sequence[str] | None = None,
) -> tuple[list[CheckScore], list[str]]:
    """Every chapter's checks against their mutants. Raises MutateError for a chapter that
    fails unmutated. ``on_kernels`` hears which kernels ran them."""
    notes: list[str] = []
    plans = {}
    for chapter in chapters:
        calls, chosen, candidates, skipped = plan_chapter(chapter, cap)
        notes.extend(f"{chapter.docname}: {s}" for s in skipped)
        last = {c.label: max(x.cell for x in calls if x.label == c.label) for c in calls}
        plans[chapter.docname] = (chapter, chosen, candidates, last)
    baselines = [
        Run(chapter, None, max(last.values())) for chapter, _, _, last in plans.values() if last
    ]
    runs = [
        Run(chapter, mutant, last[label])
        for chapter, chosen, _, last in plans.values()
        for label, found in chosen.items()
        for mutant in found
    ]
    if on_planned is not None:
        on_planned(len(baselines) + len(runs))
    kernels = execute_runs(
        [*baselines, *runs],
        jobs=jobs,
        expected=expected,
        on_done=on_done,
        warm=warm,
        preload=preload,
    )
    if on_kernels is not None:
        on_kernels(kernels)
    base = {run.chapter.docname: run for run in baselines}
    for run in baselines:
        if run.failure is not None:
            raise MutateError(
                f"{run.chapter.docname} fails unmutated, so its mutants say nothing: "
                f"{run.failure.get('message', '')}"
            )
    scores: dict[tuple[str, str], CheckScore] = {}
    for chapter, chosen, candidates, _ in plans.values():
        for label in chosen:
            scores[(chapter.docname, label)] = CheckScore(label, chapter.docname, candidates[label])
    texts = {
        chapter.docname: chapter.path.read_text(encoding="utf-8").splitlines()
        for chapter, _, _, _ in plans.values()
    }
    for run in runs:
        assert run.mutant is not None
        name, why = verdict(run, base[run.chapter.docname], run.mutant.label)
        line = line_in_file(
            run.chapter, run.mutant.cell, run.mutant.start[0], texts[run.chapter.docname]
        )
        scores[(run.chapter.docname, run.mutant.label)].results.append(
            MutantResult(run.mutant, name, why, line)
        )
    for score in scores.values():
        score.results.sort(key=lambda r: (r.mutant.cell, r.mutant.start, r.mutant.replacement))
    return list(scores.values()), notes


def summary(scores: Sequence[CheckScore]) -> dict[str, Any]:
    counts = {v: sum(s.count(v) for s in scores) for v in VERDICTS}
    decided = counts[KILLED] + counts[SURVIVED]
    return {
        **counts,
        "checks": len(scores),
        "score": counts[KILLED] / decided if decided else None,
    }


# -- the record the book keeps (book/_mutation.json) ---------------------------------------------

RECORD_FILE = "_mutation.json"


def record(
    book_root: Any, scores: Sequence[CheckScore], chapters: Sequence[Chapter], cap: int
) -> Any:
    """Write (or update) ``_mutation.json`` in the book: each measured chapter's scores with
    the digest of the code they were measured on; chapters not measured now are kept."""
    import json
    from pathlib import Path

    path = Path(book_root) / RECORD_FILE
    data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    recorded = data.get("chapters") or {}
    for chapter in chapters:
        mine = [s for s in scores if s.chapter == chapter.docname]
        recorded[chapter.docname] = {
            "code_digest": notebook_digest(chapter.notebook),
            "cap": cap,
            "derivations": {
                s.label: {**{v: s.count(v) for v in VERDICTS}, "score": s.score} for s in mine
            },
        }
    out = {
        "about": "chapters mutate --record: mutants of each check's derived code, and how many "
        "its check kills (a chapter whose code changed since is marked stale)",
        "chapters": dict(sorted(recorded.items())),
    }
    path.write_text(json.dumps(out, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def recorded_scores(
    book_root: Any, digests: Mapping[str, str | None]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(chapter, label) -> its recorded counts and score, with ``stale`` when the chapter's
    code changed since (``digests``: docname -> the code digest of the chapter as built)."""
    import json
    from pathlib import Path

    path = Path(book_root) / RECORD_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for docname, chapter in (data.get("chapters") or {}).items():
        if docname not in digests:
            continue
        stale = digests[docname] != chapter.get("code_digest")
        for label, counts in (chapter.get("derivations") or {}).items():
            out[(docname, label)] = {**counts, "stale": stale}
    return out


def score_text(entry: dict[str, Any] | None) -> str:
    """The status page's cell: ``11/12 killed``, with ``(stale)`` after a code edit."""
    if not entry:
        return "–"
    killed, survived = int(entry.get(KILLED, 0)), int(entry.get(SURVIVED, 0))
    if killed + survived == 0:
        return "no valid mutant"
    text = f"{killed}/{killed + survived} killed"
    return text + " (stale)" if entry.get("stale") else text
