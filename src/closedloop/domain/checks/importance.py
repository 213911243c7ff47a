"""Which input columns does a model rely on? Permutation importance on held-out rows. Pure.

:func:`permutation_importance` scores the model on the rows as given, then with one column's
values shuffled (``repeats`` times, seeded), and reports per column the mean loss of score in
the metric's good direction, clipped at 0 (a column whose shuffling does not hurt carries no
weight). It works for any model with ``predict`` (and ``predict_proba`` for score metrics),
including pipelines with their own encoders, because it permutes the *input* columns the
model's signature names. Used to weight drift verdicts (:mod:`.assessment`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from closedloop.domain.metrics import higher_is_better, score
from closedloop.errors import InvalidInputError

_SCORE_METRICS = frozenset({"roc_auc", "log_loss"})


def _scorer(estimator: Any, metric: str) -> Callable[[pd.DataFrame, np.ndarray], float]:
    def evaluate(X: pd.DataFrame, y: np.ndarray) -> float:
        if metric in _SCORE_METRICS:
            proba = np.asarray(estimator.predict_proba(X))
            scores = proba[:, 1] if proba.ndim == 2 and proba.shape[1] == 2 else proba
            return float(score(metric, y, y_score=scores))
        return float(score(metric, y, y_pred=estimator.predict(X)))

    return evaluate


def permutation_importance(
    estimator: Any,
    X: pd.DataFrame,
    y: Sequence[Any] | np.ndarray | pd.Series,
    metric: str,
    *,
    columns: Sequence[str] | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Mean drop of ``metric`` when each column is shuffled (>= 0), per column of ``columns``."""
    names = list(columns) if columns is not None else [str(c) for c in X.columns]
    missing = [c for c in names if c not in X.columns]
    if missing:
        raise InvalidInputError(
            f"Permutation importance needs the columns {missing}; the rows have "
            f"{[str(c) for c in X.columns]}."
        )
    if len(X) < 2 or repeats < 1:
        raise InvalidInputError(
            f"Permutation importance needs at least 2 rows and 1 repeat. "
            f"Got {len(X)} rows and {repeats} repeats."
        )
    truth = np.asarray(y)
    evaluate = _scorer(estimator, metric)
    sign = 1.0 if higher_is_better(metric) else -1.0
    baseline = evaluate(X, truth)
    rng = np.random.default_rng(seed)
    out: dict[str, float] = {}
    for name in names:
        drops = []
        for _ in range(repeats):
            shuffled = X.copy()
            shuffled[name] = X[name].to_numpy()[rng.permutation(len(X))]
            drops.append(sign * (baseline - evaluate(shuffled, truth)))
        mean = float(np.mean(drops))
        out[name] = mean if math.isfinite(mean) and mean > 0 else 0.0
    return out


__all__ = ["permutation_importance"]
