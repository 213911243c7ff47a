"""Specification of closedloop.domain.checks.quality: per-column data-quality signals and flags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from closedloop.domain.checks.quality import (
    data_quality,
    out_of_range_p_value,
    two_proportion_p_values,
    unseen_p_value,
)
from closedloop.errors import InvalidInputError, SchemaError


def _clean(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "k": rng.integers(0, 10, n),
            "c": rng.choice(["a", "b", "c"], n),
        }
    )


# --------------------------------------------------------------------------------------------
# Two-proportion z-test
# --------------------------------------------------------------------------------------------


def test_two_proportion_p_values_match_the_hand_computed_pooled_z_test() -> None:
    x1, n1, x2, n2 = 30, 1000, 55, 1000
    pooled = (x1 + x2) / (n1 + n2)
    z = (x2 / n2 - x1 / n1) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    result = two_proportion_p_values(
        np.array([x1, 0, 5]), np.array([n1, 10, 10]), np.array([x2, 0, 5]), np.array([n2, 10, 10])
    )
    assert result[0] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-12)
    assert result[1] == 1.0  # no missing value anywhere: nothing to test
    assert result[2] == pytest.approx(1.0)  # identical rates


def test_the_z_test_agrees_with_the_chi_square_test_of_the_2x2_table() -> None:
    table = np.array([[40, 960], [70, 930]])
    chi2 = stats.chi2_contingency(table, correction=False)
    p = two_proportion_p_values(np.array([40]), np.array([1000]), np.array([70]), np.array([1000]))
    assert p[0] == pytest.approx(chi2.pvalue, rel=1e-9)


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


def test_clean_windows_flag_nothing_and_the_report_is_json_safe() -> None:
    report = data_quality(_clean(2000, 0), _clean(1500, 1))
    assert not report.flagged
    assert not report.affects_verdict
    assert [c.column for c in report.columns] == ["x", "k", "c"]
    x = report.column("x")
    assert x.kind == "numeric"
    assert x.reference_missing_rate == 0.0
    assert x.type_violation_count == 0
    assert x.out_of_range_share is not None and x.out_of_range_share < 0.01
    c = report.column("c")
    assert c.kind == "categorical"
    assert c.unseen_share == 0.0
    body = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert body["flagged"] is False
    assert body["thresholds"] == {
        "alpha": 0.05,
        "missing_increase": 0.05,
        "out_of_range": 0.01,
        "unseen": 0.01,
    }
    assert "unseen_share" in body["columns"][2] and "out_of_range_share" not in body["columns"][2]


def test_a_significant_missing_rate_increase_of_at_least_five_points_is_flagged() -> None:
    reference, current = _clean(2000, 0), _clean(2000, 1).astype({"k": float})
    reference.loc[:99, "x"] = np.nan  # 5% missing
    current.loc[:299, "x"] = np.nan  # 15% missing
    current.loc[:59, "c"] = None  # 3%: significant but below the 5-point floor
    current.loc[:5, "k"] = np.inf  # inf counts as missing for numeric columns
    report = data_quality(reference, current)
    x = report.column("x")
    assert x.reference_missing == 100 and x.current_missing == 300
    assert x.missing_rate_change == pytest.approx(0.10)
    expected = two_proportion_p_values(
        np.array([100]), np.array([2000]), np.array([300]), np.array([2000])
    )[0]
    assert x.missing_p_value == pytest.approx(expected)
    assert x.flagged and x.reasons == ["missing_rate_increase"]
    c = report.column("c")
    assert c.current_missing_rate == pytest.approx(0.03)
    assert c.missing_p_value < 0.05 and not c.flagged
    assert report.column("k").current_missing == 6
    assert report.flagged_columns == ["x"]


def test_a_large_but_insignificant_missing_increase_is_not_flagged() -> None:
    reference = pd.DataFrame({"x": [1.0] * 19 + [np.nan]})
    current = pd.DataFrame({"x": [1.0] * 17 + [np.nan] * 3})
    report = data_quality(reference, current)
    x = report.column("x")
    assert x.missing_rate_change == pytest.approx(0.10)
    assert x.missing_p_value > 0.05
    assert not x.flagged


def test_out_of_range_share_counts_current_values_outside_the_reference_min_max() -> None:
    reference = pd.DataFrame({"x": np.linspace(0.0, 10.0, 101)})
    values = np.linspace(1.0, 9.0, 200)
    values[:3] = [-0.5, 10.5, 11.0]
    values[3:5] = np.nan  # missing values are not in the denominator
    current = pd.DataFrame({"x": values})
    x = data_quality(reference, current).column("x")
    assert (x.reference_min, x.reference_max) == (0.0, 10.0)
    assert x.out_of_range_count == 3
    assert x.out_of_range_share == pytest.approx(3 / 198)
    assert x.out_of_range_expected == pytest.approx(2 * 198 / 102)
    # 3 values beyond the range of a 101-value reference is what chance gives: not flagged
    assert x.out_of_range_p_value is not None and x.out_of_range_p_value > 0.3
    assert x.reasons == []
    values[5:45] = np.linspace(20.0, 30.0, 40)  # 43 values far outside: a real change
    moved = data_quality(reference, pd.DataFrame({"x": values})).column("x")
    assert moved.out_of_range_count == 43
    assert moved.out_of_range_p_value is not None and moved.out_of_range_p_value < 1e-6
    assert moved.reasons == ["out_of_range"]
    strict = data_quality(reference, pd.DataFrame({"x": values}), out_of_range_threshold=0.3)
    assert not strict.column("x").flagged  # the share floor still applies


def test_unseen_category_share_counts_non_null_current_values_absent_from_the_reference() -> None:
    reference = pd.DataFrame({"c": ["a", "b", "c", None] * 25})
    current = pd.DataFrame({"c": ["a"] * 90 + ["new"] * 6 + ["newer"] * 2 + [None] * 2})
    c = data_quality(reference, current).column("c")
    assert c.unseen_count == 8
    assert c.unseen_share == pytest.approx(8 / 98)
    assert c.unseen_examples == ["new", "newer"]
    assert c.reasons == ["unseen_categories"]


def test_forced_categorical_integer_column_reports_unseen_codes() -> None:
    reference = pd.DataFrame({"code": [1, 2, 3] * 10})
    current = pd.DataFrame({"code": [1, 2, 3, 4] * 10})
    c = data_quality(reference, current, categorical=["code"]).column("code")
    assert c.kind == "categorical"
    assert c.unseen_share == pytest.approx(0.25)
    assert c.unseen_examples == ["4"]


def test_text_in_a_column_that_is_numeric_in_the_reference_is_a_type_violation() -> None:
    reference = pd.DataFrame({"x": np.arange(100, dtype=float)})
    raw = [str(v) for v in range(90)] + ["n/a", "oops", "oops", "1,5", None, "7", "8", "9", "inf"]
    current = pd.DataFrame({"x": pd.Series([*raw, "x"], dtype=object)})  # as read from a CSV
    x = data_quality(reference, current, max_examples=3).column("x")
    assert x.type_violation_count == 5  # "n/a", "oops" twice, "1,5", "x"
    assert x.type_violation_share == pytest.approx(5 / 99)
    assert x.type_violation_examples == ["n/a", "oops", "1,5"]
    assert x.current_missing == 2  # None and "inf" (non-finite counts as missing)
    assert x.out_of_range_count == 0  # the parsed numbers are checked against the range
    assert "type_violations" in x.reasons
    assert x.flagged


def test_a_bool_column_where_numbers_were_expected_is_all_violations() -> None:
    reference = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]})
    current = pd.DataFrame({"x": [True, False, True, False]})
    x = data_quality(reference, current).column("x")
    assert x.type_violation_count == 4 and x.type_violation_share == 1.0
    assert x.type_violation_examples == ["True", "False"]


def test_quality_counts_in_the_verdict_only_when_asked() -> None:
    reference = pd.DataFrame({"x": np.arange(100.0)})
    current = pd.DataFrame({"x": np.arange(100.0) + 50})
    assert data_quality(reference, current).flagged
    assert not data_quality(reference, current).affects_verdict
    counted = data_quality(reference, current, count_in_verdict=True)
    assert counted.affects_verdict
    assert counted.to_dict()["affects_verdict"] is True


def test_a_numeric_column_without_reference_values_has_no_range() -> None:
    reference = pd.DataFrame({"x": [np.nan, np.nan, np.nan]})
    current = pd.DataFrame({"x": [1.0, 2.0, np.nan]})
    x = data_quality(reference, current).column("x")
    assert x.reference_min is None and x.out_of_range_share is None
    body = x.to_dict()
    assert body["reference_min"] is None and body["out_of_range_count"] is None
    json.dumps(body, allow_nan=False)


def test_a_million_row_frame_is_checked_quickly() -> None:
    n = 1_000_000
    rng = np.random.default_rng(2)
    reference = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b"], n)})
    current = pd.DataFrame(
        {
            "x": pd.Series(np.tile(rng.normal(size=1000).astype(str), n // 1000), dtype=object),
            "c": rng.choice(["a", "b", "z"], n, p=[0.49, 0.49, 0.02]),
        }
    )
    report = data_quality(reference, current)
    assert report.column("x").type_violation_count == 0
    assert report.column("c").unseen_share == pytest.approx(0.02, abs=0.002)


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def test_invalid_inputs_raise_errors_naming_what_was_expected() -> None:
    frame = _clean(10, 0)
    with pytest.raises(SchemaError, match=r"current frame has no column\(s\) \['x'\]"):
        data_quality(frame, frame.drop(columns="x"))
    with pytest.raises(InvalidInputError, match="has no rows"):
        data_quality(frame, frame.iloc[:0])
    with pytest.raises(InvalidInputError, match=r"alpha must be a float in \(0, 1\)"):
        data_quality(frame, frame, alpha=1.0)
    with pytest.raises(InvalidInputError, match=r"missing_increase must be a float in \[0, 1\]"):
        data_quality(frame, frame, missing_increase=-0.1)
    with pytest.raises(InvalidInputError, match="must be a pandas DataFrame"):
        data_quality(frame, {"x": [1]})  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="categorical names"):
        data_quality(frame, frame, categorical=["nope"])
    with pytest.raises(InvalidInputError, match="count_in_verdict"):
        data_quality(frame, frame, count_in_verdict=1)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="no column 'zz'"):
        data_quality(frame, frame).column("zz")


# --------------------------------------------------------------------------------------------
# Sample-size-aware flags: chance in small windows does not flag, real problems do
# --------------------------------------------------------------------------------------------

_LEVELS = np.array([f"v{k:02d}" for k in range(50)])
_ZIPF = 1.0 / np.arange(1, 51) ** 0.8
_ZIPF /= _ZIPF.sum()


def _window(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Two continuous columns and a 50-level column whose rarest levels hold ~0.5% each."""
    return pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "e": rng.exponential(size=n),
            "c": rng.choice(_LEVELS, n, p=_ZIPF),
        }
    )


