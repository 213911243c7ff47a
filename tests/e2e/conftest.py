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


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
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


def start_server(
    folder: Path, metadata_url: str, artifacts_url: str, *, poll_interval: float = 0.1
) -> tuple[subprocess.Popen[bytes], str]:
    """`closedloop serve` in its own process on a free loopback port; its log goes to a file."""
    port = free_port()
    env = {
        **os.environ,
        "CLOSEDLOOP_SERVER_FLUSH_INTERVAL": "0.2",
        "CLOSEDLOOP_STORE_METADATA_URL": metadata_url,
        "CLOSEDLOOP_STORE_ARTIFACTS_URL": artifacts_url,
    }
    log = (folder / f"server-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closedloop",
            "serve",
            "--port",
            str(port),
            "--poll-interval",
            str(poll_interval),
        ],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process, f"http://127.0.0.1:{port}"


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    url_db = f"sqlite:///{tmp_path / '.closedloop' / 'metadata.db'}"
    ws = make_workspace(tmp_path, url_db, str(tmp_path / ".closedloop" / "artifacts"))
    frame = loans(500)
    X = features(frame)
    registry.register_version(ws, "loans", fit_model(frame), X)
    registry.register_version(ws, "loans", fit_model(frame, invert=True), X)
    registry.set_alias(ws, "loans", "production", 1)
    process, url = start_server(tmp_path, url_db, str(tmp_path / ".closedloop" / "artifacts"))
    try:
        wait_ready(url, process)
        yield Served(ws=ws, url=url, process=process, rows=X)
    finally:
        stop_server(process)
        ws.close()
