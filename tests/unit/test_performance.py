"""Tests for closedloop.domain.performance: label-free estimation, realised metrics, joins."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from closedloop.domain.performance import (
    ASSUMPTION,
    ESTIMATED_METRICS,
    Calibrator,
    estimate_performance,
    expected_roc_auc,
    fit_calibrator,
    join_feedback,
    match_feedback,
    realised_performance,
)
from closedloop.errors import InvalidInputError


def _calibrated(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and labels drawn from them."""
    rng = np.random.default_rng(seed)
    p = np.where(rng.random(n) < 0.7, rng.beta(1.5, 6.0, n), rng.beta(5.0, 2.0, n))
    return p, (rng.random(n) < p).astype(np.int64)


def _brute_force_auc(s: np.ndarray, p: np.ndarray) -> float:
    gt = (s[:, None] > s[None, :]).astype(float) + 0.5 * (s[:, None] == s[None, :])
    weight = p[:, None] * (1 - p[None, :])
    np.fill_diagonal(weight, 0.0)
    return float((weight * gt).sum() / weight.sum())


# -- estimation ---------------------------------------------------------------------------


def test_estimate_is_within_its_band_of_the_realised_value_across_seeds() -> None:
    seeds = range(40)
    inside = dict.fromkeys(ESTIMATED_METRICS, 0)
    errors: dict[str, list[float]] = {m: [] for m in ESTIMATED_METRICS}
    for seed in seeds:
        p, y = _calibrated(seed, 2_000)
        estimate = estimate_performance(p, n_simulations=300, random_state=seed)
        realised = realised_performance(y, p, (p >= 0.5).astype(np.int64))
        for metric in ESTIMATED_METRICS:
            value = realised[metric]
            assert value is not None
            inside[metric] += estimate[metric].contains(value)
            errors[metric].append(estimate[metric].value - value)
    for metric in ESTIMATED_METRICS:
        # A 95% band: ~38 of 40 expected; 34 is far in the tail of Binomial(40, 0.95).
        assert inside[metric] >= 34, (metric, inside[metric])
        # Unbiased: the mean error is well below one band's half-width.
        assert abs(np.mean(errors[metric])) < 0.01, metric


def test_first_seeds_individually_within_band() -> None:
    for seed in range(5):
        p, y = _calibrated(100 + seed, 5_000)
        estimate = estimate_performance(p)
        realised = realised_performance(y, p, (p >= 0.5).astype(np.int64))
        assert estimate["accuracy"].contains(realised["accuracy"] or 0.0)
        assert estimate["roc_auc"].contains(realised["roc_auc"] or 0.0)


def test_expected_confusion_matrix_and_exact_metrics() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.1, 0.6])
    estimate = estimate_performance(p, threshold=0.5, n_simulations=50)
    predicted = p >= 0.5
    tp = float(p[predicted].sum())
    fp = float((1 - p[predicted]).sum())
    fn = float(p[~predicted].sum())
    tn = float((1 - p[~predicted]).sum())
    confusion = estimate.expected_confusion
    assert confusion["tp"] == pytest.approx(tp)
    assert confusion["fp"] == pytest.approx(fp)
    assert confusion["fn"] == pytest.approx(fn)
    assert confusion["tn"] == pytest.approx(tn)
    assert estimate["accuracy"].value == pytest.approx((tp + tn) / 5)
    assert estimate["precision"].value == pytest.approx(tp / 3)
    assert estimate["recall"].value == pytest.approx(tp / p.sum())
    assert estimate["f1"].value == pytest.approx(2 * tp / (2 * tp + fp + fn))


def test_threshold_changes_predictions() -> None:
    p, _ = _calibrated(3, 1_000)
    low = estimate_performance(p, threshold=0.2, n_simulations=20)
    high = estimate_performance(p, threshold=0.8, n_simulations=20)
    assert low["recall"].value > high["recall"].value
    assert low["precision"].value < high["precision"].value


