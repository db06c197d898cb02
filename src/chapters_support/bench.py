"""``chapters bench``: how fast the book builds, measured in one run on this machine.

Every number is a wall time of a real ``jupyter-book build`` on a private copy of the book,
so the ratios compare builds that ran minutes apart on the same machine. Counts (kernels
started, chapters executed) come from the build logs, not from timings.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chapters_support.execution.runner import default_jobs

# a ~5 % effect on a ~10 s build is inside one run's noise: take the best of several
OVERHEAD_REPEATS = 5


@dataclass
class Build:
    seconds: float
    returncode: int
    executed: list[str]
    output: str = field(repr=False)

    @property
    def kernels(self) -> int:
        return len(self.executed)

    @property
    def execute_seconds(self) -> float:
        """Wall time of the execution phase alone, as the extension logs it."""
        match = re.search(
            r"chapter\(s\) with \d+ kernel\(s\) in parallel in ([\d.]+) s", self.output
        )
        if match is None:
            raise RuntimeError("the build did not log its execution phase:\n" + self.output[-2000:])
        return float(match.group(1))


def jupyter_book() -> str:
    local = Path(sys.executable).with_name("jupyter-book")
    return str(local) if local.exists() else "jupyter-book"


def run_build(root: Path, *args: str, env: dict[str, str] | None = None) -> Build:
    start = time.perf_counter()
    proc = subprocess.run(
        [jupyter_book(), "build", str(root), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=root,
    )
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    # our executor logs each kernel it starts; MyST-NB logs the ones it would start itself
    executed = re.findall(r"chapters: \S*executing (\S+) \(", output)
    executed += re.findall(r"(\S+\.md): Executing notebook using", output)
    return Build(seconds, proc.returncode, executed, output)


def copy_book(source: Path, target: Path, *, cache_from: Path | None = None) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("_build"))
    if cache_from is not None:
        shutil.copytree(cache_from, target / "_build" / ".jupyter_cache")
    return target


def set_config(root: Path, edit: Callable[[str], str]) -> None:
    config = root / "_config.yml"
    config.write_text(edit(config.read_text(encoding="utf-8")), encoding="utf-8")


def without_extension(text: str) -> str:
    """The same _config.yml without our extension (block or inline YAML list)."""
    edited = re.sub(r"^\s*- chapters_support\.sphinx_ext\s*\n", "", text, flags=re.M)
    edited = re.sub(r"\[\s*chapters_support\.sphinx_ext\s*\]", "[]", edited)
    # a block list left empty would read as null
    edited = re.sub(r"^(\s*extra_extensions:)[ \t]*\n(?!\s*- )", r"\1 []\n", edited, flags=re.M)
    if edited == text:
        raise ValueError("the book's _config.yml does not list chapters_support.sphinx_ext")
    return edited


def as_plain_book(root: Path) -> None:
    """The same book for stock Jupyter Book: our extension off, each ``{derivation}`` an
    ``{admonition}`` with the same title, label and body, so both render the same content."""
    set_config(root, without_extension)
    for chapter in root.rglob("*.md"):
        text = chapter.read_text(encoding="utf-8")
        plain = re.sub(
            r"^(`{3,}|:{3,})\{derivation\}[ \t]*(.*)\n:label:[ \t]*(\S+)[ \t]*\n",
            lambda m: (
                f"{m.group(1)}{{admonition}} {m.group(2) or 'Derivation'}\n:name: {m.group(3)}\n"
            ),
            text,
            flags=re.M,
        )
        plain = re.sub(r"^(`{3,}|:{3,})\{derivation-status\}[ \t]*\n\1\n", "", plain, flags=re.M)
        if plain != text:
            chapter.write_text(plain, encoding="utf-8")


def with_jobs(jobs: int) -> Callable[[str], str]:
    def edit(text: str) -> str:
        return text.replace("  config:\n", f"  config:\n    chapters_jobs: {jobs}\n", 1)

    return edit


def edit_first_markdown_paragraph(chapter: Path) -> None:
    text = chapter.read_text(encoding="utf-8")
    heading = re.search(r"^# .+$", text, flags=re.M)
    if heading is None:
        raise ValueError(f"{chapter}: no title to edit after")
    at = heading.end()
    chapter.write_text(text[:at] + "\n\nAn edited sentence.\n" + text[at:], encoding="utf-8")


def edit_first_code_cell(chapter: Path) -> None:
    text = chapter.read_text(encoding="utf-8")
    marker = "```{code-cell} ipython3\n"
    if marker not in text:
        raise ValueError(f"{chapter}: no code cell to edit")
    chapter.write_text(text.replace(marker, marker + "# edited\n", 1), encoding="utf-8")


def edit_first_derivation_maths(chapter: Path) -> None:
    """A maths-only edit (a thin space in a derivation's first display): no code changes."""
    text = chapter.read_text(encoding="utf-8")
    start = text.find("{derivation}")
    at = text.find("$$\n", start) if start >= 0 else -1
    if at < 0:
        raise ValueError(f"{chapter}: no displayed maths in a derivation to edit")
    at += 3
    chapter.write_text(text[:at] + "\\, " + text[at:], encoding="utf-8")


def step_check_seconds(cache: Path) -> dict[str, float]:
    """From a cold build's cache: the seconds the step checks took inside the kernels, and the
    seconds the chapters took to execute, both as the kernels measured them."""
    from jupyter_cache import get_cache

    from chapters_support.result import results_from_outputs

    steps = execution = 0.0
    count = 0
    db = get_cache(str(cache))
    for record in db.list_cache_records():
        execution += float((record.data or {}).get("execution_seconds") or 0.0)
        notebook = db.get_cache_bundle(record.pk).nb
        for cell in notebook.cells:
            for result in results_from_outputs(cell.get("outputs", [])):
                if result.kind == "steps":
                    steps += result.seconds
                    count += 1
    return {"steps_s": steps, "execution_s": execution, "checks": count}


def parse_seconds(book: Path) -> dict[str, float]:
    """Every display equation of the book's derivations, split and parsed (best of 3, each
    from scratch: a kernel remembers what it has read)."""
    from chapters_support.maths import extract
    from chapters_support.maths.parse import Unsupported, forget, steps

    texts = [
        m.text
        for chapter in sorted(book.glob("*.md"))
        for d in extract.derivations(chapter.read_text(encoding="utf-8"))
        for m in d.maths
        if m.display
    ]
    best = float("inf")
    for _ in range(3):
        forget()
        start = time.perf_counter()
        for text in texts:
            with contextlib.suppress(Unsupported):
                steps(text)
        best = min(best, time.perf_counter() - start)
    return {"seconds": best, "equations": len(texts)}


def machine() -> dict[str, Any]:
    from chapters_support.checks.device import device_name

    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        gpu = None
    return {
        "cpu": device_name(_cpu()),
        "cores": default_jobs(),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _cpu() -> Any:
    import torch

    return torch.device("cpu")


def run(book: Path, *, pdf: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement; returns the results (see ``to_markdown``)."""
    results: dict[str, Any] = {"machine": machine(), "jobs": default_jobs()}
    with tempfile.TemporaryDirectory(prefix="chapters-bench-") as tmp:
        work = Path(tmp)

        log("1/5 cold build, serial (1 kernel at a time)")
        serial = copy_book(book, work / "serial")
        set_config(serial, with_jobs(1))
        cold_serial = run_build(serial)
        log(f"    {cold_serial.seconds:.1f} s, {cold_serial.kernels} kernels")
        log(f"1/5 cold build, parallel ({default_jobs()} kernels)")
        main = copy_book(book, work / "main")
        cold_parallel = run_build(main)
        log(f"    {cold_parallel.seconds:.1f} s, {cold_parallel.kernels} kernels")
        for build in (cold_serial, cold_parallel):
            if build.returncode != 0:
                raise RuntimeError("the cold build failed:\n" + build.output[-3000:])
        results["cold"] = {
            "serial_s": cold_serial.seconds,
            "parallel_s": cold_parallel.seconds,
            "build_speedup": cold_serial.seconds / cold_parallel.seconds,
            "serial_execute_s": cold_serial.execute_seconds,
            "parallel_execute_s": cold_parallel.execute_seconds,
            "speedup": cold_serial.execute_seconds / cold_parallel.execute_seconds,
            "chapters_executed": cold_parallel.kernels,
        }
        cache = main / "_build" / ".jupyter_cache"
        cost = step_check_seconds(serial / "_build" / ".jupyter_cache")
        results["step_checks"] = {
            **cost,
            "share_of_execution": cost["steps_s"] / cost["execution_s"]
            if cost["execution_s"]
            else 0.0,
            "parse": parse_seconds(book),
        }

        log("2/5 no-change rebuild, and a plain Jupyter Book build with execution off")
        unchanged = run_build(main)
        plain = copy_book(book, work / "plain")
        as_plain_book(plain)
        set_config(plain, lambda t: t.replace("execute_notebooks: cache", "execute_notebooks: off"))
        plain_cold = run_build(plain)
        plain_unchanged = run_build(plain)
        results["no_change"] = {
            "seconds": unchanged.seconds,
            "kernels_started": unchanged.kernels,
            "plain_no_change_s": plain_unchanged.seconds,
            "plain_cold_render_s": plain_cold.seconds,
            "ratio_to_plain_no_change": unchanged.seconds / plain_unchanged.seconds,
            "ratio_to_plain_cold_render": unchanged.seconds / plain_cold.seconds,
        }

        log("3/5 markdown-only edit, then a code edit, of one chapter")
        chapters = sorted(p for p in main.glob("*.md") if "```{code-cell}" in p.read_text())
        target = chapters[len(chapters) // 2]
        edit_first_markdown_paragraph(target)
        markdown_edit = run_build(main)
        edit_first_code_cell(target)
        code_edit = run_build(main)
        stepped = [p for p in chapters if "check_steps(" in p.read_text(encoding="utf-8")]
        maths_target = stepped[len(stepped) // 2] if stepped else target
        edit_first_derivation_maths(maths_target)
        maths_edit = run_build(main)
        results["edits"] = {
            "chapter": target.stem,
            "markdown_edit_s": markdown_edit.seconds,
            "markdown_edit_executed": markdown_edit.kernels,
            "code_edit_s": code_edit.seconds,
            "code_edit_executed": code_edit.kernels,
            "code_edit_chapters": markdown_edit.executed + code_edit.executed,
            "maths_chapter": maths_target.stem,
            "maths_edit_s": maths_edit.seconds,
            "maths_edit_executed": maths_edit.kernels,
        }

        log("4/5 extension overhead: the same cached book with and without the extension")
        timings: dict[str, list[float]] = {"with": [], "without": []}
        for repeat in range(OVERHEAD_REPEATS):
            for variant in ("with", "without"):
                root = copy_book(book, work / f"{variant}-{repeat}", cache_from=cache)
                if variant == "without":
                    as_plain_book(root)
                build = run_build(root)
                if variant == "with" and build.kernels:
                    raise RuntimeError(
                        f"expected a fully cached build, it executed {build.executed}"
                    )
                timings[variant].append(build.seconds)
        best_with, best_without = min(timings["with"]), min(timings["without"])
        results["extension_overhead"] = {
            "with_s": best_with,
            "without_s": best_without,
            "overhead": best_with / best_without - 1,
            "runs": timings,
        }

        if pdf:
            log("5/5 PDF from the warm cache")
            pdf_build = run_build(main, "--builder", "pdflatex")
            results["pdf"] = {
                "seconds": pdf_build.seconds,
                "ok": pdf_build.returncode == 0,
                "kernels_started": pdf_build.kernels,
            }
    results["targets"] = targets(results)
    return results


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    cold, nochange = results["cold"], results["no_change"]
    edits, ext = results["edits"], results["extension_overhead"]
    return [
        {
            "target": "cold execute (execution phase) speedup >= 1.7x",
            "value": f"{cold['speedup']:.2f}x",
            "met": cold["speedup"] >= 1.7,
        },
        {
            "target": "no-change rebuild starts 0 kernels",
            "value": str(nochange["kernels_started"]),
            "met": nochange["kernels_started"] == 0,
        },
        {
            "target": "no-change rebuild <= 1.3x plain no-execution build",
            "value": f"{nochange['ratio_to_plain_no_change']:.2f}x",
            "met": nochange["ratio_to_plain_no_change"] <= 1.3,
        },
        {
            "target": "markdown-only edit executes 0 chapters",
            "value": str(edits["markdown_edit_executed"]),
            "met": edits["markdown_edit_executed"] == 0,
        },
        {
            "target": "code edit in one chapter executes exactly 1",
            "value": str(edits["code_edit_executed"]),
            "met": edits["code_edit_executed"] == 1,
        },
        {
            "target": "maths-only edit of a derivation executes exactly its chapter",
            "value": str(edits["maths_edit_executed"]),
            "met": edits["maths_edit_executed"] == 1,
        },
        {
            "target": "step checks <= 10 % of the cold execution",
            "value": f"{results['step_checks']['share_of_execution'] * 100:.1f} %",
            "met": results["step_checks"]["share_of_execution"] <= 0.10,
        },
        {
            "target": "extension overhead <= 5 %",
            "value": f"{ext['overhead'] * 100:+.1f} %",
            "met": ext["overhead"] <= 0.05,
        },
    ]


def to_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    cold, nochange, edits = results["cold"], results["no_change"], results["edits"]
    ext = results["extension_overhead"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}, "
        f"Python {m['python']}, {m['platform']}.",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| cold execute, serial (1 kernel) | {cold['serial_execute_s']:.1f} s "
        f"(whole build {cold['serial_s']:.1f} s) |",
        f"| cold execute, parallel ({results['jobs']} kernels) | "
        f"{cold['parallel_execute_s']:.1f} s: "
        f"**{cold['speedup']:.2f}×** faster, {cold['chapters_executed']} chapters "
        f"(whole build {cold['parallel_s']:.1f} s, {cold['build_speedup']:.2f}×) |",
        f"| no-change rebuild | {nochange['seconds']:.1f} s, "
        f"{nochange['kernels_started']} kernels; "
        f"{nochange['ratio_to_plain_no_change']:.2f}× a plain no-execution rebuild "
        f"({nochange['plain_no_change_s']:.1f} s), {nochange['ratio_to_plain_cold_render']:.2f}× a "
        f"plain cold render ({nochange['plain_cold_render_s']:.1f} s) |",
        f"| markdown-only edit (`{edits['chapter']}`) | {edits['markdown_edit_s']:.1f} s, "
        f"{edits['markdown_edit_executed']} chapters executed |",
        f"| code edit (`{edits['chapter']}`) | {edits['code_edit_s']:.1f} s, "
        f"{edits['code_edit_executed']} chapter executed |",
        f"| maths-only edit (`{edits['maths_chapter']}`) | {edits['maths_edit_s']:.1f} s, "
        f"{edits['maths_edit_executed']} chapter executed |",
        f"| step checks in the cold serial run | {results['step_checks']['steps_s']:.1f} s of "
        f"{results['step_checks']['execution_s']:.1f} s executing "
        f"({results['step_checks']['share_of_execution'] * 100:.1f} %), "
        f"{results['step_checks']['checks']} checks; all "
        f"{results['step_checks']['parse']['equations']} display equations parse in "
        f"{results['step_checks']['parse']['seconds']:.2f} s |",
        f"| extension overhead (cached book, best of {OVERHEAD_REPEATS}) | "
        f"{ext['with_s']:.1f} s vs "
        f"{ext['without_s']:.1f} s: {ext['overhead'] * 100:+.1f} % |",
    ]
    if "pdf" in results:
        pdf = results["pdf"]
        lines.append(
            f"| PDF from the warm cache | {pdf['seconds']:.1f} s"
            f"{'' if pdf['ok'] else ' (FAILED)'}, {pdf['kernels_started']} kernels |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['value']} | {'yes' if t['met'] else '**no**'} |"
        for t in results["targets"]
    ]
    return "\n".join(lines) + "\n"


def save(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
