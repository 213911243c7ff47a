"""Multivariate drift: can a classifier tell the reference window from the current one?

Per-column tests miss changes in the *joint* distribution: two columns whose marginals are
unchanged but whose correlation broke pass every KS test. :func:`domain_classifier_drift`
trains a small gradient-boosted classifier to tell reference rows (label 0) from current rows
(label 1). If the windows are exchangeable no classifier beats chance, so its out-of-fold ROC
AUC is 0.5; an AUC reliably above 0.5 means the joint distribution moved.

Procedure
    1. Balanced, seeded subsample: ``n = min(len(reference), len(current), max_rows)`` rows
       drawn without replacement from each window (default ``max_rows = 20_000`` per side;
       :func:`closedloop.domain.checks.assessment.assess` uses 5,000), so the cost is bounded
       whatever the window sizes.
    2. Features, binned to at most ``N_BINS`` (32) small integers, bin 0 meaning missing:
       numeric columns (by :func:`closedloop.domain.checks.profiles.column_kind` of the
       reference) at the pooled subsample's quantiles (nulls and ``+-inf`` missing; non-numeric
       current values parse with ``pd.to_numeric(errors="coerce")``, i.e. become missing: the
       quality checks report them); categorical columns by category, most frequent first in the
       pooled subsample, the rarest sharing the last bin. Binning uses no labels.
    3. ``n_splits``-fold (default 2) stratified cross-validation of a small gradient-boosted
       classifier written in numpy (:class:`_Booster`: ``max_iter`` (default 20) depth-4 trees,
       learning rate 0.3, logistic loss, Newton leaves with L2 = 1; numeric splits at a bin
       threshold, categorical splits on bins ordered by gradient/hessian). Every row is scored
       by the model that did not see it. No scikit-learn: importing it costs ~1 s, more than
       the whole test.
    4. ``auc`` is the mean of the per-fold AUCs (each an honest test of a model that never saw
       its test rows; pooling the scores of different models would mix their calibrations).
       Its ``ci_level`` (default 95%) two-sided confidence interval uses **DeLong's variance**
       (midrank structural components, Sun & Xu 2014) of every fold, combined as
       ``sum(var_k) / K**2`` (disjoint test folds), and is clipped to ``[0, 1]``.
    5. ``drifted = ci_low > 0.5 + auc_margin`` (default margin 0.02).

Calibration of the default margin (measured with 100 seeds on identical distributions: two
bivariate-normal columns at rho = 0.8, an exponential, a 5-level integer and a 4-level
categorical column; ``max_rows=5000``):

=========  ========  =======  ==========  =====================================
rows/side  mean AUC  sd(AUC)  max ci_low  flagged at margin 0 / 0.01 / 0.02 / 0.05
=========  ========  =======  ==========  =====================================
5,000      0.5003    0.0065   0.507       5 / 0 / **0** / 0 of 100
500        0.4994    0.0242   0.528       7 / 3 / 1 / 0 of 100
200        0.5007    0.0396   0.525       6 / 2 / 2 / 0 of 100
=========  ========  =======  ==========  =====================================

DeLong's interval is too narrow for cross-validated AUCs (the folds' models and test sets are
not independent), so a bare ``ci_low > 0.5`` false-alarms 5-7% of the time; the 0.02 margin
brings it to 0/100 at 5,000 rows per side. For small windows use a wider margin: ``assess()``
uses ``max(0.02, 1.5 / sqrt(n))``, which flagged none of the 300 pairs above. The margin also
makes "drift" mean a practically relevant separability, not merely a detectable one.

Power at 5,000 rows per side (20 seeds each, same columns, default settings): a correlation
break from rho = 0.8 to rho = 0 with unchanged marginals, mean AUC 0.740, flagged 20/20; a mean
shift of 0.2 standard deviations in one column, AUC 0.567, 20/20; a 0.1-standard-deviation
shift, AUC 0.521, 2/20: per-column KS is the more sensitive test for pure marginal shifts, the
domain classifier is for joint changes.

Feature attributions (``top_features``): the total split gain of every feature over all trees
of all folds, normalised to sum to 1 (no permutations, no refits).

Caveat: any column that differs by construction between windows (a timestamp, a row id, a batch
number) makes the windows trivially separable; leave such columns out with ``columns=``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from closedloop.domain.checks.profiles import column_kind
from closedloop.errors import InvalidInputError, SchemaError

DEFAULT_MAX_ROWS = 20_000
"""Rows drawn from each window (at most) for the domain classifier."""
DEFAULT_AUC_MARGIN = 0.02
"""``drifted`` needs the AUC interval's lower end above ``0.5 + margin`` (module docstring)."""
DEFAULT_CI_LEVEL = 0.95
DEFAULT_N_SPLITS = 2
DEFAULT_MAX_ITER = 20
DEFAULT_TOP_K = 10
MIN_ROWS = 20
"""Fewest rows per window the classifier is trained on."""
N_BINS = 32
"""Bins per feature: 0 for missing, then quantile bins (numeric) or the most frequent categories
(categorical; the rest share the last bin)."""
TREE_DEPTH = 4
LEARNING_RATE = 0.3
L2 = 1.0
"""L2 regularisation of the leaf values (added to the hessian sums)."""
MIN_CHILD_HESSIAN = 2.0
"""Smallest hessian sum of a child (about 8 rows near probability 1/2)."""