def test_clean_small_windows_are_not_flagged_for_rare_categories_or_a_few_outliers() -> None:
    flagged, share_rule = 0, 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        report = data_quality(_window(500, rng), _window(500, rng), alpha=0.01)
        flagged += report.flagged
        share_rule += any(
            (c.unseen_share or 0.0) >= 0.01 or (c.out_of_range_share or 0.0) >= 0.01
            for c in report.columns
        )
    assert share_rule >= 15  # a share floor alone would flag these clean windows
    assert flagged <= 3  # the tests: at most the family-wise alpha (1%), with slack


def test_real_problems_in_small_windows_are_still_flagged() -> None:
    rng = np.random.default_rng(21)
    reference, clean = _window(500, rng), _window(500, rng)
    missing = clean.copy()
    missing.loc[rng.random(500) < 0.3, "x"] = np.nan
    assert data_quality(reference, missing).column("x").reasons == ["missing_rate_increase"]
    far = clean.copy()
    far.loc[:24, "e"] = far["e"].max() + 100.0  # 5% of values far beyond the range
    e = data_quality(reference, far).column("e")
    assert e.reasons == ["out_of_range"]
    assert e.out_of_range_count is not None and e.out_of_range_count >= 25
    new = clean.copy()
    new.loc[:24, "c"] = "brand-new"  # 5% in a category the reference never had
    c = data_quality(reference, new).column("c")
    assert c.reasons == ["unseen_categories"]
    assert c.unseen_examples is not None and c.unseen_examples[0] == "brand-new"
    assert c.unseen_p_value is not None and c.unseen_p_value < 1e-3
    text = clean.astype({"x": object})
    text.loc[3, "x"] = "n/a"
    assert data_quality(reference, text).column("x").reasons == ["type_violations"]


