"""Why a window's verdict is what it is: every signal that fired, and whether it counts.

A check's dataset verdict (``DriftReport.drifted``) can be made by several signals
(:func:`closedloop.domain.checks.assessment.assess`); a person reading "DRIFT" must see which one.
:func:`verdict_reasons` turns a stored report (and a monitor's outputs) into
:class:`Reason` items, the ones that count first:

``columns``      per-column tests: drifted columns after the multiple-testing correction;
                 with importance weights, they count only when the drifted columns carry at
                 least ``min_weighted_share`` of the weight.
``joint``        the domain classifier (:mod:`.multivariate`) tells current rows from
                 reference rows apart: the joint distribution moved (for instance a broken
                 correlation that leaves every column's own distribution unchanged).
``quality``      data-quality flags (:mod:`.quality`); counted only with ``quality_in_verdict``.
``prediction``   the model's outputs drifted from its held-out outputs (a monitor's
                 ``outputs``); reported beside the verdict, never counted.
``performance``  the label-free estimate and the realised metric disagree beyond the
                 estimate's band (:func:`estimate_disagreements`): the estimate assumes
                 ``P(label | inputs)`` unchanged, so the likely cause is concept drift.
                 Reported, never counted.

Every reason that makes ``drifted`` true is ``counted``, so a drifted report always has at
least one counted reason. Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from closedloop.domain.checks.drift import DriftReport

Signal = Literal["columns", "joint", "quality", "prediction", "performance"]

_QUALITY_LABELS = {
    "missing_rate_increase": "missing values rose",
    "out_of_range": "values outside the reference range",
    "unseen_categories": "categories never seen in the reference",
    "type_violations": "values of the wrong type",
}
_METRIC_LABELS = {
    "roc_auc": "ROC AUC",
    "accuracy": "accuracy",
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
}


@dataclass(frozen=True)
class Reason:
    """One signal of a window: ``counted`` when it makes the verdict drifted.

    ``label`` is a short name for badges ("joint drift", "3 of 8 columns"); ``text`` is the
    sentence a person reads.
    """

    signal: Signal
    counted: bool
    label: str
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "counted": self.counted,
            "label": self.label,
            "text": self.text,
        }


def verdict_reasons(report: DriftReport, outputs: Mapping[str, Any] | None = None) -> list[Reason]:
    """The signals of ``report`` that fired, counted ones first (module docstring).

    ``outputs`` is a monitor check's prediction drift and performance
    (:func:`closedloop.services.outputs.check_outputs`); None for a comparison of two files.
    """
    found = [
        _columns(report),
        _joint(report),
        _quality(report.quality),
        _prediction((outputs or {}).get("prediction_drift")),
        _performance((outputs or {}).get("performance")),
    ]
    reasons = [r for r in found if r is not None]
    return [r for r in reasons if r.counted] + [r for r in reasons if not r.counted]


def _names(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _share(value: float) -> str:
    return f"{value:.0%}" if value == 0 or value >= 0.01 else f"{value * 100:.2g}%"


def _columns(report: DriftReport) -> Reason | None:
    drifted = report.drifted_columns
    if not drifted:
        return None
    label = f"{len(drifted)} of {len(report.columns)} columns"
    text = (
        f"per-column drift in {label}: {_names(drifted)} (adjusted p-value below "
        f"alpha {report.alpha:g}, {report.correction} correction)"
    )
    weighting = report.weighting
    if not weighting:
        return Reason("columns", True, label, text)
    share, minimum = float(weighting["weighted_share"]), float(weighting["min_weighted_share"])
    counts = bool(weighting.get("counts"))
    carry = f"; the drifted columns carry {_share(share)} of the importance weight"
    if counts:
        text += carry + (f" (counts from {_share(minimum)})" if minimum > 0 else "")
    else:
        text += f"{carry}, below the {_share(minimum)} the verdict needs (min_weighted_share)"
    return Reason("columns", counts, label, text)


def _joint(report: DriftReport) -> Reason | None:
    result = report.multivariate or {}
    if not result.get("drifted"):
        return None
    auc, low, high = result.get("auc"), result.get("ci_low"), result.get("ci_high")
    threshold = 0.5 + float(result.get("auc_margin") or 0.0)
    level = float(result.get("ci_level") or 0.95)
    alone = not report.drifted_columns
    text = "joint drift — " + ("no column drifted on its own, but " if alone else "")
    text += "a domain classifier tells current rows from reference rows apart"
    if auc is not None:
        text += f" (ROC AUC {auc:.3f}"
        if low is not None and high is not None:
            text += f", {level:.0%} CI {low:.3f} to {high:.3f}, drift above {threshold:.3f}"
        text += ")"
    if alone:
        text += ": the relationship between columns changed (for instance a correlation)"
    top = [str(f["column"]) for f in result.get("top_features") or [] if f.get("column")]
    if top:
        text += f"; it relies most on {_names(top, 3)}"
    return Reason("joint", True, "joint drift", text)


def _quality(quality: Mapping[str, Any] | None) -> Reason | None:
    if not quality or not quality.get("flagged"):
        return None
    parts = []
    for column in quality.get("columns") or []:
        if column.get("flagged"):
            found = [_QUALITY_LABELS.get(r, str(r)) for r in column.get("reasons") or []]
            parts.append(f"{column.get('column')} ({', '.join(found)})")
    counted = bool(quality.get("affects_verdict"))
    text = f"data quality — {_names(parts, 5)}"
    if not counted:
        text += " (reported; not counted in the verdict)"
    return Reason("quality", counted, "data quality", text)


def _prediction(drift: Mapping[str, Any] | None) -> Reason | None:
    if not drift or not drift.get("drifted"):
        return None
    what = "scores" if drift.get("column") == "_score" else "predictions"
    text = f"prediction drift — the model's {what} differ from its {what} on held-out data"
    statistic, p_value = drift.get("statistic"), drift.get("p_value")
    if statistic is not None and p_value is not None:
        text += f" ({drift.get('test', 'test')} {statistic:.3g}, p={p_value:.2g})"
    return Reason("prediction", False, "prediction drift", text + "; not counted in the verdict")


def _performance(performance: Mapping[str, Any] | None) -> Reason | None:
    found = estimate_disagreements(performance)
    if not found:
        return None
    parts = [
        f"estimated {_METRIC_LABELS.get(d['metric'], d['metric'])} {d['estimated']:.2f} "
        f"(expected {d['lower']:.2f} to {d['upper']:.2f} on {d['n_labelled']:,} labelled rows) "
        f"but realised {d['realised']:.2f}"
        for d in found
    ]
    text = (
        "estimate and labels disagree — "
        + "; ".join(parts)
        + ". The estimate assumes P(label | inputs) is unchanged, so the likely cause is "
        "concept drift: trust the labels"
    )
    return Reason("performance", False, "estimate disagrees with labels", text)


def estimate_disagreements(performance: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The metrics whose realised value lies outside the label-free estimate's band.

    ``performance`` is a monitor's ``outputs["performance"]``: ``estimated`` (a
    :meth:`PerformanceEstimate.to_dict`, its band computed for all ``n`` rows of the window)
    and ``realised`` (metrics on ``n_labelled`` rows). The band describes the realised metric of
    all ``n`` rows; fewer labelled rows vary more, so its half-widths are widened by
    ``sqrt(n / n_labelled)`` around the estimate before comparing.
    """
    if not isinstance(performance, Mapping):
        return []
    estimated = performance.get("estimated") or {}
    realised = performance.get("realised") or {}
    metrics = estimated.get("metrics") or {}
    n, n_labelled = int(estimated.get("n") or 0), int(realised.get("n_labelled") or 0)
    if n < 1 or n_labelled < 1:
        return []
    widen = math.sqrt(max(n / n_labelled, 1.0))
    found = []
    for name in _METRIC_LABELS:
        band, value = metrics.get(name), realised.get(name)
        if not isinstance(band, Mapping) or not isinstance(value, int | float):
            continue
        point, lower, upper = band.get("value"), band.get("lower"), band.get("upper")
        if point is None or lower is None or upper is None:
            continue
        low = point - (point - lower) * widen
        high = point + (upper - point) * widen
        if not low <= value <= high:
            found.append(
                {
                    "metric": name,
                    "estimated": float(point),
                    "lower": float(low),
                    "upper": float(high),
                    "realised": float(value),
                    "n_labelled": n_labelled,
                }
            )
    return found
