"""Editions in other languages, through Sphinx's own internationalisation (gettext catalogues
in ``book/locales/<lang>/LC_MESSAGES``), with what is verified kept single-sourced.

Sphinx leaves code out of its catalogues but not maths: a display formula would be a message a
translator could change, and the step checks read the English chapter, so a changed formula
would show under a PASS badge. Here

* display maths is marked untranslatable before Sphinx's ``Locale`` transform (priority 20), so
  it is neither extracted nor replaced: the Chinese page shows the English chapter's formula,
  byte for byte;
* a translated paragraph must keep the English one's inline maths (as a multiset): else the
  English paragraph is shown and a warning (type ``chapters``, subtype ``i18n_maths``) names
  the place (a build with ``-W`` fails; ``chapters i18n status`` and the tests fail on it);
* a derivation's title is a message of its own (``DerivationNameNode``), and a translated title
  is what the status page and ``derivations.json`` of that edition show;
* a paragraph whose English changed after its translation (``#, fuzzy`` in the catalogue,
  which Sphinx then leaves out) is marked, and the page says once, under its title, that the
  translation may be out of date, instead of mixing languages silently.

An edition is built by the same ``jupyter-book build`` with a configuration naming its language
(``chapters build`` writes it) and reading the English build's jupyter-cache, so it executes
nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms import SphinxTransform
from sphinx.util import logging
from sphinx.util.nodes import is_translatable

from chapters_support.editions import SEARCH_LANGUAGES
from chapters_support.sphinx_ext.nodes import DerivationNameNode, DerivationNode

logger = logging.getLogger(__name__)

MESSAGES = "chapters"  # the extension's own message catalogue (sphinx_ext/locale)
STALE_CLASS = "chapters-i18n-stale"


def translated(config: Any) -> bool:
    return bool(config.language) and not str(config.language).startswith("en")


def configure_edition(app: Sphinx, config: Any) -> None:
    """``config-inited``: a Chinese edition's search, quiet and with the glossary's words."""
    if SEARCH_LANGUAGES.get(str(config.language)) == "zh":
        _quiet_jieba()
        words = _search_words(app, str(config.language))
        if words is not None and "dict" not in (config.html_search_options or {}):
            config.html_search_options = {**(config.html_search_options or {}), "dict": words}


def _search_words(app: Sphinx, language: str) -> str | None:
    """The glossary's terms as a jieba dictionary, so that the search index holds 激活函数 as
    one word (jieba's own dictionary would cut it into 激活 and 函数, and a reader's query
    for the term would find nothing)."""
    from chapters_support.catalogues import glossary

    terms = glossary(Path(app.srcdir), language)
    if not terms:
        return None
    path = Path(app.doctreedir) / f"chapters-search-words-{language}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    words = sorted({t.zh for t in terms if any("\u4e00" <= c <= "\u9fff" for c in t.zh)})
    # a high frequency, so that jieba keeps each term whole
    path.write_text("".join(f"{word} 100000\n" for word in words), encoding="utf-8")
    return str(path)


def _quiet_jieba() -> None:
    """Sphinx's Chinese search segments words with jieba, which logs its dictionary loading
    to stderr on every build."""
    import logging as stdlib_logging

    try:
        import jieba
    except ImportError:  # Sphinx then indexes no Chinese words, and says so itself
        return
    jieba.setLogLevel(stdlib_logging.WARNING)


def _maths(node: nodes.Element) -> Counter[str]:
    return Counter(" ".join(m.astext().split()) for m in node.findall(nodes.math))


class KeepMathsUntranslated(SphinxTransform):
    """Display maths is never a message; a translatable node keeps its English children."""

    default_priority = 15  # after ExtraTranslatableNodes (10), before Locale (20)

    def apply(self, **kwargs: Any) -> None:
        for block in self.document.findall(nodes.math_block):
            block["translatable"] = False
        if not translated(self.config):
            return
        for node in self.document.findall(is_translatable):
            if isinstance(node, nodes.Element) and any(True for _ in node.findall(nodes.math)):
                node["chapters_english"] = [child.deepcopy() for child in node.children]


class RejectChangedMaths(SphinxTransform):
    """A translation that changes a paragraph's inline maths is not shown."""

    default_priority = 21  # right after Locale (20)

    def apply(self, **kwargs: Any) -> None:
        for node in list(self.document.findall(nodes.Element)):
            english = node.attributes.pop("chapters_english", None)
            if english is None or not node.get("translated"):
                continue
            original = nodes.Element("", *english)
            before, after = _maths(original), _maths(node)
            if before != after:

                def listed(maths: Counter[str]) -> str:
                    return ", ".join(f"${m}$" for m in sorted(maths.elements())) or "nothing"

                logger.warning(
                    "the translation changes the inline maths, so the English text is shown: "
                    f"the English has {listed(before - after)} where the translation has "
                    f"{listed(after - before)}",
                    location=node,
                    type="chapters",
                    subtype="i18n_maths",
                )
                node.children = []
                node.extend(english)
                node["translated"] = False
        for derivation in self.document.findall(DerivationNode):
            name = next(iter(derivation.findall(DerivationNameNode)), None)
            if name is not None and name.get("translated"):
                derivation["title"] = name.astext()


