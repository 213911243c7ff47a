"""A regression and a multiclass model as a user runs them: `closedloop train`, a real
`closedloop serve` process answering and taking labels, then `closedloop monitor --json`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score
from tests.conftest import make_workspace
from tests.e2e.conftest import start_server, stop_server, wait_ready
from tests.e2e.test_cli import as_json, cli, ok
from tests.support import PROGRESSION, SPECIES, diabetes, fit_multiclass, iris

from closedloop.services import registry

ROWS = 300

PIPELINE = """
import pandas as pd
from sklearn.linear_model import Ridge


def load_data():
    return pd.read_parquet("data/diabetes.parquet")


def train(X, y):
    return Ridge(alpha=0.1).fit(X, y)
"""

PROJECT = """
[pipeline]
model = "diabetes"
loader = "pipeline:load_data"
trainer = "pipeline:train"
target = "progression"
metric = "rmse"
holdout_fraction = 0.25

[monitor]
window_rows = 300
min_rows = 100
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project whose pipeline trains a Ridge regression on the diabetes data (v1, promoted),
    and an iris classifier registered next to it."""
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    diabetes().to_parquet(folder / "data" / "diabetes.parquet")
    (folder / "pipeline.py").write_text(textwrap.dedent(PIPELINE))
    (folder / "closedloop.toml").write_text(textwrap.dedent(PROJECT))
    trained = as_json(ok(folder, "train", "--json"))
    assert trained["version"] == 1 and trained["promoted"], trained
    ws = make_workspace(folder, metadata_url(folder), artifacts_url(folder))
    try:
        flowers = iris()
        X, y = flowers.drop(columns=[SPECIES]), flowers[SPECIES]
        registry.register_version(ws, "iris", fit_multiclass(X, y), X, evaluation=(X, y))
        registry.set_alias(ws, "iris", "production", 1)
    finally:
        ws.close()
    return folder


def metadata_url(folder: Path) -> str:
    return f"sqlite:///{folder / '.closedloop' / 'metadata.db'}"


def artifacts_url(folder: Path) -> str:
    return str(folder / ".closedloop" / "artifacts")


def test_labels_posted_to_a_served_regression_give_realised_mae_rmse_r2_in_monitor(
    project: Path,
) -> None:
    rows = diabetes().sample(n=ROWS, replace=True, random_state=7).reset_index(drop=True)
    truth = rows[PROGRESSION].to_numpy(dtype=float)
    records = rows.drop(columns=[PROGRESSION]).to_dict(orient="records")
    process, url = start_server(project, metadata_url(project), artifacts_url(project))
    try:
        wait_ready(url, process)
        answer = httpx.post(
            f"{url}/models/diabetes/invocations",
            json={"dataframe_records": records},
            headers={"X-Request-ID": "batch-1"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        predicted = np.asarray(answer.json()["predictions"], dtype=float)
        # JSON clients send numbers, or numbers as strings: both are floats for a regression
        labels = [
            {"request_id": "batch-1", "row": i, "label": value if i % 2 else str(value)}
            for i, value in enumerate(truth.tolist())
        ]
        posted = httpx.post(f"{url}/models/diabetes/feedback", json={"labels": labels})
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"accepted": ROWS}

        for bad in ("high", True):
            refused = httpx.post(
                f"{url}/models/diabetes/feedback",
                json={"request_id": "batch-1", "row": 0, "label": bad},
            )
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert "cannot be read as a number" in error["message"]
            assert "regression" in error["message"]

        # a class label comes back of the classes' type: "2" is the int class 2
        assert httpx.post(
            f"{url}/models/iris/feedback", json={"request_id": "f-1", "label": "2"}
        ).json() == {"accepted": 1}
        refused = httpx.post(
            f"{url}/models/iris/feedback", json={"request_id": "f-2", "label": "virginica"}
        )
        assert refused.status_code == 422
        assert "integer class label" in refused.json()["error"]["message"]
        assert "0, 1, 2" in refused.json()["error"]["message"]
    finally:
        stop_server(process)

    ws = make_workspace(project, metadata_url(project), artifacts_url(project))
    try:
        stored = ws.feedback_log().read("diabetes")
        assert stored["_label"].dtype == np.float64
        assert ws.feedback_log().read("iris")["_label"].tolist() == [2]
        assert type(ws.feedback_log().read("iris")["_label"].iloc[0].item()) is int
    finally:
        ws.close()

    result = cli(project, "monitor", "diabetes", "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    outputs = as_json(result)["outputs"]
    assert outputs["task"] == "regression"
    assert outputs["prediction_drift"]["test"] == "ks"
    assert outputs["label_drift"]["test"] == "ks"
    realised = outputs["performance"]["realised"]
    assert realised["n_labelled"] == ROWS
    assert realised["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert realised["rmse"] == pytest.approx(float(np.sqrt(np.mean((truth - predicted) ** 2))))
    assert realised["r2"] == pytest.approx(r2_score(truth, predicted))
    assert "no label-free estimate for regression" in (outputs["performance"]["estimated"]["note"])


def test_labels_for_unknown_requests_or_without_a_row_never_break_monitor(project: Path) -> None:
    """The issue's case against a real server: a label for a request id nobody made is
    accepted (the server cannot know every replica's ids) and never joined; a label without
    a row for a request of several rows is never copied to its rows. `monitor --json` still
    reports realised metrics from every good label and counts the one it had to ignore."""
    rows = diabetes().sample(n=ROWS, replace=True, random_state=8).reset_index(drop=True)
    truth = rows[PROGRESSION].to_numpy(dtype=float)
    records = rows.drop(columns=[PROGRESSION]).to_dict(orient="records")
    process, url = start_server(project, metadata_url(project), artifacts_url(project))
    try:
        wait_ready(url, process)
        answer = httpx.post(
            f"{url}/models/diabetes/invocations",
            json={"dataframe_records": records},
            headers={"X-Request-ID": "batch-1"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        feedback = f"{url}/models/diabetes/feedback"
        labels = [{"request_id": "batch-1", "row": i, "label": v} for i, v in enumerate(truth)]
        assert httpx.post(feedback, json=labels).json() == {"accepted": ROWS}
        for accepted in (
            {"request_id": "nonexistent", "label": 1.5},
            {"request_id": "batch-1", "label": 2.0},
        ):
            posted = httpx.post(feedback, json=accepted)
            assert posted.json() == {"accepted": 1}, posted.text
        for bad in ("NaN", "inf", "banana"):  # a regression's label is a finite number
            refused = httpx.post(feedback, json={"request_id": "batch-1", "row": 0, "label": bad})
            assert refused.status_code == 422, refused.text
            assert "cannot be read as a number" in refused.json()["error"]["message"]
        refused = httpx.post(f"{url}/models/iris/feedback", json={"request_id": "f", "label": 7})
        assert refused.status_code == 422, refused.text
        assert "(7, int) is not an integer class label" in refused.json()["error"]["message"]
    finally:
        stop_server(process)

    result = cli(project, "monitor", "diabetes", "--json")
    assert result.returncode == 0, (result.stdout, result.stderr)
    outputs = as_json(result)["outputs"]
    assert outputs["performance"]["realised"]["n_labelled"] == ROWS
    assert outputs["ignored_labels"] == {"n": 1, "ambiguous": 1}
