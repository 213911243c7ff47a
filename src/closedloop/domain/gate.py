"""The promotion gate: may a freshly trained candidate replace the model in production?

Rule (:func:`decide`):

* no incumbent in production → the candidate passes;
* otherwise the candidate must **strictly** improve on the incumbent, in the metric's good
  direction, by at least ``margin``: ``improvement = candidate - incumbent`` for
  higher-is-better metrics (``roc_auc``, ``f1`` …) and ``incumbent - candidate`` for
  lower-is-better ones (``log_loss``, ``rmse``, ``mae``). A tie never passes, even with
  ``margin=0``: replacing a model by an equally good one is churn without benefit.

The :class:`GateDecision` carries both scores and a human sentence (``reason``) explaining the
outcome, and round-trips through :meth:`GateDecision.to_dict` / :meth:`GateDecision.from_dict`
for storage in run records and JSON output. Pure: no I/O.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

from closedloop.domain.metrics import check_metric, higher_is_better
from closedloop.errors import InvalidInputError

# Absolute slack when comparing an improvement with the margin, so that e.g. 0.81 - 0.78
# (= 0.030000000000000027 or 0.029999999999999916 in floating point) meets a 0.03 margin.
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateDecision:
    """The outcome of one promotion-gate check."""

    passed: bool
    metric: str
    candidate: float
    incumbent: float | None
    margin: float
    improvement: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "candidate": self.candidate,
            "incumbent": self.incumbent,
            "margin": self.margin,
            "improvement": self.improvement,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateDecision:
        """Rebuild a decision from :meth:`to_dict` output (InvalidInputError when malformed)."""
        if not isinstance(data, dict):
            raise InvalidInputError(
                f"A gate decision must be a dict. Got {type(data).__name__} instead."
            )
        required = ("passed", "metric", "candidate", "incumbent", "margin", "improvement", "reason")
        missing = [key for key in required if key not in data]
        if missing:
            raise InvalidInputError(
                f"A gate decision needs the keys {', '.join(required)}. "
                f"Missing: {', '.join(missing)}."
            )
        try:
            return cls(
                passed=bool(data["passed"]),
                metric=str(data["metric"]),
                candidate=float(data["candidate"]),
                incumbent=None if data["incumbent"] is None else float(data["incumbent"]),
                margin=float(data["margin"]),
                improvement=None if data["improvement"] is None else float(data["improvement"]),
                reason=str(data["reason"]),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"A gate decision has a non-numeric score: {exc}.") from exc


def decide(
    metric: str, candidate: float, incumbent: float | None, margin: float = 0.0
) -> GateDecision:
    """Decide whether ``candidate`` may replace ``incumbent`` (both scored with ``metric``).

    Raises :class:`~closedloop.errors.ConfigError` for an unknown metric and
    :class:`~closedloop.errors.InvalidInputError` for a NaN/infinite/non-numeric score or a
    negative margin.
    """
    check_metric(metric)
    candidate_value = _finite("candidate", candidate)
    incumbent_value = None if incumbent is None else _finite("incumbent", incumbent)
    margin_value = _check_margin(margin)

    if incumbent_value is None:
        return GateDecision(
            passed=True,
            metric=metric,
            candidate=candidate_value,
            incumbent=None,
            margin=margin_value,
            improvement=None,
            reason=(
                f"no incumbent in production: candidate {metric} {_fmt(candidate_value)} "
                "passes without comparison"
            ),
        )

    better_high = higher_is_better(metric)
    if better_high:
        improvement = candidate_value - incumbent_value
    else:
        improvement = incumbent_value - candidate_value
    direction = "higher" if better_high else "lower"
    head = f"candidate {metric} {_fmt(candidate_value)}"
    tail = f"incumbent {_fmt(incumbent_value)}"

    if improvement == 0.0:
        passed = False
        reason = (
            f"{head} ties {tail}; a tie does not pass (the candidate must strictly improve, "
            f"by at least margin {_fmt(margin_value)})"
        )
    elif improvement < 0.0:
        passed = False
        reason = (
            f"{head} is worse than {tail} by {_fmt(-improvement)} "
            f"({direction} is better; margin {_fmt(margin_value)})"
        )
    elif improvement + _TOLERANCE >= margin_value:
        passed = True
        reason = f"{head} beats {tail} by {_fmt(improvement)} ≥ margin {_fmt(margin_value)}"
    else:
        passed = False
        reason = f"{head} beats {tail} by only {_fmt(improvement)} < margin {_fmt(margin_value)}"
    return GateDecision(
        passed=passed,
        metric=metric,
        candidate=candidate_value,
        incumbent=incumbent_value,
        margin=margin_value,
        improvement=improvement,
        reason=reason,
    )


def _is_real(value: object) -> bool:
    # numbers.Real covers int, float and numpy numeric scalars; bools are rejected.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(name: str, value: object) -> float:
    number = float(value) if _is_real(value) else math.nan  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise InvalidInputError(
            f"The {name} score must be a finite number. Got {value!r} instead.",
            hint="A NaN score usually means the evaluation set was empty or had a single class.",
        )
    return number


def _check_margin(margin: object) -> float:
    number = float(margin) if _is_real(margin) else math.nan  # type: ignore[arg-type]
    if not math.isfinite(number) or number < 0:
        raise InvalidInputError(
            f"The 'margin' parameter must be a float >= 0. Got {margin!r} instead."
        )
    return number


def _fmt(value: float) -> str:
    """Three decimals, unless that would hide a small non-zero value or a large one."""
    magnitude = abs(value)
    if magnitude == 0 or 1e-3 <= magnitude < 1e6:
        return f"{value:.3f}"
    return f"{value:.3g}"


__all__ = ["GateDecision", "decide"]
