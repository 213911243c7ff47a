"""The training pipeline end to end: a real project folder, a real user module, a real store.

Every test writes ``closedloop.toml`` and a user module that does not import closedloop into
``tmp_path``; the module gets a unique name and is removed from ``sys.modules`` (and the project
folder from ``sys.path``) afterwards, so no test sees another test's code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import mean_squared_error, roc_auc_score
from tests.support import loans

from closedloop.domain.gate import GateDecision
from closedloop.errors import ConfigError, InvalidInputError, UserCodeError
from closedloop.services import events, registry
from closedloop.services.pipeline import TrainResult, split_holdout, train
from closedloop.services.tracking import frame_hash, get_run, list_runs
from closedloop.services.workspace import Workspace
from closedloop.settings import load_settings

MODEL = "loans"
TARGET = "default"

# The user's code: plain functions, no closedloop import. Each trainer appends what it fitted to
# FITTED so a test can compare the registered (pickled, reloaded) model with the fitted one.
USER_MODULE = '''
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

HERE = Path(__file__).parent
CATEGORICAL = ["purpose", "region"]
FITTED = []
CALLS = []


def _keep(model):
    FITTED.append(model)
    return model


def load_data():
    CALLS.append("load_data")
    return pd.read_parquet(HERE / "data.parquet")


def train_prior(X, y):
    return _keep(DummyClassifier(strategy="prior").fit(X, y))


def train_weak(X, y):
    """Logistic regression on one weakly informative column."""
    pick = ColumnTransformer([("age", StandardScaler(), ["age"])])
    return _keep(make_pipeline(pick, LogisticRegression()).fit(X, y))


def _encoder(dense=False):
    numeric = [c for c in X_COLUMNS if c not in CATEGORICAL]
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
             CATEGORICAL),
            ("numbers", StandardScaler(), numeric),
        ],
        verbose_feature_names_out=False,
    )
    return encode.set_output(transform="pandas") if dense else encode


X_COLUMNS = [
    "income", "loan_amount", "age", "credit_score", "debt_to_income", "months_employed",
    "purpose", "region",
]


def train_good(X, y):
    return _keep(make_pipeline(_encoder(), LogisticRegression(max_iter=1000)).fit(X, y))


def train_inverted(X, y):
    """Learns the opposite of the target: a much worse model than train_good."""
    return _keep(make_pipeline(_encoder(), LogisticRegression(max_iter=1000)).fit(X, 1 - y))


def train_lightgbm(X, y):
    import lightgbm

    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1, random_state=0)
    return _keep(make_pipeline(_encoder(dense=True), model).fit(X, y))


def train_xgboost(X, y):
    import xgboost

    model = xgboost.XGBClassifier(n_estimators=20, random_state=0)
    return _keep(make_pipeline(_encoder(dense=True), model).fit(X, y))


class Slow:
    """A fitted model whose every predict and predict_proba call first sleeps."""

    def __init__(self, model, seconds):
        self.model = model
        self.seconds = seconds

    def fit(self, X, y):
        self.model.fit(X, y)
        return self

    def predict(self, X):
        time.sleep(self.seconds)
        return self.model.predict(X)

    def predict_proba(self, X):
        time.sleep(self.seconds)
        return self.model.predict_proba(X)


def train_slow(X, y):
    """train_good, but every prediction call takes 50 ms longer."""
    return _keep(Slow(train_good(X, y), 0.05))


def train_raises(X, y):
    raise ValueError(f"the trainer broke on {len(X)} rows")


def load_list():
    return [1, 2, 3]


def load_without_target():
    return pd.read_parquet(HERE / "data.parquet").drop(columns=["default"])


def load_raises():
    raise FileNotFoundError("no such table: loans_2024")


def load_regression():
    rng = np.random.default_rng(7)
    x1 = rng.normal(size=400)
    x2 = rng.normal(size=400)
    y = 3.0 * x1 - 2.0 * x2 + rng.normal(scale=0.5, size=400)
    return pd.DataFrame({"x1": x1, "x2": x2, "noise": rng.normal(size=400), "amount": y})


def train_mean(X, y):
    return _keep(DummyRegressor(strategy="mean").fit(X, y))


def train_linear(X, y):
    return _keep(LinearRegression().fit(X, y))


def train_one_feature(X, y):
    pick = ColumnTransformer([("x1", "passthrough", ["x1"])])
    return _keep(make_pipeline(pick, LinearRegression()).fit(X, y))
'''


class Project:
    """A project folder with a closedloop.toml and a uniquely named user module."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.module = f"user_pipeline_{uuid.uuid4().hex[:12]}"
        self.metadata_url = f"sqlite:///{folder / '.closedloop' / 'metadata.db'}"
        self._open: list[Workspace] = []
        (folder / f"{self.module}.py").write_text(USER_MODULE, encoding="utf-8")
        self.write_data(loans(600, seed=0))

    def write_data(self, frame: pd.DataFrame) -> None:
        frame.to_parquet(self.folder / "data.parquet", index=False)

    def data(self) -> pd.DataFrame:
        return pd.read_parquet(self.folder / "data.parquet")

    def configure(
        self,
        *,
        trainer: str = "train_good",
        loader: str = "load_data",
        target: str = TARGET,
        metric: str = "roc_auc",
        gate_margin: float = 0.0,
        raw_trainer: str | None = None,
        raw_loader: str | None = None,
        gate: dict[str, Any] | None = None,
    ) -> Workspace:
        """(Re)write closedloop.toml and open a workspace from it, as `closedloop train` does."""
        toml = textwrap.dedent(
            f"""\
            [store]
            metadata_url = "{self.metadata_url}"
            artifacts_url = ".closedloop/artifacts"

            [pipeline]
            model = "{MODEL}"
            loader = "{raw_loader if raw_loader is not None else f"{self.module}:{loader}"}"
            trainer = "{raw_trainer if raw_trainer is not None else f"{self.module}:{trainer}"}"
            target = "{target}"
            metric = "{metric}"
            gate_margin = {gate_margin!r}
            holdout_fraction = 0.25
            seed = 3
            """
        )
        if gate:
            toml += "\n[gate]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in gate.items())
        (self.folder / "closedloop.toml").write_text(toml, encoding="utf-8")
        ws = Workspace(load_settings(self.folder, env={}))
        self._open.append(ws)
        return ws

    def train(self, **settings: Any) -> tuple[Workspace, TrainResult]:
        ws = self.configure(**settings)
        return ws, train(ws, actor="test:pipeline")

    @property
    def user(self) -> Any:
        return sys.modules[self.module]

    def close(self) -> None:
        for ws in self._open:
            ws.close()
        sys.modules.pop(self.module, None)
        while str(self.folder) in sys.path:
            sys.path.remove(str(self.folder))


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    proj = Project(tmp_path)
    yield proj
    proj.close()


