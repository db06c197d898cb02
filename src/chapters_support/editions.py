"""The book's editions: English, and one per language with catalogues in ``locales/``.

Every edition is built by the same ``jupyter-book build`` from the same sources and the same
jupyter-cache (so only the English build may execute anything); what differs is its
``_config.yml``, made here from the book's: the language (which Sphinx must know before any
extension loads its message catalogue), the catalogues, the search language, xeCJK's fonts
for a Chinese PDF, and the links to the same page in the other editions. Used by
``chapters build`` (editions side by side in ``_build/``) and ``chapters publish`` (the
English edition at ``site/<version>/``, each other one in a folder of it, e.g. ``zh/``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

ENGLISH = "en"
LOCALES = "locales"
# where a published version keeps each edition, relative to the version's folder
SITE_FOLDERS = {ENGLISH: "", "zh_CN": "zh", "zh_TW": "zh-tw"}
SEARCH_LANGUAGES = {"zh_CN": "zh", "zh_TW": "zh", "zh": "zh"}
# xelatex loads xeCJK for Chinese (Sphinx's own settings); its text in Debian's Noto CJK
CJK_FONTS = (
    "\\setCJKmainfont{Noto Serif CJK SC}\n"
    "\\setCJKsansfont{Noto Sans CJK SC}\n"
    "\\setCJKmonofont{Noto Sans Mono CJK SC}\n"
)


def languages(book_root: Path) -> list[str]:
    """English, then each language whose catalogues the book has, sorted."""
    found = sorted(
        p.name for p in (book_root / LOCALES).glob("*") if any(p.glob("LC_MESSAGES/*.po"))
    )
    return [ENGLISH, *found]


def site_folder(language: str) -> str:
    return SITE_FOLDERS.get(language, language.lower().replace("_", "-"))


def edition_config(
    config: dict[str, Any],
    language: str,
    *,
    cache: Path,
    links: dict[str, str] | None = None,
    sphinx_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The book's ``_config.yml`` (as a dict) for the ``language`` edition, reading ``cache``;
    ``links`` maps each other edition to its root's URL from this edition's root."""
    out = copy.deepcopy(config)
    out["execute"] = {**(out.get("execute") or {}), "cache": str(cache)}
    sphinx = dict(out.get("sphinx") or {})
    settings = dict(sphinx.get("config") or {})
    if language != ENGLISH:
        settings["language"] = language
        settings["locale_dirs"] = [LOCALES]
    if language in SEARCH_LANGUAGES:
        settings["html_search_language"] = SEARCH_LANGUAGES[language]
    if language.startswith("zh"):
        latex = dict(settings.get("latex_elements") or {})
        latex["preamble"] = str(latex.get("preamble", "")) + CJK_FONTS
        settings["latex_elements"] = latex
    if links:
        settings["chapters_editions"] = dict(links)
    settings.update(sphinx_extra or {})
    sphinx["config"] = settings
    out["sphinx"] = sphinx
    return out
