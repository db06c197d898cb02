"""Per-document data in the environment, as plain dicts (parallel- and incremental-safe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.environment.collectors import EnvironmentCollector

from chapters_support.sphinx_ext.nodes import (
    CheckResultNode,
    DerivationNode,
    DerivationStatusNode,
    ExecutionFailureNode,
)
from chapters_support.verdict import ChapterData

_ATTRS = (
    "chapters_derivations",
    "chapters_results",
    "chapters_failures",
    "chapters_code_digests",
)


class EnvData(Protocol):
    """What ensure_env keeps on the BuildEnvironment (whose type declares none of it)."""

    chapters_derivations: dict[str, list[dict[str, Any]]]
    chapters_results: dict[str, list[dict[str, Any]]]
    chapters_failures: dict[str, dict[str, Any]]
    chapters_code_digests: dict[str, str]
    chapters_status_docs: set[str]


def ensure_env(env: BuildEnvironment) -> EnvData:
    data = cast(EnvData, env)
    for attr in _ATTRS:
        if not hasattr(env, attr):
            setattr(env, attr, {})
    if not hasattr(env, "chapters_status_docs"):
        data.chapters_status_docs = set()
    return data


class ChecksCollector(EnvironmentCollector):
    """Collects derivations, check results and execution failures of each document."""

    def clear_doc(self, app: Sphinx, env: BuildEnvironment, docname: str) -> None:
        # called for every document re-read or removed: the status page must follow
        cast(Any, app).chapters_env_changed = True  # read by report.status_docs_to_rewrite
        data = ensure_env(env)
        for attr in _ATTRS:
            getattr(env, attr).pop(docname, None)
        data.chapters_status_docs.discard(docname)

    def merge_other(
        self, app: Sphinx, env: BuildEnvironment, docnames: set[str], other: BuildEnvironment
    ) -> None:
        data = ensure_env(env)
        other_data = ensure_env(other)
        for attr in _ATTRS:
            mine, theirs = getattr(env, attr), getattr(other, attr)
            for docname in docnames:
                if docname in theirs:
                    mine[docname] = theirs[docname]
        data.chapters_status_docs |= other_data.chapters_status_docs & docnames

    def process_doc(self, app: Sphinx, doctree: nodes.document) -> None:
        env = app.env
        data = ensure_env(env)
        docname = env.docname
        results = [dict(node["result"]) for node in doctree.findall(CheckResultNode)]
        # a derivation a step check read carries its claims in the items; count the rest
        bound = {r.get("label") for r in results if r.get("kind") == "steps" and r.get("items")}
        labels = [node["label"] for node in doctree.findall(DerivationNode)]
        claims = _claims_by_label(env, docname, [x for x in labels if x not in bound])
        derivations = [
            {
                "label": node["label"],
                "title": node["title"],
                "number": node["number"],
                "anchor": node["anchor"],
                "line": node.line,
                "claims": claims.get(node["label"], {}),
            }
            for node in doctree.findall(DerivationNode)
        ]
        failures = [dict(node["failure"]) for node in doctree.findall(ExecutionFailureNode)]
        if derivations:
            data.chapters_derivations[docname] = derivations
            digest = getattr(app, "chapters_code_digests", {}).get(docname) or _code_digest(
                env, docname
            )
            if digest is not None:
                data.chapters_code_digests[docname] = digest
        if results:
            data.chapters_results[docname] = results
        if failures:
            data.chapters_failures[docname] = failures[0]
        if any(True for _ in doctree.findall(DerivationStatusNode)):
            data.chapters_status_docs.add(docname)


def _code_digest(env: BuildEnvironment, docname: str) -> str | None:
    """The digest of the chapter's code cells, against which a recorded mutation score is
    fresh or stale, when the execution step did not hand it on (execution off): one more
    read of the chapter, once per (re-)read."""
    from chapters_support.execution.notebooks import file_code_digest

    path = Path(env.doc2path(docname))
    if path.suffix != ".md" or not path.is_file():
        return None
    # MyST-Parser and MyST-NB put their configurations on the environment, undeclared there
    myst_env = cast(Any, env)
    return file_code_digest(path, docname, myst_env.myst_config, myst_env.mystnb_config)


def _claims_by_label(
    env: BuildEnvironment, docname: str, unbound: list[str]
) -> dict[str, dict[str, int]]:
    """How many claims the text of each derivation no step check binds makes (a bound one's
    claims come with its step results)."""
    from chapters_support.maths import extract
    from chapters_support.maths.parse import count_claims

    if not unbound:
        return {}
    path = Path(env.doc2path(docname))
    if path.suffix != ".md" or not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    if "{derivation}" not in text:
        return {}
    return {
        d.label: count_claims([(m.text, m.display, m.condition) for m in d.maths])
        for d in extract.derivations(text)
        if d.label in unbound
    }


def book_chapters(env: BuildEnvironment) -> list[ChapterData]:
    """Every document with derivations, checks or a failure, in the book's reading order."""
    data = ensure_env(env)
    involved = (
        set(data.chapters_derivations) | set(data.chapters_results) | set(data.chapters_failures)
    )
    order = _reading_order(env)
    ranked = sorted(involved, key=lambda d: (order.get(d, len(order)), d))
    chapters = []
    for docname in ranked:
        exec_data = (getattr(env, "nb_metadata", {}).get(docname) or {}).get("exec_data") or {}
        title = env.titles.get(docname)
        chapters.append(
            ChapterData(
                chapter=docname,
                source=Path(env.doc2path(docname, False)).as_posix(),
                title=title.astext() if title is not None else docname,
                derivations=data.chapters_derivations.get(docname, []),
                results=data.chapters_results.get(docname, []),
                failure=data.chapters_failures.get(docname),
                seconds=exec_data.get("runtime"),
            )
        )
    return chapters


def _reading_order(env: BuildEnvironment) -> dict[str, int]:
    """Documents in table-of-contents order (depth first from the root document)."""
    order: dict[str, int] = {}

    def visit(docname: str) -> None:
        if docname in order:
            return
        order[docname] = len(order)
        for child in env.toctree_includes.get(docname, []):
            visit(child)

    visit(env.config.root_doc)
    return order


def check_anchor(doctree: nodes.document, label: str) -> str | None:
    """The id of the first check output with this label in a document."""
    for node in doctree.findall(CheckResultNode):
        if node.get("label") == label and node["ids"]:
            return node["ids"][0]
    return None
