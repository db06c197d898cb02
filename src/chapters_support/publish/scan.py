"""The leak scan: nothing secret or machine-specific may reach a published site.

Whatever a cell prints (a token, the working folder, the hostname) lands in the page HTML,
``searchindex.js``, the executed notebook and the PDF. Before a version is published every
file of it is searched for access tokens, absolute home or root paths and the build
machine's hostname; a match fails the publish, naming the file and line. Tokens are shown
shortened, so the failure message does not leak them a second time into a CI log.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# (kind, regex, is a secret: shown shortened, text any match contains, in any case)
PATTERNS: tuple[tuple[str, str, bool, tuple[str, ...]], ...] = (
    (
        "GitHub token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",
        True,
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    ("GitHub token", r"\bgithub_pat_[A-Za-z0-9_]{22,}", True, ("github_pat_",)),
    ("AWS access key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", True, ("AKIA", "ASIA")),
    # what readers of this course hold: Hugging Face (hf_...), OpenAI-style (sk-..., sk-proj-...)
    ("Hugging Face token", r"\bhf_[A-Za-z0-9]{30,}", True, ("hf_",)),
    ("API key (sk-...)", r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_]{20,}", True, ("sk-",)),
    ("Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", True, ("xox",)),
    ("private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", True, ("PRIVATE KEY",)),
    ("token in a URL", r"(?i:\btoken=[0-9a-f]{16,})", True, ("token=",)),
    ("home folder path", r"(?<![\w.-])/home/[A-Za-z0-9._-]+", False, ("/home/",)),
    ("root's home path", r"(?<![\w.-])/root(?=/|\b)", False, ("/root",)),
    ("macOS home path", r"(?<![\w.-])/Users/[A-Za-z0-9._-]+", False, ("/Users/",)),
    (
        "Windows home path",
        r"\b[A-Za-z]:\\{1,2}Users\\{1,2}[A-Za-z0-9._-]+",
        False,
        ("\\Users\\",),
    ),
)

# formats whose bytes are compressed or encoded: only the plain-text patterns above are
# searched there, never the hostname, which a few random bytes could spell by chance
BINARY_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".ico", ".woff", ".woff2", ".ttf", ".otf"}
    | {".eot", ".pdf", ".zip", ".gz", ".pickle"}
)
_GENERIC_HOSTS = frozenset({"localhost", "localhost.localdomain", "localdomain"})


@dataclass(frozen=True)
class Leak:
    path: str
    line: int
    kind: str
    match: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.match}"


def hostnames() -> list[str]:
    """This machine's names that would identify it; names under 4 characters (such as
    ``vm``) are too common a string to search for and are left out."""
    names = set()
    for name in (socket.gethostname(), socket.getfqdn()):
        for candidate in (name, name.split(".")[0]):
            candidate = candidate.strip().lower()
            if len(candidate) >= 4 and candidate not in _GENERIC_HOSTS:
                names.add(candidate)
    return sorted(names, key=len, reverse=True)


def _shown(text: str, secret: bool) -> str:
    if secret:
        return f"{text[:8]}… ({len(text)} characters)"
    return text if len(text) <= 80 else text[:77] + "..."


class Scanner:
    """The patterns, this machine's hostnames and the allowed matches, compiled once."""

    def __init__(self, *, hosts: Sequence[str] | None = None, allow: Sequence[str] = ()):
        hosts = hostnames() if hosts is None else list(hosts)
        self.patterns = [
            (kind, re.compile(rx), secret, hints) for kind, rx, secret, hints in PATTERNS
        ]
        alternatives = "|".join(re.escape(h) for h in hosts)
        self.host = re.compile(rf"(?i)(?<![\w.-])(?:{alternatives})(?![\w-])") if hosts else None
        self.hosts = [h.lower() for h in hosts]
        self.allow = [re.compile(a) for a in allow]

    def text(self, text: str, name: str, *, binary: bool = False) -> list[Leak]:
        found: list[Leak] = []

        def add(start: int, kind: str, match: str, secret: bool) -> None:
            if any(a.search(match) for a in self.allow):
                return
            line = text.count("\n", 0, start) + 1
            found.append(Leak(name, line, kind, _shown(match, secret)))

        lowered = text.lower()
        for kind, pattern, secret, hints in self.patterns:
            # a substring test is a hundred times faster than the regex on a 2 MB bundle
            if any(hint.lower() in lowered for hint in hints):
                for m in pattern.finditer(text):
                    add(m.start(), kind, m.group(), secret)
        if self.host is not None and not binary and any(h in lowered for h in self.hosts):
            for m in self.host.finditer(text):
                add(m.start(), "hostname of the build machine", m.group(), False)
        found.sort(key=lambda leak: leak.line)
        return found

    def file(self, path: Path, name: str) -> list[Leak]:
        data = path.read_bytes()
        binary = path.suffix.lower() in BINARY_SUFFIXES
        # latin-1 maps every byte to one character: offsets and ASCII matches survive
        text = data.decode("latin-1") if binary else data.decode("utf-8", errors="replace")
        return self.text(text, name, binary=binary)


def scan_tree(
    root: Path,
    *,
    extra: Iterable[Path] = (),
    hosts: Sequence[str] | None = None,
    allow: Sequence[str] = (),
) -> list[Leak]:
    """Every file under ``root``, and the ``extra`` files (e.g. the LaTeX source of the PDF,
    whose text is compressed inside the PDF). Names are relative to ``root``."""
    scanner = Scanner(hosts=hosts, allow=allow)
    leaks: list[Leak] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        leaks.extend(scanner.file(path, path.relative_to(root).as_posix()))
    for path in extra:
        leaks.extend(scanner.file(path, path.name))
    return leaks
