"""The demo's steps, in order. Each prints what happened and how long it took."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from closedloop.demo.runner import (
    MODEL,
    BackgroundLoad,
    Traffic,
    _auc,
    _start_server,
    _step,
    _timed,
    _wait_ready,
    _wait_version,
)
from closedloop.domain.guardrails import GuardrailPolicy
from closedloop.settings import Settings

DRIFT_AT = 20_000
WINDOW = 5_000
GUARDRAILS = GuardrailPolicy(metric="roc_auc", min_requests=100, min_labels=100)


def run(folder: Path, settings: Settings, port: int) -> None:
    from closedloop.demo.pipeline import train_sabotaged
    from closedloop.domain.simulate import LoanSimulator
    from closedloop.services import events, pipeline, registry, rollout
    from closedloop.services.agent import Agent
    from closedloop.services.workspace import Workspace

    ws = Workspace(settings)
    sim = LoanSimulator(seed=7, drift_at=DRIFT_AT)
    label = "default"

    _step(1, "Train v1 on historical loans and register it")
    with _timed("train + gate + register"):
        history = sim.reference(20_000).drop(columns=["applied_at"])
        first = pipeline.train(
            ws, frame=history, source="simulator:history", actor="demo", reason="initial model"
        )
    print(f"    v{first.version}: {first.decision.reason}; promoted to production")

    _step(2, f"Serve it: `closedloop serve` on http://127.0.0.1:{port}")
    base_url = f"http://127.0.0.1:{port}"
    server = _start_server(folder, port)
    try:
        with _timed("server start, model loaded and verified"):
            _wait_ready(base_url, server)
        features = registry.load_version(ws, MODEL, first.version).signature.names()
        traffic = Traffic(base_url, features)

        agent = Agent(ws, holder="demo-agent", guardrails=GUARDRAILS)
        print(
            f"    the agent ({agent.holder}) now runs the loop: each pass it checks the latest "
            f"{WINDOW:,}-row window, fires triggers, retrains, gates and rolls out"
        )

        _step(3, "Live traffic from before the drift point; labels arrive later")
        stream = sim.stream(DRIFT_AT + 8 * WINDOW, start=0)
        calm = stream.iloc[DRIFT_AT - WINDOW : DRIFT_AT]
        with _timed(f"{len(calm)} rows in {len(calm) // 100} requests, labels posted"):
            _, scores = traffic.send(calm, labels=calm[label])
        print(
            "    v1 ROC AUC on this traffic (labels known to the simulator): "
            f"{_auc(calm[label], scores):.3f}"
        )
        time.sleep(0.6)  # the server flushes its prediction log every 0.2 s here
        with _timed("agent pass"):
            report = agent.run_once()
        _narrate_monitor(report)

        _step(4, f"The world changes at row {DRIFT_AT:,} of the stream")
        for window in range(2):
            drifted = stream.iloc[DRIFT_AT + window * WINDOW : DRIFT_AT + (window + 1) * WINDOW]
            with _timed(f"{len(drifted)} drifted rows sent, labels posted"):
                _, scores = traffic.send(drifted, labels=drifted[label])
            print(f"    v1 ROC AUC on post-drift traffic: {_auc(drifted[label], scores):.3f}")
            time.sleep(0.6)
            with _timed("agent pass"):
                report = agent.run_once()
            _narrate_monitor(report)
        _narrate_retrain(ws, report)

        _step(5, "The canary serves half the traffic; the agent's next pass decides")
        canary_traffic = stream.iloc[DRIFT_AT + 2 * WINDOW : DRIFT_AT + 3 * WINDOW]
        with _timed("canary loaded by the server, traffic sent, labels posted"):
            _wait_version(traffic, canary_traffic, 2)
            traffic.send(canary_traffic, batch=10, labels=canary_traffic[label])
            time.sleep(1.0)
        with _timed("agent pass"):
            report = agent.run_once()
        _narrate_rollout(report)
        second_version = registry.resolve_alias(ws, MODEL)
        assert second_version is not None
        fresh = stream.iloc[DRIFT_AT + 3 * WINDOW : DRIFT_AT + 4 * WINDOW]
        _wait_version(traffic, fresh, second_version)
        _, scores = traffic.send(fresh)
        print(f"    v{second_version} ROC AUC on new traffic: {_auc(fresh[label], scores):.3f}")
        recent = stream.iloc[DRIFT_AT : DRIFT_AT + 2 * WINDOW].drop(columns=["applied_at"])
        second = registry.get_version(ws, MODEL, second_version)

        X = recent.drop(columns=[label])
        bad = registry.register_version(
            ws,
            MODEL,
            train_sabotaged(X, recent[label]),
            X,
            actor="demo",
            reason="a hurried hotfix",
        )
        _step(
            6, f"A hurried v{bad.number} is mirrored as a shadow: it sees traffic, answers no one"
        )
        with _timed("shadow started, 1,000 rows mirrored"):
            rollout.start_shadow(ws, MODEL, bad.number, actor="demo", reason="try it safely")
            _wait_shadow(ws, traffic, fresh, bad.number)
            traffic.send(fresh.head(1000), batch=20)
            time.sleep(0.6)
        agree, gap = _compare_shadow(ws, bad.number, second.number)
        print(
            f"    shadow v{bad.number} agrees with production v{second.number} on "
            f"{agree:.0%} of the same requests (mean |score gap| {gap:.2f}); callers only ever "
            f"got v{second.number}"
        )
        rollout.stop_shadow(ws, MODEL, actor="demo", reason="shadow comparison done")

        _step(7, f"v{bad.number} as a 25% canary, started by hand; the agent's guardrails decide")
        with _timed("canary started, traffic sent with labels, agent pass"):
            rollout.start_canary(
                ws,
                MODEL,
                bad.number,
                weight=0.25,
                actor="demo",
                reason="the owner insists",
                step_duration=timedelta(seconds=5),
            )
            _wait_version(traffic, fresh, bad.number)
            late = stream.iloc[DRIFT_AT + 4 * WINDOW : DRIFT_AT + 5 * WINDOW]
            traffic.send(late, batch=5, labels=late[label])
            time.sleep(0.6)
            report = agent.run_once()
        _narrate_rollout(report)
        print(f"    production is still v{registry.resolve_alias(ws, MODEL)}")

        _step(8, f"v{bad.number} is forced into production anyway")
        with _timed("production moved by hand"):
            registry.set_alias(
                ws,
                MODEL,
                registry.PRODUCTION,
                bad.number,
                actor="demo",
                reason="forced deploy without the gate",
            )
            _wait_version(traffic, fresh, bad.number)
        _, scores = traffic.send(fresh)
        print(
            f"    v{bad.number} ROC AUC on labelled traffic: {_auc(fresh[label], scores):.3f}"
            " — quality collapsed"
        )

        _step(9, "Roll back while traffic keeps flowing")
        with BackgroundLoad(traffic, fresh) as load:
            time.sleep(0.5)
            failures_before = traffic.failures
            issued = time.perf_counter()
            before, after = registry.rollback(
                ws, MODEL, actor="demo", reason=f"v{bad.number} quality collapsed"
            )
            _wait_version(traffic, fresh, after)
            took = time.perf_counter() - issued
            time.sleep(0.5)
        print(
            f"    production v{before} → v{after} (last known-good); every response came from "
            f"v{after} after {took:.2f} s"
        )
        print(
            f"    requests during the rollback: {len(load.timeline)}, failed: "
            f"{traffic.failures - failures_before}"
        )
        agent.run_once()
        agent.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    _step(10, "Final state and history")
    versions = registry.list_versions(ws, MODEL)
    for v in versions:
        gate = v.lineage.get("gate", {})
        auc = v.metrics.get("roc_auc")
        print(
            f"    v{v.number}: roc_auc={'—' if auc is None else format(auc, '.3f')} "
            f"gate={'passed' if gate.get('passed') else ('rejected' if gate else 'not gated')}"
            f"{_same_rows(v.number, gate)} aliases={','.join(v.aliases) or '—'}"
        )
    sources = [
        f"v{v.number} on {v.lineage['dataset']['source']}"
        for v in versions
        if v.metrics.get("roc_auc") is not None and "dataset" in v.lineage
    ]
    print(
        "    note: each roc_auc above is on that version's own held-out rows "
        f"({'; '.join(sources)}), so a version trained on easier data can show a higher one; "
        "only the gate's figures compare two versions on the same rows"
    )
    alerts = [e for e in events.list_events(ws, model=MODEL, kinds=("alert.raised",))]
    print(
        f"    alerts raised: {', '.join(str(e.payload['kind']) for e in alerts)} "
        "(also in .closedloop/alerts.log; set alerts.webhook_url for Slack)"
    )
    for e in events.list_events(ws, model=MODEL):
        if e.kind.startswith("alert.") or e.kind in ("check.recorded", "rollout.evaluated"):
            continue
        alias = e.payload.get("alias")
        what = f"{e.kind}{f' ({alias})' if alias else ''}"
        version = f"v{e.version}" if e.version else "—"
        print(f"    {e.ts:%H:%M:%S} {what:<30} {version:<4} {e.actor:<6} {e.reason}")
    print(f"    requests: {traffic.requests}, failed: {traffic.failures}")


def _same_rows(number: int, gate: dict[str, Any]) -> str:
    """The gate's head-to-head figures from a version's lineage, when it had an incumbent."""
    if gate.get("incumbent") is None:
        return ""
    return (
        f" (on v{number}'s held-out rows: v{number} {gate['candidate']:.3f} vs "
        f"v{gate.get('incumbent_version')} {gate['incumbent']:.3f})"
    )


def _wait_shadow(ws: Any, traffic: Traffic, frame: Any, version: int) -> None:
    """Send a little traffic until the server has loaded the shadow (its answers get logged)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        traffic.send(frame.head(5), batch=5)
        time.sleep(0.3)
        log = ws.prediction_log()
        try:
            if len(log.read(MODEL, version=version)):
                return
        finally:
            log.close()


