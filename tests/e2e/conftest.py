"""A real `closedloop serve` process on loopback, with two registered versions."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from tests.conftest import free_port, make_workspace
from tests.support import features, fit_model, loans

from closedloop.services import registry
from closedloop.services.workspace import Workspace


@dataclass
class Served:
    ws: Workspace
    url: str
    process: subprocess.Popen[bytes]
    rows: pd.DataFrame


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not ready")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    url_db = f"sqlite:///{tmp_path / '.closedloop' / 'metadata.db'}"
    ws = make_workspace(tmp_path, url_db, str(tmp_path / ".closedloop" / "artifacts"))
    frame = loans(500)
    X = features(frame)
    registry.register_version(ws, "loans", fit_model(frame), X)
    registry.register_version(ws, "loans", fit_model(frame, invert=True), X)
    registry.set_alias(ws, "loans", "production", 1)
    port = free_port()
    env = {
        **os.environ,
        "CLOSEDLOOP_SERVER_FLUSH_INTERVAL": "0.2",
        "CLOSEDLOOP_STORE_METADATA_URL": url_db,
        "CLOSEDLOOP_STORE_ARTIFACTS_URL": str(tmp_path / ".closedloop" / "artifacts"),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closedloop",
            "serve",
            "--port",
            str(port),
            "--poll-interval",
            "0.1",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield Served(ws=ws, url=url, process=process, rows=X)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=30)
        ws.close()
