"""Data-quality signals per column: is the current window *well-formed* like the reference?

Drift asks whether values are distributed differently; quality asks whether the pipeline
delivering them broke. :func:`data_quality` compares the current window with the reference and
returns a :class:`QualityReport`, reported beside the drift report.

Column kinds follow :func:`closedloop.domain.profiles.column_kind` applied to the *reference*
(``categorical=`` forces columns categorical), so quality and drift always agree on kinds.
Missing values are nulls, plus ``+-inf`` for numeric columns (closedloop treats non-finite
numbers as nulls everywhere).

Signals (every one computed vectorised per column, no per-row Python):

``missing`` (every column)
    Missing counts and rates in both windows, the change ``current - reference`` and the
    two-sided p-value of the pooled two-proportion z-test
    ``z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p`` the pooled rate (p-value 1
    when the pooled rate is 0 or 1: nothing to test). Not adjusted for multiple testing: the
    absolute floor below is what keeps huge windows from flagging trivial changes.
``out_of_range`` (numeric)
    Current non-missing values below the reference minimum or above the reference maximum;
    ``out_of_range_share`` is their share of the current non-missing values.
``unseen`` (categorical)
    Current non-null values whose category never occurs (non-null) in the reference, and their
    share of the current non-null values; ``unseen_examples`` are the most frequent ones.
``type_violations`` (numeric)
    When a column is numeric in the reference but not in the current window (e.g. a CSV read
    as object dtype because some rows hold text), its values are parsed with
    ``pd.to_numeric(errors="coerce")``; non-null values that do not parse are violations (a
    bool column counts all its values), reported with count, share of the current non-null
    values and the first ``max_examples`` distinct examples. The parsed numbers are used for the
    other signals. Categorical columns accept any value as a category (see ``unseen``), so they
    have no type violations.

Flag (:attr:`ColumnQuality.flagged`, with :attr:`ColumnQuality.reasons`) when any of:

* ``"missing_rate_increase"``: the missing rate rose by at least ``missing_increase``
  (default 0.05 absolute) *and* the z-test's p-value is below ``alpha`` (default 0.05);
* ``"out_of_range"``: ``out_of_range_share >= out_of_range_threshold`` (default 0.01);
* ``"unseen_categories"``: ``unseen_share >= unseen_threshold`` (default 0.01);
* ``"type_violations"``: any type violation.

Verdict: these are data-quality signals, reported beside drift. Whether they count in the
dataset's drift verdict is the ``count_in_verdict`` parameter (default ``False``: reported, not
counted); :attr:`QualityReport.affects_verdict` is true only when it is set and a column is
flagged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes
from scipy import stats

from closedloop.domain.profiles import (
    ColumnKind,
    column_kind,
    forced_categorical,
    numeric_matrix,
)
from closedloop.errors import InvalidInputError, SchemaError

DEFAULT_ALPHA = 0.05
DEFAULT_MISSING_INCREASE = 0.05
"""Absolute missing-rate increase (with a significant z-test) that flags a column."""
DEFAULT_OUT_OF_RANGE_THRESHOLD = 0.01
"""Share of current values outside the reference [min, max] that flags a numeric column."""
DEFAULT_UNSEEN_THRESHOLD = 0.01
"""Share of current values in categories absent from the reference that flags a column."""
DEFAULT_MAX_EXAMPLES = 5

REASONS = ("missing_rate_increase", "out_of_range", "unseen_categories", "type_violations")


@dataclass
class ColumnQuality:
    """Quality signals of one column; numeric-only fields are ``None`` for categorical columns
    and vice versa. Rates/shares are ``None`` when their denominator is zero."""

    column: str
    kind: ColumnKind
    n_reference: int
    n_current: int
    reference_missing: int
    current_missing: int
    reference_missing_rate: float
    current_missing_rate: float
    missing_rate_change: float
    missing_p_value: float
    reference_min: float | None = None
    reference_max: float | None = None
    out_of_range_count: int | None = None
    out_of_range_share: float | None = None
    unseen_count: int | None = None
    unseen_share: float | None = None
    unseen_examples: list[str] | None = None
    type_violation_count: int = 0
    type_violation_share: float | None = None
    type_violation_examples: list[str] = field(default_factory=list)
    flagged: bool = False
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (plain Python types, no NaN/inf)."""
        body: dict[str, Any] = {
            "column": self.column,
            "kind": self.kind,
            "n_reference": int(self.n_reference),
            "n_current": int(self.n_current),
            "reference_missing": int(self.reference_missing),
            "current_missing": int(self.current_missing),
            "reference_missing_rate": _opt_float(self.reference_missing_rate),
            "current_missing_rate": _opt_float(self.current_missing_rate),
            "missing_rate_change": _opt_float(self.missing_rate_change),
            "missing_p_value": _opt_float(self.missing_p_value),
            "type_violation_count": int(self.type_violation_count),
            "type_violation_share": _opt_float(self.type_violation_share),
            "type_violation_examples": [str(v) for v in self.type_violation_examples],
            "flagged": bool(self.flagged),
            "reasons": [str(r) for r in self.reasons],
        }
        if self.kind == "numeric":
            body["reference_min"] = _opt_float(self.reference_min)
            body["reference_max"] = _opt_float(self.reference_max)
            body["out_of_range_count"] = _opt_int(self.out_of_range_count)
            body["out_of_range_share"] = _opt_float(self.out_of_range_share)
        else:
            body["unseen_count"] = _opt_int(self.unseen_count)
            body["unseen_share"] = _opt_float(self.unseen_share)
            body["unseen_examples"] = [str(v) for v in self.unseen_examples or []]
        return body


