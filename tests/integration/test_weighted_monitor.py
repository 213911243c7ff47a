"""`monitor.min_weighted_share`: a check weighted by the version's permutation importance."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from closedloop.errors import ConflictError
from closedloop.services import registry
from closedloop.services.monitoring import DriftOptions, monitor
from closedloop.services.workspace import Workspace

MODEL = "scores"


def frame(
    n: int, seed: int, *, shift_noise: float = 0.0, shift_signal: float = 0.0
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {"signal": rng.normal(shift_signal, 1, n), "noise": rng.normal(shift_noise, 1, n)}
    )


def deploy(ws: Workspace, *, evaluation: bool = True) -> LogisticRegression:
    X = frame(3000, 0)
    y = (X["signal"] + 0.3 * np.random.default_rng(1).normal(size=3000) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    registry.register_version(
        ws, MODEL, model, X, evaluation=(X.tail(1000), y.tail(1000)) if evaluation else None
    )
    registry.set_alias(ws, MODEL, "production", 1, actor="test")
    return model


def serve(ws: Workspace, model: LogisticRegression, rows: pd.DataFrame) -> None:
    log = ws.prediction_log()
    try:
        log.append(
            MODEL,
            1,
            [f"r{i}" for i in range(len(rows))],
            rows,
            model.predict(rows),
            model.predict_proba(rows)[:, 1],
        )
    finally:
        log.close()


def weighted(ws: Workspace, share: float) -> Workspace:
    monitor_settings = replace(ws.settings.monitor, min_weighted_share=share, min_rows=100)
    return Workspace(replace(ws.settings, monitor=monitor_settings))


def test_drift_only_in_a_column_the_model_ignores_is_reported_but_not_a_drifted_check(
    ws: Workspace,
) -> None:
    model = deploy(ws)
    serve(ws, model, frame(3000, 5, shift_noise=0.6))
    plain = monitor(ws, MODEL, options=DriftOptions(multivariate=False, quality=False))
    assert plain.report.drifted and plain.report.drifted_columns == ["noise"]

    checked = weighted(ws, 0.3)
    try:
        check = monitor(checked, MODEL, options=DriftOptions(multivariate=False, quality=False))
    finally:
        checked.close()
    assert check.report.drifted_columns == ["noise"]
    assert not check.report.drifted
    weighting = check.report.weighting
    assert weighting is not None and weighting["weighted_share"] < 0.05
    assert weighting["weights"]["signal"] > weighting["weights"]["noise"]


def test_drift_in_the_column_the_model_relies_on_is_a_drifted_check(ws: Workspace) -> None:
    model = deploy(ws)
    serve(ws, model, frame(3000, 6, shift_signal=0.6))
    checked = weighted(ws, 0.3)
    try:
        check = monitor(checked, MODEL, options=DriftOptions(multivariate=False, quality=False))
    finally:
        checked.close()
    assert check.report.drifted and check.report.drifted_columns == ["signal"]
    assert check.report.weighting is not None
    assert check.report.weighting["weighted_share"] > 0.95


def test_a_version_without_held_out_rows_cannot_be_weighted(ws: Workspace) -> None:
    model = deploy(ws, evaluation=False)
    serve(ws, model, frame(500, 7))
    checked = weighted(ws, 0.3)
    try:
        with pytest.raises(ConflictError, match="no held-out rows") as caught:
            monitor(checked, MODEL)
    finally:
        checked.close()
    assert caught.value.hint and "min_weighted_share = 0" in caught.value.hint
