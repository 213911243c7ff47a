"""The full drift assessment of a window: per-column tests plus effect sizes, a multivariate
domain classifier and data-quality signals, in one :class:`~.drift.DriftReport`.

* Per-column tests, correction and floors: :func:`closedloop.domain.checks.drift.compare_frames`.
* Effect sizes reported beside each test: normalised Wasserstein distance and Jensen-Shannon
  distance for numeric columns, Jensen-Shannon distance for categorical ones, computed by
  :func:`~.drift.compare_frames` from the sorted columns and bin counts its tests already made
  (no second sort; Wasserstein on at most ``DISTANCE_POINTS`` order statistics per side).
* Multivariate drift (:mod:`.multivariate`): a classifier that tells reference rows from current
  rows, trained on at most ``CLASSIFIER_ROWS`` rows per side. It catches joint shifts that leave
  every column's distribution unchanged (a broken correlation) and counts in the dataset
  verdict. Its AUC margin grows for small windows, ``max(0.02, 1.5 / sqrt(n))`` with ``n`` the
  rows per side it used, because the cross-validated AUC's spread is wider than DeLong's
  interval there (see :mod:`.multivariate` for the calibration).
* Data quality (:mod:`.quality`): missing-rate changes, out-of-range values, unseen categories,
  type violations. Reported; not counted in the verdict unless ``quality_in_verdict``.
* Importance weighting (optional, ``weights``): the share of the total feature-importance
  weight carried by the drifted columns (:func:`.distances.feature_weighted_share`) is
  reported; with ``min_weighted_share > 0`` the per-column tests count in the verdict only when
  the drifted columns carry at least that share, so drift confined to columns the model barely
  uses does not raise the dataset verdict. The domain classifier still counts (a joint shift is
  not attributed to columns).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from closedloop.domain.checks.drift import DEFAULT_ALPHA, Correction, DriftReport, compare_frames

CLASSIFIER_ROWS = 5_000


def assess(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    alpha: float = DEFAULT_ALPHA,
    correction: Correction = "bonferroni",
    multivariate: bool = True,
    quality: bool = True,
    quality_in_verdict: bool = False,
    seed: int = 0,
    weights: Mapping[str, float] | None = None,
    min_weighted_share: float = 0.0,
) -> DriftReport:
    """Test ``current`` against ``reference``: see the module docstring."""
    if not (isinstance(min_weighted_share, int | float) and 0.0 <= min_weighted_share <= 1.0):
        from closedloop.errors import InvalidInputError

        raise InvalidInputError(
            "min_weighted_share must be a number in [0, 1] (0: weights are reported only). "
            f"Got {min_weighted_share!r} instead."
        )
    report = compare_frames(
        reference,
        current,
        columns=columns,
        categorical=categorical,
        alpha=alpha,
        correction=correction,
        distances=True,
    )
    names = [c.column for c in report.columns]
    forced = list(categorical or [])
    drifted = report.drifted
    if weights is not None:
        report = weighted_verdict(report, weights, float(min_weighted_share))
        drifted = report.drifted
    if multivariate and len(names) >= 1:
        result = _multivariate(reference, current, names, forced, seed)
        report.multivariate = result
        drifted = drifted or bool(result.get("drifted"))
    if quality:
        from closedloop.domain.checks.quality import data_quality

        checked = data_quality(
            reference,
            current,
            columns=names,
            categorical=forced,
            alpha=alpha,
            count_in_verdict=quality_in_verdict,
        )
        report.quality = checked.to_dict()
        drifted = drifted or checked.affects_verdict
    return replace(report, drifted=drifted)


def weighted_verdict(
    report: DriftReport, weights: Mapping[str, float], minimum: float = 0.0
) -> DriftReport:
    """The per-column verdict of ``report`` weighted by feature importance (module docstring).

    Columns without a weight weigh 0 (they are listed under ``unweighted``).
    """
    from closedloop.domain.checks.distances import feature_weighted_share

    flags = {c.column: c.drifted for c in report.columns}
    known = {c: float(weights[c]) for c in flags if c in weights}
    share = feature_weighted_share(flags, known | {c: 0.0 for c in flags if c not in weights})
    counts = bool(report.drifted and share >= minimum)
    weighting = {
        "weights": known,
        "unweighted": sorted(c for c in flags if c not in weights),
        "weighted_share": share,
        "min_weighted_share": minimum,
        "counts": counts,
    }
    return replace(report, drifted=counts, weighting=weighting)


def _multivariate(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    names: list[str],
    forced: list[str],
    seed: int,
) -> dict[str, Any]:
    from closedloop.domain.checks.multivariate import domain_classifier_drift

    per_side = min(len(reference), len(current), CLASSIFIER_ROWS)
    margin = max(0.02, 1.5 / math.sqrt(max(per_side, 1)))
    if per_side < 50:
        return {"drifted": False, "note": f"too few rows ({per_side} per side) for a classifier"}
    result = domain_classifier_drift(
        reference,
        current,
        columns=names,
        categorical=forced,
        auc_margin=min(margin, 0.45),
        max_rows=CLASSIFIER_ROWS,
        seed=seed,
    )
    return result.to_dict()


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
