"""Drift tests and verdicts: is the current window distributed like the reference data?

:func:`compare_frames` tests every column and returns a :class:`DriftReport`.

Numeric columns (integer/float dtypes, see :func:`closedloop.domain.checks.profiles.column_kind`)
    Two-sample Kolmogorov-Smirnov test. Each side of a column is sorted once (finite values
    only; columns run on a small thread pool) and ``D`` is found on the two sorted arrays
    (:func:`ks_sorted`); the same sorted arrays give the PSI bins and, with
    ``distances=True``, the Wasserstein and Jensen-Shannon distances. P-values reproduce
    ``scipy.stats.ks_2samp(a, b)`` (``method="auto"``): the exact distribution when both
    samples have at most 10,000 values (falling back to the asymptotic one where scipy's exact
    computation fails, as scipy does, but without its warning), otherwise
    ``scipy.stats.kstwo.sf(D, round(n*m/(n+m)))``, computed with the same algorithms in
    :mod:`closedloop.domain.checks.stats` (no ``scipy.stats`` import, ~0.5 s). Nulls and +-inf
    are dropped per column.
    Also reported: ``psi``, the Population Stability Index on ``psi_bins`` reference-quantile
    bins (see :func:`psi`).

Categorical columns (bool/object/string/category dtypes, or listed in ``categorical=``)
    Chi-square test of homogeneity on the 2 x k table of reference and current counts over the
    union of categories (nulls are the category ``"<null>"``); equal to
    ``scipy.stats.chi2_contingency(table, correction=False)``. Also reported: ``psi`` over the
    categories, ``tvd`` (total variation distance, half the L1 distance of the frequencies) and
    ``unseen_categories`` (categories absent from the reference, most frequent first, at most 20).

Multiple testing
    P-values of all tested columns are adjusted together with Bonferroni (controls the
    family-wise error rate) or Benjamini-Hochberg (controls the false discovery rate, which
    equals the family-wise error rate when no column drifted), giving ``p_value_adjusted``.
    The default family-wise ``alpha`` is 0.01: with 0.05, 3 % of clean 500-row windows (200
    windows, 25 columns) raised an alarm, because in small windows the effect floors are below
    what a significant test needs and so filter nothing; with 0.01, 0.5 %. Detection does not
    change: from ~5,000 rows on the effect floor decides, not alpha (benchmarks/README.md).

Effect-size floor
    With huge windows every trivial shift is "significant", so a column is drifted only when
    ``p_value_adjusted < alpha`` *and* its effect size reaches a floor: KS ``D >= ks_floor`` for
    numeric columns, ``tvd >= chi2_floor`` for categorical ones. Both default to ``0.05``:
    ``D`` and TVD are on the same scale (``D`` is the largest difference in probability mass
    below any threshold, TVD the probability mass that moved), and 0.05 means "at least 5% of
    the rows moved". A 0.2-standard-deviation mean shift of a normal column has
    ``D = 2*Phi(0.1) - 1 = 0.080`` and is flagged (at 5,000 rows per window its p-value is
    of order 1e-13 and the sampling error of ``D`` is ~0.01, far from the floor), whereas
    shifts below ~0.125 standard deviations are not, however large the windows. A clean column
    at 1,000,000 rows has ``D`` of order ``1/sqrt(500,000) = 0.0014``, thirty times below the
    floor, so it is never flagged even if its p-value happens to be small. Pass ``ks_floor=0`` and
    ``chi2_floor=0`` for a pure significance test.

Severity per column
    ``drift``: drifted (significant and at or above the effect floor). ``minor``: significant
    after the correction but below the effect floor, a real but small change (typical of large
    windows); it is reported, never an alarm. ``stable``: not significant (or not tested).

Ranking
    Every report lists its columns drift first, then minor, then stable, and within each by
    effect size relative to its floor, largest first (:func:`rank_key`; ties keep the input
    order), so the first rows of any output are the columns to look at.

Dataset verdict
    ``drifted`` is true when any column is drifted; ``share_drifted`` is the fraction of the
    compared columns that are drifted. Minor columns never make a report drifted.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from closedloop.domain.checks.profiles import (
    NULL_LABEL,
    ColumnKind,
    bin_counts,
    column_kind,
    forced_categorical,
    psi_edges,
)
from closedloop.domain.checks.stats import (
    chi2_homogeneity,
    ks_p_values,
    ks_sorted,
    psi,
    sorted_finite,
)
from closedloop.errors import InvalidInputError, SchemaError

Correction = Literal["bonferroni", "bh"]
CORRECTIONS: tuple[Correction, ...] = ("bonferroni", "bh")
Severity = Literal["drift", "minor", "stable"]
SEVERITIES: tuple[Severity, ...] = ("drift", "minor", "stable")
"""Most severe first (module docstring)."""

DEFAULT_ALPHA = 0.01
DEFAULT_KS_FLOOR = 0.05
"""Minimum KS statistic ``D`` for a numeric column to count as drifted (module docstring)."""
DEFAULT_CHI2_FLOOR = 0.05
"""Minimum total variation distance for a categorical column to count as drifted."""
MAX_UNSEEN_REPORTED = 20
DISTANCE_POINTS = 20_000
"""Wasserstein distances of larger columns use this many evenly spaced order statistics per
side (:func:`closedloop.domain.checks.distances.wasserstein_sorted`)."""
_BLOCK_ELEMENTS = 1 << 21
"""Numeric columns are tested in tasks of at most this many pooled values (at least one column
per task); several tasks run on a small thread pool (numpy sorts and searches release the GIL)."""
_MAX_THREADS = 4


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class ColumnDrift:
    """The drift test of one column. Categorical-only fields are ``None`` for numeric columns.

    ``statistic``/``p_value``/``p_value_adjusted``/``psi`` are ``None`` (and ``drifted`` is
    false, with a ``note``) when a numeric column has no usable value in one of the windows.
    """

    column: str
    kind: ColumnKind
    test: Literal["ks", "chi2"]
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    threshold: float
    effect_floor: float
    psi: float | None
    drifted: bool
    n_reference: int
    n_current: int
    tvd: float | None = None
    unseen_categories: list[str] | None = None
    note: str | None = None
    error_bound: float | None = None
    """Sketch path only: bound on ``|statistic - exact D|`` (see :mod:`.sketches`)."""
    wasserstein: float | None = None
    """Numeric only: W1 distance divided by the reference standard deviation."""
    js: float | None = None
    """Jensen-Shannon distance (base 2) on reference-quantile bins or on the categories."""

    @property
    def effect_size(self) -> float | None:
        """The quantity compared with ``effect_floor``: ``D`` (numeric) or TVD (categorical)."""
        return self.statistic if self.kind == "numeric" else self.tvd

    @property
    def relative_effect(self) -> float | None:
        """``effect_size / effect_floor`` (1 at the floor); the effect size itself when the
        floor is 0; ``None`` when the column was not tested."""
        effect = self.effect_size
        if effect is None:
            return None
        return effect / self.effect_floor if self.effect_floor > 0 else effect

    @property
    def severity(self) -> Severity:
        """``"drift"``, ``"minor"`` (significant, below the effect floor) or ``"stable"``."""
        if self.drifted:
            return "drift"
        adjusted = self.p_value_adjusted
        return "minor" if adjusted is not None and adjusted < self.threshold else "stable"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (plain Python types, no NaN/inf)."""
        body: dict[str, Any] = {
            "column": self.column,
            "kind": self.kind,
            "test": self.test,
            "statistic": _opt_float(self.statistic),
            "p_value": _opt_float(self.p_value),
            "p_value_adjusted": _opt_float(self.p_value_adjusted),
            "threshold": float(self.threshold),
            "effect_floor": float(self.effect_floor),
            "psi": _opt_float(self.psi),
            "drifted": bool(self.drifted),
            "severity": self.severity,
            "n_reference": int(self.n_reference),
            "n_current": int(self.n_current),
        }
        if self.kind == "categorical":
            body["tvd"] = _opt_float(self.tvd)
            body["unseen_categories"] = [str(c) for c in self.unseen_categories or []]
        if self.note is not None:
            body["note"] = self.note
        if self.error_bound is not None:
            body["error_bound"] = float(self.error_bound)
        if self.wasserstein is not None:
            body["wasserstein"] = _opt_float(self.wasserstein)
        if self.js is not None:
            body["js"] = _opt_float(self.js)
        return body

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnDrift:
        """Inverse of :meth:`to_dict`."""
        kind = _required(data, "kind", "column result")
        if kind not in ("numeric", "categorical"):
            raise InvalidInputError(
                f"A column result's kind must be 'numeric' or 'categorical'. Got {kind!r} instead."
            )
        unseen = data.get("unseen_categories")
        return cls(
            column=str(_required(data, "column", "column result")),
            kind=cast(ColumnKind, kind),
            test=cast(Literal["ks", "chi2"], _required(data, "test", "column result")),
            statistic=_opt_float(_required(data, "statistic", "column result")),
            p_value=_opt_float(_required(data, "p_value", "column result")),
            p_value_adjusted=_opt_float(data.get("p_value_adjusted")),
            threshold=float(data.get("threshold", DEFAULT_ALPHA)),
            effect_floor=float(data.get("effect_floor", 0.0)),
            psi=_opt_float(data.get("psi")),
            drifted=bool(_required(data, "drifted", "column result")),
            n_reference=int(data.get("n_reference", 0)),
            n_current=int(data.get("n_current", 0)),
            tvd=_opt_float(data.get("tvd")),
            unseen_categories=None if unseen is None else [str(c) for c in unseen],
            note=data.get("note"),
            error_bound=_opt_float(data.get("error_bound")),
            wasserstein=_opt_float(data.get("wasserstein")),
            js=_opt_float(data.get("js")),
        )