def test_estimate_is_deterministic_and_bands_bracket_the_value() -> None:
    p, _ = _calibrated(7, 3_000)
    first = estimate_performance(p, random_state=5)
    assert first == estimate_performance(p, random_state=5)
    for metric in ESTIMATED_METRICS:
        m = first[metric]
        assert m.lower <= m.value <= m.upper
        assert m.std > 0


def test_to_dict_is_json_and_states_the_assumption() -> None:
    p, _ = _calibrated(1, 500)
    body = estimate_performance(p, n_simulations=20).to_dict()
    assert body["assumption"] == ASSUMPTION
    assert "concept drift" in body["assumption"]
    assert "Bernoulli" in body["band_method"]
    assert set(body["metrics"]) == set(ESTIMATED_METRICS)
    json.dumps(body, allow_nan=False)


def test_auc_is_nan_when_no_pair_exists() -> None:
    estimate = estimate_performance(np.zeros(10), n_simulations=10)
    assert math.isnan(estimate["roc_auc"].value)
    assert estimate.to_dict()["metrics"]["roc_auc"]["value"] is None
    assert estimate["accuracy"].value == 1.0
    json.dumps(estimate.to_dict(), allow_nan=False)


# -- expected AUC -------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0]),
            st.floats(0.0, 1.0),
        ),
        min_size=2,
        max_size=25,
    )
)
def test_expected_auc_equals_brute_force(rows: list[tuple[float, float]]) -> None:
    s = np.array([r[0] for r in rows])
    p = np.array([r[1] for r in rows])
    weight = p.sum() * (1 - p).sum() - (p * (1 - p)).sum()
    if weight == 0:  # all probabilities 0 or all 1: no (positive, negative) pair
        assert math.isnan(expected_roc_auc(s, p))
        return
    if weight < 1e-9:  # the brute-force ratio itself is numerically meaningless
        return
    assert expected_roc_auc(s, p) == pytest.approx(_brute_force_auc(s, p), abs=1e-9)


def test_expected_auc_with_true_labels_is_the_realised_auc() -> None:
    rng = np.random.default_rng(0)
    s = np.round(rng.random(500), 2)  # with ties
    y = (rng.random(500) < s).astype(float)
    assert expected_roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_estimate_uses_raw_scores_for_ranking_and_calibrated_for_weights() -> None:
    p, _ = _calibrated(2, 200)
    raw = p**3  # same order, different values
    calibrator = Calibrator("isotonic", x=(0.0, 1.0), y=(0.0, 1.0))
    by_identity_map = estimate_performance(raw, calibrator=calibrator, n_simulations=10)
    assert by_identity_map["roc_auc"].value == pytest.approx(expected_roc_auc(raw, raw))
    assert expected_roc_auc(raw, p) == pytest.approx(_brute_force_auc(raw, p))


# -- calibration --------------------------------------------------------------------------


def test_calibration_fixes_a_miscalibrated_score() -> None:
    p_ref, y_ref = _calibrated(10, 20_000)
    p_new, y_new = _calibrated(11, 5_000)
    skew = 0.25  # over-confident, shifted scores: monotone, so the ranking is unchanged
    s_ref, s_new = p_ref**skew, p_new**skew

    calibrator = fit_calibrator(s_ref, y_ref)
    assert calibrator.method == "isotonic"
    assert calibrator.brier_isotonic_cv is not None and calibrator.brier_raw is not None
    assert calibrator.brier_isotonic_cv < calibrator.brier_raw

    calibrated = calibrator.transform(s_new)
    assert np.mean((calibrated - y_new) ** 2) < np.mean((s_new - y_new) ** 2) - 0.05
    # Reliability: within score deciles the mean calibrated probability matches the rate.
    bins = np.quantile(calibrated, np.linspace(0, 1, 11))
    index = np.clip(np.searchsorted(bins, calibrated, side="right") - 1, 0, 9)
    for b in range(10):
        members = index == b
        assert abs(calibrated[members].mean() - y_new[members].mean()) < 0.05

    predictions = (s_new >= 0.5).astype(np.int64)
    realised = realised_performance(y_new, s_new, predictions)
    fixed = estimate_performance(s_new, calibrator=calibrator)
    naive = estimate_performance(s_new)
    assert fixed["accuracy"].contains(realised["accuracy"] or 0.0)
    assert abs(fixed["accuracy"].value - (realised["accuracy"] or 0.0)) < 0.02
    assert abs(naive["accuracy"].value - (realised["accuracy"] or 0.0)) > 0.1
    assert fixed.calibration == "isotonic"