class TranslateTocCaptions(SphinxTransform):
    """The parts' captions of ``_toc.yml``: sphinx-external-toc inserts the toctrees after
    Sphinx's ``Locale`` transform has run, so their captions (extracted into the root page's
    catalogue) would stay English in the sidebar; translated here from the same catalogue."""

    default_priority = 101  # right after sphinx-external-toc's InsertToctrees (100)

    def apply(self, **kwargs: Any) -> None:
        if not translated(self.config):
            return
        from sphinx import addnodes
        from sphinx.locale import init as init_locale
        from sphinx.util.i18n import docname_to_domain

        dirs = [str(Path(self.env.srcdir, folder)) for folder in self.config.locale_dirs]
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        catalogue, found = init_locale(dirs, self.config.language, domain)
        if not found:
            return
        for toctree in self.document.findall(addnodes.toctree):
            caption = toctree.get("caption")
            if caption and (words := catalogue.gettext(caption)) != caption:
                toctree["caption"] = words


def fuzzy_messages(env: Any, docname: str) -> set[str]:
    """The messages of ``docname``'s catalogue whose English changed since they were
    translated (``#, fuzzy``), in every locale folder of the edition's language."""
    from babel.messages.pofile import read_po
    from sphinx.util.i18n import docname_to_domain

    config = env.config
    domain = docname_to_domain(docname, config.gettext_compact)
    found: set[str] = set()
    for folder in config.locale_dirs:
        po = Path(env.srcdir, folder, config.language, "LC_MESSAGES", f"{domain}.po")
        if po.is_file():
            with po.open("rb") as handle:
                found |= {str(m.id) for m in read_po(handle) if m.fuzzy and m.id and m.string}
    return found


class MarkStaleTranslations(SphinxTransform):
    """A fuzzy message is left out of the ``.mo``, so Sphinx shows its English silently; the
    paragraph is marked and the page says so once, under its title."""

    default_priority = 22

    def apply(self, **kwargs: Any) -> None:
        if not translated(self.config):
            return
        from sphinx.locale import get_translation
        from sphinx.util.nodes import extract_messages

        fuzzy = fuzzy_messages(self.env, self.env.docname)
        stale = [node for node, message in extract_messages(self.document) if message in fuzzy]
        if not stale:
            return
        _ = get_translation(MESSAGES)
        for node in stale:
            node["classes"].append(STALE_CLASS)
        note = nodes.note(classes=["chapters-i18n-note"])
        note += nodes.paragraph(
            text=_(
                "The translation of {count} paragraph(s) on this page may be out of date: "
                "they are shown in English until it is updated."
            ).format(count=len(stale))
        )
        section = next(iter(self.document.findall(nodes.section)), None)
        if section is not None:
            section.insert(1, note)
        logger.info(
            f"chapters: {self.env.docname}: {len(stale)} translation(s) out of date, "
            "shown in English"
        )


def register(app: Sphinx) -> None:
    app.connect("config-inited", configure_edition, priority=100)
    app.add_transform(KeepMathsUntranslated)
    app.add_transform(RejectChangedMaths)
    app.add_transform(MarkStaleTranslations)
    app.add_transform(TranslateTocCaptions)
    app.add_message_catalog(MESSAGES, str(Path(__file__).parent / "locale"))
