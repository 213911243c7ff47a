"""Canary guardrails: is the candidate at least as healthy as production on the same window?

:func:`window_stats` summarises one version's rows of the prediction log (and, optionally, the
late labels joined by request id); :func:`evaluate` compares the canary's summary with
production's and returns a :class:`Verdict`: ``abort``, ``wait``, ``advance`` or ``promote``.

Rows: input columns plus ``_request_id``, ``_version``, ``_ts``, ``_prediction``, ``_score``,
and when present ``_latency_ms`` (the request's server-side latency, same on every row of a
request), ``_status`` (HTTP status of the request; a failed request is one row with a null
``_prediction``) and ``_role`` (``"primary"`` or ``"shadow"``: shadow rows are ignored).
Without ``_status`` every request counts as a success; without ``_latency_ms`` the latency
check is skipped.

Guardrails (defaults in :class:`GuardrailPolicy`):

error rate
    Share of requests with ``_status >= 500``. Fails when the canary's rate exceeds
    production's by more than ``max_error_rate_increase`` (0.01). With at least
    ``min_requests`` (100) canary requests the point estimate is compared; with fewer, the
    check fails only when the lower bound of the canary rate's 95% Wilson interval already
    exceeds that threshold (enough evidence to abort early: a broken canary is not left
    serving until it has 100 requests).
p99 latency
    Per request. Fails when canary p99 > production p99 x ``max_latency_ratio`` (1.5) +
    ``latency_slack_ms`` (5 ms). Needs ``min_requests`` on both sides.
prediction divergence (label-free)
    Two-sample KS on ``_score`` when both sides have scores, else on ``_prediction`` when it is
    numeric, else a chi-square test of the predicted labels (effect: total variation distance).
    Fails when ``p < divergence_alpha`` (0.01) **and** the effect (KS ``D`` or TVD) is at least
    ``divergence_floor`` (0.1). Needs ``min_requests`` canary requests and production rows.
label metric
    When feedback labels exist: ``metric`` (default ``roc_auc``, scored with
    :func:`closedloop.domain.metrics.score`) on the labelled rows of each side; fails when the
    canary is worse than production by more than ``max_metric_drop`` (0.02). Needs
    ``min_labels`` (50) labelled rows on both sides.

A check that cannot run yet is recorded with ``passed: None`` and a ``note``; it never blocks.

Labels outrank the proxy: when the label metric check runs (enough labels on both sides), the
prediction divergence check is advisory — its figures are kept, with ``passed: None``,
``diverged`` and a ``note`` — because a candidate retrained after drift is *meant* to answer
differently from production, and the labels say directly whether its answers are worse.

Verdict, in order: any failed check → ``abort``; fewer than ``min_requests`` canary requests →
``wait``; step duration not yet elapsed → ``wait``; otherwise ``advance`` (``promote`` when the
next step is the last).

Pure: numpy/pandas/scipy, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop.domain.checks.stats import chi2_homogeneity, ks_p_values, ks_sorted, sorted_finite
from closedloop.domain.metrics import check_metric, higher_is_better, score
from closedloop.errors import InvalidInputError

Action = Literal["advance", "promote", "abort", "wait"]
ValueKind = Literal["score", "numeric", "label", "none"]
_SCORE_METRICS = frozenset({"roc_auc", "log_loss"})
_WILSON_Z = 1.959963984540054  # 95% two-sided


@dataclass(frozen=True)
class GuardrailPolicy:
    """Thresholds of the canary guardrails (see the module docstring)."""

    min_requests: int = 100
    max_error_rate_increase: float = 0.01
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 5.0
    latency_quantile: float = 0.99
    divergence_alpha: float = 0.01
    divergence_floor: float = 0.1
    metric: str = "roc_auc"
    max_metric_drop: float = 0.02
    min_labels: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int):
            raise InvalidInputError(f"min_requests must be an int. Got {self.min_requests!r}.")
        if self.min_requests < 1 or self.min_labels < 1:
            raise InvalidInputError("min_requests and min_labels must be >= 1.")
        for name in ("max_error_rate_increase", "latency_slack_ms", "max_metric_drop"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InvalidInputError(f"{name} must be a finite number >= 0. Got {value!r}.")
        if not math.isfinite(self.max_latency_ratio) or self.max_latency_ratio < 1.0:
            raise InvalidInputError(
                f"max_latency_ratio must be >= 1. Got {self.max_latency_ratio!r}."
            )
        if not 0.0 < self.latency_quantile < 1.0:
            raise InvalidInputError("latency_quantile must be in (0, 1).")
        if not 0.0 < self.divergence_alpha < 1.0 or not 0.0 <= self.divergence_floor <= 1.0:
            raise InvalidInputError("divergence_alpha must be in (0, 1), divergence_floor [0, 1].")
        check_metric(self.metric)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True, eq=False)
class WindowStats:
    """One version's traffic in a window: request counts, latencies, predictions, labels."""

    version: int | None
    requests: int
    errors: int
    latencies_ms: np.ndarray
    """One finite latency per request (empty when the log has no ``_latency_ms``)."""
    scores: np.ndarray
    """Finite ``_score`` values of the successful rows."""
    predictions: np.ndarray
    """Non-null ``_prediction`` values of the successful rows (object array)."""
    label_truth: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    label_predictions: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    label_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Per labelled row (NaN scores when the model has none)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def labelled(self) -> int:
        return int(self.label_truth.size)


