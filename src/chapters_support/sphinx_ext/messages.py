"""The extension's message catalogues (domain ``chapters``, in ``sphinx_ext/locale``): extract
the translatable strings of ``sphinx_ext/`` and ``verdict.py``, merge them into each language's
``chapters.po`` and compile the ``.mo`` Sphinx loads. ``python -m
chapters_support.sphinx_ext.messages`` does all three; the tests use :func:`extracted` and
:func:`compiled` to see that the catalogues are complete and current.

Babel's API is used directly (``pybabel extract/update/compile`` do the same in three
commands) so that one command keeps the keywords (``_``, ``N_``) and paths in one place.
"""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

PACKAGE = Path(__file__).resolve().parents[1]
LOCALE = Path(__file__).resolve().parent / "locale"
DOMAIN = "chapters"
KEYWORDS = {"_": None, "N_": None}
SOURCES = [*sorted((PACKAGE / "sphinx_ext").glob("*.py")), PACKAGE / "verdict.py"]


def extracted() -> Catalog:
    """Every translatable string of the sources, as a template."""
    template = Catalog(domain=DOMAIN, project="chapters-support")
    for path in SOURCES:
        for lineno, message, _comments, _context in extract_from_file(
            "python", str(path), keywords=KEYWORDS
        ):
            template.add(message, locations=[(path.relative_to(PACKAGE).as_posix(), lineno)])
    return template


def catalogue_path(language: str) -> Path:
    return LOCALE / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(language: str) -> Catalog:
    with catalogue_path(language).open("rb") as handle:
        return read_po(handle, locale=language, domain=DOMAIN)


def compiled(catalogue: Catalog) -> bytes:
    out = io.BytesIO()
    write_mo(out, catalogue, use_fuzzy=False)
    return out.getvalue()


def update() -> list[str]:
    """Merge the sources' strings into every language's catalogue and compile it."""
    template = extracted()
    done = []
    for po in sorted(LOCALE.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        language = po.parent.parent.name
        catalogue = read(language)
        catalogue.update(template, no_fuzzy_matching=False)
        with po.open("wb") as handle:
            write_po(handle, catalogue, width=100, omit_header=False, no_location=True)
        po.with_suffix(".mo").write_bytes(compiled(read(language)))
        missing = [m.id for m in read(language) if m.id and (not m.string or m.fuzzy)]
        done.append(f"{language}: {len(template)} messages, {len(missing)} to translate")
    return done


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    for line in update():
        print(line)
