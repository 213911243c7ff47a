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

Pure: numpy and :mod:`sklearn.metrics` (imported lazily), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    result = _SCORERS[metric](truth, values)
    return float(result)


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
        clipped = np.clip(scores.astype(float), 1e-15, 1 - 1e-15)
        return float(log_loss(binary, clipped, labels=[0, 1]))
    labels = classes.tolist() if len(classes) == scores.shape[1] else None
    if labels is None:
        raise InvalidInputError(
            f"y_score has {scores.shape[1]} columns but y_true holds {len(classes)} classes.",
            hint="Score on a sample that contains every class the model predicts.",
        )
    clipped = np.clip(scores.astype(float), 1e-15, 1 - 1e-15)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(log_loss(truth, clipped, labels=labels))


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

__all__ = [
    "CLASSIFICATION_METRICS",
    "METRICS",
    "REGRESSION_METRICS",
    "check_metric",
    "higher_is_better",
    "is_classification",
    "score",
]