def test_auto_keeps_calibrated_scores_as_they_are() -> None:
    p, y = _calibrated(20, 20_000)
    calibrator = fit_calibrator(p, y)
    assert calibrator.method == "identity"
    assert "already calibrated" in calibrator.reason
    np.testing.assert_array_equal(calibrator.transform(p), p)
    assert fit_calibrator(p, y, method="isotonic").method == "isotonic"
    assert fit_calibrator(p, y, method="identity").reason == "requested"


def test_calibrator_round_trips_through_json() -> None:
    p, y = _calibrated(4, 3_000)
    calibrator = fit_calibrator(p**2, y, method="isotonic")
    restored = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert restored == calibrator
    np.testing.assert_array_equal(restored.transform(p), calibrator.transform(p))


def test_isotonic_map_matches_sklearn() -> None:
    from sklearn.isotonic import IsotonicRegression

    p, y = _calibrated(5, 2_000)
    s = p**2
    calibrator = fit_calibrator(s, y, method="isotonic")
    model = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y)
    grid = np.linspace(0, 1, 101)
    np.testing.assert_allclose(calibrator.transform(grid), model.predict(grid), atol=1e-12)


def test_string_labels_with_positive() -> None:
    p, y = _calibrated(6, 1_000)
    labels = np.where(y == 1, "yes", "no")
    calibrator = fit_calibrator(p, labels, method="isotonic", positive="yes")
    assert calibrator == fit_calibrator(p, y, method="isotonic")


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"method": "platt"}, "'isotonic' or 'identity'"),
        ({"method": "isotonic", "x": [0.1, 0.2], "y": [0.5]}, "equal, non-zero length"),
        ({"method": "isotonic", "x": [0.2, 0.1], "y": [0.1, 0.5]}, "strictly increasing"),
        ({"method": "isotonic", "x": [0.1, 0.2], "y": [0.1, 1.5]}, r"\[0, 1\]"),
        ({"method": "identity", "n_reference": -1}, "n_reference"),
    ],
)
def test_invalid_calibrator_state(state: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        Calibrator.from_dict(state)


# -- invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "match"),
    [
        ([0.2, 1.2], r"probabilities in \[0, 1\]"),
        ([-0.1, 0.5], r"probabilities in \[0, 1\]"),
        ([0.2, float("nan")], "must not contain NaN"),
        ([], "must not be empty"),
        ([[0.1, 0.2], [0.3, 0.4]], "must be 1-D"),
        (["a", "b"], "must hold numbers"),
    ],
)
def test_invalid_scores(scores: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        estimate_performance(scores)
    with pytest.raises(InvalidInputError, match=match):
        fit_calibrator(scores, [0, 1])


def test_invalid_reference() -> None:
    with pytest.raises(InvalidInputError, match=r"same length\. Got 3 and 2"):
        fit_calibrator([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(InvalidInputError, match="both classes"):
        fit_calibrator([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(InvalidInputError, match="0/1 or bool labels"):
        fit_calibrator([0.1, 0.2, 0.3], ["a", "b", "a"])
    with pytest.raises(InvalidInputError, match="0/1 or bool labels"):
        fit_calibrator([0.1, 0.2, 0.3], [0, 2, 1])
    with pytest.raises(InvalidInputError, match="missing values"):
        fit_calibrator([0.1, 0.2, 0.3], [0, None, 1])
    with pytest.raises(InvalidInputError, match="'method'"):
        fit_calibrator([0.1, 0.2], [0, 1], method="platt")  # type: ignore[arg-type]


def test_invalid_estimate_options() -> None:
    with pytest.raises(InvalidInputError, match="'threshold'"):
        estimate_performance([0.1, 0.9], threshold=1.5)
    with pytest.raises(InvalidInputError, match="'level'"):
        estimate_performance([0.1, 0.9], level=1.0)
    with pytest.raises(InvalidInputError, match="'n_simulations'"):
        estimate_performance([0.1, 0.9], n_simulations=1)
    with pytest.raises(InvalidInputError, match="Calibrator"):
        estimate_performance([0.1, 0.9], calibrator={"method": "identity"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="same length"):
        expected_roc_auc([0.1, 0.2], [0.5])


# -- realised -----------------------------------------------------------------------------


def test_realised_performance_matches_sklearn() -> None:
    p, y = _calibrated(8, 1_000)
    predicted = (p >= 0.5).astype(np.int64)
    realised = realised_performance(y, p, predicted)
    assert realised["accuracy"] == pytest.approx(accuracy_score(y, predicted))
    assert realised["f1"] == pytest.approx(f1_score(y, predicted))
    assert realised["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert set(realised) == set(ESTIMATED_METRICS)


def test_realised_performance_edge_cases() -> None:
    one_class = realised_performance([1, 1, 1], [0.2, 0.6, 0.9], [0, 1, 1])
    assert one_class["roc_auc"] is None
    assert one_class["accuracy"] == pytest.approx(2 / 3)
    assert realised_performance([0, 1], None, [0, 1])["roc_auc"] is None
    with pytest.raises(InvalidInputError, match="labels and predictions"):
        realised_performance([0, 1, 1], [0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(InvalidInputError, match="labels and scores"):
        realised_performance([0, 1], [0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(InvalidInputError, match="NaN"):
        realised_performance([0, 1], [0.1, float("nan")], [0, 1])


# -- join_feedback ------------------------------------------------------------------------


def _predictions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [10, 11, 12, 13, 14],
            "_request_id": ["a", "b", "b", "b", "c"],
            "_prediction": [1, 0, 1, 0, 1],
            "_score": [0.9, 0.2, 0.7, 0.1, 0.8],
        }
    )


def test_join_on_request_id_for_single_row_requests() -> None:
    ts = pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02", "2024-01-01"], utc=True)
    feedback = pd.DataFrame(
        {"_request_id": ["c", "a", "a", "zzz"], "_label": [0, 1, 0, 1], "_feedback_ts": ts}
    )
    joined = join_feedback(_predictions(), feedback)
    assert joined["_request_id"].tolist() == ["a", "c"]  # predictions' order, inner join
    assert joined["_label"].tolist() == [1, 0]  # latest label of "a" wins (2024-01-03)
    assert joined["x"].tolist() == [10, 14]
    assert list(joined.columns) == [*_predictions().columns, "_label", "_feedback_ts"]


def test_a_batch_request_label_is_never_copied_to_every_row() -> None:
    feedback = pd.DataFrame({"_request_id": ["b", "a"], "_label": [1, 0]})
    match = match_feedback(_predictions(), feedback)
    assert match.joined["_request_id"].tolist() == ["a"]  # "b" predicted 3 rows: left out
    assert match.ignored == {"ambiguous": 1}


def test_labels_that_cannot_be_joined_are_counted_and_never_break_the_others() -> None:
    """A mixed batch as an older version, a hand-written file or an unknown request id leave
    it in the feedback log: every good label still joins; each bad one is counted once."""
    feedback = pd.DataFrame(
        {
            "_request_id": ["a", "b", "b", "nonexistent", None, "", "c", "b", "c", "b"],
            "_row": pd.Series([None, 0, 2, None, 0, 0, None, None, "x", -1], dtype=object),
            "_label": [1, 0, 1, "banana", 1, 1, 0, 1, 1, 1],
        }
    )
    match = match_feedback(_predictions(), feedback)
    assert match.joined["x"].tolist() == [10, 11, 13, 14]
    assert match.joined["_label"].tolist() == [1, 0, 1, 0]
    # None and "" request ids, a row "x" and a row -1; "b" without a row; "nonexistent"
    assert match.ignored == {"malformed": 4, "ambiguous": 1, "unmatched": 1}
    assert match.n_ignored == 6
    # a missing label, and a row past the end of its request
    more = pd.DataFrame({"_request_id": ["a", "b"], "_row": [0, 7], "_label": [None, 1]})
    assert match_feedback(_predictions(), more).ignored == {"malformed": 1, "unmatched": 1}
    assert match_feedback(_predictions(), more).joined.empty


def test_a_label_with_a_row_and_one_without_for_one_row_keep_the_latest() -> None:
    ts = pd.to_datetime(["2024-01-02", "2024-01-01"], utc=True)
    feedback = pd.DataFrame(
        {
            "_request_id": ["a", "a"],
            "_row": pd.array([None, 0], "Int64"),
            "_label": [1, 0],
            "_feedback_ts": ts,
        }
    )
    joined = join_feedback(_predictions(), feedback)
    assert joined["_label"].tolist() == [1]  # the one posted on 2024-01-02


def test_join_on_row_positions() -> None:
    feedback = pd.DataFrame(
        {"_request_id": ["b", "b", "a"], "_row": [2, 0, 0], "_label": [1, 0, 1]}
    )
    joined = join_feedback(_predictions(), feedback)  # _row derived from the log's order
    assert joined["x"].tolist() == [10, 11, 13]
    assert joined["_label"].tolist() == [1, 0, 1]
    explicit = _predictions().assign(_row=[0, 0, 2, 1, 0])
    joined = join_feedback(explicit, feedback)
    assert joined["x"].tolist() == [10, 11, 12]
    assert joined["_label"].tolist() == [1, 0, 1]


def test_last_label_wins_without_timestamps() -> None:
    feedback = pd.DataFrame({"_request_id": ["a", "a"], "_label": [0, 1]})
    assert join_feedback(_predictions(), feedback)["_label"].tolist() == [1]


def test_invalid_join_inputs() -> None:
    with pytest.raises(InvalidInputError, match="Missing: \\['_label'\\]"):
        join_feedback(_predictions(), pd.DataFrame({"_request_id": ["a"]}))
    with pytest.raises(InvalidInputError, match="must not already have"):
        join_feedback(
            _predictions().assign(_label=1), pd.DataFrame({"_request_id": ["a"], "_label": [0]})
        )
    with pytest.raises(InvalidInputError, match="DataFrame"):
        join_feedback(_predictions(), {"_request_id": ["a"]})  # type: ignore[arg-type]


def test_realised_regression_and_multiclass_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    from closedloop.domain.performance import realised_multiclass, realised_regression

    rng = np.random.default_rng(3)
    truth = rng.normal(100, 20, 500)
    predicted = truth + rng.normal(0, 10, 500)
    regression = realised_regression(truth, predicted)
    assert regression["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert regression["rmse"] == pytest.approx(math.sqrt(mean_squared_error(truth, predicted)))
    assert regression["r2"] == pytest.approx(r2_score(truth, predicted))
    assert realised_regression([5.0, 5.0], [4.0, 6.0])["r2"] is None  # constant labels

    classes = rng.integers(0, 3, 500)
    guesses = np.where(rng.random(500) < 0.7, classes, rng.integers(0, 3, 500))
    multiclass = realised_multiclass(classes, guesses, metrics=("accuracy", "recall"))
    assert multiclass["accuracy"] == pytest.approx(accuracy_score(classes, guesses))
    assert multiclass["macro_f1"] == pytest.approx(f1_score(classes, guesses, average="macro"))
    assert set(multiclass) == {"accuracy", "macro_f1", "recall"}
    # a window holding two of the classes is still macro-averaged, as the gate scores it
    two = realised_multiclass([0, 1, 1, 0], [0, 1, 0, 0], metrics=("f1",))
    assert two["f1"] == pytest.approx(f1_score([0, 1, 1, 0], [0, 1, 0, 0], average="macro"))
