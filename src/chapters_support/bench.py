"""``chapters bench``: how fast the book builds, measured in one run on this machine.

Every number is a wall time of a real ``jupyter-book build`` on a private copy of the book,
so the ratios compare builds that ran minutes apart on the same machine. Counts (kernels
started, chapters executed) come from the build logs, not from timings. The compute lower
bound comes from the cells' own execution times, which nbclient stamps into each executed
notebook and the executor keeps in each chapter's cache record.
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
from chapters_support.execution.warm import WARM_ENV

# a ~5 % effect on a ~10 s build is inside one run's noise: take the best of several
OVERHEAD_REPEATS = 5
# a kernel's start is a fraction of a second: the best of a few one-chapter checks
STARTUP_REPEATS = 3
PLAIN = {WARM_ENV: "0"}
WARM = {WARM_ENV: "1"}


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

    @property
    def kernels_line(self) -> str:
        """Which kernels ran the chapters, as the extension logs it."""
        match = re.search(r"chapters: \S*((?:warm|plain) kernels[^;\n]*)", self.output)
        return match.group(1) if match else ""


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


def kernel_seconds(cache: Path) -> dict[str, float]:
    """From a cold build's cache: the seconds every chapter's cells ran, as the kernels stamped
    them (nbclient's ``record_timing``), and the seconds from each kernel's launch to the end
    of its first code cell (its imports): the work and the start-up."""
    from jupyter_cache import get_cache

    cells = startup = 0.0
    chapters = 0
    for record in get_cache(str(cache)).list_cache_records():
        data = record.data or {}
        cells += float(data.get("cell_seconds") or 0.0)
        startup += float(data.get("startup_seconds") or 0.0)
        chapters += 1
    return {"cells_s": cells, "startup_s": startup, "chapters": chapters}


def one_chapter_start(book: Path, chapter: str, cache: Path, env: dict[str, str]) -> dict[str, Any]:
    """``chapters check --force CHAPTER`` as an author runs it, best of a few: its wall time,
    its kernel's launch to the end of its first code cell (the imports: its first maths),
    and how much of that it waited for the fork server to finish importing, from the cache."""
    from jupyter_cache import get_cache

    best: dict[str, float] = {}
    for _ in range(STARTUP_REPEATS):
        start = time.perf_counter()
        proc = subprocess.run(
            [_chapters(), "check", "--force", "--cache", str(cache), "--book", str(book), chapter],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            cwd=book,
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"chapters check {chapter} failed:\n{proc.stdout[-3000:]}")
        [record] = [
            r for r in get_cache(str(cache)).list_cache_records() if Path(r.uri).stem == chapter
        ]
        data = record.data or {}
        run = {
            "wall_s": wall,
            "start_s": float(data["startup_seconds"]),
            "waited_s": float(data.get("waited_seconds") or 0.0),
        }
        run["kernel_s"] = run["start_s"] - run["waited_s"]
        if not best or run["start_s"] < best["start_s"]:
            best = run
    return best


def _chapters() -> str:
    local = Path(sys.executable).with_name("chapters")
    return str(local) if local.exists() else "chapters"


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

        jobs = default_jobs()
        log("1/6 cold build, serial (1 kernel at a time, plain kernels)")
        serial = copy_book(book, work / "serial")
        set_config(serial, with_jobs(1))
        cold_serial = run_build(serial, env=PLAIN)
        log(f"    {cold_serial.seconds:.1f} s, {cold_serial.kernels} kernels")
        log(f"1/6 cold build, parallel ({jobs} kernels), plain kernels")
        plain_kernels = copy_book(book, work / "plain-kernels")
        cold_parallel = run_build(plain_kernels, env=PLAIN)
        log(f"    {cold_parallel.seconds:.1f} s, {cold_parallel.kernels} kernels")
        log(f"1/6 cold build, parallel ({jobs} kernels), warm kernels")
        main = copy_book(book, work / "main")
        cold_warm = run_build(main, env=WARM)
        log(f"    {cold_warm.seconds:.1f} s, {cold_warm.kernels} kernels")
        for build in (cold_serial, cold_parallel, cold_warm):
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
        warm_cost = kernel_seconds(main / "_build" / ".jupyter_cache")
        plain_cost = kernel_seconds(plain_kernels / "_build" / ".jupyter_cache")
        # the compute lower bound: the cells' own work, every core busy, no start-up at all
        # (a warm kernel's cells exclude the imports, which a plain kernel's first cell pays)
        bound = warm_cost["cells_s"] / jobs
        results["warm"] = {
            "kernels": cold_warm.kernels_line,
            "plain_kernels": cold_parallel.kernels_line,
            "execute_s": cold_warm.execute_seconds,
            "build_s": cold_warm.seconds,
            "chapters_executed": cold_warm.kernels,
            "speedup_vs_plain": cold_parallel.execute_seconds / cold_warm.execute_seconds,
            "speedup_vs_serial": cold_serial.execute_seconds / cold_warm.execute_seconds,
            "cells_s": warm_cost["cells_s"],
            "startup_s": warm_cost["startup_s"],
            "plain_cells_s": plain_cost["cells_s"],
            "plain_startup_s": plain_cost["startup_s"],
            "bound_s": bound,
            "ratio_to_bound": cold_warm.execute_seconds / bound if bound else float("inf"),
            "plain_ratio_to_bound": cold_parallel.execute_seconds / bound
            if bound
            else float("inf"),
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

        log("2/6 no-change rebuild, and a plain Jupyter Book build with execution off")
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

        log("3/6 markdown-only edit, then a code edit, of one chapter")
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

        log("4/6 one chapter checked (chapters check --force), warm and plain kernels")
        results["startup"] = {
            "chapter": target.stem,
            "warm": one_chapter_start(main, target.stem, work / "one-warm", WARM),
            "plain": one_chapter_start(main, target.stem, work / "one-plain", PLAIN),
        }

        log("5/6 extension overhead: the same cached book with and without the extension")
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
            log("6/6 PDF from the warm cache")
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
    warm, startup = results["warm"], results["startup"]
    return [
        {
            "target": "cold execute (execution phase) speedup >= 1.7x",
            "value": f"{cold['speedup']:.2f}x",
            "met": cold["speedup"] >= 1.7,
        },
        {
            "target": "warm kernels: cold execute >= 1.8x faster than plain kernels",
            "value": f"{warm['speedup_vs_plain']:.2f}x",
            "met": warm["speedup_vs_plain"] >= 1.8,
        },
        {
            "target": "warm kernels: cold execute >= 2x faster than serial",
            "value": f"{warm['speedup_vs_serial']:.2f}x",
            "met": warm["speedup_vs_serial"] >= 2.0,
        },
        {
            "target": "warm kernels: cold execute <= 1.3x the compute lower bound",
            "value": f"{warm['ratio_to_bound']:.2f}x",
            "met": warm["ratio_to_bound"] <= 1.3,
        },
        {
            "target": "one chapter checked: a forked kernel's start to its first maths <= 0.2 s",
            "value": f"{startup['warm']['kernel_s']:.2f} s",
            "met": startup["warm"]["kernel_s"] <= 0.2,
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
    ext, warm, startup = results["extension_overhead"], results["warm"], results["startup"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}, "
        f"Python {m['python']}, {m['platform']}.",
        "",
        "| measurement | result |",
        "|---|---|",
        f"| cold execute, serial (1 plain kernel) | {cold['serial_execute_s']:.1f} s "
        f"(whole build {cold['serial_s']:.1f} s) |",
        f"| cold execute, parallel ({results['jobs']} plain kernels) | "
        f"{cold['parallel_execute_s']:.1f} s: "
        f"**{cold['speedup']:.2f}×** faster, {cold['chapters_executed']} chapters "
        f"(whole build {cold['parallel_s']:.1f} s, {cold['build_speedup']:.2f}×) |",
        f"| cold execute, parallel, warm kernels | {warm['execute_s']:.1f} s: "
        f"**{warm['speedup_vs_plain']:.2f}×** plain kernels, "
        f"**{warm['speedup_vs_serial']:.2f}×** serial, {warm['chapters_executed']} chapters "
        f"(whole build {warm['build_s']:.1f} s); {warm['kernels']} |",
        f"| compute lower bound | {warm['bound_s']:.1f} s: the cells' own "
        f"{warm['cells_s']:.1f} s on {results['jobs']} cores (kernels' start-up to their "
        f"first maths: {warm['startup_s']:.1f} s in all); cold execute / bound: "
        f"**{warm['ratio_to_bound']:.2f}×** warm, {warm['plain_ratio_to_bound']:.2f}× plain "
        f"(whose cells ran {warm['plain_cells_s']:.1f} s, imports included, start-up "
        f"{warm['plain_startup_s']:.1f} s) |",
        f"| one chapter checked (`chapters check --force {startup['chapter']}`, best of "
        f"{STARTUP_REPEATS}) | kernel launch to first maths "
        f"{startup['warm']['start_s']:.2f} s warm, of which {startup['warm']['waited_s']:.2f} s "
        f"waiting for the fork server's imports and **{startup['warm']['kernel_s']:.2f} s** the "
        f"forked kernel's own start; {startup['plain']['start_s']:.2f} s plain; whole command "
        f"{startup['warm']['wall_s']:.1f} s warm, {startup['plain']['wall_s']:.1f} s plain |",
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
