"""Find ``{derivation}`` blocks in a MyST source without starting Sphinx (for the CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_DIRECTIVE = "{derivation}"


def find_derivations(path: Path, extensions: list[str] | None = None) -> list[dict[str, Any]]:
    """Label, title, number and 1-based line of every top-level derivation, in order."""
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    known = {"colon_fence", "dollarmath", "amsmath", "deflist"}
    config = MdParserConfig(enable_extensions=set(extensions or []) & known | {"colon_fence"})
    parser = create_md_parser(config, RendererHTML)
    text = path.read_text(encoding="utf-8")
    found = []
    for token in parser.parse(text):
        if token.type not in {"fence", "colon_fence"} or not token.info.strip().startswith(
            _DIRECTIVE
        ):
            continue
        title = token.info.strip()[len(_DIRECTIVE) :].strip()
        label = ""
        for line in token.content.splitlines():
            stripped = line.strip()
            if stripped.startswith(":label:"):
                label = stripped[len(":label:") :].strip()
            elif stripped and not stripped.startswith(":"):
                break
        found.append(
            {
                "label": label,
                "title": title,
                "number": len(found) + 1,
                "line": token.map[0] + 1 if token.map else None,
            }
        )
    return found
