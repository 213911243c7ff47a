"""On PostgreSQL, serving follows alias moves and rollout transitions by LISTEN/NOTIFY at once,
with polling as the fallback; a lost listening connection is re-opened and serving goes on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from tests.conftest import make_workspace
from tests.support import features, fit_model, loans

from closedloop.services import events, registry, rollout
from closedloop.services.serving import RegistryModelHost
from closedloop.services.workspace import Workspace

pytestmark = pytest.mark.postgres

MODEL = "churn"
NEVER = 3600.0
"""A poll interval no test outlives: only a notification can wake the host."""


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass (a bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def writer(tmp_path: Path, pg_url: str) -> Iterator[Workspace]:
    """The project as a CLI in another process sees it: v1 and v2, production -> v1."""
    ws = make_workspace(tmp_path, pg_url)
    frame = loans(300)
    registry.register_version(ws, MODEL, fit_model(frame), features(frame))
    registry.register_version(ws, MODEL, fit_model(frame, invert=True), features(frame))
    registry.set_alias(ws, MODEL, "production", 1)
    yield ws
    ws.close()


@pytest.fixture
def host(tmp_path: Path, pg_url: str, writer: Workspace) -> Iterator[RegistryModelHost]:
    """A serving host on its own workspace that would not poll again within the test."""
    ws = make_workspace(tmp_path, pg_url)
    serving = RegistryModelHost(ws, poll_interval=NEVER)
    serving.start()
    assert eventually(lambda: serving.listening), "the host never started listening"
    yield serving
    serving.stop()
    ws.close()


def test_an_alias_move_is_served_at_once_without_waiting_for_a_poll(
    writer: Workspace, host: RegistryModelHost
) -> None:
    assert host.get(MODEL).version == 1
    registry.set_alias(writer, MODEL, "production", 2)
    assert eventually(lambda: host.get(MODEL).version == 2)


def test_a_rollback_is_served_at_once(writer: Workspace, host: RegistryModelHost) -> None:
    registry.set_alias(writer, MODEL, "production", 2)
    assert eventually(lambda: host.get(MODEL).version == 2)
    registry.rollback(writer, MODEL)
    assert eventually(lambda: host.get(MODEL).version == 1)


def test_a_canary_transition_is_served_at_once(writer: Workspace, host: RegistryModelHost) -> None:
    rollout.start_canary(writer, MODEL, 2, weight=0.25)
    assert eventually(lambda: host.weights(MODEL) == {1: 0.75, 2: 0.25})


def test_notifications_name_the_model_and_commit_with_the_move(
    writer: Workspace, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {events.ROLLOUT_CHANNEL}")
        registry.set_alias(writer, MODEL, "production", 2)
        received = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert received == [MODEL]
        registry.set_alias(writer, MODEL, "staging", 1)  # any alias move may change serving
        received = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
        assert received == [MODEL]


def test_only_serving_changes_notify() -> None:
    assert events.changes_serving("alias.set")
    assert events.changes_serving("alias.rollback")
    assert events.changes_serving("alias.deleted")
    assert events.changes_serving("rollout.start_canary")
    assert not events.changes_serving("rollout.evaluated")
    assert not events.changes_serving("version.registered")
    assert not events.changes_serving("monitor.alert")


def test_a_lost_listening_connection_is_reopened_and_serving_goes_on(
    writer: Workspace, host: RegistryModelHost, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query ILIKE 'LISTEN%%'"
        ).fetchall()
    assert killed == [(True,)]
    assert host.get(MODEL).version == 1  # still serving
    assert eventually(lambda: host.listening)  # again, on a new connection
    registry.set_alias(writer, MODEL, "production", 2)
    assert eventually(lambda: host.get(MODEL).version == 2)
