"""``closedloop backtest`` end to end: a project with its policy and trainer, a parquet history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result

from closedloop.cli.main import cli
from closedloop.domain.simulate import LoanSimulator

ROWS = 6_000
DRIFT_AT = 3_500
TRAINER_MODULE = "backtest_project_trainer"  # unique: the module is imported in-process
PROJECT_FILE = f"""
[pipeline]
trainer = "{TRAINER_MODULE}:train"
target = "default"
metric = "roc_auc"

[monitor]
persistence = 2
cooldown_seconds = 0

[agent]
retrain_data = "traffic"
traffic_rows = 1500
"""
TRAINER = """
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def train(X, y):
    categorical = ["purpose", "region"]
    numeric = [c for c in X.columns if c not in categorical]
    encode = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown="ignore"), categorical),
            ("n", StandardScaler(), numeric),
        ]
    )
    return make_pipeline(encode, LogisticRegression(max_iter=1000)).fit(X, y)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("backtest-project")
    (folder / "closedloop.toml").write_text(PROJECT_FILE, encoding="utf-8")
    (folder / f"{TRAINER_MODULE}.py").write_text(TRAINER, encoding="utf-8")
    history = LoanSimulator(seed=5, drift_at=DRIFT_AT).stream(ROWS)
    # stored shuffled: the backtest orders the rows by the time column
    history.sample(frac=1.0, random_state=1).to_parquet(folder / "history.parquet", index=False)
    return folder


