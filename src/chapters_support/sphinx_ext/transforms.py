"""Post-transforms: badges beside derivations, and the status table.

Priorities (lower runs first), as sphinx-exercise documents its own:
  5  CheckBadgePostTransform  - needs every chapter read; runs per written document
  6  MathCommentsPostTransform - LaTeX: the maths' % comments removed (after 5 matched them)
  8  StatusTablePostTransform - builds pending_xref links, so before ReferencesResolver (10)
"""

from __future__ import annotations

import re
from typing import Any, cast

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.locale import get_translation
from sphinx.transforms.post_transforms import SphinxPostTransform

from chapters_support.mutate import score_text
from chapters_support.provenance import installed, verified_elsewhere
from chapters_support.result import FAIL, PASS, STEP_FAIL, UNVERIFIED, format_seconds
from chapters_support.sphinx_ext.collector import book_chapters, check_anchor
from chapters_support.sphinx_ext.nodes import (
    DerivationBadgeNode,
    DerivationNode,
    DerivationStatusNode,
    DerivationTitleNode,
    StepFailureNode,
)
from chapters_support.verdict import (
    _REL_TEXT,
    assess,
    badge_text,
    coverage_text,
    environments,
    error_summary,
    status_text,
    step_coverage,
    steps_text,
    totals,
)

# the extension's words in the page's language (sphinx_ext/locale/<lang>/LC_MESSAGES/chapters.po)
_ = get_translation("chapters")


def elsewhere_text(row: dict[str, Any]) -> str:
    """The mark of a result verified on another torch or device, in the page's language."""
    from chapters_support.provenance import describe

    if not row.get("verified_elsewhere"):
        return ""
    if not row.get("environment"):
        return str(_("verified in an environment it did not record"))
    return str(_("verified on {where}")).format(where=describe(row["environment"]))


def assessment(app: Sphinx) -> dict[str, Any]:
    """The book-wide verdict, computed once per build after reading (see setup)."""
    cached = getattr(app, "chapters_assessment", None)
    if cached is None:
        chapters = book_chapters(app.env)
        rows, problems = assess(chapters)
        _add_mutation_scores(app, rows)
        here = installed()
        for row in rows:
            row["verified_elsewhere"] = (
                verified_elsewhere(row["environment"], here)
                if row["status"] != UNVERIFIED
                else None
            )
        cached = {"chapters": chapters, "rows": rows, "problems": problems, "installed": here}
        cast(Any, app).chapters_assessment = cached  # Sphinx's type declares no such attribute
    return cached


def _add_mutation_scores(app: Sphinx, rows: list[dict[str, Any]]) -> None:
    """Each row's recorded mutation score (``chapters mutate --record``), if the book has one."""
    from chapters_support.mutate import recorded_scores
    from chapters_support.sphinx_ext.collector import ensure_env

    data = ensure_env(app.env)
    scores = recorded_scores(app.srcdir, data.chapters_code_digests)
    for row in rows:
        row["mutation"] = scores.get((row["chapter"], row["label"]))


def reset_assessment(app: Sphinx, env: Any) -> None:
    cast(Any, app).chapters_assessment = None


class CheckBadgePostTransform(SphinxPostTransform):
    default_priority = 5

    def run(self, **kwargs: Any) -> None:
        rows = {(row["chapter"], row["label"]): row for row in assessment(self.app)["rows"]}
        for node in self.document.findall(DerivationNode):
            row = rows.get((node.get("docname", self.env.docname), node["label"]))
            if row is None:
                continue
            badge = DerivationBadgeNode(
                status=row["status"],
                text=badge_text(row, _),
                tooltip=row.get("message", ""),
                elsewhere=elsewhere_text(row),
                here=installed().describe(),
            )
            anchor = check_anchor(self.document, node["label"])
            if anchor:
                badge["refid"] = anchor
            for caption in node.findall(DerivationTitleNode):
                caption += badge
                break
            _mark_failing_steps(node, row)