# train_good one-hot encodes and scales every column where train_weak scales one, so it does
# about twice the work per row. Tests of the improvement rule allow for that; the latency check
# has tests of its own (below, and in tests/unit/test_gate.py).
COSTLIER_CANDIDATE: dict[str, Any] = {"latency_tolerance": 4.0}


def holdout_of(ws: Workspace, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    cfg = ws.settings.pipeline
    _, holdout = split_holdout(frame, cfg.target, cfg.holdout_fraction, cfg.seed)
    return holdout.drop(columns=[cfg.target]), holdout[cfg.target]


def auc_of(estimator: Any, X: pd.DataFrame, y: pd.Series) -> float:
    return float(roc_auc_score(y, estimator.predict_proba(X)[:, 1]))


def gate_events(ws: Workspace) -> list[events.Event]:
    return events.list_events(ws, model=MODEL, kinds=("gate.decided",))


def test_the_settings_come_from_the_project_file(project: Project) -> None:
    ws = project.configure(trainer="train_weak", gate_margin=0.01)
    cfg = ws.settings.pipeline
    assert ws.settings.project_dir == project.folder
    assert cfg.trainer == f"{project.module}:train_weak"
    assert (cfg.gate_margin, cfg.holdout_fraction, cfg.seed) == (0.01, 0.25, 3)
    assert ws.settings.artifacts_url == str(project.folder / ".closedloop" / "artifacts")


def test_first_train_registers_v1_and_promotes_it(project: Project) -> None:
    ws, result = project.train(trainer="train_good")
    frame = project.data()

    assert (result.model, result.version, result.promoted) == (MODEL, 1, True)
    assert result.decision.passed
    assert result.decision.incumbent is None
    assert "no incumbent" in result.decision.reason
    assert (result.n_train, result.n_holdout) == (450, 150)
    assert registry.resolve_alias(ws, MODEL) == 1
    assert project.user.CALLS == ["load_data"]

    X_hold, y_hold = holdout_of(ws, frame)
    fitted = project.user.FITTED[-1]
    expected = auc_of(fitted, X_hold, y_hold)
    assert result.decision.candidate == pytest.approx(expected, abs=1e-12)
    assert 0.6 < expected < 1.0

    run = get_run(ws, result.run_id)
    assert run.status == "FINISHED"
    assert run.error is None
    assert run.experiment == MODEL
    # the candidate's metric and the gate's verdict (no incumbent: nothing else was computed)
    assert run.metrics == {"roc_auc": pytest.approx(expected, abs=1e-12), "gate.passed": 1.0}
    assert run.params["trainer"] == f"{project.module}:train_good"
    assert run.params["target"] == TARGET
    assert [d["role"] for d in run.datasets] == ["training"]

    version = registry.get_version(ws, MODEL, 1)
    assert version.run_id == run.id
    assert version.metrics == {"roc_auc": pytest.approx(expected, abs=1e-12)}
    assert version.aliases == ["production"]
    lineage = version.lineage
    assert lineage["run_id"] == run.id
    assert lineage["dataset"]["sha256"] == run.datasets[0]["sha256"] == frame_hash(frame)
    assert lineage["dataset"]["n_rows"] == 600
    assert lineage["dataset"]["source"] == f"{project.module}:load_data"
    assert lineage["dataset"]["schema"] == {str(c): str(t) for c, t in frame.dtypes.items()}
    assert {"git_commit", "git_dirty"} <= set(lineage)
    packages = lineage["environment"]["packages"]
    for name in ("numpy", "pandas", "scikit-learn"):
        assert packages[name] == importlib_metadata.version(name)
    assert lineage["gate"]["passed"] is True
    assert lineage["gate"]["incumbent_version"] is None
    assert lineage["gate"]["n_holdout"] == 150
    # The signature covers the features, never the target.
    assert [c["name"] for c in version.signature["columns"]] == [
        c for c in frame.columns if c != TARGET
    ]

    (decided,) = gate_events(ws)
    assert decided.version == 1
    assert decided.actor == "test:pipeline"
    assert decided.payload["passed"] is True
    moves = registry.alias_history(ws, MODEL, "production")
    assert [(m.payload["from_version"], m.payload["to_version"]) for m in moves] == [(None, 1)]
    assert "gate passed" in moves[0].reason


@pytest.mark.postgres
def test_first_train_records_the_same_on_postgresql(project: Project, pg_url: str) -> None:
    project.metadata_url = pg_url
    ws, result = project.train(trainer="train_weak")
    assert ws.metadata.dialect == "postgresql"
    assert (result.version, result.promoted) == (1, True)
    run = get_run(ws, result.run_id)
    assert run.status == "FINISHED"
    version = registry.get_version(ws, MODEL, 1)
    assert version.lineage["dataset"]["sha256"] == run.datasets[0]["sha256"]
    assert registry.resolve_alias(ws, MODEL) == 1
    assert [e.version for e in gate_events(ws)] == [1]


def test_lineage_records_the_projects_git_commit_and_dirtiness(project: Project) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            cwd=project.folder,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    project.configure(trainer="train_weak")
    git("init", "-q")
    git("add", f"{project.module}.py", "closedloop.toml")
    git("commit", "-q", "-m", "pipeline")
    commit = git("rev-parse", "HEAD")

    ws, first = project.train(trainer="train_weak")
    lineage = registry.get_version(ws, MODEL, first.version).lineage
    assert (lineage["git_commit"], lineage["git_dirty"]) == (commit, False)
    assert get_run(ws, first.run_id).code == {"git_commit": commit, "git_dirty": False}

    ws, second = project.train(trainer="train_good")  # rewrites the committed closedloop.toml
    lineage = registry.get_version(ws, MODEL, second.version).lineage
    assert (lineage["git_commit"], lineage["git_dirty"]) == (commit, True)


def test_lineage_git_fields_are_none_outside_a_repository(project: Project) -> None:
    ws, result = project.train(trainer="train_weak")
    lineage = registry.get_version(ws, MODEL, result.version).lineage
    assert (lineage["git_commit"], lineage["git_dirty"]) == (None, None)


def test_a_better_candidate_passes_and_is_compared_on_the_same_held_out_rows(
    project: Project,
) -> None:
    project.train(trainer="train_weak")
    # New data: the incumbent must be re-scored on the new held-out rows, not on its old metric.
    # 2,000 rows (500 held out): enough for the improvement's interval to clear the margin.
    new_frame = loans(2000, seed=1)
    project.write_data(new_frame)
    ws, result = project.train(trainer="train_good", gate=COSTLIER_CANDIDATE)

    X_hold, y_hold = holdout_of(ws, new_frame)
    v1 = registry.load_version(ws, MODEL, 1)
    incumbent = auc_of(v1.estimator, X_hold, y_hold)
    candidate = auc_of(project.user.FITTED[-1], X_hold, y_hold)
    stored_v1 = registry.get_version(ws, MODEL, 1).metrics["roc_auc"]
    assert not math.isclose(incumbent, stored_v1, abs_tol=1e-9)  # the data really changed
    assert candidate > incumbent

    decision = result.decision
    assert (result.version, result.promoted, decision.passed) == (2, True, True)
    assert result.incumbent_version == 1
    assert decision.incumbent == pytest.approx(incumbent, abs=1e-12)
    assert decision.candidate == pytest.approx(candidate, abs=1e-12)
    assert decision.improvement == pytest.approx(candidate - incumbent, abs=1e-12)
    interval = decision.interval
    assert interval is not None and interval.low is not None and interval.high is not None
    assert 0 < interval.low < decision.improvement < interval.high
    assert (interval.n_bootstrap, interval.confidence, interval.n_undefined) == (1000, 0.95, 0)
    assert decision.latency is not None and decision.latency.passed
    assert "beats" in decision.reason and "lies above margin" in decision.reason
    assert registry.resolve_alias(ws, MODEL) == 2

    gate = registry.get_version(ws, MODEL, 2).lineage["gate"]
    assert gate["candidate"] == pytest.approx(candidate, abs=1e-12)
    assert gate["incumbent"] == pytest.approx(incumbent, abs=1e-12)
    assert gate["incumbent_version"] == 1
    assert gate["passed"] is True
    assert gate["note"] == ""
    assert gate["interval"] == interval.to_dict()

    decided = gate_events(ws)[-1]
    assert decided.version == 2
    assert decided.payload["candidate"] == pytest.approx(candidate, abs=1e-12)
    assert decided.payload["incumbent"] == pytest.approx(incumbent, abs=1e-12)
    assert decided.payload["incumbent_version"] == 1
    assert decided.payload["passed"] is True
    assert decided.reason == decision.reason
    assert GateDecision.from_dict(decided.payload) == decision

    moves = registry.alias_history(ws, MODEL, "production")
    assert [(m.payload["from_version"], m.payload["to_version"]) for m in moves] == [
        (None, 1),
        (1, 2),
    ]


def test_a_worse_candidate_is_registered_but_production_stays(project: Project) -> None:
    project.train(trainer="train_good")
    ws, result = project.train(trainer="train_inverted")

    X_hold, y_hold = holdout_of(ws, project.data())
    incumbent = auc_of(registry.load_version(ws, MODEL, 1).estimator, X_hold, y_hold)
    candidate = auc_of(project.user.FITTED[-1], X_hold, y_hold)
    assert candidate < incumbent

    assert (result.version, result.promoted, result.decision.passed) == (2, False, False)
    assert result.decision.incumbent == pytest.approx(incumbent, abs=1e-12)
    assert result.decision.candidate == pytest.approx(candidate, abs=1e-12)
    assert registry.resolve_alias(ws, MODEL) == 1
    assert [v.number for v in registry.list_versions(ws, MODEL)] == [1, 2]
    assert registry.get_version(ws, MODEL, 2).aliases == []
    assert get_run(ws, result.run_id).status == "FINISHED"

    decided = gate_events(ws)[-1]
    assert decided.version == 2
    assert decided.payload["passed"] is False
    assert decided.payload["incumbent_version"] == 1
    reason = result.decision.reason
    assert decided.reason == reason
    assert "worse" in reason
    assert f"{candidate:.3f}" in reason
    assert f"{incumbent:.3f}" in reason
    assert registry.get_version(ws, MODEL, 2).lineage["gate"]["passed"] is False
    # Production never moved to the rejected version.
    moves = registry.alias_history(ws, MODEL)
    assert [m.payload["to_version"] for m in moves] == [1]


def test_a_candidate_that_ties_production_is_rejected(project: Project) -> None:
    project.train(trainer="train_good")
    ws, result = project.train(trainer="train_good")  # deterministic: the same model again
    assert result.decision.improvement == 0.0
    assert not result.promoted
    assert "tie" in result.decision.reason
    assert registry.resolve_alias(ws, MODEL) == 1


def test_the_margin_must_lie_below_the_lower_end_of_the_improvements_interval(
    project: Project,
) -> None:
    project.write_data(loans(2000, seed=0))
    project.train(trainer="train_weak")

    ws, huge = project.train(trainer="train_good", gate_margin=0.9, gate=COSTLIER_CANDIDATE)
    gain, interval = huge.decision.improvement, huge.decision.interval
    assert gain is not None and interval is not None and interval.low is not None
    assert 0.01 < interval.low < gain
    assert not huge.promoted
    assert "by only" in huge.decision.reason
    assert "margin 0.900" in huge.decision.reason
    assert gate_events(ws)[-1].payload["margin"] == 0.9

    # Between the interval's lower end and the point estimate: the point clears the margin, the
    # interval does not. (Same rows, same refitted model, same seed: the same interval.)
    between = round((interval.low + gain) / 2, 6)
    ws, short = project.train(trainer="train_good", gate_margin=between, gate=COSTLIER_CANDIDATE)
    assert short.decision.improvement == pytest.approx(gain, abs=1e-12)
    assert short.decision.interval == interval
    assert not short.promoted
    assert "not clearly" in short.decision.reason
    assert registry.resolve_alias(ws, MODEL) == 1

    below = round(interval.low - 0.005, 6)
    ws, enough = project.train(trainer="train_good", gate_margin=below, gate=COSTLIER_CANDIDATE)
    assert enough.promoted
    assert enough.decision.passed
    assert registry.resolve_alias(ws, MODEL) == enough.version == 4
    assert [e.payload["passed"] for e in gate_events(ws)] == [True, False, False, True]


@pytest.mark.parametrize("trainer", ["train_lightgbm", "train_xgboost"])
def test_gradient_boosting_trainers_work_end_to_end(project: Project, trainer: str) -> None:
    ws, result = project.train(trainer=trainer)
    assert (result.version, result.promoted) == (1, True)
    fitted = project.user.FITTED[-1]

    X_hold, y_hold = holdout_of(ws, project.data())
    assert result.decision.candidate == pytest.approx(auc_of(fitted, X_hold, y_hold), abs=1e-12)
    assert result.decision.candidate > 0.6

    loaded = registry.load_version(ws, MODEL, result.version)
    assert type(loaded.estimator[-1]) is type(fitted[-1])
    frame = X_hold[loaded.signature.names()]
    prediction = loaded.predict(frame)
    np.testing.assert_array_equal(prediction.labels, fitted.predict(X_hold))
    assert prediction.scores is not None
    np.testing.assert_allclose(prediction.scores, fitted.predict_proba(X_hold)[:, 1], rtol=0)
    params = registry.get_version(ws, MODEL, result.version).params
    assert "steps" in params  # the pipeline's own parameters are recorded


def test_a_failing_trainer_raises_user_code_error_and_changes_nothing(project: Project) -> None:
    project.train(trainer="train_good")
    ws = project.configure(trainer="train_raises")
    with pytest.raises(UserCodeError) as caught:
        train(ws)

    error = caught.value
    assert "ValueError" in error.message
    assert "the trainer broke on 450 rows" in error.message
    trace = error.details["traceback"]
    assert "Traceback" in trace
    assert f"{project.module}.py" in trace
    assert "train_raises" in trace
    assert "production was not changed" in (error.hint or "")

    assert registry.resolve_alias(ws, MODEL) == 1
    assert [v.number for v in registry.list_versions(ws, MODEL)] == [1]
    assert len(gate_events(ws)) == 1
    latest = list_runs(ws, experiment=MODEL)[0]
    assert latest.status == "FAILED"
    assert latest.error is not None
    assert "the trainer broke on 450 rows" in latest.error
    assert latest.ended_at is not None
    assert latest.metrics == {}
    assert [r.status for r in list_runs(ws, experiment=MODEL)] == ["FAILED", "FINISHED"]


def test_a_failing_loader_raises_user_code_error(project: Project) -> None:
    ws = project.configure(loader="load_raises")
    with pytest.raises(UserCodeError, match="FileNotFoundError: no such table") as caught:
        train(ws)
    assert "load_raises" in caught.value.details["traceback"]
    assert list_runs(ws) == []


def test_a_loader_that_returns_no_data_frame_is_invalid_input(project: Project) -> None:
    ws = project.configure(loader="load_list")
    with pytest.raises(InvalidInputError) as caught:
        train(ws)
    message = caught.value.message
    assert "must return a pandas DataFrame" in message
    assert "Got list instead" in message
    assert f"{project.module}:load_list" in message


def test_a_frame_without_the_target_column_is_invalid_input(project: Project) -> None:
    ws = project.configure(loader="load_without_target")
    with pytest.raises(InvalidInputError) as caught:
        train(ws)
    assert "no target column 'default'" in caught.value.message
    assert "purpose" in (caught.value.hint or "")  # the columns it does have


def test_a_misnamed_target_is_invalid_input(project: Project) -> None:
    ws = project.configure(target="defaulted")
    with pytest.raises(InvalidInputError, match="no target column 'defaulted'"):
        train(ws)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("trainer", "train_good"),
        ("trainer", "MODULE:"),
        ("trainer", ":train_good"),
        ("loader", "load_data"),
        ("loader", "MODULE:"),
    ],
)
def test_a_malformed_module_function_setting_is_a_config_error(
    project: Project, setting: str, value: str
) -> None:
    value = value.replace("MODULE", project.module)
    ws = project.configure(**{f"raw_{setting}": value})
    with pytest.raises(ConfigError) as caught:
        train(ws)
    assert f"pipeline.{setting}" in caught.value.message
    assert "module:function" in caught.value.message
    assert repr(value) in caught.value.message


