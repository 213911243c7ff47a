"""The agent on SQLite and PostgreSQL: triggers, retraining, the gate, the canary, alerts.

Traffic is served in-process the way the server serves it: the real ``RegistryModelHost``
routes each request (sticky canary buckets), the routed version predicts, and the rows go to
the real prediction log; labels arrive through the real feedback log. Alerts go to a real
webhook receiver on loopback, signed.
"""

from __future__ import annotations

import json
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from closedloop.domain.alerts import verify
from closedloop.domain.guardrails import GuardrailPolicy
from closedloop.domain.simulate import LoanSimulator
from closedloop.errors import ConfigError
from closedloop.services import agent as agents
from closedloop.services import events, monitors, pipeline, registry
from closedloop.services import rollout as rollouts
from closedloop.services.agent import Agent, AgentPolicy
from closedloop.services.events import utcnow
from closedloop.services.serving import RegistryModelHost
from closedloop.services.workspace import Workspace
from closedloop.settings import (
    AgentSettings,
    AlertSettings,
    GateSettings,
    MonitorSettings,
    PipelineSettings,
)

MODEL = "loans"
TARGET = "default"
SECRET = "s3cret"
SIM = LoanSimulator(seed=5, drift_at=20_000)
FEATURES = list(LoanSimulator.feature_columns)
WINDOW = 2000
GUARDRAILS = GuardrailPolicy(min_requests=100, min_labels=50, max_latency_ratio=20.0)

USER_MODULE = """
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def load():
    return pd.read_parquet(HERE / "history.parquet")


def load_missing():
    return pd.read_parquet(HERE / "no-such-file.parquet")


def train_prior(X, y):
    from sklearn.dummy import DummyClassifier

    return DummyClassifier(strategy="prior").fit(X, y)
"""


# -- a webhook receiver on loopback -----------------------------------------------------------


@dataclass
class Receiver:
    """Keeps each delivery: the alert id header, the body, and whether its signature is valid."""

    server: ThreadingHTTPServer
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, ws: Workspace, kind: str, timeout: float = 20) -> dict[str, Any]:
        """The delivery of the (first) ``kind`` alert the store recorded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = {
                e.payload.get("id")
                for e in events.list_events(ws, model=MODEL, kinds=("alert.raised",))
                if e.payload.get("kind") == kind
            }
            for item in self.received:
                if item["id"] in ids:
                    return item
            time.sleep(0.05)
        raise AssertionError(f"no {kind!r} alert reached the webhook; got {self.received}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stamp = self.headers.get("X-Closedloop-Timestamp", "")
            signature = self.headers.get("X-Closedloop-Signature", "")
            received.append(
                {
                    "id": self.headers.get("X-Closedloop-Alert-Id"),
                    "valid": verify(
                        SECRET.encode(),
                        stamp,
                        body,
                        signature,
                        alert_id=self.headers.get("X-Closedloop-Alert-Id", ""),
                        now=time.time(),
                    ),
                    "body": json.loads(body),
                }
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Receiver(server, received)
    server.shutdown()
    server.server_close()


# -- the project ------------------------------------------------------------------------------


@pytest.fixture
def project(ws: Workspace, tmp_path: Path, receiver: Receiver) -> Iterator[Workspace]:
    """A project whose loader returns 3,000 pre-drift rows and whose trainer is the demo's."""
    module = f"agentproject_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(USER_MODULE))
    SIM.stream(3000).drop(columns=["applied_at"], errors="ignore").to_parquet(
        tmp_path / "history.parquet"
    )
    settings = replace(
        ws.settings,
        project_dir=tmp_path,
        pipeline=PipelineSettings(
            model=MODEL,
            loader=f"{module}:load",
            trainer="closedloop.demo.pipeline:train",
            target=TARGET,
            metric="roc_auc",
            holdout_fraction=0.25,
        ),
        monitor=MonitorSettings(window_rows=WINDOW, min_rows=200, persistence=2),
        agent=AgentSettings(
            interval_seconds=1,
            lease_seconds=60,
            retrain_data="traffic",
            traffic_rows=2 * WINDOW,
            min_labelled_rows=200,
            canary_steps=(0.5, 1.0),
            step_seconds=0.01,
        ),
        gate=GateSettings(bootstrap=200),
        alerts=AlertSettings(webhook_url=receiver.url, webhook_secret=SECRET, retries=1),
    )
    project_ws = Workspace(settings)
    yield project_ws
    project_ws.close()
    sys.modules.pop(module, None)
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def with_settings(ws: Workspace, **sections: Any) -> Workspace:
    return Workspace(replace(ws.settings, **sections))


