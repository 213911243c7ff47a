"""The model contract: what closedloop needs from a user's model, and the loaded-version wrapper.

Any object with ``fit(X, y)`` and ``predict(X)`` works (scikit-learn, LightGBM, XGBoost, a
pipeline); ``predict_proba`` is used when present. :func:`check_model` tells a user whether an
object can be registered and served, naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from closedloop.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from closedloop.domain.signature import Signature


def check_model(model: object) -> list[str]:
    """Return the problems that stop ``model`` from being trained and served (empty when fine)."""
    problems = []
    for method in ("fit", "predict"):
        if not callable(getattr(model, method, None)):
            problems.append(f"the model has no callable {method}() method")
    return problems


def ensure_model(model: object) -> None:
    """Raise :class:`InvalidInputError` when ``model`` does not follow the contract."""
    problems = check_model(model)
    if problems:
        raise InvalidInputError(
            f"{type(model).__name__} cannot be used as a model: " + "; ".join(problems) + ".",
            hint="Return an object with fit(X, y) and predict(X), e.g. a scikit-learn estimator.",
        )


@dataclass(frozen=True)
class Prediction:
    """What one predict call returns: the model's ``predict`` output and, for classifiers with
    ``predict_proba``, the probability of the positive class as ``scores`` (binary classifiers
    only; a multiclass model's scores are None)."""

    labels: np.ndarray
    scores: np.ndarray | None


@dataclass
class LoadedVersion:
    """A version ready to serve: a verified, deserialised estimator and its signature."""

    model: str
    version: int
    sha256: str
    signature: Signature
    estimator: Any

    def predict(self, frame: pd.DataFrame) -> Prediction:
        """Predict on a frame whose columns follow the signature."""
        labels = self.estimator.predict(frame)
        scores = None
        proba = getattr(self.estimator, "predict_proba", None)
        if callable(proba):
            matrix = proba(frame)
            if getattr(matrix, "ndim", 0) == 2 and matrix.shape[1] == 2:
                scores = matrix[:, 1]
        return Prediction(labels=labels, scores=scores)
