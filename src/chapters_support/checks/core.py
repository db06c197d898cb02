"""The checks a chapter's code cell calls: hand-derived maths against torch.

Each check returns a :class:`~chapters_support.result.CheckResult` and displays it once as
a MIME bundle, so the executed (and cached) notebook carries the verdict to the book.
A wrong *answer* is a FAIL result; a wrong *question* (shapes, dtypes, a tautology, a
tolerance that needs a reason) raises :class:`CheckInputError` naming the label.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import torch

from chapters_support.checks import config
from chapters_support.checks.device import environment
from chapters_support.result import FAIL, PASS, CheckResult, format_error

LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


class CheckInputError(ValueError):
    """A check was asked something it cannot answer honestly."""

    def __init__(self, label: str, problem: str) -> None:
        super().__init__(f"check {label!r}: {problem}")
        self.label = label
        self.problem = problem


class TautologyError(CheckInputError):
    """Both sides of a check come from the same computation, so agreeing proves nothing."""


class ToleranceError(CheckInputError):
    """A tolerance looser than the book's ceiling, without a stated reason."""


TensorLike = torch.Tensor | float | int


# -- small helpers ---------------------------------------------------------------------------


def _validate_label(label: Any) -> str:
    if not isinstance(label, str) or not LABEL_RE.match(label):
        raise CheckInputError(
            str(label),
            "labels are non-empty strings of letters, digits and _ . : - "
            "(the same label as the {derivation} block this check verifies)",
        )
    return label


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


@contextlib.contextmanager
def _seeded(seed: int, dev: torch.device) -> Iterator[None]:
    """Both sides of a check see the same random stream (dropout masks, sampled noise)."""
    devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


_AUTOGRAD_ENTRY_POINTS: tuple[tuple[Any, str], ...] = (
    (torch.autograd, "grad"),
    (torch.autograd, "backward"),
    (torch.Tensor, "backward"),
    (torch.autograd.functional, "jacobian"),
    (torch.autograd.functional, "vjp"),
    (torch.autograd.functional, "jvp"),
    (torch.autograd.functional, "hessian"),
    (torch.func, "grad"),
    (torch.func, "grad_and_value"),
    (torch.func, "vjp"),
    (torch.func, "jacrev"),
    (torch.func, "jacfwd"),
)


@contextlib.contextmanager
def _autograd_tripwire(label: str) -> Iterator[None]:
    """Refuse derived code that asks autograd for the very gradient it claims to derive."""

    def refuse(name: str) -> Callable[..., Any]:
        def _refused(*args: Any, **kwargs: Any) -> Any:
            raise TautologyError(
                label,
                f"the derived side called {name}; a hand-derived gradient must not use "
                "autograd, or the check compares autograd with itself",
            )

        return _refused

    saved = [(owner, name, getattr(owner, name)) for owner, name in _AUTOGRAD_ENTRY_POINTS]
    try:
        for owner, name, _ in saved:
            setattr(owner, name, refuse(f"{getattr(owner, '__name__', owner)}.{name}"))
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def _as_tensor(label: str, value: Any, side: str, dev: torch.device | None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), dtype=torch.float64, device=dev)
    raise CheckInputError(label, f"{side} is a {type(value).__name__}, expected a tensor or number")


def _tolerance(
    label: str, dtype: torch.dtype, atol: float | None, rtol: float | None, reason: str | None
) -> config.Tolerance:
    default = config.default_tolerance(dtype)
    tol = config.Tolerance(
        rtol=default.rtol if rtol is None else float(rtol),
        atol=default.atol if atol is None else float(atol),
    )
    if tol.rtol < 0 or tol.atol < 0 or math.isnan(tol.rtol) or math.isnan(tol.atol):
        raise CheckInputError(label, f"tolerances must be non-negative (atol={atol}, rtol={rtol})")
    cap = config.ceiling(dtype)
    if (tol.rtol > cap.rtol or tol.atol > cap.atol) and not (reason and reason.strip()):
        raise ToleranceError(
            label,
            f"tolerance atol={tol.atol:g}, rtol={tol.rtol:g} is looser than the book's "
            f"{config.dtype_name(dtype)} ceiling (atol={cap.atol:g}, rtol={cap.rtol:g}); "
            "pass reason='...' explaining why this derivation cannot be checked tighter",
        )
    return tol


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.device != b.device or a.numel() == 0:
        return False
    return (
        a.data_ptr() == b.data_ptr()
        and a.shape == b.shape
        and a.stride() == b.stride()
        and a.dtype == b.dtype
    )