class Serving:
    """Serves frames the way the server does and posts every row's label afterwards."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.host = RegistryModelHost(ws, poll_interval=3600)
        self.sent = 0

    def send(self, frame: pd.DataFrame) -> dict[int, int]:
        """One single-row request per row; returns how many rows each version answered."""
        self.host.sync()
        ids = [f"r{self.sent + i}" for i in range(len(frame))]
        self.sent += len(frame)
        routed = [self.host.route(MODEL, rid) for rid in ids]
        counts: dict[int, int] = {}
        log = self.ws.prediction_log()
        try:
            for number in sorted({v.version for v in routed}):
                picked = [i for i, v in enumerate(routed) if v.version == number]
                version = next(v for v in routed if v.version == number)
                inputs = frame.iloc[picked][FEATURES].reset_index(drop=True)
                start = time.perf_counter()
                answer = version.predict(inputs)
                per_row_ms = (time.perf_counter() - start) * 1000 / len(picked)
                log.append(
                    MODEL,
                    number,
                    [ids[i] for i in picked],
                    inputs,
                    np.asarray(answer.labels),
                    None if answer.scores is None else np.asarray(answer.scores),
                    latency_ms=per_row_ms,
                )
                counts[number] = len(picked)
        finally:
            log.close()
        self.ws.feedback_log().append(MODEL, ids, frame[TARGET].tolist())
        return counts


def stream(n: int, start: int) -> pd.DataFrame:
    """Simulated rows with the features and the label (no timestamp column)."""
    return SIM.stream(n, start=start).drop(columns=["applied_at"])


def first_version(ws: Workspace) -> None:
    result = pipeline.train(ws, actor="alice", reason="first model")
    assert result.promoted and result.version == 1


def kinds(ws: Workspace, prefix: str) -> list[str]:
    return [e.kind for e in events.list_events(ws, model=MODEL) if e.kind.startswith(prefix)]


def finished(ws: Workspace) -> list[events.Event]:
    return events.list_events(ws, model=MODEL, kinds=(agents.FINISHED,))


# -- the loop ---------------------------------------------------------------------------------


def test_drift_is_flagged_within_persistence_then_retrained_gated_canaried_and_promoted(
    project: Workspace, receiver: Receiver
) -> None:
    ws = project
    first_version(ws)
    serving = Serving(ws)
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        serving.send(SIM.stream(WINDOW, start=5000))  # clean traffic
        report = agent.run_once()
        assert report.active
        assert [a["state"] for a in report.actions if a["step"] == "monitor"] == ["ok"]

        serving.send(SIM.stream(WINDOW, start=SIM.drift_at))  # the world changes
        report = agent.run_once()
        assert [a["state"] for a in report.actions if a["step"] == "monitor"] == ["drifting"]
        assert kinds(ws, "retrain.") == []  # persistence 2: one drifted window is not enough

        serving.send(SIM.stream(WINDOW, start=SIM.drift_at + WINDOW))
        report = agent.run_once()
        steps = [a["step"] for a in report.actions]
        assert "retrain_requested" in steps and "retrain_released" in steps
        assert kinds(ws, "retrain.") == [
            "retrain.requested",
            "retrain.started",
            "retrain.finished",
        ]
        done = finished(ws)[0]
        assert done.payload["status"] == "canary" and done.version == 2
        assert done.payload["gate"]["passed"] is True
        lineage = registry.get_version(ws, MODEL, 2).lineage
        assert lineage["retrain_request"] == done.payload["request_id"]
        assert lineage["trigger"] == "drift"
        assert lineage["dataset"]["source"].startswith("traffic")
        state = rollouts.state(ws, MODEL)
        assert (state.mode, state.candidate, state.weight) == ("canary", 2, 0.5)
        assert registry.resolve_alias(ws, MODEL) == 1  # production untouched until promotion

        for _ in range(6):  # the canary serves half the traffic until its guardrails promote it
            counts = serving.send(SIM.stream(600, start=SIM.drift_at + serving.sent))
            agent.run_once()
            if registry.resolve_alias(ws, MODEL) == 2:
                break
            assert 2 in counts and 1 in counts
        assert registry.resolve_alias(ws, MODEL) == 2
        assert rollouts.state(ws, MODEL).mode == "idle"
        assert kinds(ws, "rollout.")[0] == "rollout.canary_started"
        assert kinds(ws, "rollout.")[-1] == "rollout.promoted"

        drift = receiver.wait_for(ws, "drift")
        assert drift["valid"], "the webhook body must carry a valid HMAC-SHA256 signature"
        said = drift["body"]["blocks"][1]["text"]["text"]  # the alert says why it drifted
        assert "Why:\n• per-column drift in " in said, said
        [alert] = monitors.list_alerts(ws, MODEL)
        assert any(r["signal"] == "columns" and r["counted"] for r in alert.payload["reasons"])
    finally:
        agent.close()


def test_a_candidate_worse_than_production_is_rejected_by_the_gate(
    project: Workspace, receiver: Receiver, tmp_path: Path
) -> None:
    first_version(project)
    module = project.settings.pipeline.loader.split(":")[0]
    ws = with_settings(
        project,
        pipeline=replace(project.settings.pipeline, trainer=f"{module}:train_prior"),
        agent=replace(project.settings.agent, retrain_data="loader"),
    )
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        request = agents.request_manual_retrain(ws, actor="bob", reason="try a baseline")
        report = agent.run_once()
        assert "gate_rejected" in [a["step"] for a in report.actions]
        (done,) = finished(ws)
        assert done.payload["request_id"] == request
        assert done.payload["status"] == "rejected" and done.payload["gate"]["passed"] is False
        assert registry.resolve_alias(ws, MODEL) == 1
        assert rollouts.state(ws, MODEL).mode == "idle"
        assert receiver.wait_for(ws, "gate_rejected")["valid"]
        agent.run_once()  # a finished request is never picked up again
        assert len(finished(ws)) == 1 and registry.resolve_alias(ws, MODEL) == 1
    finally:
        agent.close()
        ws.close()


def test_a_failed_retrain_is_recorded_with_its_traceback_alerted_and_leaves_production(
    project: Workspace, receiver: Receiver
) -> None:
    first_version(project)
    module = project.settings.pipeline.loader.split(":")[0]
    ws = with_settings(
        project,
        pipeline=replace(project.settings.pipeline, loader=f"{module}:load_missing"),
        agent=replace(project.settings.agent, retrain_data="loader"),
    )
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        agents.request_manual_retrain(ws, actor="bob")
        agent.run_once()
        (done,) = finished(ws)
        assert done.payload["status"] == "failed"
        assert "no-such-file.parquet" in done.payload["traceback"]
        assert "FileNotFoundError" in done.payload["error"]
        assert [v.number for v in registry.list_versions(ws, MODEL)] == [1]
        assert registry.resolve_alias(ws, MODEL) == 1
        alerted = receiver.wait_for(ws, "retrain_failed")
        assert alerted["valid"]
        sent = json.dumps(alerted["body"])  # the traceback stays in the event
        assert "Traceback (most recent call last)" not in sent
        assert "The traceback and all details: event " in sent
        assert f"`closedloop alerts {MODEL} --json`" in sent
        [raised] = [
            e
            for e in events.list_events(ws, model=MODEL, kinds=("alert.raised",))
            if e.payload["kind"] == "retrain_failed"
        ]
        assert "no-such-file.parquet" in raised.payload["details"]["traceback"]
        agent.run_once()  # a failed request is finished: it is not retried pass after pass
        assert len(finished(ws)) == 1
    finally:
        agent.close()
        ws.close()


def test_a_traffic_retrain_without_enough_labels_fails_cleanly(project: Workspace) -> None:
    first_version(project)
    Serving(project).host.sync()
    agent = Agent(project, guardrails=GUARDRAILS)
    try:
        agents.request_manual_retrain(project, actor="bob")
        agent.run_once()
        (done,) = finished(project)
        assert done.payload["status"] == "failed"
        assert "agent.min_labelled_rows" in done.payload["error"]
    finally:
        agent.close()


def test_bad_labels_in_the_feedback_log_are_counted_and_the_traffic_retrain_still_runs(
    project: Workspace,
) -> None:
    """A label for an unknown request id, a label with a row position next to labels without,
    and a file written by hand with an unreadable row: the retrain on traffic trains on every
    good label and says how many it ignored (the join used to raise on any of them)."""
    ws = project
    first_version(ws)
    serving = Serving(ws)
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        sent = stream(WINDOW, start=5000)
        serving.send(sent)
        feedback = ws.feedback_log()
        feedback.append(MODEL, ["nonexistent"], [1])
        feedback.append(MODEL, ["r0"], [int(sent[TARGET].iloc[0])], rows=[0])
        folder = Path(ws.settings.feedback_url) / f"model={MODEL}"
        pd.DataFrame(
            {"_request_id": ["r1", "r2"], "_row": ["first", None], "_label": [1, 0]}
        ).to_parquet(folder / f"part-29990101T000000000000Z-{uuid.uuid4().hex}.parquet")

        agents.request_manual_retrain(ws, actor="bob")
        agent.run_once()
        (done,) = finished(ws)
        assert done.payload["status"] != "failed", done.payload
        source = registry.get_version(ws, MODEL, 2).lineage["dataset"]["source"]
        assert source == (
            f"traffic: last {WINDOW} labelled rows (2 labels ignored: 1 malformed, 1 unmatched)"
        ), source
    finally:
        agent.close()
        ws.close()


def test_a_candidate_good_offline_but_bad_on_live_traffic_is_aborted_by_its_guardrails(
    project: Workspace, receiver: Receiver
) -> None:
    """Production was trained on today's world; the candidate on stale history. On the stale
    held-out rows the candidate wins the gate; on live traffic its labels say otherwise."""
    ws = project
    live = stream(4000, start=SIM.drift_at + 10_000)
    result = pipeline.train(ws, frame=live, source="post-drift", actor="alice")
    assert result.promoted
    stale = with_settings(ws, agent=replace(ws.settings.agent, retrain_data="loader"))
    agent = Agent(stale, guardrails=GUARDRAILS)
    serving = Serving(stale)
    try:
        agents.request_manual_retrain(stale, actor="bob", reason="refresh from the warehouse")
        agent.run_once()
        (done,) = finished(stale)
        assert done.payload["status"] == "canary", done.reason
        for _ in range(6):
            serving.send(SIM.stream(600, start=SIM.drift_at + 20_000 + serving.sent))
            agent.run_once()
            if rollouts.state(stale, MODEL).mode != "canary":
                break
        assert rollouts.state(stale, MODEL).mode == "idle"
        assert registry.resolve_alias(stale, MODEL) == 1  # production restored (never moved)
        assert kinds(stale, "rollout.")[-1] == "rollout.aborted"
        aborted = receiver.wait_for(stale, "canary_aborted")
        assert aborted["valid"]
        # after the abort, production serves everything again
        assert serving.send(SIM.stream(200, start=SIM.drift_at + 30_000)) == {1: 200}
    finally:
        agent.close()
        stale.close()


def test_a_rollback_raises_one_alert(project: Workspace, receiver: Receiver) -> None:
    ws = project
    first_version(ws)
    pipeline.train(ws, frame=stream(3000, start=1000), source="more", actor="alice")
    registry.set_alias(ws, MODEL, "production", 2, actor="alice", force=True, reason="try it")
    registry.rollback(ws, MODEL, actor="carol", reason="bad numbers")

    def rollback_alerts() -> list[events.Event]:
        return [
            e
            for e in events.list_events(ws, model=MODEL, kinds=("alert.raised",))
            if e.payload.get("kind") == "rollback_done"
        ]

    # raised by the rollback itself, before any agent pass
    assert [(e.actor, e.payload["details"]["actor"]) for e in rollback_alerts()] == [
        ("carol", "carol")
    ]
    assert receiver.wait_for(ws, "rollback_done")["valid"]
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        agent.run_once()
        agent.run_once()
        assert len(rollback_alerts()) == 1  # the agent does not raise it a second time
    finally:
        agent.close()


def test_a_second_agent_waits_while_the_first_holds_the_lease(project: Workspace) -> None:
    first_version(project)
    a, b = Agent(project, holder="a"), Agent(project, holder="b")
    try:
        assert a.run_once().active
        assert not b.run_once().active
        a.close()
        assert b.run_once().active
    finally:
        a.close()
        b.close()


def test_a_request_whose_version_was_registered_before_a_crash_is_not_trained_again(
    project: Workspace,
) -> None:
    """The previous agent died after registering the candidate, before starting its canary."""
    ws = project
    first_version(ws)
    loader = with_settings(ws, agent=replace(ws.settings.agent, retrain_data="loader"))
    request = agents.request_manual_retrain(loader, actor="bob")
    pipeline.train(
        loader,
        frame=stream(3000, start=SIM.drift_at),
        source="crashed attempt",
        promote=False,
        lineage_extra={"retrain_request": request, "trigger": "manual"},
    )
    agent = Agent(loader, guardrails=GUARDRAILS)
    try:
        report = agent.run_once()
        assert "retrain_resumed" in [a["step"] for a in report.actions]
        assert [v.number for v in registry.list_versions(loader, MODEL)] == [1, 2]
        (done,) = finished(loader)
        assert done.version == 2
    finally:
        agent.close()
        loader.close()


def test_schedule_triggers_once_per_fire_time(project: Workspace) -> None:
    first_version(project)
    clock_at = [utcnow()]
    ws = with_settings(
        project,
        agent=replace(project.settings.agent, schedule="@hourly", retrain_data="loader"),
    )
    agent = Agent(ws, clock=lambda: clock_at[0], guardrails=GUARDRAILS)
    try:
        agent.run_once()  # the first pass starts the count: nothing is due yet
        assert kinds(ws, "retrain.requested") == []
        clock_at[0] += timedelta(hours=1)
        agent.run_once()
        requested = events.list_events(ws, model=MODEL, kinds=(agents.REQUESTED,))
        assert [e.payload["trigger"] for e in requested] == ["schedule"]
        agent.run_once()  # the same fire time never triggers twice
        assert len(events.list_events(ws, model=MODEL, kinds=(agents.REQUESTED,))) == 1
    finally:
        agent.close()
        ws.close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"retrain_data": "warehouse"}, "agent.retrain_data must be one of"),
        ({"rollout": "yolo"}, "agent.rollout must be one of"),
        ({"canary_steps": (0.5, 0.25)}, "agent.canary_steps must be increasing"),
        ({"canary_steps": (0.1, 0.5)}, "ending at 1.0"),
        ({"schedule": "every day"}, "Invalid cron expression"),
        ({"lease_seconds": 1.0, "interval_seconds": 30.0}, "must be at least"),
        ({"performance_drop": -0.1}, "agent.performance_drop must be a number >= 0"),
    ],
)
def test_a_bad_agent_setting_is_refused_with_its_name(
    project: Workspace, change: dict[str, Any], message: str
) -> None:
    ws = with_settings(project, agent=replace(project.settings.agent, **change))
    with pytest.raises(ConfigError, match=message):
        AgentPolicy.from_workspace(ws)


def test_an_agent_with_a_webhook_on_the_cloud_metadata_address_refuses_to_start(
    project: Workspace,
) -> None:
    metadata = "http://169.254.169.254/latest/meta-data/"
    ws = with_settings(project, alerts=replace(project.settings.alerts, webhook_url=metadata))
    with pytest.raises(ConfigError, match=r"alerts\.webhook_url must not point at a link-local"):
        Agent(ws)


def test_a_realised_performance_drop_on_labelled_traffic_triggers_a_retrain(
    project: Workspace,
) -> None:
    """Drift alerts are off here; the labels alone show the model got worse."""
    ws = with_settings(
        project,
        agent=replace(project.settings.agent, on_drift=False, performance_drop=0.05),
        monitor=replace(project.settings.monitor, persistence=10),
    )
    first_version(ws)
    serving = Serving(ws)
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        serving.send(stream(WINDOW, start=5000))
        report = agent.run_once()
        (calm,) = [a for a in report.actions if a["step"] == "performance"]
        assert not calm["dropped"] and calm["n_rows"] == WINDOW
        assert kinds(ws, "retrain.") == []

        serving.send(stream(WINDOW, start=SIM.drift_at))
        report = agent.run_once()
        (dropped,) = [a for a in report.actions if a["step"] == "performance"]
        assert dropped["dropped"] and dropped["drop"] > 0.05
        assert dropped["baseline"] == registry.get_version(ws, MODEL, 1).metrics["roc_auc"]
        requested = events.list_events(ws, model=MODEL, kinds=(agents.REQUESTED,))
        assert [e.payload["trigger"] for e in requested] == ["performance"]
        alerts = events.list_events(ws, model=MODEL, kinds=("alert.raised",))
        assert [e.payload["kind"] for e in alerts] == ["performance_drop"]
    finally:
        agent.close()
        ws.close()


def test_a_request_that_killed_three_agents_is_given_up_not_retried_forever(
    project: Workspace, receiver: Receiver
) -> None:
    ws = project
    first_version(ws)
    request = agents.request_manual_retrain(ws, actor="bob")
    with ws.metadata.write() as conn:
        for holder in ("dead-1", "dead-2", "dead-3"):  # each died inside the trainer
            events.record(
                conn,
                agents.STARTED,
                actor="agent",
                model=MODEL,
                payload={"request_id": request, "holder": holder},
            )
    agent = Agent(ws, guardrails=GUARDRAILS)
    try:
        agent.run_once()
        (done,) = finished(ws)
        assert done.payload["status"] == "failed"
        assert "started 3 times and never finished" in done.payload["error"]
        assert len(events.list_events(ws, model=MODEL, kinds=(agents.STARTED,))) == 3
        assert [v.number for v in registry.list_versions(ws, MODEL)] == [1]
        assert receiver.wait_for(ws, "retrain_failed")["valid"]
    finally:
        agent.close()
