"""A derivation's maths, found in the chapter source by its label.

markdown-it with the MyST plugins (dollarmath, amsmath, colon_fence), as MyST itself
parses, but without docutils: the kernel reads its own chapter file with it. Every display
equation and every inline ``$...$`` inside the ``{derivation}`` block is returned with the
line where it starts, so a step's verdict can name the line the reader sees.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

DIRECTIVE = "{derivation}"
_DISPLAY = {"math_block", "math_block_label", "amsmath"}
_INLINE = {"math_inline", "math_inline_double"}


@dataclass
class Maths:
    text: str  # the LaTeX, as between the dollars
    line: int  # 1-based line of the chapter where the LaTeX starts
    display: bool
    label: str | None = None  # a display equation's (eq-...) label
    index: int = 0  # position among the derivation's maths
    group: int = 0  # in a chapter's context: which block it belongs to (a derivation, a paragraph)
    derived: bool = False  # in a chapter's context: inside an earlier {derivation}
    # inline maths the prose introduces as a case: "for $x < 0$", "exactly when $k = y_i$"
    condition: bool = False

    def line_at(self, offset: int) -> int:
        """The chapter line of a position inside the LaTeX."""
        return self.line + self.text.count("\n", 0, offset)


@dataclass
class DerivationSource:
    label: str
    title: str
    line: int  # of the ```{derivation} fence
    maths: list[Maths] = field(default_factory=list)
    # the chapter's maths before this derivation (prose and earlier derivations, not exercises
    # or code): where the reader met the definitions this derivation uses
    context: list[Maths] = field(default_factory=list)

    @property
    def digest(self) -> str:
        """The maths the step check reads, hashed: a prose edit keeps it, a maths edit (here or
        in a definition before it) changes it, and so does a prose edit that turns inline
        maths into a case or back ("at $x = 0$" -> "when $x = 0$"), which changes its verdict."""
        h = hashlib.sha256()
        for part, maths in ((b"C", self.context), (b"M", self.maths)):
            for m in maths:
                kind = (b"D" if m.display else b"I") + (b"K" if m.condition else b"")
                h.update(part + kind + m.text.encode("utf-8") + b"\0")
        return h.hexdigest()[:16]


@lru_cache(maxsize=4)
def _parser() -> Any:
    from markdown_it import MarkdownIt
    from mdit_py_plugins.amsmath import amsmath_plugin
    from mdit_py_plugins.colon_fence import colon_fence_plugin
    from mdit_py_plugins.dollarmath import dollarmath_plugin
    from mdit_py_plugins.front_matter import front_matter_plugin

    # the options MyST gives dollarmath by default (myst_parser's dmath_* settings)
    return (
        MarkdownIt("commonmark")
        .use(front_matter_plugin)
        .use(
            dollarmath_plugin,
            allow_labels=True,
            allow_space=True,
            allow_digits=True,
            double_inline=False,
        )  # fmt: skip
        .use(amsmath_plugin)
        .use(colon_fence_plugin)
    )


def derivations(text: str) -> list[DerivationSource]:
    """Every top-level ``{derivation}`` of a chapter, with its maths, in order."""
    return list(_derivations(text))


@lru_cache(maxsize=32)
def _derivations(text: str) -> tuple[DerivationSource, ...]:
    """Read once per text: every step check of a chapter looks its derivation up in the same
    file (nobody changes what is read here)."""
    found = []
    lines = text.splitlines()
    context: list[Maths] = []
    tokens = _parser().parse(text)
    for position, token in enumerate(tokens):
        if token.type in _DISPLAY or token.type == "inline":
            # prose and display maths outside every fence (code cells and exercises are fences)
            for maths in _maths_of_tokens(tokens[position : position + 1], lines, 0):
                maths.group = position
                context.append(maths)
            continue
        if token.type not in {"fence", "colon_fence"} or not token.info.strip().startswith(
            DIRECTIVE
        ):
            continue
        title = token.info.strip()[len(DIRECTIVE) :].strip()
        label = ""
        for line in token.content.splitlines():
            stripped = line.strip()
            if stripped.startswith(":label:"):
                label = stripped[len(":label:") :].strip()
            elif stripped and not stripped.startswith(":"):
                break
        fence_line = token.map[0] if token.map else 0
        derivation = DerivationSource(label, title, fence_line + 1, context=list(context))
        derivation.maths = _maths(token.content, fence_line + 1, lines)
        for maths in derivation.maths:
            context.append(dataclasses.replace(maths, group=position, derived=True))
        found.append(derivation)
    return tuple(found)


def _maths(content: str, first_line: int, lines: list[str]) -> list[Maths]:
    """Display and inline maths of a block's content (0-based ``first_line`` in the file)."""
    return _maths_of_tokens(_parser().parse(content), content.splitlines(), first_line)


def _maths_of_tokens(tokens: list[Any], content_lines: list[str], first_line: int) -> list[Maths]:
    out: list[Maths] = []
    for token in tokens:
        if token.type in _DISPLAY and token.map:
            start, end = token.map
            block = "\n".join(content_lines[start:end])
            offset = block.find(token.content.strip("\n")) if token.content.strip() else 0
            line = first_line + start + block.count("\n", 0, max(offset, 0)) + 1
            label = token.info.strip() if token.type == "math_block_label" else None
            out.append(Maths(token.content.strip("\n"), line, True, label or None, len(out)))
        elif token.type == "inline" and token.map and token.children:
            start, end = token.map
            paragraph = "\n".join(content_lines[start:end])
            cursor = 0
            for child in token.children:
                if child.type not in _INLINE:
                    continue
                where = paragraph.find(child.content, cursor)
                if where < 0:
                    where = cursor
                cursor = where + len(child.content)
                line = first_line + start + paragraph.count("\n", 0, where) + 1
                condition = _introduces_condition(paragraph[:where])
                out.append(Maths(child.content, line, False, None, len(out), condition=condition))
    return out


# not "at": "started at $\\bar{h}_T = ...$" states a value
_CONDITION_WORDS = {"for", "when", "whenever", "if", "unless", "given", "assuming",
                    "provided", "iff"}  # fmt: skip
_QUANTIFIERS = {"all", "every", "each", "any"}


def _introduces_condition(before: str) -> bool:
    """Whether the prose right before an inline ``$`` makes the maths a case, not a claim."""
    words = before.rstrip().rstrip("$").rstrip().replace("(", " ").split()
    words = [w.strip(",;:.").lower() for w in words[-2:]]
    if not words:
        return False
    if words[-1] in _QUANTIFIERS and len(words) > 1:
        return words[-2] == "for"
    return words[-1] in _CONDITION_WORDS


def find(label: str, text: str) -> DerivationSource | None:
    for derivation in derivations(text):
        if derivation.label == label:
            return derivation
    return None


def find_in_file(label: str, path: Path) -> DerivationSource | None:
    return find(label, path.read_text(encoding="utf-8"))
