"""The ``closedloop`` command as a user runs it: real subprocesses, one project folder per test."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from tests.support import features, fit_model, loans

from closedloop.domain.simulate import LoanSimulator
from closedloop.storage.metadata.db import head_revision
from closedloop.storage.predictions import PredictionLog

MODEL = "loans"
FEATURES = list(LoanSimulator.feature_columns)
DRIFTED = set(LoanSimulator.drifted_columns)
COLUMN_KEYS = {"column", "kind", "test", "statistic", "p_value", "drifted"}
MIN_ROWS = 200  # monitor.min_rows default (the project file written by init does not set it)


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CLOSEDLOOP_* setting that could leak into the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(extra)
    return env


def cli(
    project: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "closedloop", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or _clean_env(),
        check=False,
    )


def ok(project: Path, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = cli(project, *args, **kwargs)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(result.stdout)


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, a one-line ``error:`` on stderr naming every needle, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(autouse=True)
def _no_closedloop_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process helpers (the prediction log, the registry) must see the project only."""
    for key in [k for k in os.environ if k.startswith("CLOSEDLOOP_")]:
        monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project after `init`, `train` (v1, production) and `train` again (v2, a tie: rejected).

    Tests get their own copy (the store's paths are relative to the project folder)."""
    folder = tmp_path_factory.mktemp("template")
    ok(folder, "init")
    ok(folder, "train")
    second = as_json(ok(folder, "train", "--json"))
    assert second["version"] == 2 and not second["promoted"], second
    return folder


@pytest.fixture
def project(trained_template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    shutil.copytree(trained_template, folder)
    return folder


def production_of(project: Path, model: str = MODEL) -> int | None:
    found = {m["name"]: m for m in as_json(ok(project, "models", "--json"))}
    number = found[model]["aliases"].get("production")
    return None if number is None else int(number)


# --------------------------------------------------------------------------------------------
# 1. init, train and the read commands
# --------------------------------------------------------------------------------------------


def test_init_train_then_read_commands_report_what_happened(tmp_path: Path) -> None:
    init = ok(tmp_path, "init")
    assert "closedloop.toml" in init.stdout
    assert (tmp_path / "closedloop.toml").is_file()
    assert (tmp_path / "pipeline.py").is_file()
    assert (tmp_path / "data" / "loans.parquet").is_file()

    train = ok(tmp_path, "train")
    assert "registered loans v1" in train.stdout
    assert "gate PASSED" in train.stdout
    assert "production → v1" in train.stdout

    models = as_json(ok(tmp_path, "models", "--json"))
    assert [m["name"] for m in models] == [MODEL]
    assert models[0]["latest_version"] == 1
    assert models[0]["aliases"] == {"production": 1}

    versions = as_json(ok(tmp_path, "versions", MODEL, "--json"))
    assert [v["number"] for v in versions] == [1]
    v1 = versions[0]
    assert v1["aliases"] == ["production"]
    assert v1["lineage"]["gate"]["passed"] is True
    assert 0.5 < v1["metrics"]["roc_auc"] <= 1.0
    assert [c["name"] for c in v1["signature"]["columns"]] == FEATURES

    runs = as_json(ok(tmp_path, "runs", "--json"))
    assert len(runs) == 1
    assert runs[0]["status"] == "FINISHED"
    assert runs[0]["id"] == v1["run_id"]
    assert runs[0]["metrics"]["roc_auc"] == pytest.approx(v1["metrics"]["roc_auc"])

    history = as_json(ok(tmp_path, "history", MODEL, "--json"))
    assert len(history) == 1
    move = history[0]
    assert move["kind"] == "alias.set"
    assert move["payload"] == {"alias": "production", "from_version": None, "to_version": 1}
    assert move["actor"]
    assert "gate passed" in move["reason"]


def test_init_twice_is_a_one_line_error_with_a_hint(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    before = (tmp_path / "closedloop.toml").read_text()

    again = cli(tmp_path, "init")
    assert_clean_error(again, "closedloop.toml", "already exist")
    assert [line for line in again.stderr.splitlines() if line.startswith("hint:")] == [
        "hint: Pass --force to overwrite."
    ]
    assert (tmp_path / "closedloop.toml").read_text() == before

    debug = cli(tmp_path, "--debug", "init")
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert "ConfigError" in debug.stderr
    assert "error: " in debug.stderr

    ok(tmp_path, "init", "--force")


# --------------------------------------------------------------------------------------------
# 2. alias set and rollback
# --------------------------------------------------------------------------------------------


def test_alias_set_then_rollback_are_recorded_with_actor_and_reason(project: Path) -> None:
    nothing = cli(project, "rollback", MODEL)
    assert_clean_error(nothing, "no known-good version")
    assert production_of(project) == 1

    env = _clean_env(CLOSEDLOOP_ACTOR="e2e-tester")
    # v2 tied with v1 at the gate: production does not take it without --force and a reason
    refused = cli(project, "alias", "set", MODEL, "production", "2", env=env)
    assert_clean_error(
        refused, "loans v2 was rejected by the gate (", "pass --force --reason '…' to promote"
    )
    no_reason = cli(project, "alias", "set", MODEL, "production", "2", "--force", env=env)
    assert_clean_error(no_reason, "needs a reason")
    assert production_of(project) == 1
    moved = as_json(
        ok(
            project,
            "alias",
            "set",
            MODEL,
            "production",
            "2",
            "--force",
            "--reason",
            "try v2",
            "--json",
            env=env,
        )
    )
    assert moved == {"model": MODEL, "alias": "production", "from_version": 1, "to_version": 2}
    assert production_of(project) == 2

    back = ok(project, "rollback", MODEL, "--reason", "v2 looks wrong", env=env)
    assert "rolled back from v2 to v1" in back.stdout
    assert production_of(project) == 1

    history = as_json(ok(project, "history", MODEL, "--json"))
    moves = [(e["kind"], e["payload"]["from_version"], e["payload"]["to_version"]) for e in history]
    assert moves == [("alias.set", None, 1), ("alias.set", 1, 2), ("alias.rollback", 2, 1)]
    assert [(e["actor"], e["reason"]) for e in history[1:]] == [
        ("e2e-tester", "try v2"),
        ("e2e-tester", "v2 looks wrong"),
    ]
    assert all(e["payload"]["alias"] == "production" for e in history)
    forced = history[1]["payload"]
    assert forced["forced"] is True
    assert forced["overridden"].startswith("loans v2 was rejected by the gate (")
    assert "forced" not in history[0]["payload"] and "forced" not in history[2]["payload"]

    # v2 was rolled back from: moving production back to it needs --force again
    again = cli(project, "alias", "set", MODEL, "production", "2", env=env)
    assert again.returncode == 2
    assert "pass --force --reason" in again.stderr
    # other aliases move freely
    ok(project, "alias", "set", MODEL, "challenger", "2", env=env)


def test_rollback_raises_its_alert_at_once(project: Path) -> None:
    """No agent runs here: the rollback itself records the rollback_done alert."""
    env = _clean_env(CLOSEDLOOP_ACTOR="e2e-tester")
    ok(project, "alias", "set", MODEL, "production", "2", "--force", "--reason", "try", env=env)
    ok(project, "rollback", MODEL, "--reason", "v2 looks wrong", env=env)
    found = as_json(ok(project, "history", MODEL, "--all", "--json"))
    rollback = next(e for e in found if e["kind"] == "alias.rollback")
    alerts = [e for e in found if e["kind"] == "alert.raised"]
    assert len(alerts) == 1
    alert = alerts[0]["payload"]
    assert alert["kind"] == "rollback_done"
    assert alert["details"]["source_event"] == rollback["id"]
    assert alert["title"] == "loans: production rolled back to v1"
    assert alert["text"] == "e2e-tester rolled production back from v2 to v1: v2 looks wrong"


def test_rollback_of_an_unknown_model_is_an_error(project: Path) -> None:
    assert_clean_error(cli(project, "rollback", "nosuch"), "nosuch")


# --------------------------------------------------------------------------------------------
# 3. drift between two files
# --------------------------------------------------------------------------------------------


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _pre(seed: int, n: int = 3000) -> pd.DataFrame:
    return LoanSimulator(seed=seed).reference(n)[FEATURES]


def _post(seed: int, n: int = 3000) -> pd.DataFrame:
    sim = LoanSimulator(seed=seed, drift_at=1000)
    rows = sim.stream(n, start=sim.drift_at)[FEATURES]
    return rows.reset_index(drop=True)


def assert_ranked(columns: list[dict[str, Any]]) -> None:
    """Drift first, then minor, then stable; within each, the largest effect relative to its
    floor first (the effect is ``statistic`` for KS, ``tvd`` for chi-square)."""

    def key(column: dict[str, Any]) -> tuple[int, float]:
        effect = column["statistic"] if column["kind"] == "numeric" else column["tvd"]
        relative = -math.inf if effect is None else effect / column["effect_floor"]
        return ["drift", "minor", "stable"].index(column["severity"]), -relative

    assert [key(c) for c in columns] == sorted(key(c) for c in columns)
    assert [c["severity"] == "drift" for c in columns] == [c["drifted"] for c in columns]


def _check_contract(report: dict[str, Any], n_reference: int, n_current: int) -> None:
    assert {"drifted", "n_reference", "n_current", "columns"} <= set(report)
    assert (report["n_reference"], report["n_current"]) == (n_reference, n_current)
    assert sorted(c["column"] for c in report["columns"]) == sorted(FEATURES)
    assert_ranked(report["columns"])
    for column in report["columns"]:
        assert set(column) >= COLUMN_KEYS, column
        assert column["kind"] in ("numeric", "categorical")
        assert column["test"] == ("ks" if column["kind"] == "numeric" else "chi2")
        assert isinstance(column["drifted"], bool)
        assert 0.0 <= column["p_value"] <= 1.0
    kinds = {c["column"]: c["kind"] for c in report["columns"]}
    assert {k for k, v in kinds.items() if v == "categorical"} == set(
        LoanSimulator.categorical_columns
    )


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_drift_files_same_distribution_exits_0(tmp_path: Path, suffix: str) -> None:
    ref = _write(_pre(1), tmp_path / f"ref{suffix}")
    cur = _write(_pre(2, 2500), tmp_path / f"cur{suffix}")

    result = cli(tmp_path, "drift", str(ref), str(cur), "--json")
    assert result.returncode == 0, result.stderr
    report = as_json(result)
    _check_contract(report, 3000, 2500)
    assert report["drifted"] is False
    assert not [c["column"] for c in report["columns"] if c["drifted"]]

    human = cli(tmp_path, "drift", str(ref), str(cur))
    assert human.returncode == 0, human.stderr
    assert "no drift in 8 columns" in human.stdout
    assert "DRIFT" not in human.stdout


@pytest.mark.parametrize(("ref_suffix", "cur_suffix"), [(".parquet", ".parquet"), (".csv", ".pq")])
def test_drift_files_after_the_drift_point_exits_1_and_flags_the_changed_columns(
    tmp_path: Path, ref_suffix: str, cur_suffix: str
) -> None:
    ref = _write(_pre(1), tmp_path / f"ref{ref_suffix}")
    cur = _write(_post(3), tmp_path / f"cur{cur_suffix}")

    result = cli(tmp_path, "drift", str(ref), str(cur), "--json")
    assert result.returncode == 1, result.stderr
    report = as_json(result)
    _check_contract(report, 3000, 3000)
    assert report["drifted"] is True
    assert {c["column"] for c in report["columns"] if c["drifted"]} == DRIFTED

    human = cli(tmp_path, "drift", str(ref), str(cur))
    assert human.returncode == 1, human.stderr
    verdict = next(line for line in human.stdout.splitlines() if line.startswith("DRIFT:"))
    assert "per-column drift in 3 of 8 columns" in verdict
    for column in DRIFTED:
        assert column in verdict


def _correlated(rho: float, seed: int, n: int = 4000) -> pd.DataFrame:
    """Two standard-normal columns with correlation ``rho``: same marginals for every rho."""
    rng = np.random.default_rng(seed)
    x, noise = rng.standard_normal(n), rng.standard_normal(n)
    return pd.DataFrame({"x": x, "y": rho * x + np.sqrt(1 - rho**2) * noise})


def test_drift_of_a_broken_correlation_says_why_in_the_table_the_json_and_the_html(
    tmp_path: Path,
) -> None:
    ref = _write(_correlated(0.9, seed=1), tmp_path / "a.parquet")
    cur = _write(_correlated(-0.9, seed=2), tmp_path / "b.parquet")

    human = cli(tmp_path, "drift", str(ref), str(cur), "--html", "report.html")
    assert human.returncode == 1, human.stderr
    verdicts = [line for line in human.stdout.splitlines() if line.startswith("DRIFT")]
    assert len(verdicts) == 1, human.stdout
    assert verdicts[0].startswith("DRIFT: joint drift — no column drifted on its own")
    assert "domain classifier" in verdicts[0] and "ROC AUC" in verdicts[0]
    assert "DRIFT in 0 of 2 columns" not in human.stdout

    page = (tmp_path / "report.html").read_text()
    assert '<span class="verdict drift">DRIFT: joint drift</span>' in page
    why = page[page.index('<section id="why">') :]
    why = why[: why.index("</section>")]
    assert 'class="reason counted" data-signal="joint"' in why
    assert "joint drift — no column drifted on its own" in why

    report = as_json(cli(tmp_path, "drift", str(ref), str(cur), "--json"))
    assert report["drifted"] is True and report["n_drifted"] == 0
    assert [(r["signal"], r["counted"]) for r in report["reasons"]] == [("joint", True)]


def test_drift_files_loads_neither_scikit_learn_nor_scipy_nor_the_store(tmp_path: Path) -> None:
    # Start-up is most of a small check: the tests, the classifier and the file path are
    # numpy, pyarrow and pandas only (scipy.stats and scikit-learn cost ~0.5 s and ~1 s).
    ref = _write(_pre(1), tmp_path / "ref.parquet")
    cur = _write(_post(3), tmp_path / "cur.parquet")
    code = (
        "import sys\n"
        "from closedloop.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\n"
        "heavy = [m for m in ('sklearn', 'scipy', 'sqlalchemy') if m in sys.modules]\n"
        "print('LOADED=' + ','.join(heavy), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "drift", str(ref), str(cur), "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert as_json(result)["multivariate"]["method"] == "domain_classifier"
    assert result.stderr.strip().splitlines()[-1] == "LOADED="


def test_drift_weighted_by_importance_counts_only_drift_that_matters(tmp_path: Path) -> None:
    ref = _write(_pre(1), tmp_path / "ref.parquet")
    cur = _write(_post(3), tmp_path / "cur.parquet")
    weights = {c: (0.01 if c in DRIFTED else 1.0) for c in FEATURES}
    (tmp_path / "weights.json").write_text(json.dumps(weights))
    args = ["drift", str(ref), str(cur), "--no-multivariate", "--weights", "weights.json"]

    result = cli(tmp_path, *args, "--min-weighted-share", "0.5", "--json")
    assert result.returncode == 0, result.stderr  # drift only where the model barely looks
    report = as_json(result)
    assert {c["column"] for c in report["columns"] if c["drifted"]} == DRIFTED
    assert report["weighting"]["counts"] is False
    assert report["weighting"]["weighted_share"] == pytest.approx(0.03 / 5.03)

    human = cli(tmp_path, *args, "--min-weighted-share", "0.001")
    assert human.returncode == 1, human.stderr
    assert "the drifted columns carry 0.6% of the importance weight (counts from 0.1%)" in (
        human.stdout
    )

    (tmp_path / "bad.json").write_text("{income: 1}")
    assert_clean_error(
        cli(tmp_path, "drift", str(ref), str(cur), "--weights", "bad.json"), "not valid JSON"
    )
    (tmp_path / "negative.json").write_text(json.dumps({"income": -1}))
    assert_clean_error(
        cli(tmp_path, "drift", str(ref), str(cur), "--weights", "negative.json"),
        "'income'",
        ">= 0",
    )
    assert_clean_error(
        cli(tmp_path, "drift", str(ref), str(cur), "--min-weighted-share", "0.5"),
        "needs --weights",
    )


def test_drift_file_errors_exit_2_with_a_clear_message(tmp_path: Path) -> None:
    ref = _write(_pre(1, 500), tmp_path / "ref.parquet")
    cur = _write(_pre(2, 500), tmp_path / "cur.csv")

    missing = cli(tmp_path, "drift", str(ref), str(tmp_path / "nowhere.parquet"))
    assert_clean_error(missing, str(tmp_path / "nowhere.parquet"), "does not exist")

    odd = tmp_path / "cur.txt"
    odd.write_text("income\n1\n")
    assert_clean_error(cli(tmp_path, "drift", str(ref), str(odd)), "cur.txt", ".txt")

    no_region = _write(_pre(2, 500).drop(columns=["region"]), tmp_path / "no_region.csv")
    error = assert_clean_error(cli(tmp_path, "drift", str(ref), str(no_region)), "region")
    assert "current" in error
    as_json_error = cli(tmp_path, "drift", str(ref), str(no_region), "--json")
    assert as_json_error.returncode == 2
    body = as_json(as_json_error)["error"]
    assert body["code"] == "schema_error"
    assert body["details"]["missing"] == ["region"]

    alpha = cli(tmp_path, "drift", str(ref), str(cur), "--alpha", "3")
    assert alpha.returncode == 2
    assert "Traceback" not in alpha.stderr
    assert "Invalid value for '--alpha'" in alpha.stderr
    assert "0<x<1" in alpha.stderr


# --------------------------------------------------------------------------------------------
# 4. monitor a model's logged traffic
# --------------------------------------------------------------------------------------------


def _log_traffic(
    project: Path, rows: pd.DataFrame, *, model: str = MODEL, version: int = 1
) -> None:
    log = PredictionLog(str(project / ".closedloop" / "artifacts" / "predictions"))
    try:
        inputs = rows[FEATURES].reset_index(drop=True)
        log.append(
            model,
            version,
            [f"req-{i}" for i in range(len(inputs))],
            inputs,
            np.zeros(len(inputs), dtype=np.int64),
            np.full(len(inputs), 0.2),
        )
    finally:
        log.close()


def _check_events(project: Path) -> list[dict[str, Any]]:
    events = as_json(ok(project, "history", MODEL, "--all", "--json"))
    return [e for e in events if e["kind"] == "check.recorded"]


def test_monitor_flags_drift_in_logged_traffic_and_records_each_check(project: Path) -> None:
    sim = LoanSimulator(seed=11, drift_at=4000)
    _log_traffic(project, sim.stream(1500))

    calm = cli(project, "monitor", MODEL, "--json")
    assert calm.returncode == 0, calm.stderr
    first = as_json(calm)
    assert (first["model"], first["version"]) == (MODEL, 1)
    assert first["drifted"] is False
    assert first["n_current"] == 1500
    assert sorted(c["column"] for c in first["columns"]) == sorted(FEATURES)
    assert_ranked(first["columns"])
    assert all(set(c) >= COLUMN_KEYS for c in first["columns"])

    _log_traffic(project, sim.stream(2000, start=sim.drift_at))
    stormy = cli(project, "monitor", MODEL, "--window", "2000", "--json")
    assert stormy.returncode == 1, stormy.stderr
    second = as_json(stormy)
    assert second["drifted"] is True
    assert second["n_current"] == 2000
    assert {c["column"] for c in second["columns"] if c["drifted"]} == DRIFTED
    assert second["check_id"] != first["check_id"]

    _log_traffic(project, sim.stream(2000, start=sim.drift_at + 2000))  # a new window
    human = cli(project, "monitor", MODEL, "--window", "2000")
    assert human.returncode == 1, human.stderr
    assert "DRIFT: per-column drift in 3 of 8 columns" in human.stdout
    assert "recorded" in human.stdout

    checks = _check_events(project)
    assert [(e["version"], e["payload"]["drifted"]) for e in checks] == [
        (1, False),
        (1, True),
        (1, True),
    ]
    assert [e["payload"]["check_id"] for e in checks[:2]] == [
        first["check_id"],
        second["check_id"],
    ]
    assert set(checks[1]["payload"]["drifted_columns"]) == DRIFTED
    assert checks[1]["reason"] == "drift detected"


def test_monitor_with_too_few_rows_says_how_many(project: Path) -> None:
    _log_traffic(project, LoanSimulator(seed=4).stream(57))
    result = cli(project, "monitor", MODEL, "--json")
    error = assert_clean_error(result, "57", str(MIN_ROWS))
    assert "monitor.min_rows" in error
    assert as_json(result)["error"]["code"] == "conflict"
    assert _check_events(project) == []


def test_monitor_without_new_traffic_gives_one_message_and_no_verdict(project: Path) -> None:
    _log_traffic(project, LoanSimulator(seed=4).stream(1500))
    first = cli(project, "monitor", MODEL)
    assert first.returncode == 0, first.stderr
    assert "no drift in 8 columns" in first.stdout
    assert f"check 1 of {MODEL} recorded" in first.stdout

    again = cli(project, "monitor", MODEL)  # nothing was logged since: the same window
    error = assert_clean_error(again, "No new traffic", f"'{MODEL}' version 1", "since check 1")
    assert again.stdout == ""  # no table, no "no drift" line before the error
    assert "Only 0 rows" not in again.stdout + again.stderr
    assert "hint: Run the monitor again once the model has answered more requests." in (
        again.stderr
    ), error
    assert as_json(cli(project, "monitor", MODEL, "--json"))["error"]["code"] == "conflict"
    assert len(_check_events(project)) == 1


def test_monitor_without_production_is_an_error(project: Path) -> None:
    from closedloop.services import registry
    from closedloop.services.workspace import Workspace

    ws = Workspace.open(project)
    try:
        frame = loans(300)
        registry.register_version(ws, "other", fit_model(frame), features(frame))
    finally:
        ws.close()
    _log_traffic(project, LoanSimulator(seed=4).stream(300), model="other")

    error = assert_clean_error(cli(project, "monitor", "other"), "other", "no production")
    assert "'other'" in error
    assert_clean_error(cli(project, "monitor", "nosuch"), "nosuch")


# --------------------------------------------------------------------------------------------
# 5. the schema revision
# --------------------------------------------------------------------------------------------


def _set_revision(project: Path, revision: str) -> None:
    with sqlite3.connect(project / ".closedloop" / "metadata.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    conn.close()


def test_db_current_and_an_outdated_schema(project: Path) -> None:
    head = head_revision()
    current = ok(project, "db", "current")
    assert f": {head}; expected: {head}" in current.stdout

    _set_revision(project, "0001")  # an older revision of this release's chain
    assert "0001; expected: " + head in ok(project, "db", "current").stdout
    for args in (["models"], ["models", "--json"], ["versions", MODEL]):
        result = cli(project, *args)
        assert_clean_error(result, "'0001'", head)
        hints = [line for line in result.stderr.splitlines() if line.startswith("hint:")]
        assert len(hints) == 1 and "closedloop db upgrade" in hints[0], result.stderr


def test_db_upgrade_on_an_unknown_revision_is_a_clean_error(project: Path) -> None:
    _set_revision(project, "0000")
    result = cli(project, "db", "upgrade")
    assert_clean_error(result, "0000", "does not know")
    assert "Upgrade closedloop" in result.stderr


# --------------------------------------------------------------------------------------------
# 6. help and --json everywhere
# --------------------------------------------------------------------------------------------

COMMANDS = [
    [],
    ["init"],
    ["train"],
    ["models"],
    ["versions"],
    ["runs"],
    ["history"],
    ["alias"],
    ["alias", "set"],
    ["alias", "list"],
    ["alias", "delete"],
    ["rollback"],
    ["serve"],
    ["predict"],
    ["drift"],
    ["monitor"],
    ["report"],
    ["rollout"],
    ["rollout", "start"],
    ["rollout", "status"],
    ["rollout", "evaluate"],
    ["rollout", "promote"],
    ["rollout", "abort"],
    ["rollout", "advance"],
    ["rollout", "stop-shadow"],
    ["db"],
    ["db", "upgrade"],
    ["db", "current"],
    ["demo"],
    ["agent"],
    ["agent", "status"],
    ["retrain"],
    ["alerts"],
    ["alerts", "list"],
    ["alerts", "test"],
    ["backtest"],
]
JSON_COMMANDS = [
    ["train"],
    ["models"],
    ["versions"],
    ["runs"],
    ["history"],
    ["alias", "set"],
    ["alias", "list"],
    ["alias", "delete"],
    ["rollback"],
    ["predict"],
    ["drift"],
    ["monitor"],
    ["rollout", "start"],
    ["rollout", "status"],
    ["rollout", "evaluate"],
    ["agent"],
    ["agent", "status"],
    ["retrain"],
    ["alerts"],
    ["alerts", "test"],
    ["backtest"],
]


def test_every_command_has_help_and_data_commands_take_json(tmp_path: Path) -> None:
    from closedloop.cli.main import cli as root

    def walk(group: Any, prefix: list[str]) -> Iterator[list[str]]:
        yield prefix
        for name, command in getattr(group, "commands", {}).items():
            yield from walk(command, [*prefix, name])

    assert sorted(map(tuple, walk(root, []))) == sorted(map(tuple, COMMANDS))
    for command in COMMANDS:
        result = cli(tmp_path, *command, "--help", timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        assert result.stdout.startswith("Usage: closedloop"), (command, result.stdout)
        assert "--json" in result.stdout or command not in JSON_COMMANDS, command
    assert not (tmp_path / ".closedloop").exists(), "--help must not create a store"


# --------------------------------------------------------------------------------------------
# 7. serve refuses a public address
# --------------------------------------------------------------------------------------------


def test_serve_help_shows_the_feedback_body_with_an_example(tmp_path: Path) -> None:
    text = ok(tmp_path, "serve", "--help").stdout
    assert "/models/MODEL/feedback" in text
    assert '[{"request_id": "REQUEST-ID", "row": 0, "label": 1}]' in text
    assert '{"labels": [...]}' in text


def test_serve_on_a_port_in_use_says_so_in_one_line_and_serves_nothing(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli(tmp_path, "serve", "--port", str(port), timeout=60)
    assert_clean_error(result, f"port {port} on 127.0.0.1 is already in use")
    assert "--port" in result.stderr
    assert "serving" not in result.stdout + result.stderr
    assert "address already in use" not in result.stderr  # not uvicorn's own message


@pytest.mark.parametrize(
    ("host", "needle"),
    [("192.0.2.1", "not an address of this machine"), ("no-such-host.invalid", "does not resolve")],
)
def test_serve_on_an_address_it_cannot_listen_on_says_so(
    tmp_path: Path, host: str, needle: str
) -> None:
    ok(tmp_path, "init")
    result = cli(tmp_path, "serve", "--host", host, "--insecure-remote", "--port", "0", timeout=60)
    assert_clean_error(result, host, needle)
    assert "serving" not in result.stdout


def test_serve_refuses_a_non_loopback_host_without_insecure_remote(project: Path) -> None:
    result = cli(project, "serve", "--host", "0.0.0.0", "--port", "0", timeout=30)
    error = assert_clean_error(result, "0.0.0.0", "authentication")
    assert "Refusing to bind" in error
    assert "--insecure-remote" in result.stderr
    assert result.stdout == ""


# --------------------------------------------------------------------------------------------
# 8. a newcomer's first hour: runs --compare, --debug anywhere, MODEL by default, no project
# --------------------------------------------------------------------------------------------


def test_runs_compare_takes_run_ids_after_the_flag_as_the_readme_shows(project: Path) -> None:
    ids = [r["id"] for r in as_json(ok(project, "runs", "--json"))]
    assert len(ids) == 2
    short = [i[:8] for i in ids]

    compared = ok(project, "runs", "--compare", *short)
    assert "runs compared" in compared.stdout
    assert all(s in compared.stdout for s in short)
    assert "metric:roc_auc" in compared.stdout
    for args in (["--compare", *short], [*short, "--compare"], ["--compare", *ids]):
        found = as_json(ok(project, "runs", *args, "--json"))
        assert [r["id"] for r in found] == ids, args

    assert_clean_error(cli(project, "runs", "--compare"), "--compare needs the runs")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_before_or_after_the_command(project: Path, where: str) -> None:
    args = ["versions", "nosuch"]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    result = cli(project, *args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr
    assert "error: No model named 'nosuch'" in result.stderr


def test_model_defaults_to_pipeline_model_and_a_typo_names_the_closest(project: Path) -> None:
    named = as_json(ok(project, "versions", MODEL, "--json"))
    assert as_json(ok(project, "versions", "--json")) == named
    assert as_json(ok(project, "history", "--json")) == as_json(
        ok(project, "history", MODEL, "--json")
    )
    assert ok(project, "rollout", "status").returncode == 0

    for command in (
        ["versions"],
        ["history"],
        ["rollback"],
        ["monitor"],
        ["report"],
        ["rollout", "status"],
        ["alias", "set"],
    ):
        extra = ["production", "1"] if command == ["alias", "set"] else []
        error = assert_clean_error(cli(project, *command, "lons", *extra), "'lons'")
        assert "did you mean 'loans'?" in error, (command, error)
    assert not Path(project / "lons-report.html").exists()

    toml = project / "closedloop.toml"
    toml.write_text(toml.read_text().replace('model = "loans"', 'model = ""'))
    result = cli(project, "versions")
    assert_clean_error(result, "No MODEL given", "pipeline.model")


READ_COMMANDS = [
    ["models"],
    ["versions"],
    ["versions", MODEL],
    ["runs"],
    ["history", MODEL],
    ["report", MODEL],
    ["monitor", MODEL],
    ["rollback", MODEL],
    ["alias", "set", MODEL, "production", "1"],
    ["rollout", "status", MODEL],
    ["agent", "status"],
    ["alerts"],
    ["db", "current"],
]


def test_outside_a_project_commands_refuse_and_create_nothing(tmp_path: Path) -> None:
    for command in [*READ_COMMANDS, ["train"], ["serve", "--port", "0"]]:
        result = cli(tmp_path, *command)
        error = assert_clean_error(result, "No project here", f"from {tmp_path.resolve()} upwards")
        assert "closedloop.toml" in error
        assert "hint: Run `closedloop init`" in result.stderr, (command, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_in_a_new_project_read_commands_create_no_store(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    for command in READ_COMMANDS:
        result = cli(tmp_path, *command)
        assert_clean_error(result, "Nothing is recorded in this project yet")
        assert "hint: Run `closedloop train`" in result.stderr, (command, result.stderr)
    assert not (tmp_path / ".closedloop").exists()


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o"), ("zsh", "#compdef")])
def test_shell_completion_script_is_printed_and_documented(
    tmp_path: Path, shell: str, marker: str
) -> None:
    source = ok(tmp_path, env=_clean_env(_CLOSEDLOOP_COMPLETE=f"{shell}_source"))
    assert marker in source.stdout
    assert "_CLOSEDLOOP_COMPLETE" in source.stdout
    assert f"_CLOSEDLOOP_COMPLETE={shell}_source closedloop" in ok(tmp_path, "--help").stdout

    words = ok(
        tmp_path,
        env=_clean_env(
            _CLOSEDLOOP_COMPLETE="bash_complete", COMP_WORDS="closedloop ver", COMP_CWORD="1"
        ),
    )
    assert "versions" in words.stdout
