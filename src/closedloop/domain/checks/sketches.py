"""Mergeable, serialisable drift profiles for windows too large (or too spread out) to hold.

A :class:`TableSketch` summarises a table batch by batch in memory bounded by the sketch size,
independent of the number of rows:

* numeric columns: a KLL quantile sketch (Apache DataSketches ``kll_doubles_sketch``, parameter
  ``k``, default :data:`DEFAULT_K`) of the finite values, plus the count of nulls/non-finite
  values. Memory is ``O(k)`` doubles per column (about 30 KB at ``k = 2000``);
* categorical columns: exact counts per category (nulls count as ``"<null>"``), as in the exact
  chi-square test.

Sketches are built incrementally (:meth:`TableSketch.update` with a pandas frame or a pyarrow
record batch), merged (:meth:`TableSketch.merge`: the sketch of the union of the rows), and
serialised to JSON (:meth:`TableSketch.to_dict`, KLL bytes as base64).

KS from sketches (:func:`sketch_ks`)
    ``D_sketch = sup_x |F^_ref(x) - F^_cur(x)|`` where ``F^`` is a sketch's estimated CDF (an
    inclusive, right-continuous step function over its retained items); the supremum is taken
    exactly, at every retained item of both sketches. **Error bound**: when each sketch's
    estimated CDF is within its normalised rank error ``eps`` of the true ECDF,
    ``|D_sketch - D_exact| <= eps_ref + eps_cur`` (triangle inequality, reported per column
    as ``error_bound``). ``eps`` is DataSketches' a-priori single-rank error at 99% confidence
    (``kll_doubles_sketch.normalized_rank_error(False)``; about 1.3% for ``k = 200`` and 0.17%
    for ``k = 2000``), and ``eps = 0`` for a sketch still in exact mode (fewer than ``k``
    values). The bound is probabilistic (KLL compaction is randomised), not worst case. The
    p-value is ``scipy.stats.ks_2samp``'s, computed from ``D_sketch`` and the exact sample
    sizes (:func:`closedloop.domain.checks.stats.ks_p_values`).

PSI from sketches (:func:`sketch_psi`)
    The bins are the reference sketch's deciles; bin masses are read from both sketches' CDFs.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

from closedloop.domain.checks.drift import (
    CORRECTIONS,
    DEFAULT_ALPHA,
    DEFAULT_CHI2_FLOOR,
    DEFAULT_KS_FLOOR,
    ColumnDrift,
    Correction,
    DriftReport,
    _categorical_from_counts,
    _check_float,
    _verdict,
)
from closedloop.domain.checks.profiles import NULL_LABEL, ColumnKind
from closedloop.domain.checks.stats import ks_p_values, psi
from closedloop.errors import InvalidInputError, SchemaError

DEFAULT_K = 2000
"""KLL accuracy parameter: normalised rank error ~0.17% (99% confidence), ~30 KB per column."""
SKETCH_FORMAT_VERSION = 1


@dataclass
class NumericSketch:
    """KLL sketch of the finite values of one numeric column plus its null/non-finite count."""

    kll: kll_doubles_sketch
    nulls: int = 0

    @classmethod
    def empty(cls, k: int = DEFAULT_K) -> NumericSketch:
        if isinstance(k, bool) or not isinstance(k, int) or not 8 <= k <= 65535:
            raise InvalidInputError(f"k must be an integer in [8, 65535]. Got {k!r} instead.")
        return cls(kll_doubles_sketch(k))

    @property
    def count(self) -> int:
        """How many finite values the sketch has seen."""
        return int(self.kll.n)

    @property
    def rank_error(self) -> float:
        """Normalised rank error (99% confidence); 0 while the sketch is exact."""
        if not self.kll.is_estimation_mode():
            return 0.0
        return float(self.kll.normalized_rank_error(False))

    def update(self, values: np.ndarray) -> None:
        """Add a 1-D array of values (NaN, nulls and +-inf are counted as nulls)."""
        column = np.asarray(values, dtype=np.float64)
        finite = np.isfinite(column)
        kept = column if finite.all() else column[finite]
        self.nulls += int(column.size - kept.size)
        if kept.size:
            self.kll.update(np.require(kept, dtype=np.float64, requirements=["C", "W"]))

    def merge(self, other: NumericSketch) -> None:
        self.kll.merge(other.kll)
        self.nulls += other.nulls

    def cdf(self, points: np.ndarray) -> np.ndarray:
        """Estimated fraction of values ``<= x`` at every (sorted) point ``x``."""
        if self.count == 0 or points.size == 0:
            return np.zeros(points.size)
        ranks = np.asarray(self.kll.get_cdf(points.tolist(), True), dtype=np.float64)
        return ranks[:-1]

    def items(self) -> np.ndarray:
        """The retained items (sorted, unique)."""
        return np.unique(np.fromiter((item for item, _ in self.kll), dtype=np.float64))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "numeric",
            "nulls": int(self.nulls),
            "kll": base64.b64encode(self.kll.serialize()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericSketch:
        raw = base64.b64decode(str(data["kll"]))
        return cls(kll_doubles_sketch.deserialize(raw), int(data.get("nulls", 0)))


@dataclass
class CategorySketch:
    """Exact counts of the categories of one column (nulls under ``"<null>"``)."""

    counts: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def update(self, values: pa.Array | pa.ChunkedArray | pd.Series[Any]) -> None:
        """Add a column of values (counted with pyarrow's ``value_counts``)."""
        array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        if pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        nulls = int(array.null_count)
        if nulls:
            self.counts[NULL_LABEL] = self.counts.get(NULL_LABEL, 0) + nulls
        for item in pc.value_counts(array).to_pylist():
            value = item["values"]
            if value is None:
                continue
            label = _label(value)
            self.counts[label] = self.counts.get(label, 0) + int(item["counts"])

    def merge(self, other: CategorySketch) -> None:
        for key, value in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + value

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categorical", "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategorySketch:
        return cls({str(k): int(v) for k, v in dict(data["counts"]).items()})


ColumnSketch = NumericSketch | CategorySketch


@dataclass
class TableSketch:
    """One sketch per column, built batch by batch; ``kinds`` fixes each column's test."""

    kinds: dict[str, ColumnKind]
    k: int = DEFAULT_K
    n_rows: int = 0
    columns: dict[str, ColumnSketch] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, kind in self.kinds.items():
            if name not in self.columns:
                self.columns[name] = (
                    NumericSketch.empty(self.k) if kind == "numeric" else CategorySketch()
                )

    def update(self, batch: pa.RecordBatch | pa.Table | pd.DataFrame) -> None:
        """Add the rows of ``batch`` (it must have every sketched column)."""
        if isinstance(batch, pd.DataFrame):
            names = [str(c) for c in batch.columns]
            rows = len(batch)
        else:
            names = list(batch.schema.names)
            rows = batch.num_rows
        missing = [name for name in self.kinds if name not in names]
        if missing:
            raise SchemaError(
                f"The batch is missing column(s) {missing}; expected every sketched column.",
                details={"missing": missing},
            )
        for name, sketch in self.columns.items():
            column = batch[name]
            if isinstance(sketch, NumericSketch):
                sketch.update(_float_array(column))
            else:
                sketch.update(column)
        self.n_rows += int(rows)

    def merge(self, other: TableSketch) -> None:
        """Add ``other`` (same columns and kinds) to this sketch: the sketch of both tables."""
        if other.kinds != self.kinds:
            raise SchemaError(
                "Cannot merge table sketches with different columns or kinds: "
                f"{self.kinds} and {other.kinds}."
            )
        for name, sketch in self.columns.items():
            sketch.merge(cast(Any, other.columns[name]))
        self.n_rows += other.n_rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (KLL sketches as base64 bytes)."""
        return {
            "format_version": SKETCH_FORMAT_VERSION,
            "k": self.k,
            "n_rows": self.n_rows,
            "columns": {name: sketch.to_dict() for name, sketch in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableSketch:
        try:
            columns: dict[str, ColumnSketch] = {}
            kinds: dict[str, ColumnKind] = {}
            for name, body in dict(data["columns"]).items():
                if body["kind"] == "numeric":
                    columns[str(name)] = NumericSketch.from_dict(body)
                    kinds[str(name)] = "numeric"
                else:
                    columns[str(name)] = CategorySketch.from_dict(body)
                    kinds[str(name)] = "categorical"
            return cls(kinds, int(data.get("k", DEFAULT_K)), int(data["n_rows"]), columns)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"Not a valid table sketch ({exc}).") from exc


def sketch_ks(reference: NumericSketch, current: NumericSketch) -> tuple[float, float, float]:
    """``(D_sketch, p_value, error_bound)`` between two non-empty numeric sketches (module
    docstring: ``|D_sketch - D_exact| <= error_bound = eps_ref + eps_cur``)."""
    if reference.count == 0 or current.count == 0:
        raise InvalidInputError("KS needs at least one value in each sketch.")
    points = np.union1d(reference.items(), current.items())
    d = float(np.max(np.abs(reference.cdf(points) - current.cdf(points))))
    d_arr, p = ks_p_values(np.array([d]), np.array([reference.count]), np.array([current.count]))
    return float(d_arr[0]), float(p[0]), reference.rank_error + current.rank_error


def sketch_psi(reference: NumericSketch, current: NumericSketch, bins: int = 10) -> float:
    """PSI on the reference sketch's quantile bins (``(-inf, e1], ..., (e_k, inf)``)."""
    probs = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.unique(np.asarray(reference.kll.get_quantiles(probs.tolist()), dtype=np.float64))
    ref = np.diff(np.concatenate([[0.0], reference.cdf(edges), [1.0]]))
    cur = np.diff(np.concatenate([[0.0], current.cdf(edges), [1.0]]))
    return psi(np.maximum(ref, 0.0), np.maximum(cur, 0.0))


def compare_sketches(
    reference: TableSketch,
    current: TableSketch,
    *,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    psi_bins: int = 10,
    ks_floor: float = DEFAULT_KS_FLOOR,
    chi2_floor: float = DEFAULT_CHI2_FLOOR,
) -> DriftReport:
    """Drift report from two :class:`TableSketch` (the streaming
    path, ``method="sketch"``). Numeric columns: KS ``D`` and its p-value from the KLL sketches
    with a per-column ``error_bound`` on ``|D - D_exact|``; categorical columns: the exact
    chi-square test on the exact counts. Same correction and effect-size floors as
    :func:`~closedloop.domain.checks.drift.compare_frames`. Both sketches must have the same
    columns and kinds."""
    alpha = _check_float(alpha, "alpha", low=0.0, high=1.0, closed=False)
    ks_floor = _check_float(ks_floor, "ks_floor", low=0.0, high=1.0, closed=True)
    chi2_floor = _check_float(chi2_floor, "chi2_floor", low=0.0, high=1.0, closed=True)
    if correction not in CORRECTIONS:
        raise InvalidInputError(
            f"correction must be one of {list(CORRECTIONS)}. Got {correction!r} instead."
        )
    if reference.kinds != current.kinds:
        raise SchemaError(
            "The reference and current sketches have different columns or kinds: "
            f"{reference.kinds} and {current.kinds}."
        )
    if reference.n_rows == 0 or current.n_rows == 0:
        raise InvalidInputError("drift needs at least one row in each window.")
    ordered = []
    for name, ref in reference.columns.items():
        cur = current.columns[name]
        if isinstance(ref, NumericSketch) and isinstance(cur, NumericSketch):
            a, b = ref.count, cur.count
            if a == 0 or b == 0:
                side = "reference" if a == 0 else "current"
                note = f"no non-null finite values in the {side} window; not tested"
                ordered.append(
                    ColumnDrift(
                        name,
                        "numeric",
                        "ks",
                        None,
                        None,
                        None,
                        alpha,
                        ks_floor,
                        None,
                        False,
                        a,
                        b,
                        note=note,
                    )
                )
                continue
            d, p, bound = sketch_ks(ref, cur)
            ordered.append(
                ColumnDrift(
                    column=name,
                    kind="numeric",
                    test="ks",
                    statistic=d,
                    p_value=p,
                    p_value_adjusted=None,
                    threshold=alpha,
                    effect_floor=ks_floor,
                    psi=sketch_psi(ref, cur, psi_bins),
                    drifted=False,
                    n_reference=a,
                    n_current=b,
                    error_bound=bound,
                )
            )
        else:
            ordered.append(
                _categorical_from_counts(
                    pd.Series(cast(Any, ref).counts, dtype=np.float64),
                    pd.Series(cast(Any, cur).counts, dtype=np.float64),
                    name,
                    alpha,
                    chi2_floor,
                )
            )
    return _verdict(ordered, reference.n_rows, current.n_rows, alpha, correction, "sketch")


def _float_array(column: Any) -> np.ndarray:
    if isinstance(column, pd.Series):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(array.type) or not (
        pa.types.is_integer(array.type) or pa.types.is_floating(array.type)
    ):
        raise SchemaError(f"Expected a numeric column; got {array.type}.")
    values: np.ndarray = array.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return values


def _label(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return NULL_LABEL
    return str(value)


__all__ = [
    "DEFAULT_K",
    "CategorySketch",
    "ColumnSketch",
    "NumericSketch",
    "TableSketch",
    "compare_sketches",
    "sketch_ks",
    "sketch_psi",
]
