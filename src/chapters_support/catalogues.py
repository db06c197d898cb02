"""The book's translation catalogues (``book/locales/<lang>/LC_MESSAGES/*.po``): what must not
change between a message and its translation, and how far each catalogue is translated.

A message is a paragraph (or a title) of the chapter's MyST source. Its translation may change
the words and nothing that is verified or linked: the inline maths (``$...$``, as a multiset:
the build rejects a paragraph whose maths differs, see ``sphinx_ext/i18n.py``; here it is
caught before a build), the code spans, the targets of roles (``{eq}`label```, the label of
``{ref}`text <label>```) and of links, and raw HTML tags. Hand-written because the parts are
MyST's, which no catalogue tool knows (``msgfmt --check`` checks only printf/brace formats).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chapters_support.editions import LOCALES

MATHS = re.compile(r"(?<![\\$])\$(?!\$)((?:\\.|[^$\\])+?)\$")
ROLE = re.compile(r"\{([a-z][\w:-]*)\}`([^`]*)`")
CODE = re.compile(r"(?<![`}])`([^`]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_TARGET = re.compile(r"<([^<>]+)>\s*$")


def _role_targets(text: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for name, content in ROLE.findall(text):
        explicit = _TARGET.search(content)
        # {ref}`words <label>`: the words may be translated, the label may not
        target = explicit.group(1) if explicit else content
        found[f"{{{name}}}`{target.strip()}`" if not explicit else f"{{{name}}}<{target}>"] += 1
    return found


def parts(text: str) -> dict[str, Counter[str]]:
    """What of a message must reappear, unchanged, in its translation."""
    without_roles = ROLE.sub("", text)
    return {
        "inline maths": Counter(" ".join(m.split()) for m in MATHS.findall(without_roles)),
        "code": Counter(CODE.findall(MATHS.sub("", without_roles))),
        "role targets": _role_targets(text),
        "link targets": Counter(LINK.findall(text)),
        "HTML tags": Counter(TAG.findall(MATHS.sub("", without_roles))),
    }


@dataclass
class Problem:
    catalogue: str
    line: int
    message: str
    what: str

    def __str__(self) -> str:
        return f"{self.catalogue}:{self.line}: {self.what} (in: {self.message[:80]!r})"


@dataclass
class Progress:
    catalogue: str
    messages: int = 0
    translated: int = 0
    fuzzy: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def untranslated(self) -> int:
        return self.messages - self.translated - self.fuzzy


def compare(original: str, translation: str) -> list[str]:
    """Each part of ``original`` the translation lost or changed, in words; [] when none."""
    want, got = parts(original), parts(translation)
    out = []
    for kind in want:
        missing, extra = want[kind] - got[kind], got[kind] - want[kind]
        if missing or extra:
            described = []
            if missing:
                described.append(f"missing {sorted(missing.elements())}")
            if extra:
                described.append(f"not in the English {sorted(extra.elements())}")
            out.append(f"{kind} differ: {'; '.join(described)}")
    return out


def read(path: Path, terms: list[Term] | None = None) -> Progress:
    from babel.messages.pofile import read_po

    with path.open("rb") as handle:
        catalogue = read_po(handle)
    progress = Progress(path.stem)
    for message in catalogue:
        if not message.id:
            continue
        progress.messages += 1
        original, translation = str(message.id), str(message.string or "")
        if not translation:
            continue
        if message.fuzzy:
            progress.fuzzy += 1
        else:
            progress.translated += 1
        line = message.lineno or 0
        for what in compare(original, translation) + term_problems(
            original, translation, terms or []
        ):
            progress.problems.append(Problem(path.name, line, original, what))
    return progress


@dataclass(frozen=True)
class Term:
    en: str
    zh: str
    also: tuple[str, ...] = ()

    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"(?<![\w-]){re.escape(self.en)}(?:s|es)?(?![\w-])", re.IGNORECASE)

    def used_in(self, translation: str) -> bool:
        lowered = translation.lower()
        return any(word.lower() in lowered for word in (self.zh, *self.also))


def glossary(book_root: Path, language: str) -> list[Term]:
    """The edition's terms (``locales/<lang>/glossary.yml``), longest English first."""
    import yaml

    path = book_root / LOCALES / language / "glossary.yml"
    if not path.is_file():
        return []
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    terms = [
        Term(str(t["en"]), str(t["zh"]), tuple(str(a) for a in t.get("also") or ()))
        for t in data.get("terms") or []
    ]
    return sorted(terms, key=lambda t: -len(t.en))


def prose(text: str) -> str:
    """A message without its maths, code, roles, links' targets and tags: its words."""
    for pattern in (ROLE, MATHS, CODE, TAG):
        text = pattern.sub(" ", text)
    return LINK.sub("]", text)


def term_problems(original: str, translation: str, terms: list[Term]) -> list[str]:
    """The glossary terms the English message uses and its translation does not."""
    words = prose(original)
    out = []
    for term in terms:
        if term.pattern().search(words):
            # a longer term that holds this one ("batch normalization" holds "batch") is
            # checked on its own; this one only where it stands alone
            words = term.pattern().sub(" ", words)
            if not term.used_in(translation):
                out.append(f"the term {term.en!r} should be {term.zh!r} (glossary.yml)")
    return out


def catalogues(book_root: Path, language: str) -> list[Path]:
    return sorted((book_root / LOCALES / language / "LC_MESSAGES").glob("*.po"))