@pytest.mark.parametrize("setting", ["trainer", "loader"])
def test_a_function_missing_from_the_module_is_a_config_error(
    project: Project, setting: str
) -> None:
    ws = project.configure(**{f"raw_{setting}": f"{project.module}:nope"})
    with pytest.raises(ConfigError) as caught:
        train(ws)
    assert "'nope'" in caught.value.message
    assert f"pipeline.{setting}" in caught.value.message


def test_a_module_that_cannot_be_imported_is_a_user_code_error(project: Project) -> None:
    ws = project.configure(raw_trainer="no_such_module_xyz:train")
    with pytest.raises(UserCodeError, match=r"no_such_module_xyz.*pipeline\.trainer"):
        train(ws)


def test_regression_with_rmse_promotes_the_candidate_with_lower_error(project: Project) -> None:
    common = {"loader": "load_regression", "target": "amount", "metric": "rmse"}
    ws, first = project.train(trainer="train_mean", **common)
    assert first.promoted

    ws, second = project.train(trainer="train_linear", **common)
    frame = project.user.load_regression()
    X_hold, y_hold = holdout_of(ws, frame)
    candidate = math.sqrt(mean_squared_error(y_hold, project.user.FITTED[-1].predict(X_hold)))
    v1 = registry.load_version(ws, MODEL, 1).estimator
    incumbent = math.sqrt(mean_squared_error(y_hold, v1.predict(X_hold)))
    assert candidate < incumbent

    decision = second.decision
    assert decision.metric == "rmse"
    assert decision.candidate == pytest.approx(candidate, rel=1e-9)
    assert decision.incumbent == pytest.approx(incumbent, rel=1e-9)
    assert decision.improvement == pytest.approx(incumbent - candidate, rel=1e-9)
    assert decision.passed
    assert second.promoted
    assert registry.resolve_alias(ws, MODEL) == 2

    # A regressor with a higher rmse than production (one feature only) is rejected.
    ws, third = project.train(trainer="train_one_feature", **common)
    assert third.decision.candidate > decision.candidate
    assert not third.promoted
    assert "worse" in third.decision.reason
    assert "lower is better" in third.decision.reason
    assert registry.resolve_alias(ws, MODEL) == 2
    recorded = get_run(ws, third.run_id).metrics
    assert recorded["rmse"] == pytest.approx(third.decision.candidate, rel=1e-12)
    assert recorded["gate.incumbent.rmse"] == pytest.approx(third.decision.incumbent, rel=1e-12)
    assert recorded["gate.passed"] == 0.0


