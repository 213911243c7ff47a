"""What a traffic window says about the model's outputs: prediction drift, label drift and
performance (estimated without labels, realised when labels have arrived).

The reference is the version's held-out evaluation rows stored at registration
(:func:`closedloop.services.registry.load_evaluation`): its predictions and scores were made on
data the model did not train on, so they are the fair comparison for live outputs. Versions
registered without an evaluation get no output checks (the result says why).

What is compared depends on the version's target (recorded in its signature,
:class:`closedloop.domain.signature.TargetSpec`):

* **regression** — predictions and labels are continuous: KS tests; realised MAE, RMSE and R².
  There is no label-free estimate (the result says so).
* **multiclass** — predicted classes and labels are categories: chi-square tests; realised
  accuracy and macro F1 (and the version's gate metric when it is a label metric).
* **binary** — scores (KS) when the model has them, else predicted classes (chi-square);
  realised accuracy, precision, recall, F1 and ROC AUC; the label-free estimate from the scores.

Labels are coerced to the target's type before they are compared (``"2"`` and ``2`` are one
class); a stored label that cannot be read as that type, or is not one of a classifier's
classes, is left out and counted (``unreadable_labels``). Labels that cannot be joined to a
row — a broken key (``malformed``) or no row position for a request of several rows
(``ambiguous``) — are left out and counted in ``ignored_labels``; they never stop the check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.errors import ClosedloopError
from closedloop.services import registry
from closedloop.services.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.signature import TargetSpec

ASSUMPTION = (
    "Estimated performance assumes no concept drift: P(label | inputs) is the same as in the "
    "held-out data the scores were calibrated on. Only arriving labels can reveal a change of "
    "that relationship."
)


def check_outputs(ws: Workspace, model: str, version: int, window: pd.DataFrame) -> dict[str, Any]:
    """Prediction drift, label drift and performance for ``window`` (prediction-log rows)."""
    evaluation = registry.load_evaluation(ws, model, version)
    if evaluation is None:
        return {"note": f"version {version} has no stored evaluation rows; output checks skipped"}
    info = registry.get_version(ws, model, version)
    target = _target(info.signature, evaluation)
    primary = window[window["_role"] == "primary"] if "_role" in window else window
    evaluation = _typed(evaluation, target, "_label")
    result: dict[str, Any] = {
        "task": None if target is None else target.task,
        "prediction_drift": _prediction_drift(evaluation, primary, target),
    }
    feedback = ws.feedback_log().read(model)
    labelled, unreadable, ignored = _labelled(primary, feedback, target)
    if unreadable:
        expected = target.describe() if target is not None else "the target type"
        result["unreadable_labels"] = {"n": unreadable, "expected": expected}
    if ignored:
        result["ignored_labels"] = {"n": sum(ignored.values()), **ignored}
    if labelled is not None and len(labelled) >= 2:
        result["label_drift"] = _label_drift(evaluation, labelled, target)
    result["performance"] = _performance(evaluation, primary, labelled, target, tuple(info.metrics))
    return result


def version_target(ws: Workspace, model: str, version: int) -> TargetSpec | None:
    """What ``version`` predicts (its recorded target, else read from its held-out rows)."""
    info = registry.get_version(ws, model, version)
    if info.signature.get("target") is None:
        evaluation = registry.load_evaluation(ws, model, version)
        if evaluation is None:
            return None
        return _target(info.signature, evaluation)
    return _target(info.signature, None)


def typed_labels(frame: pd.DataFrame, target: TargetSpec | None) -> pd.DataFrame:
    """Labelled rows (``_label``) with their labels of ``target``'s type; rows whose label
    cannot be read as it, or is not one of a classifier's classes, are left out."""
    return _typed(frame, target, "_label", known_classes=True)


def _target(signature: dict[str, Any], evaluation: pd.DataFrame | None) -> TargetSpec | None:
    """The version's recorded target; for versions registered before targets were recorded,
    read from the held-out labels and predictions."""
    from closedloop.domain.signature import TargetSpec, infer_target

    stored = signature.get("target")
    if stored is not None:
        return TargetSpec.from_dict(stored)
    if evaluation is None:
        return None
    return infer_target(None, evaluation["_label"], evaluation["_prediction"])


def _typed(
    frame: pd.DataFrame, target: TargetSpec | None, column: str, *, known_classes: bool = False
) -> pd.DataFrame:
    """``frame`` without rows whose ``column`` is null or cannot be read as the target's type
    (nor, with ``known_classes``, is one of a classifier's classes), and with that column
    converted to it."""
    frame = frame[frame[column].notna().to_numpy()]
    if target is None or len(frame) == 0:
        return frame
    values, valid = target.coerce_valid(frame[column].to_numpy())
    if known_classes:
        valid &= target.known(values)
    return frame.assign(**{column: values})[valid]


def _column_drift(reference: pd.DataFrame, current: pd.DataFrame, name: str) -> dict[str, Any]:
    from closedloop.domain.checks.drift import compare_frames

    report = compare_frames(reference, current, columns=[name])
    item = report.columns[0].to_dict()
    return {k: item[k] for k in ("column", "kind", "test", "statistic", "p_value", "drifted")}


