"""Specification of closedloop.domain.checks.drift: tests, corrections, floors and the report."""

from __future__ import annotations

import ast
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from closedloop.domain.checks import drift
from closedloop.domain.checks import stats as closedloop_stats
from closedloop.domain.checks.distances import js_distance, wasserstein_normalised
from closedloop.domain.checks.drift import DriftReport, adjust_p_values, compare_frames
from closedloop.domain.checks.stats import chi2_homogeneity, psi
from closedloop.errors import InvalidInputError, SchemaError

SIZES = [(5, 7), (40, 40), (300, 211), (1000, 999), (2500, 10_000), (12_000, 7_000)]


def _numeric_frames(n: int, m: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def make(size: int, shift: float) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "continuous": rng.normal(shift, 1.0, size),
                "ties": np.round(rng.normal(shift, 1.0, size), 1),
                "small_ints": rng.integers(0, 4, size),
                "lognormal": rng.lognormal(shift, 1.0, size).astype(np.float32),
            }
        )

    return make(n, 0.0), make(m, 0.1)


# --------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), SIZES)
def test_ks_p_values_equal_scipy_for_ties_and_unequal_sizes(n: int, m: int) -> None:
    reference, current = _numeric_frames(n, m, seed=n + m)
    report = compare_frames(reference, current)
    for name in reference.columns:
        expected = stats.ks_2samp(reference[name].to_numpy(), current[name].to_numpy())
        result = report.column(name)
        assert result.kind == "numeric"
        assert result.test == "ks"
        assert result.statistic == pytest.approx(expected.statistic, rel=1e-12, abs=1e-12)
        assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)


def test_ks_drops_nulls_and_infinities_per_column_before_testing() -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=400)
    cur = rng.normal(0.3, size=350)
    ref_with_gaps, cur_with_gaps = ref.copy(), cur.copy()
    ref_with_gaps[::7] = np.nan
    cur_with_gaps[::5] = np.inf
    reference = pd.DataFrame({"x": ref_with_gaps, "clean": ref})
    current = pd.DataFrame({"x": cur_with_gaps, "clean": cur})
    report = compare_frames(reference, current)
    expected = stats.ks_2samp(ref[~np.isnan(ref_with_gaps)], cur[np.isfinite(cur_with_gaps)])
    result = report.column("x")
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.n_reference == int(np.sum(~np.isnan(ref_with_gaps)))
    assert result.n_current == int(np.sum(np.isfinite(cur_with_gaps)))
    assert report.column("clean").n_reference == 400


def test_ks_handles_nullable_integer_columns() -> None:
    reference = pd.DataFrame({"k": pd.array([1, 2, None, 3, 4, 5, 6, 2], dtype="Int64")})
    current = pd.DataFrame({"k": pd.array([3, 4, 5, None, 6, 7], dtype="Int64")})
    result = compare_frames(reference, current).column("k")
    expected = stats.ks_2samp([1, 2, 3, 4, 5, 6, 2], [3, 4, 5, 6, 7])
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9)


@settings(max_examples=40, deadline=None)
@example(a=[0, 0, 0, 0, 0], b=[0, 0, 0, 0, 1])  # scipy's exact branch fails: asymptotic fallback
@given(
    st.lists(st.integers(-3, 3), min_size=1, max_size=60),
    st.lists(st.integers(-3, 3), min_size=1, max_size=60),
)
def test_ks_statistic_and_p_value_equal_scipy_for_arbitrary_tied_samples(
    a: list[int], b: list[int]
) -> None:
    # closedloop falls back to the asymptotic p-value silently where scipy warns
    result = compare_frames(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).column("x")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful")
        expected = stats.ks_2samp(a, b)
    assert result.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)


def test_ks_is_the_same_when_columns_are_processed_in_several_blocks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference, current = _numeric_frames(500, 450, seed=3)
    whole = compare_frames(reference, current).to_dict()
    monkeypatch.setattr(drift, "_BLOCK_ELEMENTS", 1000)  # one column per block
    assert compare_frames(reference, current).to_dict() == whole


