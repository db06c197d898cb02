"""check_steps: the derivation's own LaTeX evaluated, step by step (kernel side, no Sphinx).

Each test writes a small chapter and runs the check in this process, as a kernel would.
"""

from __future__ import annotations

import textwrap
import traceback
from pathlib import Path

import pytest
import torch

from chapters_support.checks import (
    Bindings,
    CheckInputError,
    TautologyError,
    check_steps,
    fixed,
    points,
    reference,
)

f64 = {"dtype": torch.float64}


def chapter(tmp_path: Path, body: str, label: str = "d", before: str = "") -> Path:
    path = tmp_path / "chapter.md"
    path.write_text(
        f"# A chapter\n\n{textwrap.dedent(before)}\n\n```{{derivation}} The derivation\n"
        f":label: {label}\n\n{textwrap.dedent(body).strip()}\n```\n",
        encoding="utf-8",
    )
    return path


def verdicts(result) -> list[tuple[str, str, str, str]]:
    return [(i["lhs"], i["rel"], i["rhs"], i["status"]) for i in result.items]


@pytest.fixture
def linreg():
    torch.manual_seed(0)
    n, d = 12, 3
    X = torch.randn(n, d, **f64) + 0.5
    y = torch.randn(n, **f64)
    w = torch.randn(d, **f64)
    b = torch.tensor(0.7, **f64)

    def loss(w, b, X, y):
        return ((X @ w + b - y) ** 2).mean()

    return Bindings(
        {r"\mathbf{X}": X, r"\mathbf{y}": y, r"\mathbf{w}": w, "b": b, "n": n, "L": loss}
    )


GRADIENT = r"""
With $\mathbf{r} = \mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y}$ the loss is $L = \frac{1}{n}\mathbf{r}^\top\mathbf{r}$, and

$$
\begin{aligned}
\frac{\partial L}{\partial \mathbf{w}}
&= \frac{1}{n}\left( 2\mathbf{X}^\top\mathbf{X}\mathbf{w} + 2b\,\mathbf{X}^\top\mathbf{1}
  - 2\mathbf{X}^\top\mathbf{y} \right) \\
&= \frac{2}{n}\mathbf{X}^\top\mathbf{r} .
\end{aligned}
$$
"""


def test_a_correct_chain_passes_every_step_against_autograd(tmp_path, linreg):
    result = check_steps("d", linreg, source=chapter(tmp_path, GRADIENT))
    assert result.passed and result.kind == "steps"
    assert [v[3] for v in verdicts(result)] == ["defines", "pass", "pass", "pass"]
    gradient = [i for i in result.items if i["lhs"].startswith(r"\frac{\partial")][0]
    assert gradient["reference"] and gradient["draws"] == 2 and gradient["display"]
    assert result.message.startswith("steps 3/3 pass (2/2 display, 1/1 inline")
    assert result.digest


def test_a_typo_in_the_displayed_latex_fails_naming_the_step_and_line(tmp_path, linreg):
    wrong = GRADIENT.replace(
        r"&= \frac{2}{n}\mathbf{X}^\top\mathbf{r}", r"&= \frac{1}{n}\mathbf{X}^\top\mathbf{r}"
    )
    path = chapter(tmp_path, wrong)
    result = check_steps("d", linreg, source=path)
    assert not result.passed
    failing = [i for i in result.items if i["status"] == "fail"]
    assert len(failing) == 1
    line = next(
        n
        for n, t in enumerate(path.read_text().splitlines(), 1)
        if r"\frac{1}{n}\mathbf{X}^\top\mathbf{r}" in t
    )
    assert failing[0]["line"] == line and failing[0]["step"] == 4
    assert result.message.startswith(f"step 4 of 4 FAILS (line {line}): ")
    assert "max abs err" in failing[0]["detail"] and "rel err 5.0e-01" in failing[0]["detail"]