@dataclass
class MultivariateDrift:
    """The result of :func:`domain_classifier_drift`."""

    auc: float
    ci_low: float
    ci_high: float
    drifted: bool
    n_reference_used: int
    n_current_used: int
    auc_margin: float
    ci_level: float
    columns: list[str] = field(default_factory=list)
    top_features: list[tuple[str, float]] = field(default_factory=list)
    method: str = "domain_classifier"
    ci_method: str = "delong_per_fold"
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (plain Python types, no NaN/inf)."""
        body: dict[str, Any] = {
            "method": self.method,
            "auc": _finite(self.auc),
            "ci_low": _finite(self.ci_low),
            "ci_high": _finite(self.ci_high),
            "ci_level": float(self.ci_level),
            "ci_method": self.ci_method,
            "auc_margin": float(self.auc_margin),
            "drifted": bool(self.drifted),
            "n_reference_used": int(self.n_reference_used),
            "n_current_used": int(self.n_current_used),
            "columns": [str(c) for c in self.columns],
            "top_features": [
                {"column": str(name), "importance": _finite(value)}
                for name, value in self.top_features
            ],
        }
        if self.note is not None:
            body["note"] = self.note
        return body


# --------------------------------------------------------------------------------------------
# AUC with DeLong's variance
# --------------------------------------------------------------------------------------------


def delong_auc(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC of ``scores`` for binary ``labels`` (1 = positive) and DeLong's variance of it.

    Uses midranks (ties count one half), so the AUC equals ``sklearn.metrics.roc_auc_score``;
    the variance is ``var(V10) / m + var(V01) / n`` of the structural components (DeLong et
    al. 1988), computed in O(N log N) from ranks (Sun & Xu 2014). Both classes need at least
    two rows.
    """
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise InvalidInputError(
            f"labels and scores must be 1-D of the same length. Got {y.shape} and {s.shape}."
        )
    positive = y == 1
    if not np.all(positive | (y == 0)):
        raise InvalidInputError("labels must be 0 or 1.")
    x, z = s[positive], s[~positive]
    m, n = x.size, z.size
    if m < 2 or n < 2:
        raise InvalidInputError(
            f"DeLong's variance needs at least two rows of each class; got {m} positive and "
            f"{n} negative."
        )
    if not np.all(np.isfinite(s)):
        raise InvalidInputError("scores must be finite numbers.")
    rank_x = midranks(x)
    rank_z = midranks(z)
    rank_all = midranks(np.concatenate([x, z]))
    auc = (rank_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_all[:m] - rank_x) / n  # per positive: share of negatives scored below it
    v01 = 1.0 - (rank_all[m:] - rank_z) / m  # per negative: share of positives scored above it
    variance = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return float(auc), max(variance, 0.0)