# --------------------------------------------------------------------------------------------
# Chi-square, PSI, TVD
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [30, 1000, 50_000])
def test_chi2_statistic_and_p_value_equal_scipy_chi2_contingency(n: int) -> None:
    rng = np.random.default_rng(n)
    reference = pd.DataFrame({"c": rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1])})
    current = pd.DataFrame({"c": rng.choice(["a", "b", "c", "e"], n + 13, p=[0.3, 0.3, 0.3, 0.1])})
    result = compare_frames(reference, current).column("c")
    ref_counts = reference["c"].value_counts()
    cur_counts = current["c"].value_counts()
    table = pd.concat([ref_counts, cur_counts], axis=1).fillna(0).to_numpy().T
    expected = stats.chi2_contingency(table, correction=False)
    assert result.kind == "categorical"
    assert result.test == "chi2"
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert result.unseen_categories == ["e"]
    freq = table / table.sum(axis=1, keepdims=True)
    assert result.tvd == pytest.approx(0.5 * np.abs(freq[0] - freq[1]).sum())


def test_chi2_with_a_single_category_is_not_drift() -> None:
    assert chi2_homogeneity(np.array([[10.0], [20.0]])) == (0.0, 1.0)
    result = compare_frames(pd.DataFrame({"c": ["a"] * 5}), pd.DataFrame({"c": ["a"] * 9}))
    assert result.column("c").p_value == 1.0
    assert not result.drifted


def test_nulls_are_their_own_category_and_unseen_categories_are_reported() -> None:
    reference = pd.DataFrame({"c": ["x", "y"] * 500})
    current = pd.DataFrame({"c": ["x", "y", None, "z"] * 250})
    result = compare_frames(reference, current).column("c")
    assert result.drifted
    assert set(result.unseen_categories or []) == {"<null>", "z"}
    assert result.n_current == 1000
    assert result.tvd == pytest.approx(0.5)


def test_unseen_categories_are_capped_at_20_most_frequent_first() -> None:
    reference = pd.DataFrame({"c": ["base"] * 100})
    new = [f"new{i:02d}" for i in range(30) for _ in range(i + 1)]
    current = pd.DataFrame({"c": ["base"] * 100 + new})
    unseen = compare_frames(reference, current).column("c").unseen_categories
    assert unseen is not None
    assert len(unseen) == 20
    assert unseen[0] == "new29"
    assert unseen[-1] == "new10"


def test_psi_of_hand_computed_bins() -> None:
    # p = (0.5, 0.5), q = (0.25, 0.75): (-0.25) ln(0.5) + 0.25 ln(1.5) = 0.25 ln 3
    assert psi(np.array([50, 50]), np.array([25, 75])) == pytest.approx(0.25 * math.log(3))
    # an empty reference bin is raised to eps = 1e-4
    expected = (0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert psi(np.array([10, 0]), np.array([5, 5])) == pytest.approx(expected)
    assert psi(np.array([3, 4, 5]), np.array([30, 40, 50])) == pytest.approx(0.0)


def test_numeric_psi_uses_reference_quantile_bins() -> None:
    # reference 1..10 with 2 bins: edge at the median 5.5 -> reference (5, 5);
    # current has 6 values <= 5.5 and 2 above -> (0.75, 0.25) vs (0.5, 0.5) = 0.25 ln 3
    reference = pd.DataFrame({"x": np.arange(1.0, 11.0)})
    current = pd.DataFrame({"x": [1.0, 2, 3, 4, 5, 5.5, 9, 10]})
    result = compare_frames(reference, current, psi_bins=2).column("x")
    assert result.psi == pytest.approx(0.25 * math.log(3))


def test_categorical_psi_is_computed_over_categories() -> None:
    reference = pd.DataFrame({"c": ["a"] * 50 + ["b"] * 50})
    current = pd.DataFrame({"c": ["a"] * 25 + ["b"] * 75})
    assert compare_frames(reference, current).column("c").psi == pytest.approx(0.25 * math.log(3))


# --------------------------------------------------------------------------------------------
# Multiple testing
# --------------------------------------------------------------------------------------------


def test_bonferroni_multiplies_by_the_number_of_tests_and_caps_at_one() -> None:
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005, 0.6], "bonferroni")
    np.testing.assert_allclose(adjusted, [0.05, 0.2, 0.15, 0.025, 1.0])


