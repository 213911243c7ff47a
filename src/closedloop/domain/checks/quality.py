"""Data-quality signals per column: is the current window *well-formed* like the reference?

Drift asks whether values are distributed differently; quality asks whether the pipeline
delivering them broke. :func:`data_quality` compares the current window with the reference and
returns a :class:`QualityReport`, reported beside the drift report.

Column kinds follow :func:`closedloop.domain.checks.profiles.column_kind` applied to the *reference*
(``categorical=`` forces columns categorical), so quality and drift always agree on kinds.
Missing values are nulls, plus ``+-inf`` for numeric columns (closedloop treats non-finite
numbers as nulls everywhere).

Signals (every one computed vectorised per column, no per-row Python):

``missing`` (every column)
    Missing counts and rates in both windows, the change ``current - reference`` and the
    two-sided p-value of the pooled two-proportion z-test
    ``z = (p2 - p1) / sqrt(p (1 - p) (1/n1 + 1/n2))`` with ``p`` the pooled rate (p-value 1
    when the pooled rate is 0 or 1: nothing to test); the reported p-value is not adjusted.
``out_of_range`` (numeric)
    Current non-missing values below the reference minimum or above the reference maximum;
    ``out_of_range_share`` is their share of the current non-missing values,
    ``out_of_range_expected`` the count chance alone gives (``2 m / (n + 1)`` for ``n``
    reference and ``m`` current values) and ``out_of_range_p_value`` the chance of at least
    that many (:func:`out_of_range_p_value`: exact for a random split of the pooled values,
    heavier-tailed than a binomial because one window's values share one reference range).
``unseen`` (categorical)
    Current non-null values whose category never occurs (non-null) in the reference, and their
    share of the current non-null values; ``unseen_examples`` are the most frequent ones.
    ``unseen_expected`` and ``unseen_p_value`` (:func:`unseen_p_value`): how many such values
    chance gives, because a rare category is easily absent from a small reference, and the
    chance of at least the observed count, conditionally on each category's pooled count.
``type_violations`` (numeric)
    When a column is numeric in the reference but not in the current window (e.g. a CSV read
    as object dtype because some rows hold text), its values are parsed with
    ``pd.to_numeric(errors="coerce")``; non-null values that do not parse are violations (a
    bool column counts all its values), reported with count, share of the current non-null
    values and the first ``max_examples`` distinct examples. The parsed numbers are used for the
    other signals. Categorical columns accept any value as a category (see ``unseen``), so they
    have no type violations.

Flag (:attr:`ColumnQuality.flagged`, with :attr:`ColumnQuality.reasons`) when any of the
following holds. Each signal's test is Bonferroni-corrected over the columns it is computed
for (``k`` columns: a p-value counts when ``p * k < alpha``); the floors keep huge windows from
flagging trivial changes, the tests keep small windows from flagging chance:

* ``"missing_rate_increase"``: the missing rate rose by at least ``missing_increase``
  (default 0.05 absolute) *and* the z-test is significant;
* ``"out_of_range"``: ``out_of_range_share >= out_of_range_threshold`` (default 0.01) *and*
  ``out_of_range_p_value`` is significant;
* ``"unseen_categories"``: ``unseen_share >= unseen_threshold`` (default 0.01) *and*
  ``unseen_p_value`` is significant;
* ``"type_violations"``: any type violation.

Why the tests: with shares alone, 83% of clean 500-row windows of the benchmark data were
flagged (rare categories of 25- and 50-level columns absent from a 500-row reference, a few
values beyond a 500-value range); with the tests, see ``benchmarks/README.md``.

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

from closedloop.domain.checks.profiles import (
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

_MAX_CONVOLUTION = 20_000_000
"""Largest ``categories x count`` for the exact unseen-count p-value (else a normal tail)."""

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
    out_of_range_expected: float | None = None
    """Expected count outside the range when nothing changed: ``2 m / (n + 1)``."""
    out_of_range_p_value: float | None = None
    unseen_count: int | None = None
    unseen_share: float | None = None
    unseen_examples: list[str] | None = None
    unseen_expected: float | None = None
    """Expected count of unseen-category values when nothing changed (rare categories)."""
    unseen_p_value: float | None = None
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
            body["out_of_range_expected"] = _opt_float(self.out_of_range_expected)
            body["out_of_range_p_value"] = _opt_float(self.out_of_range_p_value)
        else:
            body["unseen_count"] = _opt_int(self.unseen_count)
            body["unseen_share"] = _opt_float(self.unseen_share)
            body["unseen_examples"] = [str(v) for v in self.unseen_examples or []]
            body["unseen_expected"] = _opt_float(self.unseen_expected)
            body["unseen_p_value"] = _opt_float(self.unseen_p_value)
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
    tails = _normal_sf(np.abs(np.where(testable, z, 0.0)))
    p: np.ndarray = np.clip(np.where(testable, 2.0 * tails, 1.0), 0.0, 1.0)
    return p


def _normal_sf(z: np.ndarray) -> np.ndarray:
    """``P(Z > z)`` of the standard normal, elementwise (``erfc(z / sqrt 2) / 2``)."""
    flat = np.asarray(z, dtype=np.float64).ravel()
    tails = np.array([0.5 * math.erfc(v / math.sqrt(2.0)) for v in flat], dtype=np.float64)
    return tails.reshape(np.shape(z))


def out_of_range_p_value(count: int, n_reference: int, n_current: int) -> float:
    """P-value of ``count`` current values outside the reference ``[min, max]`` when both
    windows come from one continuous distribution.

    Given the pooled ``N = n + m`` values, the ``j`` smallest all belong to the current window
    with probability ``T(j) = prod_{i<j} (m - i) / (N - i)`` (a random split), so the number
    ``L`` of current values below the reference minimum has ``P(L >= j) = T(j)``, and likewise
    the number ``U`` above the maximum. Treating ``L`` and ``U`` as independent, the p-value is
    ``P(L + U >= count)``. Its mean is ``2 m / (n + 1)`` (the classical ``2 / (n + 1)`` chance
    that one new value falls outside ``n`` values), but the counts of one window are not
    binomial: they share one reference range, so their tail is geometric, much heavier (for
    ``n = m``, ``P(L + U >= k) ~ (k/2 + 1) / 2^k``). Ties make values outside the range rarer,
    so for discrete columns the p-value is conservative.
    """
    if count <= 0:
        return 1.0
    k = min(int(count), n_current)
    tail = _all_in_current(np.arange(k + 1), n_reference, n_current)
    point = tail[:-1] - tail[1:]  # P(L = j), j < k
    return _unit(float(np.sum(point * tail[k:0:-1])) + float(tail[k]))


def unseen_p_value(
    unseen: int, pooled_counts: np.ndarray, n_reference: int, n_current: int
) -> tuple[float, float]:
    """``(expected, p)`` for ``unseen`` current values in categories absent from the reference,
    when both windows come from one distribution (rare categories are often missing from a
    small reference by chance).

    Conditionally on the pooled count ``c`` of each category, the split of the pooled values
    between the windows is random, so a category is absent from the reference (all its ``c``
    values in the current window) with probability ``T(c) = prod_{i<c} (m - i) / (N - i)``. The
    unseen count is then ``sum c * B_c`` with ``B_c ~ Bernoulli(T(c))``, of mean ``sum c T(c)``;
    ``p = P(sum >= unseen)`` is computed exactly by convolution, the categories taken as
    independent (they are slightly negatively dependent, which makes ``p`` conservative).
    Categories with ``T(c) < 1e-15`` are left out; in the rare case of more than
    ``_MAX_CONVOLUTION`` steps a normal tail is used instead. A reference without any value
    explains nothing: then ``(0, 0)`` for any unseen value (the share alone decides).
    """
    counts = np.asarray(pooled_counts, dtype=np.int64)
    counts = counts[counts > 0]
    if counts.size == 0 or unseen <= 0:
        return 0.0, 1.0
    if n_reference == 0:
        return 0.0, 0.0
    tail = _all_in_current(np.arange(int(counts.max()) + 1), n_reference, n_current)
    chance = tail[counts]
    expected = float(np.sum(counts * chance))
    keep = chance > 1e-15
    counts, chance = counts[keep], chance[keep]
    if counts.size * unseen > _MAX_CONVOLUTION:
        if unseen <= expected:
            return expected, 1.0
        variance = float(np.sum(counts.astype(np.float64) ** 2 * chance * (1.0 - chance)))
        excess = unseen - expected - 0.5
        return expected, 0.5 * math.erfc(excess / math.sqrt(2.0 * max(variance, 1e-300)))
    below = np.zeros(unseen, dtype=np.float64)  # P(sum = j) for j < unseen
    below[0] = 1.0
    for size, p in zip(counts.tolist(), chance.tolist(), strict=True):
        shifted = below[: max(unseen - size, 0)] * p
        below *= 1.0 - p
        below[size:] += shifted
    return expected, _unit(1.0 - float(below.sum()))


def _unit(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _all_in_current(sizes: np.ndarray, n_reference: int, n_current: int) -> np.ndarray:
    """``T(j) = prod_{i<j} (m - i) / (N - i)`` for every ``j`` of ``sizes = 0..J``."""
    total = n_reference + n_current
    i = np.arange(max(int(sizes.max()), 0), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        steps = np.log(np.maximum(n_current - i, 0.0)) - np.log(np.maximum(total - i, 1.0))
    logs = np.concatenate([[0.0], np.cumsum(steps)])
    result: np.ndarray = np.exp(logs[sizes])
    return result


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
    n_numeric = len(numeric)
    n_categorical = len(ordered) - n_numeric
    for item, p_value in zip(ordered, p_values, strict=True):
        item.missing_p_value = float(p_value)
        reasons = []
        if item.missing_rate_change >= missing_increase and p_value * len(ordered) < alpha:
            reasons.append("missing_rate_increase")
        if _exceeds(
            item.out_of_range_share,
            out_of_range_threshold,
            item.out_of_range_p_value,
            alpha / max(n_numeric, 1),
        ):
            reasons.append("out_of_range")
        if _exceeds(
            item.unseen_share, unseen_threshold, item.unseen_p_value, alpha / max(n_categorical, 1)
        ):
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


def _exceeds(share: float | None, floor: float, p_value: float | None, level: float) -> bool:
    """A share at or above its floor (and above zero) that chance does not explain."""
    if share is None or p_value is None:
        return False
    return share >= max(floor, 1e-300) and p_value < level


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
            n_ref, n_cur = int(ref_count[j]), int(cur_count[j])
            item.out_of_range_count = int(out_count[j])
            item.out_of_range_share = _share(int(out_count[j]), n_cur)
            item.out_of_range_expected = 2.0 * n_cur / (n_ref + 1)
            item.out_of_range_p_value = out_of_range_p_value(int(out_count[j]), n_ref, n_cur)
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
    ref_counts = _value_counts(reference)
    cur_counts = _value_counts(current)
    table = pd.concat([ref_counts, cur_counts], axis=1, sort=False).fillna(0.0)
    observed = table.to_numpy(dtype=np.float64).T.astype(np.int64)  # 2 x categories
    unseen_mask = (observed[0] == 0) & (observed[1] > 0)
    unseen = int(observed[1][unseen_mask].sum())
    n_ref, n_cur = int(observed[0].sum()), int(observed[1].sum())
    item.unseen_count = unseen
    item.unseen_share = _share(unseen, n_cur)
    order = np.argsort(-observed[1][unseen_mask], kind="stable")[:max_examples]
    item.unseen_examples = [str(v) for v in np.asarray(table.index[unseen_mask])[order]]
    item.unseen_expected, item.unseen_p_value = unseen_p_value(
        unseen, observed.sum(axis=0), n_ref, n_cur
    )
    return item


def _value_counts(series: pd.Series[Any]) -> pd.Series[Any]:
    """Counts of the non-null values, indexed by the values as plain objects (so that two
    category columns with different category lists align)."""
    counts = series.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    counts.index = pd.Index(list(counts.index), dtype=object)
    return counts


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
    "out_of_range_p_value",
    "two_proportion_p_values",
    "unseen_p_value",
]
