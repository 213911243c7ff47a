"""Reference profiles: a compact, JSON-serialisable statistical summary of a frame.

A :class:`Profile` is computed once with :func:`profile_frame` when a model version is registered
and stored next to it, so later monitoring can describe the training data without re-reading it.

Per column (see :class:`ColumnProfile`):

* numeric columns: ``count`` (non-null), ``null_count``, ``min``, ``max``, ``mean``, ``std``
  (sample standard deviation, ``ddof=1``; ``0.0`` for a single value), 101 ``quantiles`` at
  probabilities ``0.00, 0.01, ..., 1.00`` (numpy's default "linear" interpolation), and a
  ``histogram`` of the column on the reference-quantile bins used for PSI by
  :mod:`closedloop.domain.checks.drift` (interior ``bin_edges`` at the deciles, duplicates removed,
  bins closed on the right: ``(-inf, e1], (e1, e2], ..., (e_k, inf)``);
* categorical columns: ``counts`` of the 1000 most frequent non-null categories (keys are
  ``str(value)``), with every other category summed under ``"<other>"``.

Non-finite numbers (``inf``/``-inf``) are treated like nulls throughout closedloop's statistics.

This module also owns the decision of a column's *kind* (:func:`column_kind`), shared with
:mod:`closedloop.domain.checks.drift` so that profiles and drift reports always agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from closedloop.errors import InvalidInputError, SchemaError

ColumnKind = Literal["numeric", "categorical"]
KINDS: tuple[ColumnKind, ...] = ("numeric", "categorical")

QUANTILE_POINTS = 101
"""Number of stored quantiles (probabilities 0.00, 0.01, ..., 1.00)."""
PSI_BINS = 10
"""Default number of reference-quantile bins for PSI (deciles)."""
MAX_PROFILE_CATEGORIES = 1000
"""Categories kept by name in a categorical profile; the rest are summed under ``OTHER``."""
OTHER = "<other>"
NULL_LABEL = "<null>"
"""The category that nulls count as in categorical drift tests."""

PROFILE_FORMAT_VERSION = 1

_QUANTILE_PROBS = np.linspace(0.0, 1.0, QUANTILE_POINTS)


# --------------------------------------------------------------------------------------------
# Shared helpers (also used by closedloop.domain.checks.drift)
# --------------------------------------------------------------------------------------------


def column_kind(series: pd.Series[Any], *, force_categorical: bool = False) -> ColumnKind:
    """Decide whether ``series`` is tested/profiled as ``"numeric"`` or ``"categorical"``.

    Integer and float dtypes (including pandas' nullable ``Int64``/``Float64``) are numeric;
    bool, object, string and category dtypes are categorical. ``force_categorical=True`` makes
    any column categorical (e.g. integer-coded categories). Other dtypes (datetimes, timedeltas,
    complex numbers, ...) raise :class:`SchemaError`.
    """
    dtype = series.dtype
    if force_categorical:
        return "categorical"
    if ptypes.is_bool_dtype(dtype):
        return "categorical"
    if ptypes.is_integer_dtype(dtype) or ptypes.is_float_dtype(dtype):
        return "numeric"
    if (
        ptypes.is_object_dtype(dtype)
        or ptypes.is_string_dtype(dtype)
        or isinstance(dtype, pd.CategoricalDtype)
    ):
        return "categorical"
    raise SchemaError(
        f"Column {series.name!r} has dtype {dtype}, which closedloop cannot profile or test for "
        "drift. Expected an integer, float, bool, string, object or category column.",
        hint="Convert the column (e.g. datetimes to a number) or list it in categorical=[...].",
        details={"column": str(series.name), "dtype": str(dtype)},
    )


def numeric_matrix(frame: pd.DataFrame, columns: Sequence[Any]) -> np.ndarray:
    """Return ``frame[columns]`` as a 2-D float64 array (rows x columns), nulls and +-inf as NaN."""
    if not columns:
        return np.empty((len(frame), 0), dtype=np.float64)
    parts = [
        frame[name].to_numpy(dtype=np.float64, na_value=np.nan).reshape(-1, 1) for name in columns
    ]
    matrix = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    matrix = np.array(matrix, dtype=np.float64, copy=True)
    matrix[~np.isfinite(matrix)] = np.nan
    return matrix


def sorted_quantiles(
    sorted_values: np.ndarray, counts: np.ndarray, probs: np.ndarray
) -> np.ndarray:
    """Quantiles of every column of a column-wise sorted 2-D array (NaNs sorted last).

    ``counts[j]`` is the number of non-NaN values of column ``j`` (must be >= 1). Uses numpy's
    default "linear" interpolation; returns an array of shape ``(len(probs), n_columns)``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    position = probs[:, None] * (counts[None, :] - 1)
    lower = np.floor(position).astype(np.int64)
    upper = np.minimum(lower + 1, counts[None, :] - 1)
    fraction = position - lower
    low_values = np.take_along_axis(sorted_values, lower, axis=0)
    high_values = np.take_along_axis(sorted_values, upper, axis=0)
    result: np.ndarray = low_values + (high_values - low_values) * fraction
    return result


def psi_edges(sorted_column: np.ndarray, count: int, bins: int) -> np.ndarray:
    """Interior PSI bin edges of one sorted column: its quantiles at ``1/bins, ..., (bins-1)/bins``
    (duplicates removed, so discrete columns get fewer bins)."""
    probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = sorted_quantiles(sorted_column[:count].reshape(-1, 1), np.array([count]), probs)
    return np.unique(edges[:, 0])


def bin_counts(sorted_column: np.ndarray, count: int, edges: np.ndarray) -> np.ndarray:
    """Counts of the first ``count`` values of a sorted column in the right-closed bins
    ``(-inf, e1], (e1, e2], ..., (e_k, inf)``; ``len(edges) + 1`` integers summing to ``count``."""
    cumulative = np.searchsorted(sorted_column[:count], edges, side="right")
    bounds = np.concatenate([[0], cumulative, [count]]).astype(np.int64)
    return np.diff(bounds)


def category_counts(series: pd.Series[Any]) -> pd.Series[Any]:
    """Counts of each non-null value of ``series`` (zero-count categories dropped)."""
    counts = series.value_counts(dropna=True, sort=False)
    return counts[counts > 0]


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass
class ColumnProfile:
    """The summary of one column. Numeric-only fields are ``None`` for categorical columns (and
    for numeric columns without any non-null value); ``counts`` is ``None`` for numeric ones."""

    name: str
    kind: ColumnKind
    count: int
    null_count: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: list[float] | None = None
    bin_edges: list[float] | None = None
    histogram: list[int] | None = None
    counts: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (plain Python numbers, no NaN)."""
        body: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "count": int(self.count),
            "null_count": int(self.null_count),
        }
        if self.kind == "numeric":
            body.update(
                min=_opt_float(self.min),
                max=_opt_float(self.max),
                mean=_opt_float(self.mean),
                std=_opt_float(self.std),
                quantiles=None if self.quantiles is None else [float(v) for v in self.quantiles],
                bin_edges=None if self.bin_edges is None else [float(v) for v in self.bin_edges],
                histogram=None if self.histogram is None else [int(v) for v in self.histogram],
            )
        else:
            body["counts"] = {str(k): int(v) for k, v in (self.counts or {}).items()}
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnProfile:
        """Inverse of :meth:`to_dict`."""
        try:
            kind = data["kind"]
            if kind not in KINDS:
                raise InvalidInputError(
                    f"Column profile kind must be one of {list(KINDS)}. Got {kind!r} instead."
                )
            quantiles = data.get("quantiles")
            edges = data.get("bin_edges")
            histogram = data.get("histogram")
            counts = data.get("counts")
            return cls(
                name=str(data["name"]),
                kind=cast(ColumnKind, kind),
                count=int(data["count"]),
                null_count=int(data["null_count"]),
                min=_opt_float(data.get("min")),
                max=_opt_float(data.get("max")),
                mean=_opt_float(data.get("mean")),
                std=_opt_float(data.get("std")),
                quantiles=None if quantiles is None else [float(v) for v in quantiles],
                bin_edges=None if edges is None else [float(v) for v in edges],
                histogram=None if histogram is None else [int(v) for v in histogram],
                counts=None if counts is None else {str(k): int(v) for k, v in counts.items()},
            )
        except KeyError as exc:
            raise InvalidInputError(
                f"A column profile is missing the key {exc.args[0]!r}; expected the keys "
                "'name', 'kind', 'count' and 'null_count'."
            ) from exc


@dataclass
class Profile:
    """The summary of a whole frame: one :class:`ColumnProfile` per column, in frame order."""

    columns: list[ColumnProfile]
    n_rows: int
    format_version: int = field(default=PROFILE_FORMAT_VERSION)

    def column(self, name: str) -> ColumnProfile:
        """The profile of column ``name`` (:class:`SchemaError` when absent)."""
        for column in self.columns:
            if column.name == name:
                return column
        raise SchemaError(
            f"The profile has no column {name!r}; it has {[c.name for c in self.columns]}.",
            details={"column": name},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: ``{"format_version", "n_rows", "columns": [...]}``."""
        return {
            "format_version": int(self.format_version),
            "n_rows": int(self.n_rows),
            "columns": [column.to_dict() for column in self.columns],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Inverse of :meth:`to_dict`."""
        try:
            columns = [ColumnProfile.from_dict(item) for item in data["columns"]]
            return cls(
                columns=columns,
                n_rows=int(data["n_rows"]),
                format_version=int(data.get("format_version", PROFILE_FORMAT_VERSION)),
            )
        except KeyError as exc:
            raise InvalidInputError(
                f"A profile is missing the key {exc.args[0]!r}; expected 'n_rows' and 'columns'."
            ) from exc


# --------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------


def profile_frame(frame: pd.DataFrame, *, categorical: Sequence[str] | None = None) -> Profile:
    """Summarise every column of ``frame`` (see the module docstring for what is recorded).

    ``categorical`` forces the named columns to be profiled as categorical. Numeric columns are
    summarised together: one column-wise ``np.sort`` of the 2-D float array gives min, max,
    quantiles and histograms for all of them.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"frame must be a pandas DataFrame. Got {type(frame).__name__} instead."
        )
    forced = forced_categorical(frame, categorical)
    kinds = {name: column_kind(frame[name], force_categorical=name in forced) for name in frame}
    numeric = [name for name in frame.columns if kinds[name] == "numeric"]
    profiles: dict[Any, ColumnProfile] = dict(
        zip(numeric, _numeric_profiles(frame, numeric), strict=True)
    )
    for name in frame.columns:
        if kinds[name] == "categorical":
            profiles[name] = _categorical_profile(frame[name])
    return Profile(columns=[profiles[name] for name in frame.columns], n_rows=len(frame))


def forced_categorical(
    frame: pd.DataFrame, categorical: Sequence[str] | None, *, label: str = "frame"
) -> set[Any]:
    """The column names a caller forces to be categorical, checked against ``frame``."""
    if categorical is None:
        return set()
    if isinstance(categorical, str):
        raise InvalidInputError(
            f"categorical must be a list of column names. Got the string {categorical!r} instead."
        )
    missing = [str(name) for name in categorical if name not in frame.columns]
    if missing:
        raise SchemaError(
            f"categorical names column(s) {missing} that the {label} does not have; "
            f"expected names among {[str(c) for c in frame.columns]}.",
            details={"missing": missing},
        )
    return set(categorical)


def _numeric_profiles(frame: pd.DataFrame, names: list[Any]) -> list[ColumnProfile]:
    if not names:
        return []
    values = numeric_matrix(frame, names)
    counts = np.sum(~np.isnan(values), axis=0)
    nulls = len(frame) - counts
    has = counts > 0
    safe = np.maximum(counts, 1)
    means = np.nansum(values, axis=0) / safe
    centred = np.where(np.isnan(values), 0.0, values - means)
    m2 = np.sum(centred * centred, axis=0)
    stds = np.sqrt(m2 / np.maximum(counts - 1, 1))
    ordered = np.sort(values, axis=0)
    quantiles = sorted_quantiles(ordered[:, has], counts[has], _QUANTILE_PROBS)
    column_quantiles = dict(zip(np.flatnonzero(has), quantiles.T, strict=True))
    result = []
    for j, name in enumerate(names):
        count = int(counts[j])
        if count == 0:
            result.append(ColumnProfile(str(name), "numeric", 0, int(nulls[j])))
            continue
        edges = psi_edges(ordered[:, j], count, PSI_BINS)
        result.append(
            ColumnProfile(
                name=str(name),
                kind="numeric",
                count=count,
                null_count=int(nulls[j]),
                min=float(ordered[0, j]),
                max=float(ordered[count - 1, j]),
                mean=float(means[j]),
                std=float(stds[j]),
                quantiles=[float(v) for v in column_quantiles[j]],
                bin_edges=[float(v) for v in edges],
                histogram=[int(v) for v in bin_counts(ordered[:, j], count, edges)],
            )
        )
    return result


def _categorical_profile(series: pd.Series[Any]) -> ColumnProfile:
    counts = category_counts(series)
    null_count = int(series.isna().sum())
    merged: dict[str, int] = {}
    for key, value in zip(counts.index, counts.to_numpy(), strict=True):
        label = str(key)
        merged[label] = merged.get(label, 0) + int(value)
    return ColumnProfile(
        name=str(series.name),
        kind="categorical",
        count=int(len(series) - null_count),
        null_count=null_count,
        counts=_top_categories(merged),
    )


def _top_categories(counts: Mapping[str, int]) -> dict[str, int]:
    """Keep the :data:`MAX_PROFILE_CATEGORIES` most frequent categories (ties by name), sum the
    rest (and any previous ``"<other>"``) under ``"<other>"``; sorted by count, descending."""
    other = int(counts.get(OTHER, 0))
    items = sorted(
        ((k, v) for k, v in counts.items() if k != OTHER), key=lambda kv: (-kv[1], kv[0])
    )
    kept = dict(items[:MAX_PROFILE_CATEGORIES])
    other += sum(v for _, v in items[MAX_PROFILE_CATEGORIES:])
    if other:
        kept[OTHER] = other
    return kept


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------


def merge_profiles(a: Profile, b: Profile) -> Profile:
    """Combine the profiles of two disjoint parts of a frame into the profile of the whole.

    Exact: ``n_rows``, ``count``, ``null_count``, categorical ``counts`` (re-truncated to the top
    1000, so ``"<other>"`` stays exact in total), ``min``, ``max``, and ``mean``/``std`` through
    pooled moments (Chan et al.: ``M2 = M2_a + M2_b + delta**2 * n_a * n_b / n``).

    Approximate: quantiles. Each side's 101 quantiles define a piecewise-linear CDF; the merged
    CDF is their count-weighted mixture, evaluated on the union of both sides' quantile points
    and inverted by linear interpolation at the 101 probabilities (endpoints are the exact
    min/max). The rank error is at most about one quantile step (1% of the rows) where the
    data is smooth. The histogram is added exactly when both sides have the same bin edges;
    otherwise the edges are re-derived from the merged deciles and the counts estimated from
    the mixture CDF (rounded so they sum to ``count``).

    Both profiles must have the same columns, in the same order, with the same kinds.
    """
    names_a = [c.name for c in a.columns]
    names_b = [c.name for c in b.columns]
    if names_a != names_b:
        raise SchemaError(
            f"Cannot merge profiles with different columns: {names_a} and {names_b}; "
            "expected the same columns in the same order.",
            details={"left": names_a, "right": names_b},
        )
    columns = []
    for left, right in zip(a.columns, b.columns, strict=True):
        if left.kind != right.kind:
            raise SchemaError(
                f"Cannot merge profiles: column {left.name!r} is {left.kind} in one profile and "
                f"{right.kind} in the other; expected the same kind.",
                details={"column": left.name},
            )
        if left.kind == "categorical":
            columns.append(_merge_categorical(left, right))
        else:
            columns.append(_merge_numeric(left, right))
    return Profile(columns=columns, n_rows=a.n_rows + b.n_rows)


def _merge_categorical(a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    counts = dict(a.counts or {})
    for key, value in (b.counts or {}).items():
        counts[key] = counts.get(key, 0) + value
    return ColumnProfile(
        name=a.name,
        kind="categorical",
        count=a.count + b.count,
        null_count=a.null_count + b.null_count,
        counts=_top_categories(counts),
    )


def _merge_numeric(a: ColumnProfile, b: ColumnProfile) -> ColumnProfile:
    null_count = a.null_count + b.null_count
    if b.count == 0 or a.count == 0:
        base = a if b.count == 0 else b
        return ColumnProfile(
            name=a.name,
            kind="numeric",
            count=base.count,
            null_count=null_count,
            min=base.min,
            max=base.max,
            mean=base.mean,
            std=base.std,
            quantiles=base.quantiles,
            bin_edges=base.bin_edges,
            histogram=base.histogram,
        )
    na, nb = a.count, b.count
    n = na + nb
    mean_a, mean_b = _req(a.mean), _req(b.mean)
    delta = mean_b - mean_a
    mean = mean_a + delta * nb / n
    m2 = _req(a.std) ** 2 * (na - 1) + _req(b.std) ** 2 * (nb - 1) + delta * delta * na * nb / n
    std = float(np.sqrt(m2 / max(n - 1, 1)))
    lo, hi = min(_req(a.min), _req(b.min)), max(_req(a.max), _req(b.max))

    qa = np.asarray(a.quantiles, dtype=np.float64)
    qb = np.asarray(b.quantiles, dtype=np.float64)
    grid = np.unique(np.concatenate([qa, qb]))
    cdf = (
        na * np.interp(grid, qa, _QUANTILE_PROBS, left=0.0, right=1.0)
        + nb * np.interp(grid, qb, _QUANTILE_PROBS, left=0.0, right=1.0)
    ) / n
    cdf = np.maximum.accumulate(cdf)
    quantiles = np.interp(_QUANTILE_PROBS, cdf, grid)
    quantiles[0], quantiles[-1] = lo, hi
    quantiles = np.clip(np.maximum.accumulate(quantiles), lo, hi)

    if a.bin_edges is not None and a.bin_edges == b.bin_edges:
        edges = np.asarray(a.bin_edges, dtype=np.float64)
        histogram = np.asarray(a.histogram, dtype=np.int64) + np.asarray(b.histogram)
    else:
        step = (QUANTILE_POINTS - 1) // PSI_BINS
        edges = np.unique(quantiles[step:-1:step])
        at_edges = np.interp(edges, grid, cdf, left=0.0, right=1.0)
        histogram = _round_to_total(np.diff(np.concatenate([[0.0], at_edges, [1.0]])) * n, n)
    return ColumnProfile(
        name=a.name,
        kind="numeric",
        count=n,
        null_count=null_count,
        min=lo,
        max=hi,
        mean=float(mean),
        std=std,
        quantiles=[float(v) for v in quantiles],
        bin_edges=[float(v) for v in edges],
        histogram=[int(v) for v in histogram],
    )


def _round_to_total(values: np.ndarray, total: int) -> np.ndarray:
    """Round non-negative floats to integers that sum to ``total`` (largest remainder)."""
    values = np.maximum(values, 0.0)
    floors: np.ndarray = np.floor(values).astype(np.int64)
    short = total - int(floors.sum())
    if short > 0:
        order = np.argsort(-(values - floors), kind="stable")[:short]
        floors[order] += 1
    return floors


def _req(value: float | None) -> float:
    if value is None:
        raise InvalidInputError("A numeric column profile with a non-zero count lacks a statistic.")
    return float(value)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    result = float(value)
    return result if np.isfinite(result) else None


__all__ = [
    "KINDS",
    "MAX_PROFILE_CATEGORIES",
    "NULL_LABEL",
    "OTHER",
    "PSI_BINS",
    "QUANTILE_POINTS",
    "ColumnKind",
    "ColumnProfile",
    "Profile",
    "bin_counts",
    "category_counts",
    "column_kind",
    "merge_profiles",
    "numeric_matrix",
    "profile_frame",
    "psi_edges",
    "sorted_quantiles",
]
