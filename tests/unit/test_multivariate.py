"""Specification of closedloop.domain.checks.multivariate: domain-classifier drift, DeLong CI."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from closedloop.domain.checks.multivariate import delong_auc, domain_classifier_drift
from closedloop.errors import InvalidInputError, SchemaError


def _window(
    rng: np.random.Generator, n: int, *, rho: float = 0.0, shift: float = 0.0
) -> pd.DataFrame:
    xy = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    return pd.DataFrame(
        {
            "x": xy[:, 0] + shift,
            "y": xy[:, 1],
            "z": rng.exponential(size=n),
            "c": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]),
        }
    )


# --------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------


def _delong_by_definition(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """DeLong et al. (1988) straight from the definition: psi(X, Y) = 1, 1/2, 0 over all pairs."""
    x, y = scores[labels == 1], scores[labels == 0]
    kernel = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    v10, v01 = kernel.mean(axis=1), kernel.mean(axis=0)
    variance = np.var(v10, ddof=1) / x.size + np.var(v01, ddof=1) / y.size
    return float(kernel.mean()), float(variance)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_auc_and_variance_match_the_pairwise_definition_and_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + 0.5 * labels, 1)  # with ties
    auc, variance = delong_auc(labels, scores)
    expected_auc, expected_variance = _delong_by_definition(labels, scores)
    assert auc == pytest.approx(expected_auc, rel=1e-12)
    assert auc == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert variance == pytest.approx(expected_variance, rel=1e-10)


def test_delong_hand_computed_case() -> None:
    # Positives 0.9, 0.4 vs negatives 0.5, 0.1: pairs won 1+1, 0+1 -> AUC 3/4.
    # V10 = [1, 1/2] (var 1/8), V01 = [1/2, 1] (var 1/8): variance = 1/16 + 1/16.
    auc, variance = delong_auc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1]))
    assert auc == pytest.approx(0.75)
    assert variance == pytest.approx(0.125)


def test_delong_rejects_degenerate_inputs() -> None:
    with pytest.raises(InvalidInputError, match="at least two rows of each class"):
        delong_auc(np.array([1, 0, 0]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(InvalidInputError, match="0 or 1"):
        delong_auc(np.array([1, 2, 0, 0]), np.array([0.1, 0.2, 0.3, 0.4]))


# --------------------------------------------------------------------------------------------
# Domain classifier: the required behaviours
# --------------------------------------------------------------------------------------------


def test_a_broken_correlation_with_unchanged_marginals_is_flagged() -> None:
    rng = np.random.default_rng(10)
    reference = _window(rng, 5000, rho=0.8)
    current = _window(rng, 5000, rho=0.0)
    for name in ("x", "y"):  # per-column tests see nothing
        assert stats.ks_2samp(reference[name], current[name]).pvalue > 0.01
    result = domain_classifier_drift(reference, current, seed=0)
    assert result.drifted
    assert result.auc > 0.65
    assert result.ci_low > 0.6
    assert {name for name, _ in result.top_features[:2]} == {"x", "y"}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_identical_distributions_are_not_flagged(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    result = domain_classifier_drift(_window(rng, 3000), _window(rng, 3000), seed=seed)
    assert not result.drifted
    assert abs(result.auc - 0.5) < 0.03
    assert result.ci_low < 0.5 + result.auc_margin


def test_clean_windows_are_flagged_at_most_at_the_stated_rate_over_seeded_trials() -> None:
    # The module states 0/100 clean pairs flagged at 5,000 rows per side and 1/100 at 500
    # with the default margin; 30 seeds at 1,000 rows per side must stay within that.
    flagged, aucs = 0, []
    for seed in range(30):
        rng = np.random.default_rng(500 + seed)
        result = domain_classifier_drift(
            _window(rng, 1000, rho=0.8), _window(rng, 1000, rho=0.8), seed=seed
        )
        flagged += result.drifted
        aucs.append(result.auc)
    assert flagged <= 1
    assert abs(float(np.mean(aucs)) - 0.5) < 0.01


def test_a_planted_mean_shift_is_flagged_with_auc_well_above_one_half() -> None:
    rng = np.random.default_rng(11)
    result = domain_classifier_drift(_window(rng, 4000), _window(rng, 4000, shift=0.5), seed=0)
    assert result.drifted
    assert result.auc > 0.58
    assert result.ci_low < result.auc < result.ci_high
    assert result.top_features[0][0] == "x"
    assert sum(share for _, share in result.top_features) == pytest.approx(1.0)


def test_categorical_and_numeric_columns_with_nulls_are_used() -> None:
    rng = np.random.default_rng(12)
    reference, current = _window(rng, 3000), _window(rng, 3000)
    current["c"] = rng.choice(["a", "b", "c", "d"], 3000, p=[0.1, 0.2, 0.3, 0.4])  # moved
    for frame in (reference, current):
        frame.loc[rng.random(3000) < 0.2, "x"] = np.nan
        frame.loc[rng.random(3000) < 0.1, "c"] = None
    reference["flag"] = rng.random(3000) < 0.5  # a bool column is categorical
    current["flag"] = rng.random(3000) < 0.5
    result = domain_classifier_drift(reference, current, seed=1)
    assert result.drifted
    assert result.top_features[0][0] == "c"
    assert result.columns == ["x", "y", "z", "c", "flag"]


def test_high_cardinality_categories_share_an_other_code() -> None:
    rng = np.random.default_rng(13)
    reference = pd.DataFrame({"id": [f"r{i}" for i in range(2000)], "x": rng.normal(size=2000)})
    current = pd.DataFrame({"id": [f"c{i}" for i in range(2000)], "x": rng.normal(size=2000)})
    result = domain_classifier_drift(reference, current, seed=0)  # 4000 distinct ids
    assert math.isfinite(result.auc)


def test_subsampling_bounds_the_rows_used_and_is_seeded() -> None:
    rng = np.random.default_rng(14)
    reference, current = _window(rng, 6000), _window(rng, 2500, shift=0.3)
    result = domain_classifier_drift(reference, current, max_rows=1000, seed=3)
    assert result.n_reference_used == result.n_current_used == 1000
    again = domain_classifier_drift(reference, current, max_rows=1000, seed=3)
    assert again.auc == result.auc
    small = domain_classifier_drift(reference, current.iloc[:700], max_rows=1000)
    assert small.n_reference_used == small.n_current_used == 700  # balanced


def test_to_dict_is_json_safe() -> None:
    rng = np.random.default_rng(15)
    result = domain_classifier_drift(_window(rng, 500), _window(rng, 500), seed=0)
    body = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert body["method"] == "domain_classifier"
    assert body["ci_method"] == "delong_per_fold"
    assert body["ci_level"] == 0.95 and body["auc_margin"] == 0.02
    assert set(body) >= {"auc", "ci_low", "ci_high", "drifted", "top_features"}
    assert all(set(item) == {"column", "importance"} for item in body["top_features"])


def test_invalid_inputs_raise_errors_naming_what_was_expected() -> None:
    rng = np.random.default_rng(16)
    frame = _window(rng, 100)
    with pytest.raises(SchemaError, match=r"current frame has no column\(s\) \['z'\]"):
        domain_classifier_drift(frame, frame.drop(columns="z"))
    with pytest.raises(InvalidInputError, match="at least 20 rows"):
        domain_classifier_drift(frame, frame.iloc[:10])
    with pytest.raises(InvalidInputError, match="max_rows must be an integer >= 20"):
        domain_classifier_drift(frame, frame, max_rows=5)
    with pytest.raises(InvalidInputError, match=r"auc_margin must be a float in \[0, 0.5\]"):
        domain_classifier_drift(frame, frame, auc_margin=0.7)
    with pytest.raises(SchemaError, match="categorical names"):
        domain_classifier_drift(frame, frame, columns=["x"], categorical=["c"])
