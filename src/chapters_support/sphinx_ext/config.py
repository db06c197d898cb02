"""Every option of the extension, declared once (as MyST-NB's core/config.py does)."""

from __future__ import annotations

import dataclasses as dc
from typing import Any


@dc.dataclass(frozen=True)
class ChaptersConfig:
    strict: bool = dc.field(
        default=True,
        metadata={
            "help": "Fail the build on a FAIL or UNVERIFIED derivation, an orphan check, a "
            "duplicate label or a chapter that does not execute; False turns these into "
            "warnings (for drafting).",
            "rebuild": "",
        },
    )
    execute: bool = dc.field(
        default=True,
        metadata={
            "help": "Execute cache-missing chapters in parallel before Sphinx reads them "
            "(into MyST-NB's jupyter-cache). Off when nb_execution_mode is 'off'.",
            "rebuild": "",
        },
    )
    jobs: int = dc.field(
        default=0,
        metadata={"help": "Kernels to run at once; 0 means one per available core.", "rebuild": ""},
    )
    kernels_per_gpu: int = dc.field(
        default=1,
        metadata={
            "help": "On a machine with GPUs, how many chapters' kernels may share one device "
            "at once; each kernel sees only its device (CUDA_VISIBLE_DEVICES). The "
            "environment variable CHAPTERS_KERNELS_PER_GPU overrides it.",
            "rebuild": "",
        },
    )
    warm_kernels: bool = dc.field(
        default=True,
        metadata={
            "help": "Fork each chapter's kernel from a server that has imported the book's "
            "heavy modules once (Linux); every chapter still gets its own fresh process. The "
            "environment variable CHAPTERS_WARM_KERNELS=0 (or =1) overrides it.",
            "rebuild": "",
        },
    )
    warm_preload: list = dc.field(
        default_factory=list,
        metadata={
            "help": "Modules the fork server imports before it forks; empty means every "
            "module the chapters' first code cells import (e.g. torch, matplotlib.pyplot, "
            "chapters_support.checks).",
            "rebuild": "",
        },
    )
    require_cache: bool = dc.field(
        default=False,
        metadata={
            "help": "Fail if any chapter would have to execute (publish jobs); also set by "
            "the environment variable CHAPTERS_REQUIRE_CACHE=1.",
            "rebuild": "",
        },
    )
    tolerance_ceiling: dict = dc.field(
        default_factory=dict,
        metadata={
            "help": "Per dtype {rtol, atol}: a check looser than this needs reason=. Read by "
            "the checks in the kernel from _config.yml (sphinx.config).",
            "rebuild": "",
        },
    )
    confidence_ceiling: float = dc.field(
        default=0.9999,
        metadata={
            "help": "Highest confidence a statistical check may use without reason=.",
            "rebuild": "",
        },
    )
    min_step_coverage: float = dc.field(
        default=0.0,
        metadata={
            "help": "Fail the build when fewer than this fraction of the book's claims (every "
            "relation of every derivation, display and inline) PASS their step check; raise it "
            "as chapters are bound, so coverage only goes up.",
            "rebuild": "",
        },
    )
    status_json: str = dc.field(
        default="derivations.json",
        metadata={
            "help": "File name of the machine-readable report in the HTML output.",
            "rebuild": "",
        },
    )
    offline: bool = dc.field(
        default=True,
        metadata={
            "help": "Serve MathJax from the site itself and leave out thebe, so that no page "
            "loads a script, style or font from another host.",
            "rebuild": "html",
        },
    )
    version: str = dc.field(
        default="",
        metadata={
            "help": "The version this build is published as (``chapters publish`` sets it): "
            "every page then shows the version switcher, a link to this version's PDF and an "
            "Open in Colab link; it is also Sphinx's release (title page) when that is unset.",
            "rebuild": "html",
        },
    )
    switcher_json: str = dc.field(
        default="../versions.json",
        metadata={
            "help": "URL of the version switcher's JSON, relative to the root of a version "
            "(``chapters publish`` writes it beside the version folders).",
            "rebuild": "html",
        },
    )
    editions: dict[str, str] = dc.field(
        default_factory=dict,
        metadata={
            "help": "The book's other editions, as language: the URL of that edition's root "
            "relative to this edition's root (``chapters build`` and ``chapters publish`` set "
            "it, e.g. ``{zh_CN: zh/}``): every page links to the same page in each.",
            "rebuild": "html",
        },
    )
    install_spec: str = dc.field(
        default="",
        metadata={
            "help": "What the first cell of a published chapter notebook installs with pip, "
            "outside the course's repository; empty means this repository "
            "(``repository.url``) at the commit that built the page.",
            "rebuild": "html",
        },
    )
    site_branch: str = dc.field(
        default="gh-pages",
        metadata={
            "help": "Branch of ``repository.url`` that holds the published site, one folder "
            "per version: Colab opens a chapter's executed notebook from there.",
            "rebuild": "html",
        },
    )


def register(app: Any) -> None:
    for f in dc.fields(ChaptersConfig):
        default = f.default_factory() if f.default_factory is not dc.MISSING else f.default
        app.add_config_value(f"chapters_{f.name}", default, f.metadata["rebuild"])


def options_table() -> str:
    """Every option as a Markdown table (the README's, which a test keeps equal to this):
    ``python -m chapters_support.sphinx_ext.config`` prints it."""
    rows = [
        "| option (`sphinx: config:` in `_config.yml`) | default | what it does |",
        "|---|---|---|",
    ]
    for f in dc.fields(ChaptersConfig):
        default = f.default_factory() if f.default_factory is not dc.MISSING else f.default
        shown = "`" + repr(default).replace("'", '"') + "`" if default != "" else '`""`'
        text = " ".join(str(f.metadata["help"]).replace("``", "`").replace("|", "\\|").split())
        rows.append(f"| `chapters_{f.name}` | {shown} | {text} |")
    return "\n".join(rows) + "\n"


def get(app: Any) -> ChaptersConfig:
    values = {f.name: getattr(app.config, f"chapters_{f.name}") for f in dc.fields(ChaptersConfig)}
    return ChaptersConfig(**values)


if __name__ == "__main__":
    print(options_table(), end="")
