"""Specification of closedloop.domain.checks.sketches and the streaming drift path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from closedloop.domain.checks.drift import compare_frames
from closedloop.domain.checks.sketches import (
    CategorySketch,
    NumericSketch,
    TableSketch,
    compare_sketches,
    sketch_ks,
    sketch_psi,
)
from closedloop.services.monitoring import DriftOptions, drift_files


def _sketch(values: np.ndarray, k: int = 200, parts: int = 1) -> NumericSketch:
    whole = NumericSketch.empty(k)
    for chunk in np.array_split(values, parts):
        part = NumericSketch.empty(k)
        part.update(chunk)
        whole.merge(part)
    return whole


def test_sketch_ks_is_exact_while_both_sketches_are_exact() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=150), np.round(rng.normal(0.3, size=120), 1)
    d, p, bound = sketch_ks(_sketch(a), _sketch(b))
    expected = stats.ks_2samp(a, b)
    assert bound == 0.0
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(500, 20_000),
    m=st.integers(500, 20_000),
    shift=st.floats(0.0, 1.0),
    ties=st.booleans(),
    parts=st.integers(1, 4),
    seed=st.integers(0, 2**31),
)
def test_sketch_d_is_within_the_stated_error_bound_of_the_exact_d(
    n: int, m: int, shift: float, ties: bool, parts: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(shift, size=m)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    d, _, bound = sketch_ks(_sketch(a, parts=parts), _sketch(b, parts=parts))
    exact = stats.ks_2samp(a, b).statistic
    assert bound > 0
    assert abs(d - exact) <= bound


def test_numeric_sketch_counts_nulls_and_infinities_and_round_trips_json() -> None:
    sketch = NumericSketch.empty(50)
    sketch.update(np.array([1.0, np.nan, np.inf, 2.0, -np.inf] * 100))
    assert (sketch.count, sketch.nulls) == (200, 300)
    again = NumericSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert (again.count, again.nulls) == (200, 300)
    assert again.cdf(np.array([1.0, 2.0])).tolist() == sketch.cdf(np.array([1.0, 2.0])).tolist()


def test_category_sketch_counts_exactly_and_merges() -> None:
    left, right = CategorySketch(), CategorySketch()
    left.update(pa.array(["a", "b", None, "a"]))
    right.update(pa.array(["a", "c"]).dictionary_encode())
    left.merge(right)
    assert left.counts == {"a": 3, "b": 1, "c": 1, "<null>": 1}


def test_sketch_psi_is_small_for_equal_and_large_for_shifted_distributions() -> None:
    rng = np.random.default_rng(1)
    ref = _sketch(rng.normal(size=50_000))
    assert sketch_psi(ref, _sketch(rng.normal(size=50_000))) < 0.01
    assert sketch_psi(ref, _sketch(rng.normal(1.0, size=50_000))) > 0.25


def test_table_sketches_merge_serialise_and_give_the_exact_verdicts() -> None:
    rng = np.random.default_rng(2)

    def frame(n: int, shift: float, p: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "x": rng.normal(shift, size=n),
                "y": rng.integers(0, 10, n),
                "c": rng.choice(["a", "b"], n, p=[p, 1 - p]),
            }
        )

    ref, cur = frame(20_000, 0.0, 0.5), frame(20_000, 0.5, 0.3)
    kinds = {"x": "numeric", "y": "numeric", "c": "categorical"}
    sketches = []
    for data in (ref, cur):
        whole = TableSketch(dict(kinds))  # type: ignore[arg-type]
        for part in np.array_split(np.arange(len(data)), 3):
            piece = TableSketch(dict(kinds))  # type: ignore[arg-type]
            piece.update(pa.Table.from_pandas(data.iloc[part], preserve_index=False))
            whole.merge(TableSketch.from_dict(json.loads(json.dumps(piece.to_dict()))))
        sketches.append(whole)
    report = compare_sketches(sketches[0], sketches[1])
    exact = compare_frames(ref, cur)
    assert report.method == "sketch" and exact.method == "exact"
    assert sorted(report.drifted_columns) == sorted(exact.drifted_columns) == ["c", "x"]
    assert report.column("c").statistic == pytest.approx(exact.column("c").statistic)
    body = report.to_dict()
    assert body["method"] == "sketch"
    assert next(c for c in body["columns"] if c["column"] == "x")["error_bound"] > 0
    assert all("error_bound" not in c for c in exact.to_dict()["columns"])


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drift_files_streams_files_larger_than_a_batch(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from closedloop.services import monitoring

    rng = np.random.default_rng(3)
    n = 30_000
    ref = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b", "c"], n)})
    cur = pd.DataFrame({"x": rng.normal(0.5, size=n), "c": rng.choice(["a", "b", "c"], n)})
    paths = [tmp_path / f"ref{suffix}", tmp_path / f"cur{suffix}"]
    for frame, path in zip((ref, cur), paths, strict=True):
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, row_group_size=5_000)
    monkeypatch.setattr(monitoring, "STREAM_BATCH_ROWS", 4_096)
    streamed = drift_files(paths[0], paths[1], DriftOptions(), stream=True)
    exact = drift_files(paths[0], paths[1], DriftOptions(), stream=False)
    assert streamed.method == "sketch" and exact.method == "exact"
    assert streamed.n_reference == streamed.n_current == n
    assert streamed.drifted_columns == exact.drifted_columns == ["x"]
    x = streamed.column("x")
    assert x.error_bound is not None
    assert abs(x.statistic - exact.column("x").statistic) <= x.error_bound  # type: ignore[operator]
    monkeypatch.setenv("CLOSEDLOOP_DRIFT_STREAM", "1")
    assert drift_files(paths[0], paths[1], DriftOptions()).method == "sketch"
    monkeypatch.setenv("CLOSEDLOOP_DRIFT_STREAM", "0")
    assert drift_files(paths[0], paths[1], DriftOptions()).method == "exact"
