"""``{derivation}`` and ``{derivation-status}``."""

from __future__ import annotations

from typing import cast

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.domains.std import StandardDomain
from sphinx.locale import get_translation
from sphinx.util.docutils import SphinxDirective

from chapters_support.sphinx_ext.nodes import (
    DerivationNameNode,
    DerivationNode,
    DerivationStatusNode,
    DerivationTitleNode,
)

_COUNTER = "chapters_derivation_count"


_ = get_translation("chapters")


class DerivationDirective(SphinxDirective):
    """A numbered, linkable derivation whose badge comes from the check with its label."""

    optional_arguments = 1
    final_argument_whitespace = True
    has_content = True
    option_spec = {
        "label": directives.unchanged_required,
        "class": directives.class_option,
    }

    def run(self) -> list[nodes.Node]:
        label = (self.options.get("label") or "").strip()
        title = (self.arguments[0] if self.arguments else "").strip()
        number = self.env.temp_data.get(_COUNTER, 0) + 1
        self.env.temp_data[_COUNTER] = number
        node = DerivationNode(
            label=label,
            title=title,
            number=number,
            # the LaTeX builder inlines every chapter into one doctree: keep where it came from
            docname=self.env.docname,
            classes=self.options.get("class", []),
        )
        self.set_source_info(node)
        anchor = nodes.make_id(label) if label else f"derivation-{number}"
        node["ids"].append(anchor)
        node["anchor"] = anchor
        caption = DerivationTitleNode()
        caption += nodes.strong(text=str(_("Derivation {number}")).format(number=number))
        if title:
            # the title's brackets, full-width in Chinese
            caption += nodes.Text(str(_(" (")))
            parsed, messages = self.state.inline_text(title, self.lineno)
            # its own node, so that the title (and only it) is a catalogue message
            name = DerivationNameNode(title, "", *parsed, translatable=True)
            self.set_source_info(name)
            caption += name
            caption += nodes.Text(str(_(")")))
            node.extend(messages)
        node += caption
        self.state.nested_parse(self.content, self.content_offset, node)
        if label:
            std = cast(StandardDomain, self.env.get_domain("std"))
            std.note_hyperlink_target(
                label, self.env.docname, anchor, title or f"Derivation {number}"
            )
        return [node]


class DerivationStatusDirective(SphinxDirective):
    """The book-wide table of every derivation; filled in after all chapters are read."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        node = DerivationStatusNode()
        self.set_source_info(node)
        return [node]
