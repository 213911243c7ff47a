"""Scoring a model's predictions with one named metric.

:func:`score` is the one entry point used by training runs, the promotion gate and monitoring::

    score("roc_auc", y_true, y_score=proba)      # ranking metrics need scores
    score("f1", y_true, y_pred=labels)           # label metrics need predicted labels
    score("rmse", y_true, y_pred=values)         # regression

Classification metrics: ``roc_auc``, ``accuracy``, ``f1``, ``log_loss``, ``precision``,
``recall``. Regression metrics: ``rmse``, ``mae``, ``r2``. ``roc_auc`` and ``log_loss`` take
``y_score`` (the positive-class probability for binary problems, or an ``(n, n_classes)``
probability matrix); every other metric takes ``y_pred``. For ``f1``, ``precision`` and
``recall`` a binary problem is scored on its positive class (``1``/``True`` when present,
otherwise the larger label); with more than two classes the macro average is used.

For the promotion gate, :func:`row_terms` reduces one model's predictions to per-row terms
(:class:`RowTerms`) from which the same metric is recomputed on any re-weighting of the rows:
thousands of bootstrap resamples, or each slice, with matrix products and no per-resample Python
loop. On the original rows it equals :func:`score`.

Pure: numpy and :mod:`sklearn.metrics` (imported lazily), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from closedloop.errors import ConfigError, InvalidInputError

CLASSIFICATION_METRICS: tuple[str, ...] = (
    "roc_auc",
    "accuracy",
    "f1",
    "log_loss",
    "precision",
    "recall",
)
REGRESSION_METRICS: tuple[str, ...] = ("rmse", "mae", "r2")
METRICS: tuple[str, ...] = CLASSIFICATION_METRICS + REGRESSION_METRICS
"""Every metric name :func:`score` accepts."""

_LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})
_NEEDS_SCORES = frozenset({"roc_auc", "log_loss"})
_EPS = 1e-15  # probabilities are clipped to [_EPS, 1 - _EPS] before taking logs


def check_metric(metric: object) -> str:
    """Return ``metric`` when it is a known metric name, else raise :class:`ConfigError`."""
    if not isinstance(metric, str) or metric not in METRICS:
        raise ConfigError(
            f"The metric must be one of {', '.join(METRICS)}. Got {metric!r} instead.",
            details={"accepted": list(METRICS)},
        )
    return metric


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` means a better model (False for losses/errors)."""
    return check_metric(metric) not in _LOWER_IS_BETTER


def is_classification(metric: str) -> bool:
    """Whether ``metric`` scores a classifier (as opposed to a regressor)."""
    return check_metric(metric) in CLASSIFICATION_METRICS


def score(
    metric: str,
    y_true: Any,
    y_pred: Any = None,
    y_score: Any = None,
) -> float:
    """Compute ``metric`` for the given targets and predictions, as a plain ``float``.

    Raises :class:`ConfigError` for an unknown metric and :class:`InvalidInputError` when the
    inputs are missing, empty, of mismatched length, contain NaN, or cannot be scored (e.g.
    ``roc_auc`` when ``y_true`` holds a single class).
    """
    truth, values = _inputs(metric, y_true, y_pred, y_score)
    return float(_SCORERS[metric](truth, values))


