"""Specification of closedloop.domain.quality: per-column data-quality signals and flags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from closedloop.domain.quality import data_quality, two_proportion_p_values
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
    assert x.reasons == ["out_of_range"]
    assert not data_quality(reference, current, out_of_range_threshold=0.02).column("x").flagged


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