def midranks(values: np.ndarray) -> np.ndarray:
    """Ranks ``1..n`` with ties given the mean of their ranks (``scipy.stats.rankdata``)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    bounds = np.append(np.flatnonzero(starts), values.size)
    mean_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(starts) - 1]
    return ranks


# --------------------------------------------------------------------------------------------
# The domain classifier
# --------------------------------------------------------------------------------------------


def domain_classifier_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    n_splits: int = DEFAULT_N_SPLITS,
    max_iter: int = DEFAULT_MAX_ITER,
    auc_margin: float = DEFAULT_AUC_MARGIN,
    ci_level: float = DEFAULT_CI_LEVEL,
    top_k: int = DEFAULT_TOP_K,
    seed: int = 0,
    n_threads: int | None = 1,
) -> MultivariateDrift:
    """Domain-classifier drift test of ``reference`` vs ``current`` (see the module docstring).

    ``columns`` selects the features (default: every column of ``reference``); ``categorical``
    forces columns categorical. Raises :class:`SchemaError` for columns missing from either
    frame and :class:`InvalidInputError` for invalid parameters or fewer than
    :data:`MIN_ROWS` rows in a window. ``n_threads`` is validated and kept for compatibility:
    the classifier runs in the calling thread (numpy only).
    """
    names = _resolve(reference, current, columns, categorical)
    forced = set(categorical or [])
    max_rows = _int_at_least(max_rows, "max_rows", MIN_ROWS)
    n_splits = _int_at_least(n_splits, "n_splits", 2)
    max_iter = _int_at_least(max_iter, "max_iter", 1)
    top_k = _int_at_least(top_k, "top_k", 0)
    seed = _int_at_least(seed, "seed", 0)
    if n_threads is not None:
        _int_at_least(n_threads, "n_threads", 1)
    auc_margin = _float_in(auc_margin, "auc_margin", 0.0, 0.5, closed=True)
    ci_level = _float_in(ci_level, "ci_level", 0.0, 1.0, closed=False)
    size = min(len(reference), len(current), max_rows)
    if size < MIN_ROWS:
        raise InvalidInputError(
            f"The domain classifier needs at least {MIN_ROWS} rows in each window; got "
            f"{len(reference)} reference and {len(current)} current rows.",
            details={"n_reference": len(reference), "n_current": len(current)},
        )

    rng = np.random.default_rng(seed)
    bins, is_categorical = _binned_features(reference, current, names, forced, size, rng)
    fold_aucs, fold_variances, gains = _cross_validate(
        bins, is_categorical, n_splits, max_iter, rng
    )

    # Each fold's AUC is an honest test of a model that never saw those rows; the folds' test
    # sets are disjoint, so the mean's variance is the mean variance over the number of folds.
    auc = float(np.mean(fold_aucs))
    variance = float(np.sum(fold_variances)) / len(fold_aucs) ** 2
    half_width = NormalDist().inv_cdf(0.5 + ci_level / 2.0) * math.sqrt(variance)
    ci_low, ci_high = max(auc - half_width, 0.0), min(auc + half_width, 1.0)
    top: list[tuple[str, float]] = []
    if gains.sum() > 0:
        shares = gains / gains.sum()
        order = np.argsort(-shares, kind="stable")
        top = [(str(names[i]), float(shares[i])) for i in order[:top_k] if shares[i] > 0]
    return MultivariateDrift(
        auc=auc,
        ci_low=ci_low,
        ci_high=ci_high,
        drifted=bool(ci_low > 0.5 + auc_margin),
        n_reference_used=size,
        n_current_used=size,
        auc_margin=auc_margin,
        ci_level=ci_level,
        columns=[str(name) for name in names],
        top_features=top,
    )


def _binned_features(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    names: list[Any],
    forced: set[Any],
    size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """``(2 * size, len(names))`` feature bins of ``size`` seeded rows of each window (reference
    rows first) and which features are categorical."""
    ref_rows = np.sort(rng.choice(len(reference), size=size, replace=False))
    cur_rows = np.sort(rng.choice(len(current), size=size, replace=False))
    kinds = {name: column_kind(reference[name], force_categorical=name in forced) for name in names}
    bins = np.empty((2 * size, len(names)), dtype=np.int64)
    for j, name in enumerate(names):
        ref_part = reference[name].iloc[ref_rows]
        cur_part = current[name].iloc[cur_rows]
        if kinds[name] == "numeric":
            bins[:, j] = _quantile_bins(np.concatenate([_as_float(ref_part), _as_float(cur_part)]))
        else:
            bins[:, j] = _category_bins(ref_part, cur_part)
    return bins, np.array([kinds[name] == "categorical" for name in names])


def _cross_validate(
    bins: np.ndarray,
    is_categorical: np.ndarray,
    n_splits: int,
    max_iter: int,
    rng: np.random.Generator,
) -> tuple[list[float], list[float], np.ndarray]:
    """Per-fold AUCs and DeLong variances of out-of-fold scores, and the summed split gains."""
    size = bins.shape[0] // 2
    labels = np.concatenate([np.zeros(size), np.ones(size)])
    fold_aucs: list[float] = []
    fold_variances: list[float] = []
    gains = np.zeros(bins.shape[1], dtype=np.float64)
    for test in _stratified_folds(size, n_splits, rng):
        train = np.ones(2 * size, dtype=bool)
        train[test] = False
        model = _Booster(is_categorical, max_iter).fit(bins[train], labels[train])
        fold_auc, fold_variance = delong_auc(labels[test], model.decision(bins[test]))
        fold_aucs.append(fold_auc)
        fold_variances.append(fold_variance)
        gains += model.gains
    return fold_aucs, fold_variances, gains


def _stratified_folds(size: int, n_splits: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Test-row positions of ``n_splits`` folds, each holding the same share of both windows
    (rows ``0..size-1`` are reference, ``size..2*size-1`` current)."""
    ref_order = rng.permutation(size)
    cur_order = rng.permutation(size) + size
    return [
        np.sort(np.concatenate([ref_order[k::n_splits], cur_order[k::n_splits]]))
        for k in range(n_splits)
    ]