@dataclass(frozen=True)
class Verdict:
    action: Action
    reasons: list[str]
    checks: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reasons": list(self.reasons), "checks": self.checks}


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def window_stats(
    rows: pd.DataFrame, feedback: pd.DataFrame | None = None, *, version: int | None = None
) -> WindowStats:
    """Summarise prediction-log rows (of one version; pass ``version`` to filter) and the
    ``feedback`` labels (``_request_id``, ``_label``, optional ``_row``) joined to them."""
    if not isinstance(rows, pd.DataFrame) or "_request_id" not in rows.columns:
        raise InvalidInputError("window_stats needs prediction-log rows with a _request_id.")
    frame = rows
    if version is not None and "_version" in frame.columns:
        frame = frame[frame["_version"] == version]
    if "_role" in frame.columns:
        frame = frame[frame["_role"].fillna("primary") != "shadow"]
    frame = frame.reset_index(drop=True)
    ids = frame["_request_id"].astype(str)
    per_request = frame.assign(_request_id=ids).drop_duplicates("_request_id", keep="first")
    requests = len(per_request)
    if "_status" in frame.columns:
        status = pd.to_numeric(per_request["_status"], errors="coerce").fillna(200)
        failed_request = set(per_request.loc[status.to_numpy() >= 500, "_request_id"])
    else:
        failed_request = set()
    latencies = np.empty(0)
    if "_latency_ms" in frame.columns:
        latencies = sorted_finite(
            pd.to_numeric(per_request["_latency_ms"], errors="coerce").to_numpy(dtype=float)
        )
    ok = ~ids.isin(failed_request).to_numpy()
    if "_prediction" in frame.columns:
        ok &= frame["_prediction"].notna().to_numpy()
    good = frame.loc[ok]
    scores = np.empty(0)
    if "_score" in good.columns:
        scores = sorted_finite(pd.to_numeric(good["_score"], errors="coerce").to_numpy(float))
    predictions = (
        good["_prediction"].to_numpy(dtype=object)
        if "_prediction" in good.columns
        else np.empty(0, dtype=object)
    )
    stats = WindowStats(
        version=version,
        requests=requests,
        errors=len(failed_request),
        latencies_ms=latencies,
        scores=scores,
        predictions=predictions,
    )
    if feedback is None or len(feedback) == 0 or len(good) == 0:
        return stats
    return _with_labels(stats, good.assign(_request_id=ids[ok].to_numpy()), feedback)