def test_benjamini_hochberg_matches_hand_computed_step_up_values() -> None:
    # sorted: 0.005*4/1=0.02, 0.01*4/2=0.02, 0.03*4/3=0.04, 0.04*4/4=0.04
    np.testing.assert_allclose(
        adjust_p_values([0.01, 0.04, 0.03, 0.005], "bh"), [0.02, 0.04, 0.04, 0.02]
    )
    # step-up monotonicity: 0.09, 0.0465, 0.032 -> all 0.032
    np.testing.assert_allclose(adjust_p_values([0.03, 0.031, 0.032], "bh"), [0.032, 0.032, 0.032])
    np.testing.assert_allclose(adjust_p_values([0.9, 0.8], "bh"), [0.9, 0.9])
    assert adjust_p_values([], "bh").size == 0


def test_report_carries_the_adjusted_p_values_of_the_tested_columns() -> None:
    reference, current = _numeric_frames(300, 300, seed=11)
    report = compare_frames(reference, current, correction="bh")
    raw = [c.p_value for c in report.columns]
    expected = adjust_p_values(np.array(raw, dtype=float), "bh")
    got = np.array([c.p_value_adjusted for c in report.columns], dtype=float)
    np.testing.assert_allclose(got, expected)
    assert report.correction == "bh"


# --------------------------------------------------------------------------------------------
# Verdicts: no false alarms, planted drift found, effect floor
# --------------------------------------------------------------------------------------------


def _mixed_frame(n: int, seed: int, *, shift: float = 0.0, freq: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {f"num{i}": rng.normal(0.0, 1.0, n) for i in range(5)}
    data["num2"] = rng.normal(shift, 1.0, n)
    probs = [0.2, 0.3, 0.5] if freq else [0.5, 0.3, 0.2]
    data["plan"] = rng.choice(["basic", "pro", "team"], n, p=probs)
    data["region"] = rng.choice(["eu", "us", "apac"], n, p=[0.4, 0.4, 0.2])
    data["active"] = rng.random(n) < 0.3
    return pd.DataFrame(data)


@pytest.mark.parametrize("n", [1000, 200_000])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_same_distribution_with_different_seeds_is_not_flagged(n: int, seed: int) -> None:
    report = compare_frames(_mixed_frame(n, seed), _mixed_frame(n, seed + 100))
    assert not report.drifted, report.to_dict()
    assert report.share_drifted == 0.0


@pytest.mark.parametrize("correction", ["bonferroni", "bh"])
def test_planted_shift_flags_exactly_the_shifted_columns(correction: str) -> None:
    reference = _mixed_frame(5000, seed=1)
    current = _mixed_frame(5000, seed=2, shift=0.5, freq=True)
    report = compare_frames(reference, current, correction=correction)  # type: ignore[arg-type]
    assert report.drifted
    assert sorted(report.drifted_columns) == ["num2", "plan"]
    assert report.n_drifted == 2
    assert report.share_drifted == pytest.approx(2 / 8)


def test_a_0_2_std_shift_is_flagged_at_5000_rows() -> None:
    rng = np.random.default_rng(5)
    reference = pd.DataFrame({"x": rng.normal(0.0, 1.0, 5000)})
    current = pd.DataFrame({"x": rng.normal(0.2, 1.0, 5000)})
    result = compare_frames(reference, current).column("x")
    assert result.drifted
    assert result.statistic is not None and result.statistic > drift.DEFAULT_KS_FLOOR


def test_a_trivial_shift_in_a_huge_window_is_significant_but_below_the_effect_floor() -> None:
    rng = np.random.default_rng(9)
    reference = pd.DataFrame({"x": rng.normal(0.0, 1.0, 1_000_000)})
    current = pd.DataFrame({"x": rng.normal(0.02, 1.0, 1_000_000)})
    result = compare_frames(reference, current).column("x")
    assert result.p_value_adjusted is not None and result.p_value_adjusted < 0.05
    assert result.statistic is not None and result.statistic < drift.DEFAULT_KS_FLOOR
    assert not result.drifted
    assert compare_frames(reference, current, ks_floor=0.0).column("x").drifted


def test_a_small_frequency_change_in_a_huge_window_is_below_the_tvd_floor() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"c": rng.choice(["a", "b"], 1_000_000, p=[0.5, 0.5])})
    current = pd.DataFrame({"c": rng.choice(["a", "b"], 1_000_000, p=[0.51, 0.49])})
    result = compare_frames(reference, current).column("c")
    assert result.p_value is not None and result.p_value < 1e-10
    assert not result.drifted
    assert compare_frames(reference, current, chi2_floor=0.0).column("c").drifted


