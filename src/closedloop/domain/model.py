"""The model contract: what closedloop needs from a user's model, and the loaded-version wrapper.

Any object with ``fit(X, y)`` and ``predict(X)`` works (scikit-learn, LightGBM, XGBoost, a
pipeline); ``predict_proba`` is used when present. :func:`check_model` tells a user whether an
object can be registered and served, naming what is missing.

Serving shortcuts are decided once per version, on sample rows, by :meth:`LoadedVersion.calibrate`
(see :class:`CallPlan`): a classifier whose ``predict`` is the argmax of ``predict_proba`` is
called once per batch, and an estimator that gives the same answers on a plain 2-D array gets one
instead of a DataFrame. An uncalibrated version makes the plain calls.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.errors import InvalidInputError

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.signature import Signature, TargetSpec


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
    only; a multiclass model's scores are None) and every class's probability as
    ``probabilities`` (``predict_proba``'s rows, columns in ``classes_`` order)."""

    labels: np.ndarray
    scores: np.ndarray | None
    probabilities: np.ndarray | None = None

    def slice(self, start: int, stop: int) -> Prediction:
        """The answers of rows ``start:stop``."""
        scores = None if self.scores is None else self.scores[start:stop]
        matrix = None if self.probabilities is None else self.probabilities[start:stop]
        return Prediction(labels=self.labels[start:stop], scores=scores, probabilities=matrix)


@dataclass(frozen=True)
class Rows:
    """Validated rows in signature order: one array per column, in the signature's dtypes.

    ``matrix`` holds the same values as one 2-D float64 array when every column is float64 (the
    columns are then views of it), so an all-numeric request never goes through per-column work.
    """

    names: tuple[str, ...]
    columns: tuple[np.ndarray, ...]
    count: int
    matrix: np.ndarray | None = None

    @classmethod
    def from_matrix(cls, names: Sequence[str], matrix: np.ndarray) -> Rows:
        """Rows over a 2-D float64 ``matrix`` whose columns follow ``names``."""
        return cls(tuple(names), tuple(matrix.T), int(matrix.shape[0]), matrix)

    @classmethod
    def from_columns(cls, names: Sequence[str], columns: Sequence[Any]) -> Rows:
        """Rows over coerced columns (see :meth:`Signature.coerce_columns`)."""
        arrays = tuple(np.asarray(c) for c in columns)
        count = len(arrays[0]) if arrays else 0
        return cls(tuple(names), arrays, count)

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        """The rows of ``parts`` one after another (one batch)."""
        if len(parts) == 1:
            return parts[0]
        matrices = [p.matrix for p in parts]
        if all(m is not None for m in matrices):
            return cls.from_matrix(parts[0].names, np.concatenate(matrices))  # type: ignore[arg-type]
        columns = tuple(
            np.concatenate([p.columns[j] for p in parts]) for j in range(len(parts[0].names))
        )
        return cls(parts[0].names, columns, sum(p.count for p in parts))

    def array(self) -> np.ndarray:
        """A 2-D array of the rows (float64 when all columns are numeric)."""
        if self.matrix is not None:
            return self.matrix
        return np.column_stack(self.columns) if self.columns else np.empty((self.count, 0))

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with the signature's column names and dtypes."""
        import pandas as pd

        if self.matrix is not None:
            return pd.DataFrame(self.matrix, columns=_column_index(self.names), copy=False)
        return pd.DataFrame(dict(zip(self.names, self.columns, strict=True)), copy=False)


@functools.lru_cache(maxsize=64)
def _column_index(names: tuple[str, ...]) -> pd.Index:
    """One shared (immutable) column index per signature: building it costs more than the frame."""
    import pandas as pd

    return pd.Index(names)


@dataclass(frozen=True)
class CallPlan:
    """How a version's estimator is called, decided by :meth:`LoadedVersion.calibrate`.

    ``one_call``: labels are ``classes_[argmax(predict_proba)]``, so one ``predict_proba`` call
    answers both (checked to equal ``predict`` on the sample). ``array_input``: the estimator
    gets a 2-D numpy array instead of a DataFrame (checked to give the same answers, warning-free).
    """

    one_call: bool = False
    array_input: bool = False


