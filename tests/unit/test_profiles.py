"""Specification of closedloop.domain.checks.profiles: kinds, profiling, serialisation, merging."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.checks.profiles import (
    MAX_PROFILE_CATEGORIES,
    OTHER,
    Profile,
    column_kind,
    merge_profiles,
    profile_frame,
)
from closedloop.errors import InvalidInputError, SchemaError


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10.0, 0.5, n)
    income[rng.random(n) < 0.05] = np.nan
    plans = np.array(["basic", "pro", "team", None], dtype=object)
    return pd.DataFrame(
        {
            "income": income,
            "age": rng.integers(18, 90, n),
            "score": rng.normal(0.0, 1.0, n),
            "plan": rng.choice(plans, n, p=[0.5, 0.3, 0.15, 0.05]),
            "active": rng.random(n) < 0.4,
        }
    )


def test_column_kind_is_numeric_for_int_and_float_and_categorical_otherwise() -> None:
    assert column_kind(pd.Series([1, 2])) == "numeric"
    assert column_kind(pd.Series([1.5, None])) == "numeric"
    assert column_kind(pd.Series([1, None], dtype="Int64")) == "numeric"
    assert column_kind(pd.Series([True, False])) == "categorical"
    assert column_kind(pd.Series([True, None], dtype="boolean")) == "categorical"
    assert column_kind(pd.Series(["a", "b"])) == "categorical"
    assert column_kind(pd.Series(["a", "b"], dtype="string")) == "categorical"
    assert column_kind(pd.Series(["a", "b"], dtype="category")) == "categorical"
    assert column_kind(pd.Series([1, 2]), force_categorical=True) == "categorical"


def test_column_kind_rejects_datetimes_naming_the_column() -> None:
    series = pd.Series(pd.to_datetime(["2024-01-01"]), name="signup")
    with pytest.raises(SchemaError, match="signup"):
        column_kind(series)


def test_numeric_profile_matches_pandas_and_numpy() -> None:
    frame = _frame(3000, seed=1)
    profile = profile_frame(frame)
    income = profile.column("income")
    values = frame["income"].dropna().to_numpy()
    assert income.kind == "numeric"
    assert (income.count, income.null_count) == (len(values), int(frame["income"].isna().sum()))
    assert income.min == values.min()
    assert income.max == values.max()
    assert income.mean == pytest.approx(values.mean(), rel=1e-12)
    assert income.std == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert income.quantiles is not None and len(income.quantiles) == 101
    np.testing.assert_allclose(income.quantiles, np.quantile(values, np.linspace(0, 1, 101)))
    assert income.bin_edges is not None and income.histogram is not None
    np.testing.assert_allclose(income.bin_edges, np.quantile(values, np.linspace(0, 1, 11)[1:-1]))
    expected_hist = np.bincount(np.searchsorted(income.bin_edges, values, side="left"))
    assert income.histogram == expected_hist.tolist()
    assert sum(income.histogram) == income.count


def test_discrete_columns_get_fewer_psi_bins_without_duplicate_edges() -> None:
    # deciles 0.1-0.4 are 0, the median interpolates to 0.5, deciles 0.6-0.9 are 1
    frame = pd.DataFrame({"k": [0] * 50 + [1] * 50})
    column = profile_frame(frame).column("k")
    assert column.bin_edges == [0.0, 0.5, 1.0]
    assert column.histogram == [50, 0, 50, 0]  # (-inf, 0], (0, 0.5], (0.5, 1], (1, inf)


def test_categorical_profile_counts_categories_and_nulls() -> None:
    frame = _frame(2000, seed=2)
    profile = profile_frame(frame, categorical=["age"])
    plan = profile.column("plan")
    assert plan.kind == "categorical"
    assert plan.null_count == int(frame["plan"].isna().sum())
    assert plan.counts == {str(k): int(v) for k, v in frame["plan"].value_counts().items()}
    assert list(plan.counts) == sorted(plan.counts, key=lambda k: -plan.counts[k])  # type: ignore[index]
    assert profile.column("active").counts is not None
    assert set(profile.column("active").counts or {}) == {"True", "False"}
    assert profile.column("age").kind == "categorical"


def test_categorical_profile_keeps_the_top_1000_and_sums_the_rest_under_other() -> None:
    values = [f"c{i:04d}" for i in range(1200) for _ in range(2 if i < 1000 else 1)]
    column = profile_frame(pd.DataFrame({"c": values})).column("c")
    assert column.counts is not None
    assert len(column.counts) == MAX_PROFILE_CATEGORIES + 1
    assert column.counts[OTHER] == 200
    assert sum(column.counts.values()) == len(values)


def test_an_all_null_numeric_column_has_counts_only() -> None:
    column = profile_frame(pd.DataFrame({"x": [np.nan, np.nan]})).column("x")
    assert (column.count, column.null_count, column.mean, column.quantiles) == (0, 2, None, None)


def test_profile_to_dict_is_strict_json_and_round_trips() -> None:
    profile = profile_frame(_frame(500, seed=3))
    body = profile.to_dict()
    text = json.dumps(body, allow_nan=False)
    again = Profile.from_dict(json.loads(text))
    assert again == profile
    assert again.to_dict() == body
    assert body["n_rows"] == 500


def test_from_dict_names_a_missing_key() -> None:
    with pytest.raises(InvalidInputError, match="n_rows"):
        Profile.from_dict({"columns": []})


def test_merging_two_halves_equals_the_profile_of_the_whole() -> None:
    frame = _frame(20_000, seed=4)
    whole = profile_frame(frame)
    merged = merge_profiles(profile_frame(frame.iloc[:7000]), profile_frame(frame.iloc[7000:]))
    assert merged.n_rows == whole.n_rows
    for got, want in zip(merged.columns, whole.columns, strict=True):
        assert (got.name, got.kind, got.count, got.null_count) == (
            want.name,
            want.kind,
            want.count,
            want.null_count,
        )
        if want.kind == "categorical":
            assert got.counts == want.counts
            continue
        assert got.min == want.min
        assert got.max == want.max
        assert got.mean == pytest.approx(want.mean, rel=1e-10)
        assert got.std == pytest.approx(want.std, rel=1e-10)
        assert got.histogram is not None and sum(got.histogram) == want.count
        # quantiles are approximate: within ~1.5% of the rows in rank (ties span a rank range)
        values = np.sort(frame[want.name].dropna().to_numpy(dtype=float))
        quantiles = np.asarray(got.quantiles, dtype=float)
        low = np.searchsorted(values, quantiles, side="left") / len(values)
        high = np.searchsorted(values, quantiles, side="right") / len(values)
        probs = np.linspace(0, 1, 101)
        assert np.all(low - 0.015 <= probs), want.name
        assert np.all(probs <= high + 0.015), want.name


def test_merging_with_an_empty_part_returns_the_other_part() -> None:
    frame = _frame(1000, seed=5)
    whole = profile_frame(frame)
    merged = merge_profiles(whole, profile_frame(frame.iloc[:0]))
    assert merged == whole


def test_merging_profiles_with_different_columns_raises_schema_error() -> None:
    a = profile_frame(pd.DataFrame({"x": [1.0]}))
    b = profile_frame(pd.DataFrame({"y": [1.0]}))
    with pytest.raises(SchemaError, match="different columns"):
        merge_profiles(a, b)
    c = profile_frame(pd.DataFrame({"x": ["a"]}))
    with pytest.raises(SchemaError, match="'x'"):
        merge_profiles(a, c)