def _compare(
    reference: pd.DataFrame, current: pd.DataFrame, name: str, continuous: bool
) -> dict[str, Any]:
    """KS for continuous values, chi-square for categories (classes compared as text)."""
    if continuous:
        return _column_drift(
            reference[[name]].astype(np.float64), current[[name]].astype(np.float64), name
        )
    return _column_drift(reference[[name]].astype(str), current[[name]].astype(str), name)


def _continuous(target: TargetSpec | None, *frames: pd.DataFrame, column: str) -> bool:
    if target is not None:
        return target.continuous
    return all(f[column].dtype.kind == "f" for f in frames)


def _prediction_drift(
    evaluation: pd.DataFrame, window: pd.DataFrame, target: TargetSpec | None
) -> dict[str, Any]:
    """Scores when the model has them (numeric KS); else a regression's predicted values (KS)
    or a classifier's predicted classes (chi-square)."""
    use_score = "_score" in evaluation and "_score" in window and window["_score"].notna().any()
    if use_score:
        return _column_drift(evaluation[["_score"]], window[["_score"]].dropna(), "_score")
    current = _typed(window, target, "_prediction")
    if len(current) == 0:
        return {"note": "no logged predictions in the window"}
    reference = _typed(evaluation, target, "_prediction")
    continuous = _continuous(target, reference, current, column="_prediction")
    return _compare(reference, current, "_prediction", continuous)


def _label_drift(
    evaluation: pd.DataFrame, labelled: pd.DataFrame, target: TargetSpec | None
) -> dict[str, Any]:
    continuous = _continuous(target, evaluation, labelled, column="_label")
    return _compare(evaluation, labelled, "_label", continuous)


def _labelled(
    window: pd.DataFrame, feedback: pd.DataFrame, target: TargetSpec | None
) -> tuple[pd.DataFrame | None, int, dict[str, int]]:
    """The window's answered rows that have a label (of the target's type), how many labels
    were left out because they could not be read as that type (or are not one of the
    classes), and the labels that could not be joined to any row, by reason (those naming a
    request id outside the window are not counted: they may answer older traffic)."""
    from closedloop.domain.performance import match_feedback

    if len(feedback) == 0:
        return None, 0, {}
    match = match_feedback(window, feedback)
    ignored = {k: v for k, v in match.ignored.items() if k != "unmatched"}
    joined = _typed(match.joined, target, "_prediction")
    labelled = typed_labels(joined, target)
    return labelled, len(joined) - len(labelled), ignored


def _performance(
    evaluation: pd.DataFrame,
    window: pd.DataFrame,
    labelled: pd.DataFrame | None,
    target: TargetSpec | None,
    gate_metrics: tuple[str, ...],
) -> dict[str, Any]:
    from closedloop.domain.performance import (
        realised_multiclass,
        realised_regression,
    )

    task = None if target is None else target.task
    if task is None and "_score" in evaluation and evaluation["_label"].nunique() == 2:
        task = "binary"  # no readable target: the scores and two classes say binary
    out: dict[str, Any] = {"estimated": _estimate(evaluation, window, task)}
    if "metrics" in out["estimated"]:
        out["assumption"] = ASSUMPTION
    if labelled is None or len(labelled) == 0 or task is None:
        return out
    truth, predicted = labelled["_label"].to_numpy(), labelled["_prediction"].to_numpy()
    try:
        if task == "regression":
            realised = realised_regression(truth, predicted)
        elif task == "multiclass":
            realised = realised_multiclass(truth, predicted, metrics=gate_metrics)
        else:
            realised = _realised_binary(labelled)
        out["realised"] = {**realised, "n_labelled": len(labelled)}
    except ClosedloopError as exc:
        out["realised"] = {"note": exc.message}
    return out


def _estimate(evaluation: pd.DataFrame, window: pd.DataFrame, task: str | None) -> dict[str, Any]:
    """The label-free estimate (binary classifiers with scores), or a note saying why not."""
    from closedloop.domain.performance import estimate_performance, fit_calibrator

    if task == "regression":
        return {"note": "no label-free estimate for regression; realised metrics need labels"}
    if task != "binary":
        return {
            "note": "no label-free estimate for a multiclass model (class probabilities are "
            "not logged); realised metrics need labels"
        }
    scores = window["_score"].dropna().to_numpy(dtype=np.float64) if "_score" in window else None
    if "_score" not in evaluation or scores is None or len(scores) == 0:
        return {"note": "no label-free estimate: the model logs no scores (predict_proba)"}
    try:
        calibrator = fit_calibrator(evaluation["_score"], evaluation["_label"])
        return estimate_performance(scores, calibrator=calibrator).to_dict()
    except ClosedloopError as exc:
        return {"note": exc.message}


def _realised_binary(labelled: pd.DataFrame) -> dict[str, float | None]:
    from closedloop.domain.performance import realised_performance

    scores = labelled.get("_score")
    if scores is not None and not bool(scores.notna().all()):
        scores = None  # a model without predict_proba logs no scores: no ROC AUC
    return realised_performance(labelled["_label"], scores, labelled["_prediction"])
