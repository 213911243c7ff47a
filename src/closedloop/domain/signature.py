"""Model signatures: the columns a version was trained on, its target, and data coercion.

A :class:`Signature` is inferred from the training features with :func:`infer_signature` and
stored with the version. At serving time :meth:`Signature.frame_from_columns` turns request
columns into a frame with the training column order and dtypes, raising :class:`SchemaError`
(with machine-readable ``details``) for a missing/unknown column, unequal lengths, a wrongly typed
value, a null in a non-nullable column, a value an integer column cannot hold (outside int64) or an
infinity in a float column whose training data had none. Unseen categories and numbers outside the
training range are *not* errors: they pass through so production traffic keeps being answered
while monitoring counts them.

A signature also records the version's :class:`TargetSpec` (what it predicts: a continuous value,
or one of its classes, and their type), inferred at registration with :func:`infer_target`. Labels
that arrive later (feedback) are coerced to it with :meth:`TargetSpec.coerce`, so a label ``"2"``
posted as JSON compares equal to the predicted class ``2`` and a regression label stays a float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from closedloop.errors import SchemaError

Dtype = Literal["float", "integer", "boolean", "string"]
DTYPES: tuple[Dtype, ...] = ("float", "integer", "boolean", "string")
MAX_CATEGORIES = 1000
"""String columns with more distinct training values than this record ``categories=None``."""

_NUMERIC_KINDS = frozenset({"floating", "integer", "mixed-integer-float", "decimal"})


@dataclass(frozen=True)
class ColumnSpec:
    """One training column: its name, type, whether nulls were seen, and its training range."""

    name: str
    dtype: Dtype
    nullable: bool = False
    categories: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of plain types."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "nullable": self.nullable,
            "categories": list(self.categories) if self.categories is not None else None,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Inverse of :meth:`to_dict`; raises SchemaError on an unknown dtype."""
        dtype = data.get("dtype")
        if dtype not in DTYPES:
            raise SchemaError(
                f"column {data.get('name')!r} has unknown dtype {dtype!r}",
                details={"column": data.get("name"), "expected": list(DTYPES), "got": dtype},
            )
        categories = data.get("categories")
        return cls(
            name=str(data["name"]),
            dtype=cast(Dtype, dtype),
            nullable=bool(data.get("nullable", False)),
            categories=tuple(str(c) for c in categories) if categories is not None else None,
            minimum=_opt_float(data.get("minimum")),
            maximum=_opt_float(data.get("maximum")),
        )


TargetTask = Literal["regression", "binary", "multiclass"]
TARGET_TASKS: tuple[TargetTask, ...] = ("regression", "binary", "multiclass")
_BOOLEAN_WORDS = {"true": True, "false": False, "1": True, "0": False}


