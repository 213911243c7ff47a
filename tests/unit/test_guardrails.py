"""Canary guardrails on hand-built prediction-log frames: each guardrail, each direction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.guardrails import (
    GuardrailPolicy,
    Verdict,
    evaluate,
    wilson_lower_bound,
    window_stats,
)
from closedloop.errors import ConfigError, InvalidInputError

POLICY = GuardrailPolicy()


def rows(
    version: int,
    n: int,
    *,
    errors: int = 0,
    latency: float | np.ndarray = 20.0,
    score_shift: float = 0.0,
    seed: int = 0,
    prefix: str | None = None,
    labels: bool = False,
    role: str = "primary",
) -> pd.DataFrame:
    """``n`` one-row requests of ``version``: the first ``errors`` failed (status 500)."""
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.beta(2, 5, n) + score_shift, 0, 1)
    status = np.full(n, 200)
    status[:errors] = 500
    prediction = (scores > 0.5).astype(object)
    prediction[:errors] = None
    score_column = scores.copy()
    score_column[:errors] = np.nan
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "_request_id": [f"{prefix or f'v{version}'}-{i}" for i in range(n)],
            "_version": version,
            "_ts": pd.Timestamp("2026-01-01", tz="UTC"),
            "_prediction": prediction,
            "_score": score_column,
            "_latency_ms": latency,
            "_status": status,
            "_role": role,
        }
    )
    return frame


def verdict(canary: pd.DataFrame, production: pd.DataFrame, **kwargs: object) -> Verdict:
    policy = kwargs.pop("policy", POLICY)
    assert isinstance(policy, GuardrailPolicy)
    return evaluate(window_stats(canary), window_stats(production), policy, **kwargs)  # type: ignore[arg-type]


def check(v: Verdict, name: str) -> dict[str, object]:
    return next(c for c in v.checks if c["name"] == name)


def test_healthy_canary_with_enough_requests_advances_or_promotes() -> None:
    canary, production = rows(2, 300, seed=1), rows(1, 900, seed=2)
    advanced = verdict(canary, production)
    assert advanced.action == "advance", advanced.reasons
    assert verdict(canary, production, last_step=True).action == "promote"
    names = {c["name"] for c in advanced.checks}
    assert names == {"error_rate", "p99_latency_ms", "prediction_divergence", "label_roc_auc"}
    for c in advanced.checks:
        assert {"name", "canary", "production", "threshold", "passed"} <= set(c)
    assert check(advanced, "label_roc_auc")["passed"] is None  # no feedback: not run


def test_too_few_canary_requests_waits() -> None:
    v = verdict(rows(2, 50), rows(1, 900))
    assert v.action == "wait"
    assert "50 of 100" in v.reasons[0]


def test_step_not_elapsed_waits() -> None:
    v = verdict(rows(2, 300), rows(1, 900), step_elapsed=False)
    assert v.action == "wait"
    assert "step duration" in v.reasons[0]


# -- error rate -------------------------------------------------------------------------------


def test_error_rate_above_production_plus_margin_aborts() -> None:
    v = verdict(rows(2, 200, errors=10), rows(1, 1000, errors=10))  # 5% vs 1%
    assert v.action == "abort"
    c = check(v, "error_rate")
    assert c["passed"] is False
    assert c["canary"] == pytest.approx(0.05)
    assert c["production"] == pytest.approx(0.01)
    assert c["threshold"] == pytest.approx(0.02)
    assert "error_rate" in v.reasons[0]


def test_error_rate_within_margin_passes() -> None:
    v = verdict(rows(2, 200, errors=3), rows(1, 1000, errors=10))  # 1.5% vs 1% + 1%
    assert check(v, "error_rate")["passed"] is True
    assert v.action == "advance"


def test_a_clearly_broken_canary_aborts_before_min_requests() -> None:
    v = verdict(rows(2, 30, errors=15), rows(1, 1000))
    assert v.action == "abort"
    c = check(v, "error_rate")
    assert c["evidence"] == "wilson_lower_bound"
    assert c["lower_bound"] > c["threshold"]  # type: ignore[operator]


def test_one_early_error_is_not_enough_evidence() -> None:
    v = verdict(rows(2, 30, errors=1), rows(1, 1000))
    assert v.action == "wait"
    assert check(v, "error_rate")["passed"] is None


def test_wilson_lower_bound() -> None:
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(0, 100) == pytest.approx(0.0, abs=1e-12)
    assert 0.3 < wilson_lower_bound(50, 100) < 0.5


# -- latency ----------------------------------------------------------------------------------


def test_slow_canary_aborts_on_p99_latency() -> None:
    rng = np.random.default_rng(3)
    v = verdict(
        rows(2, 300, latency=rng.uniform(80, 120, 300)),
        rows(1, 900, latency=rng.uniform(10, 30, 900)),
    )
    assert v.action == "abort"
    c = check(v, "p99_latency_ms")
    assert c["passed"] is False
    assert c["threshold"] == pytest.approx(c["production"] * 1.5 + 5.0)  # type: ignore[operator]


def test_canary_latency_within_ratio_passes() -> None:
    rng = np.random.default_rng(4)
    v = verdict(
        rows(2, 300, latency=rng.uniform(10, 35, 300)),
        rows(1, 900, latency=rng.uniform(10, 30, 900)),
    )
    assert check(v, "p99_latency_ms")["passed"] is True


def test_latency_is_per_request_not_per_row() -> None:
    batch = pd.concat([rows(2, 1, latency=1000.0, prefix="big")] * 50, ignore_index=True)
    fast = rows(2, 150, latency=10.0, seed=5)
    stats = window_stats(pd.concat([batch, fast], ignore_index=True))
    assert stats.requests == 151
    assert stats.latencies_ms.size == 151


def test_without_latency_column_the_check_is_skipped() -> None:
    v = verdict(rows(2, 300).drop(columns="_latency_ms"), rows(1, 900).drop(columns="_latency_ms"))
    c = check(v, "p99_latency_ms")
    assert c["passed"] is None and "no _latency_ms" in str(c["note"])
    assert v.action == "advance"


# -- prediction divergence --------------------------------------------------------------------


def test_diverging_scores_abort() -> None:
    v = verdict(rows(2, 400, score_shift=0.3, seed=6), rows(1, 900, seed=7))
    assert v.action == "abort"
    c = check(v, "prediction_divergence")
    assert c["passed"] is False
    assert c["on"] == "score" and c["test"] == "ks"
    assert c["p_value"] < 0.01 and c["canary"] >= 0.1  # type: ignore[operator]


def test_similar_scores_pass() -> None:
    c = check(verdict(rows(2, 400, seed=8), rows(1, 900, seed=9)), "prediction_divergence")
    assert c["passed"] is True


def test_small_but_significant_shift_below_the_floor_passes() -> None:
    v = verdict(
        rows(2, 20000, score_shift=0.01, seed=10),
        rows(1, 20000, seed=11),
        policy=GuardrailPolicy(min_requests=100),
    )
    c = check(v, "prediction_divergence")
    assert c["canary"] < 0.1  # type: ignore[operator]
    assert c["passed"] is True


def test_numeric_predictions_without_scores_use_ks() -> None:
    canary = rows(2, 300, seed=12).assign(_score=np.nan, _prediction=np.arange(300.0) + 500)
    production = rows(1, 900, seed=13).assign(_score=np.nan, _prediction=np.arange(900.0))
    c = check(verdict(canary, production), "prediction_divergence")
    assert c["on"] == "numeric" and c["passed"] is False


def test_label_predictions_use_chi_square_and_tvd() -> None:
    canary = rows(2, 300, seed=14).assign(_score=np.nan, _prediction=["yes"] * 250 + ["no"] * 50)
    production = rows(1, 900, seed=15).assign(
        _score=np.nan, _prediction=["yes"] * 300 + ["no"] * 600
    )
    c = check(verdict(canary, production), "prediction_divergence")
    assert c["on"] == "label" and c["test"] == "chi2"
    assert c["passed"] is False
    same = rows(2, 300, seed=16).assign(_score=np.nan, _prediction=["yes"] * 100 + ["no"] * 200)
    assert check(verdict(same, production), "prediction_divergence")["passed"] is True


# -- label metric -----------------------------------------------------------------------------


def _labelled(version: int, n: int, *, good: bool, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    noise = rng.uniform(0, 1, n)
    scores = np.where(good, 0.6 * truth + 0.4 * noise, noise)
    frame = rows(version, n, seed=seed).assign(_score=scores, _prediction=(scores > 0.5))
    feedback = pd.DataFrame({"_request_id": frame["_request_id"], "_label": truth})
    return frame, feedback


def test_worse_label_metric_aborts() -> None:
    canary, canary_labels = _labelled(2, 300, good=False, seed=20)
    production, production_labels = _labelled(1, 600, good=True, seed=21)
    feedback = pd.concat([canary_labels, production_labels], ignore_index=True)
    # scores differ in distribution too; isolate the metric with a permissive divergence floor
    policy = GuardrailPolicy(divergence_floor=1.0)
    v = evaluate(window_stats(canary, feedback), window_stats(production, feedback), policy)
    c = check(v, "label_roc_auc")
    assert c["passed"] is False
    assert c["canary"] < c["threshold"] < c["production"]  # type: ignore[operator]
    assert v.action == "abort"


def test_equal_label_metric_passes_and_lower_is_better_metrics_work() -> None:
    canary, canary_labels = _labelled(2, 300, good=True, seed=22)
    production, production_labels = _labelled(1, 600, good=True, seed=23)
    feedback = pd.concat([canary_labels, production_labels], ignore_index=True)
    for metric in ("roc_auc", "log_loss", "accuracy"):
        policy = GuardrailPolicy(metric=metric, max_metric_drop=0.1)
        v = evaluate(window_stats(canary, feedback), window_stats(production, feedback), policy)
        assert check(v, f"label_{metric}")["passed"] is True, metric


def test_too_few_labels_skip_the_metric() -> None:
    canary, canary_labels = _labelled(2, 300, good=False, seed=24)
    production, production_labels = _labelled(1, 600, good=True, seed=25)
    feedback = pd.concat([canary_labels.head(10), production_labels], ignore_index=True)
    policy = GuardrailPolicy(divergence_floor=1.0)
    v = evaluate(window_stats(canary, feedback), window_stats(production, feedback), policy)
    assert check(v, "label_roc_auc")["passed"] is None
    assert v.action == "advance"


def test_with_labels_a_better_canary_that_answers_differently_is_not_aborted() -> None:
    """A model retrained after drift is meant to differ from production; labels decide."""
    canary, canary_labels = _labelled(2, 300, good=True, seed=26)
    production, production_labels = _labelled(1, 600, good=False, seed=27)
    feedback = pd.concat([canary_labels, production_labels], ignore_index=True)
    labelled = evaluate(window_stats(canary, feedback), window_stats(production, feedback))
    divergence = check(labelled, "prediction_divergence")
    assert divergence["diverged"] is True and divergence["passed"] is None
    assert "labels decide" in str(divergence["note"])
    assert check(labelled, "label_roc_auc")["passed"] is True
    assert labelled.action == "advance"
    # the same windows without labels: divergence is all there is, and it aborts
    unlabelled = evaluate(window_stats(canary), window_stats(production))
    assert check(unlabelled, "prediction_divergence")["passed"] is False
    assert unlabelled.action == "abort"


# -- inputs -----------------------------------------------------------------------------------


def test_shadow_rows_and_other_versions_are_ignored() -> None:
    mixed = pd.concat(
        [rows(2, 100), rows(2, 500, role="shadow", prefix="s", errors=500), rows(1, 70)],
        ignore_index=True,
    )
    stats = window_stats(mixed, version=2)
    assert stats.requests == 100 and stats.errors == 0


def test_logs_without_status_count_every_request_as_success() -> None:
    stats = window_stats(rows(2, 10, errors=3).drop(columns="_status"))
    assert stats.errors == 0 and stats.requests == 10


def test_bad_inputs() -> None:
    with pytest.raises(InvalidInputError):
        window_stats(pd.DataFrame({"x": [1]}))
    with pytest.raises(InvalidInputError):
        GuardrailPolicy(max_latency_ratio=0.5)
    with pytest.raises(ConfigError):
        GuardrailPolicy(metric="nope")
    with pytest.raises(InvalidInputError):
        window_stats(rows(2, 5), pd.DataFrame({"_request_id": ["v2-0"]}))