def _compare(
    label: str,
    name: str,
    derived: torch.Tensor,
    reference: torch.Tensor,
    dtype: torch.dtype,
    tol: config.Tolerance,
) -> dict[str, Any]:
    """Elementwise |d - r| <= atol + rtol |r| (as torch.allclose), with the numbers kept."""
    where = f"{label}[{name}]" if name else label
    if derived.shape != reference.shape:
        raise CheckInputError(
            label,
            f"shape mismatch for {where}: derived {tuple(derived.shape)} vs "
            f"reference {tuple(reference.shape)}",
        )
    for side, tensor in (("derived", derived), ("reference", reference)):
        if tensor.dtype != dtype:
            raise CheckInputError(
                label,
                f"dtype mismatch for {where}: {side} is {config.dtype_name(tensor.dtype)} but "
                f"the check runs in {config.dtype_name(dtype)} (pass dtype=... to change it)",
            )
    if derived.device != reference.device:
        raise CheckInputError(
            label, f"device mismatch for {where}: {derived.device} vs {reference.device}"
        )
    d = derived.detach()
    r = reference.detach()
    item: dict[str, Any] = {"name": name, "shape": list(d.shape), "derived_digest": digest(d)}
    nonfinite = [
        f"{side} has {int((~torch.isfinite(t)).sum())} non-finite value(s)"
        for side, t in (("derived", d), ("reference", r))
        if not bool(torch.isfinite(t).all())
    ]
    if nonfinite:
        item.update(passed=False, max_abs_err=None, max_rel_err=None, ratio=None)
        item["problem"] = "; ".join(nonfinite)
        return item
    diff = (d - r).abs().to(torch.float64)
    ref_abs = r.abs().to(torch.float64)
    max_abs = float(diff.max()) if diff.numel() else 0.0
    scale = float(ref_abs.max()) if ref_abs.numel() else 0.0
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    bound = tol.atol + tol.rtol * ref_abs
    ratio_t = diff / bound.clamp_min(torch.finfo(torch.float64).tiny)
    ratio = float(ratio_t.max()) if ratio_t.numel() else 0.0
    item.update(passed=ratio <= 1.0, max_abs_err=max_abs, max_rel_err=max_rel, ratio=ratio)
    if ratio > 1.0:
        worst = int(ratio_t.argmax())
        index = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), d.shape))
            if d.dim()
            else ()
        )
        at = f"at index {list(index)} " if index else ""
        item["problem"] = (
            f"{at}derived {float(d.reshape(-1)[worst]):.10g} vs "
            f"reference {float(r.reshape(-1)[worst]):.10g}"
        )
    return item


def digest(tensor: torch.Tensor) -> str:
    """The bits of a tensor (its dtype, shape and bytes), hashed: ``chapters mutate`` tells a
    mutant whose derived value did not change by one bit (an equivalent mutant) from one the
    check let through."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    h = hashlib.blake2b(f"{flat.dtype}{tuple(tensor.shape)}".encode(), digest_size=12)
    h.update(flat.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _emit(result: CheckResult) -> CheckResult:
    """Display the bundle once; outside IPython print the plain text."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython ships with ipykernel, a dependency
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(result)
    else:
        print(result.to_bundle()["text/plain"])
    return result


def _finish(
    label: str,
    kind: str,
    items: list[dict[str, Any]],
    dtype: torch.dtype,
    dev: torch.device,
    seconds: float,
    tol: config.Tolerance | None,
    reason: str | None,
    message: str | None = None,
) -> CheckResult:
    passed = all(item["passed"] for item in items)
    finite = [i for i in items if i.get("max_abs_err") is not None]
    max_abs = max((i["max_abs_err"] for i in finite), default=None)
    max_rel = max((i["max_rel_err"] for i in finite), default=None)
    ratio = max((i["ratio"] for i in finite if i.get("ratio") is not None), default=None)
    if message is None:
        failing = [i for i in items if not i["passed"]]
        parts = [
            f"max abs err {format_error(max_abs)}, rel err {format_error(max_rel)}",
        ]
        if tol is not None:
            parts.append(f"tolerance atol {tol.atol:.0e} + rtol {tol.rtol:.0e}·|ref|")
        if ratio is not None:
            parts.append(f"worst error/tolerance {ratio:.2g}")
        message = "; ".join(parts)
        for item in failing:
            name = f"{item['name']}: " if item["name"] else ""
            message += f"; {name}{item.get('problem', 'outside tolerance')}"
    result = CheckResult(
        label=label,
        kind=kind,
        status=PASS if passed else FAIL,
        message=message,
        dtype=config.dtype_name(dtype),
        device=str(dev),
        seconds=seconds,
        max_abs_err=max_abs,
        max_rel_err=max_rel,
        atol=tol.atol if tol else None,
        rtol=tol.rtol if tol else None,
        ratio=ratio,
        reason=reason,
        items=items,
        environment=environment(dev),
    )
    return _emit(result)


