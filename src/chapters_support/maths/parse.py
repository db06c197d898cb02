"""The LaTeX this book writes, as statements, relation steps and expression trees.

pylatexenc's ``LatexWalker`` tokenizes (braces, macro arguments, environments, ``%``
comments, positions); what it cannot know is what the maths *means*, so the rest is
written here: splitting a display into statements (``aligned`` rows, ``\\qquad``,
``\\Longrightarrow``, "so", "when ..."), a statement into a chain of relations, and each side
into a tree by a recursive-descent parser that follows ``book/notation.md``: bold symbols
are vectors and matrices, juxtaposition is a (matrix) product, ``^\\top`` a transpose,
``A_{ij}`` an entry, ``\\sum_{i=1}^{n}`` a sum over an index. sympy's LaTeX parsers were
measured on the book and read matrix formulas as commuting scalars, so they do not fit.

Nothing here decides what a symbol is bound to; that is :mod:`~chapters_support.maths.evaluate`.
A construct outside the subset is never guessed at: it raises :class:`Unsupported` naming it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# -- errors ---------------------------------------------------------------------------------


class Unsupported(Exception):
    """A construct the step checker does not evaluate; ``construct`` names it for the reader."""

    def __init__(self, construct: str, pos: int | None = None) -> None:
        super().__init__(construct)
        self.construct = construct
        self.pos = pos


# -- tokens -----------------------------------------------------------------------------------

GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "varrho", "sigma",
    "varsigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta",
    "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega", "ell",
}  # fmt: skip
SPACES = {",", ";", ":", "!", " ", "quad", "qquad", "enspace", "thinspace", "medspace",
          "thickspace", "negthinspace", "displaystyle", "textstyle", "big", "Big", "bigg",
          "Bigg", "nonumber", "notag"}  # fmt: skip
SEPARATORS = {"quad", "qquad"}
IMPLIES = {"Longrightarrow", "Rightarrow", "implies", "iff", "Longleftrightarrow",
           "Leftrightarrow", "Longleftarrow", "impliedby"}  # fmt: skip
RELATION_MACROS = {
    "le": "<=", "leq": "<=", "leqslant": "<=", "ge": ">=", "geq": ">=", "geqslant": ">=",
    "ne": "!=", "neq": "!=", "approx": "~=", "in": "in", "to": "->", "mapsto": "|->",
    "leftarrow": "<-", "gets": "<-", "sim": "~", "equiv": "==", "propto": "propto",
    "gg": ">>", "ll": "<<", "simeq": "~=", "coloneqq": ":=", "triangleq": ":=",
    "subseteq": "subset", "subset": "subset", "xrightarrow": "->", "longrightarrow": "->",
    "rightarrow": "->",
}  # fmt: skip
RELATION_CHARS = {"=": "=", "<": "<", ">": ">"}
STYLES = {"mathbf", "boldsymbol", "bm", "mathrm", "mathit", "mathsf", "mathcal", "mathbb",
          "mathtt", "mathscr", "mathfrak", "operatorname", "text", "textrm", "textbf",
          "textit", "mbox"}  # fmt: skip
BOLD = {"mathbf", "boldsymbol", "bm"}
ACCENTS = {"hat": "hat", "widehat": "hat", "tilde": "tilde", "widetilde": "tilde",
           "bar": "bar", "overline": "bar", "dot": "dot", "ddot": "ddot", "vec": "vec",
           "check": "check", "breve": "breve"}  # fmt: skip
DECORATIONS = {"star": "star", "ast": "star", "*": "star", "uparrow": "up",
               "downarrow": "down", "prime": "prime", "dagger": "dagger",
               "circ": "circ"}  # fmt: skip
# functions written as macros (\exp x, \log(x), ...) and as \operatorname{...}
FUNCTION_MACROS = {"exp", "log", "ln", "tanh", "sinh", "cosh", "sin", "cos", "tan", "det",
                   "max", "min", "arg", "sup", "inf", "lim", "Pr", "sgn", "erf"}  # fmt: skip
UNSUPPORTED_MACROS = {
    "int": "an integral", "oint": "an integral", "pm": "\\pm (two claims in one)",
    "mp": "\\mp", "cup": "a set union", "cap": "a set intersection", "setminus": "a set",
    "forall": "a quantifier", "exists": "a quantifier", "mid": "a conditional probability",
    "circ": "function composition", "cdots": "\\cdots inside an expression",
    "dots": "\\dots inside an expression", "ldots": "\\dots inside an expression",
    "vdots": "\\vdots", "ddots": "\\ddots",
    "lim": "a limit", "Pr": "a probability", "binom": "a binomial coefficient",
    "boxed": "\\boxed", "cancel": "\\cancel", "overset": "\\overset", "underset": "\\underset",
    "stackrel": "\\stackrel", "sup": "a supremum", "inf": "an infimum",
}  # fmt: skip

_SPECS: dict[str, str] = {
    "operatorname": "*{", "boldsymbol": "{", "bm": "{", "dfrac": "{{", "tfrac": "{{",
    "frac": "{{", "widehat": "{", "widetilde": "{", "mathit": "{", "mathsf": "{",
    "mathscr": "{", "mathfrak": "{", "textrm": "{", "textbf": "{", "textit": "{",
    "overset": "{{", "underset": "{{", "stackrel": "{{", "boxed": "{", "cancel": "{",
    "underbrace": "{", "overbrace": "{", "xrightarrow": "[{", "binom": "{{", "mbox": "{",
    "sqrt": "[{", "text": "{", "mathbf": "{", "mathrm": "{", "mathcal": "{", "mathbb": "{",
    "hat": "{", "tilde": "{", "bar": "{", "overline": "{", "vec": "{", "dot": "{",
    "ddot": "{", "check": "{", "breve": "{", "mathtt": "{",
}  # fmt: skip


@dataclass
class Tok:
    kind: str  # num letter op macro group env space text comment rowsep amp
    value: str
    pos: int
    end: int
    args: tuple[Any, ...] = ()  # macro: argument token lists (None when absent); group/env: body
    star: bool = False

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"{self.kind}:{self.value}"


@lru_cache(maxsize=1)
def _context() -> Any:
    from pylatexenc import macrospec
    from pylatexenc.latexwalker import get_default_latex_context_db

    db = get_default_latex_context_db()
    db.add_context_category(
        "chapters-maths",
        prepend=True,
        macros=[macrospec.MacroSpec(name, spec) for name, spec in _SPECS.items()],
    )
    return db


def tokenize(text: str, offset: int = 0) -> list[Tok]:
    """pylatexenc's nodes, flattened into this parser's tokens (positions kept)."""
    from pylatexenc.latexwalker import LatexWalker, LatexWalkerError

    walker = LatexWalker(text, latex_context=_context(), tolerant_parsing=False)
    try:
        nodes, _, _ = walker.get_latex_nodes(pos=0)
    except LatexWalkerError as error:
        raise Unsupported(f"LaTeX that does not parse ({error.msg})", offset) from None
    return _convert(nodes, offset)


def _convert(nodes: Sequence[Any], offset: int) -> list[Tok]:
    from pylatexenc import latexwalker as lw

    out: list[Tok] = []
    for node in nodes:
        if node is None:
            continue
        pos = offset + node.pos
        end = pos + node.len
        if isinstance(node, lw.LatexCharsNode):
            out.extend(_chars(node.chars, pos))
        elif isinstance(node, lw.LatexMacroNode):
            name = node.macroname
            if name == "\\":
                out.append(Tok("rowsep", "\\\\", pos, end))
            elif name in SPACES:
                out.append(Tok("space", name, pos, end))
            else:
                args: list[Any] = []
                if node.nodeargd is not None:
                    for arg in node.nodeargd.argnlist:
                        if arg is None or isinstance(arg, lw.LatexCharsNode) and arg.chars == "*":
                            args.append(None)
                        elif isinstance(arg, lw.LatexGroupNode):
                            args.append(_convert(arg.nodelist, offset))
                        else:
                            args.append(_convert([arg], offset))
                star = bool(
                    node.nodeargd is not None
                    and node.nodeargd.argnlist
                    and isinstance(node.nodeargd.argnlist[0], lw.LatexCharsNode)
                    and node.nodeargd.argnlist[0].chars == "*"
                )
                if name in {"text", "textrm", "mbox", "textbf", "textit"}:
                    body = node.nodeargd.argnlist[-1] if node.nodeargd else None
                    words = (
                        "".join(n.latex_verbatim() for n in body.nodelist)
                        if isinstance(body, lw.LatexGroupNode)
                        else (body.latex_verbatim() if body is not None else "")
                    )
                    out.append(Tok("text", words, pos, end))
                else:
                    out.append(Tok("macro", name, pos, end, tuple(args), star))
        elif isinstance(node, lw.LatexGroupNode):
            delims = getattr(node, "delimiters", ("{", "}"))
            body = _convert(node.nodelist, offset)
            if delims and delims[0] == "[":
                out.append(Tok("op", "[", pos, pos + 1))
                out.extend(body)
                out.append(Tok("op", "]", end - 1, end))
            else:
                out.append(Tok("group", "{", pos, end, (body,)))
        elif isinstance(node, lw.LatexEnvironmentNode):
            out.append(
                Tok("env", node.environmentname, pos, end, (_convert(node.nodelist, offset),))
            )
        elif isinstance(node, lw.LatexSpecialsNode):
            chars = node.specials_chars
            if chars == "&":
                out.append(Tok("amp", "&", pos, end))
            elif chars == "~":
                out.append(Tok("space", "~", pos, end))
            else:
                out.extend(_chars(chars, pos))
        elif isinstance(node, lw.LatexCommentNode):
            out.append(Tok("comment", node.comment.strip(), pos, end))
        elif isinstance(node, lw.LatexMathNode):
            out.extend(_convert(node.nodelist, offset))
    return out


_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def _chars(text: str, pos: int) -> Iterator[Tok]:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        match = _NUMBER.match(text, i)
        if match:
            yield Tok("num", match.group(0), pos + i, pos + match.end())
            i = match.end()
            continue
        kind = "letter" if ch.isalpha() else "op"
        yield Tok(kind, ch, pos + i, pos + i + 1)
        i += 1


# -- spelling: one canonical text per symbol -----------------------------------------------------


def spell_tokens(toks: Sequence[Tok]) -> str:
    """Canonical LaTeX for a token list: no spaces, every argument braced."""
    parts: list[str] = []
    for tok in toks:
        if tok.kind in {"space", "comment"}:
            continue
        if tok.kind == "macro":
            text = "\\" + tok.value + ("*" if tok.star else "")
            for arg in tok.args:
                if arg is not None:
                    text += "{" + spell_tokens(arg) + "}"
            parts.append(text)
        elif tok.kind == "group":
            inner = spell_tokens(tok.args[0])
            parts.append(inner if len(_significant(tok.args[0])) == 1 else "{" + inner + "}")
        elif tok.kind == "text":
            parts.append("\\text{" + tok.value.strip() + "}")
        elif tok.kind == "env":
            parts.append(
                "\\begin{"
                + tok.value
                + "}"
                + spell_tokens(tok.args[0])
                + "\\end{"
                + tok.value
                + "}"
            )
        elif tok.kind == "rowsep":
            parts.append("\\\\")
        else:
            if (
                parts
                and parts[-1][-1:].isalpha()
                and parts[-1].startswith("\\")
                and tok.kind == "letter"
            ):
                parts.append(" ")
            parts.append(tok.value)
    return "".join(parts)


def _significant(toks: Sequence[Tok]) -> list[Tok]:
    return [t for t in toks if t.kind not in {"space", "comment"}]


# -- the expression tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    pos: int = field(default=0, compare=False, repr=False)
    end: int = field(default=0, compare=False, repr=False)


@dataclass(frozen=True)
class Num(Node):
    value: float = 0.0


@dataclass(frozen=True)
class Const(Node):
    name: str = ""  # pi | infty


@dataclass(frozen=True)
class Script(Node):
    """A subscript or family superscript: its canonical spelling and, when it reads as indices,
    the index expressions (``_{ij}`` is ``i, j``; ``_{t-1}`` is ``t - 1``; ``_{\\max}`` is none)."""

    text: str = ""
    items: tuple[Node, ...] | None = None


@dataclass(frozen=True)
class Name(Node):
    """A symbol as written: ``core`` is its canonical base (``\\mathbf{x}``, ``\\hat{X}``,
    ``\\theta``, ``\\mathrm{d}\\mathbf{S}``), then decorations, subscript, ``^{(t)}``."""

    core: str = ""
    bold: bool = False
    decor: tuple[str, ...] = ()  # star, up, prime (one per prime), dagger
    sub: Script | None = None
    fam: Script | None = None  # ^{(l)}: a member of a family, as a subscript is

    @property
    def spelling(self) -> str:
        return spell_name(self.core, self.decor, self.sub.text if self.sub else None,
                          self.fam.text if self.fam else None)  # fmt: skip

    @property
    def base_spelling(self) -> str:
        return spell_name(self.core, self.decor, None, None)

    @property
    def is_index_letter(self) -> bool:
        """A lone italic letter (with primes), as indices are written: ``i``, ``j'``,
        ``\\alpha``."""
        return (
            self.sub is None
            and self.fam is None
            and not self.bold
            and set(self.decor) <= {"prime"}
            and (len(self.core) == 1 and self.core.isalpha() or self.core[1:] in GREEK)
        )


def spell_name(core: str, decor: Sequence[str], sub: str | None, fam: str | None) -> str:
    text = core + "'" * sum(1 for d in decor if d == "prime")
    macros = {"star": "star", "up": "uparrow", "down": "downarrow", "dagger": "dagger"}
    marks = "".join("\\" + macros.get(d, d) for d in decor if d != "prime")
    if sub is not None:
        text += "_{" + sub + "}"
    if marks:
        text += "^{" + marks + "}"
    if fam is not None:
        text += "^{(" + fam + ")}"
    return text


@dataclass(frozen=True)
class Func(Node):
    """A function known by name: exp, log, tanh, softmax, diag, tr, det, max, ..."""

    name: str = ""
    sub: Script | None = None  # \operatorname{crop}_p, \mathrm{fl}_{16}


@dataclass(frozen=True)
class Apply(Node):
    """``f(x)``; when ``f`` turns out to be a value (``n(\\bar{y} - \\mu)^2``,
    ``\\delta_{ij} (\\mathbf{A}\\mathbf{x})_i``) the parenthesis was a product, and the scripts
    after it (``post``: powers, transposes, entries) belong to the parenthesis."""

    func: Node = field(default_factory=Node)  # Func, or Name (a bound callable / defined function)
    args: tuple[Node, ...] = ()
    post: tuple[
        tuple[str, Any], ...
    ] = ()  # ("pow", exponent) | ("transpose", None) | ("index", items)


@dataclass(frozen=True)
class Unary(Node):
    op: str = "-"  # - | transpose | inverse | invtranspose | abs | floor | ceil | norm
    x: Node = field(default_factory=Node)
    p: str | None = None  # the norm's subscript: 2, 1, F, or None


@dataclass(frozen=True)
class Binary(Node):
    op: str = "+"  # + - matmul cdot times hadamard div pow mod
    a: Node = field(default_factory=Node)
    b: Node = field(default_factory=Node)


@dataclass(frozen=True)
class Sqrt(Node):
    x: Node = field(default_factory=Node)
    n: Node | None = None


@dataclass(frozen=True)
class Index(Node):
    """``(expr)_{jk}``: entries of a parenthesised expression or a function's value."""

    x: Node = field(default_factory=Node)
    items: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Bound(Node):
    """The index variables of a sum, product or reduction and their range."""

    names: tuple[str, ...] = ()
    lo: Node | None = None
    hi: Node | None = None
    cond: Chain | None = None  # \sum_{j \le i}: a condition on the index