def test_values_in_a_column_the_reference_never_filled_are_unseen_without_a_chance_model() -> None:
    reference = pd.DataFrame({"c": [None] * 50}, dtype=object)
    current = pd.DataFrame({"c": ["a"] * 10 + [None] * 40}, dtype=object)
    c = data_quality(reference, current, categorical=["c"]).column("c")
    assert c.unseen_share == 1.0 and c.unseen_p_value == 0.0
    assert c.reasons == ["unseen_categories"]


def test_out_of_range_p_value_is_the_chance_under_random_splits() -> None:
    rng = np.random.default_rng(5)
    n, m, trials = 60, 40, 20_000
    pooled = rng.random((trials, n + m)).argsort(axis=1)  # random splits of distinct values
    reference, current = pooled[:, :n], pooled[:, n:]
    low, high = reference.min(axis=1, keepdims=True), reference.max(axis=1, keepdims=True)
    outside = ((current < low) | (current > high)).sum(axis=1)
    assert outside.mean() == pytest.approx(2 * m / (n + 1), rel=0.05)
    for k in (1, 3, 5, 8):
        expected = out_of_range_p_value(k, n, m)
        assert (outside >= k).mean() == pytest.approx(expected, abs=0.01)
    assert out_of_range_p_value(0, n, m) == 1.0


def test_unseen_p_value_is_the_chance_under_random_splits() -> None:
    rng = np.random.default_rng(6)
    pooled_counts = np.array([400, 300, 5, 3, 2, 1, 1, 1])  # a few rare categories
    labels = np.repeat(np.arange(pooled_counts.size), pooled_counts)
    n = m = labels.size // 2
    unseen = np.empty(20_000, dtype=np.int64)
    for t in range(unseen.size):
        split = rng.permutation(labels)
        seen = np.zeros(pooled_counts.size, dtype=bool)
        seen[split[:n]] = True
        unseen[t] = np.sum(~seen[split[n:]])
    expected, _ = unseen_p_value(1, pooled_counts, n, m)
    assert unseen.mean() == pytest.approx(expected, rel=0.05)
    for k in (2, 3, 5):
        _, p = unseen_p_value(k, pooled_counts, n, m)
        # independence of the categories makes the p-value conservative, never much smaller
        assert p >= (unseen >= k).mean() - 0.01
        assert p == pytest.approx((unseen >= k).mean(), abs=0.03)
