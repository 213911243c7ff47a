"""Tests for closedloop.domain.metrics (scoring) and closedloop.domain.gate (promotion rule)."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from closedloop.domain.gate import (
    LATENCY_SLACK_PER_PASS,
    LATENCY_SLACK_PER_ROW,
    GateDecision,
    GateRules,
    bootstrap_resamples,
    decide,
    judge,
    judge_latency,
    select_slices,
)
from closedloop.domain.metrics import METRICS, Outputs, higher_is_better, row_terms, score
from closedloop.errors import ConfigError, InvalidInputError

# -- metrics -------------------------------------------------------------------------------

Y_TRUE = np.array([0, 0, 1, 1, 0, 1, 0, 1])
Y_PRED = np.array([0, 1, 1, 1, 0, 0, 0, 1])
Y_SCORE = np.array([0.1, 0.6, 0.8, 0.7, 0.2, 0.4, 0.3, 0.9])


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        ("accuracy", 6 / 8),
        ("precision", 3 / 4),
        ("recall", 3 / 4),
        ("f1", 3 / 4),
        ("roc_auc", 15 / 16),
    ],
)
def test_classification_metrics_match_hand_computed_values(metric: str, expected: float) -> None:
    value = score(metric, Y_TRUE, y_pred=Y_PRED, y_score=Y_SCORE)
    assert isinstance(value, float)
    assert value == pytest.approx(expected)


def test_log_loss_matches_definition() -> None:
    expected = -np.mean(Y_TRUE * np.log(Y_SCORE) + (1 - Y_TRUE) * np.log(1 - Y_SCORE))
    assert score("log_loss", Y_TRUE, y_score=Y_SCORE) == pytest.approx(expected)


def test_log_loss_accepts_a_single_class_with_binary_labels() -> None:
    assert score("log_loss", [1, 1], y_score=[0.9, 0.8]) == pytest.approx(
        -(math.log(0.9) + math.log(0.8)) / 2
    )


def test_regression_metrics() -> None:
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.5, 2.0, 2.0, 4.0])
    assert score("rmse", truth, y_pred=pred) == pytest.approx(math.sqrt((0.25 + 1.0) / 4))
    assert score("mae", truth, y_pred=pred) == pytest.approx(1.5 / 4)
    assert score("r2", truth, y_pred=pred) == pytest.approx(1 - 1.25 / 5.0)


def test_string_labels_use_the_larger_label_as_positive() -> None:
    truth = np.array(["no", "yes", "yes", "no"])
    pred = np.array(["no", "yes", "no", "no"])
    assert score("recall", truth, y_pred=pred) == pytest.approx(0.5)
    assert score("precision", truth, y_pred=pred) == pytest.approx(1.0)
    assert score("roc_auc", truth, y_score=[0.1, 0.9, 0.4, 0.3]) == pytest.approx(1.0)


def test_multiclass_uses_macro_average_and_probability_matrix() -> None:
    truth = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 2, 0, 2, 2])
    assert score("f1", truth, y_pred=pred) == pytest.approx((1 + 2 / 3 + 0.8) / 3)
    proba = np.eye(3)[truth] * 0.8 + 0.2 / 3
    assert score("roc_auc", truth, y_score=proba) == pytest.approx(1.0)
    assert score("log_loss", truth, y_score=proba) > 0


def test_zero_division_gives_zero_not_a_warning() -> None:
    # filterwarnings=error would turn sklearn's UndefinedMetricWarning into a failure.
    assert score("precision", [0, 1, 0], y_pred=[0, 0, 0]) == 0.0


def test_higher_is_better() -> None:
    assert set(METRICS) == {
        "roc_auc",
        "accuracy",
        "f1",
        "log_loss",
        "precision",
        "recall",
        "rmse",
        "mae",
        "r2",
    }
    lower = {m for m in METRICS if not higher_is_better(m)}
    assert lower == {"log_loss", "rmse", "mae"}


def test_unknown_metric_lists_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="roc_auc, accuracy") as info:
        score("auc", [0, 1], y_score=[0.1, 0.9])
    assert "'auc'" in info.value.message
    with pytest.raises(ConfigError):
        higher_is_better("mse")


def test_roc_auc_with_single_class_says_so() -> None:
    with pytest.raises(InvalidInputError, match="single class"):
        score("roc_auc", [1, 1, 1], y_score=[0.2, 0.5, 0.9])


@pytest.mark.parametrize(
    ("metric", "kwargs", "message"),
    [
        ("roc_auc", {"y_pred": [0, 1]}, "needs y_score"),
        ("log_loss", {}, "needs y_score"),
        ("accuracy", {"y_score": [0.2, 0.8]}, "needs y_pred"),
        ("rmse", {}, "needs y_pred"),
        ("accuracy", {"y_pred": [0, 1, 1]}, "same length"),
        ("roc_auc", {"y_score": [0.1, float("nan")]}, "NaN"),
        ("rmse", {"y_pred": ["a", "b"]}, "numeric"),
        ("log_loss", {"y_score": [0.5, 1.5]}, r"\[0, 1\]"),
    ],
)
def test_invalid_inputs_are_named(metric: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        score(metric, [0, 1], **kwargs)  # type: ignore[arg-type]


def test_empty_input_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        score("accuracy", [], y_pred=[])


def test_row_terms_reproduce_score_on_all_rows_and_on_resampled_rows() -> None:
    rng = np.random.default_rng(0)
    for metric in METRICS:
        for truth, labels, scores in _problems(metric, rng):
            terms = row_terms(metric, truth, y_pred=labels, y_score=scores)
            n = len(truth)
            everything = terms.weighted(np.ones((1, n)))[0]
            assert everything == pytest.approx(score(metric, truth, labels, scores), abs=1e-12)
            rows = rng.integers(0, n, n)  # one bootstrap resample, as row multiplicities
            weights = np.bincount(rows, minlength=n)[None, :]
            expected = score(metric, truth[rows], _at(labels, rows), _at(scores, rows))
            assert terms.weighted(weights)[0] == pytest.approx(expected, abs=1e-12), metric


def test_row_terms_mark_undefined_reweightings_as_nan() -> None:
    terms = row_terms("roc_auc", Y_TRUE, y_score=Y_SCORE)
    only_negatives = (Y_TRUE == 0).astype(float)[None, :]
    assert np.isnan(terms.weighted(only_negatives)[0])
    constant = row_terms("r2", [1.0, 1.0, 2.0], y_pred=[1.0, 1.5, 2.0])
    assert np.isnan(constant.weighted(np.array([[1.0, 1.0, 0.0]]))[0])
    with pytest.raises(InvalidInputError, match=r"shape \(k, 8\)"):
        terms.weighted(np.ones((1, 3)))


def _problems(metric: str, rng: np.random.Generator) -> list[tuple[Any, Any, Any]]:
    """(truth, labels, scores) for a binary and a three-class problem, or a regression."""
    if metric in ("rmse", "mae", "r2"):
        truth = rng.normal(size=80)
        return [(truth, truth + rng.normal(scale=0.5, size=80), None)]
    binary = rng.integers(0, 2, 150)
    proba = np.clip(binary * 0.3 + rng.random(150) * 0.7, 0.01, 0.99)
    classes = rng.integers(0, 3, 120)
    matrix = rng.dirichlet([1, 1, 1], 120) + np.eye(3)[classes]
    matrix /= matrix.sum(axis=1, keepdims=True)
    return [
        (binary, (proba > 0.5).astype(int), proba),
        (classes, matrix.argmax(axis=1), matrix),
    ]


def _at(values: Any, rows: np.ndarray) -> Any:
    return None if values is None else values[rows]


# -- gate: the decision from figures (decide) ----------------------------------------------


def test_no_incumbent_passes() -> None:
    decision = decide("roc_auc", 0.7, None, margin=0.05)
    assert decision.passed
    assert decision.improvement is None
    assert decision.interval is None and decision.slices == () and decision.latency is None
    assert decision.reason.startswith("no incumbent in production")
    assert decision.reasons == (decision.reason,)
    assert "0.700" in decision.reason


def test_without_an_interval_the_point_improvement_must_be_strictly_above_the_margin() -> None:
    decision = decide("roc_auc", 0.812, 0.781, margin=0.0)
    assert decision.passed
    assert decision.improvement == pytest.approx(0.031)
    assert decision.reason == (
        "candidate roc_auc 0.812 beats incumbent 0.781 by 0.031 > margin 0.000"
    )


def test_an_improvement_equal_to_the_margin_does_not_pass_despite_float_rounding() -> None:
    # 0.81 - 0.78 is 0.030000000000000027 in binary floating point: still only equal.
    equal = decide("roc_auc", 0.81, 0.78, margin=0.03)
    assert not equal.passed
    assert "by only 0.030 ≤ margin 0.030" in equal.reason
    assert decide("roc_auc", 0.81, 0.78, margin=0.029).passed


def test_improvement_below_margin_fails() -> None:
    decision = decide("f1", 0.80, 0.79, margin=0.02)
    assert not decision.passed
    assert decision.improvement == pytest.approx(0.01)
    assert "≤ margin 0.020" in decision.reason
    assert "0.800" in decision.reason and "0.790" in decision.reason


def test_worse_candidate_fails() -> None:
    decision = decide("accuracy", 0.70, 0.75)
    assert not decision.passed
    assert decision.improvement == pytest.approx(-0.05)
    assert "worse than incumbent 0.750 by 0.050" in decision.reason


def test_tie_fails_even_with_zero_margin() -> None:
    decision = decide("roc_auc", 0.8, 0.8, margin=0.0)
    assert not decision.passed
    assert decision.improvement == 0.0
    assert "tie" in decision.reason and "strictly improve" in decision.reason


@pytest.mark.parametrize("metric", ["log_loss", "rmse", "mae"])
def test_lower_is_better_metrics_invert_the_direction(metric: str) -> None:
    better = decide(metric, 0.30, 0.40, margin=0.05)
    assert better.passed
    assert better.improvement == pytest.approx(0.10)
    worse = decide(metric, 0.40, 0.30)
    assert not worse.passed
    assert worse.improvement == pytest.approx(-0.10)
    assert "lower is better" in worse.reason


def test_small_and_large_values_stay_readable() -> None:
    tiny = decide("roc_auc", 0.8003, 0.8, margin=0.0)
    assert tiny.passed
    assert "by 0.0003" in tiny.reason
    big = decide("rmse", 1_234_567.0, 2_345_678.0)
    assert "1.23e+06" in big.reason


@pytest.mark.parametrize(
    ("candidate", "incumbent"),
    [(float("nan"), 0.5), (0.5, float("nan")), (float("inf"), 0.5), ("0.5", 0.5), (True, 0.5)],
)
def test_non_finite_scores_are_rejected(candidate: object, incumbent: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a finite number"):
        decide("roc_auc", candidate, incumbent)  # type: ignore[arg-type]


@pytest.mark.parametrize("margin", [-3, float("nan"), float("inf"), "0.1", None])
def test_invalid_margin_is_rejected_sklearn_style(margin: object) -> None:
    with pytest.raises(InvalidInputError) as info:
        decide("roc_auc", 0.8, 0.7, margin=margin)  # type: ignore[arg-type]
    assert info.value.message == (
        f"The 'margin' parameter must be a float >= 0. Got {margin!r} instead."
    )


def test_unknown_metric_in_gate_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        decide("auc", 0.8, 0.7)


def test_numpy_scores_are_accepted_and_stored_as_float() -> None:
    incumbent: object = np.float32(0.8)
    decision = decide("roc_auc", np.float64(0.9), incumbent, margin=np.float64(0.01))  # type: ignore[arg-type]
    assert decision.passed
    assert type(decision.candidate) is float and type(decision.incumbent) is float


# -- gate: the paired bootstrap interval -----------------------------------------------------


def classifier(y: np.ndarray, signal: float, rng: np.random.Generator) -> Outputs:
    """A binary classifier whose scores separate the classes more the larger ``signal``."""
    logit = signal * (2 * y - 1) + rng.normal(size=len(y))
    scores = 1 / (1 + np.exp(-logit))
    return Outputs(labels=(scores > 0.5).astype(int), scores=scores)


def test_a_clearly_better_candidate_passes_with_its_interval_above_the_margin() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    decision = judge("roc_auc", y, classifier(y, 1.5, rng), classifier(y, 0.5, rng), margin=0.02)
    interval = decision.interval
    assert interval is not None and interval.low is not None and interval.high is not None
    assert decision.passed
    assert 0.02 < interval.low < decision.improvement < interval.high  # type: ignore[operator]
    assert (interval.n_bootstrap, interval.n_undefined, interval.confidence) == (1000, 0, 0.95)
    assert "95% interval" in decision.reason and "lies above margin 0.020" in decision.reason


def test_a_point_estimate_above_the_margin_fails_when_the_interval_straddles_it() -> None:
    # The candidate is the incumbent with its lowest-scored positive moved to the top: a real
    # but tiny improvement that rests on one of 60 held-out rows, absent from ~37% of resamples.
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    incumbent = classifier(y, 1.0, rng)
    scores = incumbent.scores.copy()
    lowest_positive = np.flatnonzero(y == 1)[np.argmin(scores[y == 1])]
    scores[lowest_positive] = 0.999
    candidate = Outputs(labels=(scores > 0.5).astype(int), scores=scores)

    decision = judge("roc_auc", y, candidate, incumbent, margin=0.005)
    interval = decision.interval
    assert interval is not None and interval.low is not None
    assert decision.improvement is not None and decision.improvement > 0.005  # point: above
    assert interval.low <= 0.005  # … but the interval reaches below the margin
    assert not decision.passed
    assert "not clearly" in decision.reason


def test_a_worse_candidate_fails_and_a_tie_never_passes() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 500)
    good, bad = classifier(y, 1.5, rng), classifier(y, 0.3, rng)
    worse = judge("roc_auc", y, bad, good)
    assert not worse.passed
    assert worse.interval is not None and worse.interval.high is not None
    assert worse.interval.high < 0
    assert "worse than incumbent" in worse.reason

    tie = judge("roc_auc", y, good, Outputs(good.labels.copy(), good.scores.copy()), margin=0.0)
    assert not tie.passed
    assert tie.interval is not None and (tie.interval.low, tie.interval.high) == (0.0, 0.0)
    assert "tie" in tie.reason


def test_lower_is_better_metrics_flip_the_interval() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(size=400)
    close = Outputs(truth + rng.normal(scale=0.3, size=400))
    far = Outputs(truth + rng.normal(scale=1.0, size=400))
    decision = judge("rmse", truth, close, far)
    assert decision.passed
    assert decision.interval is not None and decision.interval.low is not None
    assert decision.interval.low > 0  # improvement = incumbent's error - candidate's


SKLEARN: dict[str, Any] = {
    "roc_auc": lambda y, o: roc_auc_score(y, o.scores, multi_class="ovr"),
    "accuracy": lambda y, o: accuracy_score(y, o.labels),
    "f1": lambda y, o: f1_score(y, o.labels, zero_division=0, **_averaging(o)),
    "precision": lambda y, o: precision_score(y, o.labels, zero_division=0, **_averaging(o)),
    "recall": lambda y, o: recall_score(y, o.labels, zero_division=0, **_averaging(o)),
    "log_loss": lambda y, o: log_loss(y, o.scores, labels=_labels(o)),
    "rmse": lambda y, o: math.sqrt(mean_squared_error(y, o.labels)),
    "mae": lambda y, o: mean_absolute_error(y, o.labels),
    "r2": lambda y, o: r2_score(y, o.labels),
}


def _averaging(outputs: Outputs) -> dict[str, Any]:
    multiclass = outputs.scores is not None and np.ndim(outputs.scores) == 2
    return {"average": "macro"} if multiclass else {"average": "binary", "pos_label": 1}


def _labels(outputs: Outputs) -> list[int]:
    return [0, 1, 2] if np.ndim(outputs.scores) == 2 else [0, 1]


def reference_interval(
    metric: str, y: np.ndarray, candidate: Outputs, incumbent: Outputs, rules: GateRules
) -> tuple[float, float, int]:
    """The slow way: one resample at a time, scored with scikit-learn."""
    improvements, undefined = [], 0
    for block in bootstrap_resamples(len(y), rules.bootstrap, rules.seed):
        for rows in block:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", UndefinedMetricWarning)
                    both = [
                        SKLEARN[metric](y[rows], _take(o, rows)) for o in (candidate, incumbent)
                    ]
            except (ValueError, UndefinedMetricWarning):  # e.g. roc_auc with one class only
                undefined += 1
                continue
            gain = both[0] - both[1]
            improvements.append(gain if higher_is_better(metric) else -gain)
    tail = 100 * (1 - rules.confidence) / 2
    low, high = np.percentile(improvements, [tail, 100 - tail])
    return float(low), float(high), undefined


def _take(outputs: Outputs, rows: np.ndarray) -> Outputs:
    scores = None if outputs.scores is None else outputs.scores[rows]
    return Outputs(outputs.labels[rows], scores)


def _pair(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, Outputs, Outputs]:
    if kind == "regression":
        truth = rng.normal(size=80)
        return (
            truth,
            Outputs(truth + rng.normal(scale=0.5, size=80)),
            Outputs(truth + rng.normal(scale=0.8, size=80)),
        )
    if kind == "multiclass":
        y = rng.integers(0, 3, 90)
        pair = []
        for strength in (1.5, 0.8):
            matrix = rng.dirichlet([1, 1, 1], 90) + strength * np.eye(3)[y]
            matrix /= matrix.sum(axis=1, keepdims=True)
            pair.append(Outputs(matrix.argmax(axis=1), matrix))
        return y, pair[0], pair[1]
    # binary, few positives: some resamples hold none, and roc_auc is undefined on them
    y = (rng.random(60) < 0.08).astype(int)
    y[:4] = 1
    return y, classifier(y, 1.2, rng), classifier(y, 0.6, rng)


@pytest.mark.parametrize(
    ("metric", "kind"),
    [
        ("roc_auc", "binary"),
        ("accuracy", "binary"),
        ("f1", "binary"),
        ("precision", "binary"),
        ("recall", "binary"),
        ("log_loss", "binary"),
        ("roc_auc", "multiclass"),
        ("f1", "multiclass"),
        ("log_loss", "multiclass"),
        ("rmse", "regression"),
        ("mae", "regression"),
        ("r2", "regression"),
    ],
)
def test_the_interval_equals_a_slow_scikit_learn_reference_on_the_same_resamples(
    metric: str, kind: str
) -> None:
    y, candidate, incumbent = _pair(kind, np.random.default_rng(4))
    rules = GateRules(bootstrap=300, confidence=0.9, seed=11)
    interval = judge(metric, y, candidate, incumbent, rules=rules).interval
    assert interval is not None and interval.low is not None and interval.high is not None

    low, high, undefined = reference_interval(metric, y, candidate, incumbent, rules)
    assert interval.low == pytest.approx(low, abs=1e-9)
    assert interval.high == pytest.approx(high, abs=1e-9)
    assert interval.n_undefined == undefined
    assert (interval.n_bootstrap, interval.confidence, interval.seed) == (300, 0.9, 11)
    if (metric, kind) == ("roc_auc", "binary"):
        assert 0 < undefined <= 30  # some resamples had no positive: dropped and counted


def test_too_many_undefined_resamples_fail_the_gate_and_say_so() -> None:
    # 2 positives in 40 rows: about 13% of resamples hold none, where roc_auc is undefined.
    rng = np.random.default_rng(5)
    y = np.zeros(40, dtype=int)
    y[:2] = 1
    candidate = Outputs(labels=y.copy(), scores=np.where(y == 1, 0.9, rng.random(40) * 0.5))
    incumbent = classifier(y, 0.2, rng)
    decision = judge("roc_auc", y, candidate, incumbent)
    assert decision.improvement is not None and decision.improvement > 0
    assert decision.interval is not None and decision.interval.n_undefined > 100
    assert not decision.passed
    assert "undefined on" in decision.reason and "too few or too unbalanced" in decision.reason


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 300)
    candidate, incumbent = classifier(y, 1.0, rng), classifier(y, 0.8, rng)
    first = judge("roc_auc", y, candidate, incumbent, rules=GateRules(seed=1)).interval
    again = judge("roc_auc", y, candidate, incumbent, rules=GateRules(seed=1)).interval
    other = judge("roc_auc", y, candidate, incumbent, rules=GateRules(seed=2)).interval
    assert first == again
    assert other is not None and first is not None and other.low != first.low


@pytest.mark.parametrize(
    ("setting", "value", "expected"),
    [
        ("bootstrap", 0, "gate.bootstrap must be an int >= 1"),
        ("bootstrap", 10.5, "gate.bootstrap must be an int >= 1"),
        ("confidence", 1.0, "gate.confidence must be a float in (0, 1)"),
        ("confidence", 0, "gate.confidence must be a float in (0, 1)"),
        ("slice_tolerance", -0.1, "gate.slice_tolerance must be a float >= 0"),
        ("min_slice_rows", 0, "gate.min_slice_rows must be an int >= 1"),
        ("latency_tolerance", float("nan"), "gate.latency_tolerance must be a float >= 0"),
        ("seed", -1, "gate.seed must be an int >= 0"),
    ],
)
def test_invalid_gate_rules_are_config_errors_naming_the_setting(
    setting: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        GateRules(**{setting: value})  # type: ignore[arg-type]
    assert expected in info.value.message
    assert repr(value) in info.value.message


# -- gate: slices --------------------------------------------------------------------------


def test_a_candidate_better_overall_but_worse_on_one_slice_fails_naming_the_slice() -> None:
    rng = np.random.default_rng(3)
    region = np.array(["north"] * 700 + ["south"] * 280 + ["east"] * 20, dtype=object)
    y = rng.integers(0, 2, len(region))
    incumbent = classifier(y, 1.0, rng)  # equally good everywhere
    strong, weak = classifier(y, 2.5, rng), classifier(y, 0.3, rng)
    worse_here = region != "north"  # the candidate is much better on north, worse elsewhere
    candidate = Outputs(
        labels=np.where(worse_here, weak.labels, strong.labels),
        scores=np.where(worse_here, weak.scores, strong.scores),
    )
    decision = judge("roc_auc", y, candidate, incumbent, slices={"region": region})

    assert decision.interval is not None and decision.interval.low is not None
    assert decision.interval.low > 0  # clearly better overall …
    assert not decision.passed  # … but not on every slice
    by_value = {s.value: s for s in decision.slices}
    assert list(by_value) == ["east", "north", "south"]
    south, north, east = by_value["south"], by_value["north"], by_value["east"]
    assert (south.n, south.judged, south.passed) == (280, True, False)
    rows = region == "south"
    assert south.candidate == pytest.approx(roc_auc_score(y[rows], candidate.scores[rows]))
    assert south.incumbent == pytest.approx(roc_auc_score(y[rows], incumbent.scores[rows]))
    assert (north.judged, north.passed) == (True, True)
    # east is worse too, but 20 rows are fewer than min_slice_rows: reported, not judged.
    assert east.candidate is not None and east.incumbent is not None
    assert east.candidate < east.incumbent - 0.05
    assert (east.n, east.judged, east.passed) == (20, False, True)
    assert "fewer than 30 rows" in east.note
    assert decision.failing_slices == (south,)
    assert "slice region=south (n=280)" in decision.reason
    assert "east" not in decision.reason


def test_a_slice_within_the_tolerance_passes_and_an_undefined_one_is_not_judged() -> None:
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 400)
    y[:40] = 0  # segment "a": one class only, roc_auc undefined there
    segment = np.where(np.arange(400) < 40, "a", "b")
    candidate, incumbent = classifier(y, 1.6, rng), classifier(y, 0.8, rng)
    decision = judge("roc_auc", y, candidate, incumbent, slices={"segment": segment})
    assert decision.passed
    undefined, judged = decision.slices
    assert (undefined.value, undefined.judged, undefined.candidate) == ("a", False, None)
    assert "roc_auc undefined on this slice" in undefined.note
    assert (judged.value, judged.judged, judged.passed) == ("b", True, True)
    assert "no slice regresses beyond tolerance (1 judged, 1 too small or undefined)" in (
        decision.reason
    )


def test_numeric_and_missing_slice_values_are_kept_as_plain_json_values() -> None:
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, 300)
    grade = np.array([1.0, 2.0, np.nan] * 100)
    decision = judge(
        "accuracy", y, classifier(y, 1.5, rng), classifier(y, 0.5, rng), slices={"grade": grade}
    )
    assert [(s.value, s.n) for s in decision.slices] == [(1.0, 100), (2.0, 100), (None, 100)]
    assert all(type(s.value) in (float, type(None)) for s in decision.slices)


def test_a_slice_column_missing_from_the_held_out_rows_is_a_config_error() -> None:
    holdout = pd.DataFrame({"region": ["a", "b"], "income": [1.0, 2.0], "default": [0, 1]})
    with pytest.raises(ConfigError) as info:
        select_slices(["regoin"], holdout)
    message = info.value.message
    assert "gate.slices names 'regoin'" in message
    assert "Available columns: region, income, default" in message
    assert select_slices(["region", "region"], holdout).keys() == {"region"}


def test_a_slice_column_with_too_many_values_is_a_config_error() -> None:
    holdout = pd.DataFrame({"income": np.arange(500.0)})
    with pytest.raises(ConfigError, match="'income' has 500 distinct values"):
        select_slices(["income"], holdout)


# -- gate: latency -------------------------------------------------------------------------


def test_a_much_slower_candidate_fails_the_latency_check() -> None:
    check = judge_latency(0.5, 0.01, n_rows=1000, tolerance=0.5)
    assert not check.passed
    assert check.ratio == pytest.approx(50)
    assert check.candidate_seconds_per_row == pytest.approx(0.5 / 1000)

    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 1000)
    decision = judge("roc_auc", y, classifier(y, 1.5, rng), classifier(y, 0.5, rng), latency=check)
    assert decision.interval is not None and decision.interval.low is not None
    assert decision.interval.low > 0  # better …
    assert not decision.passed  # … but far too slow
    assert decision.latency == check
    assert "candidate too slow" in decision.reason and "50.00x" in decision.reason


def test_latency_within_the_tolerance_passes() -> None:
    check = judge_latency(0.14, 0.1, n_rows=10_000, tolerance=0.5)
    assert check.passed
    assert check.ratio == pytest.approx(1.4)


def test_the_latency_slack_keeps_tiny_models_from_failing_on_overhead() -> None:
    # 4x slower, but by 3 ms on a 100-row pass: per-call overhead, inside the slack.
    check = judge_latency(0.004, 0.001, n_rows=100, tolerance=0.5)
    assert check.passed
    assert check.allowed_seconds_per_row == pytest.approx(
        0.001 / 100 * 1.5 + LATENCY_SLACK_PER_ROW + LATENCY_SLACK_PER_PASS / 100
    )
    assert not judge_latency(
        0.004 + LATENCY_SLACK_PER_PASS, 0.001, n_rows=100, tolerance=0.5
    ).passed


# -- gate: the decision record ----------------------------------------------------------------


def full_decision() -> GateDecision:
    rng = np.random.default_rng(12)
    region = np.array(["n", "s", "e"] * 100)
    y = rng.integers(0, 2, 300)
    return judge(
        "roc_auc",
        y,
        classifier(y, 1.5, rng),
        classifier(y, 0.5, rng),
        rules=GateRules(bootstrap=200),
        slices={"region": region},
        latency=judge_latency(0.02, 0.01, n_rows=300, tolerance=0.5),
    )


@pytest.mark.parametrize(
    "decision",
    [
        decide("roc_auc", 0.812, 0.781),
        decide("rmse", 2.0, None, margin=0.5),
        full_decision(),
    ],
)
def test_decision_round_trips_through_json(decision: GateDecision) -> None:
    data = json.loads(json.dumps(decision.to_dict()))
    assert GateDecision.from_dict(data) == decision


def test_the_record_carries_every_figure() -> None:
    data = full_decision().to_dict()
    assert set(data["interval"]) == {
        "low", "high", "confidence", "n_bootstrap", "n_undefined", "seed",
    }  # fmt: skip
    assert {"column", "value", "n", "candidate", "incumbent", "judged", "passed"} <= set(
        data["slices"][0]
    )
    assert set(data["latency"]) >= {
        "candidate_seconds_per_row", "incumbent_seconds_per_row", "ratio", "passed",
    }  # fmt: skip
    assert data["reason"] == "; ".join(data["reasons"])
    assert len(data["reasons"]) == 3  # improvement, slices, latency


def test_old_shape_decisions_still_load() -> None:
    # As stored in version lineage and gate.decided payloads before the interval existed.
    old = {
        "passed": True,
        "metric": "roc_auc",
        "candidate": 0.812,
        "incumbent": 0.781,
        "margin": 0.0,
        "improvement": 0.031,
        "reason": "candidate roc_auc 0.812 beats incumbent 0.781 by 0.031 ≥ margin 0.000",
        "incumbent_version": 1,
        "note": "",
    }
    decision = GateDecision.from_dict(old)
    assert (decision.passed, decision.candidate, decision.incumbent) == (True, 0.812, 0.781)
    assert decision.interval is None and decision.slices == () and decision.latency is None
    assert decision.reasons == (old["reason"],)
    assert GateDecision.from_dict(decision.to_dict()) == decision


def test_from_dict_names_missing_keys() -> None:
    data = decide("roc_auc", 0.8, 0.7).to_dict()
    del data["margin"]
    with pytest.raises(InvalidInputError, match="Missing: margin"):
        GateDecision.from_dict(data)


def test_from_dict_rejects_a_malformed_interval() -> None:
    data = full_decision().to_dict()
    data["interval"] = {"low": "x"}
    with pytest.raises(InvalidInputError, match="malformed"):
        GateDecision.from_dict(data)


# -- the decision's figures as run metrics ------------------------------------------------------


def test_metrics_flatten_every_computed_figure_and_leave_out_the_undefined_ones() -> None:
    from closedloop.domain.gate import Interval, SliceCheck

    interval = Interval(
        low=0.01, high=0.05, confidence=0.95, n_bootstrap=200, n_undefined=3, seed=0
    )
    slices = (
        SliceCheck("region", "north", 40, 0.81, 0.78, True, True, ""),
        SliceCheck("region", "south", 5, None, None, False, True, "not judged"),
    )
    latency = judge_latency(0.002, 0.001, n_rows=100, tolerance=0.5)
    decision = decide("roc_auc", 0.8, 0.77, 0.0, interval=interval, slices=slices, latency=latency)

    assert decision.metrics() == {
        "roc_auc": 0.8,
        "gate.incumbent.roc_auc": 0.77,
        "gate.improvement": pytest.approx(0.03),
        "gate.improvement.low": 0.01,
        "gate.improvement.high": 0.05,
        "gate.bootstrap.undefined": 3.0,
        "gate.passed": 1.0,
        "gate.slice.region=north.candidate": 0.81,
        "gate.slice.region=north.incumbent": 0.78,
        "gate.slice.region=north.rows": 40.0,
        "gate.slice.region=south.rows": 5.0,  # metric undefined there: only the row count
        "gate.latency.candidate_seconds_per_row": 2e-5,
        "gate.latency.incumbent_seconds_per_row": 1e-5,
        "gate.latency.allowed_seconds_per_row": latency.allowed_seconds_per_row,
        "gate.latency.ratio": 2.0,
    }
    assert decide("rmse", 1.5, None).metrics() == {"rmse": 1.5, "gate.passed": 1.0}


def test_a_slice_metric_name_stays_within_what_the_store_holds() -> None:
    from closedloop.domain.gate import SliceCheck

    long_value = "x" * 500
    checks = (SliceCheck("segment", long_value, 40, 0.8, 0.7, True, True, ""),)
    decision = decide("accuracy", 0.8, 0.7, slices=checks)
    assert all(len(name) <= 200 for name in decision.metrics())