def test_a_production_version_that_cannot_score_the_new_data_blocks_promotion(
    project: Project,
) -> None:
    project.train(trainer="train_good")
    project.write_data(project.data().drop(columns=["age"]))  # the new data lost a column
    ws, result = project.train(trainer="train_prior")
    assert not result.promoted
    assert not result.decision.passed
    assert "production v1 could not be scored" in result.decision.reason
    assert registry.resolve_alias(ws, MODEL) == 1


def test_promotion_does_not_overwrite_a_production_move_made_during_training(
    project: Project,
) -> None:
    project.write_data(loans(2000, seed=0))  # enough held-out rows for v3 to clearly beat v1
    ws, _ = project.train(trainer="train_weak")
    registry.register_version(
        ws, MODEL, project.user.FITTED[-1], project.data().drop(columns=[TARGET])
    )  # v2, moved to production by someone else while v3 trains
    user = project.user
    original = user.train_good

    def train_while_someone_moves_production(X: Any, y: Any) -> Any:
        registry.set_alias(ws, MODEL, "production", 2, actor="oncall", reason="manual")
        return original(X, y)

    user.train_moving = train_while_someone_moves_production
    ws, result = project.train(trainer="train_moving", gate=COSTLIER_CANDIDATE)
    assert result.decision.passed  # v3 beat v1, the version it was compared with …
    assert not result.promoted  # … but production had moved to v2 meanwhile: not overwritten
    assert registry.resolve_alias(ws, MODEL) == 2