def _mark_failing_steps(derivation: DerivationNode, row: dict[str, Any]) -> None:
    """The reader sees which equation does not hold: the maths gets a class (outlined in
    HTML) and a note with the step's two sides and the numbers follows it (HTML and PDF)."""
    failing = [i for i in row.get("step_results") or [] if i.get("status") == STEP_FAIL]
    if not failing:
        return
    total = len(row["step_results"])
    maths = [n for n in derivation.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block)))]
    for item in failing:
        wanted = " ".join(str(item.get("maths", "")).split())
        target = next((m for m in maths if " ".join(m.astext().split()) == wanted), None)
        if target is None:
            continue
        target["classes"].append("chapters-step-fail")
        rel = _REL_TEXT.get(item.get("rel", "="), item.get("rel", "="))
        note = StepFailureNode()
        note += nodes.strong(
            text=str(_("Step {step} of {total} does not hold:")).format(
                step=item.get("step"), total=total
            )
        )
        note += nodes.Text(" ")
        note += nodes.math(text=_inline_latex(f"{item.get('lhs')} {rel} {item.get('rhs')}"))
        note += nodes.Text(f" — {item.get('detail')}")
        anchor = target if isinstance(target, nodes.math_block) else target.parent
        while anchor.parent is not None and not isinstance(anchor, nodes.Body):
            anchor = anchor.parent
        if anchor.parent is not None:
            anchor.parent.insert(anchor.parent.index(anchor) + 1, note)


def _xref(docname: str, target: str, text: str, reftype: str) -> nodes.Node:
    ref = addnodes.pending_xref(
        "",
        refdomain="std",
        reftype=reftype,
        reftarget=target,
        refexplicit=True,
        refdoc=docname,
        refwarn=True,
    )
    ref += nodes.inline(text=text)
    return ref


def _table(
    header: list[str], body: list[list[nodes.Node | str]], classes: list[str]
) -> nodes.table:
    table = nodes.table(classes=classes)
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    thead = nodes.thead()
    group += thead
    thead += _tr(header)
    tbody = nodes.tbody()
    group += tbody
    for cells in body:
        tbody += _tr(cells)
    return table


