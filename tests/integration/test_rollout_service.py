"""Canary and shadow rollouts on SQLite and PostgreSQL, with an injected clock."""

from __future__ import annotations

import multiprocessing
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import inspect
from tests.conftest import make_workspace
from tests.support import features, fit_model, loans

from closedloop.errors import ConflictError, NotFoundError
from closedloop.services import events, registry, rollout
from closedloop.services.events import utcnow
from closedloop.services.rollout import ServingPlan
from closedloop.services.workspace import Workspace
from closedloop.storage.metadata.db import MetadataStore, head_revision

MODEL = "loans"
STEPS = (0.1, 0.5, 1.0)
STEP = timedelta(minutes=10)
_FITTED: list[Any] = []


def _register(ws: Workspace, count: int) -> None:
    frame = loans(200)
    if not _FITTED:
        _FITTED.append(fit_model(frame))
    for _ in range(count):
        registry.register_version(ws, MODEL, _FITTED[0], features(frame))
    registry.set_alias(ws, MODEL, "production", 1)


@pytest.fixture
def two(ws: Workspace) -> Workspace:
    """v1 in production, v2 registered."""
    _register(ws, 2)
    return ws


def write_log(
    ws: Workspace,
    version: int,
    n: int,
    ts: datetime,
    *,
    errors: int = 0,
    score_shift: float = 0.0,
    latency: float = 20.0,
    seed: int = 0,
    role: str = "primary",
) -> None:
    """Write ``n`` one-row requests of ``version`` at ``ts`` as one prediction-log Parquet
    file (the layout PredictionLog reads), with the serving columns the server adds."""
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.beta(2, 5, n) + score_shift, 0, 1)
    status = np.full(n, 200)
    status[:errors] = 500
    prediction = (scores > 0.5).astype(float)
    prediction[:errors] = np.nan
    scores[:errors] = np.nan
    frame = pd.DataFrame(
        {
            "income": rng.normal(size=n),
            "_request_id": [uuid.uuid4().hex for _ in range(n)],
            "_version": np.int64(version),
            "_ts": pd.Timestamp(ts).tz_convert("UTC").floor("ms"),
            "_prediction": prediction,
            "_score": scores,
            "_latency_ms": latency,
            "_status": status,
            "_role": role,
        }
    )
    frame["_ts"] = frame["_ts"].astype("datetime64[ms, UTC]")
    stamp = pd.Timestamp(ts).tz_convert("UTC")
    folder = Path(ws.settings.predictions_url) / f"model={MODEL}" / f"date={stamp.date()}"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"part-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex}.parquet"
    frame.to_parquet(folder / name, index=False)


def kinds(ws: Workspace) -> list[str]:
    return [e.kind for e in events.list_events(ws, model=MODEL) if e.kind.startswith("rollout.")]


def test_the_migration_creates_the_rollouts_table(metadata_url: str) -> None:
    store = MetadataStore(metadata_url)  # an empty database upgrades to head
    assert store.current_revision() == head_revision()
    with store.read() as conn:
        assert "rollouts" in inspect(conn).get_table_names()
    from alembic import command

    from closedloop.storage.metadata.db import _alembic_config

    with store.write() as conn:
        command.downgrade(_alembic_config(conn), "0003")
    with store.read() as conn:
        assert "rollouts" not in inspect(conn).get_table_names()
    assert store.upgrade() == ("0003", head_revision())
    store.dispose()


def test_a_healthy_canary_advances_step_by_step_then_promotes(two: Workspace) -> None:
    ws = two
    t0 = utcnow()
    started = rollout.start_canary(
        ws, MODEL, 2, steps=STEPS, step_duration=STEP, actor="alice", reason="new model", now=t0
    )
    assert started["transition"] == "canary_started"
    assert registry.resolve_alias(ws, MODEL, "canary") == 2
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, 2, 0.1, None)

    # no traffic yet: wait
    waited = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=1), actor="bot")
    assert waited["action"] == "wait" and waited["transition"] is None
    assert "0 of 100" in waited["verdict"]["reasons"][0]

    write_log(ws, 1, 900, t0 + timedelta(minutes=2), seed=1)
    write_log(ws, 2, 150, t0 + timedelta(minutes=2), seed=2)
    early = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=5))
    assert early["action"] == "wait"
    assert "step duration" in early["verdict"]["reasons"][0]

    advanced = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=11), actor="bot")
    assert advanced["action"] == "advance"
    assert advanced["state"]["weight"] == 0.5
    assert rollout.serving_plan(ws)[MODEL].canary_weight == 0.5
    assert all(c["passed"] is not False for c in advanced["verdict"]["checks"])

    not_yet = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=15))
    assert not_yet["action"] == "wait"
    promoted = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=22), actor="bot")
    assert promoted["action"] == "promote"
    assert promoted["transition"] == "promoted"

    assert registry.resolve_alias(ws, MODEL, "production") == 2
    assert registry.resolve_alias(ws, MODEL, "canary") is None
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(2, None, 0.0, None)
    assert rollout.status(ws, MODEL)["mode"] == "idle"
    assert registry.last_known_good(ws, MODEL) == 1
    assert kinds(ws) == [
        "rollout.canary_started",
        "rollout.evaluated",
        "rollout.evaluated",
        "rollout.advanced",
        "rollout.evaluated",
        "rollout.promoted",
    ]
    history = events.list_events(ws, model=MODEL)
    promoted_event = next(e for e in history if e.kind == "rollout.promoted")
    assert promoted_event.actor == "bot"
    checks = promoted_event.payload["verdict"]["checks"]
    assert {c["name"] for c in checks} >= {"error_rate", "prediction_divergence"}
    moves = [
        (e.payload["alias"], e.payload["to_version"])
        for e in registry.alias_history(ws, MODEL)
        if e.payload.get("rollout")
    ]
    assert moves == [("canary", 2), ("production", 2), ("canary", None)]


