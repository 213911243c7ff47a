"""Model signatures: the columns a version was trained on, and request-data coercion.

A :class:`Signature` is inferred from the training features with :func:`infer_signature` and
stored with the version. At serving time :meth:`Signature.frame_from_columns` turns request
columns into a frame with the training column order and dtypes, raising :class:`SchemaError`
(with machine-readable ``details``) for a missing/unknown column, unequal lengths, a wrongly typed
value, a null in a non-nullable column, a value an integer column cannot hold (outside int64) or an
infinity in a float column whose training data had none. Unseen categories and numbers outside the
training range are *not* errors: they pass through so production traffic keeps being answered
while monitoring counts them.
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


@dataclass(frozen=True)
class Signature:
    """The ordered training columns of a version."""

    columns: tuple[ColumnSpec, ...]

    def names(self) -> list[str]:
        """Column names in training order."""
        return [c.name for c in self.columns]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of plain types."""
        return {"columns": [c.to_dict() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        """Inverse of :meth:`to_dict`."""
        return cls(columns=tuple(ColumnSpec.from_dict(c) for c in data["columns"]))

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

__all__ = ["DTYPES", "MAX_CATEGORIES", "ColumnSpec", "Dtype", "Signature", "infer_signature"]
