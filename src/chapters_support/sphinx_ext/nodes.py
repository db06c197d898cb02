"""Our docutils nodes and how each builder writes them."""

from __future__ import annotations

import html
from typing import Any

from docutils import nodes
from sphinx.locale import get_translation

from chapters_support.result import CheckResult, latex_escape

_ = get_translation("chapters")

# LaTeX colours for the badges (xcolor is loaded by Sphinx's LaTeX style)
_LATEX_COLOURS = {
    "pass": "0.10,0.50,0.22",
    "fail": "0.75,0.10,0.10",
    "unverified": "0.55,0.40,0.00",
}


class DerivationNode(nodes.General, nodes.Element):
    """A ``{derivation}`` block: a numbered, linkable box holding the steps."""


class DerivationTitleNode(nodes.General, nodes.TextElement):
    """The caption line of a derivation; the badge is placed at its end."""


class DerivationNameNode(nodes.Inline, nodes.TextElement):
    """A derivation's title inside its caption: a catalogue message of its own (a
    ``nodes.inline`` would be moved to the caption's end by Sphinx's RemoveTranslatableInline)."""


class DerivationBadgeNode(nodes.General, nodes.Inline, nodes.Element):
    """PASS / FAIL / UNVERIFIED, with the numbers; attributes ``status``, ``text``, ``tooltip``,
    and ``elsewhere`` ("verified on torch 2.8.0+cu128, CUDA") when the cached result comes from
    another torch or device than this build's (``here``)."""


class StepFailureNode(nodes.General, nodes.Element):
    """Beside an equation whose step fails: which step, its two sides (typeset, as a math
    child) and the numbers."""


class CheckResultNode(nodes.General, nodes.Element):
    """A check's output in a code cell; attribute ``result`` is CheckResult JSON."""


class ExecutionFailureNode(nodes.Admonition, nodes.Element):
    """Shown at the top of a chapter that did not execute; attribute ``failure``."""


class DerivationStatusNode(nodes.General, nodes.Element):
    """Placeholder of ``{derivation-status}``, replaced by the table after reading."""


# -- HTML --------------------------------------------------------------------------------------


def visit_derivation_html(self: Any, node: DerivationNode) -> None:
    self.body.append(self.starttag(node, "div", CLASS="chapters-derivation"))


def depart_derivation_html(self: Any, node: DerivationNode) -> None:
    self.body.append("</div>\n")


def visit_title_html(self: Any, node: DerivationTitleNode) -> None:
    self.body.append(self.starttag(node, "p", CLASS="chapters-derivation-title"))


def depart_title_html(self: Any, node: DerivationTitleNode) -> None:
    target = node.parent["ids"][0] if node.parent["ids"] else None
    if target:
        self.body.append(
            f'<a class="headerlink" href="#{target}" title="Link to this derivation">#</a>'
        )
    self.body.append("</p>\n")


def visit_badge_html(self: Any, node: DerivationBadgeNode) -> None:
    status = html.escape(node["status"])
    tooltip = html.escape(node.get("tooltip", ""), quote=True)
    href = node.get("refid")
    tag = f'a href="#{html.escape(href)}"' if href else "span"
    self.body.append(
        f'<{tag} class="chapters-badge chapters-badge--{status}" title="{tooltip}">'
        f"{html.escape(node['text'])}</{tag.split()[0]}>"
    )
    if node.get("elsewhere"):
        why = html.escape(
            str(
                _(
                    "verified by an earlier run and taken from its cache; the build that made "
                    "this page has {here}"
                )
            ).format(here=node.get("here", "?")),
            quote=True,
        )
        mark = html.escape(node["elsewhere"])
        self.body.append(f'<span class="chapters-elsewhere" title="{why}">{mark}</span>')
    raise nodes.SkipNode


def visit_check_html(self: Any, node: CheckResultNode) -> None:
    result = CheckResult.from_json(node["result"])
    ids = " ".join(node["ids"])
    bundle_html = result.html()
    self.body.append(
        f'<div id="{html.escape(ids)}" class="chapters-check-output">{bundle_html}</div>\n'
        if ids
        else f'<div class="chapters-check-output">{bundle_html}</div>\n'
    )
    raise nodes.SkipNode


def visit_step_failure_html(self: Any, node: StepFailureNode) -> None:
    self.body.append(self.starttag(node, "div", CLASS="chapters-step-failure", role="note"))


def depart_step_failure_html(self: Any, node: StepFailureNode) -> None:
    self.body.append("</div>\n")


# -- LaTeX -------------------------------------------------------------------------------------


def visit_derivation_latex(self: Any, node: DerivationNode) -> None:
    self.body.append("\n\\par\\medskip\\noindent\\rule{\\linewidth}{0.4pt}\\par\\nopagebreak\n")
    self.body.append(self.hypertarget_to(node))


def depart_derivation_latex(self: Any, node: DerivationNode) -> None:
    self.body.append("\n\\par\\nopagebreak\\noindent\\rule{\\linewidth}{0.4pt}\\par\\medskip\n")