@dataclass
class LoadedVersion:
    """A version ready to serve: a verified, deserialised estimator and its signature."""

    model: str
    version: int
    sha256: str
    signature: Signature
    estimator: Any
    plan: CallPlan = field(default_factory=CallPlan)

    def target(self) -> TargetSpec | None:
        """What the version predicts: the target recorded in its signature, else (versions
        registered before targets were recorded) read from the estimator."""
        from closedloop.domain.signature import infer_target

        return self.signature.target or infer_target(self.estimator)

    def predict(self, frame: pd.DataFrame) -> Prediction:
        """Predict on a frame whose columns follow the signature."""
        return self._call(frame, self.plan.one_call)

    def predict_rows(self, rows: Rows, frame: pd.DataFrame | None = None) -> Prediction:
        """Predict validated rows (``frame``: the same rows as a frame, when already built)."""
        if self.plan.array_input:
            return self._call(rows.array(), self.plan.one_call)
        return self._call(rows.frame() if frame is None else frame, self.plan.one_call)

    def _call(self, X: Any, one_call: bool) -> Prediction:
        if one_call:
            matrix = self.estimator.predict_proba(X)
            labels = self.estimator.classes_.take(np.argmax(matrix, axis=1))
            return Prediction(labels, _positive_scores(matrix), matrix)
        labels = self.estimator.predict(X)
        proba = getattr(self.estimator, "predict_proba", None)
        if not callable(proba):
            return Prediction(labels=labels, scores=None)
        matrix = proba(X)
        return Prediction(labels, _positive_scores(matrix), matrix)

    def calibrate(self, sample: pd.DataFrame) -> CallPlan:
        """Choose (and keep) the call plan that answers ``sample`` exactly like the plain calls.

        ``sample`` holds rows the version was trained or evaluated on, with the signature's
        columns. Each shortcut is tried on it and kept only when its answers are equal.
        """
        names = self.signature.names()
        coerced = self.signature.coerce_columns({n: sample[n].to_numpy() for n in names})
        rows = Rows.from_columns(names, list(coerced.values()))
        if rows.count == 0:
            return self.plan
        frame = rows.frame()
        plain = _quietly(lambda: self._call(frame, one_call=False))
        array_input = self._takes_arrays(rows, plain)
        X = rows.array() if array_input else frame
        self.plan = CallPlan(one_call=self._argmax_is_predict(X, plain), array_input=array_input)
        return self.plan

    def _argmax_is_predict(self, X: Any, plain: Prediction) -> bool:
        classes = getattr(self.estimator, "classes_", None)
        if classes is None or not callable(getattr(self.estimator, "predict_proba", None)):
            return False
        try:
            shortcut = _quietly(lambda: self._call(X, one_call=True))
        except Exception:
            return False
        return _same(shortcut, plain)

    def _takes_arrays(self, rows: Rows, plain: Prediction) -> bool:
        if hasattr(self.estimator, "feature_names_in_"):
            return False  # fitted on named columns: it wants (and checks) a DataFrame
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                answer = self._call(rows.array(), one_call=False)
            except Exception:
                return False
        return not caught and _same(answer, plain)


def _quietly(call: Callable[[], Prediction]) -> Prediction:
    """Run ``call`` with its warnings recorded and dropped (calibration only)."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        return call()


def _positive_scores(matrix: Any) -> np.ndarray | None:
    if getattr(matrix, "ndim", 0) == 2 and matrix.shape[1] == 2:
        return np.asarray(matrix[:, 1])
    return None


def _same(a: Prediction, b: Prediction) -> bool:
    """Equal labels (values and dtype) and equal scores."""
    la, lb = np.asarray(a.labels), np.asarray(b.labels)
    if la.dtype != lb.dtype or not np.array_equal(la, lb):
        return False
    if a.scores is None or b.scores is None:
        return a.scores is None and b.scores is None
    return bool(np.allclose(a.scores, b.scores, rtol=1e-12, atol=0.0))