# --------------------------------------------------------------------------------------------
# Severity and ranking
# --------------------------------------------------------------------------------------------


def _small_shift_frames(n: int = 70_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Large windows, small changes: a 0.03-sd shift of a normal column (``D`` = 0.012) and a
    1.5-point share move of a two-category column (TVD = 0.015), both significant and both
    below the 0.05 floors; ``same`` does not change at all."""
    rng = np.random.default_rng(5)
    quantiles = stats.norm.ppf((np.arange(n) + 0.5) / n)
    half = n // 2
    moved = int(0.015 * n)
    reference = pd.DataFrame(
        {
            "amount": rng.permutation(quantiles),
            "plan": rng.permutation(["basic"] * half + ["pro"] * (n - half)),
            "same": rng.permutation(quantiles),
        }
    )
    current = pd.DataFrame(
        {
            "amount": rng.permutation(quantiles + 0.03),
            "plan": rng.permutation(["basic"] * (half + moved) + ["pro"] * (n - half - moved)),
            "same": rng.permutation(quantiles),
        }
    )
    return reference, current


def test_a_significant_change_below_the_floor_is_minor_and_never_an_alarm() -> None:
    report = compare_frames(*_small_shift_frames())
    amount, plan, same = (report.column(name) for name in ("amount", "plan", "same"))
    assert amount.statistic == pytest.approx(2 * stats.norm.cdf(0.015) - 1, abs=1e-4)
    assert plan.tvd == pytest.approx(0.015)
    for column in (amount, plan):
        assert column.p_value_adjusted is not None and column.p_value_adjusted < 1e-3
        assert column.relative_effect is not None and column.relative_effect < 0.5
        assert (column.drifted, column.severity) == (False, "minor")
    assert (same.p_value, same.severity) == (1.0, "stable")
    assert not report.drifted and report.drifted_columns == []
    assert report.minor_columns == ["plan", "amount"]  # TVD 0.015 before D 0.012
    body = report.to_dict()
    assert [(c["column"], c["severity"], c["drifted"]) for c in body["columns"]] == [
        ("plan", "minor", False),
        ("amount", "minor", False),
        ("same", "stable", False),
    ]
    assert DriftReport.from_dict(body).to_dict() == body


def test_a_shift_at_or_above_the_floor_is_drift() -> None:
    report = compare_frames(_mixed_frame(5000, seed=1), _mixed_frame(5000, seed=2, shift=0.5))
    column = report.column("num2")
    assert column.statistic is not None and column.statistic >= column.effect_floor
    assert (column.drifted, column.severity) == (True, "drift")
    assert column.relative_effect == pytest.approx(column.statistic / 0.05)
    assert report.to_dict()["columns"][0]["severity"] == "drift"


def test_an_untested_column_is_stable() -> None:
    reference = pd.DataFrame({"x": [np.nan, np.nan, np.nan], "y": [1.0, 2.0, 3.0]})
    current = pd.DataFrame({"x": [1.0, 2.0], "y": [1.0, 2.0]})
    report = compare_frames(reference, current)
    x = report.column("x")
    assert (x.p_value, x.relative_effect, x.severity) == (None, None, "stable")
    assert [c.column for c in report.columns] == ["y", "x"]  # untested columns last


def test_columns_are_ranked_drift_then_minor_then_stable_by_relative_effect() -> None:
    reference, current = _small_shift_frames()
    rng = np.random.default_rng(9)
    for name, shift in (("mid", 0.3), ("big", 1.0)):
        reference[name] = rng.normal(0.0, 1.0, len(reference))
        current[name] = rng.normal(shift, 1.0, len(current))
    report = compare_frames(reference, current)
    assert [(c.column, c.severity) for c in report.columns] == [
        ("big", "drift"),
        ("mid", "drift"),
        ("plan", "minor"),
        ("amount", "minor"),
        ("same", "stable"),
    ]
    assert report.drifted_columns == ["big", "mid"]
    shuffled = {**report.to_dict(), "columns": report.to_dict()["columns"][::-1]}
    assert [c.column for c in DriftReport.from_dict(shuffled).columns] == [
        c.column for c in report.columns
    ]


def test_relative_effect_is_the_raw_effect_when_the_floor_is_zero() -> None:
    reference, current = _mixed_frame(2000, seed=1), _mixed_frame(2000, seed=2, shift=0.5)
    report = compare_frames(reference, current, ks_floor=0.0, chi2_floor=0.0)
    num2 = report.column("num2")
    assert num2.relative_effect == num2.statistic


# --------------------------------------------------------------------------------------------
# Columns, kinds and schema errors
# --------------------------------------------------------------------------------------------


def test_column_kinds_follow_dtypes_and_categorical_forces_chi2() -> None:
    frame = pd.DataFrame(
        {
            "f": [0.1, 0.2, 0.3],
            "i": [1, 2, 3],
            "b": [True, False, True],
            "s": ["a", "b", "c"],
            "cat": pd.Categorical(["a", "b", "a"]),
            "str": pd.array(["x", "y", None], dtype="string"),
        }
    )
    report = compare_frames(frame, frame)
    kinds = {c.column: c.kind for c in report.columns}
    assert kinds == {
        "f": "numeric",
        "i": "numeric",
        "b": "categorical",
        "s": "categorical",
        "cat": "categorical",
        "str": "categorical",
    }
    forced = compare_frames(frame, frame, categorical=["i"]).column("i")
    assert (forced.kind, forced.test) == ("categorical", "chi2")


def test_missing_column_in_current_raises_schema_error_naming_it() -> None:
    reference = pd.DataFrame({"a": [1.0, 2.0], "income": [3.0, 4.0]})
    current = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(SchemaError, match="income"):
        compare_frames(reference, current)


def test_unknown_requested_column_raises_schema_error_naming_it() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(SchemaError, match="nope"):
        compare_frames(frame, frame, columns=["a", "nope"])
    with pytest.raises(SchemaError, match="ghost"):
        compare_frames(frame, frame, categorical=["ghost"])


def test_extra_current_columns_are_ignored_and_columns_selects_a_subset() -> None:
    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]})
    current = reference.assign(extra=[9, 9, 9])
    assert [c.column for c in compare_frames(reference, current).columns] == ["a", "b"]
    subset = compare_frames(reference, current, columns=["b"])
    assert [c.column for c in subset.columns] == ["b"]


def test_numeric_reference_column_with_text_in_current_raises_schema_error() -> None:
    reference = pd.DataFrame({"age": [1.0, 2.0]})
    current = pd.DataFrame({"age": ["old", "young"]})
    with pytest.raises(SchemaError, match="age"):
        compare_frames(reference, current)


def test_datetime_columns_are_rejected_unless_forced_categorical() -> None:
    frame = pd.DataFrame({"when": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    with pytest.raises(SchemaError, match="when"):
        compare_frames(frame, frame)
    assert compare_frames(frame, frame, categorical=["when"]).column("when").p_value == 1.0


def test_empty_frames_raise_invalid_input() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(InvalidInputError, match="reference frame has no rows"):
        compare_frames(frame.iloc[:0], frame)
    with pytest.raises(InvalidInputError, match="current frame has no rows"):
        compare_frames(frame, frame.iloc[:0])
    with pytest.raises(InvalidInputError, match="no columns"):
        compare_frames(pd.DataFrame(index=[0, 1]), frame)


def test_an_all_null_numeric_column_is_reported_untested_without_nan() -> None:
    reference = pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [np.nan] * 3})
    current = pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [1.0, np.nan, 2.0]})
    report = compare_frames(reference, current)
    result = report.column("empty")
    assert (result.statistic, result.p_value, result.p_value_adjusted) == (None, None, None)
    assert not result.drifted
    assert result.note is not None and "reference" in result.note
    assert report.column("a").p_value_adjusted == 1.0  # only one column was tested
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": -3}, "alpha must be a float in (0, 1). Got -3 instead."),
        ({"alpha": 1.0}, "alpha must be a float in (0, 1). Got 1.0 instead."),
        ({"alpha": True}, "alpha must be a float in (0, 1). Got True instead."),
        ({"ks_floor": 2}, "ks_floor must be a float in [0, 1]. Got 2 instead."),
        ({"chi2_floor": "x"}, "chi2_floor must be a float in [0, 1]. Got 'x' instead."),
        ({"psi_bins": 1}, "psi_bins must be an integer >= 2. Got 1 instead."),
        ({"correction": "holm"}, "correction must be one of ['bonferroni', 'bh']."),
    ],
)
def test_invalid_parameters_raise_sklearn_style_messages(
    kwargs: dict[str, object], message: str
) -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(InvalidInputError) as info:
        compare_frames(frame, frame, **kwargs)  # type: ignore[arg-type]
    assert message in info.value.message


def test_non_frames_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="reference must be a pandas DataFrame"):
        compare_frames([1, 2], pd.DataFrame({"a": [1]}))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def test_to_dict_has_the_public_shape_and_is_strict_json() -> None:
    report = compare_frames(
        _mixed_frame(2000, seed=1), _mixed_frame(2000, seed=2, shift=0.5, freq=True)
    )
    body = report.to_dict()
    text = json.dumps(body, allow_nan=False)
    assert list(body) == [
        "drifted",
        "n_reference",
        "n_current",
        "alpha",
        "correction",
        "share_drifted",
        "n_drifted",
        "columns",
        "method",
    ]
    numeric = next(c for c in body["columns"] if c["kind"] == "numeric")
    assert list(numeric) == [
        "column",
        "kind",
        "test",
        "statistic",
        "p_value",
        "p_value_adjusted",
        "threshold",
        "effect_floor",
        "psi",
        "drifted",
        "severity",
        "n_reference",
        "n_current",
    ]
    categorical = next(c for c in body["columns"] if c["kind"] == "categorical")
    assert {"tvd", "unseen_categories"} <= set(categorical)
    assert categorical["test"] == "chi2"
    assert (body["drifted"], body["n_reference"], body["n_current"]) == (True, 2000, 2000)

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    assert plain(body)
    assert json.loads(text) == body


def test_from_dict_round_trips_to_dict() -> None:
    report = compare_frames(
        _mixed_frame(500, seed=1), _mixed_frame(500, seed=2, shift=0.5, freq=True)
    )
    again = DriftReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.to_dict() == report.to_dict()
    assert again == report


def test_from_dict_names_a_missing_key() -> None:
    with pytest.raises(InvalidInputError, match="'columns'"):
        DriftReport.from_dict({"drifted": False, "n_reference": 1, "n_current": 1})


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-4, 4) | st.floats(-3, 3), min_size=1, max_size=300),
    st.lists(st.integers(-4, 4) | st.floats(-3, 3), min_size=1, max_size=300),
    st.integers(2, 9),
)
def test_branch_and_bound_ks_statistic_equals_scipy_exactly(
    a: list[float], b: list[float], step: int
) -> None:
    sa, sb = np.sort(np.array(a, dtype=np.float64)), np.sort(np.array(b, dtype=np.float64))
    old = (closedloop_stats._KS_DIRECT_MAX_N, closedloop_stats._KS_GRID_STEP)
    try:
        closedloop_stats._KS_DIRECT_MAX_N, closedloop_stats._KS_GRID_STEP = 0, step
        d = closedloop_stats.ks_sorted(sa, sb)
    finally:
        closedloop_stats._KS_DIRECT_MAX_N, closedloop_stats._KS_GRID_STEP = old
    # scipy rounds D to the lattice h / lcm(n, m) in its exact branch: equal up to rounding
    with warnings.catch_warnings():  # scipy warns about its own p-value on tiny samples
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = stats.ks_2samp(sa, sb).statistic
    assert d == pytest.approx(expected, abs=1e-12)


def test_report_says_which_method_ran_and_round_trips_it() -> None:
    report = compare_frames(pd.DataFrame({"x": [1.0, 2.0, 3.0]}), pd.DataFrame({"x": [2.0, 4.0]}))
    body = report.to_dict()
    assert body["method"] == "exact"
    assert DriftReport.from_dict(body).method == "exact"


# --------------------------------------------------------------------------------------------
# KS and chi-square tails without scipy.stats (closedloop.domain.checks.stats)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "m"), [(4, 7), (9, 6), (30, 45), (61, 100), (128, 96), (333, 200)])
@pytest.mark.parametrize("shift", [0.0, 0.4, 1.5])
def test_exact_ks_p_value_for_unequal_sizes_is_scipys_to_the_last_bit(
    n: int, m: int, shift: float
) -> None:
    rng = np.random.default_rng(n * m)
    for ties in (False, True):
        a, b = rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, m)
        if ties:
            a, b = np.round(a), np.round(b)
        expected = stats.ks_2samp(a, b, method="exact")
        d, p = closedloop_stats.ks_two_sample_p(n, m, float(expected.statistic))
        assert d == expected.statistic
        assert p == expected.pvalue


def test_the_statistics_use_no_private_scipy_api() -> None:
    tree = ast.parse(Path(closedloop_stats.__file__).read_text(encoding="utf-8"))
    imported = [
        f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    scipy_names = [name for name in imported if name.startswith("scipy")]
    assert scipy_names == ["scipy.stats.kstwo"]
    assert all(not part.startswith("_") for name in scipy_names for part in name.split("."))


@pytest.mark.parametrize("n", [141, 500, 4421, 50_000, 250_000])
@pytest.mark.parametrize("nx2", [0.05, 0.5, 1.0, 2.0, 2.2, 5.0, 40.0, 300.0])
def test_kolmogorov_tail_equals_scipy_kstwo_in_every_regime(n: int, nx2: float) -> None:
    # n * x^2 below 2.2: 1 - cdf (Durbin matrix or Pelz-Good); above: 2 * smirnov(n, x)
    x = math.sqrt(nx2 / n)
    expected = float(stats.kstwo.sf(x, n))
    assert closedloop_stats.kolmogorov_sf(n, x) == pytest.approx(expected, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("n", [3, 20, 140])
def test_kolmogorov_tail_for_small_n_equals_scipy(n: int) -> None:
    for x in np.linspace(0.01, 0.99, 25):
        expected = float(stats.kstwo.sf(x, n))
        got = closedloop_stats.kolmogorov_sf(n, float(x))
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 9, 48, 49, 999, 1000])
def test_chi2_tail_equals_scipy_deep_into_the_tail(dof: int) -> None:
    for statistic in [1e-3, 0.5, 3.0, 30.0, 300.0, 1500.0, 5000.0]:
        expected = float(stats.chi2.sf(statistic, dof))
        got = closedloop_stats.chi2_sf(statistic, dof)
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert closedloop_stats.chi2_sf(0.0, dof) == 1.0


def test_distances_come_from_the_tests_own_sorts_and_counts() -> None:
    rng = np.random.default_rng(30)
    reference = pd.DataFrame(
        {"x": rng.normal(size=3000), "c": rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2])}
    )
    current = pd.DataFrame(
        {"x": rng.normal(0.3, 1.2, 2500), "c": rng.choice(["a", "b", "d"], 2500)}
    )
    plain = compare_frames(reference, current)
    assert plain.column("x").wasserstein is None and plain.column("c").js is None
    report = compare_frames(reference, current, distances=True)
    x = report.column("x")
    expected = float(wasserstein_normalised(reference["x"].to_numpy(), current["x"].to_numpy()))
    assert x.wasserstein == pytest.approx(expected, rel=1e-9)
    edges = np.quantile(reference["x"], np.linspace(0, 1, 11)[1:-1])
    counts = [
        np.bincount(np.searchsorted(edges, v, side="left"), minlength=10)
        for v in (reference["x"].to_numpy(), current["x"].to_numpy())
    ]
    assert x.js == pytest.approx(float(js_distance(counts[0], counts[1])), rel=1e-9)
    table = pd.concat([reference["c"].value_counts(), current["c"].value_counts()], axis=1).fillna(
        0
    )
    c = report.column("c")
    assert c.js == pytest.approx(float(js_distance(table.iloc[:, 0], table.iloc[:, 1])))
    body = {c["column"]: c for c in report.to_dict()["columns"]}
    assert body["x"]["wasserstein"] == x.wasserstein
