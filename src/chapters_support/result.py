"""The check result: the one record that crosses from a chapter's kernel to the book.

Both sides import this module and nothing else of each other: the checks (torch, in the
kernel) build a :class:`CheckResult` and display it as a MIME bundle; the Sphinx extension
reads the JSON back out of the cached cell output. It imports neither torch nor Sphinx.
"""

from __future__ import annotations

import dataclasses
import html
import json
from dataclasses import dataclass, field
from typing import Any

MIME_TYPE = "application/vnd.chapters-support.check+json"
# the chapter file a kernel executes, set by the runner: step checks read their maths there
SOURCE_ENV = "CHAPTERS_SOURCE"
SCHEMA_VERSION = 1

PASS = "pass"
FAIL = "fail"
UNVERIFIED = "unverified"
STATUSES = (PASS, FAIL, UNVERIFIED)


@dataclass
class CheckResult:
    """What one call of a check found; JSON-serialisable by construction."""

    label: str
    kind: str  # "gradient" | "close" | "statistic" | "bound" | "steps"
    status: str  # PASS | FAIL
    message: str
    dtype: str
    device: str
    seconds: float
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    atol: float | None = None
    rtol: float | None = None
    # max over elements of |derived - reference| / (atol + rtol |reference|): <= 1 passes
    ratio: float | None = None
    reason: str | None = None
    # one entry per compared tensor (gradient name, dict key, or statistic)
    items: list[dict[str, Any]] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    # a steps check: the digest of the derivation's maths it read (a stale cache shows)
    digest: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def passed(self) -> bool:
        return self.status == PASS

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CheckResult:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.to_bundle()

    def _ipython_display_(self) -> None:
        # A check displays its result itself; when the same result is also a cell's last
        # expression, IPython would show it twice.
        if getattr(self, "_shown", False):
            return
        from IPython.display import display

        object.__setattr__(self, "_shown", True)
        display(self.to_bundle(), raw=True)

    # -- the display bundle -------------------------------------------------------------

    def summary(self) -> str:
        """One line a reader can act on: status, label, errors against tolerances."""
        return f"{self.status.upper()} {self.label}: {self.message}"

    def to_bundle(self) -> dict[str, Any]:
        """The one display bundle: our JSON for the book, and fallbacks for everyone else."""
        return {
            MIME_TYPE: self.to_json(),
            "text/plain": self._text(),
            "text/html": self.html(),
            "text/latex": self._latex(),
        }

    def _text(self) -> str:
        lines = [self.summary(), f"  {self.dtype} on {self.device}, {format_seconds(self.seconds)}"]
        if self.reason:
            lines.append(f"  tolerance reason: {self.reason}")
        return "\n".join(lines)

    def html(self) -> str:
        """The result as the page shows it (the bundle's ``text/html``)."""
        status = html.escape(self.status.upper())
        return (
            f'<div class="chapters-check chapters-check--{html.escape(self.status)}">'
            f'<span class="chapters-badge chapters-badge--{html.escape(self.status)}">'
            f"{status}</span> "
            f"<code>{html.escape(self.label)}</code>: {html.escape(self.message)} "
            f'<span class="chapters-check-meta">({html.escape(self.dtype)}, '
            f"{html.escape(self.device)}, {html.escape(format_seconds(self.seconds))})</span></div>"
        )

    def _latex(self) -> str:
        return (
            rf"\textbf{{{self.status.upper()}}} \texttt{{{latex_escape(self.label)}}}: "
            f"{latex_escape(self.message)}"
        )


# the verdict of one step of a derivation (check_steps): the claims are those that assert
# something; a definition or a condition is listed but never counted
STEP_PASS = "pass"
STEP_FAIL = "fail"
STEP_DEFINES = "defines"
STEP_CONDITION = "condition"
STEP_UNSUPPORTED = "unsupported"
STEP_UNBOUND = "unbound"
STEP_EXCLUDED = "excluded"
CLAIM_STATUSES = (STEP_PASS, STEP_FAIL, STEP_UNSUPPORTED, STEP_UNBOUND, STEP_EXCLUDED)


def summarize_steps(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a steps result's items: claims and passes, display and inline apart."""
    out: dict[str, Any] = {k: 0 for k in CLAIM_STATUSES}
    out.update(defines=0, conditions=0, claims=0, steps=len(items), first_fail=None)
    out["display"] = {"claims": 0, "pass": 0}
    out["inline"] = {"claims": 0, "pass": 0}
    for item in items:
        status = item.get("status")
        if status == STEP_DEFINES:
            out["defines"] += 1
        elif status == STEP_CONDITION:
            out["conditions"] += 1
        elif status in CLAIM_STATUSES:
            out[status] += 1
            out["claims"] += 1
            where = out["display" if item.get("display") else "inline"]
            where["claims"] += 1
            if status == STEP_PASS:
                where["pass"] += 1
            if status == STEP_FAIL and out["first_fail"] is None:
                out["first_fail"] = item.get("step")
    return out


def format_seconds(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def format_error(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1e}"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "≤": r"$\le$",
    "≥": r"$\ge$",
    "±": r"$\pm$",
    "µ": r"$\mu$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def results_from_outputs(outputs: list[dict[str, Any]]) -> list[CheckResult]:
    """Every check result in a list of notebook cell outputs (the executed notebook)."""
    found = []
    for output in outputs:
        data = output.get("data") or {}
        if MIME_TYPE in data:
            payload = data[MIME_TYPE]
            if isinstance(payload, str):  # nbformat may store JSON MIME types as text
                payload = json.loads(payload)
            found.append(CheckResult.from_json(payload))
    return found
