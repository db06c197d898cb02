"""Chapters as notebooks, read exactly as MyST-NB reads them, so cache keys agree."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

DEFAULT_EXECUTION_SECONDS = 60.0  # assumed for a chapter never run before (as pytorch/tutorials)


@dataclass
class Chapter:
    """One executable chapter: where it is, and its notebook as MyST-NB sees it."""

    docname: str
    path: Path
    notebook: NotebookNode
    timeout: float | None = None
    kernel_name: str = "python3"
    in_temp: bool = False  # MyST-NB's execution_in_temp: run in a scratch folder
    source_map: list[int] = field(default_factory=list)

    def line_of_cell(self, cell_index: int | None) -> int | None:
        """The 1-based line where a cell starts in the source, from MyST-NB's source map."""
        if cell_index is None or not 0 <= cell_index < len(self.source_map):
            return None
        return int(self.source_map[cell_index])


def read_chapter(
    path: Path,
    docname: str | None = None,
    md_config: Any = None,
    nb_config: Any = None,
) -> Chapter | None:
    """Read a MyST (or ipynb) chapter; None when the file is plain Markdown, not a notebook."""
    from myst_nb.core.config import NbParserConfig
    from myst_nb.core.read import create_nb_reader
    from myst_parser.config.main import MdParserConfig

    md_config = md_config or MdParserConfig()
    nb_config = nb_config or NbParserConfig()
    text = path.read_text(encoding="utf-8")
    reader = create_nb_reader(str(path), md_config, nb_config, text)
    if reader is None:
        return None
    notebook = reader.read(text)
    # the same kernel aliasing MyST-NB applies before hashing (myst_nb.sphinx_.Parser.parse)
    kernel = notebook.metadata.get("kernelspec", {}).get("name")
    if kernel is not None and nb_config.kernel_rgx_aliases:
        for pattern, alias in nb_config.kernel_rgx_aliases.items():
            if re.fullmatch(pattern, kernel):
                notebook.metadata["kernelspec"]["name"] = alias
                kernel = alias
                break
    overrides = dict(notebook.metadata.get(nb_config.metadata_key) or {})
    timeout = overrides.get("execution_timeout", nb_config.execution_timeout)
    return Chapter(
        docname=docname or path.stem,
        path=path.resolve(),
        notebook=notebook,
        timeout=None if timeout is None or timeout < 0 else float(timeout),
        kernel_name=kernel or "python3",
        in_temp=bool(overrides.get("execution_in_temp", nb_config.execution_in_temp)),
        source_map=list(notebook.metadata.get("source_map", [])),
    )


def has_code(chapter: Chapter) -> bool:
    return any(cell.cell_type == "code" for cell in chapter.notebook.cells)


def merge_outputs(original: NotebookNode, executed: NotebookNode) -> NotebookNode:
    """The original notebook with the executed outputs: cell sources and metadata untouched,
    so its cache key is the one MyST-NB will look up."""
    merged = copy.deepcopy(original)
    for cell, run_cell in zip(merged.cells, executed.cells, strict=True):
        if cell.cell_type == "code":
            cell.outputs = run_cell.get("outputs", [])
            cell.execution_count = run_cell.get("execution_count")
    if "language_info" in executed.metadata:
        merged.metadata["language_info"] = executed.metadata["language_info"]
    return merged


def code_digest(notebook: NotebookNode) -> str:
    """A digest of a notebook's code cells (what ``chapters mutate`` made its mutants from): a
    prose or maths edit keeps it, a code edit changes it."""
    import hashlib

    h = hashlib.blake2b(digest_size=12)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8") + b"\0")
    return h.hexdigest()


def file_code_digest(
    path: Path, docname: str | None = None, md_config: Any = None, nb_config: Any = None
) -> str | None:
    """The code digest of a chapter file, read as MyST-NB reads it (None: not a notebook)."""
    chapter = read_chapter(path, docname, md_config, nb_config)
    return None if chapter is None else code_digest(chapter.notebook)
