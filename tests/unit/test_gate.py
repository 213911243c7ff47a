"""Tests for closedloop.domain.metrics (scoring) and closedloop.domain.gate (promotion rule)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from closedloop.domain.gate import GateDecision, decide
from closedloop.domain.metrics import METRICS, higher_is_better, score
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


# -- gate ----------------------------------------------------------------------------------


def test_no_incumbent_passes() -> None:
    decision = decide("roc_auc", 0.7, None, margin=0.05)
    assert decision.passed
    assert decision.improvement is None
    assert decision.reason.startswith("no incumbent in production")
    assert "0.700" in decision.reason


def test_candidate_that_beats_incumbent_by_margin_passes() -> None:
    decision = decide("roc_auc", 0.812, 0.781, margin=0.0)
    assert decision.passed
    assert decision.improvement == pytest.approx(0.031)
    assert (
        decision.reason == "candidate roc_auc 0.812 beats incumbent 0.781 by 0.031 ≥ margin 0.000"
    )


def test_improvement_exactly_equal_to_margin_passes_despite_float_rounding() -> None:
    # 0.81 - 0.78 is 0.030000000000000027 in binary floating point; 0.71 - 0.68 is below 0.03.
    assert decide("roc_auc", 0.81, 0.78, margin=0.03).passed
    assert decide("roc_auc", 0.71, 0.68, margin=0.03).passed


def test_improvement_below_margin_fails() -> None:
    decision = decide("f1", 0.80, 0.79, margin=0.02)
    assert not decision.passed
    assert decision.improvement == pytest.approx(0.01)
    assert "< margin 0.020" in decision.reason
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


@pytest.mark.parametrize(
    "decision",
    [decide("roc_auc", 0.812, 0.781), decide("rmse", 2.0, None, margin=0.5)],
)
def test_decision_round_trips_through_json(decision: GateDecision) -> None:
    data = json.loads(json.dumps(decision.to_dict()))
    assert GateDecision.from_dict(data) == decision


def test_from_dict_names_missing_keys() -> None:
    data = decide("roc_auc", 0.8, 0.7).to_dict()
    del data["margin"]
    with pytest.raises(InvalidInputError, match="Missing: margin"):
        GateDecision.from_dict(data)
