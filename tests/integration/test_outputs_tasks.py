"""Monitoring a regression and a multiclass model on SQLite and PostgreSQL: prediction and label
drift with the right test, realised metrics from posted labels, and the agent's performance
trigger. Traffic goes through the registered version into the real prediction log; labels go to
the real feedback log (some as strings, as JSON clients send them)."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, r2_score
from tests.support import PROGRESSION, SPECIES, diabetes, fit_multiclass, fit_ridge, iris

from closedloop.services import agent as agents
from closedloop.services import events, monitoring, pipeline, registry
from closedloop.services.agent import Agent
from closedloop.services.events import utcnow
from closedloop.services.workspace import Workspace
from closedloop.settings import AgentSettings, GateSettings, MonitorSettings, PipelineSettings

WINDOW = 300


@dataclass(frozen=True)
class Problem:
    model: str
    target: str
    frame: pd.DataFrame
    trainer: str
    metric: str

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]


REGRESSION = Problem("diabetes", PROGRESSION, diabetes(), "tests.support:fit_ridge", "rmse")
MULTICLASS = Problem("iris", SPECIES, iris(), "tests.support:fit_multiclass", "accuracy")


def register(ws: Workspace, problem: Problem, fit: Any) -> None:
    """Train on two thirds, keep the rest as the version's held-out evaluation rows."""
    frame = problem.frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cut = 2 * len(frame) // 3
    train, held_out = frame[:cut], frame[cut:]
    model = fit(train[problem.features], train[problem.target])
    registry.register_version(
        ws,
        problem.model,
        model,
        train[problem.features],
        evaluation=(held_out[problem.features], held_out[problem.target]),
    )
    registry.set_alias(ws, problem.model, "production", 1)


def serve(ws: Workspace, problem: Problem, rows: pd.DataFrame, prefix: str) -> np.ndarray:
    """Predict ``rows`` with production as the server does and log them; returns predictions."""
    number = registry.resolve_alias(ws, problem.model)
    assert number is not None
    loaded = registry.load_version(ws, problem.model, number)
    X = rows[problem.features].reset_index(drop=True)
    answer = loaded.predict(X)
    log = ws.prediction_log()
    try:
        log.append(
            problem.model,
            number,
            [f"{prefix}-{i}" for i in range(len(X))],
            X,
            np.asarray(answer.labels),
            None if answer.scores is None else np.asarray(answer.scores),
        )
    finally:
        log.close()
    return np.asarray(answer.labels)


def post_labels(ws: Workspace, problem: Problem, labels: list[Any], prefix: str) -> None:
    """The first half of the labels as strings (one call), the rest as numbers (another)."""
    ids = [f"{prefix}-{i}" for i in range(len(labels))]
    half = len(labels) // 2
    feedback = ws.feedback_log()
    feedback.append(problem.model, ids[:half], [str(v) for v in labels[:half]])
    feedback.append(problem.model, ids[half:], labels[half:])


def traffic(problem: Problem, seed: int) -> pd.DataFrame:
    return problem.frame.sample(n=WINDOW, replace=True, random_state=seed).reset_index(drop=True)


# -- the monitor check ------------------------------------------------------------------------


