"""Multivariate drift: can a classifier tell the reference window from the current one?

Per-column tests miss changes in the *joint* distribution: two columns whose marginals are
unchanged but whose correlation broke pass every KS test. :func:`domain_classifier_drift`
trains a small gradient-boosted classifier to tell reference rows (label 0) from current rows
(label 1). If the windows are exchangeable no classifier beats chance, so its out-of-fold ROC
AUC is 0.5; an AUC reliably above 0.5 means the joint distribution moved.

Procedure
    1. Balanced, seeded subsample: ``n = min(len(reference), len(current), max_rows)`` rows
       drawn without replacement from each window (default ``max_rows = 20_000`` per side), so
       the cost is bounded whatever the window sizes.
    2. Features: numeric columns (by :func:`closedloop.domain.profiles.column_kind` of the
       reference) as float64 with nulls/``+-inf`` as NaN (non-numeric current values parse
       with ``pd.to_numeric(errors="coerce")``, i.e. become NaN; the quality checks report
       them); categorical columns as integer codes on the union of both subsamples'
       categories, declared as ``categorical_features``. At most 254 categories per column
       keep their own code (the most frequent in the pooled subsample); the rest share one
       "other" code. Nulls stay missing, which ``HistGradientBoostingClassifier`` handles.
    3. ``n_splits``-fold (default 3) stratified cross-validation of
       ``HistGradientBoostingClassifier(max_iter=50, max_leaf_nodes=15, learning_rate=0.1,
       early_stopping=False)`` seeded with ``seed``; every row is scored by the model that
       did not see it (out-of-fold scores). The folds run with ``n_threads`` OpenMP threads
       (default 1).
    4. ``auc`` is the mean of the per-fold AUCs (each an honest test of a model that never saw
       its test rows; pooling the scores of different models would mix their calibrations).
       Its ``ci_level`` (default 95%) two-sided confidence interval uses **DeLong's variance**
       (midrank structural components, Sun & Xu 2014) of every fold, combined as
       ``sum(var_k) / K**2`` (disjoint test folds), and is clipped to ``[0, 1]``.
    5. ``drifted = ci_low > 0.5 + auc_margin`` (default margin 0.02).

Calibration of the default margin (measured with ``seed = 0..99`` on identical distributions:
two bivariate-normal columns, an exponential, a 5-level integer and a 4-level categorical
column; reproduce with :func:`domain_classifier_drift` in a loop, ~0.35 s per pair):

=========  ========  =======  ==========  =====================================
rows/side  mean AUC  sd(AUC)  max ci_low  flagged at margin 0 / 0.01 / 0.02 / 0.05
=========  ========  =======  ==========  =====================================
5,000      0.5009    0.0070   0.510       9 / 0 / **0** / 0 of 100
500        0.5001    0.0275   0.534       11 / 6 / 4 / 0 of 100
200        0.5018    0.0371   0.537       9 / 5 / 2 / 0 of 100
=========  ========  =======  ==========  =====================================

DeLong's interval is too narrow for cross-validated AUCs (the folds' models share training
rows): the observed spread is 1.2x DeLong's standard error at 5,000 rows per side (0.0070 vs
0.0058) and 1.5x at 500. A bare ``ci_low > 0.5`` therefore false-alarms ~9% of the time; the
0.02 margin brings it to 0/100 at 5,000 rows per side (largest ``ci_low`` 0.510, 1.4 standard
deviations below the 0.52 threshold); with more rows (default up to 20,000 per side) the
interval narrows and the margin is further away. For windows of at most ~1,000 rows per side
pass ``auc_margin=0.05`` (0/100 at 500 and at 200 rows per side). The margin also makes
"drift" mean a practically relevant separability, not merely a detectable one.

Power at 5,000 rows per side (20 seeds each, same columns): a correlation break from
rho = 0.8 to rho = 0 with unchanged marginals, AUC ~0.74, flagged 20/20; a mean shift of 0.2
standard deviations in one column, AUC ~0.54, flagged 16/20; a 0.1-standard-deviation shift,
AUC ~0.51, not flagged (0/20): per-column KS is the more sensitive test for pure marginal
shifts, the domain classifier is for joint changes.

Feature attributions (``top_features``): the total split gain of every feature over all trees
of all folds, normalised to sum to 1 (no permutations, no refits: read from the fitted trees).
The split gains are read from scikit-learn internals; if a future version moves them,
``top_features`` is empty and ``note`` says so.

Caveat: any column that differs by construction between windows (a timestamp, a row id, a batch
number) makes the windows trivially separable; leave such columns out with ``columns=``.
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
from scipy import stats

from closedloop.domain.profiles import column_kind
from closedloop.errors import InvalidInputError, SchemaError

DEFAULT_MAX_ROWS = 20_000
"""Rows drawn from each window (at most) for the domain classifier."""
DEFAULT_AUC_MARGIN = 0.02
"""``drifted`` needs the AUC interval's lower end above ``0.5 + margin`` (module docstring)."""
DEFAULT_CI_LEVEL = 0.95
DEFAULT_N_SPLITS = 3
DEFAULT_MAX_ITER = 50
DEFAULT_TOP_K = 10
MIN_ROWS = 20
"""Fewest rows per window the classifier is trained on."""
MAX_CATEGORY_CODES = 254
"""Categories per column with their own code; the rest share one code (HGB allows 255 bins)."""


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
    rank_x = stats.rankdata(x)
    rank_z = stats.rankdata(z)
    rank_all = stats.rankdata(np.concatenate([x, z]))
    auc = (rank_all[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    v10 = (rank_all[:m] - rank_x) / n  # per positive: share of negatives scored below it
    v01 = 1.0 - (rank_all[m:] - rank_z) / m  # per negative: share of positives scored above it
    variance = float(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n)
    return float(auc), max(variance, 0.0)


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
    :data:`MIN_ROWS` rows in a window. ``n_threads`` caps the classifier's OpenMP threads
    (default 1: the work is small and bounded by ``max_rows``, and a single thread avoids
    oversubscription when several monitors run at once; ``None`` uses every core).
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    names = _resolve(reference, current, columns, categorical)
    forced = set(categorical or [])
    max_rows = _int_at_least(max_rows, "max_rows", MIN_ROWS)
    n_splits = _int_at_least(n_splits, "n_splits", 2)
    max_iter = _int_at_least(max_iter, "max_iter", 1)
    top_k = _int_at_least(top_k, "top_k", 0)
    seed = _int_at_least(seed, "seed", 0)
    if n_threads is not None:
        n_threads = _int_at_least(n_threads, "n_threads", 1)
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
    ref_rows = np.sort(rng.choice(len(reference), size=size, replace=False))
    cur_rows = np.sort(rng.choice(len(current), size=size, replace=False))
    kinds = {name: column_kind(reference[name], force_categorical=name in forced) for name in names}
    # Categorical features first: scikit-learn moves them to the front internally, so with this
    # order the trees' feature indices are positions in `ordered`.
    ordered = [n for n in names if kinds[n] == "categorical"]
    ordered += [n for n in names if kinds[n] == "numeric"]
    features = np.empty((2 * size, len(ordered)), dtype=np.float64)
    for j, name in enumerate(ordered):
        kind = kinds[name]
        ref_part = reference[name].iloc[ref_rows]
        cur_part = current[name].iloc[cur_rows]
        if kind == "numeric":
            features[:size, j] = _as_float(ref_part)
            features[size:, j] = _as_float(cur_part)
        else:
            features[:, j] = _category_codes(ref_part, cur_part)
    labels = np.concatenate([np.zeros(size, dtype=np.int64), np.ones(size, dtype=np.int64)])
    is_categorical = np.array([kinds[name] == "categorical" for name in ordered])

    fold_aucs: list[float] = []
    fold_variances: list[float] = []
    gains = np.zeros(len(ordered), dtype=np.float64)
    gains_ok = True
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with threadpool_limits(limits=n_threads, user_api="openmp"):
        for train, test in folds.split(features, labels):
            model = HistGradientBoostingClassifier(
                max_iter=max_iter,
                learning_rate=0.1,
                max_leaf_nodes=15,
                early_stopping=False,
                categorical_features=is_categorical if is_categorical.any() else None,
                random_state=seed,
            )
            model.fit(features[train], labels[train])
            fold_auc, fold_variance = delong_auc(
                labels[test], model.predict_proba(features[test])[:, 1]
            )
            fold_aucs.append(fold_auc)
            fold_variances.append(fold_variance)
            gains_ok = gains_ok and _add_split_gains(model, gains)

    # Each fold's AUC is an honest test of a model that never saw those rows; the folds' test
    # sets are disjoint, so the mean's variance is the mean variance over the number of folds.
    auc = float(np.mean(fold_aucs))
    variance = float(np.sum(fold_variances)) / len(fold_aucs) ** 2
    half_width = float(stats.norm.ppf(0.5 + ci_level / 2.0)) * math.sqrt(variance)
    ci_low, ci_high = max(auc - half_width, 0.0), min(auc + half_width, 1.0)
    note = None
    top: list[tuple[str, float]] = []
    if gains_ok and gains.sum() > 0:
        shares = gains / gains.sum()
        order = np.argsort(-shares, kind="stable")
        top = [(str(ordered[i]), float(shares[i])) for i in order[:top_k] if shares[i] > 0]
    elif not gains_ok:
        note = "split gains are unavailable in this scikit-learn version; top_features omitted"
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
        note=note,
    )


def _add_split_gains(model: Any, gains: np.ndarray) -> bool:
    """Add the split gains of every tree of a fitted HistGradientBoosting model to ``gains``
    (per feature). Reads scikit-learn internals; returns False when they are unavailable."""
    try:
        for iteration in model._predictors:
            for predictor in iteration:
                nodes = predictor.nodes
                splits = ~nodes["is_leaf"].astype(bool)
                np.add.at(gains, nodes["feature_idx"][splits], nodes["gain"][splits])
    except (AttributeError, KeyError, ValueError, TypeError, IndexError):
        return False
    return True


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


def _category_codes(reference: pd.Series[Any], current: pd.Series[Any]) -> np.ndarray:
    """Codes of both parts on the union of their categories, most frequent first; categories
    beyond :data:`MAX_CATEGORY_CODES` share one code; nulls are NaN."""
    pooled = np.concatenate([reference.to_numpy(dtype=object), current.to_numpy(dtype=object)])
    codes, uniques = pd.factorize(pooled, use_na_sentinel=True)
    present = codes >= 0
    frequency = np.bincount(codes[present], minlength=len(uniques))
    rank = np.empty(len(uniques), dtype=np.int64)
    rank[np.argsort(-frequency, kind="stable")] = np.arange(len(uniques))
    ranked = np.minimum(rank, MAX_CATEGORY_CODES).astype(np.float64)
    result = np.full(codes.shape, np.nan)
    result[present] = ranked[codes[present]]
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
