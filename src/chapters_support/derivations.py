"""Find ``{derivation}`` blocks in a MyST source without starting Sphinx (for the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chapters_support.maths import extract
from chapters_support.maths.parse import count_claims


def find_derivations(path: Path, extensions: list[str] | None = None) -> list[dict[str, Any]]:
    """Label, title, number, 1-based line and the text-only claim count of every derivation."""
    del extensions  # the maths reader parses as MyST does with its default extensions
    found = []
    for number, derivation in enumerate(extract.derivations(path.read_text(encoding="utf-8")), 1):
        found.append(
            {
                "label": derivation.label,
                "title": derivation.title,
                "number": number,
                "line": derivation.line,
                "digest": derivation.digest,
                "claims": count_claims(
                    [(m.text, m.display, m.condition) for m in derivation.maths]
                ),
            }
        )
    return found