# --------------------------------------------------------------------------------------------
# A small histogram gradient-boosting classifier (numpy)
# --------------------------------------------------------------------------------------------


class _Booster:
    """Gradient-boosted depth-``TREE_DEPTH`` trees on binned features, logistic loss.

    Every feature is a small integer bin (0 = missing). A tree is grown level by level: one
    ``bincount`` builds the gradient and hessian histograms of every node and feature; a numeric
    feature splits at a bin threshold, a categorical one at a threshold on its bins ordered by
    ``gradient / hessian`` within the node (LightGBM's rule), so any set of categories can go
    left. Leaves take a Newton step ``-G / (H + lambda)`` times the learning rate. ``gains``
    accumulates every split's loss reduction per feature.
    """

    def __init__(self, is_categorical: np.ndarray, max_iter: int) -> None:
        self.is_categorical = is_categorical
        self.max_iter = max_iter
        self.gains = np.zeros(is_categorical.size, dtype=np.float64)
        self.trees: list[tuple[list[np.ndarray], list[np.ndarray], np.ndarray]] = []
        self.base = 0.0

    def fit(self, bins: np.ndarray, labels: np.ndarray) -> _Booster:
        n, n_features = bins.shape
        positive = float(np.clip(labels.mean(), 1e-6, 1 - 1e-6))
        self.base = math.log(positive / (1.0 - positive))
        raw = np.full(n, self.base)
        flat = bins + np.arange(n_features) * N_BINS  # (row, feature) -> histogram slot
        for _ in range(self.max_iter):
            prob = 1.0 / (1.0 + np.exp(-raw))
            grad, hess = prob - labels, prob * (1.0 - prob)
            tree, node = self._grow(bins, flat, grad, hess)
            leaf_g = np.bincount(node, weights=grad, minlength=2**TREE_DEPTH)
            leaf_h = np.bincount(node, weights=hess, minlength=2**TREE_DEPTH)
            values = -LEARNING_RATE * leaf_g / (leaf_h + L2)
            self.trees.append((*tree, values))
            raw += values[node]
        return self

    def _grow(
        self, bins: np.ndarray, flat: np.ndarray, grad: np.ndarray, hess: np.ndarray
    ) -> tuple[tuple[list[np.ndarray], list[np.ndarray]], np.ndarray]:
        n, n_features = bins.shape
        width = n_features * N_BINS
        node = np.zeros(n, dtype=np.int64)
        features: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        rows = np.arange(n)
        g = np.bincount(flat.ravel(), weights=np.repeat(grad, n_features), minlength=width)
        h = np.bincount(flat.ravel(), weights=np.repeat(hess, n_features), minlength=width)
        g, h = g.reshape(1, n_features, N_BINS), h.reshape(1, n_features, N_BINS)
        for level in range(TREE_DEPTH):
            if level > 0:  # histogram subtraction: build the left children, derive the right
                g, h = self._children(g, h, node, flat, grad, hess)
            feature, left = self._best_splits(g, h)
            go_right = ~left[node, bins[rows, feature[node]]]
            node = 2 * node + go_right
            features.append(feature)
            masks.append(left)
        return (features, masks), node

    @staticmethod
    def _children(
        g: np.ndarray,
        h: np.ndarray,
        node: np.ndarray,
        flat: np.ndarray,
        grad: np.ndarray,
        hess: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Histograms of the next level: the left children's from their rows, each right
        child's as its parent's minus its sibling's."""
        parents, n_features, _ = g.shape
        left_rows = np.flatnonzero((node & 1) == 0)
        slots = ((node[left_rows] >> 1)[:, None] * (n_features * N_BINS) + flat[left_rows]).ravel()
        size = parents * n_features * N_BINS
        shape = (parents, n_features, N_BINS)
        g_left = np.bincount(
            slots, weights=np.repeat(grad[left_rows], n_features), minlength=size
        ).reshape(shape)
        h_left = np.bincount(
            slots, weights=np.repeat(hess[left_rows], n_features), minlength=size
        ).reshape(shape)
        g_next = np.stack([g_left, g - g_left], axis=1).reshape(2 * parents, n_features, N_BINS)
        h_next = np.stack([h_left, np.maximum(h - h_left, 0.0)], axis=1)
        return g_next, h_next.reshape(2 * parents, n_features, N_BINS)

    def _best_splits(self, g: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per node: the feature and the ``(N_BINS,)`` mask of bins going left of the best split
        (a node without a useful split sends every row left)."""
        nodes = g.shape[0]
        order = np.broadcast_to(np.arange(N_BINS), g.shape).copy()
        if self.is_categorical.any():
            ratio = g / (h + L2)
            ratio[h <= 1e-12] = np.inf  # empty categories last
            cat = self.is_categorical
            order[:, cat, :] = np.argsort(ratio[:, cat, :], axis=2, kind="stable")
        g_sorted = np.take_along_axis(g, order, axis=2)
        h_sorted = np.take_along_axis(h, order, axis=2)
        g_left = np.cumsum(g_sorted, axis=2)[:, :, :-1]
        h_left = np.cumsum(h_sorted, axis=2)[:, :, :-1]
        g_total, h_total = g.sum(axis=2, keepdims=True), h.sum(axis=2, keepdims=True)
        g_right, h_right = g_total - g_left, h_total - h_left
        gain = g_left**2 / (h_left + L2) + g_right**2 / (h_right + L2) - g_total**2 / (h_total + L2)
        gain[(h_left < MIN_CHILD_HESSIAN) | (h_right < MIN_CHILD_HESSIAN)] = -np.inf
        best = np.argmax(gain.reshape(nodes, -1), axis=1)
        feature, cut = np.divmod(best, N_BINS - 1)
        best_gain = gain.reshape(nodes, -1)[np.arange(nodes), best]
        useful = best_gain > 0
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(N_BINS)[None, None, :], axis=2)
        left = ranks[np.arange(nodes), feature] <= cut[:, None]
        left[~useful] = True
        np.add.at(self.gains, feature[useful], best_gain[useful])
        return feature, left

    def decision(self, bins: np.ndarray) -> np.ndarray:
        """The raw score (log-odds of "current") of every row."""
        rows = np.arange(bins.shape[0])
        raw = np.full(bins.shape[0], self.base)
        for features, masks, values in self.trees:
            node = np.zeros(bins.shape[0], dtype=np.int64)
            for feature, left in zip(features, masks, strict=True):
                node = 2 * node + ~left[node, bins[rows, feature[node]]]
            raw += values[node]
        return raw


def _quantile_bins(values: np.ndarray) -> np.ndarray:
    """Bins ``1..N_BINS-1`` at the pooled quantiles of a numeric column; 0 for missing."""
    finite = values[np.isfinite(values)]
    result = np.zeros(values.size, dtype=np.int64)
    if finite.size == 0:
        return result
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, N_BINS)[1:-1]))
    present = np.isfinite(values)
    result[present] = np.searchsorted(edges, values[present], side="left") + 1
    return result


def _as_float(series: pd.Series[Any]) -> np.ndarray:
    dtype = series.dtype
    if (ptypes.is_integer_dtype(dtype) or ptypes.is_float_dtype(dtype)) and not (
        ptypes.is_bool_dtype(dtype)
    ):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        parsed = pd.to_numeric(pd.Series(series.to_numpy(dtype=object)), errors="coerce")
        values = parsed.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isfinite(values), values, np.nan)


def _category_bins(reference: pd.Series[Any], current: pd.Series[Any]) -> np.ndarray:
    """Bins of both parts on the union of their categories, most frequent first (``1..``);
    categories beyond ``N_BINS - 2`` share the last bin; nulls are bin 0."""
    pooled = np.concatenate([reference.to_numpy(dtype=object), current.to_numpy(dtype=object)])
    codes, uniques = pd.factorize(pooled, use_na_sentinel=True)
    present = codes >= 0
    frequency = np.bincount(codes[present], minlength=len(uniques))
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[np.argsort(-frequency, kind="stable")] = np.arange(len(uniques))
    result = np.zeros(codes.shape, dtype=np.int64)
    result[present] = np.minimum(rank, N_BINS - 2)[codes[present]] + 1
    return result


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _resolve(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str] | None,
    categorical: Sequence[str] | None,
) -> list[Any]:
    for frame, label in ((reference, "reference"), (current, "current")):
        if not isinstance(frame, pd.DataFrame):
            raise InvalidInputError(
                f"{label} must be a pandas DataFrame. Got {type(frame).__name__} instead."
            )
        if frame.columns.has_duplicates:
            raise SchemaError(f"The {label} frame has duplicate column names; expected unique.")
    for value, label in ((columns, "columns"), (categorical, "categorical")):
        if isinstance(value, str):
            raise InvalidInputError(
                f"{label} must be a list of column names. Got the string {value!r} instead."
            )
    names = list(reference.columns) if columns is None else list(columns)
    if not names:
        raise InvalidInputError("There are no columns to compare; expected at least one column.")
    if len(set(names)) != len(names):
        raise InvalidInputError(f"columns lists a name more than once: {names}.")
    for frame, label in ((reference, "reference"), (current, "current")):
        missing = [str(n) for n in names if n not in frame.columns]
        if missing:
            raise SchemaError(
                f"The {label} frame has no column(s) {missing}; expected every compared column "
                f"in both frames (it has {[str(c) for c in frame.columns]}).",
                details={"missing": missing, "frame": label},
            )
    unknown = [str(n) for n in categorical or [] if n not in names]
    if unknown:
        raise SchemaError(
            f"categorical names column(s) {unknown} that are not compared; expected names "
            f"among {[str(n) for n in names]}.",
            details={"missing": unknown},
        )
    return names


def _int_at_least(value: object, name: str, low: int) -> int:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= low:
        return int(value)
    raise InvalidInputError(f"{name} must be an integer >= {low}. Got {value!r} instead.")


def _float_in(value: object, name: str, low: float, high: float, *, closed: bool) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if (low <= number <= high) if closed else (low < number < high):
            return number
    interval = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
    raise InvalidInputError(f"{name} must be a float in {interval}. Got {value!r} instead.")


def _finite(value: float) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


__all__ = [
    "DEFAULT_AUC_MARGIN",
    "DEFAULT_CI_LEVEL",
    "DEFAULT_MAX_ROWS",
    "MultivariateDrift",
    "delong_auc",
    "domain_classifier_drift",
]
