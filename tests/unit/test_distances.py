"""Specification of closedloop.domain.checks.distances: effect sizes against scipy and by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.spatial.distance import jensenshannon

from closedloop.domain.checks.distances import (
    feature_weighted_share,
    js_distance,
    numeric_js_distance,
    pad_counts,
    psi_matrix,
    quantile_bin_counts,
    total_variation,
    wasserstein_normalised,
    wasserstein_sorted,
)
from closedloop.domain.checks.profiles import bin_counts, psi_edges
from closedloop.domain.checks.stats import psi
from closedloop.errors import InvalidInputError, SchemaError


def _ragged_pair(seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """2-D reference/current arrays with NaN gaps of different sizes per column, and the clean
    per-column values they hold."""
    rng = np.random.default_rng(seed)
    columns = [
        (rng.normal(0, 1, 900), rng.normal(0.3, 1.5, 400)),
        (np.round(rng.normal(5, 2, 700), 0), np.round(rng.normal(5.5, 2, 650), 0)),  # ties
        (rng.integers(0, 3, 1000).astype(float), rng.integers(0, 4, 300).astype(float)),
        (rng.lognormal(0, 1, 50), rng.lognormal(0.2, 1, 1000)),
    ]
    rows_ref = max(len(a) for a, _ in columns)
    rows_cur = max(len(b) for _, b in columns)
    ref = np.full((rows_ref, len(columns)), np.nan)
    cur = np.full((rows_cur, len(columns)), np.nan)
    for j, (a, b) in enumerate(columns):
        ref[rng.permutation(rows_ref)[: len(a)], j] = a
        cur[rng.permutation(rows_cur)[: len(b)], j] = b
    return ref, cur, columns


# --------------------------------------------------------------------------------------------
# Normalised Wasserstein distance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wasserstein_is_scipy_w1_over_reference_std_for_every_column(seed: int) -> None:
    ref, cur, columns = _ragged_pair(seed)
    expected = [stats.wasserstein_distance(a, b) / np.std(a) for a, b in columns]
    unsorted = wasserstein_normalised(ref, cur)
    presorted = wasserstein_normalised(np.sort(ref, axis=0), np.sort(cur, axis=0))
    np.testing.assert_allclose(unsorted, expected, rtol=1e-10)
    np.testing.assert_allclose(presorted, expected, rtol=1e-10)


def test_wasserstein_hand_computed_cases() -> None:
    # Moving every value by 1 costs 1; std of [0, 2] is 1.
    assert float(wasserstein_normalised(np.array([0.0, 2.0]), np.array([1.0, 3.0]))) == 1.0
    # The upper half of the mass moves from 2 to 4: |F_ref - F_cur| = 0.5 on [2, 4), so W1 = 1;
    # the reference std (values 0 and 2) is 1.
    value = wasserstein_normalised(np.array([0.0, 2.0]), np.array([0.0, 0.0, 4.0, 4.0]))
    assert float(value) == pytest.approx(0.5 * (4 - 2) / 1.0)
    assert float(wasserstein_normalised(np.arange(10.0), np.arange(10.0)[::-1])) == 0.0


def test_wasserstein_constant_reference_uses_the_std_floor_and_empty_columns_give_nan() -> None:
    ref = np.array([[1.0, np.nan], [1.0, np.nan]])
    cur = np.array([[1.5, 1.0], [1.5, 2.0]])
    result = wasserstein_normalised(ref, cur)
    assert result[0] == pytest.approx(0.5 / 1e-3)
    assert np.isnan(result[1])
    assert wasserstein_normalised(ref, cur, std_floor=0.5)[0] == pytest.approx(1.0)


def test_wasserstein_treats_infinities_as_missing() -> None:
    a, b = np.array([0.0, 1.0, 2.0, np.inf]), np.array([1.0, -np.inf, 2.0, 3.0])
    expected = stats.wasserstein_distance(a[:3], b[[0, 2, 3]]) / np.std(a[:3])
    assert float(wasserstein_normalised(a, b)) == pytest.approx(expected)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    st.lists(st.integers(-5, 5), min_size=1, max_size=30),
)
def test_wasserstein_matches_scipy_on_arbitrary_tied_samples(a: list[int], b: list[int]) -> None:
    x, y = np.array(a, dtype=float), np.array(b, dtype=float)
    expected = stats.wasserstein_distance(x, y) / max(float(np.std(x)), 1e-3)
    assert float(wasserstein_normalised(x, y)) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@settings(deadline=None)
@given(
    st.lists(st.integers(-5, 5) | st.floats(-3, 3), min_size=1, max_size=60),
    st.lists(st.integers(-5, 5) | st.floats(-3, 3), min_size=1, max_size=60),
)
def test_wasserstein_of_sorted_sides_matches_scipy_with_ties(
    a: list[float], b: list[float]
) -> None:
    x, y = np.sort(np.array(a, dtype=float)), np.sort(np.array(b, dtype=float))
    expected = stats.wasserstein_distance(x, y) / max(float(np.std(x)), 1e-3)
    assert wasserstein_sorted(x, y) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_thinned_wasserstein_of_large_sorted_sides_is_within_a_thousandth() -> None:
    rng = np.random.default_rng(8)
    x, y = np.sort(rng.normal(size=300_000)), np.sort(rng.lognormal(0.0, 0.5, 200_000))
    exact = wasserstein_sorted(x, y)
    assert exact == pytest.approx(float(wasserstein_normalised(x, y)), rel=1e-9)
    thinned = wasserstein_sorted(x, y, max_points=20_000)
    assert thinned == pytest.approx(exact, abs=1e-3)
    assert thinned != exact  # the thinning did happen


# --------------------------------------------------------------------------------------------
# Jensen-Shannon distance on reference-quantile bins
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("bins", [4, 10])
def test_numeric_js_is_scipy_jensenshannon_on_the_psi_bins(seed: int, bins: int) -> None:
    ref, cur, columns = _ragged_pair(seed)
    result = numeric_js_distance(ref, cur, bins=bins)
    for j, (a, b) in enumerate(columns):
        sa, sb = np.sort(a), np.sort(b)
        edges = psi_edges(sa, len(sa), bins)  # de-duplicated edges, as PSI uses
        p = bin_counts(sa, len(sa), edges) / len(sa)
        q = bin_counts(sb, len(sb), edges) / len(sb)
        assert result[j] == pytest.approx(jensenshannon(p, q, base=2), rel=1e-10, abs=1e-12)


def test_quantile_bin_counts_keep_empty_duplicate_bins_and_accept_presorted_input() -> None:
    ref, cur, columns = _ragged_pair(3)
    ref_counts, cur_counts = quantile_bin_counts(ref, cur)
    assert ref_counts.shape == cur_counts.shape == (4, 10)
    np.testing.assert_array_equal(ref_counts.sum(axis=1), [len(a) for a, _ in columns])
    np.testing.assert_array_equal(cur_counts.sum(axis=1), [len(b) for _, b in columns])
    # Column 2 has only three distinct values: most of its ten bins are empty on both sides.
    assert np.sum((ref_counts[2] == 0) & (cur_counts[2] == 0)) >= 6
    # PSI is unchanged by the empty bins, too.
    sa, sb = np.sort(columns[2][0]), np.sort(columns[2][1])
    edges = psi_edges(sa, len(sa), 10)
    assert psi_matrix(ref_counts, cur_counts)[2] == pytest.approx(
        psi(bin_counts(sa, len(sa), edges), bin_counts(sb, len(sb), edges))
    )
    sorted_counts = quantile_bin_counts(
        np.sort(ref, axis=0), np.sort(cur, axis=0), assume_sorted=True
    )
    np.testing.assert_array_equal(sorted_counts[0], ref_counts)
    np.testing.assert_array_equal(sorted_counts[1], cur_counts)


def test_numeric_js_is_zero_for_identical_samples_and_bounded_by_the_outer_bins() -> None:
    x = np.arange(100.0)
    assert float(numeric_js_distance(x, x.copy())) == 0.0
    # Everything above the reference maximum lands in the top decile bin (e9, inf), which also
    # holds 10% of the reference: JS is that of [0.1] * 10 against all mass in the last bin.
    expected = jensenshannon([0.1] * 10, [0.0] * 9 + [1.0], base=2)
    assert float(numeric_js_distance(x, x + 1000.0)) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Count vectors: JS, PSI, TVD
# --------------------------------------------------------------------------------------------


def test_categorical_distances_match_scipy_and_hand_computed_values() -> None:
    ref = np.array([50, 30, 20, 0])
    cur = np.array([25, 25, 25, 25])
    p, q = ref / 100, cur / 100
    assert float(js_distance(ref, cur)) == pytest.approx(jensenshannon(p, q, base=2))
    # TVD: |0.5-0.25| + |0.3-0.25| + |0.2-0.25| + |0-0.25| = 0.6, halved.
    assert float(total_variation(ref, cur)) == pytest.approx(0.3)
    hand = sum(
        (qi - max(pi, 1e-4)) * np.log(qi / max(pi, 1e-4)) for pi, qi in zip(p, q, strict=True)
    )
    assert float(psi_matrix(ref, cur)) == pytest.approx(hand)
    assert float(psi_matrix(ref, cur)) == pytest.approx(psi(ref, cur))


def test_count_distances_are_vectorised_over_columns_with_zero_padding() -> None:
    rng = np.random.default_rng(4)
    pairs = [(rng.integers(0, 50, k), rng.integers(0, 50, k)) for k in (2, 5, 9)]
    ref = pad_counts([a for a, _ in pairs])
    cur = pad_counts([b for _, b in pairs])
    assert ref.shape == (3, 9)
    js, tvd, psis = js_distance(ref, cur), total_variation(ref, cur), psi_matrix(ref, cur)
    for j, (a, b) in enumerate(pairs):
        assert js[j] == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2))
        assert tvd[j] == pytest.approx(0.5 * np.abs(a / a.sum() - b / b.sum()).sum())
        assert psis[j] == pytest.approx(psi(a, b))


def test_disjoint_categories_are_at_maximal_distance_and_empty_sides_give_nan() -> None:
    assert float(js_distance(np.array([3, 0]), np.array([0, 7]))) == pytest.approx(1.0)
    assert float(total_variation(np.array([3, 0]), np.array([0, 7]))) == pytest.approx(1.0)
    result = js_distance(np.array([[1, 1], [0, 0]]), np.array([[1, 1], [1, 2]]))
    assert result[0] == 0.0
    assert np.isnan(result[1])
    assert np.isnan(total_variation(np.array([0, 0]), np.array([1, 0])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=12))
def test_js_and_tvd_are_bounded_symmetric_and_match_scipy(pairs: list[tuple[int, int]]) -> None:
    a = np.array([x for x, _ in pairs], dtype=float)
    b = np.array([y for _, y in pairs], dtype=float)
    if a.sum() == 0 or b.sum() == 0:
        return
    js = float(js_distance(a, b))
    assert 0.0 <= js <= 1.0
    assert js == pytest.approx(float(js_distance(b, a)), abs=1e-12)
    assert js == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2), abs=1e-7)
    assert 0.0 <= float(total_variation(a, b)) <= 1.0 + 1e-12


def test_count_distances_reject_mismatched_or_negative_counts() -> None:
    with pytest.raises(InvalidInputError, match="same shape"):
        js_distance(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(InvalidInputError, match="non-negative"):
        total_variation(np.array([1, -2]), np.array([1, 2]))
    with pytest.raises(InvalidInputError, match="finite"):
        psi_matrix(np.array([1, np.nan]), np.array([1, 2]))
    with pytest.raises(InvalidInputError, match="1-D count vectors"):
        pad_counts([np.ones((2, 2))])


def test_numeric_inputs_are_validated() -> None:
    with pytest.raises(InvalidInputError, match="same columns"):
        wasserstein_normalised(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(InvalidInputError, match="1-D arrays or both 2-D"):
        wasserstein_normalised(np.ones(3), np.ones((3, 1)))
    with pytest.raises(InvalidInputError, match="bins must be an integer >= 2"):
        numeric_js_distance(np.ones(3), np.ones(3), bins=1)
    with pytest.raises(InvalidInputError, match="std_floor"):
        wasserstein_normalised(np.ones(3), np.ones(3), std_floor=0.0)


def test_distances_are_fast_enough_on_a_million_rows() -> None:
    rng = np.random.default_rng(5)
    ref = np.sort(rng.normal(size=(1_000_000, 2)), axis=0)
    cur = np.sort(rng.normal(0.1, 1.0, size=(1_000_000, 2)), axis=0)
    w = wasserstein_normalised(ref, cur)
    js = numeric_js_distance(ref, cur, assume_sorted=True)
    np.testing.assert_allclose(w, 0.1, atol=0.01)
    assert np.all((js > 0.01) & (js < 0.1))


# --------------------------------------------------------------------------------------------
# Importance-weighted share
# --------------------------------------------------------------------------------------------


def test_feature_weighted_share_is_the_drifted_share_of_importance() -> None:
    drifted = {"a": True, "b": False, "c": True}
    assert feature_weighted_share(drifted, {"a": 0.5, "b": 0.3, "c": 0.2, "unused": 9.0}) == (
        pytest.approx(0.7)
    )
    assert feature_weighted_share(drifted, {"a": 1, "b": 1, "c": 1}) == pytest.approx(2 / 3)
    assert feature_weighted_share({"a": False}, {"a": 1.0}) == 0.0


def test_feature_weighted_share_validates_weights() -> None:
    with pytest.raises(SchemaError, match=r"No importance weight.*\['b'\]"):
        feature_weighted_share({"a": True, "b": False}, {"a": 1.0})
    with pytest.raises(InvalidInputError, match="finite number >= 0"):
        feature_weighted_share({"a": True}, {"a": -1.0})
    with pytest.raises(InvalidInputError, match="finite number >= 0"):
        feature_weighted_share({"a": True}, {"a": float("nan")})
    with pytest.raises(InvalidInputError, match="all zero"):
        feature_weighted_share({"a": True, "b": True}, {"a": 0.0, "b": 0})
    with pytest.raises(InvalidInputError, match="empty"):
        feature_weighted_share({}, {"a": 1.0})