def test_a_factor_dropped_in_a_middle_aligned_row_fails_at_that_row(tmp_path, linreg):
    text = r"""
    $$
    \begin{aligned}
    n L &= \mathbf{r}^\top\mathbf{r} \\
        &= \mathbf{w}^\top\mathbf{X}^\top\mathbf{X}\mathbf{w} + 2b\,\mathbf{1}^\top\mathbf{X}\mathbf{w}
           - 2\mathbf{y}^\top\mathbf{X}\mathbf{w} + b^2 n - 2b\,\mathbf{1}^\top\mathbf{y} + \mathbf{y}^\top\mathbf{y} \\
        &= (\mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y})^\top(\mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y})
    \end{aligned}
    $$
    """
    before = r"Let $\mathbf{r} = \mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y}$."
    assert check_steps("d", linreg, source=chapter(tmp_path, text, before=before)).passed
    dropped = text.replace(
        "+ 2b\\,\\mathbf{1}^\\top\\mathbf{X}\\mathbf{w}",
        "+ b\\,\\mathbf{1}^\\top\\mathbf{X}\\mathbf{w}",
    )
    path = chapter(tmp_path, dropped, before=before)
    result = check_steps("d", linreg, source=path)
    statuses = [v[3] for v in verdicts(result)]
    assert statuses == ["pass", "fail", "fail"]  # the steps into and out of the changed row
    rows = [n for n, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith("&=")]
    assert [result.items[1]["line"], result.items[2]["line"]] == rows


def test_an_unsupported_construct_is_reported_never_passed(tmp_path, linreg):
    text = r"$\mathbb{E}[\mathbf{w}] = \mathbf{0}$ and $\mathbf{w}^\top\mathbf{w} = \lVert\mathbf{w}\rVert_2^2$."
    result = check_steps("d", linreg, source=chapter(tmp_path, text))
    assert result.passed  # nothing fails...
    assert verdicts(result)[0][3] == "unsupported" and "expectation" in result.items[0]["detail"]
    assert verdicts(result)[1][3] == "pass"
    assert "not checked: 1 unsupported" in result.message  # ...and the gap is said


def test_an_unbound_symbol_is_named(tmp_path, linreg):
    result = check_steps(
        "d", linreg, source=chapter(tmp_path, r"$\mathbf{X}\mathbf{v} = \mathbf{z}$")
    )
    item = result.items[0]
    assert item["status"] == "unbound" and item["detail"] in {r"\mathbf{v}", r"\mathbf{z}"}


def test_a_binding_that_is_the_checked_expression_is_refused(tmp_path, linreg):
    text = r"$\mathbf{r} = \mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y}$"
    X, w, b, y = (linreg[k] for k in (r"\mathbf{X}", r"\mathbf{w}", "b", r"\mathbf{y}"))
    with pytest.raises(TautologyError, match=r"\\mathbf\{r\} is bound to exactly what"):
        check_steps(
            "d",
            linreg.extend({r"\mathbf{r}": lambda X, w, b, y: X @ w + b - y}),
            source=chapter(tmp_path, text),
        )
    # an independent value (a residual of other data) is a claim, and it fails
    other = linreg.extend({r"\mathbf{r}": X @ w + b - y + 1.0})
    assert not check_steps("d", other, source=chapter(tmp_path, text)).passed
    with pytest.raises(TautologyError, match="derivative"):
        check_steps(
            "d",
            linreg.extend({r"\frac{\partial L}{\partial \mathbf{w}}": w}),
            source=chapter(tmp_path, text),
        )


def test_a_binding_that_ignores_the_second_draw_fails_there(tmp_path, linreg):
    X, w = linreg[r"\mathbf{X}"], linreg[r"\mathbf{w}"]
    text = r"$\mathbf{z}^\top\mathbf{z} = \mathbf{w}^\top\mathbf{X}^\top\mathbf{X}\mathbf{w}$"
    closes_over_globals = linreg.extend({r"\mathbf{z}": lambda: X @ w})
    result = check_steps("d", closes_over_globals, source=chapter(tmp_path, text))
    assert not result.passed and "on draw 2" in result.items[0]["detail"]
    takes_its_symbols = linreg.extend({r"\mathbf{z}": lambda X, w: X @ w})
    assert check_steps("d", takes_its_symbols, source=chapter(tmp_path, text)).passed