def _with_labels(stats: WindowStats, good: pd.DataFrame, feedback: pd.DataFrame) -> WindowStats:
    if not {"_request_id", "_label"} <= set(feedback.columns):
        raise InvalidInputError("Feedback must have _request_id and _label columns.")
    labels = feedback.assign(_request_id=feedback["_request_id"].astype(str))
    labels = labels[labels["_label"].notna()]
    keys = ["_request_id"]
    if "_row" in labels.columns and labels["_row"].notna().any():
        good = good.assign(_row=good.groupby("_request_id", sort=False).cumcount())
        labels = labels.assign(_row=pd.to_numeric(labels["_row"], errors="coerce"))
        keys = ["_request_id", "_row"]
    else:
        labels = labels.drop_duplicates("_request_id", keep="last")
    columns = [*keys, "_label"]
    joined = good.drop(columns=["_label"], errors="ignore").merge(labels[columns], on=keys)
    if joined.empty:
        return stats
    scores = (
        pd.to_numeric(joined["_score"], errors="coerce").to_numpy(float)
        if "_score" in joined.columns
        else np.full(len(joined), np.nan)
    )
    return WindowStats(
        version=stats.version,
        requests=stats.requests,
        errors=stats.errors,
        latencies_ms=stats.latencies_ms,
        scores=stats.scores,
        predictions=stats.predictions,
        label_truth=_plain(joined["_label"].to_numpy(dtype=object)),
        label_predictions=_plain(joined["_prediction"].to_numpy(dtype=object)),
        label_scores=scores,
    )


def _plain(values: np.ndarray) -> np.ndarray:
    """Object arrays of numbers become numeric arrays (metrics compare labels by value)."""
    try:
        return np.asarray(pd.to_numeric(pd.Series(values)).to_numpy())
    except (ValueError, TypeError):
        return values.astype(str)


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check(
    name: str,
    canary: float | None,
    production: float | None,
    threshold: float | None,
    passed: bool | None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "canary": _finite(canary),
        "production": _finite(production),
        "threshold": _finite(threshold),
        "passed": None if passed is None else bool(passed),
    }
    body.update({k: (_finite(v) if isinstance(v, float) else v) for k, v in extra.items()})
    return body


def wilson_lower_bound(errors: int, n: int, z: float = _WILSON_Z) -> float:
    """Lower end of the Wilson score interval of a proportion (0 when ``n`` is 0)."""
    if n <= 0:
        return 0.0
    p = errors / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def error_rate_check(
    canary: WindowStats, production: WindowStats, policy: GuardrailPolicy
) -> dict[str, Any]:
    threshold = production.error_rate + policy.max_error_rate_increase
    extra = {"n_canary": canary.requests, "n_production": production.requests}
    if canary.requests == 0:
        return _check(
            "error_rate",
            None,
            production.error_rate,
            threshold,
            None,
            **extra,
            note="no canary requests yet",
        )
    if canary.requests >= policy.min_requests:
        passed = canary.error_rate <= threshold
        return _check(
            "error_rate", canary.error_rate, production.error_rate, threshold, passed, **extra
        )
    lower = wilson_lower_bound(canary.errors, canary.requests)
    if lower > threshold:
        return _check(
            "error_rate",
            canary.error_rate,
            production.error_rate,
            threshold,
            False,
            **extra,
            evidence="wilson_lower_bound",
            lower_bound=lower,
        )
    return _check(
        "error_rate",
        canary.error_rate,
        production.error_rate,
        threshold,
        None,
        **extra,
        lower_bound=lower,
        note=f"fewer than {policy.min_requests} canary requests",
    )


