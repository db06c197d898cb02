"""MyST-NB MIME renderer plugin: our check bundle becomes a CheckResultNode.

The plugin is global to the Python environment, so it must stay cheap to import and
decline every MIME type that is not ours.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from docutils import nodes

from chapters_support.result import MIME_TYPE, CheckResult
from chapters_support.sphinx_ext.nodes import CheckResultNode


class CheckMimeRenderPlugin:
    mime_priority_overrides: ClassVar[list[tuple[str, str, int]]] = [("*", MIME_TYPE, 1)]

    @staticmethod
    def handle_mime(renderer: Any, data: Any, inline: bool) -> list[Any] | None:
        if data.mime_type != MIME_TYPE:
            return None
        payload = data.content
        if isinstance(payload, str):
            payload = json.loads(payload)
        if not _extension_loaded(renderer):
            # a book without our extension still shows the verdict, as plain text
            summary = CheckResult.from_json(payload).summary()
            return [nodes.paragraph(text=summary, classes=["output", "text_plain"])]
        node = CheckResultNode(result=dict(payload), label=str(payload.get("label", "")))
        if getattr(data, "line", None):
            node.line = data.line
        return [node]


def _extension_loaded(renderer: Any) -> bool:
    env = getattr(getattr(renderer, "renderer", None), "sphinx_env", None)
    app = getattr(env, "app", None)
    names = ("chapters_support.sphinx_ext", "chapters_support")
    return app is not None and any(name in app.extensions for name in names)