def _inputs(metric: str, y_true: Any, y_pred: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(truth, values)`` arrays for ``metric`` (see :func:`score` for the errors)."""
    check_metric(metric)
    truth = _as_array(y_true, "y_true")
    if metric in _NEEDS_SCORES:
        if y_score is None:
            raise InvalidInputError(
                f"The {metric!r} metric needs y_score (predicted probabilities). Got None.",
                hint="Pass the model's predict_proba output (positive-class column for binary).",
            )
        values = _as_array(y_score, "y_score", allow_2d=True)
        _check_numeric(values, "y_score")
    else:
        if y_pred is None:
            raise InvalidInputError(
                f"The {metric!r} metric needs y_pred (predicted labels or values). Got None."
            )
        values = _as_array(y_pred, "y_pred")
    if values.shape[0] != truth.shape[0]:
        name = "y_score" if metric in _NEEDS_SCORES else "y_pred"
        raise InvalidInputError(
            f"y_true and {name} must have the same length. "
            f"Got {truth.shape[0]} and {values.shape[0]} instead."
        )
    if metric in REGRESSION_METRICS:
        _check_numeric(truth, "y_true")
        _check_numeric(values, "y_pred")
    return truth, values


def _as_array(values: Any, name: str, *, allow_2d: bool = False) -> np.ndarray:
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be array-like. Got {type(values).__name__}.") from exc
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 0 or array.ndim > 2 or (array.ndim == 2 and not allow_2d):
        raise InvalidInputError(
            f"{name} must be a 1-D array{' or a 2-D probability matrix' if allow_2d else ''}. "
            f"Got an array of shape {array.shape} instead."
        )
    if array.shape[0] == 0:
        raise InvalidInputError(f"{name} must not be empty. Got 0 rows.")
    if array.dtype.kind == "f" and bool(np.isnan(array).any()):
        raise InvalidInputError(f"{name} must not contain NaN. Got {int(np.isnan(array).sum())}.")
    if array.dtype.kind == "O":
        nan_count = sum(1 for v in array.ravel() if isinstance(v, float) and math.isnan(v))
        if nan_count or any(v is None for v in array.ravel()):
            raise InvalidInputError(f"{name} must not contain missing values (None/NaN).")
    return array


def _check_numeric(array: np.ndarray, name: str) -> None:
    if array.dtype.kind not in "biuf":
        raise InvalidInputError(f"{name} must be numeric. Got dtype {array.dtype} instead.")
    if not bool(np.isfinite(array.astype(float)).all()):
        raise InvalidInputError(f"{name} must be finite. Got infinite values.")


def _classes(*arrays: np.ndarray) -> np.ndarray:
    try:
        return np.unique(np.concatenate([a.ravel() for a in arrays]))
    except TypeError as exc:
        raise InvalidInputError(
            "y_true and y_pred must hold labels of one comparable type (e.g. all int or all str)."
        ) from exc


def _positive_label(classes: np.ndarray) -> Any:
    for candidate in (1, True):
        if any(c == candidate and type(c) is not str for c in classes.tolist()):
            return candidate
    return classes[-1].item() if hasattr(classes[-1], "item") else classes[-1]


def _label_average(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    classes = _classes(truth, pred)
    if len(classes) <= 2:
        return {"average": "binary", "pos_label": _positive_label(classes)}
    return {"average": "macro"}


def _roc_auc(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    classes = _classes(truth)
    if len(classes) < 2:
        raise InvalidInputError(
            "roc_auc is undefined when y_true holds a single class. "
            f"Got only {classes[0]!r} in {truth.shape[0]} rows.",
            hint="Score on a sample that contains both positive and negative examples.",
        )
    if scores.ndim == 2:
        if scores.shape[1] != len(classes):
            raise InvalidInputError(
                f"y_score has {scores.shape[1]} columns but y_true holds {len(classes)} classes."
            )
        if len(classes) == 2:
            return float(roc_auc_score(truth, scores[:, 1]))
        return float(roc_auc_score(truth, scores, multi_class="ovr"))
    if len(classes) > 2:
        raise InvalidInputError(
            f"roc_auc with {len(classes)} classes needs a 2-D y_score of shape "
            f"(n, {len(classes)}). Got a 1-D array instead."
        )
    positive = _positive_label(classes)
    return float(roc_auc_score(truth == positive, scores))


def _log_loss(truth: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    targets, probabilities, labels = _log_loss_inputs(truth, scores)
    return float(log_loss(targets, probabilities, labels=labels))


def _log_loss_inputs(
    truth: np.ndarray, scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Targets, clipped probabilities and labels: 0/1 targets and the positive-class column for
    a 1-D ``scores``; the labels themselves and a row-normalised matrix for a 2-D one."""
    classes = _classes(truth)
    if scores.ndim == 1:
        if bool((scores < 0).any() or (scores > 1).any()):
            raise InvalidInputError("log_loss needs probabilities in [0, 1] as y_score.")
        if len(classes) > 2:
            raise InvalidInputError(
                f"log_loss with {len(classes)} classes needs a 2-D y_score. Got a 1-D array."
            )
        positive = _positive_label(classes) if len(classes) == 2 else None
        if positive is None:
            only = classes[0].item() if hasattr(classes[0], "item") else classes[0]
            if only not in (0, 1):
                raise InvalidInputError(
                    "log_loss with 1-D y_score and a single class in y_true needs 0/1 labels. "
                    f"Got only {only!r}."
                )
            binary = truth.astype(int)
        else:
            binary = (truth == positive).astype(int)
        return binary, np.clip(scores.astype(float), _EPS, 1 - _EPS), [0, 1]
    if len(classes) != scores.shape[1]:
        raise InvalidInputError(
            f"y_score has {scores.shape[1]} columns but y_true holds {len(classes)} classes.",
            hint="Score on a sample that contains every class the model predicts.",
        )
    clipped = np.clip(scores.astype(float), _EPS, 1 - _EPS)
    return truth, clipped / clipped.sum(axis=1, keepdims=True), classes.tolist()


def _accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score

    _classes(truth, pred)
    return float(accuracy_score(truth, pred))


def _f1(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, pred, zero_division=0, **_label_average(truth, pred)))