@pytest.mark.parametrize(
    ("bad", "check"),
    [
        ({"errors": 40}, "error_rate"),
        ({"score_shift": 0.35}, "prediction_divergence"),
        ({"latency": 200.0}, "p99_latency_ms"),
    ],
)
def test_a_bad_canary_aborts_and_production_is_untouched(
    two: Workspace, bad: dict[str, Any], check: str
) -> None:
    ws = two
    t0 = utcnow()
    rollout.start_canary(ws, MODEL, 2, steps=STEPS, step_duration=STEP, now=t0)
    write_log(ws, 1, 900, t0 + timedelta(minutes=1), seed=3)
    write_log(ws, 2, 200, t0 + timedelta(minutes=1), seed=4, **bad)
    write_log(ws, 2, 300, t0 - timedelta(days=1), seed=5)  # before the canary: not read
    result = rollout.evaluate(ws, MODEL, now=t0 + timedelta(minutes=3), actor="bot")
    assert result["action"] == "abort"
    assert result["transition"] == "aborted"
    failed = [c["name"] for c in result["verdict"]["checks"] if c["passed"] is False]
    assert check in failed
    assert registry.resolve_alias(ws, MODEL, "production") == 1
    assert registry.resolve_alias(ws, MODEL, "canary") is None
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, None, 0.0, None)
    aborted = [e for e in events.list_events(ws, model=MODEL) if e.kind == "rollout.aborted"]
    assert len(aborted) == 1 and check in aborted[0].reason
    assert not [e for e in registry.alias_history(ws, MODEL, "production") if e.actor == "bot"]


def test_shadow_start_and_stop(two: Workspace) -> None:
    ws = two
    rollout.start_shadow(ws, MODEL, 2, actor="alice", reason="try it")
    assert registry.resolve_alias(ws, MODEL, "shadow") == 2
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, None, 0.0, 2)
    assert rollout.status(ws, MODEL)["mode"] == "shadow"
    with pytest.raises(ConflictError, match="shadow of v2"):
        rollout.start_canary(ws, MODEL, 2)
    with pytest.raises(ConflictError):
        rollout.evaluate(ws, MODEL)
    rollout.stop_shadow(ws, MODEL, reason="seen enough")
    assert registry.resolve_alias(ws, MODEL, "shadow") is None
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, None, 0.0, None)
    assert kinds(ws) == ["rollout.shadow_started", "rollout.shadow_stopped"]
    deleted = events.list_events(ws, model=MODEL, kinds=("alias.deleted",))
    assert [e.payload["alias"] for e in deleted] == ["shadow"]


def test_illegal_transitions_are_conflicts_and_change_nothing(two: Workspace) -> None:
    ws = two
    for call in (rollout.promote, rollout.abort, rollout.advance, rollout.stop_shadow):
        with pytest.raises(ConflictError, match="no rollout"):
            call(ws, MODEL)
    with pytest.raises(ConflictError, match="already in production"):
        rollout.start_canary(ws, MODEL, 1)
    with pytest.raises(NotFoundError, match="no version 9"):
        rollout.start_canary(ws, MODEL, 9)
    with pytest.raises(NotFoundError, match="No model"):
        rollout.start_canary(ws, "nope", 2)
    rollout.start_canary(ws, MODEL, 2)
    with pytest.raises(ConflictError, match="canary of v2 is running"):
        rollout.start_canary(ws, MODEL, 2)
    with pytest.raises(ConflictError):
        rollout.start_shadow(ws, MODEL, 2)
    assert kinds(ws) == ["rollout.canary_started"]
    rollout.abort(ws, MODEL, reason="changed my mind")
    assert registry.resolve_alias(ws, MODEL, "production") == 1


def test_manual_advance_and_promote(two: Workspace) -> None:
    ws = two
    rollout.start_canary(ws, MODEL, 2, steps=STEPS)
    assert rollout.advance(ws, MODEL)["state"]["weight"] == 0.5
    assert rollout.advance(ws, MODEL)["transition"] == "promoted"
    assert registry.resolve_alias(ws, MODEL, "production") == 2
    rollout.start_canary(ws, MODEL, 1, weight=0.2)
    assert rollout.status(ws, MODEL)["steps"] == [0.2, 0.25, 0.5, 1.0]
    rollout.promote(ws, MODEL, reason="confident")
    assert registry.resolve_alias(ws, MODEL, "production") == 1


