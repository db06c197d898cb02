"""chapters mutate: wrong versions of each check's derived code, and whether the check kills them.

The test book's chapter has four derivations: a layer with a real bias (every valid mutant
killed), the same layer at a test point whose bias hides in the tolerance (dropping the bias
survives), a term that is identically zero (mutants of it are equivalent) and a gradient.
"""

from __future__ import annotations

import json
import subprocess

from chapters_support import mutate
from chapters_support.book import Book
from chapters_support.cli import main
from chapters_support.cli.check import load_chapters
from chapters_support.cli.mutate import changed_chapters


def plan(root):
    (chapter,) = load_chapters(Book.load(root), ())
    return chapter, mutate.plan_chapter(chapter, cap=12)


def test_mutants_touch_only_the_derived_code(book_copy):
    chapter, (calls, chosen, candidates, skipped) = plan(book_copy("test-mutate"))
    assert not skipped
    assert [c.label for c in calls] == [
        "layer-biased",
        "layer-tiny-bias",
        "layer-dead-term",
        "layer-grad",
    ]
    biased = {(m.operator, m.after) for m in chosen["layer-biased"]}
    assert biased == {
        ("drop-term", "return (X @ W.T)"),
        ("drop-term", "return (b)"),
        ("add-to-sub", "return ((X @ W.T) - (b))"),
        ("negate", "return (-(X @ W.T + b))"),
        ("drop-transpose", "return X @ (W) + b"),
        ("swap-matmul", "return ((W.T) @ (X)) + b"),
    }
    everything = [m for found in chosen.values() for m in found]
    # the data (torch.randn, torch.full), the labels and the references are never mutated
    assert not [m for m in everything if "torch." in m.before or "F.linear" in m.before]
    grad = {m.operator for m in chosen["layer-grad"]}
    assert {"wrong-dim", "scale-constant"} <= grad
    assert candidates["layer-dead-term"] == 8


def test_the_selection_is_capped_deterministic_and_spread_over_operators(book_copy):
    chapter, _ = plan(book_copy("test-mutate"))
    first = mutate.plan_chapter(chapter, cap=4)[1]["layer-grad"]
    again = mutate.plan_chapter(chapter, cap=4)[1]["layer-grad"]
    assert first == again and len(first) == 4
    assert len({m.operator for m in first}) == 4  # round-robin: four operators, not four of one


def test_verdicts_scores_and_exit_code(book_copy, tmp_path):
    root = book_copy("test-mutate")
    out = tmp_path / "mutation.json"
    assert main(["mutate", "--book", str(root), "--json", str(out), "-j", "2"]) == 1  # < 98 %
    data = json.loads(out.read_text())
    verdicts = {
        c["label"]: sorted((m["operator"], m["verdict"]) for m in c["mutants"])
        for c in data["checks"]
    }
    assert verdicts["layer-biased"] == [
        ("add-to-sub", "killed"),
        ("drop-term", "killed"),  # X @ W.T: the bias matters
        ("drop-term", "killed"),  # b alone: refused, its shape differs
        ("drop-transpose", "invalid"),  # a shape error before the check: not counted
        ("negate", "killed"),
        ("swap-matmul", "invalid"),
    ]
    tiny = {
        (m["operator"], m["after"]): m
        for m in next(c for c in data["checks"] if c["label"] == "layer-tiny-bias")["mutants"]
    }
    survivor = tiny[("drop-term", "return (X @ W.T)")]
    assert survivor["verdict"] == "survived"
    line = (root / "layer.md").read_text().splitlines()[survivor["line"] - 1]
    assert line.strip() == survivor["before"] == "return X @ W.T + b"
    dead = [m for c in data["checks"] if c["label"] == "layer-dead-term" for m in c["mutants"]]
    equivalent = sorted(m["after"] for m in dead if m["verdict"] == "equivalent")
    assert equivalent == [
        "return ((X) - ((X - X) * 2.5))",
        "return (X)",
        "return X + (X - X) * 3.75",
    ]
    assert data["summary"] == {
        "killed": 17,
        "survived": 2,
        "equivalent": 3,
        "invalid": 6,
        "checks": 4,
        "score": 17 / 19,
    }
    assert not (root / "_build").exists()  # the book's cache is never touched


def test_changed_measures_only_the_chapters_a_change_touches(book_copy, capsys):
    root = book_copy("test-mutate")
    for args in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "book"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True)
    assert main(["mutate", "--book", str(root), "--changed", "HEAD"]) == 0
    assert "no chapter differs from HEAD: nothing to mutate" in capsys.readouterr().out
    layer = root / "layer.md"
    layer.write_text(layer.read_text().replace("2.5", "3.5"))
    assert changed_chapters(Book.load(root), "HEAD") == ("layer",)
    assert mutate.summary([]) == {
        "killed": 0,
        "survived": 0,
        "equivalent": 0,
        "invalid": 0,
        "checks": 0,
        "score": None,
    }