def test_multiclass_targets_are_scored_with_the_whole_probability_matrix(
    project: Project,
) -> None:
    frame = project.data()
    frame[TARGET] = pd.qcut(frame["income"], 3, labels=False)
    project.write_data(frame)
    _, result = project.train(trainer="train_good")
    assert result.promoted
    assert 0.5 < result.decision.candidate <= 1.0


# -- the statistical gate in the pipeline ----------------------------------------------------


@pytest.fixture
def on_each_store(project: Project, metadata_url: str) -> Project:
    """The project with its metadata on SQLite, then on a fresh PostgreSQL database."""
    project.metadata_url = metadata_url
    project.write_data(loans(2000, seed=0))  # 500 held-out rows: train_good clearly wins
    return project


def test_promote_false_registers_and_records_the_decision_but_leaves_production(
    on_each_store: Project,
) -> None:
    project = on_each_store
    project.train(trainer="train_weak")
    ws = project.configure(trainer="train_good", gate=COSTLIER_CANDIDATE)
    extra = {"agent_step": "retrain:42", "trigger": {"kind": "drift", "check": 7}}
    result = train(ws, actor="agent", promote=False, lineage_extra=extra)

    assert (result.version, result.incumbent_version) == (2, 1)
    assert result.decision.passed  # the gate passed …
    assert not result.promoted  # … but production was not to be moved
    assert result.to_dict()["promoted"] is False and result.to_dict()["gate"]["passed"] is True
    assert registry.resolve_alias(ws, MODEL) == 1
    assert [m.payload["to_version"] for m in registry.alias_history(ws, MODEL)] == [1]
    assert registry.get_version(ws, MODEL, 2).aliases == []

    lineage = registry.get_version(ws, MODEL, 2).lineage
    assert lineage["agent_step"] == "retrain:42"
    assert lineage["trigger"] == {"kind": "drift", "check": 7}
    assert lineage["gate"]["passed"] is True and lineage["gate"]["promote"] is False
    assert lineage["dataset"]["n_rows"] == 2000  # closedloop's own keys are all still there
    decided = gate_events(ws)[-1]
    assert (decided.version, decided.actor) == (2, "agent")
    assert (decided.payload["passed"], decided.payload["promote"]) == (True, False)