def test_a_regression_model_gets_ks_tests_and_realised_mae_rmse_r2(ws: Workspace) -> None:
    register(ws, REGRESSION, fit_ridge)
    assert registry.get_version(ws, "diabetes", 1).signature["target"] == {
        "task": "regression",
        "dtype": "float",
        "classes": None,
    }
    rows = traffic(REGRESSION, seed=1)
    predicted = serve(ws, REGRESSION, rows, "r")
    truth = rows[PROGRESSION].to_numpy(dtype=float)
    post_labels(ws, REGRESSION, truth.tolist(), "r")

    outputs = monitoring.monitor(ws, "diabetes", window_rows=WINDOW).outputs

    assert outputs["task"] == "regression"
    assert (outputs["prediction_drift"]["column"], outputs["prediction_drift"]["test"]) == (
        "_prediction",
        "ks",
    )
    assert outputs["label_drift"]["test"] == "ks"
    assert outputs["label_drift"]["kind"] == "numeric"
    realised = outputs["performance"]["realised"]
    assert realised["n_labelled"] == WINDOW  # the labels posted as strings count too
    assert realised["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert realised["rmse"] == pytest.approx(float(np.sqrt(np.mean((truth - predicted) ** 2))))
    assert realised["r2"] == pytest.approx(r2_score(truth, predicted))
    assert "accuracy" not in realised
    estimated = outputs["performance"]["estimated"]
    assert "no label-free estimate for regression" in estimated["note"]
    assert "assumption" not in outputs["performance"]


def test_a_multiclass_model_gets_chi_square_tests_and_realised_accuracy_macro_f1(
    ws: Workspace,
) -> None:
    register(ws, MULTICLASS, fit_multiclass)
    target = registry.get_version(ws, "iris", 1).signature["target"]
    assert target == {"task": "multiclass", "dtype": "integer", "classes": [0, 1, 2]}
    rows = traffic(MULTICLASS, seed=2)
    predicted = serve(ws, MULTICLASS, rows, "m")
    truth = rows[SPECIES].to_numpy()
    post_labels(ws, MULTICLASS, truth.tolist(), "m")  # "2" and 2 are the same class

    outputs = monitoring.monitor(ws, "iris", window_rows=WINDOW).outputs

    assert outputs["task"] == "multiclass"
    assert outputs["prediction_drift"]["column"] == "_prediction"
    assert outputs["prediction_drift"]["test"] == "chi2"
    assert outputs["label_drift"]["test"] == "chi2"
    realised = outputs["performance"]["realised"]
    assert realised["n_labelled"] == WINDOW
    assert realised["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert realised["accuracy"] > 0.9  # the string labels matched the int predictions
    assert realised["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    assert (
        "no label-free estimate for a multiclass model"
        in (outputs["performance"]["estimated"]["note"])
    )


def test_a_stored_label_that_is_not_of_the_target_type_is_left_out_and_counted(
    ws: Workspace,
) -> None:
    register(ws, REGRESSION, fit_ridge)
    rows = traffic(REGRESSION, seed=3)
    serve(ws, REGRESSION, rows, "r")
    labels: list[Any] = rows[PROGRESSION].astype(str).tolist()
    labels[:5] = ["n/a"] * 5
    ws.feedback_log().append("diabetes", [f"r-{i}" for i in range(WINDOW)], labels)
    outputs = monitoring.monitor(ws, "diabetes", window_rows=WINDOW).outputs
    assert outputs["performance"]["realised"]["n_labelled"] == WINDOW - 5
    assert outputs["unreadable_labels"]["n"] == 5
    assert "a number" in outputs["unreadable_labels"]["expected"]


def test_labels_that_cannot_be_joined_or_are_not_a_class_are_counted_not_fatal(
    ws: Workspace,
) -> None:
    """Stored labels the feedback route would refuse today (an older version, a script):
    a class the model does not know, a label for a request nobody made, a file without row
    positions next to labels with them, and one with an unreadable row. The check still
    reports realised metrics from every good label and counts the rest."""
    register(ws, MULTICLASS, fit_multiclass)
    rows = traffic(MULTICLASS, seed=4)
    predicted = serve(ws, MULTICLASS, rows, "m")
    truth = rows[SPECIES].to_numpy()
    feedback = ws.feedback_log()
    ids = [f"m-{i}" for i in range(WINDOW)]
    feedback.append("iris", ids[:100], truth[:100].tolist(), rows=[0] * 100)
    feedback.append("iris", ids[100:], truth[100:].tolist())  # no row positions
    feedback.append("iris", ["nonexistent"], ["banana"])
    feedback.append("iris", ["m-0"], [7])  # not one of the classes 0, 1, 2: replaces m-0's
    folder = Path(ws.settings.feedback_url) / "model=iris"
    pd.DataFrame({"_request_id": ["m-1", None], "_row": ["x", "0"], "_label": [2, 2]}).to_parquet(
        folder / f"part-29990101T000000000000Z-{uuid.uuid4().hex}.parquet"
    )

    outputs = monitoring.monitor(ws, "iris", window_rows=WINDOW).outputs

    realised = outputs["performance"]["realised"]
    assert realised["n_labelled"] == WINDOW - 1
    assert realised["accuracy"] == pytest.approx(accuracy_score(truth[1:], predicted[1:]))
    assert outputs["unreadable_labels"]["n"] == 1
    assert "classes: 0, 1, 2" in outputs["unreadable_labels"]["expected"]
    assert outputs["ignored_labels"] == {"n": 2, "malformed": 2}
    assert outputs["label_drift"]["test"] == "chi2"


# -- the agent's performance trigger ----------------------------------------------------------


@pytest.fixture
def project_for(ws: Workspace) -> Any:
    """A workspace whose pipeline trains ``problem`` (first version promoted by the pipeline),
    with drift alerts off and the realised-performance trigger on."""
    made: list[Workspace] = []

    def make(problem: Problem, performance_drop: float) -> Workspace:
        settings = replace(
            ws.settings,
            pipeline=PipelineSettings(
                model=problem.model,
                loader="",
                trainer=problem.trainer,
                target=problem.target,
                metric=problem.metric,
                holdout_fraction=0.3,
            ),
            monitor=MonitorSettings(window_rows=WINDOW, min_rows=100, persistence=10),
            agent=AgentSettings(
                interval_seconds=1,
                lease_seconds=60,
                on_drift=False,
                performance_drop=performance_drop,
                retrain_data="traffic",
                min_labelled_rows=100,
                rollout="promote",
            ),
            gate=GateSettings(bootstrap=200),
        )
        project = Workspace(settings)
        made.append(project)
        result = pipeline.train(project, frame=problem.frame, source="bundled", actor="alice")
        assert result.promoted
        return project

    yield make
    for project in made:
        project.close()
    folder = str(ws.settings.project_dir)
    if folder in sys.path:
        sys.path.remove(folder)


def drive(project: Workspace, problem: Problem, worse: Any) -> list[dict[str, Any]]:
    """Two passes of the agent (an injected clock, an hour apart): after calm traffic with true
    labels, then after traffic whose labels moved (``worse`` maps the true labels)."""
    clock_at = [utcnow()]
    agent = Agent(project, clock=lambda: clock_at[0])
    checks = []
    try:
        for i, relabel in enumerate((lambda y: y, worse)):
            rows = traffic(problem, seed=10 + i)
            serve(project, problem, rows, f"p{i}")
            labels = relabel(rows[problem.target].to_numpy())
            post_labels(project, problem, labels.tolist(), f"p{i}")
            report = agent.run_once()
            (check,) = [a for a in report.actions if a["step"] == "performance"]
            checks.append(check)
            if i == 0:
                assert triggers(project, problem.model) == []
            clock_at[0] += timedelta(hours=1)
    finally:
        agent.close()
    return checks


def triggers(project: Workspace, model: str) -> list[str]:
    requested = events.list_events(project, model=model, kinds=(agents.REQUESTED,))
    return [e.payload["trigger"] for e in requested]


def test_a_regression_whose_realised_rmse_rises_triggers_a_retrain(project_for: Any) -> None:
    project = project_for(REGRESSION, performance_drop=15.0)
    baseline = registry.get_version(project, "diabetes", 1).metrics["rmse"]
    calm, worse = drive(project, REGRESSION, lambda y: y + 80.0)  # the outcome shifted
    assert calm["metric"] == "rmse" and calm["baseline"] == baseline
    assert calm["n_rows"] == WINDOW and not calm["dropped"]
    assert worse["current"] > baseline + 15.0  # rmse is an error: higher is worse
    assert worse["dropped"] and worse["drop"] == pytest.approx(worse["current"] - baseline)
    assert triggers(project, "diabetes") == ["performance"]
    (done,) = events.list_events(project, model="diabetes", kinds=(agents.FINISHED,))
    assert done.payload["status"] != "failed", done.payload  # string labels retrain as floats
    alerts = events.list_events(project, model="diabetes", kinds=("alert.raised",))
    assert [e.payload["kind"] for e in alerts] == ["performance_drop"]
    assert "rmse rose" in alerts[0].payload["title"]


def test_a_multiclass_model_whose_realised_accuracy_drops_triggers_a_retrain(
    project_for: Any,
) -> None:
    project = project_for(MULTICLASS, performance_drop=0.2)
    baseline = registry.get_version(project, "iris", 1).metrics["accuracy"]
    calm, worse = drive(project, MULTICLASS, lambda y: (y + 1) % 3)  # the classes got mixed up
    assert calm["metric"] == "accuracy" and calm["baseline"] == baseline
    assert not calm["dropped"]
    assert worse["dropped"] and worse["current"] < baseline - 0.2
    assert triggers(project, "iris") == ["performance"]