@dataclass
class DriftReport:
    """The result of :func:`compare_frames`; :meth:`to_dict` is the stable JSON shape."""

    drifted: bool
    n_reference: int
    n_current: int
    alpha: float
    correction: Correction
    columns: list[ColumnDrift] = field(default_factory=list)
    method: Literal["exact", "sketch"] = "exact"
    """``"exact"``: every value was tested; ``"sketch"``: KS from KLL sketches (streaming)."""
    multivariate: dict[str, Any] | None = None
    """The domain-classifier result (:mod:`.multivariate`), when it ran."""
    quality: dict[str, Any] | None = None
    """Data-quality signals per column (:mod:`.quality`), when computed."""
    weighting: dict[str, Any] | None = None
    """The importance-weighted verdict (:func:`closedloop.domain.checks.assessment.assess`), when
    weights were given: ``weights``, ``weighted_share``, ``min_weighted_share``, ``counts``."""

    @property
    def n_drifted(self) -> int:
        """How many columns are drifted."""
        return sum(1 for column in self.columns if column.drifted)

    @property
    def share_drifted(self) -> float:
        """The fraction of the compared columns that are drifted (0 when none were compared)."""
        return self.n_drifted / len(self.columns) if self.columns else 0.0

    @property
    def drifted_columns(self) -> list[str]:
        """Names of the drifted columns, in report order (largest relative effect first)."""
        return [column.column for column in self.columns if column.drifted]

    @property
    def minor_columns(self) -> list[str]:
        """Names of the minor columns (significant, below the floor), in report order."""
        return [column.column for column in self.columns if column.severity == "minor"]

    def column(self, name: str) -> ColumnDrift:
        """The result for column ``name`` (:class:`SchemaError` when it was not compared)."""
        for column in self.columns:
            if column.column == name:
                return column
        raise SchemaError(
            f"The drift report has no column {name!r}; it compared "
            f"{[c.column for c in self.columns]}.",
            details={"column": name},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict; ``json.dumps(report.to_dict(), allow_nan=False)`` works."""
        return {
            "drifted": bool(self.drifted),
            "n_reference": int(self.n_reference),
            "n_current": int(self.n_current),
            "alpha": float(self.alpha),
            "correction": self.correction,
            "share_drifted": float(self.share_drifted),
            "n_drifted": int(self.n_drifted),
            "columns": [column.to_dict() for column in self.columns],
            "method": self.method,
            **({"multivariate": self.multivariate} if self.multivariate is not None else {}),
            **({"quality": self.quality} if self.quality is not None else {}),
            **({"weighting": self.weighting} if self.weighting is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        """Inverse of :meth:`to_dict` (``share_drifted``/``n_drifted`` are recomputed)."""
        correction = data.get("correction", "bonferroni")
        if correction not in CORRECTIONS:
            raise InvalidInputError(
                f"A drift report's correction must be one of {list(CORRECTIONS)}. "
                f"Got {correction!r} instead."
            )
        items = _required(data, "columns", "drift report")
        if not isinstance(items, list):
            raise InvalidInputError(
                f"A drift report's 'columns' must be a list. Got {type(items).__name__} instead."
            )
        return cls(
            drifted=bool(_required(data, "drifted", "drift report")),
            n_reference=int(_required(data, "n_reference", "drift report")),
            n_current=int(_required(data, "n_current", "drift report")),
            alpha=float(data.get("alpha", DEFAULT_ALPHA)),
            correction=cast(Correction, correction),
            columns=sorted((ColumnDrift.from_dict(item) for item in items), key=rank_key),
            method="sketch" if data.get("method") == "sketch" else "exact",
            multivariate=data.get("multivariate"),
            quality=data.get("quality"),
            weighting=data.get("weighting"),
        )


# --------------------------------------------------------------------------------------------
# Public statistics helpers
# --------------------------------------------------------------------------------------------


def rank_key(column: ColumnDrift) -> tuple[int, float]:
    """The order of columns in every report and output: severity (drift, minor, stable), then
    the effect size relative to its floor, largest first (untested columns last)."""
    effect = column.relative_effect
    return SEVERITIES.index(column.severity), -effect if effect is not None else math.inf


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: Correction) -> np.ndarray:
    """Adjust a family of p-values for multiple testing (vectorised).

    ``"bonferroni"``: ``min(1, m * p)``. ``"bh"`` (Benjamini-Hochberg step-up):
    ``p_adj(i) = min_{j >= i} min(1, m * p(j) / j)`` over the ascending order, returned in the
    input order. A column is rejected at level ``alpha`` when ``p_adj < alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return p.copy()
    if method == "bonferroni":
        adjusted: np.ndarray = np.minimum(p * m, 1.0)
        return adjusted
    if method == "bh":
        order = np.argsort(p, kind="stable")
        scaled = p[order] * m / np.arange(1, m + 1)
        monotone = np.minimum.accumulate(scaled[::-1])[::-1]
        result = np.empty_like(p)
        result[order] = np.minimum(monotone, 1.0)
        return result
    raise InvalidInputError(
        f"correction must be one of {list(CORRECTIONS)}. Got {method!r} instead."
    )


def ks_statistics(
    reference: np.ndarray, current: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-sample KS statistics of every column of two 2-D float arrays at once.

    NaNs (and +-inf) are ignored per column. Returns ``(D, n_reference, n_current)`` arrays (one
    entry per column; ``D`` is NaN where a column has no value on one side).
    """
    n_cols = reference.shape[1]
    d = np.full(n_cols, np.nan)
    n1 = np.zeros(n_cols, dtype=np.int64)
    n2 = np.zeros(n_cols, dtype=np.int64)
    for j in range(n_cols):
        a = sorted_finite(reference[:, j])
        b = sorted_finite(current[:, j])
        n1[j], n2[j] = a.size, b.size
        if a.size and b.size:
            d[j] = ks_sorted(a, b)
    return d, n1, n2


# --------------------------------------------------------------------------------------------
# compare_frames
# --------------------------------------------------------------------------------------------


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    psi_bins: int = 10,
    ks_floor: float = DEFAULT_KS_FLOOR,
    chi2_floor: float = DEFAULT_CHI2_FLOOR,
    distances: bool = False,
) -> DriftReport:
    """Test every column of ``reference`` (or the listed ``columns``) for drift in ``current``.

    ``distances=True`` also fills every column's ``wasserstein`` (numeric) and ``js``
    (:mod:`.distances`), from the sorts and counts the tests already made, on every row.
    ``categorical`` forces the named columns to be tested as categorical. Columns of
    ``current`` that are not compared are ignored. Raises :class:`SchemaError` when a compared
    column is missing from either frame (or is numeric in the reference but not in the current
    frame), and :class:`InvalidInputError` for empty frames and invalid parameters. See the
    module docstring for the tests, the correction and the effect-size floors.
    """
    _check_frame(reference, "reference")
    _check_frame(current, "current")
    alpha = _check_float(alpha, "alpha", low=0.0, high=1.0, closed=False)
    ks_floor = _check_float(ks_floor, "ks_floor", low=0.0, high=1.0, closed=True)
    chi2_floor = _check_float(chi2_floor, "chi2_floor", low=0.0, high=1.0, closed=True)
    if correction not in CORRECTIONS:
        raise InvalidInputError(
            f"correction must be one of {list(CORRECTIONS)}. Got {correction!r} instead."
        )
    if isinstance(psi_bins, bool) or not isinstance(psi_bins, numbers.Integral) or psi_bins < 2:
        raise InvalidInputError(f"psi_bins must be an integer >= 2. Got {psi_bins!r} instead.")
    names = _resolve_columns(reference, current, columns)
    forced = forced_categorical(reference, categorical, label="reference frame")
    if len(reference) == 0 or len(current) == 0:
        empty = "reference" if len(reference) == 0 else "current"
        raise InvalidInputError(
            f"The {empty} frame has no rows; drift needs at least one row in each window.",
            details={"n_reference": len(reference), "n_current": len(current)},
        )

    kinds = {name: column_kind(reference[name], force_categorical=name in forced) for name in names}
    numeric = [name for name in names if kinds[name] == "numeric"]
    for name in numeric:
        if column_kind(current[name]) != "numeric":
            raise SchemaError(
                f"Column {name!r} is numeric in the reference frame but has dtype "
                f"{current[name].dtype} in the current frame; expected an integer or float "
                "column.",
                details={"column": str(name), "dtype": str(current[name].dtype)},
            )
    results: dict[Any, ColumnDrift] = {}
    results.update(
        _numeric_results(reference, current, numeric, alpha, psi_bins, ks_floor, distances)
    )
    for name in names:
        if kinds[name] == "categorical":
            results[name] = _categorical_result(
                reference[name], current[name], str(name), alpha, chi2_floor, distances
            )

    return _verdict(
        [results[name] for name in names], len(reference), len(current), alpha, correction
    )


def _verdict(
    ordered: list[ColumnDrift],
    n_reference: int,
    n_current: int,
    alpha: float,
    correction: Correction,
    method: Literal["exact", "sketch"] = "exact",
) -> DriftReport:
    tested = [item for item in ordered if item.p_value is not None]
    adjusted = adjust_p_values([cast(float, item.p_value) for item in tested], correction)
    for item, p_adj in zip(tested, adjusted, strict=True):
        item.p_value_adjusted = float(p_adj)
        effect = item.effect_size
        item.drifted = bool(p_adj < alpha and effect is not None and effect >= item.effect_floor)
    return DriftReport(
        drifted=any(item.drifted for item in ordered),
        n_reference=n_reference,
        n_current=n_current,
        alpha=alpha,
        correction=correction,
        columns=sorted(ordered, key=rank_key),
        method=method,
    )


def _numeric_results(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    names: list[Any],
    alpha: float,
    psi_bins: int,
    ks_floor: float,
    distances: bool = False,
) -> dict[Any, ColumnDrift]:
    if not names:
        return {}
    rows = len(reference) + len(current)
    per_task = max(1, _BLOCK_ELEMENTS // max(rows, 1))
    tasks = [names[i : i + per_task] for i in range(0, len(names), per_task)]

    def run(task: list[Any]) -> list[_NumericOutcome]:
        return [
            _numeric_column(reference[name], current[name], psi_bins, distances) for name in task
        ]

    workers = min(len(tasks), _MAX_THREADS, os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = [item for part in pool.map(run, tasks) for item in part]
    else:
        outcomes = [item for task in tasks for item in run(task)]
    d = np.array([o.d for o in outcomes], dtype=np.float64)
    n1 = np.array([o.n1 for o in outcomes], dtype=np.int64)
    n2 = np.array([o.n2 for o in outcomes], dtype=np.int64)
    d, p = ks_p_values(d, n1, n2)
    results = {}
    for j, name in enumerate(names):
        a, b = int(n1[j]), int(n2[j])
        note = None
        if a == 0 or b == 0:
            side = "reference" if a == 0 else "current"
            note = f"no non-null finite values in the {side} window; not tested"
        results[name] = ColumnDrift(
            column=str(name),
            kind="numeric",
            test="ks",
            statistic=None if note else float(d[j]),
            p_value=None if note else float(p[j]),
            p_value_adjusted=None,
            threshold=alpha,
            effect_floor=ks_floor,
            psi=None if note else outcomes[j].psi,
            drifted=False,
            n_reference=a,
            n_current=b,
            note=note,
            wasserstein=None if note else outcomes[j].wasserstein,
            js=None if note else outcomes[j].js,
        )
    return results


@dataclass(frozen=True)
class _NumericOutcome:
    d: float
    n1: int
    n2: int
    psi: float | None = None
    wasserstein: float | None = None
    js: float | None = None


def _numeric_column(
    reference: pd.Series[Any], current: pd.Series[Any], psi_bins: int, distances: bool
) -> _NumericOutcome:
    """KS ``D``, sizes, PSI (and W1 and JS) of one numeric column: each side is sorted once
    (finite values only); the sorted reference gives the PSI bin edges and both bin counts, which
    JS reuses, and W1 merges the two sorted sides."""
    a = sorted_finite(_float_values(reference))
    b = sorted_finite(_float_values(current))
    if a.size == 0 or b.size == 0:
        return _NumericOutcome(math.nan, a.size, b.size)
    edges = psi_edges(a, a.size, psi_bins)
    counts_a, counts_b = bin_counts(a, a.size, edges), bin_counts(b, b.size, edges)
    outcome = _NumericOutcome(ks_sorted(a, b), a.size, b.size, psi(counts_a, counts_b))
    if not distances:
        return outcome
    from closedloop.domain.checks.distances import js_distance, wasserstein_sorted

    return replace(
        outcome,
        wasserstein=_opt_float(wasserstein_sorted(a, b, max_points=DISTANCE_POINTS)),
        js=_opt_float(js_distance(counts_a, counts_b)),
    )


def _float_values(series: pd.Series[Any]) -> np.ndarray:
    """The column as float64 with nulls as NaN (no copy for a float64 column without nulls)."""
    if series.dtype == np.float64:
        values: np.ndarray = series.to_numpy()
        return values
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def _categorical_result(
    reference: pd.Series[Any],
    current: pd.Series[Any],
    name: str,
    alpha: float,
    floor: float,
    distances: bool = False,
) -> ColumnDrift:
    return _categorical_from_counts(
        _counts_with_nulls(reference), _counts_with_nulls(current), name, alpha, floor, distances
    )


def _categorical_from_counts(
    ref_counts: pd.Series[Any],
    cur_counts: pd.Series[Any],
    name: str,
    alpha: float,
    floor: float,
    distances: bool = False,
) -> ColumnDrift:
    table = pd.concat([ref_counts, cur_counts], axis=1, sort=False).fillna(0.0)
    observed = table.to_numpy(dtype=np.float64).T  # 2 x k
    statistic, p_value = chi2_homogeneity(observed)
    n_ref, n_cur = observed.sum(axis=1)
    freq_ref, freq_cur = observed[0] / n_ref, observed[1] / n_cur
    unseen_mask = (observed[0] == 0) & (observed[1] > 0)
    unseen_order = np.argsort(-observed[1][unseen_mask], kind="stable")
    unseen_labels = np.asarray(table.index[unseen_mask], dtype=object)[unseen_order]
    js = None
    if distances:
        from closedloop.domain.checks.distances import js_distance

        js = _opt_float(js_distance(observed[0], observed[1]))
    return ColumnDrift(
        column=name,
        kind="categorical",
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        p_value_adjusted=None,
        threshold=alpha,
        effect_floor=floor,
        psi=psi(observed[0], observed[1]),
        drifted=False,
        n_reference=int(n_ref),
        n_current=int(n_cur),
        tvd=float(0.5 * np.abs(freq_ref - freq_cur).sum()),
        unseen_categories=[str(label) for label in unseen_labels[:MAX_UNSEEN_REPORTED]],
        js=js,
    )


def _counts_with_nulls(series: pd.Series[Any]) -> pd.Series[Any]:
    counts = series.value_counts(dropna=False, sort=False)
    counts = counts[counts > 0]
    is_null = np.asarray(pd.isna(counts.index), dtype=bool)
    values = counts[~is_null]
    values.index = pd.Index(list(values.index), dtype=object)
    if is_null.any():
        nulls = pd.Series([int(counts[is_null].sum())], index=pd.Index([NULL_LABEL], dtype=object))
        values = pd.concat([values, nulls])
    return values


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _check_frame(frame: object, label: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise InvalidInputError(
            f"{label} must be a pandas DataFrame. Got {type(frame).__name__} instead."
        )
    if frame.columns.has_duplicates:
        dupes = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise SchemaError(
            f"The {label} frame has duplicate column names {dupes}; expected unique names.",
            details={"duplicates": dupes},
        )


def _check_float(value: object, name: str, *, low: float, high: float, closed: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        number = float(cast(float, value))
        ok = low <= number <= high if closed else low < number < high
        if ok:
            return number
    interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
    raise InvalidInputError(f"{name} must be a float in {interval}. Got {value!r} instead.")


def _resolve_columns(
    reference: pd.DataFrame, current: pd.DataFrame, columns: Sequence[str] | None
) -> list[Any]:
    if columns is None:
        names = list(reference.columns)
    else:
        if isinstance(columns, str):
            raise InvalidInputError(
                f"columns must be a list of column names. Got the string {columns!r} instead."
            )
        names = list(columns)
        dupes = sorted({str(n) for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidInputError(f"columns lists {dupes} more than once; expected unique names.")
        missing_ref = [n for n in names if n not in reference.columns]
        if missing_ref:
            raise SchemaError(
                f"The reference frame has no column(s) {[str(n) for n in missing_ref]}; "
                f"expected names among {[str(c) for c in reference.columns]}.",
                details={"missing": [str(n) for n in missing_ref], "frame": "reference"},
            )
    if not names:
        raise InvalidInputError("There are no columns to compare; expected at least one column.")
    missing = [n for n in names if n not in current.columns]
    if missing:
        raise SchemaError(
            f"The current frame is missing column(s) {[str(n) for n in missing]} that the "
            "reference frame has; expected every compared column in both frames.",
            details={"missing": [str(n) for n in missing], "frame": "current"},
        )
    return names


def _required(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise InvalidInputError(f"A {what} is missing the key {key!r}.")
    return data[key]


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


__all__ = [
    "CORRECTIONS",
    "DEFAULT_ALPHA",
    "DEFAULT_CHI2_FLOOR",
    "DEFAULT_KS_FLOOR",
    "SEVERITIES",
    "ColumnDrift",
    "Correction",
    "DriftReport",
    "Severity",
    "adjust_p_values",
    "compare_frames",
    "ks_statistics",
    "rank_key",
]
