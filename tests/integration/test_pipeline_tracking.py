"""What a pipeline run records, on SQLite and PostgreSQL: the trained estimator's parameters
(nested ones too) and every figure the gate computed, so that changing a hyperparameter leaves a
trace on the run and two runs can be compared on the gate's own numbers."""

from __future__ import annotations

import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.services import pipeline, registry
from closedloop.services.tracking import get_run
from closedloop.services.workspace import Workspace
from closedloop.settings import GateSettings, PipelineSettings

MODEL = "amounts"

USER_MODULE = """
import numpy as np
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler


def train_ridge(X, y):
    return Ridge(alpha=3.0).fit(X, y)


def train_scaled_ridge(X, y):
    shift = FunctionTransformer(np.negative)
    return make_pipeline(shift, StandardScaler(), Ridge(alpha=3.0, tol=1e-5)).fit(X, y)
"""


def regression_frame(n: int = 800, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
            "region": rng.integers(0, 3, size=n),
        }
    )
    frame["amount"] = 3.0 * frame["x1"] - 2.0 * frame["x2"] + rng.normal(scale=0.5, size=n)
    return frame


@pytest.fixture
def project(ws: Workspace, tmp_path: Path) -> Iterator[tuple[Workspace, str]]:
    """A workspace on each store whose project folder holds a user module with Ridge trainers."""
    module = f"ridge_project_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(USER_MODULE))
    settings = replace(
        ws.settings,
        project_dir=tmp_path,
        pipeline=PipelineSettings(
            model=MODEL,
            trainer=f"{module}:train_ridge",
            target="amount",
            metric="rmse",
            holdout_fraction=0.25,
            seed=1,
        ),
        gate=GateSettings(bootstrap=200, slices=("region",), min_slice_rows=10),
    )
    project_ws = Workspace(settings)
    yield project_ws, module
    project_ws.close()
    sys.modules.pop(module, None)
    while str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def with_trainer(ws: Workspace, trainer: str) -> Workspace:
    return Workspace(replace(ws.settings, pipeline=replace(ws.settings.pipeline, trainer=trainer)))


def test_the_run_records_the_estimators_hyperparameters(
    project: tuple[Workspace, str],
) -> None:
    ws, _ = project
    result = pipeline.train(ws, frame=regression_frame(), source="test", actor="test")

    run = get_run(ws, result.run_id)
    # the pipeline's settings as before, and the estimator's own parameters beside them
    assert run.params["trainer"].endswith(":train_ridge")
    assert run.params["model.alpha"] == 3.0
    assert run.params["model.fit_intercept"] is True
    assert run.params["model.solver"] == "auto"
    assert "alpha" not in run.params  # prefixed: never mistaken for a pipeline setting
    # the version records the same parameters, without the prefix
    assert registry.get_version(ws, MODEL, result.version).params["alpha"] == 3.0


def test_a_pipeline_estimators_nested_parameters_are_recorded(
    project: tuple[Workspace, str],
) -> None:
    ws, module = project
    ws = with_trainer(ws, f"{module}:train_scaled_ridge")
    result = pipeline.train(ws, frame=regression_frame(), source="test", actor="test")

    params = get_run(ws, result.run_id).params
    assert params["model.ridge__alpha"] == 3.0
    assert params["model.ridge__tol"] == 1e-5
    assert params["model.standardscaler__with_mean"] is True
    # estimators by class name, functions by qualified name, the steps as a short text
    assert params["model.ridge"] == "Ridge"
    assert params["model.functiontransformer__func"] == "numpy.negative"
    assert params["model.steps"] == (
        "[('functiontransformer', FunctionTransformer), "
        "('standardscaler', StandardScaler), ('ridge', Ridge)]"
    )
    version = registry.get_version(ws, MODEL, result.version)
    assert version.params["ridge__alpha"] == 3.0


def test_every_figure_the_gate_computed_is_a_metric_of_the_run(
    project: tuple[Workspace, str],
) -> None:
    ws, module = project
    frame = regression_frame()
    first = pipeline.train(ws, frame=frame, source="test", actor="test")
    first_run = get_run(ws, first.run_id)
    # no incumbent: the candidate's metric and the verdict, nothing compared
    assert first_run.metrics == {
        "rmse": pytest.approx(first.decision.candidate),
        "gate.passed": 1.0,
    }

    second = pipeline.train(
        with_trainer(ws, f"{module}:train_scaled_ridge"), frame=frame, source="test", actor="t"
    )
    decision = second.decision
    assert second.incumbent_version == first.version
    assert decision.interval is not None and decision.latency is not None
    assert len(decision.slices) == 3

    metrics = get_run(ws, second.run_id).metrics
    expected = {
        "rmse": decision.candidate,
        "gate.incumbent.rmse": decision.incumbent,
        "gate.improvement": decision.improvement,
        "gate.improvement.low": decision.interval.low,
        "gate.improvement.high": decision.interval.high,
        "gate.bootstrap.undefined": 0.0,
        "gate.passed": 1.0 if decision.passed else 0.0,
        "gate.latency.candidate_seconds_per_row": decision.latency.candidate_seconds_per_row,
        "gate.latency.incumbent_seconds_per_row": decision.latency.incumbent_seconds_per_row,
        "gate.latency.allowed_seconds_per_row": decision.latency.allowed_seconds_per_row,
        "gate.latency.ratio": decision.latency.ratio,
    }
    for s in decision.slices:
        expected[f"gate.slice.region={s.value}.candidate"] = s.candidate
        expected[f"gate.slice.region={s.value}.incumbent"] = s.incumbent
        expected[f"gate.slice.region={s.value}.rows"] = s.n
    assert metrics == {k: pytest.approx(v, rel=1e-12) for k, v in expected.items()}
    assert {s.value for s in decision.slices} == {0, 1, 2}
    # the same model on the same rows: the incumbent's figure is the first run's own metric
    assert metrics["gate.incumbent.rmse"] == pytest.approx(first_run.metrics["rmse"], rel=1e-9)