def test_the_gate_decided_event_carries_the_interval_the_slices_and_the_latency(
    on_each_store: Project,
) -> None:
    project = on_each_store
    gate = {**COSTLIER_CANDIDATE, "slices": ["region", "purpose"], "bootstrap": 400}
    project.train(trainer="train_weak", gate=gate)
    ws, result = project.train(trainer="train_good", gate=gate)
    X_hold, y_hold = holdout_of(ws, project.data())

    decided = gate_events(ws)[-1]
    payload = decided.payload
    assert GateDecision.from_dict(payload) == result.decision
    interval = payload["interval"]
    assert (interval["n_bootstrap"], interval["confidence"], interval["seed"]) == (400, 0.95, 0)
    assert interval["low"] < payload["improvement"] < interval["high"]

    slices = payload["slices"]
    for column in ("region", "purpose"):
        mine = {s["value"]: s for s in slices if s["column"] == column}
        assert mine.keys() == set(X_hold[column])
        assert sum(s["n"] for s in mine.values()) == len(X_hold) == 500
    first = slices[0]
    rows = (X_hold[first["column"]] == first["value"]).to_numpy()
    fitted = project.user.FITTED[-1]
    assert first["candidate"] == pytest.approx(auc_of(fitted, X_hold[rows], y_hold[rows]))
    assert all(s["judged"] == (s["n"] >= 30) for s in slices)

    latency = payload["latency"]
    assert latency["candidate_seconds_per_row"] > 0 and latency["incumbent_seconds_per_row"] > 0
    assert latency["ratio"] == pytest.approx(
        latency["candidate_seconds_per_row"] / latency["incumbent_seconds_per_row"]
    )
    lineage_gate = registry.get_version(ws, MODEL, 2).lineage["gate"]
    assert {k: v for k, v in lineage_gate.items() if k != "n_holdout"} == payload


