"""Feature importance and the importance-weighted drift verdict."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from closedloop.domain.checks.assessment import assess
from closedloop.domain.checks.drift import DriftReport
from closedloop.domain.checks.importance import permutation_importance
from closedloop.errors import InvalidInputError


def frame(
    n: int, seed: int, *, shift_noise: float = 0.0, shift_signal: float = 0.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "signal": rng.normal(shift_signal, 1, n),
            "noise": rng.normal(shift_noise, 1, n),
            "other": rng.normal(0, 1, n),
        }
    )


def labelled(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    X = frame(n, seed)
    rng = np.random.default_rng(seed + 1)
    y = (X["signal"] + 0.3 * rng.normal(size=n) > 0).astype(int).to_numpy()
    return X, y


def test_a_column_the_model_uses_carries_the_importance() -> None:
    X, y = labelled(1000, 0)
    model = LogisticRegression().fit(X, y)
    importance = permutation_importance(model, X, y, "roc_auc", seed=1)
    assert set(importance) == {"signal", "noise", "other"}
    assert importance["signal"] > 0.2
    assert importance["noise"] < 0.01 and importance["other"] < 0.01
    assert all(v >= 0 for v in importance.values())


def test_lower_is_better_metrics_count_a_rise_as_importance() -> None:
    rng = np.random.default_rng(3)
    X = frame(500, 3)
    y = 3 * X["signal"].to_numpy() + 0.1 * rng.normal(size=500)
    model = LinearRegression().fit(X, y)
    importance = permutation_importance(model, X, y, "rmse", seed=0)
    assert importance["signal"] > 1.0 and importance["noise"] < 0.05


def test_importance_needs_the_columns_and_rows() -> None:
    X, y = labelled(50, 0)
    model = LogisticRegression().fit(X, y)
    with pytest.raises(InvalidInputError, match="needs the columns"):
        permutation_importance(model, X, y, "roc_auc", columns=["signal", "missing"])
    with pytest.raises(InvalidInputError, match="at least 2 rows"):
        permutation_importance(model, X.head(1), y[:1], "roc_auc")


WEIGHTS = {"signal": 0.9, "noise": 0.05, "other": 0.05}


def test_drift_in_a_column_the_model_barely_uses_does_not_raise_a_weighted_verdict() -> None:
    reference, current = frame(3000, 1), frame(3000, 2, shift_noise=0.5)
    plain = assess(reference, current, multivariate=False, quality=False)
    assert plain.drifted and plain.drifted_columns == ["noise"]
    weighted = assess(
        reference,
        current,
        multivariate=False,
        quality=False,
        weights=WEIGHTS,
        min_weighted_share=0.3,
    )
    assert weighted.drifted_columns == ["noise"]  # the column is still reported as drifted
    assert not weighted.drifted
    assert weighted.weighting is not None
    assert weighted.weighting["weighted_share"] == pytest.approx(0.05)
    assert weighted.weighting["counts"] is False


def test_drift_in_an_important_column_raises_the_weighted_verdict() -> None:
    reference, current = frame(3000, 1), frame(3000, 2, shift_signal=0.5)
    weighted = assess(
        reference,
        current,
        multivariate=False,
        quality=False,
        weights=WEIGHTS,
        min_weighted_share=0.3,
    )
    assert weighted.drifted and weighted.weighting is not None
    assert weighted.weighting["weighted_share"] == pytest.approx(0.9)


def test_weights_without_a_threshold_are_reported_and_change_nothing() -> None:
    reference, current = frame(3000, 1), frame(3000, 2, shift_noise=0.5)
    report = assess(reference, current, multivariate=False, quality=False, weights={"noise": 1.0})
    assert report.drifted
    assert report.weighting is not None
    assert report.weighting["unweighted"] == ["other", "signal"]
    again = DriftReport.from_dict(report.to_dict())
    assert again.weighting == report.weighting


def test_the_threshold_must_be_a_share() -> None:
    reference, current = frame(100, 1), frame(100, 2)
    with pytest.raises(InvalidInputError, match="min_weighted_share must be a number in"):
        assess(reference, current, weights=WEIGHTS, min_weighted_share=1.5)