@dataclass(frozen=True)
class TargetSpec:
    """What a version predicts: a continuous value (``regression``, dtype ``float``), or one of
    its ``classes`` (``binary``/``multiclass``; ``dtype`` is the classes' type)."""

    task: TargetTask
    dtype: Dtype
    classes: tuple[Any, ...] | None = None

    @property
    def continuous(self) -> bool:
        """Whether labels are continuous values (compared with KS, scored with errors)."""
        return self.task == "regression"

    def describe(self) -> str:
        """The expected label type in words, for error messages."""
        if self.continuous:
            return "a number (the model is a regression)"
        shown = ", ".join(repr(c) for c in (self.classes or ())[:10])
        more = ", ..." if len(self.classes or ()) > 10 else ""
        article = "an" if self.dtype[0] in "aeiou" else "a"
        return f"{article} {self.dtype} class label (the model's classes: {shown}{more})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "dtype": self.dtype,
            "classes": list(self.classes) if self.classes is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetSpec:
        """Inverse of :meth:`to_dict`; raises SchemaError on an unknown task or dtype."""
        task, dtype = data.get("task"), data.get("dtype")
        if task not in TARGET_TASKS or dtype not in DTYPES:
            raise SchemaError(
                f"the stored target has an unknown task {task!r} or dtype {dtype!r}",
                details={"expected": list(TARGET_TASKS), "got": task},
            )
        classes = data.get("classes")
        return cls(
            task=cast(TargetTask, task),
            dtype=cast(Dtype, dtype),
            classes=tuple(classes) if classes is not None else None,
        )

    def coerce(self, values: Sequence[object]) -> np.ndarray[Any, Any]:
        """``values`` as labels of this target's type: float64 for a regression (finite), else
        the classes' type (``"2"`` and ``2.0`` become ``2`` for integer classes), one of the
        classes. Raises :class:`SchemaError` naming the first label that cannot be read as
        that type or is not one of the classes."""
        converted, readable = self.coerce_valid(values)
        valid = readable & self.known(converted)
        if not bool(valid.all()):
            row = int(np.flatnonzero(~valid)[0])
            got = _plain(list(values)[row])
            example = (self.classes or ("",))[0]
            problem = "cannot be read as" if not readable[row] else "is not"
            raise SchemaError(
                f"label {row} ({got!r}, {type(got).__name__}) {problem} {self.describe()}",
                hint="Post each label as a number (a JSON number or a numeric string)."
                if self.continuous
                else f"Post each label as one of the model's classes, e.g. {example!r}.",
                details={"row": row, "expected": self.dtype, "task": self.task, "got": got},
            )
        return converted

    def known(self, labels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """A mask of the ``labels`` (already of this target's type) that are among the
        classes; all True for a regression or unrecorded classes."""
        if self.continuous or self.classes is None:
            return np.ones(len(labels), dtype=bool)
        mask: np.ndarray[Any, Any] = pd.Series(labels, dtype=object).isin(self.classes).to_numpy()
        return mask

    def coerce_valid(
        self, values: Sequence[object] | np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """``(labels, valid)``: every label that can be read as this target's type converted,
        and a mask of those that could (the others hold a placeholder)."""
        # Typed arrays take a vectorised path; lists (e.g. parsed JSON) are read value by value,
        # so a boolean among numbers is refused rather than silently read as 0/1.
        typed = isinstance(values, np.ndarray | pd.Series)
        array = np.asarray(values) if typed else np.empty(0, dtype=object)
        kind = array.dtype.kind if typed else "O"
        if self.dtype == "float" and kind in "iuf" and array.ndim == 1:
            floats = array.astype(np.float64)
            return floats, np.isfinite(floats)
        if self.dtype == "integer" and kind in "iu" and array.ndim == 1:
            return array.astype(np.int64), np.ones(len(array), dtype=bool)
        if self.dtype == "boolean" and kind == "b" and array.ndim == 1:
            return array.astype(bool), np.ones(len(array), dtype=bool)
        convert = _LABEL_CONVERTERS[self.dtype]
        items = list(values)
        out: list[Any] = []
        valid = np.ones(len(items), dtype=bool)
        placeholder = {"float": np.nan, "integer": 0, "boolean": False, "string": ""}[self.dtype]
        for i, item in enumerate(items):
            value = convert(item.item() if isinstance(item, np.generic) else item)
            if value is None:
                valid[i] = False
                value = placeholder
            out.append(value)
        dtypes = {"float": np.float64, "integer": np.int64, "boolean": bool, "string": object}
        result = np.empty(len(out), dtype=dtypes[self.dtype])
        result[:] = out
        return result, valid


def _label_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and np.isfinite(float(value)):
        return float(value)
    return None


def _label_integer(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _label_float(value)
    if number is None or number != int(number):
        return None
    return int(number)


def _label_boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return _BOOLEAN_WORDS.get(value.strip().lower())
    return None


def _label_string(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


_LABEL_CONVERTERS: dict[str, Callable[[object], Any]] = {
    "float": _label_float,
    "integer": _label_integer,
    "boolean": _label_boolean,
    "string": _label_string,
}


def infer_target(
    estimator: object, labels: object = None, predictions: object = None
) -> TargetSpec | None:
    """The target of a fitted ``estimator``: its ``classes_`` for a classifier, ``float`` for a
    regressor. Otherwise from true ``labels`` and the model's ``predictions`` (e.g. held-out
    rows): floats with fractions are a regression; predicted integers, strings or booleans
    are classes (those of both). None when it cannot be told."""
    classes = getattr(estimator, "classes_", None)
    if classes is not None:
        spec = _classes_target(np.asarray(classes))
        if spec is not None:
            return spec
    if _is_regressor(estimator):
        return TargetSpec("regression", "float")
    arrays = [np.asarray(a) for a in (labels, predictions) if a is not None]
    arrays = [a for a in arrays if a.ndim == 1 and a.size > 0]
    if not arrays:
        return None
    for array in arrays:
        if array.dtype.kind == "f":
            finite = array[np.isfinite(array)]
            if bool((finite != np.floor(finite)).any()):
                return TargetSpec("regression", "float")
    categorical = ("string", "boolean")
    predicted = np.asarray(predictions) if predictions is not None else None
    if (predicted is not None and predicted.dtype.kind in "iub") or any(
        a.dtype.kind == "b" or pd.api.types.infer_dtype(a, skipna=True) in categorical
        for a in arrays
    ):
        try:
            union = sorted(set().union(*(pd.unique(a).tolist() for a in arrays)))
        except TypeError:  # labels of different types cannot be ordered
            return None
        return _classes_target(np.asarray(union))
    return None


def _classes_target(classes: np.ndarray[Any, Any]) -> TargetSpec | None:
    if classes.ndim != 1 or classes.size < 2:
        return None
    kind = classes.dtype.kind
    dtype: Dtype
    if kind == "b":
        dtype = "boolean"
    elif kind in "iu":
        dtype = "integer"
    elif kind == "f":
        dtype = "float"
    else:
        inferred = pd.api.types.infer_dtype(classes, skipna=False)
        if inferred == "string":
            dtype = "string"
        elif inferred == "integer":
            dtype = "integer"
        elif inferred == "boolean":
            dtype = "boolean"
        else:
            return None
    plain = tuple(c.item() if isinstance(c, np.generic) else c for c in classes.tolist())
    return TargetSpec("binary" if len(plain) == 2 else "multiclass", dtype, plain)


def _is_regressor(estimator: object) -> bool:
    try:
        from sklearn.base import is_regressor

        return bool(is_regressor(estimator))
    except Exception:  # not a scikit-learn estimator: its tags cannot be read
        return getattr(estimator, "_estimator_type", None) == "regressor"


@dataclass(frozen=True)
class Signature:
    """The ordered training columns of a version (and its target, when known)."""

    columns: tuple[ColumnSpec, ...]
    target: TargetSpec | None = None

    def names(self) -> list[str]:
        """Column names in training order."""
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of plain types."""
        out: dict[str, Any] = {"columns": [c.to_dict() for c in self.columns]}
        if self.target is not None:
            out["target"] = self.target.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Inverse of :meth:`to_dict` (signatures stored before targets were recorded have
        ``target=None``)."""
        target = data.get("target")
        return cls(
            columns=tuple(ColumnSpec.from_dict(c) for c in data["columns"]),
            target=TargetSpec.from_dict(target) if target is not None else None,
        )

    def frame_from_columns(
        self, columns: Mapping[str, Sequence[object] | np.ndarray[Any, Any]]
    ) -> pd.DataFrame:
        """Validate and coerce request columns into a frame in signature order and dtypes."""
        data = self.coerce_columns(columns)
        return pd.DataFrame(data, columns=self.names(), copy=False)

    def coerce_columns(
        self, columns: Mapping[str, Sequence[object] | np.ndarray[Any, Any]]
    ) -> dict[str, Any]:
        """Validate request columns; one array per column, in signature order and dtypes."""
        expected = self.names()
        missing = [n for n in expected if n not in columns]
        known = set(expected)
        unknown = [str(n) for n in columns if n not in known]
        if missing or unknown:
            parts = []
            if missing:
                parts.append("missing column(s) " + ", ".join(map(repr, missing)))
            if unknown:
                parts.append("unknown column(s) " + ", ".join(map(repr, unknown)))
            raise SchemaError(
                "; ".join(parts) + f"; expected columns: {expected}",
                hint="Send exactly the columns the model was trained on.",
                details={"missing": missing, "unknown": unknown, "expected": expected},
            )
        lengths = {n: _length(n, columns[n]) for n in expected}
        if len(set(lengths.values())) > 1:
            raise SchemaError(
                f"columns have unequal lengths: {lengths}",
                hint="Every column must have one value per row.",
                details={"lengths": lengths},
            )
        return {spec.name: _coerce(spec, columns[spec.name]) for spec in self.columns}


def infer_signature(frame: pd.DataFrame) -> Signature:
    """Infer a signature from training features (the caller excludes the target)."""
    if not frame.columns.is_unique:
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise SchemaError(f"duplicate column names: {dupes}", details={"duplicates": dupes})
    specs = []
    for name in frame.columns:
        if not isinstance(name, str):
            raise SchemaError(
                f"column names must be strings, got {name!r}",
                hint="Rename the columns, e.g. frame.columns = frame.columns.astype(str).",
                details={"column": str(name), "expected": "string", "got": type(name).__name__},
            )
        specs.append(_infer_column(name, frame[name]))
    return Signature(columns=tuple(specs))


def _infer_column(name: str, series: pd.Series[Any]) -> ColumnSpec:
    nullable = bool(series.isna().any())
    dtype = series.dtype
    kind: Dtype
    if pd.api.types.is_bool_dtype(dtype):
        kind = "boolean"
    elif pd.api.types.is_integer_dtype(dtype):
        kind = "integer"
    elif pd.api.types.is_float_dtype(dtype):
        kind = "float"
    elif isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        values = series.cat.categories if isinstance(dtype, pd.CategoricalDtype) else series
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        if inferred in ("string", "empty"):
            kind = "string"
        elif inferred == "boolean":
            kind = "boolean"
        else:
            raise SchemaError(
                f"column {name!r} mixes value types ({inferred}); cannot infer a signature",
                hint="Give every column a single type (float, integer, boolean or string).",
                details={"column": name, "expected": list(DTYPES), "got": inferred},
            )
    else:
        raise SchemaError(
            f"column {name!r} has unsupported dtype {dtype}",
            hint="Convert it to float, integer, boolean or string before training.",
            details={"column": name, "expected": list(DTYPES), "got": str(dtype)},
        )
    if kind == "string":
        distinct = series.dropna().astype(str).unique()
        categories = tuple(sorted(distinct)) if len(distinct) <= MAX_CATEGORIES else None
        return ColumnSpec(name, kind, nullable, categories=categories)
    if kind in ("float", "integer"):
        values = series.dropna()
        if len(values):
            return ColumnSpec(
                name, kind, nullable, minimum=float(values.min()), maximum=float(values.max())
            )
    return ColumnSpec(name, kind, nullable)


# --- coercion ---------------------------------------------------------------------------------


def _opt_float(value: object) -> float | None:
    return None if value is None else float(cast(float, value))


def _length(name: str, values: object) -> int:
    scalar = isinstance(values, np.ndarray) and values.ndim == 0
    if scalar or isinstance(values, str | bytes | Mapping) or not hasattr(values, "__len__"):
        raise SchemaError(
            f"column {name!r} must be a list of values, got {type(values).__name__}",
            details={"column": name, "expected": "list", "got": type(values).__name__},
        )
    return len(cast(Sequence[object], values))


def _plain(value: object) -> object:
    """A JSON-friendly rendering of an offending value for error details."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, str | int | float | bool):
        return value
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _check_values(
    spec: ColumnSpec, values: np.ndarray[Any, Any], bad: Callable[[Any], bool]
) -> None:
    """Raise a SchemaError naming the first value for which ``bad`` is true (error path only)."""
    for row, value in enumerate(values):
        if bad(value):
            got = _plain(value)
            raise SchemaError(
                f"column {spec.name!r} expects {spec.dtype} values; row {row} has "
                f"{type(value).__name__} {got!r}",
                details={"column": spec.name, "expected": spec.dtype, "got": got, "row": row},
            )


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float | np.floating) and bool(np.isnan(value)))


def _not_a_number(value: object) -> bool:
    if _is_null(value):
        return False
    return isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number)


def _null_error(spec: ColumnSpec, mask: np.ndarray[Any, Any]) -> None:
    row = int(np.argmax(mask))
    raise SchemaError(
        f"column {spec.name!r} does not accept nulls (none were seen in training); "
        f"row {row} is null",
        hint="Fill the value, or retrain on data where this column can be null.",
        details={
            "column": spec.name,
            "expected": f"non-null {spec.dtype}",
            "got": None,
            "row": row,
        },
    )


def _as_objects(spec: ColumnSpec, values: Sequence[object]) -> np.ndarray[Any, Any]:
    try:
        array = np.array(values, dtype=object)
    except ValueError:  # ragged nested lists
        array = None
    if array is None or array.ndim != 1:
        raise SchemaError(
            f"column {spec.name!r} must be a flat list of scalars; it contains nested lists",
            details={"column": spec.name, "expected": spec.dtype, "got": "nested list"},
        )
    return array


def _coerce(spec: ColumnSpec, values: Sequence[object] | np.ndarray[Any, Any]) -> Any:
    """Return the column as an array (or extension array) with the training dtype."""
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim != 1:
            raise SchemaError(
                f"column {spec.name!r} must be 1-D, got shape {list(values.shape)}",
                details={"column": spec.name, "expected": "1-D", "got": list(values.shape)},
            )
        array = values
        kind = {"f": "floating", "i": "integer", "u": "integer", "b": "boolean"}.get(
            array.dtype.kind, "string" if array.dtype.kind in "US" else "mixed"
        )
    else:
        array = _as_objects(spec, cast(Sequence[object], values))
        kind = pd.api.types.infer_dtype(array, skipna=True)
    if kind == "empty" and len(array):
        kind = "null"  # every value is null
    nulls: np.ndarray[Any, Any] | None = None
    if array.dtype == object and kind != "empty":
        nulls = np.asarray(pd.isna(array))
        if not nulls.any():
            nulls = None
    elif array.dtype.kind == "f":
        nulls = np.isnan(array)
        if not nulls.any():
            nulls = None
    if nulls is not None and not spec.nullable:
        _null_error(spec, nulls)
    return _CONVERTERS[spec.dtype](spec, array, kind, nulls)


def _floats(
    spec: ColumnSpec, array: np.ndarray[Any, Any], kind: str, nulls: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, Any]:
    if kind not in _NUMERIC_KINDS and kind not in ("empty", "null"):
        _check_values(spec, array, _not_a_number)
    if nulls is not None and array.dtype == object:
        array = array.copy()
        array[nulls] = np.nan
    return array.astype(np.float64, copy=False)


def _to_float(
    spec: ColumnSpec, array: np.ndarray[Any, Any], kind: str, nulls: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, Any]:
    floats = _floats(spec, array, kind, nulls)
    infinite = np.isinf(floats)
    if infinite.any():
        _infinity_error(spec, floats, infinite)
    return floats


def _infinity_error(
    spec: ColumnSpec, floats: np.ndarray[Any, Any], infinite: np.ndarray[Any, Any]
) -> None:
    """An infinity is refused unless training saw it (the recorded minimum or maximum is one)."""
    allowed = np.zeros(len(floats), dtype=bool)
    if spec.maximum == np.inf:
        allowed |= floats == np.inf
    if spec.minimum == -np.inf:
        allowed |= floats == -np.inf
    refused = infinite & ~allowed
    if not refused.any():
        return
    row = int(np.argmax(refused))
    got = float(floats[row])
    raise SchemaError(
        f"column {spec.name!r} expects finite numbers; row {row} has {got}",
        hint="Send a finite number (or null where the column accepts nulls); training saw "
        "no infinite values in this column.",
        details={"column": spec.name, "expected": "finite float", "got": str(got), "row": row},
    )


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
"""What an integer column holds (a 64-bit signed integer)."""


def _range_error(spec: ColumnSpec, row: int, got: object) -> None:
    raise SchemaError(
        f"column {spec.name!r} holds integers from {INT64_MIN} to {INT64_MAX}; row {row} has {got}",
        hint="Send a value in that range.",
        details={
            "column": spec.name,
            "expected": {"minimum": INT64_MIN, "maximum": INT64_MAX},
            "got": str(got),
            "row": row,
        },
    )


def _to_integer(
    spec: ColumnSpec, array: np.ndarray[Any, Any], kind: str, nulls: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, Any]:
    if kind not in _NUMERIC_KINDS and kind not in ("empty", "null"):
        _check_values(spec, array, _not_a_number)
    if array.dtype.kind == "u" and array.dtype.itemsize == 8:
        too_large = array > INT64_MAX  # a cast to int64 would wrap around silently
        if too_large.any():
            row = int(np.argmax(too_large))
            _range_error(spec, row, array[row])
    if kind == "integer" and nulls is None:
        try:
            return array.astype(np.int64, copy=False)
        except OverflowError:
            for row, value in enumerate(array):  # error path only
                if not INT64_MIN <= int(value) <= INT64_MAX:
                    _range_error(spec, row, value)
    floats = _floats(spec, array, "floating", nulls)
    present = floats if nulls is None else floats[~nulls]
    fractional = present != np.floor(present)
    if fractional.any():
        bad = present[fractional][0]
        _check_values(spec, array, lambda v: not _is_null(v) and float(v) == bad)
    # 2**63 is exact in float64 and the first value past INT64_MAX; NaN (null) compares False.
    outside = (floats < float(INT64_MIN)) | (floats >= 2.0**63)
    if outside.any():
        row = int(np.argmax(outside))
        _range_error(spec, row, floats[row])
    # Nulls cannot live in an int64 array: keep them as NaN in float64, as pandas does.
    return floats if nulls is not None else floats.astype(np.int64)


def _to_boolean(
    spec: ColumnSpec, array: np.ndarray[Any, Any], kind: str, nulls: np.ndarray[Any, Any] | None
) -> Any:
    if kind == "integer":
        numbers = array if nulls is None else array[~nulls]
        if not np.isin(numbers.astype(np.int64), (0, 1)).all():
            _check_values(spec, array, lambda v: not _is_null(v) and v not in (0, 1))
    elif kind not in ("boolean", "empty", "null"):
        _check_values(
            spec,
            array,
            lambda v: (
                not _is_null(v)
                and not isinstance(v, bool | np.bool_)
                and not (isinstance(v, int | np.integer) and v in (0, 1))
            ),
        )
    if nulls is None:
        return array.astype(bool)
    out = np.empty(len(array), dtype=object)
    out[~nulls] = array[~nulls].astype(bool)
    out[nulls] = None
    return out


def _to_string(
    spec: ColumnSpec, array: np.ndarray[Any, Any], kind: str, nulls: np.ndarray[Any, Any] | None
) -> np.ndarray[Any, Any]:
    if kind not in ("string", "empty", "null"):
        _check_values(spec, array, lambda v: not _is_null(v) and not isinstance(v, str))
    return array.astype(object, copy=False)


_CONVERTERS: dict[str, Callable[..., Any]] = {
    "float": _to_float,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "string": _to_string,
}

__all__ = [
    "DTYPES",
    "MAX_CATEGORIES",
    "TARGET_TASKS",
    "ColumnSpec",
    "Dtype",
    "Signature",
    "TargetSpec",
    "TargetTask",
    "infer_signature",
    "infer_target",
]