def test_indices_sums_deltas_and_entries(tmp_path):
    torch.manual_seed(1)
    a, x = torch.randn(5, **f64), torch.randn(5, **f64)
    A = torch.randn(5, 5, **f64)
    text = r"""
    For $L = \mathbf{x}^\top \mathbf{A} \mathbf{x} = \sum_{i=1}^d \sum_{k=1}^d x_i A_{ik} x_k$,

    $$
    \frac{\partial L}{\partial x_j} = \sum_{i,k} \left( \delta_{ij} A_{ik} x_k + x_i A_{ik} \delta_{kj} \right)
    = (\mathbf{A}\mathbf{x})_j + (\mathbf{A}^\top \mathbf{x})_j ,
    \qquad
    \frac{\partial L}{\partial A_{pq}} = x_p x_q .
    $$
    """
    result = check_steps(
        "d",
        {r"\mathbf{x}": x, r"\mathbf{A}": A, r"\mathbf{a}": a, "d": 5},
        source=chapter(tmp_path, text),
    )
    assert [v[3] for v in verdicts(result)] == ["defines", "pass", "pass", "pass", "pass"]
    wrong = text.replace(r"(\mathbf{A}^\top \mathbf{x})_j", r"(\mathbf{A} \mathbf{x})_j")
    assert not check_steps(
        "d", {r"\mathbf{x}": x, r"\mathbf{A}": A, "d": 5}, source=chapter(tmp_path, wrong)
    ).passed