@dataclass(frozen=True)
class Reduce(Node):
    op: str = "sum"  # sum | prod | max | min
    bound: Bound = field(default_factory=Bound)
    body: Node = field(default_factory=Node)


@dataclass(frozen=True)
class Partial(Node):
    """``\\frac{\\partial N}{\\partial D}``, ``\\partial N / \\partial D``,
    ``\\frac{\\partial}{\\partial D} N`` and ``\\mathrm{d}\\mathbf{W}``: evaluated by autograd,
    never by the author's code."""

    num: Node = field(default_factory=Node)
    wrt: tuple[Node, ...] = ()  # one entry per \partial in the denominator (second derivatives)
    at: tuple[Node, ...] | None = None  # \frac{\partial L}{\partial\theta}(\theta_0)


@dataclass(frozen=True)
class Iverson(Node):
    cond: Chain = field(default_factory=lambda: Chain())


@dataclass(frozen=True)
class Block(Node):
    """A block matrix or a stack: ``bmatrix``/``pmatrix`` rows, or
    ``[\\,\\mathbf{X} \\;\\; \\mathbf{1}\\,]``."""

    rows: tuple[tuple[Node, ...], ...] = ()


@dataclass(frozen=True)
class Tuple(Node):
    """``(j, l)``: indices taken together, as in ``[\\,(j, l) = (j^*, l^*)\\,]``."""

    items: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Space(Node):
    """``\\mathbb{R}^{a \\times b}`` (only on the right of ``\\in``)."""

    dims: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Interval(Node):
    lo: Node = field(default_factory=Node)
    hi: Node = field(default_factory=Node)
    closed: tuple[bool, bool] = (True, True)


@dataclass(frozen=True)
class Chain(Node):
    """``a = b \\le c``: sides and the relations between them."""

    sides: tuple[Node, ...] = ()
    rels: tuple[str, ...] = ()


# -- the expression parser --------------------------------------------------------------------


_STARTS_FACTOR_OPS = {"(", "[", "|", "{"}
_STOP_OPS = {"+", "-", ")", "]", ",", ";", "=", "<", ">", ":", "|", "/", "&", "!", "."}