def visit_title_latex(self: Any, node: DerivationTitleNode) -> None:
    self.body.append("\\noindent{}")


def depart_title_latex(self: Any, node: DerivationTitleNode) -> None:
    self.body.append("\\par\\nopagebreak\n")


def visit_badge_latex(self: Any, node: DerivationBadgeNode) -> None:
    colour = _LATEX_COLOURS.get(node["status"], "0,0,0")
    self.body.append(
        f"\\quad\\fcolorbox[rgb]{{{colour}}}{{1,1,1}}{{\\textcolor[rgb]{{{colour}}}"
        f"{{\\textbf{{\\small {latex_escape(node['text'])}}}}}}}"
    )
    if node.get("elsewhere"):
        self.body.append(f"\\quad{{\\footnotesize\\itshape {latex_escape(node['elsewhere'])}}}")
    raise nodes.SkipNode


def visit_check_latex(self: Any, node: CheckResultNode) -> None:
    result = CheckResult.from_json(node["result"])
    colour = _LATEX_COLOURS.get(result.status, "0,0,0")
    self.body.append(
        f"\n\\par\\noindent\\textcolor[rgb]{{{colour}}}{{\\textbf{{{result.status.upper()}}}}} "
        f"\\texttt{{{latex_escape(result.label)}}}: {{\\small {latex_escape(result.message)} "
        f"({latex_escape(result.dtype)}, {latex_escape(result.device)})}}\\par\n"
    )
    raise nodes.SkipNode


def visit_step_failure_latex(self: Any, node: StepFailureNode) -> None:
    colour = _LATEX_COLOURS["fail"]
    self.body.append(
        f"\n\\par\\noindent\\fcolorbox[rgb]{{{colour}}}{{1,1,1}}{{\\parbox{{0.96\\linewidth}}{{"
        f"\\raggedright\\color[rgb]{{{colour}}}\\small "
    )


def depart_step_failure_latex(self: Any, node: StepFailureNode) -> None:
    self.body.append("}}\\par\n")


# -- plain text and everything else -----------------------------------------------------------


def visit_badge_text(self: Any, node: DerivationBadgeNode) -> None:
    elsewhere = f"; {node['elsewhere']}" if node.get("elsewhere") else ""
    self.add_text(f" [{node['text']}{elsewhere}]")
    raise nodes.SkipNode


def visit_check_text(self: Any, node: CheckResultNode) -> None:
    self.add_text(CheckResult.from_json(node["result"]).summary())
    raise nodes.SkipNode


def _pass(self: Any, node: nodes.Element) -> None:
    pass


def _skip(self: Any, node: nodes.Element) -> None:
    raise nodes.SkipNode


def visit_failure_html(self: Any, node: ExecutionFailureNode) -> None:
    self.body.append(
        self.starttag(node, "div", CLASS="admonition error chapters-execution-failure")
    )


def depart_failure_html(self: Any, node: ExecutionFailureNode) -> None:
    self.body.append("</div>\n")


def visit_failure_latex(self: Any, node: ExecutionFailureNode) -> None:
    self.body.append("\n\\begin{sphinxadmonition}{error}{Execution failed:}\n")


def depart_failure_latex(self: Any, node: ExecutionFailureNode) -> None:
    self.body.append("\\end{sphinxadmonition}\n")


def register(app: Any) -> None:
    generic = {"text": (_pass, _pass), "man": (_pass, _pass), "texinfo": (_pass, _pass)}
    app.add_node(
        DerivationNode,
        html=(visit_derivation_html, depart_derivation_html),
        latex=(visit_derivation_latex, depart_derivation_latex),
        **generic,
    )
    app.add_node(
        DerivationTitleNode,
        html=(visit_title_html, depart_title_html),
        latex=(visit_title_latex, depart_title_latex),
        **generic,
    )
    app.add_node(DerivationNameNode, html=(_pass, _pass), latex=(_pass, _pass), **generic)
    app.add_node(
        DerivationBadgeNode,
        html=(visit_badge_html, None),
        latex=(visit_badge_latex, None),
        text=(visit_badge_text, None),
        man=(visit_badge_text, None),
        texinfo=(_skip, None),
    )
    app.add_node(
        CheckResultNode,
        html=(visit_check_html, None),
        latex=(visit_check_latex, None),
        text=(visit_check_text, None),
        man=(visit_check_text, None),
        texinfo=(_skip, None),
    )
    app.add_node(
        StepFailureNode,
        html=(visit_step_failure_html, depart_step_failure_html),
        latex=(visit_step_failure_latex, depart_step_failure_latex),
        **generic,
    )
    app.add_node(
        ExecutionFailureNode,
        html=(visit_failure_html, depart_failure_html),
        latex=(visit_failure_latex, depart_failure_latex),
        **generic,
    )
    app.add_node(
        DerivationStatusNode,
        html=(_skip, None),
        latex=(_skip, None),
        text=(_skip, None),
        man=(_skip, None),
        texinfo=(_skip, None),
    )