def _compare_shadow(ws: Any, shadow: int, production: int) -> tuple[float, float]:
    """Agreement of the shadow's logged answers with production's, on the same requests."""
    log = ws.prediction_log()
    try:
        frame = log.read(MODEL)
    finally:
        log.close()
    keys = ["_request_id", *[c for c in frame.columns if not c.startswith("_")]]
    ours = frame[frame["_version"] == shadow]
    theirs = frame[(frame["_version"] == production) & (frame["_role"] == "primary")]
    joined = theirs.merge(ours, on=keys, suffixes=("_p", "_s"))
    if joined.empty:
        return 0.0, 0.0
    agree = float((joined["_prediction_p"] == joined["_prediction_s"]).mean())
    gap = float((joined["_score_p"] - joined["_score_s"]).abs().mean())
    return agree, gap


def _narrate_monitor(report: Any) -> None:
    for action in report.actions:
        if action["step"] != "monitor":
            continue
        state = action["state"]
        if state == "ok":
            print("    agent: drift check — no drift")
        elif state == "drifting":
            print(
                f"    agent: drift check — DRIFTED; flagged columns: {', '.join(action['columns'])}"
                " (1 window; the policy waits for 2 in a row)"
            )
        elif state == "alerted":
            print(
                f"    agent: drift check — DRIFTED again; flagged columns: "
                f"{', '.join(action['columns'])}: drift alert raised"
            )
        else:
            print(f"    agent: drift check — {state}")


def _narrate_retrain(ws: Any, report: Any) -> None:
    from closedloop.services import events, registry

    for action in report.actions:
        if action["step"] == "retrain_requested":
            print(f"    agent: retrain requested by the {action['trigger']} trigger")
    done = events.list_events(ws, model=MODEL, kinds=("retrain.finished",))
    if not done:
        print("    agent: no retrain finished")
        return
    last = done[-1]
    version = last.version
    info = registry.get_version(ws, MODEL, version) if version else None
    source = info.lineage["dataset"]["source"] if info else "?"
    gate = last.payload.get("gate", {})
    print(f"    agent: v{version} trained on {source}")
    print(
        f"    v{version}: gate {'PASSED' if gate.get('passed') else 'REJECTED'} — "
        f"{gate.get('reason', last.reason)}"
    )
    if last.payload.get("status") == "canary":
        print(f"    agent: canary v{version} started at 50% of traffic; production unchanged")


def _narrate_rollout(report: Any) -> None:
    for action in report.actions:
        if action["step"] == "rollout":
            reasons = "; ".join(action.get("reasons") or [])
            print(f"    guardrails: {str(action['action']).upper()} — {reasons}")
