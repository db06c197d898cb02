"""The real book: every chapter executes and every derivation passes, as the reader sees it;
and the GPU-runner path (shards -> merged cache -> require-cache build) gives the same book."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_jupyter_book

from chapters_support.cli import main
from chapters_support.execution.warm import WARM_ENV
from chapters_support.result import MIME_TYPE

pytestmark = pytest.mark.slow


def badges(built) -> list[tuple[str, str, str]]:
    """(chapter, derivation id, badge text) for every derivation of every chapter page."""
    found = []
    for chapter in built.report()["chapters"]:
        for box in built.page(chapter["chapter"]).select(".chapters-derivation"):
            badge = box.select_one(".chapters-derivation-title .chapters-badge")
            found.append((chapter["chapter"], box["id"], badge.get_text() if badge else "none"))
    return found


@pytest.fixture(scope="module")
def plain_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("plain") / "book"
    shutil.copytree(REPO / "book", root, ignore=shutil.ignore_patterns("_build"))
    return run_jupyter_book(root)


@pytest.fixture(scope="module")
def cold_build(tmp_path_factory):
    """The book built with warm kernels turned off: every chapter in a freshly started kernel."""
    root = tmp_path_factory.mktemp("cold") / "book"
    shutil.copytree(REPO / "book", root, ignore=shutil.ignore_patterns("_build"))
    return run_jupyter_book(root, env={WARM_ENV: "0"})


def without_timings(value):
    """A report or a check result without what a clock measured."""
    if isinstance(value, dict):
        return {
            k: without_timings(v)
            for k, v in value.items()
            # and a digest of a tensor's bits (chapters mutate's fingerprint), which rounding
            # changes as it changes the last bits
            if k not in {"seconds", "execution_seconds", "generated", "derived_digest"}
        }
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def check_of(output) -> dict | None:
    payload = output.get("data", {}).get(MIME_TYPE)
    if isinstance(payload, str):  # nbformat may store a JSON MIME type as text
        payload = json.loads(payload)
    return without_timings(payload)


def cached_outputs(built) -> dict[str, list]:
    """Per chapter file, per code cell: each output's type and MIME types, and every check
    result (the MIME bundle the badges are made from) without its timing. A cell's printed
    text is one stream however the kernel's writes were split into messages."""
    from jupyter_cache import get_cache

    cache = get_cache(built.root / "_build" / ".jupyter_cache")
    found = {}
    for record in cache.list_cache_records():
        cells = []
        for cell in cache.get_cache_bundle(record.pk).nb.cells:
            if cell.cell_type != "code":
                continue
            outputs: list[list] = []
            for o in cell.get("outputs", []):
                if o["output_type"] == "stream":
                    entry = ["stream", o["name"]]
                else:
                    entry = [o["output_type"], sorted(o.get("data", {})), check_of(o)]
                if not outputs or entry != outputs[-1] or entry[0] != "stream":
                    outputs.append(entry)
            cells.append(outputs)
        found[Path(record.uri).name] = cells
    return found


def test_the_book_builds_and_every_derivation_passes(plain_build):
    built = plain_build
    assert built.returncode == 0, built.output[-6000:]
    # its chapters ran in warm kernels, forked from one server that imported the book's modules
    assert "warm kernels, forked from a server that imported" in built.output
    report = built.report()
    totals = report["totals"]
    assert totals["fail"] == 0 and totals["unverified"] == 0
    assert totals["pass"] == totals["total"] >= 70
    assert len(report["chapters"]) >= 19
    assert all(c["failure"] is None for c in report["chapters"])
    assert not report["problems"]
    # every derivation box in every chapter carries a PASS badge beside its title
    for chapter in report["chapters"]:
        page = built.page(chapter["chapter"])
        boxes = page.select(".chapters-derivation")
        assert len(boxes) == chapter["derivations"] > 0, chapter["chapter"]
        assert all(b.select_one(".chapters-derivation-title .chapters-badge--pass") for b in boxes)
    status = built.page("status").select_one(".chapters-status-summary").get_text(" ", strip=True)
    assert re.fullmatch(
        rf"{totals['total']} derivations in \d+ chapters: {totals['total']} pass, 0 fail, 0 unverified\.",
        status,
    )
    # what the reader reads is what is checked: every derivation is bound to a step check, no
    # step fails, and the book-wide figures meet the targets of the step checker
    steps = report["steps"]
    assert steps["bound"] == steps["derivations"] == totals["total"]
    failing = [
        (r["label"], s["step"])
        for r in report["derivations"]
        for s in r["step_results"]
        if s["status"] == "fail"
    ]
    assert not failing, failing
    assert steps["display"]["coverage"] >= 0.65, steps["display"]
    assert steps["inline"]["coverage"] >= 0.50, steps["inline"]
    # the final formula is compared with the check's own reference (torch's function, autograd)
    # in 93 derivations; the others end in an expectation, a count or a bound (issue 10)
    assert steps["final_checked"] >= 93, steps["final_checked"]
    assert all(c["steps"]["claims"] > 0 for c in report["chapters"] if c["derivations"])
    coverage = (
        built.page("status").select_one(".chapters-status-coverage").get_text(" ", strip=True)
    )
    assert coverage.startswith(f"Steps: {steps['pass']}/{steps['claims']}")
    # every chapter ran within the course's budget of 60 s on this machine
    slow = [
        (c["chapter"], c["execution_seconds"])
        for c in report["chapters"]
        if c["execution_seconds"] > 60
    ]
    assert not slow, slow
    # a clean build: no warnings at all
    warnings = [line for line in built.output.splitlines() if "WARNING" in line]
    assert not warnings, warnings


NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def differences(a, b, where: str = "") -> list[str]:
    """Where two reports differ. Numbers are the same when they agree to rounding: a float's
    last bits depend on how the vector units meet the memory they add up, from run to run of
    the same kernel; another seed, thread count or code path changes them by far more."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{where}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        close = math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)
        if where.endswith("ratio") and not close:
            # an error over its tolerance: a residual that is zero in exact arithmetic
            # (5e-14 against 8e-14 over atol 1e-12) moves it by far more than its error
            # moves; the errors themselves are compared above, the verdict is what it decides
            close = math.isclose(a, b, abs_tol=1e-4) or max(a, b) < 0.5
        return [] if close else [f"{where}: {a!r} vs {b!r}"]
    if isinstance(a, str) and isinstance(b, str) and a != b:
        # a number written into a message ("smallest margin -3.6e-16") is rounding too
        words_a, words_b = NUMBER.split(a), NUMBER.split(b)
        numbers_a, numbers_b = NUMBER.findall(a), NUMBER.findall(b)
        if words_a == words_b and len(numbers_a) == len(numbers_b):
            # printed to two digits, of errors computed in float32 too: rounding is 1e-7
            return [
                f"{where}: {a!r} vs {b!r}"
                for x, y in zip(numbers_a, numbers_b, strict=True)
                if not math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-6)
            ][:1]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def test_warm_and_cold_kernels_give_the_same_book(plain_build, cold_build):
    """Every check result, step verdict, error and figure of the real book is the same whether
    its chapters ran in forked warm kernels (the default) or in freshly started ones."""
    assert cold_build.returncode == 0, cold_build.output[-6000:]
    assert "plain kernels: warm kernels turned off by CHAPTERS_WARM_KERNELS=0" in cold_build.output
    warm, cold = plain_build.report(), cold_build.report()
    assert warm["totals"] == cold["totals"] and warm["totals"]["fail"] == 0
    assert len(warm["derivations"]) == len(cold["derivations"]) >= 126
    for key in ("derivations", "chapters", "steps"):
        assert not differences(without_timings(warm[key]), without_timings(cold[key]), key)
    outputs = cached_outputs(plain_build)
    assert len(outputs) >= 19
    assert not differences(outputs, cached_outputs(cold_build))
    figures = sum(
        1 for cells in outputs.values() for cell in cells for o in cell if "image/png" in o[1]
    )
    assert figures > 0
    assert badges(plain_build) == badges(cold_build)


def test_differences_see_more_than_rounding():
    assert not differences(
        {"e": [1e-16, 0.5], "ratio": 2.9e-7}, {"e": [2e-16, 0.5], "ratio": 2.3e-7}
    )
    assert differences({"e": 0.0012}, {"e": 0.0013}) == [".e: 0.0012 vs 0.0013"]
    assert not differences({"ratio": 0.053}, {"ratio": 0.080})  # both far from the verdict's 1
    assert differences({"ratio": 0.4}, {"ratio": 0.9}) == [".ratio: 0.4 vs 0.9"]
    assert differences({"s": "pass"}, {"s": "fail"}) == [".s: 'pass' vs 'fail'"]
    assert differences([1, 2], [1]) == [": 2 vs 1 items"]
    assert not differences({"d": "smallest margin -3.57e-16"}, {"d": "smallest margin -7.18e-16"})
    assert differences({"d": "margin 0.0921"}, {"d": "margin 0.0925"}) == [
        ".d: 'margin 0.0921' vs 'margin 0.0925'"
    ]
    assert differences({"d": "steps 9/10 pass"}, {"d": "steps 8/10 pass"})


def test_three_shards_merged_give_the_same_book_without_executing(plain_build, tmp_path):
    root = tmp_path / "book"
    shutil.copytree(REPO / "book", root, ignore=shutil.ignore_patterns("_build"))
    shards = []
    for index in (1, 2, 3):
        cache = tmp_path / f"shard-{index}"
        assert (
            main(["execute", "--book", str(root), "--shard", f"{index}/3", "--cache", str(cache)])
            == 0
        )
        shards.append(str(cache))
    merged = root / "_build" / ".jupyter_cache"
    assert main(["cache", "merge", *shards, "--into", str(merged)]) == 0

    built = run_jupyter_book(root, env={"CHAPTERS_REQUIRE_CACHE": "1"})
    assert built.returncode == 0, built.output[-6000:]
    assert "executing" not in built.output
    assert "nothing executed" in built.output
    assert badges(built) == badges(plain_build)
    assert built.report()["totals"] == plain_build.report()["totals"]


def test_a_wrong_coefficient_in_any_chapters_maths_fails_the_build(plain_build, tmp_path):
    """Done means: change one coefficient in a displayed formula of any chapter, code left
    alone, and the build fails naming that derivation and step. One display step per chapter is
    changed (its right side doubled), and only those chapters execute again."""
    root = tmp_path / "book"
    shutil.copytree(REPO / "book", root, ignore=shutil.ignore_patterns("_build"))
    shutil.copytree(
        plain_build.root / "_build" / ".jupyter_cache", root / "_build" / ".jupyter_cache"
    )
    changed: dict[str, str] = {}
    for row in plain_build.report()["derivations"]:
        if row["chapter"] in changed.values():
            continue
        step = next(
            (
                s
                for s in row["step_results"]
                if s["status"] == "pass"
                and s["display"]
                and s["rel"] == "="
                and s["max_abs_err"] is not None
                and s["rhs"] not in {"0", r"\mathbf{0}"}
            ),
            None,
        )
        if step is None:
            continue
        source = root / row["source"]
        text = source.read_text(encoding="utf-8")
        maths = step["maths"]
        rhs_at = maths.find(step["rhs"].split()[0])
        if text.count(maths) != 1 or rhs_at < 0:
            continue
        wrong = maths[:rhs_at] + "3\\," + maths[rhs_at:]  # the right side tripled
        source.write_text(text.replace(maths, wrong), encoding="utf-8")
        changed[row["label"]] = row["chapter"]
    assert len(set(changed.values())) >= 15
    built = run_jupyter_book(root)
    assert built.returncode != 0
    executed = set(re.findall(r"executing (\S+) \(the maths of", built.output))
    assert executed == set(changed.values())
    for label in changed:
        assert re.search(rf"derivation '{re.escape(label)}' step \d+ of \d+ FAILS", built.output), (
            label
        )


def test_the_chinese_edition_shows_what_the_english_one_verified(plain_build, monkeypatch):
    """Issue 13 on the real book: the Chinese edition, built from the English build's cache in
    require-cache mode (so not one chapter may execute), has every chapter translated and
    shows every code cell, output, displayed and inline formula and verdict of the English
    page, byte for byte."""
    from bs4 import BeautifulSoup
    from test_i18n import shared_parts

    root = plain_build.root
    cache = root / "_build" / ".jupyter_cache" / "executed"
    records = sorted(p.name for p in cache.iterdir())
    monkeypatch.setenv("CHAPTERS_REQUIRE_CACHE", "1")
    assert main(["build", "--book", str(root), "--language", "zh_CN"]) == 0
    assert sorted(p.name for p in cache.iterdir()) == records
    zh_html = root / "_build" / "zh_CN" / "_build" / "html"
    chapters = [c["chapter"] for c in plain_build.report()["chapters"]]
    assert len(chapters) == 19
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for chapter in chapters:
        en = plain_build.page(chapter)
        zh = BeautifulSoup((zh_html / f"{chapter}.html").read_text("utf-8"), "html.parser")
        assert zh.html["lang"] == "zh-CN"
        assert cjk.search(zh.select_one("h1").get_text()), chapter
        assert not zh.select(".chapters-i18n-stale"), chapter
        assert shared_parts(zh) == shared_parts(en), chapter
        # inline maths: the same formulas (a line break of the source is a space in TeX)
        inline = sorted(" ".join(m.get_text().split()) for m in en.select("span.math"))
        assert sorted(" ".join(m.get_text().split()) for m in zh.select("span.math")) == inline
    # the sidebar's parts, from _toc.yml's captions, in Chinese too
    sidebar = BeautifulSoup((zh_html / "intro.html").read_text("utf-8"), "html.parser")
    captions = [c.get_text(strip=True) for c in sidebar.select("nav .caption-text")]
    assert "网络架构" in captions and not any(c == "Architectures" for c in captions), captions
    report = json.loads((zh_html / "derivations.json").read_text("utf-8"))
    assert report["totals"] == plain_build.report()["totals"]
    assert report["steps"] == plain_build.report()["steps"]
