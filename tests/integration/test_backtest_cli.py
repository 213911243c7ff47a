"""``closedloop backtest`` end to end: a project with its policy and trainer, a parquet history."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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


# --------------------------------------------------------------------------------------------
# In a project written by `closedloop init`, through `python -m closedloop`
# --------------------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
TRAFFIC_POLICY = '[agent]\nretrain_data = "traffic"\n'
COUNT_CALLS = """

_train = train


def train(X, y):  # counts the calls, so a test can tell whose trainer ran
    with open("trainer-calls.txt", "a") as calls:
        calls.write("1\\n")
    return _train(X, y)
"""
# 28 windows of 172 rows after the first 20 % of 6,000 rows; checked from 100 rows
SMALL_POLICY = """
[monitor]
min_rows = 100
persistence = 2
cooldown_seconds = 0

[agent]
retrain_data = "traffic"
traffic_rows = 1500
"""
SMALL = ("--simulate", "--rows", "6000", "--drift-at", "3000", "--window-rows", "172")
TWO_DAYS = ("--simulate", "--rows", "3000")  # two one-day windows: the init trainer is slower


def run(folder: Path, *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env["COLUMNS"] = str(columns)
    env.setdefault("OMP_NUM_THREADS", "1")  # the init trainer's boosting, on a shared machine
    return subprocess.run(
        [sys.executable, "-m", "closedloop", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        check=False,
    )


def ok(folder: Path, *args: str, columns: int = 100) -> subprocess.CompletedProcess[str]:
    result = run(folder, *args, columns=columns)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@pytest.fixture
def init_project(tmp_path: Path) -> Path:
    """`closedloop init`, its trainer counting its calls, and a small policy file."""
    ok(tmp_path, "init")
    with (tmp_path / "pipeline.py").open("a", encoding="utf-8") as pipeline:
        pipeline.write(COUNT_CALLS)
    (tmp_path / "small.toml").write_text(SMALL_POLICY, encoding="utf-8")
    return tmp_path


def trainer_calls(folder: Path) -> int:
    calls = folder / "trainer-calls.txt"
    return len(calls.read_text(encoding="utf-8").split()) if calls.exists() else 0


def test_in_an_init_project_the_project_trainer_is_used_and_named(init_project: Path) -> None:
    # a --policy file without [pipeline] used to drop pipeline.trainer: the built-in one ran
    result = ok(init_project, "backtest", *TWO_DAYS, "--policy", "small.toml", "--json")
    setup = json.loads(result.stdout)["setup"]
    assert setup["trainer"] == "pipeline:train"
    assert "the project's pipeline.trainer" in setup["trainer_source"]
    assert "small.toml" in setup["policy_source"] and "--policy" in setup["policy_source"]
    assert setup["data"].startswith("simulator (seed 0, 3,000 rows")
    assert (setup["windows"], setup["window"]) == (2, "1d")
    assert trainer_calls(init_project) >= 2  # the first model and every-window's retrain

    text = ok(init_project, "backtest", *TWO_DAYS, "--policy", "small.toml").stdout.splitlines()
    assert text[0].startswith("trainer: pipeline:train (the project's pipeline.trainer")
    assert text[1].startswith("data: simulator (seed 0, 3,000 rows") and "2 windows" in text[1]
    assert text[2].startswith("policy: small.toml (--policy")


def test_trainer_builtin_replaces_the_project_trainer(init_project: Path) -> None:
    result = ok(init_project, "backtest", *SMALL, "--trainer", "builtin", "--json")
    setup = json.loads(result.stdout)["setup"]
    assert setup["trainer"] == "built-in logistic regression"
    assert setup["trainer_source"] == "--trainer builtin"
    assert "closedloop.toml (the project's settings)" in setup["policy_source"]
    assert trainer_calls(init_project) == 0


def test_outside_a_project_the_built_in_trainer_is_named(tmp_path: Path) -> None:
    result = ok(tmp_path, "backtest", *SMALL, "--json")
    setup = json.loads(result.stdout)["setup"]
    assert setup["trainer"] == "built-in logistic regression"
    assert "no pipeline.trainer is set" in setup["trainer_source"]
    assert setup["policy_source"].startswith("the defaults (no closedloop.toml")


def test_the_table_of_28_windows_fits_100_columns(init_project: Path) -> None:
    args = (*SMALL, "--policy", "small.toml", "--trainer", "builtin", "--html", "page.html")
    result = ok(init_project, "backtest", *args, columns=100)
    lines = result.stdout.splitlines()
    too_wide = [line for line in lines if len(line) > 100]
    assert not too_wide, too_wide
    rows = [line for line in lines if re.match(r"\s*\d+\s+2024-\d\d-\d\d \d\d:\d\d\s", line)]
    assert [int(line.split()[0]) for line in rows] == list(range(28))  # one line per window
    assert any("ALERT" in line and re.search(r"→ v\d+ (PROMOTED|rejected)", line) for line in rows)
    page = (init_project / "page.html").read_text(encoding="utf-8")
    assert "Trainer: built-in logistic regression (--trainer builtin)" in page


def test_progress_goes_to_stderr_and_never_into_json(init_project: Path) -> None:
    args = (*SMALL, "--policy", "small.toml", "--trainer", "builtin")
    text = ok(init_project, "backtest", *args)
    progress = [line for line in text.stderr.splitlines() if line.startswith("backtest: window")]
    assert progress[-1].startswith("backtest: window 28 of 28; policy retrains ")
    assert 2 <= len(progress) <= 28
    assert "backtest: window" not in text.stdout

    as_json = ok(init_project, "backtest", *args, "--json")
    assert len(json.loads(as_json.stdout)["windows"]) == 28
    assert "backtest: window" not in as_json.stderr


def readme_backtest_sentence() -> str:
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(r"On the built-in simulator, .*? for retraining every day\.", text)
    assert found, "the README's backtest paragraph has no 'On the built-in simulator' sentence"
    return found.group(0)


@pytest.mark.slow
def test_the_readme_backtest_figures_are_what_init_and_its_command_print(tmp_path: Path) -> None:
    sentence = readme_backtest_sentence()
    assert "`closedloop init`" in sentence, sentence
    assert "`closedloop backtest --simulate --policy traffic.toml`" in sentence, sentence
    assert '`[agent] retrain_data = "traffic"`' in sentence, sentence
    alert = re.search(r"alerts (\d+) windows? after the drift", sentence)
    retrains = re.search(r"retrains (\d+) times instead of (\d+);", sentence)
    means = re.search(
        r"ROC AUC is (0\.\d{3}), against (0\.\d{3}) for never retraining and (0\.\d{3}) for "
        r"retraining every day\.",
        sentence,
    )
    assert alert and retrains and means, sentence

    ok(tmp_path, "init")
    (tmp_path / "traffic.toml").write_text(TRAFFIC_POLICY, encoding="utf-8")
    command = ("backtest", "--simulate", "--policy", "traffic.toml")
    body = json.loads(ok(tmp_path, *command, "--json").stdout)
    assert body["setup"]["trainer"] == "pipeline:train"
    summary = body["summary"]
    assert summary["windows_to_alert"] == int(alert.group(1))
    assert summary["retrains"]["policy"] == int(retrains.group(1))
    assert summary["retrains"]["every_window"] == int(retrains.group(2))
    after = summary["mean_after_drift"]
    printed = [f"{after[s]:.3f}" for s in ("policy", "never", "every_window")]
    assert printed == [means.group(1), means.group(2), means.group(3)]


def test_a_bad_trainer_option_is_named(project: Path) -> None:
    result = invoke(project, "--simulate", "--rows", "6000", "--trainer", "train")
    assert_error(result, "--trainer must be 'builtin' or module:function", "'train'")
