"""What a traffic window says about the model's outputs: prediction drift, label drift and
performance (estimated without labels, realised when labels have arrived).

The reference is the version's held-out evaluation rows stored at registration
(:func:`closedloop.services.registry.load_evaluation`): its predictions and scores were made on
data the model did not train on, so they are the fair comparison for live outputs. Versions
registered without an evaluation get no output checks (the result says why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop.errors import ClosedloopError
from closedloop.services import registry
from closedloop.services.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

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
    primary = window[window["_role"] == "primary"] if "_role" in window else window
    result: dict[str, Any] = {"prediction_drift": _prediction_drift(evaluation, primary)}
    feedback = ws.feedback_log().read(model)
    labelled = _labelled(primary, feedback)
    if labelled is not None and len(labelled) >= 2:
        result["label_drift"] = _column_drift(
            evaluation[["_label"]].astype(str), labelled[["_label"]].astype(str), "_label"
        )
    result["performance"] = _performance(evaluation, primary, labelled)
    return result


def _column_drift(reference: pd.DataFrame, current: pd.DataFrame, name: str) -> dict[str, Any]:
    from closedloop.domain.drift import compare_frames

    report = compare_frames(reference, current, columns=[name])
    item = report.columns[0].to_dict()
    return {k: item[k] for k in ("column", "kind", "test", "statistic", "p_value", "drifted")}


def _prediction_drift(evaluation: pd.DataFrame, window: pd.DataFrame) -> dict[str, Any]:
    """Scores when the model has them (numeric KS), else predicted labels (chi-square)."""
    use_score = "_score" in evaluation and "_score" in window and window["_score"].notna().any()
    if use_score:
        return _column_drift(evaluation[["_score"]], window[["_score"]].dropna(), "_score")
    predictions = window["_prediction"].dropna()
    if len(predictions) == 0:
        return {"note": "no logged predictions in the window"}
    numeric = evaluation["_prediction"].dtype.kind in "if" and predictions.dtype.kind in "if"
    reference = evaluation[["_prediction"]] if numeric else evaluation[["_prediction"]].astype(str)
    current = predictions.to_frame() if numeric else predictions.astype(str).to_frame()
    return _column_drift(reference, current, "_prediction")


def _labelled(window: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame | None:
    from closedloop.domain.performance import join_feedback

    if len(feedback) == 0:
        return None
    try:
        return join_feedback(window, feedback)
    except ClosedloopError:
        return None


def _performance(
    evaluation: pd.DataFrame, window: pd.DataFrame, labelled: pd.DataFrame | None
) -> dict[str, Any]:
    from closedloop.domain.performance import (
        estimate_performance,
        fit_calibrator,
        realised_performance,
    )

    out: dict[str, Any] = {}
    binary = "_score" in evaluation and evaluation["_label"].nunique() == 2
    scores = window["_score"].dropna().to_numpy(dtype=np.float64) if "_score" in window else None
    if binary and scores is not None and len(scores) > 0:
        try:
            calibrator = fit_calibrator(evaluation["_score"], evaluation["_label"])
            estimate = estimate_performance(scores, calibrator=calibrator)
            out["estimated"] = estimate.to_dict()
            out["assumption"] = ASSUMPTION
        except ClosedloopError as exc:
            out["estimated"] = {"note": exc.message}
    if labelled is not None and len(labelled) > 0 and binary:
        try:
            out["realised"] = {
                **realised_performance(
                    labelled["_label"], labelled.get("_score"), labelled["_prediction"]
                ),
                "n_labelled": len(labelled),
            }
        except ClosedloopError as exc:
            out["realised"] = {"note": exc.message}
    return out
