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
from chapters_support.execution.notebooks import file_code_digest


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


def test_verdicts_scores_record_and_status_page(book_copy, build, tmp_path):
    root = book_copy("test-mutate")
    out = tmp_path / "mutation.json"
    args = ["mutate", "--book", str(root), "--json", str(out), "-j", "2", "--record"]
    assert main(args) == 1  # below the 98 % threshold
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
    survivor = tiny[
        (
            "drop-term",
            "return (X @ W.T)  # mutate: equivalent[add-to-sub]: a sign of b below the tolerance here",
        )
    ]
    assert survivor["verdict"] == "survived"  # the author's note names another operator
    line = (root / "layer.md").read_text().splitlines()[survivor["line"] - 1]
    assert line.strip() == survivor["before"]
    assert line.strip().startswith("return X @ W.T + b  # mutate: equivalent[add-to-sub]")
    explained = next(m for m in tiny.values() if m["operator"] == "add-to-sub")
    assert explained["verdict"] == "equivalent"
    assert explained["why"] == "explained in the chapter: a sign of b below the tolerance here"
    dead = [m for c in data["checks"] if c["label"] == "layer-dead-term" for m in c["mutants"]]
    equivalent = sorted(m["after"] for m in dead if m["verdict"] == "equivalent")
    assert equivalent == [
        "return ((X) - ((X - X) * 2.5))",
        "return (X)",
        "return X + (X - X) * 3.75",
    ]
    assert data["summary"] == {
        "killed": 17,
        "survived": 1,
        "equivalent": 4,
        "invalid": 6,
        "checks": 4,
        "score": 17 / 18,
    }
    assert not (root / "_build").exists()  # the book's cache is never touched

    # the record the book keeps, and the status page's column
    recorded = json.loads((root / "_mutation.json").read_text())["chapters"]["layer"]
    assert recorded["derivations"]["layer-tiny-bias"]["survived"] == 1
    built = build(root)
    assert built.returncode == 0, built.output
    table = built.page("status").select_one("table.chapters-status-table")
    assert [th.get_text() for th in table.select("th")][-1] == "Mutants"
    cells = [tr.select("td")[-1].get_text(strip=True) for tr in table.select("tbody tr")]
    assert cells == ["4/4 killed", "2/3 killed", "5/5 killed", "6/6 killed"]
    row = next(r for r in built.report()["derivations"] if r["label"] == "layer-tiny-bias")
    assert row["mutation"]["score"] == 2 / 3 and not row["mutation"]["stale"]
    # a prose or maths edit keeps the scores; a code edit marks them stale
    layer = root / "layer.md"
    digest = file_code_digest(layer)
    layer.write_text(layer.read_text().replace("at a test point", "at a point"))
    assert file_code_digest(layer) == digest
    layer.write_text(layer.read_text().replace("* 2.5", "* 3.5"))
    assert file_code_digest(layer) != digest
    built = build(root)
    assert built.returncode == 0, built.output
    table = built.page("status").select_one("table.chapters-status-table")
    cells = [tr.select("td")[-1].get_text(strip=True) for tr in table.select("tbody tr")]
    assert cells == [
        f"{c} (stale)" for c in ["4/4 killed", "2/3 killed", "5/5 killed", "6/6 killed"]
    ]


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


def test_an_author_explains_an_equivalent_mutant_on_its_line_or_just_above():
    above = mutate._comment_above(
        "x = 1\n# mutate: equivalent[swap-matmul]: A + A^T is\n#   symmetric\ny = (A + A.T) @ v\n",
        len("x = 1\n# mutate: equivalent[swap-matmul]: A + A^T is\n#   symmetric\n"),
    )
    assert above == ["# mutate: equivalent[swap-matmul]: A + A^T is symmetric"]
    assert mutate._explained(above, "swap-matmul") == "A + A^T is symmetric"
    assert mutate._explained(above, "negate") is None  # it names another operator
    same_line = ["y = f(x)  # mutate: equivalent: every x gives the same y"]
    assert mutate._explained(same_line, "negate") == "every x gives the same y"
    assert mutate._explained(["y = f(x)  # a comment"], "negate") is None


def test_a_check_called_through_a_chapter_function_is_measured_at_each_call():
    import ast

    cells = {
        0: "def sigmoid(x):\n    return 1 / (1 + torch.exp(-x))\n\n\n"
        "def check_derivative(label, phi, dphi, x, v):\n"
        "    return check_gradient(label, lambda x, v: (phi(x) * v).sum(), {'x': x, 'v': v},\n"
        "                          lambda x, v: {'x': dphi(x) * v})\n",
        1: "x = torch.arange(-400, 401) * 0.02\nv = torch.randn(801)\n"
        "check_derivative('act-sigmoid', torch.sigmoid, lambda x: sigmoid(x) * (1 - sigmoid(x)), x, v)\n",
    }
    trees = {cell: ast.parse(source) for cell, source in cells.items()}
    calls, skipped = mutate.check_calls(trees)
    assert skipped == []  # the inner call's label is the wrapper's parameter: not a gap
    (call,) = calls
    assert (call.label, call.function, call.cell) == ("act-sigmoid", "check_gradient", 1)
    # the derived side is the argument given for dphi, and what it reads (sigmoid), never the
    # test data x, v or the reference torch.sigmoid
    mutate.attach_regions(call, mutate.sites(trees))
    assert isinstance(call.derived, ast.Lambda)
    regions = [ast.unparse(node) for _, node in call.regions]
    assert regions[0].startswith("lambda x: sigmoid(x) * (1 - sigmoid(x))")
    assert "return 1 / (1 + torch.exp(-x))" in regions
    # x is a parameter of the lambda and of sigmoid there, not the test points x
    assert not any("arange" in r or "randn" in r for r in regions)


def test_derived_values_put_in_a_tensor_are_not_test_data():
    import ast

    def is_data(source):
        (node,) = ast.parse(source).body
        return mutate._is_data(mutate.Site(0, node, frozenset({"v"})))

    assert is_data("v = torch.tensor([1.0, -2.5])")
    assert is_data("v = torch.randn(3) * 2 + 1")
    assert not is_data("v = torch.tensor([float(output_size(H, k)) for H, k in configs])")