def _flatten(label: str, value: Any, side: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return {str(i): v for i, v in enumerate(value)}
    return {"": value}


# -- the public checks --------------------------------------------------------------------


def check_gradient(
    label: str,
    loss_fn: Callable[..., torch.Tensor],
    inputs: Mapping[str, Any],
    derived: Callable[..., Any] | Mapping[str, torch.Tensor],
    *,
    wrt: Sequence[str] | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    reason: str | None = None,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> CheckResult:
    """Compare hand-derived gradients of ``loss_fn(**inputs)`` with autograd's.

    ``derived`` is a callable taking the same keyword inputs (as plain tensors, outside
    autograd) and returning ``{name: gradient}``, or that dict itself. Gradients are checked
    for the names it returns (or ``wrt``). Floating inputs are cast to ``dtype``.
    """
    label = _validate_label(label)
    if not isinstance(inputs, Mapping) or not inputs:
        raise CheckInputError(label, "inputs must be a non-empty dict of name -> tensor")
    tensors = {k: _as_tensor(label, v, f"input {k!r}", None) for k, v in inputs.items()}
    devices = {t.device for t in tensors.values()}
    if len(devices) > 1:
        raise CheckInputError(label, f"inputs live on several devices: {sorted(map(str, devices))}")
    dev = devices.pop()
    tol = _tolerance(label, dtype, atol, rtol, reason)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().to(dtype) if t.is_floating_point() else t.detach().clone()

    if isinstance(derived, Mapping):
        for name, value in derived.items():
            if isinstance(value, torch.Tensor):
                if value.grad_fn is not None or value.requires_grad:
                    raise TautologyError(
                        label,
                        f"derived gradient {name!r} is part of an autograd graph; "
                        "compute it from plain tensors with the hand-derived formula",
                    )
                for source_name, source in inputs.items():
                    grad = getattr(source, "grad", None)
                    if isinstance(grad, torch.Tensor) and _same_memory(grad, value):
                        raise TautologyError(
                            label,
                            f"derived gradient {name!r} is inputs[{source_name!r}].grad, "
                            "which autograd computed",
                        )
    elif not callable(derived):
        raise CheckInputError(label, "derived must be a callable or a dict of gradients")

    _sync(dev)
    start = time.perf_counter()
    leaves = {k: cast(t) for k, t in tensors.items()}
    floating = [k for k, t in leaves.items() if t.is_floating_point()]
    for name in floating:
        leaves[name].requires_grad_(True)
    with _seeded(seed, dev), torch.enable_grad():
        loss = loss_fn(**leaves)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise CheckInputError(label, f"loss_fn must return a scalar tensor, got {shape}")
    grads = torch.autograd.grad(loss, [leaves[n] for n in floating], allow_unused=True)
    # an input the loss does not use has gradient zero
    reference = {
        n: (g if g is not None else torch.zeros_like(leaves[n]))
        for n, g in zip(floating, grads, strict=True)
    }

    if callable(derived):
        plain = {k: cast(t) for k, t in tensors.items()}
        with _seeded(seed, dev), torch.no_grad(), _autograd_tripwire(label):
            out = derived(**plain)
        if isinstance(out, torch.Tensor) and wrt is not None and len(wrt) == 1:
            out = {wrt[0]: out}
        if not isinstance(out, Mapping):
            raise CheckInputError(label, "the derived callable must return a dict name -> gradient")
        got = {str(k): v for k, v in out.items()}
    else:
        got = {str(k): v for k, v in derived.items()}
    names = list(wrt) if wrt is not None else list(got)
    if not names:
        raise CheckInputError(label, "derived gives no gradients to check")
    unknown = [n for n in names if n not in tensors]
    if unknown:
        raise CheckInputError(label, f"gradients given for unknown inputs {unknown}")
    integer = [n for n in names if n not in reference]
    if integer:
        raise CheckInputError(
            label, f"cannot differentiate with respect to integer inputs {integer}"
        )
    missing = [n for n in names if n not in got]
    if missing:
        raise CheckInputError(label, f"derived gives no gradient for {missing}")
    items = []
    for name in names:
        value = _as_tensor(label, got[name], f"derived gradient {name!r}", dev)
        if _same_memory(value, reference[name]):
            raise TautologyError(label, f"derived gradient {name!r} is autograd's own tensor")
        items.append(_compare(label, name, value, reference[name], dtype, tol))
    _sync(dev)
    seconds = time.perf_counter() - start
    return _finish(label, "gradient", items, dtype, dev, seconds, tol, reason)


def check_close(
    label: str,
    derived: Any,
    reference: Any,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    reason: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> CheckResult:
    """Compare a hand-derived value (tensor, number, dict or list of them) with a reference.

    For identities, closed forms and optimizer steps: the reference is torch's own
    implementation (``torch.linalg.lstsq``, ``torch.optim.Adam``, ...), never the same tensor.
    """
    label = _validate_label(label)
    start = time.perf_counter()
    if derived is reference:
        raise TautologyError(label, "derived and reference are the same object")
    tol = _tolerance(label, dtype, atol, rtol, reason)
    d_items = _flatten(label, derived, "derived")
    r_items = _flatten(label, reference, "reference")
    if set(d_items) != set(r_items):
        raise CheckInputError(
            label, f"derived has entries {sorted(d_items)} but reference has {sorted(r_items)}"
        )
    first = next(
        (v for v in (*d_items.values(), *r_items.values()) if isinstance(v, torch.Tensor)), None
    )
    dev = first.device if first is not None else torch.device("cpu")
    items = []
    for name in d_items:
        d = _as_tensor(label, d_items[name], "derived", dev)
        r = _as_tensor(label, r_items[name], "reference", dev)
        if d_items[name] is r_items[name] or _same_memory(d, r):
            raise TautologyError(
                label, f"derived and reference{f'[{name}]' if name else ''} share memory"
            )
        if not isinstance(d_items[name], torch.Tensor):
            d = d.to(dtype)
        if not isinstance(r_items[name], torch.Tensor):
            r = r.to(dtype)
        items.append(_compare(label, name, d, r, dtype, tol))
    _sync(dev)
    return _finish(label, "close", items, dtype, dev, time.perf_counter() - start, tol, reason)


def check_statistic(
    label: str,
    samples: Callable[[torch.Generator], torch.Tensor] | torch.Tensor,
    expected: float,
    *,
    statistic: str = "mean",
    confidence: float = 0.999,
    seed: int = 0,
    reason: str | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> CheckResult:
    """A Monte-Carlo claim: the mean (or variance) of i.i.d. samples equals ``expected``.

    ``samples`` is best a callable ``f(generator) -> tensor``: it gets a generator seeded
    with ``seed``, so the verdict is reproducible. The claim passes when the estimate lies
    within the two-sided normal ``confidence`` bound, ``z * standard error``, of ``expected``.
    """
    label = _validate_label(label)
    if statistic not in ("mean", "var"):
        raise CheckInputError(label, f"statistic must be 'mean' or 'var', not {statistic!r}")
    if not 0.5 <= confidence < 1:
        raise CheckInputError(label, f"confidence must lie in [0.5, 1), got {confidence}")
    cap = config.confidence_ceiling()
    if confidence > cap and not (reason and reason.strip()):
        raise ToleranceError(
            label,
            f"confidence {confidence} is above the book's ceiling {cap}: such a wide bound "
            "accepts wrong claims; pass reason='...' to say why it is needed",
        )
    start = time.perf_counter()
    if callable(samples):
        dev = torch.device(device) if device is not None else None
        if dev is None:
            from chapters_support.checks.device import device as chapter_device

            dev = chapter_device(announce=False)
        generator = torch.Generator(device=dev).manual_seed(seed)
        drawn = samples(generator)
    else:
        drawn = samples
    x = _as_tensor(label, drawn, "samples", None).detach().reshape(-1)
    dev = x.device
    if x.dtype != dtype:
        if not x.is_floating_point():
            x = x.to(dtype)
        else:
            raise CheckInputError(
                label,
                f"samples are {config.dtype_name(x.dtype)} but the check runs in "
                f"{config.dtype_name(dtype)} (pass dtype=... to change it)",
            )
    n = x.numel()
    if n < 100:
        raise CheckInputError(
            label, f"{n} samples are too few for a normal confidence bound (need >= 100)"
        )
    expected_value = float(expected)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    item: dict[str, Any] = {
        "name": statistic,
        "n": n,
        "expected": expected_value,
        "confidence": confidence,
    }
    result_tol: config.Tolerance | None = None
    if not bool(torch.isfinite(x).all()) or not math.isfinite(expected_value):
        bad = int((~torch.isfinite(x)).sum())
        item.update(passed=False, max_abs_err=None, max_rel_err=None, ratio=None)
        item["problem"] = f"{bad} non-finite sample(s)" if bad else "expected is not finite"
        message = f"{statistic} is not finite: {item['problem']}"
    else:
        mean = x.mean()
        if statistic == "mean":
            estimate = float(mean)
            stderr = float(x.std(unbiased=True)) / math.sqrt(n)
        else:
            centred = x - mean
            estimate = float(centred.pow(2).sum() / (n - 1))
            m4 = float(centred.pow(4).mean())
            # Var(s^2) ~ (m4 - sigma^4) / n for i.i.d. samples (large n)
            stderr = math.sqrt(max(m4 - estimate**2, 0.0) / n)
        error = abs(estimate - expected_value)
        bound = z * stderr
        ratio = error / bound if bound > 0 else (0.0 if error == 0 else math.inf)
        passed = ratio <= 1.0
        scale = abs(expected_value)
        item.update(
            passed=passed,
            estimate=estimate,
            stderr=stderr,
            z=z,
            max_abs_err=error,
            max_rel_err=error / scale if scale > 0 else (0.0 if error == 0 else math.inf),
            ratio=ratio,
        )
        message = (
            f"{statistic} {estimate:.6g} vs expected {expected_value:.6g} over n={n}: "
            f"|error| {error:.2e} {'≤' if passed else '>'} {z:.2f}·SE = {bound:.2e} "
            f"({confidence:.4g} confidence, seed {seed})"
        )
        result_tol = config.Tolerance(rtol=0.0, atol=bound)
    _sync(dev)
    return _finish(
        label,
        "statistic",
        [item],
        dtype,
        dev,
        time.perf_counter() - start,
        result_tol,
        reason,
        message=message,
    )


def check_bound(
    label: str,
    value: Any,
    bound: Any,
    *,
    relation: str = "<=",
    tight: Any = None,
    within: float | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    reason: str | None = None,
    dtype: torch.dtype = torch.float64,
) -> CheckResult:
    """A one-sided claim, ``value <= bound`` (or ``>=``) at every test point, and tight.

    ``value`` is what the bound is about, computed independently (autograd's Jacobian norm,
    torch's rounding); ``bound`` is the derived formula at the same points (random and
    adversarial ones). A bound only proves something if a *looser* wrong bound fails too, so
    the check also asks where the derivation says it is attained: ``tight`` marks those points
    (a boolean mask or indices over the entries) and ``within`` the factor by which the value
    may stay off the bound there (``value >= bound / within`` for ``<=``). A bound that is
    not tight anywhere the test can reach needs ``reason=...`` instead.
    """
    label = _validate_label(label)
    start = time.perf_counter()
    if relation not in ("<=", ">="):
        raise CheckInputError(label, f"relation must be '<=' or '>=', not {relation!r}")
    if value is bound:
        raise TautologyError(label, "value and bound are the same object")
    if tight is None and not (reason and reason.strip()):
        raise CheckInputError(
            label,
            "a bound checked without tightness lets every looser wrong bound pass: pass "
            "tight=... (the points where it is attained) and within=..., or reason='...' to "
            "say why it is attained nowhere the test can reach",
        )
    if tight is not None and (within is None or not within >= 1.0):
        raise CheckInputError(label, f"within must be a factor >= 1, got {within!r}")
    tol = _tolerance(label, dtype, atol, rtol, reason)
    v = _as_tensor(label, value, "value", None).detach()
    b = _as_tensor(label, bound, "bound", v.device).detach()
    if not v.is_floating_point():
        v = v.to(dtype)
    if not b.is_floating_point():
        b = b.to(dtype)
    if v.dtype != dtype or b.dtype != dtype:
        raise CheckInputError(
            label,
            f"value is {config.dtype_name(v.dtype)} and bound {config.dtype_name(b.dtype)}, but "
            f"the check runs in {config.dtype_name(dtype)} (pass dtype=... to change it)",
        )
    try:
        v, b = torch.broadcast_tensors(v, b)
    except RuntimeError:
        raise CheckInputError(
            label, f"value {tuple(v.shape)} and bound {tuple(b.shape)} do not broadcast"
        ) from None
    sign = 1.0 if relation == "<=" else -1.0
    slack = (sign * (b - v)).to(torch.float64)  # >= 0 where the bound holds
    allowed = tol.atol + tol.rtol * b.abs().to(torch.float64)
    holds: dict[str, Any] = {"name": "holds", "shape": list(v.shape), "derived_digest": digest(b)}
    finite = bool(torch.isfinite(v).all() and torch.isfinite(b).all())
    if not finite:
        holds.update(passed=False, max_abs_err=None, max_rel_err=None, ratio=None)
        holds["problem"] = "non-finite value or bound"
        items = [holds]
    else:
        excess = (-slack).clamp_min(0.0)
        ratio_t = excess / allowed.clamp_min(torch.finfo(torch.float64).tiny)
        ratio = float(ratio_t.max()) if ratio_t.numel() else 0.0
        worst = int(slack.argmin()) if slack.numel() else 0
        holds.update(
            passed=ratio <= 1.0,
            max_abs_err=float(excess.max()) if excess.numel() else 0.0,
            max_rel_err=None,
            ratio=ratio,
            margin=float(slack.min()) if slack.numel() else None,
        )
        if ratio > 1.0:
            holds["problem"] = (
                f"the bound fails: value {float(v.reshape(-1)[worst]):.10g} vs bound "
                f"{float(b.reshape(-1)[worst]):.10g} at entry {worst}"
            )
        items = [holds]
        if tight is not None:
            mask = torch.zeros(v.numel(), dtype=torch.bool, device=v.device)
            marks = torch.as_tensor(tight, device=v.device)
            if marks.dtype == torch.bool:
                if marks.numel() != v.numel():
                    raise CheckInputError(
                        label, f"tight has {marks.numel()} entries, value has {v.numel()}"
                    )
                mask = marks.reshape(-1)
            else:
                mask[marks.reshape(-1).long()] = True
            if not bool(mask.any()):
                raise CheckInputError(label, "tight marks no point")
            vt, bt = v.reshape(-1)[mask].to(torch.float64), b.reshape(-1)[mask].to(torch.float64)
            # how close the value comes to the bound at the tight points: 1 is attained
            closeness = vt / bt if relation == "<=" else bt / vt
            reached = float(closeness.min())
            needed = 1.0 / float(within)  # type: ignore[arg-type]
            tight_item: dict[str, Any] = {
                "name": "tight",
                "shape": [int(mask.sum())],
                "passed": reached >= needed,
                "max_abs_err": None,
                "max_rel_err": None,
                "ratio": None,
                "reached": reached,
                "needed": needed,
            }
            if reached < needed:
                tight_item["problem"] = (
                    f"not tight: value/bound reaches only {reached:.6g} at the tight points "
                    f"(needed {needed:.6g}, within {within:g})"
                )
            items.append(tight_item)
    _sync(v.device)
    parts = []
    if holds.get("margin") is not None:
        parts.append(f"holds at {v.numel()} points (smallest margin {holds['margin']:.3g})")
    if tight is not None and len(items) > 1:
        parts.append(
            f"tight within {within:g} at {items[1]['shape'][0]} points "
            f"(value/bound reaches {items[1]['reached']:.6g})"
        )
    else:
        parts.append(f"tightness not tested: {reason}")
    message = "; ".join(parts)
    for item in items:
        if not item["passed"]:
            message += f"; {item.get('problem', 'outside tolerance')}"
    seconds = time.perf_counter() - start
    return _finish(label, "bound", items, dtype, v.device, seconds, tol, reason, message)
