"""The agent lease on SQLite and PostgreSQL: one holder at a time, fencing, takeover on death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from closedloop.errors import InvalidInputError
from closedloop.services import events, lease
from closedloop.services.lease import LeaseHolder
from closedloop.services.workspace import Workspace

TTL = timedelta(seconds=30)


class Clock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def holder(ws: Workspace, name: str, clock: Clock) -> LeaseHolder:
    return LeaseHolder(ws, holder=name, ttl=TTL, clock=clock)


def test_the_first_agent_takes_the_lease_and_a_second_one_waits(ws: Workspace) -> None:
    clock = Clock()
    a, b = holder(ws, "a", clock), holder(ws, "b", clock)
    assert a.acquire() and a.held
    assert not b.acquire() and not b.held
    assert a.acquire()  # re-acquiring one's own lease renews it
    current = lease.current(ws)
    assert current is not None and current.holder == "a" and current.token == 1
    assert current.expires_at == clock.now + TTL
    a.release()
    b.release()


def test_a_released_lease_is_taken_at_once_with_a_higher_token(ws: Workspace) -> None:
    clock = Clock()
    a, b = holder(ws, "a", clock), holder(ws, "b", clock)
    assert a.acquire()
    a.release()
    assert not a.held
    assert b.acquire()
    current = lease.current(ws)
    assert current is not None and current.holder == "b" and current.token == 2
    kinds = [e.kind for e in events.list_events(ws) if e.kind.startswith("agent.lease")]
    assert kinds == ["agent.lease_acquired", "agent.lease_released", "agent.lease_acquired"]
    b.release()


def test_renewal_extends_the_lease_and_fails_once_another_holder_has_it(
    sqlite_ws: Workspace,
) -> None:
    clock = Clock()
    a, b = holder(sqlite_ws, "a", clock), holder(sqlite_ws, "b", clock)
    assert a.acquire()
    clock.now += TTL / 2
    assert a.renew()
    clock.now += TTL * 0.9  # past the first expiry, within the renewed one
    assert not b.acquire()
    clock.now += TTL  # a stopped renewing (e.g. it hung): b takes over
    assert b.acquire()
    assert not a.renew() and not a.held  # a learns it lost the lease and must stop acting
    current = lease.current(sqlite_ws)
    assert current is not None and (current.holder, current.token) == ("b", 2)


def test_the_lease_time_must_be_positive(sqlite_ws: Workspace) -> None:
    with pytest.raises(InvalidInputError, match="lease time must be positive"):
        LeaseHolder(sqlite_ws, ttl=timedelta(0))


HOLD = """
import sys, time
from datetime import timedelta
from closedloop.services.lease import LeaseHolder
from closedloop.services.workspace import Workspace
from closedloop.settings import Settings, StoreSettings

ws = Workspace(Settings(store=StoreSettings(metadata_url=sys.argv[1], artifacts_url=sys.argv[2])))
held = LeaseHolder(ws, holder="doomed", ttl=timedelta(seconds=float(sys.argv[3])))
assert held.acquire()
print("held", flush=True)
time.sleep(120)
"""


def _hold_then_kill(ws: Workspace, tmp_path: Path, ttl: float) -> None:
    script = tmp_path / "hold.py"
    script.write_text(textwrap.dedent(HOLD))
    process = subprocess.Popen(
        [sys.executable, str(script), ws.settings.metadata_url, str(tmp_path / "a"), str(ttl)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"held"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.postgres
def test_on_postgresql_a_dead_agents_lease_is_taken_over_before_it_expires(
    pg_url: str, tmp_path: Path
) -> None:
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path, pg_url)
    try:
        _hold_then_kill(ws, tmp_path, ttl=3600)
        successor = holder(ws, "successor", Clock())
        deadline = time.monotonic() + 20  # PostgreSQL notices the closed socket within moments
        while not successor.acquire():
            assert time.monotonic() < deadline, "the advisory lock was never released"
            time.sleep(0.1)
        current = lease.current(ws)
        assert current is not None and current.holder == "successor" and current.token == 2
        taken = [e for e in events.list_events(ws) if e.kind == "agent.lease_acquired"][-1]
        assert taken.payload["previous_holder"] == "doomed"
        assert taken.payload["previous_expired"] is False  # the hour-long lease had not lapsed
        successor.release()
    finally:
        ws.close()


def test_on_sqlite_a_dead_agents_lease_is_taken_over_once_it_expires(
    sqlite_ws: Workspace, tmp_path: Path
) -> None:
    _hold_then_kill(sqlite_ws, tmp_path, ttl=TTL.total_seconds())
    clock = Clock()
    successor = holder(sqlite_ws, "successor", clock)
    assert not successor.acquire()  # still within the dead holder's lease
    clock.now += TTL + timedelta(seconds=1)
    assert successor.acquire()
    current = lease.current(sqlite_ws)
    assert current is not None and (current.holder, current.token) == ("successor", 2)
    successor.release()


@pytest.mark.postgres
def test_on_postgresql_a_live_holder_keeps_the_lease_even_past_its_expiry(
    pg_url: str, tmp_path: Path
) -> None:
    """A long step outlasting the expiry must not let a second agent in while the first lives."""
    from tests.conftest import make_workspace

    ws = make_workspace(tmp_path, pg_url)
    try:
        clock = Clock()
        a, b = holder(ws, "a", clock), holder(ws, "b", clock)
        assert a.acquire()
        clock.now += TTL * 3
        assert not b.acquire()
        assert a.renew()
        a.release()
        assert b.acquire()
        b.release()
    finally:
        ws.close()
