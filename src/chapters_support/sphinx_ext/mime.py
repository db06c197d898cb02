"""MyST-NB MIME renderer plugin: our check bundle becomes a CheckResultNode.

The plugin is global to the Python environment, so it must stay cheap to import and
decline every MIME type that is not ours.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from chapters_support.result import MIME_TYPE
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
        node = CheckResultNode(result=dict(payload), label=str(payload.get("label", "")))
        if getattr(data, "line", None):
            node.line = data.line
        return [node]