def test_a_much_slower_candidate_fails_the_latency_check(project: Project) -> None:
    project.write_data(loans(2000, seed=0))
    project.train(trainer="train_weak")
    ws, result = project.train(trainer="train_slow")  # train_good, 50 ms slower per call

    decision = result.decision
    assert decision.interval is not None and decision.interval.low is not None
    assert decision.interval.low > 0  # better predictions …
    assert decision.latency is not None and not decision.latency.passed  # … far slower
    assert not decision.passed and not result.promoted
    assert "candidate too slow" in decision.reason
    assert registry.resolve_alias(ws, MODEL) == 1


def test_lineage_extra_may_not_replace_what_closedloop_records(project: Project) -> None:
    ws = project.configure(trainer="train_weak")
    with pytest.raises(InvalidInputError, match="must not set gate"):
        train(ws, lineage_extra={"gate": {"passed": True}})
    with pytest.raises(InvalidInputError, match="JSON-serialisable"):
        train(ws, lineage_extra={"when": object()})
    assert list_runs(ws) == []
    assert registry.list_models(ws) == []


def test_a_slice_column_the_data_lacks_is_a_config_error_before_anything_runs(
    project: Project,
) -> None:
    ws = project.configure(gate={"slices": ["regoin"]})
    with pytest.raises(ConfigError) as caught:
        train(ws)
    message = caught.value.message
    assert "gate.slices names 'regoin'" in message
    assert "region" in message and "purpose" in message  # the available columns
    assert list_runs(ws) == []


