"""Label-free performance estimation for binary classifiers, realised metrics once labels
arrive (binary, multiclass, regression), and joining late labels.

Estimation (confidence-based performance estimation, as NannyML's CBPE)
    A calibrated positive-class probability ``p_i`` *is* the chance that row ``i`` is a
    positive. So, before any label arrives, every count of the confusion matrix has a known
    expectation: with ``ŷ_i = 1[s_i >= threshold]`` the model's thresholded prediction (from
    the raw score ``s_i``)::

        E[TP] = Σ p_i·ŷ_i        E[FP] = Σ (1-p_i)·ŷ_i
        E[FN] = Σ p_i·(1-ŷ_i)    E[TN] = Σ (1-p_i)·(1-ŷ_i)

    Accuracy ``(E[TP]+E[TN])/n`` and precision ``E[TP]/#{ŷ=1}`` are exact expectations (their
    denominators do not depend on the labels); recall ``E[TP]/Σp_i`` and F1
    ``2E[TP]/(#{ŷ=1} + Σp_i)`` are ratios of expectations (biased by O(1/n)). ROC AUC is the
    share of (positive, negative) pairs ranked correctly; treating each row as a positive with
    probability ``p_i`` and each pair ``i ≠ j`` independently::

        AUC_est = Σ_{i≠j} p_i (1-p_j) (1[s_i > s_j] + ½·1[s_i = s_j]) / Σ_{i≠j} p_i (1-p_j)

    (the ``i = j`` terms are excluded: a row is never its own positive *and* negative; the
    denominator is ``Σp·Σ(1-p) - Σp(1-p)``). It is computed in O(n log n): sort by score,
    group ties, and weigh each group's expected positives by the cumulative expected
    negatives below it (plus half of those within the group). With ``p`` equal to the true 0/1
    labels it is exactly the realised AUC.

Assumption (also in ``PerformanceEstimate.to_dict()["assumption"]``)
    No concept drift: ``P(y | x)`` is unchanged since the reference data, and the scores are
    calibrated on the reference data (raw, or after :func:`fit_calibrator`). Strictly, the
    estimate is unbiased when the calibrated score equals ``P(y = 1 | x)``; covariate shift
    alone then leaves it unbiased. Under concept drift it is simply wrong — compare with
    :func:`realised_performance` once labels arrive.

Band (``lower``/``upper`` of each :class:`MetricEstimate`)
    Sampling-based: labels are simulated ``n_simulations`` times as independent
    ``Bernoulli(p_i)`` (vectorised, seeded), every metric is computed on each simulated label
    vector, and the band is the central ``level`` percentile interval of those values
    (``std`` is their standard deviation). It is the range in which the *realised* metric
    of these very rows falls with probability ``level`` when the assumption holds; it does not
    include the calibrator's own estimation error.

Calibration (:func:`fit_calibrator`)
    Isotonic regression of the reference labels on the reference scores (for example the
    held-out rows of :func:`closedloop.services.registry.load_evaluation`). With
    ``method="auto"`` (the default) the isotonic map is used only when a 5-fold
    cross-validated check shows it helps: its out-of-fold Brier score must be lower than the
    raw scores' Brier score; otherwise the scores are taken as already calibrated (identity).
    The state is plain JSON (:meth:`Calibrator.to_dict` / :meth:`Calibrator.from_dict`).

Feedback (:func:`match_feedback`, :func:`join_feedback`)
    Joins predictions (the prediction log) with late labels (the feedback log) on
    ``(_request_id, _row)`` (the row's position within its request), or on ``_request_id``
    alone for a label without a row; see the function. A label that cannot be joined (an
    unknown request id, a missing or broken key) is left out and counted, never an error: one
    bad label must not hide the others.

Pure: numpy/pandas, scikit-learn (isotonic fit, imported lazily), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from closedloop.domain.metrics import score
from closedloop.errors import InvalidInputError

ASSUMPTION = (
    "No concept drift: P(y|x) is unchanged since the reference data, and the scores are "
    "calibrated probabilities on the reference data (raw or through the fitted calibrator). "
    "Covariate shift alone is fine; under concept drift the estimate is wrong."
)
BAND_METHOD = (
    "Sampling-based: labels simulated as independent Bernoulli(p_i) from the calibrated "
    "probabilities; the band is the central `level` percentile interval of each metric over "
    "the simulations (calibrator estimation error not included)."
)
ESTIMATED_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "roc_auc")
"""The metrics :func:`estimate_performance` and :func:`realised_performance` report."""

_CV_FOLDS = 5
_SIMULATION_CELLS = 4_000_000  # simulated labels held in memory at once


# -- calibration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibrator:
    """A monotone map from raw scores to calibrated probabilities.

    ``method`` is ``"isotonic"`` (piecewise-linear interpolation through the fitted
    ``(x, y)`` points, clipped to the end values outside them — what scikit-learn's
    ``IsotonicRegression(out_of_bounds="clip")`` predicts) or ``"identity"`` (scores are
    already calibrated). ``brier_raw``/``brier_isotonic_cv`` and ``reason`` record why.
    """

    method: Literal["isotonic", "identity"]
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    n_reference: int = 0
    brier_raw: float | None = None
    brier_isotonic_cv: float | None = None
    reason: str = ""

    def transform(self, scores: Any) -> np.ndarray:
        """Calibrated probabilities for ``scores`` (positive-class scores in [0, 1])."""
        values = _check_scores(scores, "scores")
        if self.method == "identity":
            return values.copy()
        calibrated: np.ndarray = np.interp(values, np.asarray(self.x), np.asarray(self.y))
        return calibrated

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (:meth:`from_dict` restores it)."""
        return {
            "method": self.method,
            "x": list(self.x),
            "y": list(self.y),
            "n_reference": self.n_reference,
            "brier_raw": self.brier_raw,
            "brier_isotonic_cv": self.brier_isotonic_cv,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibrator:
        """Rebuild a calibrator from :meth:`to_dict` output; invalid state raises
        :class:`InvalidInputError`."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(
                f"A calibrator state must be a mapping. Got {type(data).__name__} instead."
            )
        method = data.get("method")
        if method not in ("isotonic", "identity"):
            raise InvalidInputError(
                f"The calibrator 'method' must be 'isotonic' or 'identity'. Got {method!r} instead."
            )
        try:
            x = np.asarray(data.get("x", []), dtype=np.float64)
            y = np.asarray(data.get("y", []), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"The calibrator 'x' and 'y' must be lists of numbers: {exc}"
            ) from exc
        if method == "isotonic":
            if x.ndim != 1 or x.shape != y.shape or x.size == 0:
                raise InvalidInputError(
                    "An isotonic calibrator needs 'x' and 'y' lists of equal, non-zero length. "
                    f"Got shapes {x.shape} and {y.shape}."
                )
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise InvalidInputError("The calibrator 'x' and 'y' must be finite numbers.")
            if bool((np.diff(x) <= 0).any()) or bool((np.diff(y) < 0).any()):
                raise InvalidInputError(
                    "An isotonic calibrator needs strictly increasing 'x' and non-decreasing 'y'."
                )
            if bool((y < 0).any() or (y > 1).any()):
                raise InvalidInputError("The calibrator 'y' values must lie in [0, 1].")
        n_reference = data.get("n_reference", 0)
        if isinstance(n_reference, bool) or not isinstance(n_reference, int) or n_reference < 0:
            raise InvalidInputError(
                f"The calibrator 'n_reference' must be an int >= 0. Got {n_reference!r}."
            )
        return cls(
            method=cast(Literal["isotonic", "identity"], method),
            x=tuple(float(v) for v in x) if method == "isotonic" else (),
            y=tuple(float(v) for v in y) if method == "isotonic" else (),
            n_reference=n_reference,
            brier_raw=_optional_float(data.get("brier_raw"), "brier_raw"),
            brier_isotonic_cv=_optional_float(data.get("brier_isotonic_cv"), "brier_isotonic_cv"),
            reason=str(data.get("reason", "")),
        )


def fit_calibrator(
    scores_ref: Any,
    labels_ref: Any,
    *,
    method: Literal["auto", "isotonic", "identity"] = "auto",
    positive: Any = None,
) -> Calibrator:
    """Fit a :class:`Calibrator` on reference (held-out) scores and their true labels.

    ``labels_ref`` are 0/1 or bool, or any labels together with ``positive`` (the positive
    class). ``method="auto"`` fits isotonic regression and keeps it only when its 5-fold
    cross-validated Brier score beats the raw scores' (see the module docstring);
    ``"isotonic"`` always calibrates, ``"identity"`` never does. Raises
    :class:`InvalidInputError` for scores outside [0, 1] or NaN, a length mismatch, or a
    reference with a single class.
    """
    if method not in ("auto", "isotonic", "identity"):
        raise InvalidInputError(
            f"The 'method' parameter must be 'auto', 'isotonic' or 'identity'. Got {method!r}."
        )
    scores = _check_scores(scores_ref, "scores_ref")
    labels = _binary_labels(labels_ref, positive, "labels_ref")
    if labels.shape[0] != scores.shape[0]:
        raise InvalidInputError(
            "scores_ref and labels_ref must have the same length. "
            f"Got {scores.shape[0]} and {labels.shape[0]} instead."
        )
    positives = int(labels.sum())
    if positives in (0, labels.shape[0]):
        raise InvalidInputError(
            "The reference labels must contain both classes to calibrate. "
            f"Got {positives} positives in {labels.shape[0]} rows.",
            hint="Use held-out rows with both positive and negative examples.",
        )
    n = int(scores.shape[0])
    brier_raw = float(np.mean((scores - labels) ** 2))
    if method == "identity":
        return Calibrator("identity", n_reference=n, brier_raw=brier_raw, reason="requested")
    x, y = _isotonic(scores, labels)
    if method == "isotonic":
        return Calibrator(
            "isotonic", x=x, y=y, n_reference=n, brier_raw=brier_raw, reason="requested"
        )
    if min(positives, n - positives) < _CV_FOLDS:
        return Calibrator(
            "identity",
            n_reference=n,
            brier_raw=brier_raw,
            reason=f"too few rows of the rarer class (< {_CV_FOLDS}) to check calibration",
        )
    brier_cv = _cross_validated_brier(scores, labels)
    if brier_cv < brier_raw:
        reason = "isotonic lowers the cross-validated Brier score"
        return Calibrator("isotonic", x, y, n, brier_raw, brier_cv, reason)
    reason = "scores already calibrated: isotonic does not lower the cross-validated Brier score"
    return Calibrator("identity", (), (), n, brier_raw, brier_cv, reason)


def _isotonic(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    model.fit(scores, labels)
    return (
        tuple(float(v) for v in model.X_thresholds_),
        tuple(float(v) for v in model.y_thresholds_),
    )


def _cross_validated_brier(scores: np.ndarray, labels: np.ndarray) -> float:
    """Out-of-fold Brier score of isotonic calibration (folds stratified by class, seeded)."""
    folds = np.empty(scores.shape[0], dtype=np.int64)
    rng = np.random.default_rng(0)
    for value in (0.0, 1.0):
        members = np.flatnonzero(labels == value)
        folds[rng.permutation(members)] = np.arange(members.shape[0]) % _CV_FOLDS
    squared = np.empty(scores.shape[0])
    for fold in range(_CV_FOLDS):
        held = folds == fold
        x, y = _isotonic(scores[~held], labels[~held])
        predicted = np.interp(scores[held], np.asarray(x), np.asarray(y))
        squared[held] = (predicted - labels[held]) ** 2
    return float(squared.mean())


# -- estimation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricEstimate:
    """One estimated metric: ``value`` and its ``lower``/``upper`` band (see ``level``)."""

    value: float
    lower: float
    upper: float
    std: float

    def contains(self, realised: float) -> bool:
        """Whether ``realised`` lies within the band (inclusive)."""
        return bool(self.lower <= realised <= self.upper)

    def to_dict(self) -> dict[str, float | None]:
        return {
            "value": _json_float(self.value),
            "lower": _json_float(self.lower),
            "upper": _json_float(self.upper),
            "std": _json_float(self.std),
        }


@dataclass(frozen=True)
class PerformanceEstimate:
    """Estimated accuracy, precision, recall, F1 and ROC AUC of a window of predictions.

    ``metrics`` maps each name of :data:`ESTIMATED_METRICS` to a :class:`MetricEstimate`
    (``roc_auc`` is NaN when the calibrated probabilities are all 0 or all 1);
    ``expected_confusion`` holds ``tp``, ``fp``, ``fn``, ``tn``.
    """

    n: int
    threshold: float
    metrics: Mapping[str, MetricEstimate]
    expected_confusion: Mapping[str, float]
    calibration: str
    level: float
    n_simulations: int
    assumption: str = field(default=ASSUMPTION)

    def __getitem__(self, metric: str) -> MetricEstimate:
        return self.metrics[metric]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (NaN becomes None), with the ``assumption`` and ``band_method``."""
        return {
            "n": self.n,
            "threshold": self.threshold,
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "expected_confusion": {k: float(v) for k, v in self.expected_confusion.items()},
            "calibration": self.calibration,
            "level": self.level,
            "n_simulations": self.n_simulations,
            "assumption": self.assumption,
            "band_method": BAND_METHOD,
        }


def estimate_performance(
    scores: Any,
    *,
    threshold: float = 0.5,
    calibrator: Calibrator | None = None,
    level: float = 0.95,
    n_simulations: int = 500,
    random_state: int = 0,
) -> PerformanceEstimate:
    """Estimate a binary classifier's performance on ``scores`` without labels.

    ``scores`` are the model's positive-class probabilities (the prediction log's ``_score``);
    the predictions are ``scores >= threshold`` (scikit-learn's ``predict`` uses ``> 0.5``,
    which differs only for scores of exactly 0.5). ``calibrator`` maps the scores to
    calibrated probabilities; without one the scores are taken as calibrated. Bands come from
    ``n_simulations`` simulated label vectors (seeded by ``random_state``), see the module
    docstring. Assumes no concept drift.
    """
    values = _check_scores(scores, "scores")
    if calibrator is not None and not isinstance(calibrator, Calibrator):
        raise InvalidInputError(
            "The 'calibrator' parameter must be a Calibrator (from fit_calibrator) or None. "
            f"Got {type(calibrator).__name__} instead."
        )
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 <= threshold <= 1.0
    ):
        raise InvalidInputError(
            f"The 'threshold' parameter must be a number in [0, 1]. Got {threshold!r} instead."
        )
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < level < 1.0:
        raise InvalidInputError(
            f"The 'level' parameter must be a number in (0, 1). Got {level!r} instead."
        )
    if isinstance(n_simulations, bool) or not isinstance(n_simulations, int) or n_simulations < 2:
        raise InvalidInputError(
            f"The 'n_simulations' parameter must be an int >= 2. Got {n_simulations!r} instead."
        )
    probabilities = values if calibrator is None else calibrator.transform(values)
    order = np.argsort(values, kind="stable")
    s = values[order]
    p = probabilities[order]
    predicted = (s >= threshold).astype(np.float64)
    n = int(s.shape[0])

    tp = float(p @ predicted)
    predicted_positive = float(predicted.sum())
    expected_positive = float(p.sum())
    fp = predicted_positive - tp
    fn = expected_positive - tp
    tn = n - tp - fp - fn
    point = {
        "accuracy": (tp + tn) / n,
        "precision": tp / predicted_positive if predicted_positive > 0 else 0.0,
        "recall": tp / expected_positive if expected_positive > 0 else 0.0,
        "f1": 2 * tp / (predicted_positive + expected_positive)
        if predicted_positive + expected_positive > 0
        else 0.0,
        "roc_auc": _expected_auc_sorted(s, p),
    }
    simulated = _simulate(s, p, predicted, n_simulations, random_state)
    tail = (1.0 - float(level)) / 2.0
    metrics: dict[str, MetricEstimate] = {}
    for name in ESTIMATED_METRICS:
        sims = simulated[name]
        sims = sims[~np.isnan(sims)]
        if sims.size == 0 or math.isnan(point[name]):
            metrics[name] = MetricEstimate(math.nan, math.nan, math.nan, math.nan)
            continue
        lower, upper = np.quantile(sims, [tail, 1.0 - tail])
        metrics[name] = MetricEstimate(
            float(point[name]), float(lower), float(upper), float(sims.std())
        )
    calibration = "none (scores taken as calibrated)" if calibrator is None else calibrator.method
    return PerformanceEstimate(
        n=n,
        threshold=float(threshold),
        metrics=metrics,
        expected_confusion={"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        calibration=calibration,
        level=float(level),
        n_simulations=n_simulations,
    )


def expected_roc_auc(scores: Any, probabilities: Any) -> float:
    """Expected ROC AUC of ``scores`` when row ``i`` is positive with probability
    ``probabilities[i]`` (the ratio estimate of the module docstring), in O(n log n).

    NaN when no pair can be formed (all probabilities 0, or all 1).
    """
    s = _check_scores(scores, "scores", unit_interval=False)
    p = _check_scores(probabilities, "probabilities")
    if s.shape != p.shape:
        raise InvalidInputError(
            "scores and probabilities must have the same length. "
            f"Got {s.shape[0]} and {p.shape[0]} instead."
        )
    order = np.argsort(s, kind="stable")
    return _expected_auc_sorted(s[order], p[order])


def _expected_auc_sorted(s: np.ndarray, p: np.ndarray) -> float:
    q = 1.0 - p
    pq = p * q
    denominator = float(p.sum() * q.sum() - pq.sum())
    if not denominator > 0:
        return math.nan
    starts = _group_starts(s)
    group_p = np.add.reduceat(p, starts)
    group_q = np.add.reduceat(q, starts)
    group_pq = np.add.reduceat(pq, starts)
    q_below = np.cumsum(group_q) - group_q
    numerator = float(group_p @ q_below) + 0.5 * float(group_p @ group_q - group_pq.sum())
    return min(1.0, max(0.0, numerator / denominator))


def _group_starts(sorted_values: np.ndarray) -> np.ndarray:
    """Start index of every run of equal values in a sorted array."""
    change = np.empty(sorted_values.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=change[1:])
    return np.flatnonzero(change)


def _simulate(
    s: np.ndarray, p: np.ndarray, predicted: np.ndarray, n_simulations: int, seed: int
) -> dict[str, np.ndarray]:
    """Every metric on ``n_simulations`` label vectors drawn as Bernoulli(p) (rows sorted by
    score), computed in chunks from confusion counts and rank sums."""
    n = s.shape[0]
    starts = _group_starts(s)
    sizes = np.diff(np.append(starts, n))
    # Mid-ranks (1-based), as in the Mann-Whitney form of the AUC with ties counted as 1/2.
    group_rank = np.cumsum(sizes) - (sizes - 1) / 2.0
    ranks = np.repeat(group_rank, sizes)
    predicted_positive = float(predicted.sum())
    rng = np.random.default_rng(seed)
    chunk = max(1, _SIMULATION_CELLS // n)
    out: dict[str, list[np.ndarray]] = {name: [] for name in ESTIMATED_METRICS}
    for begin in range(0, n_simulations, chunk):
        size = min(chunk, n_simulations - begin)
        labels = (rng.random((size, n)) < p).astype(np.float64)
        positives = labels.sum(axis=1)
        tp = labels @ predicted
        fp = predicted_positive - tp
        fn = positives - tp
        negatives = n - positives
        out["accuracy"].append((n - fp - fn) / n)
        out["precision"].append(_ratio(tp, np.full(size, predicted_positive), 0.0))
        out["recall"].append(_ratio(tp, positives, 0.0))
        out["f1"].append(_ratio(2 * tp, predicted_positive + positives, 0.0))
        rank_sum = labels @ ranks
        out["roc_auc"].append(
            _ratio(rank_sum - positives * (positives + 1) / 2, positives * negatives, math.nan)
        )
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _ratio(numerator: np.ndarray, denominator: np.ndarray, empty: float) -> np.ndarray:
    result = np.full(numerator.shape, empty, dtype=np.float64)
    np.divide(numerator, denominator, out=result, where=denominator > 0)
    return result


# -- realised ------------------------------------------------------------------------------


def realised_performance(labels: Any, scores: Any, predictions: Any) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 and ROC AUC once the true ``labels`` are known.

    ``predictions`` are the model's predicted labels (the log's ``_prediction``), ``scores``
    its positive-class scores (``_score``; may be None). Computed with
    :func:`closedloop.domain.metrics.score` (positive class ``1``/``True`` when present,
    otherwise the larger label). ``roc_auc`` is None when ``scores`` is None or the labels
    hold a single class.
    """
    truth = _one_dimensional(labels, "labels")
    predicted = _one_dimensional(predictions, "predictions")
    _same_length(truth, predicted)
    result: dict[str, float | None] = {
        name: score(name, truth, y_pred=predicted)
        for name in ("accuracy", "precision", "recall", "f1")
    }
    result["roc_auc"] = None
    if scores is not None:
        values = _check_scores(scores, "scores", unit_interval=False)
        if values.shape[0] != truth.shape[0]:
            raise InvalidInputError(
                "labels and scores must have the same length. "
                f"Got {truth.shape[0]} and {values.shape[0]} instead."
            )
        if pd.unique(truth).shape[0] >= 2:
            result["roc_auc"] = score("roc_auc", truth, y_score=values)
    return result


def _same_length(truth: np.ndarray, predicted: np.ndarray) -> None:
    if truth.shape[0] != predicted.shape[0]:
        raise InvalidInputError(
            "labels and predictions must have the same length. "
            f"Got {truth.shape[0]} and {predicted.shape[0]} instead."
        )


REGRESSION_REALISED: tuple[str, ...] = ("mae", "rmse", "r2")
"""What :func:`realised_regression` reports."""
MULTICLASS_REALISED: tuple[str, ...] = ("accuracy", "macro_f1")
"""What :func:`realised_multiclass` reports (plus the gate's label metric when asked)."""


def realised_regression(labels: Any, predictions: Any) -> dict[str, float | None]:
    """MAE, RMSE and R² of a regression's ``predictions`` against the true ``labels``
    (:func:`closedloop.domain.metrics.score`). ``r2`` is None with fewer than 2 rows or
    constant labels (undefined)."""
    truth = _one_dimensional(labels, "labels").astype(np.float64)
    predicted = _one_dimensional(predictions, "predictions").astype(np.float64)
    _same_length(truth, predicted)
    result: dict[str, float | None] = {
        name: score(name, truth, y_pred=predicted) for name in ("mae", "rmse")
    }
    constant = truth.shape[0] < 2 or bool(np.all(truth == truth[0]))
    result["r2"] = None if constant else score("r2", truth, y_pred=predicted)
    return result


def realised_multiclass(
    labels: Any, predictions: Any, *, metrics: tuple[str, ...] = ()
) -> dict[str, float | None]:
    """Accuracy and macro-averaged F1 of a classifier's predicted ``predictions`` against the
    true ``labels`` (both of the classes' type), plus each label metric named in ``metrics``
    (``f1``, ``precision``, ``recall``: macro-averaged, as the gate scores them with more than
    two classes, even when the window holds fewer). Ranking metrics need class probabilities,
    which are not logged: skipped."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    truth = _one_dimensional(labels, "labels")
    predicted = _one_dimensional(predictions, "predictions")
    _same_length(truth, predicted)
    macro = {"f1": f1_score, "precision": precision_score, "recall": recall_score}
    result: dict[str, float | None] = {
        "accuracy": score("accuracy", truth, y_pred=predicted),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }
    for name in metrics:
        if name in macro:  # macro even when the window happens to hold two classes only
            result[name] = float(macro[name](truth, predicted, average="macro", zero_division=0))
    return result


# -- feedback join -------------------------------------------------------------------------

IGNORED_LABEL_REASONS: dict[str, str] = {
    "malformed": "no usable request id, label or row position (e.g. a missing or negative "
    "'_row', written by an older version or by hand)",
    "ambiguous": "no row position for a request that predicted several rows",
    "unmatched": "names a request id (or row) that is not among the predictions",
}
"""Why :func:`match_feedback` leaves a label out, by the key it counts it under."""


@dataclass(frozen=True)
class FeedbackMatch:
    """The result of :func:`match_feedback`: the labelled prediction rows and the labels that
    were left out, counted by reason (:data:`IGNORED_LABEL_REASONS`; zero counts omitted)."""

    joined: pd.DataFrame
    ignored: dict[str, int] = field(default_factory=dict)

    @property
    def n_ignored(self) -> int:
        return sum(self.ignored.values())


def join_feedback(predictions: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """The prediction rows that have a label (:attr:`FeedbackMatch.joined` of
    :func:`match_feedback`)."""
    return match_feedback(predictions, feedback).joined


def match_feedback(predictions: pd.DataFrame, feedback: pd.DataFrame) -> FeedbackMatch:
    """Join late labels to the prediction rows they answer; labels that cannot be joined are
    counted, never an error.

    ``joined`` is ``predictions`` plus ``_label`` (and ``_feedback_ts`` when ``feedback`` has
    it), inner-joined, in the predictions' order. A label answers:

    * the row at its ``_row`` (a row's position within its request, 0-based) of its
      ``_request_id``. When ``predictions`` has no ``_row`` (the prediction log does not store
      one) it is derived as the position of each row among the rows of its request id in the
      frame's order — the log keeps a request's rows in order;
    * without a ``_row`` (no such column, or null), the one row of its ``_request_id``. A
      request that predicted several rows is *ambiguous*: its label is never copied to every
      row, it is left out (give ``_row`` instead).

    Left out and counted in ``ignored``: ``malformed`` labels (a null or empty request id, a
    null label, a ``_row`` that is not an integer >= 0), ``ambiguous`` ones, and ``unmatched``
    ones (no prediction row has the key — an unknown request id, or one outside
    ``predictions``). Several labels for one row: the one with the latest ``_feedback_ts``
    wins (ties, or no ``_feedback_ts``: the last one in ``feedback``'s order), as in
    ``FeedbackLog.read``. Raises :class:`InvalidInputError` only for arguments that are not
    frames, or miss the ``_request_id``/``_label`` columns.
    """
    for frame, name in ((predictions, "predictions"), (feedback, "feedback")):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(
                f"The '{name}' parameter must be a pandas DataFrame. "
                f"Got {type(frame).__name__} instead."
            )
    _require_columns(predictions, ("_request_id",), "predictions")
    _require_columns(feedback, ("_request_id", "_label"), "feedback")
    clashes = [c for c in ("_label", "_feedback_ts") if c in predictions.columns]
    if clashes:
        raise InvalidInputError(
            f"predictions must not already have the column(s) {clashes!r}; they come from the "
            "feedback."
        )
    preds = predictions.reset_index(drop=True)
    pred_ids = _request_ids(preds["_request_id"])
    if "_row" in preds.columns:
        pred_rows = _positions(preds["_row"])
    else:
        pred_rows = pd.Series(
            preds.groupby(pred_ids, sort=False, dropna=False).cumcount().to_numpy(np.float64)
        )
    keyed = pd.DataFrame(
        {"_request_id": pred_ids, "_row": pred_rows, "_pos": np.arange(len(preds))}
    ).dropna()
    rows_per_request = keyed["_request_id"].value_counts()

    labels = feedback.reset_index(drop=True)
    ids = _request_ids(labels["_request_id"])
    raw_rows = labels["_row"] if "_row" in labels.columns else pd.Series(np.nan, index=ids.index)
    rows = _positions(raw_rows)
    malformed = ids.isna() | labels["_label"].isna() | (rows.isna() & raw_rows.notna())
    has_ts = "_feedback_ts" in labels.columns
    candidates = pd.DataFrame(
        {
            "_request_id": ids,
            "_row": rows,
            "_label": labels["_label"],
            "_order": np.arange(len(labels)),
        }
    )
    if has_ts:
        candidates["_feedback_ts"] = pd.to_datetime(
            labels["_feedback_ts"], utc=True, errors="coerce"
        )
    candidates = candidates[~malformed.to_numpy()]
    with_row = candidates[candidates["_row"].notna()]
    without_row = candidates[candidates["_row"].isna()].drop(columns="_row")
    several = without_row["_request_id"].map(rows_per_request).fillna(0) > 1
    ambiguous = int(several.sum())
    matched = pd.concat(
        [
            with_row.merge(keyed, on=["_request_id", "_row"], how="inner"),
            without_row[~several.to_numpy()].merge(
                keyed.drop(columns="_row"), on="_request_id", how="inner"
            ),
        ],
        ignore_index=True,
    )
    unmatched = len(candidates) - ambiguous - int(matched["_order"].nunique())
    # Several labels for one row: the latest feedback time wins, then the last written.
    order = ["_feedback_ts", "_order"] if has_ts else ["_order"]
    matched = matched.sort_values(order, kind="stable", na_position="first")
    matched = matched.drop_duplicates("_pos", keep="last").set_index("_pos")
    columns = ["_label", "_feedback_ts"] if has_ts else ["_label"]
    joined = preds.join(matched[columns], how="inner").sort_index()
    counts = {"malformed": int(malformed.sum()), "ambiguous": ambiguous, "unmatched": unmatched}
    return FeedbackMatch(
        joined=joined.reset_index(drop=True), ignored={k: v for k, v in counts.items() if v}
    )


def _request_ids(values: pd.Series) -> pd.Series:
    """Request ids as strings; null, empty or non-string ids become null."""
    ids = values.astype(object)
    if pd.api.types.infer_dtype(ids, skipna=True) != "string":
        ids = ids.map(lambda v: v if isinstance(v, str) else None).astype(object)
    return ids.where(ids.notna() & (ids != ""), None)


def _positions(values: pd.Series) -> pd.Series:
    """Row positions as floats; null, negative, fractional or unreadable ones become NaN."""
    numeric = pd.to_numeric(values.astype(object), errors="coerce").astype(np.float64)
    valid = (numeric >= 0) & (numeric % 1 == 0)
    return numeric.where(valid).reset_index(drop=True)


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidInputError(
            f"{name} must have the column(s) {list(columns)!r}. Missing: {missing!r}."
        )


# -- validation ----------------------------------------------------------------------------


def _one_dimensional(values: Any, name: str) -> np.ndarray:
    if values is None:
        raise InvalidInputError(f"The '{name}' parameter must be an array. Got None.")
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidInputError(
            f"The '{name}' parameter must be 1-D. Got an array of shape {array.shape} instead."
        )
    if array.shape[0] == 0:
        raise InvalidInputError(f"The '{name}' parameter must not be empty. Got 0 rows.")
    return array


def _check_scores(values: Any, name: str, *, unit_interval: bool = True) -> np.ndarray:
    array = _one_dimensional(values, name)
    if array.dtype.kind not in "biuf":
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(
                f"The '{name}' parameter must hold numbers (positive-class probabilities). "
                f"Got dtype {array.dtype} instead."
            ) from exc
    array = array.astype(np.float64)
    missing = int(np.isnan(array).sum())
    if missing:
        raise InvalidInputError(
            f"The '{name}' parameter must not contain NaN. Got {missing} of {array.shape[0]}.",
            hint="Drop rows without a score (models without predict_proba log none).",
        )
    if unit_interval:
        outside = (array < 0.0) | (array > 1.0)
        if bool(outside.any()):
            raise InvalidInputError(
                f"The '{name}' parameter must hold probabilities in [0, 1]. Got "
                f"{int(outside.sum())} values outside, e.g. {float(array[outside][0])!r}."
            )
    elif not bool(np.isfinite(array).all()):
        raise InvalidInputError(f"The '{name}' parameter must be finite. Got infinite values.")
    return array


def _binary_labels(values: Any, positive: Any, name: str) -> np.ndarray:
    array = _one_dimensional(values, name)
    if bool(pd.isna(pd.Series(array, dtype=object)).any()):
        raise InvalidInputError(f"The '{name}' parameter must not contain missing values.")
    if positive is not None:
        matches: np.ndarray = np.asarray(array == positive, dtype=np.float64)
        return matches
    if array.dtype.kind == "b":
        return array.astype(np.float64)
    if array.dtype.kind in "iuf":
        numeric = array.astype(np.float64)
        if bool(np.isin(numeric, (0.0, 1.0)).all()):
            return numeric
    found = [v.item() if hasattr(v, "item") else v for v in pd.unique(array)[:5]]
    raise InvalidInputError(
        f"The '{name}' parameter must hold 0/1 or bool labels. Got values such as {found!r}.",
        hint="Pass positive=<the positive class> for other labels (e.g. 'yes'/'no').",
    )


def _optional_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"The calibrator '{name}' must be a number or null. Got {value!r}.")
    return float(value)


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


__all__ = [
    "ASSUMPTION",
    "BAND_METHOD",
    "ESTIMATED_METRICS",
    "MULTICLASS_REALISED",
    "REGRESSION_REALISED",
    "Calibrator",
    "MetricEstimate",
    "PerformanceEstimate",
    "estimate_performance",
    "expected_roc_auc",
    "fit_calibrator",
    "join_feedback",
    "realised_multiclass",
    "realised_performance",
    "realised_regression",
]
