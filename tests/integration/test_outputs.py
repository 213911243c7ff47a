"""A monitor check also judges the model's outputs: prediction drift, labels, performance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from tests.support import LABEL, features, fit_model, loans

from closedloop.domain.simulate import LoanSimulator
from closedloop.services import monitoring, registry
from closedloop.services.workspace import Workspace


def _log(ws: Workspace, model: Any, frame: pd.DataFrame, prefix: str) -> list[str]:
    """Serve ``frame`` through ``model`` into the prediction log, one request per row."""
    X = features(frame)
    labels, scores = model.predict(X), model.predict_proba(X)[:, 1]
    ids = [f"{prefix}-{i}" for i in range(len(frame))]
    log = ws.prediction_log()
    try:
        log.append("loans", 1, ids, X, labels, scores)
    finally:
        log.close()
    return ids


@pytest.fixture
def served(sqlite_ws: Workspace) -> Iterator[tuple[Workspace, Any]]:
    train, held_out = loans(3000, seed=1), loans(1000, seed=2)
    model = fit_model(train)
    registry.register_version(
        sqlite_ws,
        "loans",
        model,
        features(train),
        evaluation=(features(held_out), held_out[LABEL]),
    )
    registry.set_alias(sqlite_ws, "loans", "production", 1)
    yield sqlite_ws, model


def test_a_calm_window_has_stable_predictions_and_an_estimate_close_to_the_truth(served):
    ws, model = served
    window = loans(2000, seed=3)
    _log(ws, model, window, "calm")
    check = monitoring.monitor(ws, "loans", window_rows=2000)
    outputs = check.to_dict()["outputs"]
    assert outputs["prediction_drift"]["column"] == "_score"
    assert outputs["prediction_drift"]["drifted"] is False
    estimated = outputs["performance"]["estimated"]["metrics"]["accuracy"]
    truth = float((model.predict(features(window)) == window[LABEL]).mean())
    assert estimated["lower"] - 0.02 <= truth <= estimated["upper"] + 0.02
    assert "no concept drift" in outputs["performance"]["assumption"]
    assert "realised" not in outputs["performance"]  # no labels have arrived


def test_arrived_labels_give_realised_performance_and_label_drift(served):
    ws, model = served
    shifted = LoanSimulator(seed=4, drift_at=0).stream(2000).drop(columns=["applied_at"])
    ids = _log(ws, model, shifted, "late")
    ws.feedback_log().append("loans", ids, shifted[LABEL].tolist())
    outputs = monitoring.monitor(ws, "loans", window_rows=2000).outputs
    assert outputs["prediction_drift"]["drifted"] is True  # inputs moved, so did the scores
    realised = outputs["performance"]["realised"]
    assert realised["n_labelled"] == 2000
    truth = float((model.predict(features(shifted)) == shifted[LABEL]).mean())
    assert realised["accuracy"] == pytest.approx(truth)
    assert outputs["label_drift"]["column"] == "_label"


def test_a_version_without_evaluation_rows_says_why_output_checks_are_skipped(sqlite_ws):
    frame = loans(1000)
    model = fit_model(frame)
    registry.register_version(sqlite_ws, "loans", model, features(frame))
    registry.set_alias(sqlite_ws, "loans", "production", 1)
    _log(sqlite_ws, model, loans(500, seed=5), "x")
    outputs = monitoring.monitor(sqlite_ws, "loans", window_rows=500).outputs
    assert "no stored evaluation rows" in outputs["note"]
