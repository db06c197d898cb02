"""The `chapters` command, called as a function of its argv like a user types it."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from conftest import REPO

from chapters_support.book import BookError
from chapters_support.cli import main
from chapters_support.execution.shards import assign, parse_shard

pytestmark = pytest.mark.slow


def test_check_passes_and_prints_the_table(book_copy, capsys):
    root = book_copy("test-pass")
    assert main(["check", "--book", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"good\.md\s+│\s+sq-grad\s+│\s+PASS", out)
    assert (
        "2 derivations: 2 pass, 0 fail, 0 unverified; executed 1 chapter(s), 0 from the cache"
        in out
    )
    # the same cache the book uses: a second run executes nothing
    assert main(["check", "--book", str(root), "good"]) == 0
    assert "executed 0 chapter(s), 1 from the cache" in capsys.readouterr().out
    assert (root / "_build" / ".jupyter_cache" / "global.db").is_file()


def test_check_fails_with_the_problem(book_copy, capsys):
    root = book_copy("test-fail")
    assert main(["check", "--book", str(root)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert re.search(r"wrong\.md:\d+: derivation 'sq-grad' FAILS its check", out.replace("\n", " "))


def test_check_unknown_chapter_is_a_clear_error(book_copy, capsys):
    root = book_copy("test-pass")
    assert main(["check", "--book", str(root), "nope"]) == 1
    assert "no chapter 'nope'" in capsys.readouterr().err


def test_new_scaffolds_a_chapter_that_passes(book_copy, capsys):
    root = book_copy("test-pass")
    assert main(["new", "gradient-basics", "--title", "Gradient basics", "--book", str(root)]) == 0
    chapter = root / "gradient-basics.md"
    text = chapter.read_text()
    assert text.startswith("---\njupytext:") and "# Gradient basics" in text
    assert ":label: gradient-basics-square" in text
    toc = (root / "_toc.yml").read_text().splitlines()
    assert toc[-2:] == ["  - file: gradient-basics", "  - file: status"]  # status stays last
    capsys.readouterr()
    assert main(["check", "--book", str(root), "gradient-basics", "--steps"]) == 0
    out = capsys.readouterr().out
    assert "1 pass" in out
    # the scaffold's derivation is step-checked from the start: both steps of its chain pass
    assert "steps: 2/2 (100%) of the claims PASS — display 2/2 (100%), inline 0/0" in out
    assert out.count("PASS") >= 3  # the derivation, and both steps in the --steps table
    # refuses to overwrite, and refuses a bad slug
    assert main(["new", "gradient-basics", "--title", "Again", "--book", str(root)]) == 1
    assert main(["new", "Bad Slug", "--title", "x", "--book", str(root)]) == 2


def test_shards_are_balanced_and_deterministic():
    durations = {"a": 50, "b": 40, "c": 30, "d": 20, "e": 10}
    shards = assign(list("edcba"), durations, 2)
    assert shards == [["a", "d", "e"], ["b", "c"]]
    assert sorted(sum(shards, [])) == list("abcde")
    assert assign(list("abcde"), durations, 2) == shards
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(ValueError, match="1 <= I <= N"):
        parse_shard("4/3")


def test_execute_shards_then_merge_then_build_requires_nothing(book_copy, build, tmp_path, capsys):
    root = book_copy("test-pass")
    second = (
        (root / "good.md")
        .read_text()
        .replace("sq-grad", "sq-grad-b")
        .replace("normal-var", "normal-var-b")
    )
    (root / "other.md").write_text(second.replace("(good)=", "(other)="))
    toc = root / "_toc.yml"
    toc.write_text(toc.read_text().replace("  - file: status", "  - file: other\n  - file: status"))
    (root / "_durations.json").write_text(json.dumps({"seconds": {"good": 5, "other": 4}}))
    caches = []
    for index in (1, 2):
        cache = tmp_path / f"shard-{index}"
        assert (
            main(["execute", "--book", str(root), "--shard", f"{index}/2", "--cache", str(cache)])
            == 0
        )
        caches.append(cache)
    out = capsys.readouterr().out
    assert "shard 1/2: good" in out and "shard 2/2: other" in out
    merged = root / "_build" / ".jupyter_cache"
    assert main(["cache", "merge", *map(str, caches), "--into", str(merged)]) == 0
    assert "merged 2 notebook(s) from 2 cache(s)" in capsys.readouterr().out
    # the outputs travel as they were produced: pretend shard 2 ran on a GPU runner
    for notebook in merged.glob("executed/*/base.ipynb"):
        text = notebook.read_text()
        if "sq-grad-b" in text:
            text = text.replace('"device_type": "cpu"', '"device_type": "cuda"')
            text = re.sub(r'"device_name": "[^"]*"', '"device_name": "NVIDIA H100 80GB HBM3"', text)
            notebook.write_text(text)
    built = build(root, env={"CHAPTERS_REQUIRE_CACHE": "1"})
    assert built.returncode == 0, built.output
    assert "executing" not in built.output
    assert built.report()["totals"] == {"pass": 4, "fail": 0, "unverified": 0, "total": 4}
    environments = built.page("status").select_one(".chapters-status-environment").get_text(" ")
    assert "CUDA: NVIDIA H100 80GB HBM3" in environments and "CPU:" in environments
    # the GPU runner's results are marked as verified there, the others are this build's own
    marked = {
        r["label"]: r["verified_elsewhere"]
        for r in built.report()["derivations"]
        if r["verified_elsewhere"]
    }
    gpu = f"verified on torch {torch.__version__}, CUDA"
    assert marked == {"sq-grad-b": gpu, "normal-var-b": gpu}
    assert [m.get_text() for m in built.page("other").select(".chapters-elsewhere")] == [gpu, gpu]
    assert not built.page("good").select(".chapters-elsewhere")


def test_merge_refuses_a_folder_that_is_not_a_cache(tmp_path, capsys):
    assert main(["cache", "merge", str(tmp_path), "--into", str(tmp_path / "out")]) == 1
    assert "is not a jupyter-cache" in capsys.readouterr().err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert re.match(r"chapters, version \d+\.\d+\.\d+", capsys.readouterr().out)


def test_toc_without_status_appends_after_last_file(tmp_path):
    from chapters_support.cli.new import add_to_toc

    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n  - file: a\n  - file: b\n")
    add_to_toc(toc, "c")
    assert toc.read_text().endswith("  - file: b\n  - file: c\n")
    shutil.rmtree(tmp_path)


def test_new_chapter_goes_into_the_part_the_author_names(tmp_path, capsys):
    from chapters_support.cli.new import add_to_toc

    toc = tmp_path / "_toc.yml"
    shutil.copyfile(REPO / "book" / "_toc.yml", toc)
    original = toc.read_text()
    # by default: the last part with content, not the part that holds only the status page
    assert add_to_toc(toc, "gradient-clipping") == "Training at scale"
    lines = toc.read_text().splitlines()
    at = lines.index("      - file: gradient-clipping")
    assert lines[at - 1] == "      - file: monitoring"
    assert lines[at + 1] == "  - caption: Verification"
    assert lines[-1] == "      - file: status"
    # where the author says, matched without regard to case
    assert add_to_toc(toc, "transformers", "architectures") == "Architectures"
    lines = toc.read_text().splitlines()
    at = lines.index("      - file: transformers")
    assert (
        lines[at - 1] == "      - file: recurrent"
        and lines[at + 1] == "  - caption: Training at scale"
    )
    # the comments stay
    assert lines[:2] == original.splitlines()[:2]
    with pytest.raises(BookError, match=r"no part captioned 'Nowhere'; the parts are 'Getting"):
        add_to_toc(toc, "lost", "Nowhere")


def test_new_with_an_unknown_part_writes_nothing(book_copy, capsys):
    root = book_copy("test-pass")  # no parts at all
    code = main(["new", "x-chapter", "--title", "X", "--part", "Basics", "--book", str(root)])
    assert code == 1
    assert "--part 'Basics', but the table of contents has no parts" in capsys.readouterr().err
    assert not (root / "x-chapter.md").exists()


def test_the_readme_lists_every_option_as_the_config_declares_it():
    from chapters_support.sphinx_ext.config import ChaptersConfig, options_table

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- options: start -->\n", 1)[1].split("<!-- options: end -->", 1)[0]
    assert block == options_table(), "regenerate: python -m chapters_support.sphinx_ext.config"
    import dataclasses

    assert block.count("| `chapters_") == len(dataclasses.fields(ChaptersConfig)) >= 10


def test_bench_counts_kernels_as_the_targets_say(book_copy):
    from chapters_support import bench

    results = bench.run(book_copy("test-steps"), pdf=False, log=lambda line: None)
    assert results["cold"]["chapters_executed"] == 2
    assert results["no_change"]["kernels_started"] == 0
    assert results["edits"]["markdown_edit_executed"] == 0
    assert results["edits"]["code_edit_executed"] == 1
    assert results["edits"]["code_edit_chapters"] == ["steps"]
    # a maths-only edit executes exactly the chapter whose step checks read that maths
    assert results["edits"]["maths_chapter"] == "steps"
    assert results["edits"]["maths_edit_executed"] == 1
    steps = results["step_checks"]
    assert steps["checks"] == 1 and 0 < steps["steps_s"] < steps["execution_s"]
    assert steps["parse"]["equations"] == 3
    # warm kernels against plain ones and the lower bound, from the same run
    warm = results["warm"]
    assert warm["chapters_executed"] == 2
    assert warm["kernels"].startswith("warm kernels, forked from a server that imported torch,")
    assert warm["plain_kernels"] == (
        "plain kernels: warm kernels turned off by CHAPTERS_WARM_KERNELS=0"
    )
    assert warm["cells_s"] > 0 and warm["bound_s"] == warm["cells_s"] / results["jobs"]
    assert warm["ratio_to_bound"] == warm["execute_s"] / warm["bound_s"]
    assert results["startup"]["chapter"] == "steps"
    warm_start = results["startup"]["warm"]
    assert 0 < warm_start["start_s"] < warm_start["wall_s"]
    # one chapter: its kernel waited for the server's imports, then started on its own
    assert 0 <= warm_start["waited_s"] < warm_start["start_s"]
    assert warm_start["kernel_s"] == warm_start["start_s"] - warm_start["waited_s"]
    assert results["startup"]["plain"]["waited_s"] == 0.0
    table = bench.to_markdown(results)
    assert "| compute lower bound |" in table
    assert "| warm kernels: cold execute <= 1.3x the compute lower bound |" in table
    assert "| no-change rebuild starts 0 kernels | 0 | yes |" in table
    assert "| code edit in one chapter executes exactly 1 | 1 | yes |" in table
    assert "| maths-only edit of a derivation executes exactly its chapter | 1 | yes |" in table


def test_execution_in_temp_keeps_the_book_folder_clean(book_copy):
    root = book_copy("test-pass")
    chapter = root / "good.md"
    text = chapter.read_text().replace(
        "  name: python3\n---", "  name: python3\nmystnb:\n  execution_in_temp: true\n---", 1
    )
    chapter.write_text(
        text.replace("dev = device()\n", "dev = device()\nopen('scratch.txt', 'w').close()\n", 1)
    )
    assert main(["check", "--book", str(root)]) == 0
    assert not (root / "scratch.txt").exists()


def test_source_index_skips_reparsing_only_unchanged_cached_chapters(book_copy):
    from chapters_support.execution import read_chapter
    from chapters_support.execution.index import SourceIndex

    root = book_copy("test-pass")
    assert main(["check", "--book", str(root)]) == 0
    cache = root / "_build" / ".jupyter_cache"
    source = root / "good.md"
    index = SourceIndex(cache, salt="settings")
    assert not index.is_cached(source)  # never seen
    index.remember(source, read_chapter(source).notebook)
    index.save()
    assert SourceIndex(cache, salt="settings").is_cached(source)
    assert not SourceIndex(cache, salt="other settings").is_cached(source)
    # with the cache key, the digest of the code (the mutation record's): no parse to get it
    from chapters_support.execution.notebooks import code_digest

    digest = code_digest(read_chapter(source).notebook)
    assert SourceIndex(cache, salt="settings").code_digest(source) == digest
    source.write_text(source.read_text().replace("2 * X.T", "3 * X.T"))
    assert not SourceIndex(cache, salt="settings").is_cached(source)  # the code changed


def test_check_from_inside_the_book_folder(book_copy, monkeypatch, capsys):
    root = book_copy("test-pass")
    monkeypatch.chdir(root)  # as in the container, whose working directory is the book
    assert main(["check"]) == 0
    assert "2 derivations: 2 pass" in capsys.readouterr().out