def _tr(cells: list[nodes.Node | str]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += nodes.paragraph("", "", cell if isinstance(cell, nodes.Node) else nodes.Text(cell))
        row += entry
    return row


_COMMENT = re.compile(r"(?<!\\)%[^\n]*")


def _inline_latex(text: str) -> str:
    """A step's two sides as one line of inline maths: no alignment marks, row breaks or
    comments of the display they came from."""
    text = _COMMENT.sub("", text).replace("&", " ")
    return " ".join(re.sub(r"\\\\(?![A-Za-z])", " ", text).split())


class MathCommentsPostTransform(SphinxPostTransform):
    """LaTeX only: drop the ``% unchecked: reason`` comments of the maths, which MathJax ignores
    but which would swallow the ``\\end{split}`` Sphinx writes after a display's last line."""

    default_priority = 6
    formats = ("latex",)

    def run(self, **kwargs: Any) -> None:
        for node in list(
            self.document.findall(lambda n: isinstance(n, (nodes.math, nodes.math_block)))
        ):
            text = node.astext()
            if "%" not in text:
                continue
            stripped = _COMMENT.sub("", text)
            if stripped != text:
                node.children = [nodes.Text(stripped)]


class StatusTablePostTransform(SphinxPostTransform):
    default_priority = 8

    def run(self, **kwargs: Any) -> None:
        markers = list(self.document.findall(DerivationStatusNode))
        if not markers:
            return
        data = assessment(self.app)
        for marker in markers:
            marker.replace_self(self.build(data))

    @staticmethod
    def row(docname: str, row: dict[str, Any]) -> list[nodes.Node | str]:
        status = nodes.inline(
            text=status_text(row["status"], _),
            classes=["chapters-badge", f"chapters-badge--{row['status']}"],
        )
        ratio = f"{row['ratio']:.2g}" if row.get("ratio") is not None else "–"
        seconds = row.get("seconds")
        cell: nodes.Node = status
        if row.get("verified_elsewhere"):
            cell = nodes.inline("", "", status)
            cell += nodes.inline(text=elsewhere_text(row), classes=["chapters-elsewhere"])
        return [
            str(row.get("number") or ""),
            _xref(docname, row["label"], row["title"] or row["label"], "ref"),
            cell,
            steps_text(row, _),
            error_summary(row),
            ratio,
            row.get("dtype") or "–",
            row.get("device") or "–",
            format_seconds(seconds) if seconds is not None else "–",
            score_text(row.get("mutation")),
        ]

    def build(self, data: dict[str, Any]) -> list[nodes.Node]:
        docname = self.env.docname
        rows, chapters, problems = data["rows"], data["chapters"], data["problems"]
        count = totals(rows)
        summary = nodes.paragraph(classes=["chapters-status-summary"])
        summary += nodes.strong(
            text=str(_("{total} derivations in {chapters} chapters: ")).format(
                total=count["total"], chapters=len(chapters)
            )
        )
        summary += nodes.Text(
            str(_("{passed} pass, {failed} fail, {unverified} unverified.")).format(
                passed=count[PASS], failed=count[FAIL], unverified=count[UNVERIFIED]
            )
        )
        out: list[nodes.Node] = [summary]
        coverage = step_coverage(rows)
        out.append(
            nodes.paragraph(
                text=coverage_text(coverage, _)[0].upper() + coverage_text(coverage, _)[1:] + ".",
                classes=["chapters-status-coverage"],
            )
        )

        here = data["installed"]
        env_list = nodes.bullet_list(classes=["chapters-status-environment"])
        for env in environments(chapters):
            where = env.get("device_name") or env.get("device_type", "?")
            cuda = f", CUDA {env['cuda']}" if env.get("cuda") else str(_(", no CUDA"))
            ours = "" if verified_elsewhere(env, here) else str(_(" (this build's)"))
            item = nodes.list_item()
            item += nodes.paragraph(
                text=f"{env.get('device_type', '?').upper()}: {where} — "
                f"torch {env.get('torch', '?')}"
                f"{cuda}, Python {env.get('python', '?')}{ours}"
            )
            env_list += item
        if env_list.children:
            out.append(nodes.paragraph(text=str(_("Checks ran on:"))))
            out.append(env_list)
        elsewhere = [r for r in rows if r.get("verified_elsewhere")]
        if elsewhere:
            out.append(
                nodes.paragraph(
                    text=str(
                        _(
                            "This build has {here}; {count} of {total} derivations were verified "
                            "by an earlier run on another torch or device and are marked with "
                            "where they were verified."
                        )
                    ).format(here=here.describe(), count=len(elsewhere), total=count["total"]),
                    classes=["chapters-status-elsewhere"],
                )
            )

        for chapter in chapters:
            mine = [r for r in rows if r["chapter"] == chapter.chapter]
            heading = nodes.paragraph(classes=["chapters-status-chapter"])
            heading += nodes.strong(
                "", "", _xref(docname, "/" + chapter.chapter, chapter.title, "doc")
            )
            state = (
                str(_("execution failed"))
                if chapter.failure
                else str(_("{passed}/{total} pass")).format(
                    passed=sum(r["status"] == PASS for r in mine), total=len(mine)
                )
            )
            mine_coverage = step_coverage(mine)
            if mine_coverage["claims"]:
                state += str(_(", steps {passed}/{claims} ({share})")).format(
                    passed=mine_coverage["pass"],
                    claims=mine_coverage["claims"],
                    share=f"{mine_coverage['coverage']:.0%}",
                )
            seconds = (
                str(_(", executed in {seconds}")).format(seconds=format_seconds(chapter.seconds))
                if chapter.seconds is not None
                else ""
            )
            heading += nodes.Text(f" — {state}{seconds}")
            out.append(heading)
            if mine:
                out.append(
                    _table(
                        [
                            "#",
                            str(_("Derivation")),
                            str(_("Status")),
                            str(_("Steps")),
                            str(_("Max error")),
                            str(_("Error / tolerance")),
                            "dtype",
                            str(_("Device")),
                            str(_("Check time")),
                            str(_("Mutants")),
                        ],
                        [self.row(docname, row) for row in mine],
                        ["chapters-status-table"],
                    )
                )
        if problems:
            out.append(nodes.rubric(text=str(_("Problems"))))
            plist = nodes.bullet_list(classes=["chapters-status-problems"])
            for problem in problems:
                item = nodes.list_item()
                item += nodes.paragraph(text=str(problem))
                plist += item
            out.append(plist)
        return out