def latency_check(
    canary: WindowStats, production: WindowStats, policy: GuardrailPolicy
) -> dict[str, Any]:
    name = f"p{round(policy.latency_quantile * 100):d}_latency_ms"
    n_c, n_p = canary.latencies_ms.size, production.latencies_ms.size
    extra = {"n_canary": n_c, "n_production": n_p}
    if n_c < policy.min_requests or n_p < policy.min_requests:
        note = (
            "no _latency_ms in the prediction log"
            if canary.requests and n_c == 0
            else f"fewer than {policy.min_requests} requests with a latency on a side"
        )
        return _check(
            name,
            _quantile(canary.latencies_ms, policy),
            _quantile(production.latencies_ms, policy),
            None,
            None,
            **extra,
            note=note,
        )
    c = _quantile(canary.latencies_ms, policy)
    p = _quantile(production.latencies_ms, policy)
    assert c is not None and p is not None
    threshold = p * policy.max_latency_ratio + policy.latency_slack_ms
    return _check(name, c, p, threshold, c <= threshold, **extra)


def _quantile(values: np.ndarray, policy: GuardrailPolicy) -> float | None:
    if values.size == 0:
        return None
    return float(np.quantile(values, policy.latency_quantile))


def _numeric(values: np.ndarray) -> np.ndarray | None:
    if values.size == 0:
        return None
    if values.dtype.kind in "biuf":
        return values.astype(float)
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values):
        return values.astype(float)
    return None


def divergence_check(
    canary: WindowStats, production: WindowStats, policy: GuardrailPolicy
) -> dict[str, Any]:
    kind: ValueKind = "none"
    a = b = None
    if canary.scores.size and production.scores.size:
        kind, a, b = "score", canary.scores, production.scores
    else:
        a, b = _numeric(canary.predictions), _numeric(production.predictions)
        kind = "numeric" if a is not None and b is not None else "label"
    base = {
        "test": "ks" if kind in ("score", "numeric") else "chi2",
        "on": kind,
        "alpha": policy.divergence_alpha,
        "effect_floor": policy.divergence_floor,
    }
    if canary.requests < policy.min_requests or production.predictions.size == 0:
        return _check(
            "prediction_divergence",
            None,
            None,
            policy.divergence_floor,
            None,
            **base,
            note=f"needs {policy.min_requests} canary requests and production predictions",
        )
    if kind in ("score", "numeric"):
        assert a is not None and b is not None
        a, b = sorted_finite(a), sorted_finite(b)
        if a.size == 0 or b.size == 0:
            return _check(
                "prediction_divergence",
                None,
                None,
                policy.divergence_floor,
                None,
                **base,
                note="no finite values on a side",
            )
        d, p = ks_p_values(np.array([ks_sorted(a, b)]), np.array([a.size]), np.array([b.size]))
        effect, p_value = float(d[0]), float(p[0])
        n_canary, n_production = int(a.size), int(b.size)
    else:
        cur = pd.Series(canary.predictions.astype(str)).value_counts()
        ref = pd.Series(production.predictions.astype(str)).value_counts()
        table = pd.concat([cur, ref], axis=1, sort=True).fillna(0.0)
        observed = table.to_numpy(dtype=np.float64).T
        if observed.sum(axis=1).min() == 0:
            return _check(
                "prediction_divergence",
                None,
                None,
                policy.divergence_floor,
                None,
                **base,
                note="no predictions on a side",
            )
        _, p_value = chi2_homogeneity(observed)
        freq = observed / observed.sum(axis=1, keepdims=True)
        effect = float(0.5 * np.abs(freq[0] - freq[1]).sum())
        n_canary, n_production = canary.predictions.size, production.predictions.size
    diverged = p_value < policy.divergence_alpha and effect >= policy.divergence_floor
    return _check(
        "prediction_divergence",
        effect,
        0.0,
        policy.divergence_floor,
        not diverged,
        **base,
        p_value=p_value,
        n_canary=n_canary,
        n_production=n_production,
    )