def invoke(project: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--project", str(project), "backtest", *args])


def backtest_json(project: Path, *args: str) -> dict[str, Any]:
    result = invoke(project, "--data", str(project / "history.parquet"), *args, "--json")
    assert result.exit_code == 0, (result.output, result.stderr)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def assert_error(result: Result, *needles: str) -> str:
    """Exit 2 and one ``error:`` line naming every needle, no traceback."""
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def by_rows(project: Path) -> dict[str, Any]:
    return backtest_json(project, "--time-column", "applied_at", "--window-rows", "800")


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


def test_json_output_has_every_window_and_the_summary(by_rows: dict[str, Any]) -> None:
    assert by_rows["strategies"] == ["policy", "never", "every_window"]
    assert by_rows["data"]["rows"] == ROWS
    assert by_rows["data"]["time_column"] == "applied_at"
    assert by_rows["data"]["target"] == "default"
    assert "applied_at" not in by_rows["data"]["features"]
    assert by_rows["initial"]["n_rows"] == int(0.2 * ROWS)
    assert by_rows["policy"]["retrain_data"] == "traffic"
    windows = by_rows["windows"]
    assert [w["n"] for w in windows] == [800] * 6
    starts = [pd.Timestamp(w["start"]) for w in windows]
    assert starts == sorted(starts)
    for w in windows:
        assert set(w) >= {"start", "end", "n", "versions", "metrics", "drift", "alert"}
        assert set(w) >= {"triggers", "retrain"}
        assert set(w["versions"]) == set(w["metrics"]) == {"policy", "never", "every_window"}
        assert set(w["drift"]) >= {"drifted", "columns", "state", "reason"}
    summary = by_rows["summary"]
    assert set(summary["mean"]) == {"policy", "never", "every_window"}
    assert summary["retrains"]["every_window"] == len(windows) - 1
    assert summary["first_alert_window"] is not None
    assert summary["mean_after_first_alert"]["policy"] > summary["mean_after_first_alert"]["never"]


def test_the_project_policy_alerts_after_the_drift_and_promotes(by_rows: dict[str, Any]) -> None:
    drift_time = LoanSimulator(seed=5, drift_at=DRIFT_AT).stream(1, start=DRIFT_AT)["applied_at"]
    drift = pd.Timestamp(drift_time.iloc[0])
    alerts = [w for w in by_rows["windows"] if w["alert"]]
    assert alerts and pd.Timestamp(alerts[0]["start"]) >= drift - pd.Timedelta(hours=14)
    assert alerts[0]["triggers"][0]["kind"] == "drift"
    promoted = [w for w in by_rows["windows"] if w["retrain"] and w["retrain"]["promoted"]]
    assert promoted and promoted[0]["retrain"]["gate"]["passed"] is True
    after = by_rows["windows"][promoted[0]["index"] + 1]
    assert after["versions"]["policy"] == promoted[0]["retrain"]["candidate_version"]


def test_time_windows_and_train_until(project: Path) -> None:
    body = backtest_json(
        project,
        "--time-column",
        "applied_at",
        "--window",
        "12h",
        "--train-until",
        "2024-01-02T00:00:00Z",
    )
    assert body["initial"]["train_until"] == "2024-01-02T00:00:00+00:00"
    assert body["initial"]["n_rows"] == 1440  # one row a minute from 2024-01-01
    spans = {pd.Timestamp(w["end"]) - pd.Timestamp(w["start"]) for w in body["windows"]}
    assert spans == {pd.Timedelta(hours=12)}
    assert "--train-until" in body["data"]["train_rule"]


def test_the_table_and_the_summary_are_printed(project: Path) -> None:
    data = str(project / "history.parquet")
    result = invoke(project, "--data", data, "--time-column", "applied_at", "--window-rows", "1200")
    assert result.exit_code == 0, result.stderr
    assert "every window" in result.stdout
    assert "retrains / promotions:" in result.stdout
    assert re.search(r"mean roc_auc per window: policy 0\.\d{4}", result.stdout)


def test_html_page_embeds_plotly_and_loads_nothing_from_the_network(
    project: Path, tmp_path: Path
) -> None:
    page = tmp_path / "backtest.html"
    data = str(project / "history.parquet")
    result = invoke(
        project, "--data", data, "--time-column", "applied_at", "--window-rows", "1200",
        "--html", str(page),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    html = page.read_text(encoding="utf-8")
    assert "Plotly" in html and len(html) > 1_000_000  # plotly.js itself is inside
    assert not re.search(r"<script[^>]+src=[\"']?https?:", html)
    assert not re.search(r"<link[^>]+href=[\"']?https?:", html)
    figures = re.search(r'id="closedloop-figures">(.*?)</script>', html, re.S)
    assert figures is not None
    traces = json.loads(figures.group(1))[0]["data"]
    names = [t["name"] for t in traces]
    assert names[:3] == ["policy", "never", "every window"]
    assert {"policy alert", "policy retrain", "policy promotion"} <= set(names)
    assert "<table>" in html and "retrain and gate" in html


def test_simulate_runs_on_the_built_in_stream(project: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--project", str(project), "backtest", "--simulate", "--rows", "6000", "--json"],
    )
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["data"]["window"] == "1d"
    assert body["data"]["time_column"] == "applied_at"
    assert body["drift_point"] is not None
    assert set(body["summary"]["mean_after_drift"]) == {"policy", "never", "every_window"}


# --------------------------------------------------------------------------------------------
# Bad input: one clear error each, exit 2
# --------------------------------------------------------------------------------------------


def test_a_missing_file_is_named(project: Path) -> None:
    result = invoke(project, "--data", str(project / "nope.parquet"), "--time-column", "t")
    assert_error(result, "nope.parquet", "does not exist")


def test_an_unreadable_file_is_named(project: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet at all")
    assert_error(
        invoke(project, "--data", str(broken), "--time-column", "applied_at"),
        "broken.parquet",
        "not a readable Parquet file",
    )
    text = tmp_path / "history.txt"
    text.write_text("a,b\n1,2\n", encoding="utf-8")
    assert_error(
        invoke(project, "--data", str(text), "--time-column", "applied_at"),
        "unknown file extension",
        ".parquet",
    )


def test_a_missing_time_column_is_named(project: Path) -> None:
    result = invoke(project, "--data", str(project / "history.parquet"), "--time-column", "when")
    assert_error(result, "no time column 'when'", "applied_at")


def test_a_missing_target_column_is_named(project: Path, tmp_path: Path) -> None:
    unlabelled = tmp_path / "unlabelled.parquet"
    pd.read_parquet(project / "history.parquet").drop(columns=["default"]).to_parquet(unlabelled)
    result = invoke(project, "--data", str(unlabelled), "--time-column", "applied_at")
    assert_error(result, "no target column 'default'")


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        (lambda n: np.array(["not a time"] * n, dtype=object), "cannot be parsed"),
        (lambda n: np.arange(n), "not timestamps"),
    ],
)
def test_an_unparseable_time_column_is_named(
    project: Path, tmp_path: Path, values: Any, needle: str
) -> None:
    frame = pd.read_parquet(project / "history.parquet")
    frame["applied_at"] = values(len(frame))
    path = tmp_path / "bad-times.parquet"
    frame.to_parquet(path)
    result = invoke(project, "--data", str(path), "--time-column", "applied_at")
    assert_error(result, "time column 'applied_at'", needle, "ISO-8601")


def test_too_few_rows_for_one_window_is_named(project: Path) -> None:
    data = str(project / "history.parquet")
    rows = invoke(project, "--data", data, "--time-column", "applied_at", "--window-rows", "9000")
    assert_error(rows, "Too few rows for one window", "9000 rows")
    span = invoke(project, "--data", data, "--time-column", "applied_at", "--window", "30d")
    assert_error(span, "Too few rows for one window", "30d")


@pytest.mark.parametrize("window", ["7x", "seven days", "0d", "-1d"])
def test_a_bad_window_is_named(project: Path, window: str) -> None:
    data = str(project / "history.parquet")
    result = invoke(project, "--data", data, "--time-column", "applied_at", "--window", window)
    assert_error(result, "--window")


def test_conflicting_or_missing_sources_are_refused(project: Path) -> None:
    assert_error(invoke(project, "--time-column", "applied_at"), "--data FILE or --simulate")
    data = str(project / "history.parquet")
    assert_error(invoke(project, "--data", data), "--time-column is required")
    both = invoke(
        project, "--data", data, "--time-column", "applied_at", "--window", "1d",
        "--window-rows", "100",
    )  # fmt: skip
    assert_error(both, "either --window or --window-rows")


def test_a_missing_policy_file_is_named(project: Path) -> None:
    data = str(project / "history.parquet")
    result = invoke(
        project, "--data", data, "--time-column", "applied_at", "--policy", "nowhere.toml"
    )
    assert_error(result, "policy file", "nowhere.toml")


def test_json_errors_use_the_one_error_shape(project: Path) -> None:
    result = invoke(project, "--data", str(project / "nope.csv"), "--time-column", "t", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["error"]["code"] == "invalid_input"