def test_functions_points_primes_and_approximations(tmp_path):
    text = r"""
    $\sigma'(x) = \sigma(x)\left(1 - \sigma(x)\right)$, $\tanh'(x) = 1 - \tanh^2 x$,
    $\operatorname{softplus}(x) = \log(1 + e^{x})$ and $\sqrt{512} \approx 23$.
    """
    x = points(torch.linspace(-4, 4, 17, **f64))
    result = check_steps("d", {"x": x}, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["pass"] * 4
    wrong = text.replace(r"1 - \tanh^2 x", r"1 + \tanh^2 x")
    assert not check_steps("d", {"x": x}, source=chapter(tmp_path, wrong)).passed


def test_shapes_inequalities_and_exclusions(tmp_path, linreg):
    text = r"""
    $\mathbf{X}^\top \in \mathbb{R}^{d \times n}$, $\mathbf{X}^\top\mathbf{y} \in \mathbb{R}^{n}$,
    $\lVert \mathbf{X}\mathbf{w} \rVert_2 \le \lVert \mathbf{X} \rVert_2 \lVert \mathbf{w} \rVert_2$ and

    $$
    \lVert \mathbf{w} \rVert_2 \ge 10^{6} % unchecked: a claim about another example
    $$
    """
    result = check_steps("d", linreg.extend({"d": 3}), source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["pass", "fail", "pass", "excluded"]
    assert "shape a column of 3, claimed R^12" in result.items[1]["detail"]
    assert result.items[3]["detail"] == "a claim about another example"
    inline = check_steps(
        "d",
        linreg.extend({"d": 3}),
        source=chapter(tmp_path, text),
        exclude={r"\mathbf{X}^\top\mathbf{y} \in \mathbb{R}^{n}": "a deliberate counter-example"},
    )
    assert inline.passed and inline.items[1]["status"] == "excluded"
    with pytest.raises(CheckInputError, match="needs a written reason"):
        check_steps(
            "d",
            linreg,
            source=chapter(tmp_path, text),
            exclude={r"\mathbf{X}^\top\mathbf{y} \in \mathbb{R}^{n}": " "},
        )
    with pytest.raises(CheckInputError, match="names no step"):
        check_steps("d", linreg, source=chapter(tmp_path, text), exclude={"a = b": "why"})


def test_the_final_formula_is_compared_with_a_bound_reference(tmp_path):
    torch.manual_seed(2)
    X, y = torch.randn(10, 3, **f64), torch.randn(10, **f64)
    text = r"$$\mathbf{X}^\top\mathbf{X}\,\theta^\star = \mathbf{X}^\top\mathbf{y}$$"
    solution = reference(lambda X, y: torch.linalg.lstsq(X, y.unsqueeze(-1)).solution.squeeze(-1))
    result = check_steps(
        "d",
        {r"\mathbf{X}": X, r"\mathbf{y}": y, r"\theta^\star": solution},
        source=chapter(tmp_path, text),
    )
    item = result.items[0]
    assert item["status"] == "pass" and item["final"] and item["reference"]


def test_families_and_recurrences(tmp_path):
    text = r"""
    $$
    m_t = \beta m_{t-1} + (1 - \beta) x_t = (1 - \beta)\sum_{k=1}^{t} \beta^{t-k} x_k
    $$
    """
    xs = torch.randn(8, **f64)

    def ema(t, m_t, beta, x_t):
        return torch.tensor(0.0, **f64) if t == 0 else beta * m_t(t - 1) + (1 - beta) * x_t(t)

    bind = {"m_t": ema, "x_t": lambda t, x: x[t - 1], "x": xs, r"\beta": 0.9, "t": 7}
    result = check_steps("d", bind, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["pass", "pass"], result.items
    wrong = text.replace(r"\beta^{t-k}", r"\beta^{t-k+1}")
    assert not check_steps("d", bind, source=chapter(tmp_path, wrong)).passed


def test_definitions_from_the_prose_before_the_derivation(tmp_path, linreg):
    before = r"The residual is $\mathbf{r} = \mathbf{X}\mathbf{w} + b\mathbf{1} - \mathbf{y}$."
    text = r"$\frac{\partial L}{\partial b} = \frac{2}{n}\sum_{i=1}^{n} r_i$"
    result = check_steps("d", linreg, source=chapter(tmp_path, text, before=before))
    assert [v[3] for v in verdicts(result)] == ["pass"]
    # the digest covers that prose maths: editing it makes the cached steps stale
    from chapters_support.maths import extract

    again = chapter(tmp_path, text, before=before.replace("- \\mathbf{y}", "+ \\mathbf{y}"))
    assert extract.find_in_file("d", again).digest != result.digest


def test_bad_questions_are_errors_naming_the_label(tmp_path, linreg):
    path = chapter(tmp_path, GRADIENT)
    with pytest.raises(CheckInputError, match="at least 2 draws"):
        check_steps("d", linreg, source=path, draws=1)
    with pytest.raises(CheckInputError, match="has no {derivation} with this label"):
        check_steps("other", linreg, source=path)
    with pytest.raises(CheckInputError, match="is not a symbol"):
        check_steps("d", {r"\frac{a}{b}": 1.0}, source=path)
    with pytest.raises(CheckInputError, match="the bindings raised ZeroDivisionError"):
        check_steps("d", lambda: {"n": 1 / 0}, source=path)
    with pytest.raises(CheckInputError, match="names no bound symbol"):
        check_steps("d", linreg.extend({"L": lambda w, nothing: w.sum()}), source=path)


def test_fixed_bindings_are_not_redrawn(tmp_path):
    # x is its own sign only at the bound point: a fixed binding keeps it there
    text = r"$\operatorname{sign}(\mathbf{x}) = \mathbf{s}$"
    x = torch.tensor([1.0, -2.0, 3.0], **f64)
    s = torch.sign(x)
    assert check_steps(
        "d", {r"\mathbf{x}": x, r"\mathbf{s}": fixed(s)}, source=chapter(tmp_path, text)
    ).passed


def test_a_huge_intermediate_value_does_not_widen_the_tolerance(tmp_path):
    # e^{40} inside the left side: the rounding allowance stays near the size of the sides
    x = points(torch.tensor([38.0, 40.0], **f64))
    wrong = check_steps("d", {"x": x}, source=chapter(tmp_path, r"$\log(1 + e^{x}) = x + 1$"))
    assert not wrong.passed and wrong.items[0]["max_abs_err"] > 0.99
    right = check_steps(
        "d", {"x": x}, source=chapter(tmp_path, r"$\log(1 + e^{x}) = x + \log(1 + e^{-x})$")
    )
    assert right.passed


def test_a_subscripted_function_is_not_its_unsubscripted_namesake(tmp_path):
    text = r"""
    $\operatorname{GELU}_{\tanh}(x) = \frac12\, x \left(1 + \tanh u(x)\right)$ with
    $u(x) = \sqrt{2/\pi}\left(x + c\, x^3\right)$, so
    $\operatorname{GELU}_{\tanh}'(x) = \frac12\left(1 + \tanh u(x)\right) + \frac12\, x \left(1 - \tanh^2 u(x)\right) u'(x)$.
    """
    result = check_steps(
        "d",
        {"x": points(torch.linspace(-3, 3, 13, **f64)), "c": 0.044715},
        source=chapter(tmp_path, text),
    )
    assert [v[3] for v in verdicts(result)] == ["defines", "defines", "pass"]


def test_the_prose_can_make_maths_a_case(tmp_path):
    x = points(torch.linspace(-2, 2, 9, **f64))
    text = r"""
    For $x < 0$ the ReLU is $0$, and $\operatorname{ReLU}(x) = \max(0, x) \ge 0$ everywhere.
    For $L = x^2 = x \cdot x$ the derivative is $\frac{d L}{d x} = 2x$.
    """
    result = check_steps("d", {"x": x}, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == [
        "condition",
        "pass",
        "pass",
        "defines",
        "pass",
        "pass",
    ]
    assert result.items[0]["detail"] == "stated as a case in the prose"


def test_a_kernel_reads_each_text_once_and_still_sees_an_edit(tmp_path, linreg):
    """Later checks of a chapter read earlier derivations again; what was read is remembered,
    and the same verdicts come back, an unsupported text is unsupported again, an edit is seen."""
    from chapters_support.maths import parse

    unsupported = r"\mathbb{E}[\mathbf{w}] = \mathbf{0}"
    parse.forget()
    path = chapter(tmp_path, GRADIENT + f"\nand ${unsupported}$.\n")
    first = check_steps("d", linreg, source=path)
    read = parse._steps.cache_info().misses
    again = check_steps("d", linreg, source=path)
    assert parse._steps.cache_info().misses == read  # nothing read a second time
    assert verdicts(again) == verdicts(first)
    assert [v[3] for v in verdicts(first)] == ["defines", "pass", "pass", "pass", "unsupported"]
    assert again.items[-1]["detail"] == first.items[-1]["detail"]
    depths = []
    for _ in range(3):  # what does not parse is remembered too, and raised afresh each time
        with pytest.raises(parse.Unsupported, match="does not parse") as raised:
            parse.steps(r"a = \frac{1}{")
        depths.append(len(list(traceback.walk_tb(raised.value.__traceback__))))
    assert depths == [3, 3, 3]  # the test, steps(), the memo: no pile-up of old raises
    wrong = GRADIENT.replace(r"&= \frac{2}{n}", r"&= \frac{1}{n}")
    edited = check_steps("d", linreg, source=chapter(tmp_path, wrong))
    assert [v[3] for v in verdicts(edited)] == ["defines", "pass", "pass", "fail"]


def test_a_large_jacobian_gives_the_same_verdicts_batched_or_row_by_row(tmp_path, monkeypatch):
    from chapters_support.maths import evaluate

    torch.manual_seed(1)
    A = torch.randn(4, 3, **f64)
    x = torch.randn(3, **f64)
    bound = Bindings({r"\mathbf{A}": A, r"\mathbf{x}": x, r"\mathbf{y}": lambda A, x: A @ x})
    text = r"$$\frac{\partial \mathbf{y}}{\partial \mathbf{x}} = \mathbf{A}$$"
    wrong = r"$$\frac{\partial \mathbf{y}}{\partial \mathbf{x}} = 2\mathbf{A}$$"
    before = r"Let $\mathbf{y} = \mathbf{A}\mathbf{x}$."
    results = {}
    for rows in (256, 0):  # the book's default, then every Jacobian batched
        monkeypatch.setattr(evaluate, "_LOOP_ROWS", rows)
        results[rows] = [
            verdicts(check_steps("d", bound, source=chapter(tmp_path, t, before=before)))
            for t in (text, wrong)
        ]
    assert results[256] == results[0]
    assert [v[3] for v in results[0][0]] == ["pass"]
    assert [v[3] for v in results[0][1]] == ["fail"]


def test_the_jacobian_of_a_defined_function_is_a_claim_checked_by_autograd(tmp_path):
    torch.manual_seed(2)
    bound = Bindings(
        {r"\mathbf{A}": torch.randn(4, 4, **f64), r"\mathbf{x}": torch.randn(4, **f64)}
    )
    text = r"""
    Let $\mathbf{f}(\mathbf{x}) = \mathbf{x} \odot (\mathbf{A}\mathbf{x})$. Then

    $$
    \mathbf{J}_{\mathbf{f}}(\mathbf{x}) = \operatorname{diag}(\mathbf{A}\mathbf{x}) + \operatorname{diag}(\mathbf{x})\, \mathbf{A} .
    $$
    """
    result = check_steps("d", bound, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["defines", "pass"]
    assert result.items[-1]["reference"] and result.items[-1]["final"]  # autograd's Jacobian
    wrong = text.replace(r"\operatorname{diag}(\mathbf{A}\mathbf{x}) + ", "")
    result = check_steps("d", bound, source=chapter(tmp_path, wrong))
    assert [v[3] for v in verdicts(result)] == ["defines", "fail"]


def test_a_reference_read_through_a_remembered_value_or_a_family_still_counts(tmp_path):
    """The final formula is compared with the reference however the evaluator reaches it: the
    reference read again from what an earlier step computed, a family member, a function."""
    from chapters_support.checks import reference

    torch.manual_seed(3)
    x = torch.randn(5, **f64)
    text = r"""
    $$
    s = \operatorname{lse}(\mathbf{x}), \qquad \mathbf{h}_t = t\,\mathbf{x}, \qquad g(\mathbf{x}) = 2\mathbf{x}
    $$

    and so

    $$
    \operatorname{lse}(\mathbf{x}) + \mathbf{1}^\top\mathbf{h}_2 + \mathbf{1}^\top g(\mathbf{x})
    = s + 4\,\mathbf{1}^\top\mathbf{x} .
    $$
    """
    lse = {r"\operatorname{lse}": reference(lambda x: torch.logsumexp(x, dim=-1))}
    family = {r"\mathbf{h}_t": reference(lambda t, x: t * x)}
    function = {"g": reference(lambda x: 2 * x)}
    for extra in (lse, family, function):
        symbols = Bindings({r"\mathbf{x}": x, **extra})
        result = check_steps("d", symbols, source=chapter(tmp_path, text))
        final = [i for i in result.items if i["final"]]
        assert [i["status"] for i in final] == ["pass"] and final[0]["reference"], extra
    plain = check_steps("d", Bindings({r"\mathbf{x}": x}), source=chapter(tmp_path, text))
    assert not [i for i in plain.items if i["final"]][0]["reference"]
    # an earlier step computed y; the final one reads it again from memory
    twice = (
        "With $\\mathbf{y} = 2\\mathbf{x}$,\n\n$$\n\\mathbf{y} = \\mathbf{x} + \\mathbf{x}\n$$\n"
    )
    symbols = Bindings({r"\mathbf{x}": x, r"\mathbf{y}": reference(lambda x: 2 * x)})
    result = check_steps("d", symbols, source=chapter(tmp_path, twice))
    assert [(i["status"], i["final"], i["reference"]) for i in result.items] == [
        ("pass", False, True),
        ("pass", True, True),
    ]


def test_nabla_is_the_gradient_and_the_hessian_with_respect_to_theta(tmp_path):
    torch.manual_seed(3)
    X = torch.randn(9, 3, **f64) + torch.tensor([0.5, -1.0, 2.0], **f64)
    y = torch.randn(9, **f64)
    bound = Bindings(
        {
            r"\mathbf{X}": X,
            r"\mathbf{y}": y,
            r"\theta": torch.randn(3, **f64),
            "n": 9,
            "L": lambda theta, X, y: 0.5 * ((X @ theta - y) ** 2).mean(),
        }
    )
    text = r"""
    $$
    \nabla L = \frac{1}{n}\mathbf{X}^\top(\mathbf{X}\theta - \mathbf{y}), \qquad
    \nabla^2 L = \frac{1}{n}\mathbf{X}^\top\mathbf{X} .
    $$
    """
    result = check_steps("d", bound, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["pass", "pass"]
    # the Hessian of the mean without the 1/2 is twice as large: a wrong factor fails
    wrong = text.replace(r"\nabla^2 L = \frac{1}{n}", r"\nabla^2 L = \frac{2}{n}")
    result = check_steps("d", bound, source=chapter(tmp_path, wrong))
    assert [v[3] for v in verdicts(result)] == ["pass", "fail"]
    # the subscript names the variable: with respect to y the Hessian is I/n, not X^T X/n
    other = text.replace(r"\nabla^2 L", r"\nabla^2_{\mathbf{y}} L")
    result = check_steps("d", bound, source=chapter(tmp_path, other))
    assert [v[3] for v in verdicts(result)] == ["pass", "fail"]


def test_the_sigmoid_is_a_named_function_with_a_derivative(tmp_path):
    text = r"""
    Write $\operatorname{sigmoid}(x) = (1 + e^{-x})^{-1}$. Then

    $$
    \operatorname{sigmoid}'(x) = \frac{e^{-x}}{(1 + e^{-x})^2}
    = \operatorname{sigmoid}(x)\left(1 - \operatorname{sigmoid}(x)\right) .
    $$
    """
    bound = Bindings({"x": torch.tensor(0.37, **f64)})
    result = check_steps("d", bound, source=chapter(tmp_path, text))
    assert [v[3] for v in verdicts(result)] == ["pass", "pass", "pass"]
    wrong = text.replace(
        r"\left(1 - \operatorname{sigmoid}(x)\right)", r"\left(1 + \operatorname{sigmoid}(x)\right)"
    )
    result = check_steps("d", bound, source=chapter(tmp_path, wrong))
    assert [v[3] for v in verdicts(result)] == ["pass", "pass", "fail"]