def metric_check(
    canary: WindowStats, production: WindowStats, policy: GuardrailPolicy
) -> dict[str, Any]:
    metric = policy.metric
    better_high = higher_is_better(metric)
    extra: dict[str, Any] = {
        "metric": metric,
        "n_canary": canary.labelled,
        "n_production": production.labelled,
        "max_metric_drop": policy.max_metric_drop,
    }
    if canary.labelled < policy.min_labels or production.labelled < policy.min_labels:
        return _check(
            f"label_{metric}",
            None,
            None,
            None,
            None,
            **extra,
            note=f"fewer than {policy.min_labels} labelled rows on a side",
        )
    try:
        c = _score(metric, canary)
        p = _score(metric, production)
    except InvalidInputError as exc:
        return _check(f"label_{metric}", None, None, None, None, **extra, note=exc.message)
    threshold = p - policy.max_metric_drop if better_high else p + policy.max_metric_drop
    passed = c >= threshold if better_high else c <= threshold
    return _check(f"label_{metric}", c, p, threshold, passed, **extra)


def _score(metric: str, stats: WindowStats) -> float:
    if metric in _SCORE_METRICS:
        if not np.isfinite(stats.label_scores).all():
            raise InvalidInputError(f"The {metric!r} metric needs scores; the model logs none.")
        return score(metric, stats.label_truth, y_score=stats.label_scores)
    return score(metric, stats.label_truth, y_pred=stats.label_predictions)


# --------------------------------------------------------------------------------------------
# Verdict
# --------------------------------------------------------------------------------------------


def evaluate(
    canary: WindowStats,
    production: WindowStats,
    policy: GuardrailPolicy | None = None,
    *,
    step_elapsed: bool = True,
    last_step: bool = False,
) -> Verdict:
    """Compare the canary with production on one window (see the module docstring).

    ``step_elapsed``: the current step has run for its duration; ``last_step``: advancing now
    means promoting.
    """
    policy = policy or GuardrailPolicy()
    checks = [
        error_rate_check(canary, production, policy),
        latency_check(canary, production, policy),
        divergence_check(canary, production, policy),
        metric_check(canary, production, policy),
    ]
    checks[2] = _advisory_when_labelled(checks[2], checks[3])
    failed = [c for c in checks if c["passed"] is False]
    if failed:
        reasons = [_failure(c) for c in failed]
        return Verdict("abort", reasons, checks)
    if canary.requests < policy.min_requests:
        reason = f"{canary.requests} of {policy.min_requests} canary requests so far"
        return Verdict("wait", [reason], checks)
    if not step_elapsed:
        return Verdict("wait", ["the step duration has not elapsed yet"], checks)
    passed = [c["name"] for c in checks if c["passed"]]
    reason = "every guardrail passed: " + (", ".join(passed) or "none applicable")
    return Verdict("promote" if last_step else "advance", [reason], checks)


def _advisory_when_labelled(divergence: dict[str, Any], metric: dict[str, Any]) -> dict[str, Any]:
    """With a label metric verdict, divergence is reported but does not decide."""
    if metric["passed"] is None or divergence["passed"] is None:
        return divergence
    return {
        **divergence,
        "passed": None,
        "diverged": not divergence["passed"],
        "note": f"advisory: labels decide ({metric['name']} ran)",
    }


def _failure(check: dict[str, Any]) -> str:
    name = check["name"]
    canary, production, threshold = check["canary"], check["production"], check["threshold"]
    if name == "prediction_divergence":
        return (
            f"prediction_divergence: canary predictions differ from production "
            f"({check['test']} effect {_fmt(canary)} >= {_fmt(threshold)}, "
            f"p={_fmt(check.get('p_value'))})"
        )
    relation = ">" if name != f"label_{check.get('metric')}" else "worse than"
    return (
        f"{name}: canary {_fmt(canary)} {relation} threshold {_fmt(threshold)} "
        f"(production {_fmt(production)})"
    )


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _finite(value: Any) -> Any:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