class _Parser:
    def __init__(self, toks: Sequence[Tok]) -> None:
        self.toks = [t for t in toks if t.kind not in {"space", "comment"}]
        # wide spaces separate the cells of a block row: [\,\mathbf{X} \;\; \mathbf{1}\,]
        self.gaps = [t.pos for t in toks if t.kind == "space" and t.value in {";", "quad", "qquad"}]
        self.i = 0

    # -- token helpers --
    def peek(self, k: int = 0) -> Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise Unsupported("an expression that ends too early")
        self.i += 1
        return tok

    def at_op(self, *values: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "op" and tok.value in values

    def at_macro(self, *names: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "macro" and tok.value in names

    def expect_op(self, value: str) -> Tok:
        tok = self.peek()
        if tok is None or tok.kind != "op" or tok.value != value:
            where = f"'{tok.value}'" if tok else "the end"
            raise Unsupported(f"'{value}' expected, found {where}", tok.pos if tok else None)
        self.i += 1
        return tok

    def done(self) -> bool:
        return self.i >= len(self.toks)

    # -- grammar --
    def parse_all(self) -> Node:
        if not self.toks:
            raise Unsupported("an empty side")
        node = self.expr()
        if not self.done():
            tok = self.peek()
            assert tok is not None
            raise Unsupported(_describe(tok), tok.pos)
        return node

    def expr(self) -> Node:
        start = self.peek()
        if self.at_op("+"):
            self.next()
            node = self.term()
        elif self.at_op("-"):
            tok = self.next()
            node = Unary(tok.pos, 0, op="-", x=self.term())
        else:
            node = self.term()
        while True:
            if self.at_op("+", "-"):
                op = self.next().value
                node = Binary(start.pos if start else 0, 0, op=op, a=node, b=self.term())
            elif self.at_macro("pm", "mp"):
                raise Unsupported(UNSUPPORTED_MACROS["pm"], self.peek().pos)  # type: ignore[union-attr]
            else:
                return node

    def term(self) -> Node:
        node = self.product()
        while True:
            tok = self.peek()
            if tok is None:
                return node
            if tok.kind == "macro" and tok.value in {"cdot", "times", "odot", "ast", "bmod"}:
                self.next()
                if tok.value == "bmod":
                    op = "mod"
                elif tok.value == "odot":
                    op = "hadamard"
                else:
                    op = "cdot"
                node = Binary(node.pos, 0, op=op, a=node, b=self.product())
            else:
                return node

    def product(self) -> Node:
        node = self.factor()
        while True:
            if self.at_op("/"):
                self.next()
                if self.at_macro("partial"):
                    raise Unsupported("a partial derivative written after '/' in a product")
                node = Binary(node.pos, 0, op="div", a=node, b=self.factor())
            elif self.starts_factor():
                tok = self.peek()
                right = self.factor()
                node = Binary(node.pos, 0, op="matmul", a=node, b=right)
                del tok
            else:
                return node

    def starts_factor(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        if tok.kind in {"num", "letter", "group", "env", "text"}:
            return True
        if tok.kind == "op":
            return tok.value in {"(", "[", "|"} and not (tok.value == "|" and self._closing_bar())
        if tok.kind == "macro":
            name = tok.value
            if name in RELATION_MACROS or name in IMPLIES:
                return False
            return name not in {"cdot", "times", "odot", "ast", "bmod", "pm", "mp", "right",
                                "rVert", "rvert", "rfloor", "rceil", "|", "Vert", "end", "cdots",
                                "dots", "ldots"}  # fmt: skip
        return False

    def _closing_bar(self) -> bool:
        return bool(getattr(self, "_bars", 0))

    def factor(self) -> Node:
        node = self.atom()
        return self.postfix(node)

    def postfix(self, node: Node) -> Node:
        while True:
            tok = self.peek()
            if tok is None:
                return node
            if tok.kind == "op" and tok.value == "'":
                raise Unsupported("a prime on an expression (only names take primes)", tok.pos)
            if tok.kind == "op" and tok.value == "^":
                self.next()
                node = self.superscript(node, self.script_tokens())
            elif tok.kind == "op" and tok.value == "_":
                self.next()
                toks = self.script_tokens()
                items = _index_items(toks)
                if items is None:
                    raise Unsupported(f"the subscript _{{{spell_tokens(toks)}}} on an expression")
                node = Index(node.pos, 0, x=node, items=items)
            else:
                return node

    def script_tokens(self) -> list[Tok]:
        tok = self.next()
        if tok.kind == "group":
            return list(tok.args[0])
        if tok.kind == "num" and len(tok.value) > 1:
            # x^23 is x^2 3 in TeX: only the first digit is the script
            first = Tok("num", tok.value[0], tok.pos, tok.pos + 1)
            rest = Tok("num", tok.value[1:], tok.pos + 1, tok.end)
            self.toks.insert(self.i, rest)
            return [first]
        return [tok]

    def superscript(self, node: Node, toks: list[Tok]) -> Node:
        sig = _significant(toks)
        names = [t.value for t in sig if t.kind == "macro"]
        if sig and all(t.kind == "macro" and t.value in {"top", "intercal"} for t in sig):
            return Unary(node.pos, 0, op="transpose", x=node)
        if len(sig) == 2 and sig[0].kind == "op" and sig[0].value == "-":
            if sig[1].kind == "num" and sig[1].value == "1":
                return Unary(node.pos, 0, op="inverse", x=node)
            if sig[1].kind == "macro" and sig[1].value in {"top", "intercal"}:
                return Unary(node.pos, 0, op="invtranspose", x=node)
        if names and all(n in DECORATIONS for n in names) and len(names) == len(sig):
            raise Unsupported(f"^{{{spell_tokens(toks)}}} on an expression")
        exponent = _Parser(toks).parse_all()
        return Binary(node.pos, 0, op="pow", a=node, b=exponent)

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("an expression that ends too early")
        if tok.kind == "num":
            self.next()
            return Num(tok.pos, tok.end, value=float(tok.value))
        if tok.kind == "letter":
            return self.name()
        if tok.kind == "text":
            return self.name()
        if tok.kind == "group":
            self.next()
            return _Parser(tok.args[0]).parse_all()
        if tok.kind == "env":
            self.next()
            return self.environment(tok)
        if tok.kind == "op":
            if tok.value == "(":
                self.next()
                inner = self.expr()
                if self.at_op(","):  # (j, l): a pair of indices, compared as a whole
                    items = [inner]
                    while self.at_op(","):
                        self.next()
                        items.append(self.expr())
                    self.expect_op(")")
                    return Tuple(tok.pos, 0, items=tuple(items))
                self.expect_op(")")
                return inner
            if tok.value == "[":
                return self.bracket()
            if tok.value == "|":
                self.next()
                self._bars = getattr(self, "_bars", 0) + 1
                inner = self.expr()
                self._bars -= 1
                self.expect_op("|")
                return Unary(tok.pos, 0, op="abs", x=inner)
            raise Unsupported(_describe(tok), tok.pos)
        if tok.kind == "macro":
            return self.macro_atom(tok)
        raise Unsupported(_describe(tok), tok.pos)

    def macro_atom(self, tok: Tok) -> Node:
        name = tok.value
        if name in GREEK or name in STYLES or name in ACCENTS or name == "#":
            if name == "operatorname" or name in {"mathrm"} and self._is_function_name(tok):
                return self.function(tok)
            if name == "mathrm" and _mathrm_is_differential(tok, self.peek(1)):
                return self.differential()
            if name == "mathbb" and _spell_arg(tok) in {"E"}:
                raise Unsupported("an expectation \\mathbb{E}", tok.pos)
            if name == "mathbb":
                raise Unsupported(
                    f"the set \\mathbb{{{_spell_arg(tok)}}} in an expression", tok.pos
                )
            return self.name()
        if name in {"frac", "dfrac", "tfrac"}:
            self.next()
            num, den = tok.args
            return self.fraction(tok, num or [], den or [])
        if name == "sqrt":
            self.next()
            root = _Parser(tok.args[0]).parse_all() if tok.args[0] else None
            return Sqrt(tok.pos, tok.end, x=_Parser(tok.args[1] or []).parse_all(), n=root)
        if name == "left":
            return self.left_right()
        if name in {"lVert", "Vert", "|"}:
            return self.norm(name)
        if name == "lvert":
            self.next()
            inner = self.expr()
            self._close("rvert")
            return Unary(tok.pos, 0, op="abs", x=inner)
        if name in {"lfloor", "lceil"}:
            self.next()
            inner = self.expr()
            self._close("rfloor" if name == "lfloor" else "rceil")
            return Unary(tok.pos, 0, op="floor" if name == "lfloor" else "ceil", x=inner)
        if name in {"sum", "prod"}:
            return self.reduction(name)
        if name in {"max", "min"}:
            return self.maxmin(name)
        if name in FUNCTION_MACROS and name not in UNSUPPORTED_MACROS:
            return self.function(tok)
        if name == "partial":
            return self.inline_partial()
        if name == "nabla":
            return self.nabla()
        if name == "infty":
            self.next()
            return Const(tok.pos, tok.end, name="infty")
        if name == "underbrace":
            self.next()
            node = _Parser(tok.args[0] or []).parse_all()
            if self.at_op("_"):
                self.next()
                self.script_tokens()
            return node
        if name in {"sigma", "phi", "varphi", "Phi"}:  # pragma: no cover - GREEK handles these
            return self.name()
        if name in UNSUPPORTED_MACROS:
            raise Unsupported(UNSUPPORTED_MACROS[name], tok.pos)
        if name in RELATION_MACROS:
            raise Unsupported(f"the relation \\{name} inside an expression", tok.pos)
        raise Unsupported(f"\\{name}", tok.pos)

    def _is_function_name(self, tok: Tok) -> bool:
        return tok.value == "operatorname" or _spell_arg(tok) in MATHRM_FUNCTIONS

    def _close(self, macro: str) -> None:
        tok = self.peek()
        if tok is not None and tok.kind == "macro" and tok.value == "right":
            self.next()
            tok = self.peek()
        if tok is None or tok.kind != "macro" or tok.value != macro:
            raise Unsupported(f"\\{macro} expected")
        self.next()

    # -- names --
    def name(self) -> Node:
        """A symbol with its decorations and scripts; a following ( ... ) may make it a call."""
        tok = self.next()
        core, bold = self.core_of(tok)
        decor: list[str] = []
        sub: Script | None = None
        fam: Script | None = None
        powers: list[list[Tok]] = []
        transpose = False
        while True:
            nxt = self.peek()
            if nxt is None:
                break
            if nxt.kind == "op" and nxt.value == "'":
                self.next()
                decor.append("prime")
            elif nxt.kind == "op" and nxt.value == "_" and sub is None and not powers:
                self.next()
                toks = self.script_tokens()
                sub = Script(nxt.pos, 0, text=spell_tokens(toks), items=_index_items(toks))
            elif nxt.kind == "op" and nxt.value == "^" and not powers:
                self.next()
                toks = self.script_tokens()
                sig = _significant(toks)
                marks = [t for t in sig if t.kind == "macro" and t.value in DECORATIONS]
                marks += [t for t in sig if t.kind == "op" and t.value == "*"]
                tops = [t for t in sig if t.kind == "macro" and t.value in {"top", "intercal"}]
                if sig and len(marks) + len(tops) == len(sig) and marks:
                    decor.extend(DECORATIONS.get(t.value, "star") for t in marks)
                    transpose = transpose or bool(tops)
                    if tops:
                        break
                elif _is_family_sup(sig):
                    inner = sig[0].args[0] if sig[0].kind == "group" else sig[1:-1]
                    fam = Script(nxt.pos, 0, text=spell_tokens(inner), items=_index_items(inner))
                else:
                    powers.append(toks)
                    break
            else:
                break
        node: Node = Name(
            tok.pos, tok.end, core=core, bold=bold, decor=tuple(decor), sub=sub, fam=fam
        )
        if self.at_op("(") and not powers and not transpose:
            args = self.call_args()
            if args is not None:
                node = Apply(tok.pos, 0, func=node, args=args, post=self.call_scripts())
        if transpose:
            node = Unary(tok.pos, 0, op="transpose", x=node)
        for toks in powers:
            node = self.superscript(node, toks)
        return node

    def call_scripts(self) -> tuple[tuple[str, Any], ...]:
        """The scripts after ``f(...)``: ``^2``, ``^\\top``, ``_k``, in order."""
        post: list[tuple[str, Any]] = []
        while self.at_op("^", "_"):
            op = self.next().value
            toks = self.script_tokens()
            if op == "_":
                items = _index_items(toks)
                if items is None:
                    raise Unsupported(f"the subscript _{{{spell_tokens(toks)}}} after a call")
                post.append(("index", items))
                continue
            sig = _significant(toks)
            if sig and all(t.kind == "macro" and t.value in {"top", "intercal"} for t in sig):
                post.append(("transpose", None))
            else:
                post.append(("pow", _Parser(toks).parse_all()))
        return tuple(post)

    def core_of(self, tok: Tok) -> tuple[str, bool]:
        if tok.kind == "letter":
            return tok.value, False
        if tok.kind == "text":
            return "\\text{" + tok.value.strip() + "}", False
        name = tok.value
        if name in GREEK:
            return "\\" + name, False
        if name == "#":
            nxt = self.peek()
            if nxt is not None and nxt.kind == "text":
                self.next()
                return "\\#\\text{" + nxt.value.strip() + "}", False
            raise Unsupported("\\#", tok.pos)
        if name in STYLES:
            inner = _significant(tok.args[-1] or [])
            if name == "mathbb":
                raise Unsupported(f"\\mathbb{{{spell_tokens(inner)}}}")
            if name in BOLD:
                if len(inner) != 1:
                    raise Unsupported(f"\\{name}{{{spell_tokens(inner)}}}")
                base = inner[0]
                text = base.value if base.kind != "macro" else "\\" + base.value
                return "\\mathbf{" + text + "}", True
            return "\\" + name + "{" + spell_tokens(inner) + "}", False
        if name in ACCENTS:
            inner_toks = _significant(tok.args[0] or [])
            if not inner_toks:
                raise Unsupported(f"\\{name}{{}}")
            sub_parser = _Parser(inner_toks)
            first = sub_parser.next()
            core, bold = sub_parser.core_of(first)
            if not sub_parser.done():
                raise Unsupported(f"\\{name} over an expression")
            return "\\" + ACCENTS[name] + "{" + core + "}", bold
        raise Unsupported(f"\\{name}", tok.pos)

    def call_args(self) -> tuple[Node, ...] | None:
        """``f(x, y)``: the arguments, or None when the parenthesis is a product (checked later)."""
        save = self.i
        self.expect_op("(")
        args: list[Node] = []
        if self.at_op(")"):
            self.next()
            return ()
        while True:
            try:
                args.append(self.expr())
            except Unsupported:
                self.i = save
                raise
            if self.at_op(",") or self.at_macro("Vert", "|"):
                self.next()
                continue
            if self.at_op(";"):
                raise Unsupported("a parameter list with ';' (as in P(y | x; theta))")
            break
        if self.at_macro("mid"):
            raise Unsupported(UNSUPPORTED_MACROS["mid"])
        self.expect_op(")")
        return tuple(args)

    # -- functions --
    def function(self, tok: Tok) -> Node:
        self.next()
        if tok.value == "operatorname":
            fname = spell_tokens(_significant(tok.args[-1] or []))
            if tok.star:
                raise Unsupported(f"\\operatorname*{{{fname}}}")
        elif tok.value == "mathrm":
            fname = spell_tokens(_significant(tok.args[-1] or []))
        else:
            fname = tok.value
        fname = fname.replace("\\,", "")
        if fname in {"arg", "argmax", "argmin", "arg\\,max", "arg\\,min"} or fname.startswith(
            "arg"
        ):
            raise Unsupported("an arg max / arg min", tok.pos)
        if fname in {"Var", "Cov", "E", "Corr", "Std"}:
            raise Unsupported(
                f"\\operatorname{{{fname}}} (a statistic: check_statistic covers it)", tok.pos
            )
        if fname in UNSUPPORTED_MACROS:
            raise Unsupported(UNSUPPORTED_MACROS[fname], tok.pos)
        sub: Script | None = None
        decor: list[str] = []
        power: list[Tok] | None = None
        while True:
            if self.at_op("_") and sub is None:
                self.next()
                toks = self.script_tokens()
                sub = Script(tok.pos, 0, text=spell_tokens(toks), items=_index_items(toks))
            elif self.at_op("'"):
                self.next()
                decor.append("prime")
            elif self.at_op("^") and power is None:
                self.next()
                power = self.script_tokens()
            else:
                break
        func: Node = Func(tok.pos, tok.end, name=fname + "'" * len(decor), sub=sub)
        if self.at_op("("):
            args = self.call_args() or ()
            node: Node = Apply(tok.pos, 0, func=func, args=args)
        elif self.at_macro("left") and self._left_paren():
            self.next()
            self.next()
            inner = self.paren_args(")")
            node = Apply(tok.pos, 0, func=func, args=inner)
        else:
            if fname in {"max", "min"}:
                raise Unsupported(f"\\{fname} without arguments")
            node = Apply(tok.pos, 0, func=func, args=(self.function_argument(),))
        if power is not None:
            node = self.superscript(node, power)
        return node

    def _left_paren(self) -> bool:
        nxt = self.peek(1)
        return nxt is not None and nxt.kind == "op" and nxt.value == "("

    def paren_args(self, closing: str) -> tuple[Node, ...]:
        args = [self.expr()]
        while self.at_op(","):
            self.next()
            args.append(self.expr())
        self._close_left(closing)
        return tuple(args)

    def _close_left(self, closing: str) -> None:
        if not self.at_macro("right"):
            raise Unsupported("\\right expected")
        self.next()
        tok = self.next()
        if not (
            tok.kind == "op"
            and tok.value == closing
            or tok.kind == "macro"
            and tok.value == closing
        ):
            raise Unsupported(f"\\right{closing} expected")

    def function_argument(self) -> Node:
        """``\\log p_k``, ``\\tanh u(x)``, ``\\cosh x \\cosh x``: one factor (a sum takes the
        rest)."""
        if self.done() or not self.starts_factor():
            raise Unsupported("a function without its argument")
        if self.at_macro("sum", "prod"):
            return self.reduction(self.peek().value)  # type: ignore[union-attr]
        return self.factor()

    def maxmin(self, name: str) -> Node:
        tok = self.next()
        if self.at_op("_"):
            self.next()
            names = _bound_names(self.script_tokens())
            body = self.term()
            return Reduce(tok.pos, 0, op=name, bound=Bound(names=names), body=body)
        if self.at_op("(") or self.at_macro("left"):
            if self.at_macro("left"):
                self.next()
                self.expect_op("(")
                args = self.paren_args(")")
            else:
                args = self.call_args() or ()
            return Apply(tok.pos, 0, func=Func(tok.pos, tok.end, name=name), args=args)
        raise Unsupported(f"\\{name} without arguments")

    # -- fractions and derivatives --
    def fraction(self, tok: Tok, num: list[Tok], den: list[Tok]) -> Node:
        num_sig = _significant(num)
        den_sig = _significant(den)
        order = _leading_partial_order(num_sig)
        if order is not None and _is_differential(den_sig):
            wrt = _differentials(den_sig)
            rest = num_sig[_differential_prefix_len(num_sig) :]
            # the operator form \frac{\partial}{\partial w_k} takes the expression that follows
            numerator = _Parser(rest).parse_all() if rest else self.term()
            if order != len(wrt):
                raise Unsupported("a derivative whose orders do not match")
            node = Partial(tok.pos, tok.end, num=numerator, wrt=wrt)
            if self.at_op("("):
                at = self.call_args()
                node = dataclasses.replace(node, at=at)
            return node
        return Binary(
            tok.pos, tok.end, op="div", a=_Parser(num).parse_all(), b=_Parser(den).parse_all()
        )

    def inline_partial(self) -> Node:
        """``\\partial L / \\partial \\mathbf{W}`` and
        ``\\partial^2 L / \\partial\\theta_j\\partial\\theta_k``."""
        start = self.i
        depth = 0
        stop = None
        for j in range(self.i, len(self.toks)):
            tok = self.toks[j]
            if tok.kind == "op" and tok.value in "([":
                depth += 1
            elif tok.kind == "op" and tok.value in ")]":
                if depth == 0:
                    break
                depth -= 1
            elif tok.kind == "op" and tok.value == "/" and depth == 0:
                stop = j
                break
        if stop is None:
            raise Unsupported("a \\partial outside a derivative")
        num = self.toks[start:stop]
        order = _leading_partial_order(num) or 1
        numerator = _Parser(num[_differential_prefix_len(num) :]).parse_all()
        # the denominator: \partial x, \partial x \partial y, ... up to the end of the factor
        self.i = stop + 1
        wrt: list[Node] = []
        while self.at_macro("partial"):
            self.next()
            wrt.append(self.differential_variable())
        if not wrt:
            raise Unsupported("a derivative without \\partial in its denominator")
        if order != len(wrt):
            raise Unsupported("a derivative whose orders do not match")
        return Partial(self.toks[start].pos, 0, num=numerator, wrt=tuple(wrt))

    def nabla(self) -> Node:
        """``\\nabla L`` and ``\\nabla^2 L``: the gradient and the Hessian with respect to
        :math:`\\theta`, the notation page's parameters, or ``\\nabla_{\\mathbf{w}} L`` with
        respect to another variable; evaluated by autograd like any partial derivative."""
        tok = self.next()
        order = 1
        wrt: Node = Name(tok.pos, tok.end, core="\\theta")
        while self.at_op("^", "_"):
            op = self.next().value
            script = self.script_tokens()
            if op == "_":
                wrt = _Parser(script).parse_all()
            elif [t.value for t in script] == ["2"]:
                order = 2
            else:
                raise Unsupported("\\nabla with a power other than 2", tok.pos)
        operand = self.atom()
        if isinstance(operand, Apply) or self.at_op("(") or self.at_macro("left"):
            # \nabla f(\mathbf{x}): with respect to f's own argument, not to a named variable
            raise Unsupported("\\nabla of a function at a point (write the partial derivative)")
        return Partial(tok.pos, 0, num=operand, wrt=(wrt,) * order)

    def differential_variable(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise Unsupported("a derivative without a variable")
        return _variable(self)

    def differential(self) -> Node:
        """``\\mathrm{d}\\mathbf{W}``: the notation page's shorthand for ∂L/∂W."""
        tok = self.next()  # \mathrm{d}
        inner = self.name()
        transposed = isinstance(inner, Unary) and inner.op == "transpose"
        if transposed:  # \mathrm{d}\mathbf{Z}^\top: the transpose of dZ
            assert isinstance(inner, Unary)
            inner = inner.x
        if not isinstance(inner, Name):
            raise Unsupported("\\mathrm{d} before an expression")
        node: Node = Name(tok.pos, inner.end, core="\\mathrm{d}" + inner.core, bold=inner.bold,
                          decor=inner.decor, sub=inner.sub, fam=inner.fam)  # fmt: skip
        return Unary(tok.pos, 0, op="transpose", x=node) if transposed else node

    # -- brackets --
    def left_right(self) -> Node:
        tok = self.next()  # \left
        opener = self.next()
        if opener.kind == "op" and opener.value == "(":
            inner = self.expr()
            self._close_left(")")
            return inner
        if opener.kind == "op" and opener.value == "[":
            inner = self.expr()
            self._close_left("]")
            return inner
        if opener.kind == "op" and opener.value == "|":
            inner = self.expr()
            self._close_left("|")
            return Unary(tok.pos, 0, op="abs", x=inner)
        if opener.kind == "macro" and opener.value in {"lVert", "Vert", "|"}:
            inner = self.expr()
            if not self.at_macro("right"):
                raise Unsupported("\\right\\rVert expected")
            self.next()
            closer = self.next()
            if closer.kind != "macro" or closer.value not in {"rVert", "Vert", "|"}:
                raise Unsupported("\\right\\rVert expected")
            return self.norm_suffix(tok, inner)
        if opener.kind == "macro" and opener.value == "lvert":
            inner = self.expr()
            self._close_left("rvert")
            return Unary(tok.pos, 0, op="abs", x=inner)
        if opener.kind == "macro" and opener.value in {"lfloor", "lceil"}:
            inner = self.expr()
            self._close_left("rfloor" if opener.value == "lfloor" else "rceil")
            return Unary(tok.pos, 0, op="floor" if opener.value == "lfloor" else "ceil", x=inner)
        if opener.kind == "op" and opener.value == ".":
            raise Unsupported("\\left. (an evaluation bar)")
        raise Unsupported(f"\\left{opener.value}")

    def norm(self, name: str) -> Node:
        tok = self.next()
        inner = self.expr()
        closer = self.next()
        if closer.kind != "macro" or closer.value not in {"rVert", "Vert", "|"}:
            raise Unsupported("\\rVert expected")
        return self.norm_suffix(tok, inner)

    def norm_suffix(self, tok: Tok, inner: Node) -> Node:
        p = None
        if self.at_op("_"):
            self.next()
            p = spell_tokens(self.script_tokens())
        return Unary(tok.pos, 0, op="norm", x=inner, p=p)

    def bracket(self) -> Node:
        """``[\\,u + \\alpha = j\\,]`` (Iverson), ``[\\,\\mathbf{X} \\;\\; \\mathbf{1}\\,]``
        (a block row) or plain brackets."""
        tok = self.next()
        depth = 0
        j = self.i
        raw = self.toks
        closing = None
        while j < len(raw):
            t = raw[j]
            if t.kind == "op" and t.value in "([":
                depth += 1
            elif t.kind == "op" and t.value in ")]":
                if depth == 0 and t.value == "]":
                    closing = j
                    break
                depth -= 1
            j += 1
        if closing is None:
            raise Unsupported("an unclosed '['")
        inner = raw[self.i : closing]
        self.i = closing + 1
        if _has_top_relation(inner):
            return Iverson(tok.pos, 0, cond=parse_chain(inner))
        cells: list[list[Tok]] = [[]]
        for t in inner:
            if cells[-1] and any(cells[-1][-1].end <= g < t.pos for g in self.gaps):
                cells.append([])
            cells[-1].append(t)
        if len(cells) > 1:
            row = tuple(_Parser(c).parse_all() for c in cells)
            return Block(tok.pos, 0, rows=(row,))
        return _Parser(inner).parse_all()

    def environment(self, tok: Tok) -> Node:
        name = tok.value
        if name in {"bmatrix", "pmatrix", "matrix", "Bmatrix", "vmatrix"}:
            if name == "vmatrix":
                raise Unsupported("a determinant written as |...|")
            rows = []
            for row in _split_rows(tok.args[0]):
                cells = _split_cells(row)
                rows.append(tuple(_Parser(c).parse_all() for c in cells))
            rows = [r for r in rows if r]
            return Block(tok.pos, tok.end, rows=tuple(rows))
        if name == "cases":
            raise Unsupported("cases (a function defined piece by piece)")
        raise Unsupported(f"the environment {name}")

    def reduction(self, name: str) -> Node:
        tok = self.next()
        lo_toks: list[Tok] | None = None
        hi: Node | None = None
        if self.at_op("_"):
            self.next()
            lo_toks = self.script_tokens()
        if self.at_op("^"):
            self.next()
            hi = _Parser(self.script_tokens()).parse_all()
        if lo_toks is None:
            raise Unsupported(f"\\{name} without an index")
        bound = _bound(lo_toks, hi)
        if self.at_op("-"):  # \sum_i -\log P_{iy_i}: the minus belongs to the body
            minus = self.next()
            body: Node = Unary(minus.pos, 0, op="-", x=self.term())
        else:
            body = self.term()
        return Reduce(tok.pos, 0, op=name, bound=bound, body=body)


MATHRM_FUNCTIONS = {"fl", "KL", "sign", "ReLU", "softmax", "diag", "tr", "erf", "lse", "MSE",
                    "GELU", "SiLU", "softplus", "sigmoid", "onehot", "step", "cost", "flip", "crop",
                    "pad", "append"}  # fmt: skip


def _spell_arg(tok: Tok) -> str:
    return spell_tokens(_significant(tok.args[-1] or [])) if tok.args else ""


def _mathrm_is_differential(tok: Tok, nxt: Tok | None) -> bool:
    return _spell_arg(tok) == "d" and nxt is not None and nxt.kind in {"letter", "macro"}


def _is_family_sup(sig: Sequence[Tok]) -> bool:
    """``^{(l)}``, ``^{(t-1)}``: a superscript in parentheses names a member, it is no power."""
    return (
        len(sig) >= 3
        and sig[0].kind == "op"
        and sig[0].value == "("
        and sig[-1].kind == "op"
        and sig[-1].value == ")"
    )


def _describe(tok: Tok) -> str:
    if tok.kind == "macro":
        return f"\\{tok.value}"
    if tok.kind == "text":
        return f"the words '\\text{{{tok.value.strip()}}}'"
    if tok.kind == "env":
        return f"the environment {tok.value}"
    return f"'{tok.value}'"


def _index_items(toks: Sequence[Tok]) -> tuple[Node, ...] | None:
    """The indices a subscript names: ``ij`` -> (i, j); ``i, c, su+\\alpha`` -> three; ``t-1``;
    None when the subscript is a label (``\\max``, ``\\mathrm{mat}``)."""
    sig = _significant(toks)
    if not sig:
        return None
    parts = _split_top(sig, ",")
    if len(parts) > 1:
        try:
            return tuple(_Parser(p).parse_all() for p in parts)
        except Unsupported:
            return None
    # a run of single letters, digits and greek, each with primes and maybe its own subscript:
    # each is one index (X_{icpq}, W_{oc\\alpha\\beta}, G_{i'c'}, P_{iy_i})
    atoms = _index_atoms(sig)
    if atoms is not None and len(atoms) > 1 or atoms and len(sig) == 1:
        return tuple(atoms)
    try:
        node = _Parser(sig).parse_all()
    except Unsupported:
        return None
    if _is_label_like(node):
        return None
    return (node,)


def _index_atoms(sig: Sequence[Tok]) -> list[Node] | None:
    items: list[Node] = []
    j = 0
    while j < len(sig):
        t = sig[j]
        if t.kind == "num" and len(t.value) == 1:
            items.append(Num(t.pos, t.end, value=float(t.value)))
            j += 1
            continue
        if not (t.kind == "letter" or t.kind == "macro" and t.value in GREEK):
            return None
        k = j + 1
        primes = 0
        while k < len(sig) and sig[k].kind == "op" and sig[k].value == "'":
            primes += 1
            k += 1
        sub = None
        decor: list[str] = ["prime"] * primes
        # j^*_{uv}: a starred index with its own subscript, in either order
        while k + 1 < len(sig) and sig[k].kind == "op" and sig[k].value in {"_", "^"}:
            script = sig[k + 1]
            toks = list(script.args[0]) if script.kind == "group" else [script]
            if sig[k].value == "_" and sub is None:
                sub = Script(script.pos, 0, text=spell_tokens(toks), items=_index_items(toks))
            elif sig[k].value == "^" and all(
                x.kind == "macro" and x.value in DECORATIONS or x.kind == "op" and x.value == "*"
                for x in _significant(toks)
            ):
                decor.extend(DECORATIONS.get(x.value, "star") for x in _significant(toks))
            else:
                return None
            k += 2
        core = t.value if t.kind == "letter" else "\\" + t.value
        items.append(Name(t.pos, t.end, core=core, decor=tuple(decor), sub=sub))
        j = k
    return items


def _is_label_like(node: Node) -> bool:
    return (
        isinstance(node, (Func, Name))
        and isinstance(node, Name)
        and node.core.startswith(("\\mathrm", "\\text", "\\operatorname"))
        or isinstance(node, Func)
    )


def _depths(toks: Iterable[Tok], *, sized: bool = False) -> Iterator[tuple[Tok, int]]:
    """Each token with the bracket depth after it: ``(`` and ``[`` open, ``)`` and ``]``
    close (and, with ``sized``, ``\\left`` and ``\\right``)."""
    depth = 0
    for tok in toks:
        if tok.kind == "op" and tok.value in "([" or sized and _is_macro(tok, "left"):
            depth += 1
        elif tok.kind == "op" and tok.value in ")]" or sized and _is_macro(tok, "right"):
            depth -= 1
        yield tok, depth


def _is_macro(tok: Tok, name: str) -> bool:
    return tok.kind == "macro" and tok.value == name


def _split_relations(
    toks: Sequence[Tok], *, sized: bool = False
) -> tuple[list[list[Tok]], list[str], list[int]]:
    """The sides of a chain, its relations and their offsets (relations inside brackets are
    part of a side)."""
    sides: list[list[Tok]] = [[]]
    rels: list[str] = []
    rel_pos: list[int] = []
    for tok, depth in _depths(toks, sized=sized):
        rel = _relation_of(tok) if depth == 0 else None
        if rel is not None:
            rels.append(rel)
            rel_pos.append(tok.pos)
            sides.append([])
        else:
            sides[-1].append(tok)
    return sides, rels, rel_pos


def _split_top(toks: Sequence[Tok], sep: str) -> list[list[Tok]]:
    parts: list[list[Tok]] = [[]]
    for tok, depth in _depths(toks):
        if tok.kind == "op" and tok.value == sep and depth == 0:
            parts.append([])
        else:
            parts[-1].append(tok)
    return parts


def _bound_names(toks: Sequence[Tok]) -> tuple[str, ...]:
    sig = _significant(toks)
    parts = _split_top(sig, ",")
    names = []
    for part in parts:
        items = _index_items(part)
        if not items or len(parts) > 1 and len(items) != 1:
            raise Unsupported(f"the index set _{{{spell_tokens(toks)}}}")
        for item in items:
            if not isinstance(item, Name) or not item.is_index_letter:
                raise Unsupported(f"the index set _{{{spell_tokens(toks)}}}")
            names.append(item.spelling)
    return tuple(names)


def _bound(lo_toks: Sequence[Tok], hi: Node | None) -> Bound:
    sig = _significant(lo_toks)
    eq = next((k for k, t in enumerate(sig) if t.kind == "op" and t.value == "="), None)
    if eq is not None:
        names = _bound_names(sig[:eq])
        lo = _Parser(sig[eq + 1 :]).parse_all()
        if len(names) != 1:
            raise Unsupported("a range over several indices")
        return Bound(names=names, lo=lo, hi=hi)
    if _has_top_relation(sig):
        chain = parse_chain(sig)
        first = chain.sides[0]
        if not isinstance(first, Name) or not first.is_index_letter:
            raise Unsupported(f"the index condition _{{{spell_tokens(lo_toks)}}}")
        return Bound(names=(first.spelling,), cond=chain, hi=hi)
    if any(t.kind == "macro" and t.value == "in" for t in sig) or any(
        t.kind == "text" for t in sig
    ):
        raise Unsupported(f"a sum over a set _{{{spell_tokens(lo_toks)}}}")
    if any(t.kind == "op" and t.value == ":" for t in sig):
        raise Unsupported(f"a sum over a set _{{{spell_tokens(lo_toks)}}}")
    return Bound(names=_bound_names(sig), hi=hi)


def _is_differential(toks: Sequence[Tok]) -> bool:
    if not toks:
        return False
    first = toks[0]
    if first.kind == "macro" and first.value == "partial":
        return True
    if first.kind == "letter" and first.value == "d" and len(toks) > 1:
        return True
    return first.kind == "macro" and first.value == "mathrm" and _spell_arg(first) == "d"


def _differentials(toks: Sequence[Tok]) -> tuple[Node, ...]:
    """``\\partial \\theta_j \\partial \\theta_k`` -> (theta_j, theta_k); ``dx`` -> (x,)."""
    out: list[Node] = []
    i = 0
    while i < len(toks):
        tok = toks[i]
        is_d = (
            tok.kind == "macro"
            and tok.value == "partial"
            or tok.kind == "letter"
            and tok.value == "d"
            or tok.kind == "macro"
            and tok.value == "mathrm"
            and _spell_arg(tok) == "d"
        )
        if not is_d:
            raise Unsupported("a derivative's denominator that is not \\partial x")
        j = i + 1
        while j < len(toks) and not (
            toks[j].kind == "macro"
            and toks[j].value == "partial"
            or toks[j].kind == "macro"
            and toks[j].value == "mathrm"
            and _spell_arg(toks[j]) == "d"
        ):
            j += 1
        part = _Parser(toks[i + 1 : j])
        var = _variable(part)
        if not part.done():
            raise Unsupported("a derivative with respect to an expression")
        out.append(var)
        i = j
    if len(out) > 1 and any(t.kind == "letter" and t.value == "d" for t in toks[:1]):
        raise Unsupported("a mixed derivative written with d")
    return tuple(out)


def _variable(parser: _Parser) -> Node:
    """What a derivative is taken with respect to: a symbol (``x_j``, ``\\mathbf{W}``) or the
    entries of a subscripted one, ``(W_2)_{pq}``."""
    tok = parser.peek()
    if tok is None:
        raise Unsupported("a derivative without a variable")
    if tok.kind == "op" and tok.value == "(":
        node = parser.factor()
        if isinstance(node, Index) and isinstance(node.x, Name):
            return node
        raise Unsupported("a derivative with respect to an expression")
    return parser.name()


def _leading_partial_order(toks: Sequence[Tok]) -> int | None:
    """``\\partial`` (1), ``\\partial^2`` (2), ``d`` (1), ``\\mathrm{d}`` (1) at the start of a
    numerator."""
    if not toks:
        return None
    first = toks[0]
    if (
        first.kind == "macro"
        and first.value == "partial"
        or (first.kind == "macro" and first.value == "mathrm" and _spell_arg(first) == "d")
    ):
        if len(toks) > 2 and toks[1].kind == "op" and toks[1].value == "^":
            order = toks[2]
            if order.kind == "num":
                return int(order.value)
            if order.kind == "group" and len(_significant(order.args[0])) == 1:
                inner = _significant(order.args[0])[0]
                if inner.kind == "num":
                    return int(inner.value)
            raise Unsupported("a derivative of symbolic order")
        return 1
    if (
        first.kind == "letter"
        and first.value == "d"
        and (len(toks) == 1 or toks[1].kind in {"letter", "macro", "group"})
    ):
        return 1
    return None


def _differential_prefix_len(toks: Sequence[Tok]) -> int:
    if len(toks) > 2 and toks[1].kind == "op" and toks[1].value == "^":
        return 3
    return 1


def _has_top_relation(toks: Sequence[Tok]) -> bool:
    return any(depth == 0 and _relation_of(tok) is not None for tok, depth in _depths(toks))


def _relation_of(tok: Tok) -> str | None:
    if tok.kind == "op" and tok.value in RELATION_CHARS:
        return RELATION_CHARS[tok.value]
    if tok.kind == "macro" and tok.value in RELATION_MACROS:
        return RELATION_MACROS[tok.value]
    return None


def _split_rows(toks: Sequence[Tok]) -> list[list[Tok]]:
    return _split_at(toks, "rowsep")


def _split_cells(toks: Sequence[Tok]) -> list[list[Tok]]:
    return _split_at(toks, "amp")


def _split_at(toks: Sequence[Tok], kind: str) -> list[list[Tok]]:
    """Rows at ``\\\\`` or cells at ``&``, empty ones left out."""
    parts: list[list[Tok]] = [[]]
    for tok in toks:
        if tok.kind == kind:
            parts.append([])
        else:
            parts[-1].append(tok)
    return [p for p in parts if _significant(p)]


def parse_chain(toks: Sequence[Tok]) -> Chain:
    """``a = b \\le c`` into sides and relations (no statement separators inside)."""
    sides, rels, _ = _split_relations(toks)
    nodes = tuple(_Parser(s).parse_all() for s in sides)
    return Chain(
        toks[0].pos if toks else 0, toks[-1].end if toks else 0, sides=nodes, rels=tuple(rels)
    )


def parse_symbol(text: str) -> Name:
    """A bound key, e.g. ``r"\\theta^\\star"``, as the Name the maths spells the same way."""
    toks = tokenize(text)
    parser = _Parser(toks)
    node = parser.name() if not parser.done() else None
    if not isinstance(node, Name) or not parser.done():
        raise Unsupported(f"{text!r} is not a symbol")
    return node


# -- statements and steps -----------------------------------------------------------------------

ALIGN_ENVIRONMENTS = {"aligned", "align", "align*", "split", "gathered", "gather", "gather*",
                      "alignat", "alignat*", "eqnarray", "eqnarray*", "multline"}  # fmt: skip
_CONDITION_WORDS = {"when", "for", "if", "with", "since", "unless", "as", "at", "whenever",
                    "given", "provided"}  # fmt: skip
_EXCLUDE = re.compile(r"^(?:unchecked|not checked|skip)\s*[:\u2014-]?\s*(?P<reason>.*)$", re.I)


@dataclass
class Side:
    text: str
    pos: int
    end: int
    node: Node | None = None
    problem: str | None = None  # the construct that keeps it from being evaluated
    gap: bool = False  # \dots standing for omitted steps


@dataclass
class Statement:
    sides: list[Side]
    rels: list[str]
    rel_pos: list[int]
    condition: bool = False  # introduced as a condition ("for ...", a trailing "(j > i)")
    listed: bool = False  # a range or list ("t = 1, \dots, T")


@dataclass
class Step:
    """One relation between two consecutive sides: the unit a verdict is given to."""

    lhs: Side
    rel: str
    rhs: Side
    pos: int  # offset of the relation in the maths text
    form: str = "claim"  # claim | condition | update
    first: bool = False  # the first relation of its chain (where a definition can stand)
    excluded: str | None = None  # the author's reason, from a % comment
    chain: int = 0  # which statement of the maths text it belongs to


def statements(text: str) -> list[Statement]:
    """Every statement of a maths text, in reading order."""
    return list(_remembered(_statements, text))


def steps(text: str) -> list[Step]:
    """Every relation step of a maths text, with the author's ``% unchecked: ...`` reasons."""
    return list(_remembered(_steps, text))


def _remembered(read, text: str) -> tuple:
    """A chapter's check of derivation k reads the maths of derivations 1..k again (their
    definitions carry over), so each text is read once per kernel; what is read is never changed
    afterwards (the trees are frozen)."""
    found = read(text)
    if isinstance(found, Unsupported):
        raise found.with_traceback(None)
    return found


def forget() -> None:
    """Drop what :func:`steps` and :func:`statements` remember (to measure a first reading)."""
    _statements.cache_clear()
    _steps.cache_clear()


@lru_cache(maxsize=8192)
def _statements(text: str) -> tuple[Statement, ...] | Unsupported:
    try:
        return tuple(_read_statements(text))
    except Unsupported as error:
        return error


@lru_cache(maxsize=8192)
def _steps(text: str) -> tuple[Step, ...] | Unsupported:
    try:
        return tuple(_read_steps(text))
    except Unsupported as error:
        return error


def _read_statements(text: str) -> list[Statement]:
    toks = tokenize(text)
    sig = _significant(toks)
    if len(sig) == 1 and sig[0].kind == "env" and sig[0].value in ALIGN_ENVIRONMENTS:
        toks = list(sig[0].args[0])
    segments = _segments(toks)
    out: list[Statement] = []
    for seg_toks, condition in segments:
        out.extend(_statement(text, seg_toks, condition))
    return out


def _read_steps(text: str) -> list[Step]:
    toks = tokenize(text)
    found: list[Step] = []
    for number, statement in enumerate(statements(text)):
        chain_steps: list[Step] = []
        for k, rel in enumerate(statement.rels):
            form = "claim"
            sides = statement.sides[k], statement.sides[k + 1]
            signature = rel == "->" and all(isinstance(x.node, Space) for x in sides)
            if statement.condition or statement.listed or rel == "~" or signature:
                form = "condition"
            elif rel in {"|->", "<-", ":="}:
                form = "update"
            chain_steps.append(
                Step(
                    statement.sides[k],
                    rel,
                    statement.sides[k + 1],
                    statement.rel_pos[k],
                    form=form,
                    first=k == 0,
                    chain=number,
                )  # fmt: skip
            )
        for step in chain_steps:
            if step.form == "claim" and _atom_condition(step):
                step.form = "condition"
        found.extend(chain_steps)
    _apply_exclusions(text, toks, found)
    return found


def _atom_condition(step: Step) -> bool:
    """``x < 0``, ``i = k``, ``d = 512``, ``k = y_i`` (an index meets a label), ``H_{ij} = 0``
    (a point): a case, an index coincidence or a value chosen for an example, not a claim to
    check (``\\sigma'(0) = 1/4``, ``e^0 = 1``, ``\\mathbf{J}^\\top = \\mathbf{J}`` are claims)."""
    a, b = step.lhs.node, step.rhs.node
    if a is None or b is None:
        return False

    def atom(node: Node) -> bool:
        """A lone symbol (a label subscript allowed: ``d_{\\mathrm{in}}``), its negation, or a
        number."""
        if isinstance(node, Unary) and node.op == "-":
            return atom(node.x)
        return (
            isinstance(node, Name)
            and node.fam is None
            and (node.sub is None or node.sub.items is None)
            or _literal(node)
        )

    def entry(node: Node) -> bool:
        """A plain symbol with index subscripts: ``y_i``, ``H_{ij}``."""
        return (
            isinstance(node, Name)
            and not node.bold
            and node.fam is None
            and node.sub is not None
            and bool(node.sub.items)
            and all(isinstance(i, (Name, Num)) for i in node.sub.items or ())
        )

    if atom(a) and atom(b):
        return not (_literal(a) and _literal(b))
    for one, other in ((a, b), (b, a)):
        lone_index = isinstance(one, Name) and one.is_index_letter and one.core.islower()
        if entry(other) and (lone_index or _literal(one) and step.rel == "="):
            return True
    return False


def _literal(node: Node) -> bool:
    if isinstance(node, (Num, Const)):
        return True
    if isinstance(node, Unary) and node.op == "-":
        return _literal(node.x)
    if isinstance(node, Binary) and node.op in {"div", "pow", "cdot"}:
        return _literal(node.a) and _literal(node.b)
    return False


def _apply_exclusions(text: str, toks: Sequence[Tok], found: list[Step]) -> None:
    comments = [t for t in _walk(toks) if t.kind == "comment"]
    if not comments:
        return
    line_of = lambda pos: text.count("\n", 0, pos)  # noqa: E731
    by_line: dict[int, list[Step]] = {}
    for step in found:
        by_line.setdefault(line_of(step.pos), []).append(step)
    for comment in comments:
        match = _EXCLUDE.match(comment.value)
        if not match:
            continue
        reason = match.group("reason").strip()
        line = line_of(comment.pos)
        targets = by_line.get(line)
        if not targets:
            later = sorted(k for k in by_line if k > line)
            targets = by_line[later[0]] if later else []
        for step in targets:
            step.excluded = reason or ""


def _walk(toks: Sequence[Tok]) -> Iterator[Tok]:
    for tok in toks:
        yield tok
        for arg in tok.args:
            if isinstance(arg, list):
                yield from _walk(arg)


def _segments(toks: Sequence[Tok]) -> list[tuple[list[Tok], bool]]:
    """Split at separators (``\\qquad``, implications, prose, rows that start afresh); each
    segment says whether it was introduced as a condition."""
    rows = [[]]  # type: list[list[Tok]]
    for tok in toks:
        if tok.kind == "rowsep":
            rows.append([])
        elif tok.kind != "amp":
            rows[-1].append(tok)
    stream: list[Tok] = []
    for row in rows:
        sig = _significant(row)
        if not sig:
            continue
        first = sig[0]
        continues = _relation_of(first) is not None or (
            first.kind == "op"
            and first.value in {"+", "-"}
            or first.kind == "macro"
            and first.value in {"cdot", "times", "odot"}
        )
        if stream and not continues:
            stream.append(Tok("space", "qquad", first.pos, first.pos))
        stream.extend(row)
    segments: list[tuple[list[Tok], bool]] = []
    current: list[Tok] = []
    condition = False
    sig_stream = [t for t in stream if t.kind != "comment"]

    def flush(next_condition: bool) -> None:
        nonlocal current, condition
        body = _strip_punctuation(current)
        if _significant(body):
            segments.append((body, condition))
        current = []
        condition = next_condition

    for k, (tok, depth) in enumerate(_depths(sig_stream, sized=True)):
        if depth == 0 and tok.kind == "space" and tok.value in SEPARATORS:
            flush(condition and not _significant(current))
            continue
        if depth == 0 and tok.kind == "macro" and tok.value in IMPLIES:
            flush(False)
            continue
        if depth == 0 and tok.kind == "macro" and tok.value == "xrightarrow":
            current.append(Tok("macro", "to", tok.pos, tok.end))
            continue
        if depth == 0 and tok.kind == "text" and not _text_is_name(sig_stream, k):
            words = tok.value.strip().rstrip(":").strip().lower().split()
            flush(bool(words) and words[-1] in _CONDITION_WORDS)
            continue
        if depth == 0 and tok.kind == "op" and tok.value == ":":
            flush(False)
            continue
        current.append(tok)
    flush(False)
    # a trailing "(j > i)" after a separator is a condition on what came before
    out: list[tuple[list[Tok], bool]] = []
    for body, cond in segments:
        sig = _significant(body)
        if (
            out
            and sig[0].kind == "op"
            and sig[0].value == "("
            and sig[-1].kind == "op"
            and sig[-1].value == ")"
            and _closes_at_end(sig)
            and _has_top_relation(sig[1:-1])
        ):
            out.append((sig[1:-1], True))
        else:
            out.append((body, cond))
    return out


def _closes_at_end(sig: Sequence[Tok]) -> bool:
    return not any(
        depth == 0 and tok.kind == "op" and tok.value in ")]" and k != len(sig) - 1
        for k, (tok, depth) in enumerate(_depths(sig))
    )


def _text_is_name(toks: Sequence[Tok], k: int) -> bool:
    """``\\text{lag}_t`` and ``\\text{bytes} = ...`` are names; ``\\text{so}`` is prose."""
    words = toks[k].value.strip()
    if not words or " " in words or ":" in words or words.lower() in _CONDITION_WORDS | {
        "so", "and", "or", "where", "hence", "then", "thus", "i.e.", "e.g."}:  # fmt: skip
        return False
    prev = toks[k - 1] if k > 0 else None
    nxt = toks[k + 1] if k + 1 < len(toks) else None
    if prev is not None and prev.kind == "macro" and prev.value == "#":
        return True
    return nxt is not None and (nxt.kind == "op" and nxt.value in {"_", "^", "="}
                                or _relation_of(nxt) is not None)  # fmt: skip


def _strip_punctuation(toks: list[Tok]) -> list[Tok]:
    out = list(toks)
    while out and (
        out[-1].kind in {"space", "comment"}
        or out[-1].kind == "op"
        and out[-1].value in {",", ".", ";"}
    ):
        out.pop()
    while out and out[0].kind in {"space", "comment"}:
        out.pop(0)
    return out


_GAP = {"dots", "cdots", "ldots"}


def _statement(text: str, toks: list[Tok], condition: bool) -> list[Statement]:
    sides, rels, rel_pos = _split_relations(toks, sized=True)
    if not rels:
        return []
    # lists: "t = 1, \dots, T" is a range; "q, k \in R^d" is one claim per symbol
    listed = False
    parts = [_split_top(_significant(s), ",") for s in sides]
    if any(len(p) > 1 for p in parts):
        if len(rels) == 1 and rels[0] == "in" and len(parts[1]) == 1:
            return [
                Statement(
                    [_side(text, p), _side(text, _significant(sides[1]), in_set=True)],
                    ["in"],
                    rel_pos,
                )
                for p in parts[0]
            ]
        listed = True
    built = [
        _side(text, s, in_set=k > 0 and rels[k - 1] == "in" or _starts_with_space(s))
        for k, s in enumerate(sides)
    ]
    # \dots between relations stands for omitted steps: join its neighbours
    k = 1
    while k < len(built) - 1:
        if built[k].gap:
            merged = rels[k - 1] if rels[k] == "=" else rels[k] if rels[k - 1] == "=" else None
            if merged is None:
                built[k].problem = "\\dots between two different relations"
                k += 1
                continue
            del built[k]
            rels[k - 1 : k + 1] = [merged]
            rel_pos[k - 1 : k + 1] = [rel_pos[k - 1]]
        else:
            k += 1
    return [Statement(built, rels, rel_pos, condition=condition, listed=listed)]


def _starts_with_space(toks: Sequence[Tok]) -> bool:
    """``\\mathbb{R}^d \\to \\mathbb{R}^m``: the sides of a function's signature are sets."""
    sig = _significant(toks)
    return (
        bool(sig)
        and sig[0].kind == "macro"
        and sig[0].value == "mathbb"
        and (_spell_arg(sig[0]) == "R")
    )


def _side(text: str, toks: Sequence[Tok], in_set: bool = False) -> Side:
    sig = _significant(toks)
    if not sig:
        return Side("", 0, 0, problem="an empty side")
    pos, end = sig[0].pos, sig[-1].end
    side = Side(text[pos:end].strip(), pos, end)
    if len(sig) == 1 and sig[0].kind == "macro" and sig[0].value in _GAP:
        side.gap = True
        side.problem = "\\dots"
        return side
    try:
        side.node = parse_set(sig) if in_set else _Parser(list(toks)).parse_all()
    except Unsupported as error:
        side.problem = error.construct
    except (RecursionError, ValueError, IndexError) as error:  # pragma: no cover - defensive
        side.problem = f"a parser error ({type(error).__name__})"
    return side


def parse_set(sig: Sequence[Tok]) -> Node:
    """The right of ``\\in``: ``\\mathbb{R}^{m \\times d}``, ``[0, 1]``, ``(0, 1)``."""
    first = sig[0]
    if first.kind == "macro" and first.value == "mathbb" and _spell_arg(first) == "R":
        if len(sig) == 1:
            return Space(first.pos, first.end, dims=())
        if len(sig) == 3 and sig[1].kind == "op" and sig[1].value == "^":
            dims_toks = list(sig[2].args[0]) if sig[2].kind == "group" else [sig[2]]
            parts: list[list[Tok]] = [[]]
            for tok in _significant(dims_toks):
                if tok.kind == "macro" and tok.value == "times":
                    parts.append([])
                else:
                    parts[-1].append(tok)
            dims = tuple(_Parser(p).parse_all() for p in parts)
            return Space(first.pos, sig[-1].end, dims=dims)
        raise Unsupported("a set other than R^(m x n)")
    if (
        first.kind == "op"
        and first.value in "[("
        and sig[-1].kind == "op"
        and sig[-1].value in "])"
    ):
        parts = _split_top(sig[1:-1], ",")
        if len(parts) == 2:
            lo, hi = (_Parser(p).parse_all() for p in parts)
            return Interval(first.pos, sig[-1].end, lo=lo, hi=hi,
                            closed=(first.value == "[", sig[-1].value == "]"))  # fmt: skip
    if first.kind == "macro" and first.value == "{":
        raise Unsupported("a finite set {...}")
    raise Unsupported(f"the set {spell_tokens(sig)}")


def count_claims(maths: Sequence[tuple[str, bool] | tuple[str, bool, bool]]) -> dict[str, int]:
    """The claims of a derivation nobody has bound yet, counted from its text alone: every
    relation step except conditions, updates and a definition (the first ``s = ...`` of a
    symbol not written before it). ``maths`` is (LaTeX, is-display) in reading order."""
    counts = {"display": 0, "inline": 0}
    seen: set[str] = set()
    for text, display, *stated_as_condition in maths:
        if any(stated_as_condition):
            continue
        try:
            found = steps(text)
        except Unsupported:
            counts["display" if display else "inline"] += max(1, text.count("="))
            continue
        for step in found:
            if step.form != "claim":
                continue
            lhs = step.lhs.node
            if step.first and step.rel == "=" and _defines_fresh(lhs, seen):
                seen.add(_definable_spelling(lhs))
                continue
            counts["display" if display else "inline"] += 1
        seen.update(_spellings(text))
    return counts


def _definable_spelling(node: Node | None) -> str:
    if isinstance(node, Apply) and isinstance(node.func, Name):
        return node.func.base_spelling
    if isinstance(node, Name):
        return node.base_spelling
    return ""


def _defines_fresh(node: Node | None, seen: set[str]) -> bool:
    if isinstance(node, Name) and not node.core.startswith("\\mathrm{d}"):
        return node.base_spelling not in seen
    if isinstance(node, Apply) and isinstance(node.func, Name) and not node.post:
        return all(isinstance(a, Name) for a in node.args) and node.func.base_spelling not in seen
    return False


def _spellings(text: str) -> set[str]:
    try:
        toks = tokenize(text)
    except Unsupported:
        return set()
    out: set[str] = set()
    for tok in _walk(toks):
        if tok.kind == "letter":
            out.add(tok.value)
        elif tok.kind == "macro" and tok.value in GREEK:
            out.add("\\" + tok.value)
        elif tok.kind == "macro" and tok.value in STYLES | set(ACCENTS) and tok.args:
            try:
                parser = _Parser([tok])
                node = parser.name()
                if isinstance(node, Name):
                    out.add(node.base_spelling)
            except Unsupported:
                pass
    return out