@dataclass
class QualityReport:
    """The result of :func:`data_quality`; :meth:`to_dict` is JSON-safe."""

    n_reference: int
    n_current: int
    alpha: float
    missing_increase: float
    out_of_range_threshold: float
    unseen_threshold: float
    count_in_verdict: bool
    columns: list[ColumnQuality] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """Whether any column is flagged."""
        return any(column.flagged for column in self.columns)

    @property
    def flagged_columns(self) -> list[str]:
        """Names of the flagged columns, in report order."""
        return [column.column for column in self.columns if column.flagged]

    @property
    def affects_verdict(self) -> bool:
        """True when quality counts in the dataset verdict and some column is flagged."""
        return self.count_in_verdict and self.flagged

    def column(self, name: str) -> ColumnQuality:
        """The result for column ``name`` (:class:`SchemaError` when it was not checked)."""
        for column in self.columns:
            if column.column == name:
                return column
        raise SchemaError(
            f"The quality report has no column {name!r}; it checked "
            f"{[c.column for c in self.columns]}.",
            details={"column": name},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        return {
            "flagged": bool(self.flagged),
            "affects_verdict": bool(self.affects_verdict),
            "count_in_verdict": bool(self.count_in_verdict),
            "n_reference": int(self.n_reference),
            "n_current": int(self.n_current),
            "thresholds": {
                "alpha": float(self.alpha),
                "missing_increase": float(self.missing_increase),
                "out_of_range": float(self.out_of_range_threshold),
                "unseen": float(self.unseen_threshold),
            },
            "flagged_columns": [str(c) for c in self.flagged_columns],
            "columns": [column.to_dict() for column in self.columns],
        }


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def two_proportion_p_values(
    x1: np.ndarray, n1: np.ndarray, x2: np.ndarray, n2: np.ndarray
) -> np.ndarray:
    """Two-sided p-values of the pooled two-proportion z-test, vectorised.

    ``x1`` of ``n1`` events against ``x2`` of ``n2``; ``z = (x2/n2 - x1/n1) / sqrt(p (1 - p)
    (1/n1 + 1/n2))`` with ``p = (x1 + x2) / (n1 + n2)``; p-value ``2 * Phi(-|z|)``. Where the
    pooled rate is 0 or 1 (or a sample is empty) the p-value is 1.
    """
    x1, n1, x2, n2 = (np.asarray(v, dtype=np.float64) for v in (x1, n1, x2, n2))
    valid = (n1 > 0) & (n2 > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = (x1 + x2) / (n1 + n2)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
        z = (x2 / n2 - x1 / n1) / se
    testable = valid & (se > 0)
    tails = np.asarray(stats.norm.sf(np.abs(np.where(testable, z, 0.0))), dtype=np.float64)
    p: np.ndarray = np.clip(np.where(testable, 2.0 * tails, 1.0), 0.0, 1.0)
    return p


# --------------------------------------------------------------------------------------------
# data_quality
# --------------------------------------------------------------------------------------------


def data_quality(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    missing_increase: float = DEFAULT_MISSING_INCREASE,
    out_of_range_threshold: float = DEFAULT_OUT_OF_RANGE_THRESHOLD,
    unseen_threshold: float = DEFAULT_UNSEEN_THRESHOLD,
    count_in_verdict: bool = False,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
) -> QualityReport:
    """Data-quality signals of every column of ``reference`` (or the listed ``columns``).

    See the module docstring for the signals, the flag thresholds and ``count_in_verdict``.
    Raises :class:`SchemaError` when a checked column is missing from either frame and
    :class:`InvalidInputError` for non-frames, empty frames and invalid parameters.
    """
    for frame, label in ((reference, "reference"), (current, "current")):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(
                f"{label} must be a pandas DataFrame. Got {type(frame).__name__} instead."
            )
        if len(frame) == 0:
            raise InvalidInputError(
                f"The {label} frame has no rows; quality checks need at least one row in each."
            )
    alpha = _unit_float(alpha, "alpha", open_interval=True)
    missing_increase = _unit_float(missing_increase, "missing_increase")
    out_of_range_threshold = _unit_float(out_of_range_threshold, "out_of_range_threshold")
    unseen_threshold = _unit_float(unseen_threshold, "unseen_threshold")
    if not isinstance(count_in_verdict, bool):
        raise InvalidInputError(
            f"count_in_verdict must be True or False. Got {count_in_verdict!r} instead."
        )
    if isinstance(max_examples, bool) or not isinstance(max_examples, numbers.Integral):
        raise InvalidInputError(f"max_examples must be an integer >= 0. Got {max_examples!r}.")
    if max_examples < 0:
        raise InvalidInputError(f"max_examples must be an integer >= 0. Got {max_examples!r}.")
    names = _resolve_columns(reference, current, columns)
    forced = forced_categorical(reference, categorical, label="reference frame")

    kinds = {name: column_kind(reference[name], force_categorical=name in forced) for name in names}
    results: dict[Any, ColumnQuality] = {}
    numeric = [name for name in names if kinds[name] == "numeric"]
    results.update(_numeric_quality(reference, current, numeric, int(max_examples)))
    for name in names:
        if kinds[name] == "categorical":
            results[name] = _categorical_quality(reference[name], current[name], int(max_examples))
    ordered = [results[name] for name in names]

    p_values = two_proportion_p_values(
        np.array([c.reference_missing for c in ordered]),
        np.full(len(ordered), len(reference)),
        np.array([c.current_missing for c in ordered]),
        np.full(len(ordered), len(current)),
    )
    for item, p_value in zip(ordered, p_values, strict=True):
        item.missing_p_value = float(p_value)
        reasons = []
        if item.missing_rate_change >= missing_increase and p_value < alpha:
            reasons.append("missing_rate_increase")
        if item.out_of_range_share is not None and item.out_of_range_share >= max(
            out_of_range_threshold, 1e-300
        ):
            reasons.append("out_of_range")
        if item.unseen_share is not None and item.unseen_share >= max(unseen_threshold, 1e-300):
            reasons.append("unseen_categories")
        if item.type_violation_count > 0:
            reasons.append("type_violations")
        item.reasons = reasons
        item.flagged = bool(reasons)
    return QualityReport(
        n_reference=len(reference),
        n_current=len(current),
        alpha=alpha,
        missing_increase=missing_increase,
        out_of_range_threshold=out_of_range_threshold,
        unseen_threshold=unseen_threshold,
        count_in_verdict=count_in_verdict,
        columns=ordered,
    )


def _numeric_quality(
    reference: pd.DataFrame, current: pd.DataFrame, names: list[Any], max_examples: int
) -> dict[Any, ColumnQuality]:
    if not names:
        return {}
    k = len(names)
    ref_count = np.zeros(k, dtype=np.int64)
    cur_count = np.zeros(k, dtype=np.int64)
    out_count = np.zeros(k, dtype=np.int64)
    lows = np.full(k, np.inf)
    highs = np.full(k, -np.inf)
    violations: dict[int, tuple[int, int, list[str]]] = {}
    for j, name in enumerate(names):  # one contiguous column at a time: no 2-D copies
        ref = numeric_matrix(reference, [name])[:, 0]
        ref = ref[np.isfinite(ref)]
        ref_count[j] = ref.size
        if ref.size:
            lows[j], highs[j] = ref.min(), ref.max()
        values, bad = _parse_numeric(current[name])
        if bad is not None:
            examples = _first_distinct(current[name].to_numpy(dtype=object)[bad], max_examples)
            violations[j] = (int(bad.sum()), int(current[name].notna().sum()), examples)
        cur = values[np.isfinite(values)]
        cur_count[j] = cur.size
        out_count[j] = np.count_nonzero((cur < lows[j]) | (cur > highs[j]))

    results = {}
    for j, name in enumerate(names):
        has_ref = ref_count[j] > 0
        bad_count, non_null, examples = violations.get(j, (0, 0, []))
        # Type violations are not missing values: they are reported apart from the missing rate.
        cur_missing = int(len(current) - cur_count[j] - bad_count)
        item = _base(
            name,
            "numeric",
            len(reference),
            len(current),
            len(reference) - int(ref_count[j]),
            cur_missing,
        )
        item.reference_min = float(lows[j]) if has_ref else None
        item.reference_max = float(highs[j]) if has_ref else None
        if has_ref:
            item.out_of_range_count = int(out_count[j])
            item.out_of_range_share = _share(int(out_count[j]), int(cur_count[j]))
        if j in violations:
            item.type_violation_count = bad_count
            item.type_violation_share = _share(bad_count, non_null)
            item.type_violation_examples = examples
        results[name] = item
    return results


def _parse_numeric(series: pd.Series[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """The column as float64 (NaN for missing) and, when its dtype is not numeric, the mask of
    non-null values that are not numbers (``None`` when the dtype is numeric)."""
    dtype = series.dtype
    if ptypes.is_bool_dtype(dtype):
        present = series.notna().to_numpy(dtype=bool)
        return np.full(len(series), np.nan), present
    if ptypes.is_integer_dtype(dtype) or ptypes.is_float_dtype(dtype):
        return series.to_numpy(dtype=np.float64, na_value=np.nan), None
    raw = pd.Series(series.to_numpy(dtype=object), copy=False)
    parsed = pd.to_numeric(raw, errors="coerce")
    values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(values) & raw.notna().to_numpy(dtype=bool)
    return values, bad


def _categorical_quality(
    reference: pd.Series[Any], current: pd.Series[Any], max_examples: int
) -> ColumnQuality:
    ref_null = reference.isna()
    cur_null = current.isna()
    item = _base(
        reference.name,
        "categorical",
        len(reference),
        len(current),
        int(ref_null.sum()),
        int(cur_null.sum()),
    )
    present = current[~cur_null]
    known = pd.unique(reference[~ref_null].to_numpy(dtype=object))
    unseen = present[~present.isin(known)]
    item.unseen_count = len(unseen)
    item.unseen_share = _share(len(unseen), len(present))
    if len(unseen):
        top = unseen.value_counts(sort=True).index[:max_examples]
        item.unseen_examples = [str(v) for v in top]
    else:
        item.unseen_examples = []
    return item


def _base(
    name: Any, kind: ColumnKind, n_ref: int, n_cur: int, ref_missing: int, cur_missing: int
) -> ColumnQuality:
    ref_rate = ref_missing / n_ref
    cur_rate = cur_missing / n_cur
    return ColumnQuality(
        column=str(name),
        kind=kind,
        n_reference=n_ref,
        n_current=n_cur,
        reference_missing=ref_missing,
        current_missing=cur_missing,
        reference_missing_rate=ref_rate,
        current_missing_rate=cur_rate,
        missing_rate_change=cur_rate - ref_rate,
        missing_p_value=1.0,
    )


def _first_distinct(values: np.ndarray, limit: int) -> list[str]:
    if limit == 0 or values.size == 0:
        return []
    head = values[: max(limit * 50, 1000)]  # enough to find `limit` distinct ones in practice
    return [str(v) for v in pd.unique(head)[:limit]]


def _share(count: int, total: int) -> float | None:
    return count / total if total > 0 else None


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _resolve_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> list[Any]:
    if isinstance(columns, str):
        raise InvalidInputError(
            f"columns must be a list of column names. Got the string {columns!r} instead."
        )
    names = list(reference.columns) if columns is None else list(columns)
    if not names:
        raise InvalidInputError("There are no columns to check; expected at least one column.")
    dupes = sorted({str(n) for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInputError(f"columns lists {dupes} more than once; expected unique names.")
    for frame, label in ((reference, "reference"), (current, "current")):
        missing = [str(n) for n in names if n not in frame.columns]
        if missing:
            raise SchemaError(
                f"The {label} frame has no column(s) {missing}; expected every checked column "
                f"in both frames (it has {[str(c) for c in frame.columns]}).",
                details={"missing": missing, "frame": label},
            )
        if frame.columns.has_duplicates:
            raise SchemaError(f"The {label} frame has duplicate column names; expected unique.")
    return names


def _unit_float(value: object, name: str, *, open_interval: bool = False) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        ok = 0.0 < number < 1.0 if open_interval else 0.0 <= number <= 1.0
        if ok:
            return number
    interval = "(0, 1)" if open_interval else "[0, 1]"
    raise InvalidInputError(f"{name} must be a float in {interval}. Got {value!r} instead.")


def _opt_float(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _opt_int(value: int | None) -> int | None:
    return None if value is None else int(value)


__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MAX_EXAMPLES",
    "DEFAULT_MISSING_INCREASE",
    "DEFAULT_OUT_OF_RANGE_THRESHOLD",
    "DEFAULT_UNSEEN_THRESHOLD",
    "REASONS",
    "ColumnQuality",
    "QualityReport",
    "data_quality",
    "two_proportion_p_values",
]