def test_closedloop_train_shows_the_interval_the_slices_and_the_latency(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from closedloop.cli.main import cli

    for key in [k for k in os.environ if k.startswith("CLOSEDLOOP_")]:
        monkeypatch.delenv(key)
    project.write_data(loans(2000, seed=0))
    project.train(trainer="train_weak")
    project.configure(trainer="train_good", gate={**COSTLIER_CANDIDATE, "slices": ["region"]})

    shown = CliRunner().invoke(cli, ["--project", str(project.folder), "train"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[1] == "gate PASSED against production v1"
    assert "95% interval" in lines[2] and "lies above margin 0.000" in lines[2]
    assert lines[3].startswith("  - no slice regresses beyond tolerance (")
    assert lines[4].startswith("  - latency ") and "x; allowed 5.00x" in lines[4]
    assert "1000 paired bootstrap resamples" in lines[5]
    assert lines[-1] == "production → v2"

    as_json = CliRunner().invoke(cli, ["--project", str(project.folder), "train", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert (data["version"], data["promoted"], data["incumbent_version"]) == (3, False, 2)
    assert "tie" in data["gate"]["reason"]  # the same model again
    assert {s["value"] for s in data["gate"]["slices"]} == {"north", "south", "east", "west"}
    assert set(data["gate"]["interval"]) >= {"low", "high", "n_bootstrap", "n_undefined"}
