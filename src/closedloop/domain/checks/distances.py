"""Distribution distances: the effect sizes reported beside the drift tests' p-values.

A p-value says whether a difference is detectable; these say how large it is. All functions are
pure, vectorised over columns, and take the arrays
:func:`closedloop.domain.checks.drift.compare_frames` already builds.

Numeric columns take 2-D float arrays ``(rows, columns)`` (1-D for a single column) in which
missing values are NaN (as produced by :func:`closedloop.domain.checks.profiles.numeric_matrix`);
NaNs are dropped per column, so the columns may have different numbers of values. A column
without any value on one side gives NaN.

:func:`wasserstein_normalised`
    ``W1(reference, current) / std(reference)``: the earth mover's distance between the two
    empirical distributions in units of the reference standard deviation (population ``std``,
    ``ddof=0``), the definition Evidently uses; equals
    ``scipy.stats.wasserstein_distance(a, b) / np.std(a)``. ``W1 = integral |F_ref - F_cur| dx``
    is evaluated on the merged values: both ECDFs are cumulative counts along one stable sort
    of the pooled column, which for column-sorted inputs merges two sorted runs in O(n).
    A constant reference column (``std = 0``) is divided by ``std_floor`` (default ``1e-3``,
    as Evidently does) instead. Rule of thumb (Evidently): >= 0.1 is drift.

:func:`quantile_bin_counts` + :func:`js_distance`
    Jensen-Shannon distance (base 2, so in ``[0, 1]``) of the frequencies in ``bins``
    reference-quantile bins: interior edges at the reference quantiles ``1/bins, ...,
    (bins-1)/bins`` (numpy's "linear" interpolation) and right-closed bins ``(-inf, e1], ...,
    (e_k, inf)``, the bins PSI uses (:func:`closedloop.domain.checks.profiles.psi_edges`). Duplicate
    edges of discrete columns are kept rather than removed: they make bins that are empty on
    both sides, which contribute exactly nothing to JS (or PSI), so every column has ``bins``
    counts and the result equals JS on the de-duplicated bins. No smoothing is needed or used:
    ``m = (p + q) / 2`` is positive wherever ``p`` or ``q`` is, and ``0 * log 0 = 0``.
    Equals ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` on the same frequencies.

Categorical columns take count arrays aligned on the union of categories, the last axis being
the categories (one row per column for a 2-D matrix; see :func:`pad_counts` for columns with
different numbers of categories: zero padding changes none of the distances).

:func:`js_distance`, :func:`psi_matrix`, :func:`total_variation`
    Jensen-Shannon distance (base 2), Population Stability Index (frequencies raised to at least
    ``eps = 1e-4``, as :func:`closedloop.domain.checks.stats.psi`) and total variation distance
    (half the L1 distance of the frequencies). Also usable on numeric bin counts.

:func:`feature_weighted_share`
    The share of total feature-importance weight carried by drifted columns, for verdicts
    weighted by feature importance.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from closedloop.domain.checks.profiles import sorted_quantiles
from closedloop.errors import InvalidInputError, SchemaError

DEFAULT_JS_BINS = 10
"""Reference-quantile bins for the numeric Jensen-Shannon distance (deciles, as PSI)."""
DEFAULT_STD_FLOOR = 1e-3
"""Divisor of ``W1`` when the reference standard deviation is smaller (Evidently's choice)."""
DEFAULT_PSI_EPS = 1e-4
"""Frequencies below this are raised to it before PSI's logarithm (as ``drift.psi``)."""
_BLOCK_ELEMENTS = 1 << 21
"""Pooled values sorted at once by :func:`wasserstein_normalised` (bounds peak memory)."""


# --------------------------------------------------------------------------------------------
# Numeric columns
# --------------------------------------------------------------------------------------------


def wasserstein_normalised(
    reference: np.ndarray, current: np.ndarray, *, std_floor: float = DEFAULT_STD_FLOOR
) -> np.ndarray:
    """Normalised Wasserstein-1 distance of every column: ``W1 / max(std(reference), floor)``.

    ``reference``/``current`` are ``(rows, columns)`` float arrays (or 1-D) with NaN for
    missing values; column-wise sorted inputs (NaNs last, e.g. ``np.sort(x, axis=0)``) are
    merged in O(n), unsorted ones work too, just slower. Returns one value per column
    (a 0-d array for 1-D inputs), NaN where a column has no value on one side.
    """
    ref, cur, squeeze = _numeric_pair(reference, current)
    floor = _positive(std_floor, "std_floor")
    n1 = np.sum(~np.isnan(ref), axis=0)
    n2 = np.sum(~np.isnan(cur), axis=0)
    w1 = np.full(ref.shape[1], np.nan)
    rows = ref.shape[0] + cur.shape[0]
    block = max(1, _BLOCK_ELEMENTS // max(rows, 1))
    for start in range(0, ref.shape[1], block):
        part = slice(start, min(start + block, ref.shape[1]))
        w1[part] = _w1_block(ref[:, part], cur[:, part], n1[part], n2[part])
    std = _nan_std(ref, n1)
    with np.errstate(invalid="ignore"):
        result = np.where((n1 > 0) & (n2 > 0), w1 / np.maximum(std, floor), np.nan)
    return np.asarray(result[0]) if squeeze else result


def _w1_block(ref: np.ndarray, cur: np.ndarray, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
    pooled = np.concatenate([ref, cur], axis=0)
    order = np.argsort(pooled, axis=0, kind="stable")  # timsort: two sorted runs merge in O(n)
    values = np.take_along_axis(pooled, order, axis=0)
    valid = ~np.isnan(values)
    from_reference = order < ref.shape[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        cdf1 = np.cumsum(from_reference & valid, axis=0)[:-1] / n1
        cdf2 = np.cumsum(~from_reference & valid, axis=0)[:-1] / n2
    # Between consecutive pooled values both ECDFs are constant; within a run of ties the
    # width is zero, so the partial counts there contribute nothing.
    widths = np.diff(values, axis=0)
    with np.errstate(invalid="ignore"):
        area = np.where(valid[1:], np.abs(cdf1 - cdf2) * widths, 0.0)
    result: np.ndarray = np.sum(area, axis=0)
    return result


def wasserstein_sorted(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    std_floor: float = DEFAULT_STD_FLOOR,
    max_points: int | None = None,
) -> float:
    """:func:`wasserstein_normalised` of one column given both sides already sorted, finite and
    non-empty (as the KS test leaves them), without merging or re-sorting them.

    ``W1 = integral |F_a - F_b| dx`` is summed over the intervals that start at each value: from
    ``a[i]`` to the next larger value of either side, where ``F_a = (i + 1) / n1`` and ``F_b`` is
    the count of ``b <= a[i]`` (a binary search of the sorted ``a[i]``); likewise from each
    ``b[j]``, except where ``a`` holds the same value (that interval is already counted). Ties
    inside a side give zero-width intervals. Memory: a few arrays of one side's length.

    ``max_points``: a side with more values is first thinned to that many evenly spaced order
    statistics (its quantiles at ``(k + 1/2) / max_points``), which changes ``W1`` by at most
    the mean spread of each group of ``n / max_points`` consecutive sorted values (e.g. ~1e-4
    standard deviations for a normal column thinned from 10^6 to 10^5 values), far less than
    the sampling error of a random subsample. The standard deviation uses every value.
    """
    floor = _positive(std_floor, "std_floor")
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(current, dtype=np.float64)
    std = float(np.std(a))
    if max_points is not None:
        a, b = _thinned(a, max_points), _thinned(b, max_points)
    n1, n2 = a.size, b.size
    w1 = _w1_side(a, b, n1, n2, own_first=True) + _w1_side(b, a, n2, n1, own_first=False)
    return float(w1 / max(std, floor))


def _thinned(sorted_values: np.ndarray, points: int) -> np.ndarray:
    if sorted_values.size <= points:
        return sorted_values
    positions = ((np.arange(points) + 0.5) * (sorted_values.size / points)).astype(np.int64)
    thinned: np.ndarray = sorted_values[positions]
    return thinned


def _w1_side(
    own: np.ndarray, other: np.ndarray, n_own: int, n_other: int, own_first: bool
) -> float:
    """The part of ``W1`` on the intervals starting at the values of ``own`` (helper of
    :func:`wasserstein_sorted`; ``own_first`` says which side owns intervals at shared values).

    ``following`` is the first value of ``other`` after ``own[i]``: strictly greater when
    ``own_first``, else greater or equal, which makes the interval empty where ``other`` holds
    the same value; where the interval is not empty it also counts the ``other`` values
    ``<= own[i]``."""
    following = np.searchsorted(other, own, side="right" if own_first else "left")
    ends = np.append(other, np.inf)[following]  # the next value of `other`
    np.minimum(ends[:-1], own[1:], out=ends[:-1])  # or the next value of `own`
    ends -= own
    if not math.isfinite(ends[-1]):  # the largest pooled value starts no interval
        ends[-1] = 0.0
    gap = np.arange(1, n_own + 1, dtype=np.float64)
    gap /= n_own
    gap -= following / n_other
    np.abs(gap, out=gap)
    gap *= ends
    return float(gap.sum())  # not np.dot: BLAS threads cost more than they save here


def _nan_std(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Population standard deviation of every column, ignoring NaNs (NaN for empty columns)."""
    safe = np.maximum(counts, 1)
    means = np.nansum(values, axis=0) / safe
    centred = np.where(np.isnan(values), 0.0, values - means)
    std: np.ndarray = np.sqrt(np.sum(centred * centred, axis=0) / safe)
    return np.where(counts > 0, std, np.nan)


def quantile_bin_counts(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    bins: int = DEFAULT_JS_BINS,
    assume_sorted: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both windows in ``bins`` reference-quantile bins, for every column at once.

    Returns ``(reference_counts, current_counts)``, each of shape ``(columns, bins)`` (``(bins,)``
    for 1-D inputs); the bins are described in the module docstring. Pass
    ``assume_sorted=True`` when both arrays are already sorted column-wise with NaNs last (as
    ``np.sort(x, axis=0)`` leaves them), which skips sorting. A column without reference values
    gets all-zero counts.
    """
    ref, cur, squeeze = _numeric_pair(reference, current)
    bins = _bins(bins)
    if not assume_sorted:
        ref = np.sort(ref, axis=0)
        cur = np.sort(cur, axis=0)
    n1 = np.sum(~np.isnan(ref), axis=0)
    n2 = np.sum(~np.isnan(cur), axis=0)
    n_cols = ref.shape[1]
    ref_counts = np.zeros((n_cols, bins), dtype=np.int64)
    cur_counts = np.zeros((n_cols, bins), dtype=np.int64)
    has = np.flatnonzero(n1 > 0)
    if has.size:
        probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
        edges = sorted_quantiles(ref[:, has], n1[has], probs)  # (bins - 1, len(has))
        for k, j in enumerate(has):  # one binary search per edge and column
            ref_counts[j] = _sorted_bin_counts(ref[: n1[j], j], edges[:, k])
            cur_counts[j] = _sorted_bin_counts(cur[: n2[j], j], edges[:, k])
    if squeeze:
        return ref_counts[0], cur_counts[0]
    return ref_counts, cur_counts


def _sorted_bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    cumulative = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate([[0], cumulative, [sorted_values.size]]))


def numeric_js_distance(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    bins: int = DEFAULT_JS_BINS,
    assume_sorted: bool = False,
) -> np.ndarray:
    """Jensen-Shannon distance (base 2) of every numeric column on reference-quantile bins:
    ``js_distance(*quantile_bin_counts(reference, current, ...))``; NaN where a column has no
    value on one side."""
    ref_counts, cur_counts = quantile_bin_counts(
        reference, current, bins=bins, assume_sorted=assume_sorted
    )
    return js_distance(ref_counts, cur_counts)


# --------------------------------------------------------------------------------------------
# Count vectors (categorical columns, or binned numeric ones)
# --------------------------------------------------------------------------------------------


def js_distance(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance, base 2 (in ``[0, 1]``), of count vectors over the same bins.

    The last axis is the bins/categories; leading axes are columns (e.g. a ``(columns, k)``
    matrix). Counts are normalised to frequencies ``p``, ``q``; with ``m = (p + q) / 2`` the
    result is ``sqrt((KL(p || m) + KL(q || m)) / 2)`` with base-2 logarithms, equal to
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``. No smoothing (none is needed).
    NaN where either side's counts sum to zero.
    """
    p, q = _frequencies(reference_counts, current_counts)
    m = 0.5 * (p + q)
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.where(p > 0, p * np.log2(p / m), 0.0)
        right = np.where(q > 0, q * np.log2(q / m), 0.0)
    divergence = 0.5 * (np.sum(left, axis=-1) + np.sum(right, axis=-1))
    result: np.ndarray = np.sqrt(np.clip(divergence, 0.0, 1.0))
    return np.where(_has_mass(p) & _has_mass(q), result, np.nan)


def psi_matrix(
    reference_counts: np.ndarray, current_counts: np.ndarray, *, eps: float = DEFAULT_PSI_EPS
) -> np.ndarray:
    """Population Stability Index of count vectors, vectorised over leading axes.

    ``PSI = sum((q - p) * ln(q / p))`` over the last axis, with frequencies raised to at least
    ``eps`` (bins empty on both sides contribute 0), identical to
    :func:`closedloop.domain.checks.drift.psi` row by row. NaN where either side sums to zero.
    """
    p, q = _frequencies(reference_counts, current_counts)
    eps = _positive(eps, "eps")
    p_s, q_s = np.maximum(p, eps), np.maximum(q, eps)
    result: np.ndarray = np.sum((q_s - p_s) * np.log(q_s / p_s), axis=-1)
    return np.where(_has_mass(p) & _has_mass(q), result, np.nan)


def total_variation(reference_counts: np.ndarray, current_counts: np.ndarray) -> np.ndarray:
    """Total variation distance ``0.5 * sum|p - q|`` (in ``[0, 1]``) of count vectors over the
    last axis: the share of probability mass that moved. NaN where either side sums to zero."""
    p, q = _frequencies(reference_counts, current_counts)
    result: np.ndarray = 0.5 * np.sum(np.abs(p - q), axis=-1)
    return np.where(_has_mass(p) & _has_mass(q), result, np.nan)


def pad_counts(rows: Sequence[np.ndarray | Sequence[float]]) -> np.ndarray:
    """Stack 1-D count vectors of different lengths into a ``(len(rows), max_len)`` float
    matrix, padding with zeros (empty categories, which change none of the distances)."""
    arrays = [np.asarray(row, dtype=np.float64) for row in rows]
    for i, array in enumerate(arrays):
        if array.ndim != 1:
            raise InvalidInputError(
                f"pad_counts expects 1-D count vectors; row {i} has shape {array.shape}."
            )
    width = max((a.size for a in arrays), default=0)
    matrix = np.zeros((len(arrays), width), dtype=np.float64)
    for i, array in enumerate(arrays):
        matrix[i, : array.size] = array
    return matrix


def _frequencies(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim == 0:
        raise InvalidInputError(
            "reference and current counts must have the same shape, with the categories/bins on "
            f"the last axis. Got {ref.shape} and {cur.shape} instead.",
            hint="Align both windows on the union of categories (absent ones count 0).",
        )
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise InvalidInputError("Counts must be finite numbers; got NaN or infinity.")
    if np.any(ref < 0) or np.any(cur < 0):
        raise InvalidInputError("Counts must be non-negative; got a negative count.")
    with np.errstate(invalid="ignore", divide="ignore"):
        p = ref / ref.sum(axis=-1, keepdims=True)
        q = cur / cur.sum(axis=-1, keepdims=True)
    return np.nan_to_num(p, nan=0.0), np.nan_to_num(q, nan=0.0)


def _has_mass(freq: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.sum(freq, axis=-1) > 0
    return result


def _numeric_pair(
    reference: np.ndarray, current: np.ndarray
) -> tuple[np.ndarray, np.ndarray, bool]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim not in (1, 2) or ref.ndim != cur.ndim:
        raise InvalidInputError(
            "reference and current must both be 1-D arrays or both 2-D (rows x columns). "
            f"Got shapes {ref.shape} and {cur.shape} instead."
        )
    squeeze = ref.ndim == 1
    if squeeze:
        ref, cur = ref.reshape(-1, 1), cur.reshape(-1, 1)
    if ref.shape[1] != cur.shape[1]:
        raise InvalidInputError(
            f"reference has {ref.shape[1]} columns and current has {cur.shape[1]}; expected the "
            "same columns in the same order."
        )
    if np.isinf(ref).any() or np.isinf(cur).any():
        ref = np.where(np.isinf(ref), np.nan, ref)
        cur = np.where(np.isinf(cur), np.nan, cur)
    return ref, cur, squeeze


def _bins(bins: object) -> int:
    if isinstance(bins, bool) or not isinstance(bins, numbers.Integral) or int(bins) < 2:
        raise InvalidInputError(f"bins must be an integer >= 2. Got {bins!r} instead.")
    return int(bins)


def _positive(value: object, name: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and number > 0:
            return number
    raise InvalidInputError(f"{name} must be a positive finite number. Got {value!r} instead.")


# --------------------------------------------------------------------------------------------
# Importance-weighted verdicts
# --------------------------------------------------------------------------------------------


def feature_weighted_share(drifted: Mapping[str, bool], weights: Mapping[str, float]) -> float:
    """Share of the total importance weight carried by drifted columns.

    ``sum(weights[c] for drifted c) / sum(weights[c] for every c in drifted)``. Every column of
    ``drifted`` needs a weight (:class:`SchemaError` otherwise); weights of columns that were
    not compared are ignored. Weights must be finite and >= 0 and not all zero over the
    compared columns (:class:`InvalidInputError`). With equal weights this is the plain share
    of drifted columns.
    """
    if not drifted:
        raise InvalidInputError("drifted is empty; expected at least one compared column.")
    missing = [str(c) for c in drifted if c not in weights]
    if missing:
        raise SchemaError(
            f"No importance weight for compared column(s) {missing}; expected a weight for every "
            "column in drifted.",
            details={"missing": missing},
        )
    total = 0.0
    moved = 0.0
    for column, is_drifted in drifted.items():
        weight = weights[column]
        ok = isinstance(weight, numbers.Real) and not isinstance(weight, bool)
        if not ok or not math.isfinite(float(weight)) or float(weight) < 0:
            raise InvalidInputError(
                f"The weight of column {column!r} must be a finite number >= 0. "
                f"Got {weight!r} instead."
            )
        total += float(weight)
        if is_drifted:
            moved += float(weight)
    if total <= 0:
        raise InvalidInputError(
            "The weights of the compared columns are all zero; expected a positive total."
        )
    return moved / total


__all__ = [
    "DEFAULT_JS_BINS",
    "DEFAULT_PSI_EPS",
    "DEFAULT_STD_FLOOR",
    "feature_weighted_share",
    "js_distance",
    "numeric_js_distance",
    "pad_counts",
    "psi_matrix",
    "quantile_bin_counts",
    "total_variation",
    "wasserstein_normalised",
    "wasserstein_sorted",
]
