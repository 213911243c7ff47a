"""`closedloop agent status` says who holds the lease and until when, or when it expired."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

from tests.e2e.test_cli import cli, ok

from closedloop.services.lease import LeaseHolder
from closedloop.services.workspace import Workspace


def test_agent_status_names_the_holder_and_when_its_lease_ends(tmp_path: Path) -> None:
    ok(tmp_path, "init")
    before = cli(tmp_path, "agent", "status")  # a read command creates no store
    assert before.returncode == 2
    assert before.stderr.startswith("error: Nothing is recorded in this project yet")

    ws = Workspace.open(tmp_path)
    assert ws.metadata is not None  # creates the store, as `train` or `agent` would
    assert ok(tmp_path, "agent", "status").stdout.splitlines()[0] == (
        "no agent has run on this store"
    )
    holder = LeaseHolder(ws, holder="host-a:42:abc", ttl=timedelta(hours=1))
    try:
        assert holder.acquire()
        active = ok(tmp_path, "agent", "status").stdout.splitlines()[0]
        assert re.fullmatch(
            r"agent host-a:42:abc is active: it holds the lease \(token 1\) "
            r"until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            active,
        ), active
        holder.release()
        stopped = ok(tmp_path, "agent", "status").stdout.splitlines()[0]
        assert re.fullmatch(
            r"no agent is active: the lease of agent host-a:42:abc \(token 1\) "
            r"expired at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC",
            stopped,
        ), stopped
    finally:
        ws.close()