def _precision(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import precision_score

    return float(precision_score(truth, pred, zero_division=0, **_label_average(truth, pred)))


def _recall(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import recall_score

    return float(recall_score(truth, pred, zero_division=0, **_label_average(truth, pred)))


def _rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    diff = truth.astype(float) - pred.astype(float)
    return float(np.sqrt(np.mean(diff * diff)))


def _mae(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(truth.astype(float), pred.astype(float)))


def _r2(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    if truth.shape[0] < 2:
        raise InvalidInputError(f"r2 needs at least 2 rows. Got {truth.shape[0]}.")
    return float(r2_score(truth.astype(float), pred.astype(float)))


_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "roc_auc": _roc_auc,
    "accuracy": _accuracy,
    "f1": _f1,
    "log_loss": _log_loss,
    "precision": _precision,
    "recall": _recall,
    "rmse": _rmse,
    "mae": _mae,
    "r2": _r2,
}

# -- one model's outputs, and the metric on re-weighted rows -------------------------------


@dataclass(frozen=True, eq=False)
class Outputs:
    """One model's per-row outputs on evaluation rows: ``labels`` from ``predict`` and, when the
    model has ``predict_proba``, ``scores`` (the positive-class column for a binary problem, the
    whole probability matrix otherwise)."""

    labels: Any
    scores: Any = None


def score_outputs(metric: str, y_true: Any, outputs: Outputs) -> float:
    """:func:`score` of one model's :class:`Outputs`."""
    return score(metric, y_true, y_pred=outputs.labels, y_score=outputs.scores)


@dataclass(frozen=True, eq=False)
class RowTerms:
    """A model's predictions reduced to per-row terms from which ``metric`` can be recomputed on
    any re-weighting of the rows, e.g. thousands of bootstrap resamples at once, with matrix
    products instead of a Python loop per resample.

    Weights are row multiplicities: a bootstrap resample that draws row 7 twice gives it weight 2
    (and the metric equals :func:`score` on the resampled rows); a slice gives its rows weight 1.
    Whatever depends on the whole evaluation set (the positive label, the class list, the target
    mean that ``r2`` is centred on) is fixed when the terms are built, so every re-weighting is
    scored the same way.

    * ``accuracy``, ``log_loss``, ``mae``, ``rmse``: one per-row term, averaged;
    * ``precision``, ``recall``, ``f1``: per-class true-positive, true and predicted counts
      (``macro``: averaged over the classes present in the weighted rows, as scikit-learn does);
    * ``r2``: squared error and the centred target and its square;
    * ``roc_auc``: the scores and positive flags per ranking column (one for binary problems,
      one per class for one-vs-rest), scored by weighted ranks with ties counted as half.
    """

    metric: str
    terms: np.ndarray
    ranking: np.ndarray
    positives: np.ndarray
    macro: bool = False

    @property
    def n_rows(self) -> int:
        return int(self.terms.shape[0])

    def take(self, rows: np.ndarray) -> RowTerms:
        """The terms of the given rows only (positions or a boolean mask)."""
        return replace(
            self,
            terms=self.terms[rows],
            ranking=self.ranking[rows],
            positives=self.positives[rows],
        )

    def weighted(self, weights: np.ndarray) -> np.ndarray:
        """The metric under each row of ``weights`` (shape ``(k, n_rows)``, non-negative row
        multiplicities): an array of ``k`` values, NaN where the metric is undefined (e.g.
        ``roc_auc`` with one class only, ``r2`` with a constant target)."""
        matrix = np.asarray(weights, dtype=float)
        if matrix.ndim != 2 or matrix.shape[1] != self.n_rows:
            raise InvalidInputError(
                f"weights must have shape (k, {self.n_rows}). Got {matrix.shape} instead."
            )
        if self.metric == "roc_auc":
            return _weighted_auc(self.ranking, self.positives, matrix)
        sums = matrix @ self.terms
        total = matrix.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = _FINISH[self.metric](sums, total, self.macro)
        return np.where(total > 0, values, np.nan)


def row_terms(metric: str, y_true: Any, y_pred: Any = None, y_score: Any = None) -> RowTerms:
    """The :class:`RowTerms` of one model's predictions; takes and checks the same inputs as
    :func:`score` (but does not fail when the metric is undefined on all rows together)."""
    truth, values = _inputs(metric, y_true, y_pred, y_score)
    return _TERMS[metric](truth, values)


def outputs_terms(metric: str, y_true: Any, outputs: Outputs) -> RowTerms:
    """:func:`row_terms` of one model's :class:`Outputs`."""
    return row_terms(metric, y_true, y_pred=outputs.labels, y_score=outputs.scores)


def _linear(metric: str, columns: list[np.ndarray], *, macro: bool = False) -> RowTerms:
    terms = np.column_stack([np.asarray(c, dtype=float) for c in columns])
    n = terms.shape[0]
    return RowTerms(metric, terms, np.zeros((n, 0)), np.zeros((n, 0), dtype=bool), macro)


def _accuracy_terms(truth: np.ndarray, pred: np.ndarray) -> RowTerms:
    _classes(truth, pred)
    return _linear("accuracy", [truth == pred])


def _count_terms(metric: str) -> Callable[[np.ndarray, np.ndarray], RowTerms]:
    def build(truth: np.ndarray, pred: np.ndarray) -> RowTerms:
        classes = _classes(truth, pred)
        macro = len(classes) > 2
        chosen = classes.tolist() if macro else [_positive_label(classes)]
        is_true = [truth == label for label in chosen]
        is_pred = [pred == label for label in chosen]
        hits = [t & p for t, p in zip(is_true, is_pred, strict=True)]
        return _linear(metric, hits + is_true + is_pred, macro=macro)

    return build


def _log_loss_terms(truth: np.ndarray, scores: np.ndarray) -> RowTerms:
    targets, probabilities, labels = _log_loss_inputs(truth, scores)
    if probabilities.ndim == 1:
        loss = -np.where(targets == 1, np.log(probabilities), np.log(1 - probabilities))
    else:
        column = np.searchsorted(np.asarray(labels), targets)
        loss = -np.log(probabilities[np.arange(len(targets)), column])
    return _linear("log_loss", [loss])


def _regression_terms(metric: str) -> Callable[[np.ndarray, np.ndarray], RowTerms]:
    def build(truth: np.ndarray, pred: np.ndarray) -> RowTerms:
        target = truth.astype(float)
        error = target - pred.astype(float)
        if metric == "mae":
            return _linear(metric, [np.abs(error)])
        if metric == "rmse":
            return _linear(metric, [error * error])
        centred = target - target.mean()
        return _linear(metric, [error * error, centred, centred * centred])

    return build


def _auc_terms(truth: np.ndarray, scores: np.ndarray) -> RowTerms:
    classes = _classes(truth)
    if scores.ndim == 2:
        if scores.shape[1] != len(classes):
            raise InvalidInputError(
                f"y_score has {scores.shape[1]} columns but y_true holds {len(classes)} classes."
            )
        if len(classes) == 2:  # scikit-learn's positive class: the larger label
            ranking, positives = scores[:, 1:2], (truth == classes[1])[:, None]
        else:
            ranking, positives = scores, truth[:, None] == classes[None, :]
    else:
        if len(classes) > 2:
            raise InvalidInputError(
                f"roc_auc with {len(classes)} classes needs a 2-D y_score of shape "
                f"(n, {len(classes)}). Got a 1-D array instead."
            )
        ranking, positives = scores[:, None], (truth == _positive_label(classes))[:, None]
    n = truth.shape[0]
    return RowTerms("roc_auc", np.zeros((n, 0)), ranking.astype(float), positives.astype(bool))


def _weighted_auc(ranking: np.ndarray, positives: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over ranking columns of the weighted Mann-Whitney AUC (NaN if any is undefined)."""
    columns = [
        _auc_column(ranking[:, j], positives[:, j], weights) for j in range(ranking.shape[1])
    ]
    return np.asarray(np.mean(columns, axis=0))


def _auc_column(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """P(score of a positive > score of a negative) + half the ties, rows counted by weight."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # groups of tied scores
    weight = weights[:, order]
    is_positive = positive[order]
    pos = np.add.reduceat(weight * is_positive, starts, axis=1)
    neg = np.add.reduceat(weight * ~is_positive, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1.0), np.nan)


def _mean_term(sums: np.ndarray, total: np.ndarray, macro: bool) -> np.ndarray:
    return np.asarray(sums[:, 0] / total)


def _root_mean_term(sums: np.ndarray, total: np.ndarray, macro: bool) -> np.ndarray:
    return np.asarray(np.sqrt(sums[:, 0] / total))


def _r2_from_sums(sums: np.ndarray, total: np.ndarray, macro: bool) -> np.ndarray:
    residual, first, second = sums[:, 0], sums[:, 1], sums[:, 2]
    spread = second - first * first / total
    defined = spread > 1e-12 * second  # a constant target leaves only rounding noise
    return np.where(defined, 1.0 - residual / np.where(defined, spread, 1.0), np.nan)


def _count_metric(kind: str) -> Callable[[np.ndarray, np.ndarray, bool], np.ndarray]:
    def finish(sums: np.ndarray, total: np.ndarray, macro: bool) -> np.ndarray:
        k = sums.shape[1] // 3
        hits, true, pred = sums[:, :k], sums[:, k : 2 * k], sums[:, 2 * k :]
        numerator, denominator = {
            "precision": (hits, pred),
            "recall": (hits, true),
            "f1": (2 * hits, true + pred),
        }[kind]
        per_class = np.divide(
            numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0
        )
        if not macro:
            return np.asarray(per_class[:, 0])
        present = (true + pred) > 0  # scikit-learn averages over the labels that occur
        return np.asarray((per_class * present).sum(axis=1) / present.sum(axis=1))

    return finish


_TERMS: dict[str, Callable[[np.ndarray, np.ndarray], RowTerms]] = {
    "roc_auc": _auc_terms,
    "accuracy": _accuracy_terms,
    "f1": _count_terms("f1"),
    "log_loss": _log_loss_terms,
    "precision": _count_terms("precision"),
    "recall": _count_terms("recall"),
    "rmse": _regression_terms("rmse"),
    "mae": _regression_terms("mae"),
    "r2": _regression_terms("r2"),
}

_FINISH: dict[str, Callable[[np.ndarray, np.ndarray, bool], np.ndarray]] = {
    "accuracy": _mean_term,
    "log_loss": _mean_term,
    "mae": _mean_term,
    "rmse": _root_mean_term,
    "r2": _r2_from_sums,
    "precision": _count_metric("precision"),
    "recall": _count_metric("recall"),
    "f1": _count_metric("f1"),
}

__all__ = [
    "CLASSIFICATION_METRICS",
    "METRICS",
    "REGRESSION_METRICS",
    "Outputs",
    "RowTerms",
    "check_metric",
    "higher_is_better",
    "is_classification",
    "outputs_terms",
    "row_terms",
    "score",
    "score_outputs",
]