def _rollback_events(ws: Workspace) -> list[events.Event]:
    """The events the last rollback wrote, from its ``alias.rollback`` on."""
    found = events.list_events(ws, model=MODEL)
    first = max(i for i, e in enumerate(found) if e.kind == "alias.rollback")
    return [e for e in found[first:] if not e.kind.startswith("alert.")]


def test_rollback_during_a_canary_of_the_version_it_restores_ends_the_canary(
    ws: Workspace,
) -> None:
    _register(ws, 2)
    registry.set_alias(ws, MODEL, "production", 2)
    rollout.start_canary(ws, MODEL, 1, weight=0.1)

    assert registry.rollback(ws, MODEL, actor="oncall", reason="incident") == (2, 1)

    assert registry.list_models(ws)[0].aliases == {"production": 1}
    status = rollout.status(ws, MODEL)
    assert (status["mode"], status["production"], status["candidate"]) == ("idle", 1, None)
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, None, 0.0, None)
    move, deleted, ended = _rollback_events(ws)
    assert (move.kind, move.payload["from_version"], move.payload["to_version"]) == (
        "alias.rollback",
        2,
        1,
    )
    assert (deleted.kind, deleted.payload["alias"], deleted.payload["to_version"]) == (
        "alias.deleted",
        "canary",
        None,
    )
    assert ended.kind == "rollout.rolled_back"
    assert ended.payload["rollback_event"] == move.id
    assert ended.payload["before"]["production"] == 2
    assert ended.payload["after"] == {
        "mode": "idle",
        "production": 1,
        "candidate": None,
        "weight": 0.0,
        "step_index": 0,
    }
    # one transaction: the three rows share the rollback's timestamp, actor and reason
    assert {(e.ts, e.actor, e.reason) for e in (move, deleted, ended)} == {
        (move.ts, "oncall", "incident")
    }
    # a new canary can start at once
    rollout.start_canary(ws, MODEL, 2)


def test_rollback_during_a_canary_of_another_version_ends_it_too(ws: Workspace) -> None:
    _register(ws, 3)
    registry.set_alias(ws, MODEL, "production", 2)
    rollout.start_canary(ws, MODEL, 3)
    assert registry.rollback(ws, MODEL, reason="incident") == (2, 1)
    assert registry.list_models(ws)[0].aliases == {"production": 1}
    assert rollout.state(ws, MODEL).mode == "idle"
    assert [e.kind for e in _rollback_events(ws)] == [
        "alias.rollback",
        "alias.deleted",
        "rollout.rolled_back",
    ]
    assert registry.last_known_good(ws, MODEL) is None  # v2 was rolled back from


def test_rollback_during_a_shadow_ends_the_shadow(ws: Workspace) -> None:
    _register(ws, 3)
    registry.set_alias(ws, MODEL, "production", 2)
    rollout.start_shadow(ws, MODEL, 3)
    registry.rollback(ws, MODEL)
    assert registry.list_models(ws)[0].aliases == {"production": 1}
    assert rollout.serving_plan(ws)[MODEL] == ServingPlan(1, None, 0.0, None)
    ended = _rollback_events(ws)[-1]
    assert (ended.kind, ended.payload["alias_moves"]) == (
        "rollout.rolled_back",
        [{"alias": "shadow", "version": None}],
    )


def test_rollback_without_a_rollout_writes_only_the_alias_move(ws: Workspace) -> None:
    _register(ws, 2)
    registry.set_alias(ws, MODEL, "production", 2)
    registry.rollback(ws, MODEL)
    assert [e.kind for e in _rollback_events(ws)] == ["alias.rollback"]


def test_serving_plan_lists_every_model(two: Workspace) -> None:
    ws = two
    registry.register_version(ws, "other", _FITTED[0], features(loans(50)))
    plans = rollout.serving_plan(ws)
    assert plans == {
        MODEL: ServingPlan(1, None, 0.0, None),
        "other": ServingPlan(None, None, 0.0, None),
    }


def _start(folder: str, url: str, version: int, start: Any) -> str:
    ws = make_workspace(Path(folder), url)
    start.wait(30)
    try:
        rollout.start_canary(ws, MODEL, version, actor=f"worker-{version}")
        return "won"
    except ConflictError:
        return "conflict"
    finally:
        ws.close()


def test_concurrent_start_canary_from_two_processes_exactly_one_wins(
    tmp_path: Path, metadata_url: str
) -> None:
    ws = make_workspace(tmp_path, metadata_url)
    _register(ws, 3)
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    start = manager.Event()
    with context.Pool(2) as pool:
        pending = [
            pool.apply_async(_start, (str(tmp_path), metadata_url, v, start)) for v in (2, 3)
        ]
        start.set()
        results = sorted(p.get(timeout=120) for p in pending)
    manager.shutdown()
    assert results == ["conflict", "won"]
    assert kinds(ws) == ["rollout.canary_started"]
    winner = rollout.status(ws, MODEL)["candidate"]
    assert registry.resolve_alias(ws, MODEL, "canary") == winner
    ws.close()
