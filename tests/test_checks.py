"""The check API: what a chapter's code cell gets back for right, wrong and bad questions."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch

from chapters_support.checks import (
    CheckInputError,
    TautologyError,
    ToleranceError,
    check_bound,
    check_close,
    check_gradient,
    check_statistic,
    device,
)
from chapters_support.result import MIME_TYPE, CheckResult


@pytest.fixture
def regression():
    torch.manual_seed(0)
    X = torch.randn(32, 4, dtype=torch.float64)
    y = torch.randn(32, dtype=torch.float64)
    w = torch.randn(4, dtype=torch.float64)
    b = torch.tensor(0.5, dtype=torch.float64)
    return {"X": X, "y": y, "w": w, "b": b}


def mse(X, y, w, b):
    return ((X @ w + b - y) ** 2).mean()


def dL(X, y, w, b, scale=2.0):
    r = X @ w + b - y
    return {"w": scale / len(y) * X.T @ r, "b": scale * r.mean()}


def test_correct_gradient_passes_with_numbers(regression, capsys):
    result = check_gradient("linreg-grad", mse, regression, dL)
    assert result.status == "pass"
    assert result.kind == "gradient"
    assert result.dtype == "float64" and result.device == "cpu"
    assert result.max_abs_err < 1e-14 and result.ratio < 1
    assert (result.rtol, result.atol) == (1e-9, 1e-12)
    assert [item["name"] for item in result.items] == ["w", "b"]
    assert result.seconds > 0
    assert "PASS linreg-grad" in capsys.readouterr().out


def test_wrong_gradient_fails_and_says_where(regression):
    result = check_gradient("linreg-grad", mse, regression, lambda **kw: dL(**kw, scale=2.1))
    assert result.status == "fail"
    assert result.ratio > 1e6
    assert "w: at index" in result.message and "derived" in result.message
    assert math.isclose(result.max_rel_err, 0.05, rel_tol=1e-6)


def test_gradient_as_dict_of_tensors(regression):
    grads = dL(**regression)
    assert check_gradient("linreg-grad", mse, regression, grads).passed


def test_inputs_are_cast_to_float64(regression):
    as32 = {k: v.float() for k, v in regression.items()}
    result = check_gradient("linreg-grad", mse, as32, dL)
    assert result.dtype == "float64" and result.passed


def test_nan_is_a_fail_never_a_pass(regression):
    result = check_gradient(
        "linreg-grad", mse, regression, lambda **kw: {"w": kw["w"] * float("nan")}
    )
    assert result.status == "fail"
    assert "non-finite" in result.message
    inf = check_close(
        "inf-close",
        torch.tensor([math.inf], dtype=torch.float64),
        torch.tensor([math.inf], dtype=torch.float64),
    )
    assert inf.status == "fail"


def test_shape_mismatch_names_the_label(regression):
    with pytest.raises(
        CheckInputError, match=r"check 'linreg-grad': shape mismatch for linreg-grad\[w\]"
    ):
        check_gradient("linreg-grad", mse, regression, lambda **kw: {"w": kw["w"][:2]})


def test_dtype_mismatch_names_the_label():
    with pytest.raises(CheckInputError, match=r"check 'half': dtype mismatch.*float32"):
        check_close("half", torch.ones(3), torch.ones(3, dtype=torch.float64))


def test_autograd_in_derived_code_is_a_tautology(regression):
    def cheat(X, y, w, b):
        w = w.clone().requires_grad_(True)
        with torch.enable_grad():
            return {"w": torch.autograd.grad(mse(X, y, w, b), w)[0]}

    with pytest.raises(TautologyError, match="torch.autograd.grad"):
        check_gradient("cheat", mse, regression, cheat)

    def cheat_backward(X, y, w, b):
        w = w.clone().requires_grad_(True)
        with torch.enable_grad():
            mse(X, y, w, b).backward()
        return {"w": w.grad}

    with pytest.raises(TautologyError, match="backward"):
        check_gradient("cheat", mse, regression, cheat_backward)
    # the tripwire is lifted afterwards
    w = torch.ones(2, requires_grad=True)
    (w * 2).sum().backward()
    assert w.grad.tolist() == [2.0, 2.0]


def test_autograd_results_passed_as_a_dict_are_refused(regression):
    w = regression["w"].clone().requires_grad_(True)
    inputs = {**regression, "w": w}
    mse(**inputs).backward()
    with pytest.raises(TautologyError, match=r"inputs\['w'\].grad"):
        check_gradient("cheat", mse, inputs, {"w": w.grad})
    graph = regression["w"].clone().requires_grad_(True) * 2
    with pytest.raises(TautologyError, match="autograd graph"):
        check_gradient("cheat", mse, regression, {"w": graph})


def test_same_object_or_memory_is_a_tautology():
    a = torch.randn(4, dtype=torch.float64)
    with pytest.raises(TautologyError, match="same object"):
        check_close("self", a, a)
    with pytest.raises(TautologyError, match="share memory"):
        check_close("view", a, a.view(4))
    assert check_close("copy", a, a.clone()).passed


def test_loose_tolerance_needs_a_reason():
    a = torch.randn(4, dtype=torch.float64)
    with pytest.raises(ToleranceError, match="looser than the book's float64 ceiling"):
        check_close("loose", a, a.clone(), rtol=1e-6)
    result = check_close("loose", a, a.clone(), rtol=1e-6, reason="iterative solver")
    assert result.passed and result.reason == "iterative solver"


def test_ceiling_comes_from_the_book_config(tmp_path: Path, monkeypatch):
    (tmp_path / "_config.yml").write_text(
        "sphinx:\n  config:\n    chapters_tolerance_ceiling:\n      float64: {rtol: 1.0e-5, atol: 1.0e-10}\n"
    )
    monkeypatch.chdir(tmp_path)
    a = torch.randn(4, dtype=torch.float64)
    assert check_close("configured", a, a.clone(), rtol=1e-6).passed
    with pytest.raises(ToleranceError, match=r"rtol=1e-05"):
        check_close("configured", a, a.clone(), rtol=1e-4)


def test_statistic_passes_fails_and_is_reproducible():
    def draw(g):
        return torch.randn(20000, generator=g, dtype=torch.float64)

    first = check_statistic("var", draw, 1.0, statistic="var")
    again = check_statistic("var", draw, 1.0, statistic="var")
    assert first.passed and first.items[0]["estimate"] == again.items[0]["estimate"]
    wrong = check_statistic("var", draw, 1.2, statistic="var")
    assert wrong.status == "fail" and wrong.ratio > 1
    assert "0.999 confidence" in wrong.message
    other_seed = check_statistic("var", draw, 1.0, statistic="var", seed=1)
    assert other_seed.items[0]["estimate"] != first.items[0]["estimate"]


def test_statistic_refuses_too_few_samples_and_wide_bounds():
    with pytest.raises(CheckInputError, match="too few"):
        check_statistic("few", torch.randn(10, dtype=torch.float64), 0.0)
    with pytest.raises(ToleranceError, match="confidence"):
        check_statistic(
            "wide",
            lambda g: torch.randn(1000, generator=g, dtype=torch.float64),
            0.0,
            confidence=0.999999,
        )


def test_bad_label_is_refused():
    with pytest.raises(CheckInputError, match="labels are"):
        check_close(
            "has space", torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
        )


def test_one_bundle_with_our_mime_type_and_fallbacks():
    a = torch.randn(3, dtype=torch.float64)
    result = check_close("bundle", a, a + 1e-14)
    bundle = result.to_bundle()
    assert set(bundle) == {MIME_TYPE, "text/plain", "text/html", "text/latex"}
    assert CheckResult.from_json(json.loads(json.dumps(bundle[MIME_TYPE]))) == result
    assert "chapters-badge--pass" in bundle["text/html"]
    assert bundle["text/latex"].startswith(r"\textbf{PASS}")


def test_random_streams_match_on_both_sides():
    x = torch.randn(1000, dtype=torch.float64)

    def loss(x):
        mask = (torch.rand(1000, dtype=torch.float64) > 0.5).to(x.dtype)
        return (x * mask).sum()

    def derived(x):
        return {"x": (torch.rand(1000, dtype=torch.float64) > 0.5).to(x.dtype)}

    assert check_gradient("masked", loss, {"x": x}, derived).passed


def test_device_says_plainly_where_it_runs(capsys, monkeypatch):
    device_module = importlib.import_module("chapters_support.checks.device")
    monkeypatch.setattr(device_module, "_announced", set())
    monkeypatch.delenv("CHAPTERS_DEVICE", raising=False)
    picked = device()
    out = capsys.readouterr().out
    if picked.type == "cpu":
        assert out.startswith("Running on CPU (no CUDA device is visible to torch)")
    else:
        assert out.startswith("Running on CUDA:")


def test_non_finite_samples_fail_the_statistic():
    samples = torch.randn(1000, dtype=torch.float64)
    samples[3] = float("nan")
    result = check_statistic("nan-mean", samples, 0.0)
    assert result.status == "fail"
    assert result.message == "mean is not finite: 1 non-finite sample(s)"


# -- bounds: they hold, and they are tight where the derivation says -----------------------------


def softmax_norm_and_bound(Z):
    """||J||_2 of the softmax at each row of Z (autograd) and the bound 1 - ||s||^2."""
    s = torch.softmax(Z, dim=-1)
    J = torch.stack(
        [torch.autograd.functional.jacobian(lambda z: torch.softmax(z, -1), z) for z in Z]
    )
    return torch.linalg.matrix_norm(J, 2), 1 - (s**2).sum(dim=-1)


def test_a_bound_holds_and_is_tight_where_it_is_attained():
    torch.manual_seed(0)
    Z = torch.randn(30, 5, dtype=torch.float64) * 3
    Z[:10, 2:] = -60.0  # two classes only: the Jacobian has one non-zero eigenvalue, bound attained
    norm, bound = softmax_norm_and_bound(Z)
    result = check_bound("sat", norm, bound, tight=torch.arange(10), within=1 + 1e-9)
    assert result.passed and result.kind == "bound"
    assert result.message.startswith("holds at 30 points")
    assert [i["name"] for i in result.items] == ["holds", "tight"]
    assert result.items[1]["reached"] == pytest.approx(1.0, abs=1e-12)
    # a looser wrong bound (1 + ||s||^2) still holds, and fails for not being tight
    s = torch.softmax(Z, dim=-1)
    looser = check_bound("sat", norm, 1 + (s**2).sum(dim=-1), tight=torch.arange(10), within=1.01)
    assert not looser.passed and "not tight" in looser.message
    # a bound that is too tight fails where it is broken, naming the entry
    tighter = check_bound("sat", norm, 0.9 * bound, tight=torch.arange(10), within=1.01)
    assert not tighter.passed and "the bound fails" in tighter.message


def test_a_bound_says_why_it_is_not_tested_for_tightness_or_is_refused():
    value = torch.rand(20, dtype=torch.float64)
    with pytest.raises(CheckInputError, match="looser wrong bound"):
        check_bound("b", value, value + 1)
    result = check_bound("b", value, value + 1, reason="an upper estimate, attained nowhere")
    assert result.passed and "tightness not tested: an upper estimate" in result.message
    x = value + 0.5
    assert check_bound("b", 2 * x, x, relation=">=", tight=x > 0, within=2.0).passed
    assert not check_bound("b", 2 * x, x, relation=">=", tight=x > 0, within=1.9).passed
    with pytest.raises(CheckInputError, match="within must be"):
        check_bound("b", value, value + 1, tight=[0], within=0.5)
