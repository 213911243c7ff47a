"""`closedloop agent` as real processes: a second agent waits, takes over from a killed one, and
finishes its retrain without running any step twice. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from closedloop.domain.simulate import LoanSimulator
from closedloop.services import events, registry
from closedloop.services.workspace import Workspace
from closedloop.settings import load_settings

pytestmark = pytest.mark.slow

MODEL = "loans"
FEATURES = ["income", "loan_amount", "age", "credit_score", "debt_to_income", "months_employed"]

USER_MODULE = """
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def load():
    return pd.read_parquet(HERE / "history.parquet")


def train(X, y):
    from sklearn.linear_model import LogisticRegression

    slow = HERE / "slow"
    if slow.exists():
        (HERE / f"training-{__import__('os').getpid()}").write_text("started")
        time.sleep(float(slow.read_text()))
    return LogisticRegression(max_iter=500).fit(X, y)
"""

PROJECT = """
[store]
metadata_url = "{url}"

[pipeline]
model = "loans"
loader = "userpipe:load"
trainer = "userpipe:train"
target = "default"
metric = "roc_auc"

[agent]
interval_seconds = 0.3
lease_seconds = {lease}
rollout = "promote"

[gate]
bootstrap = 200
latency_tolerance = 10.0
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "closedloop", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def start_agent(folder: Path, name: str) -> subprocess.Popen[bytes]:
    log = (folder / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "closedloop", "agent"],
        cwd=folder,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until(what: str, check: Any, timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def project(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    if request.param == "sqlite":
        url, lease = f"sqlite:///{tmp_path / 'store.db'}", 3
    else:
        url, lease = str(request.getfixturevalue("pg_url")), 60  # PostgreSQL needs no expiry
    (tmp_path / "closedloop.toml").write_text(PROJECT.format(url=url, lease=lease))
    (tmp_path / "userpipe.py").write_text(textwrap.dedent(USER_MODULE))
    frame = LoanSimulator(seed=3).reference(3000).drop(columns=["applied_at", "purpose", "region"])
    frame.to_parquet(tmp_path / "history.parquet")
    yield tmp_path


def test_killing_the_active_agent_mid_retrain_lets_another_finish_it_once(
    project: Path,
) -> None:
    cli(project, "train")
    request = json.loads(cli(project, "retrain", "--reason", "new data", "--json").stdout)
    (project / "slow").write_text("4")  # the trainer now takes 4 s: time to kill an agent in it

    first = start_agent(project, "first")
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_until("the first agent to start training", lambda: list(project.glob("training-*")))
        second = start_agent(project, "second")  # it waits: the lease is held
        time.sleep(1.0)
        first.send_signal(signal.SIGKILL)  # dies inside the user's trainer, nothing registered
        first.wait(timeout=30)

        def finished() -> Any:
            status = json.loads(cli(project, "agent", "status", "--json").stdout)
            done = [r for r in status["retrains"] if r["request_id"] == request["request_id"]]
            return done[0] if done and done[0]["status"] != "pending" else None

        outcome = wait_until("the second agent to finish the retrain", finished)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)

    assert outcome["status"] in ("promoted", "rejected")
    ws = Workspace(load_settings(project, env={}))
    try:
        started = events.list_events(ws, model=MODEL, kinds=("retrain.started",))
        done = events.list_events(ws, model=MODEL, kinds=("retrain.finished",))
        assert [e.payload["request_id"] for e in done] == [request["request_id"]]
        holders = [e.payload["holder"] for e in started]
        assert len(holders) == 2 and holders[0] != holders[1]  # started by the dead one, redone
        assert done[0].payload["holder"] == holders[1]
        # one candidate registered for the request: the killed attempt registered nothing
        for_request = [
            v.number
            for v in registry.list_versions(ws, MODEL)
            if v.lineage.get("retrain_request") == request["request_id"]
        ]
        assert for_request == [2]
        takeovers = events.list_events(ws, kinds=("agent.lease_acquired",))
        assert takeovers[-1].payload["previous_holder"] == holders[0]
        assert len(list(project.glob("training-*"))) == 2  # trained by each agent, once
    finally:
        ws.close()


def test_serve_with_the_agent_retrains_promotes_and_serves_the_new_version(
    project: Path,
) -> None:
    import httpx
    import pandas as pd
    from tests.conftest import free_port

    history = pd.read_parquet(project / "history.parquet")
    shuffled = history.assign(default=history["default"].sample(frac=1, random_state=0).to_numpy())
    shuffled.to_parquet(project / "history.parquet")  # v1 learns from labels that mean nothing
    cli(project, "train")
    history.to_parquet(project / "history.parquet")  # the warehouse is fixed
    cli(project, "retrain", "--reason", "fresh data")
    port = free_port()
    log = (project / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "closedloop", "serve", "--agent", "--port", str(port)],
        cwd=project,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    row = {
        "dataframe_split": {
            "columns": FEATURES,
            "data": [[52000.0, 12000.0, 40, 700, 0.3, 60]],
        }
    }

    def answered_by() -> str | None:
        try:
            response = httpx.post(f"http://127.0.0.1:{port}/invocations", json=row, timeout=5)
        except httpx.HTTPError:
            return None
        assert response.status_code == 200, response.text
        return response.headers["X-Model-Version"]

    try:
        assert wait_until("the server to answer", answered_by) in ("1", "2")
        assert wait_until("v2 to serve", lambda: answered_by() == "2")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    ws = Workspace(load_settings(project, env={}))
    try:
        (done,) = events.list_events(ws, model=MODEL, kinds=("retrain.finished",))
        assert done.payload["status"] == "promoted" and done.version == 2
        released = events.list_events(ws, kinds=("agent.lease_released",))
        assert released, "the server's agent releases its lease on SIGTERM"
    finally:
        ws.close()
