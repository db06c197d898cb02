"""What a chapter's code cell calls: pure torch, no Sphinx, no docutils."""

from chapters_support.checks.core import (
    CheckInputError,
    TautologyError,
    ToleranceError,
    check_bound,
    check_close,
    check_gradient,
    check_statistic,
)
from chapters_support.checks.device import device
from chapters_support.checks.steps import Bindings, check_steps, fixed, points, reference
from chapters_support.result import CheckResult

__all__ = [
    "Bindings",
    "CheckInputError",
    "CheckResult",
    "TautologyError",
    "ToleranceError",
    "check_bound",
    "check_close",
    "check_gradient",
    "check_statistic",
    "check_steps",
    "device",
    "fixed",
    "points",
    "reference",
]
