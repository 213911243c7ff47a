"""Several `closedloop serve` replicas on one PostgreSQL store and one artifact folder."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import psycopg
import pytest
from tests.conftest import make_workspace
from tests.e2e.conftest import start_server, stop_server, wait_ready
from tests.support import features, fit_model, loans

from closedloop.services import registry
from closedloop.services.workspace import Workspace

pytestmark = pytest.mark.postgres


@dataclass
class Cluster:
    ws: Workspace
    urls: list[str]
    rows: pd.DataFrame
    database: str


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    artifacts = str(tmp_path / "artifacts")
    ws = make_workspace(tmp_path, pg_url, artifacts)
    frame = loans(500)
    X = features(frame)
    for invert in (False, True):
        registry.register_version(ws, "loans", fit_model(frame, invert=invert), X)
    registry.set_alias(ws, "loans", "production", 1)
    registry.set_alias(ws, "loans", "production", 2)
    servers = [start_server(tmp_path, pg_url, artifacts) for _ in range(2)]
    try:
        for process, url in servers:
            wait_ready(url, process)
        yield Cluster(ws, [url for _, url in servers], X, pg_url.rsplit("/", 1)[1])
    finally:
        for process, _ in servers:
            stop_server(process)
        ws.close()


def _body(rows: pd.DataFrame) -> dict[str, object]:
    return {
        "dataframe_split": {
            "columns": list(rows.columns),
            "data": rows.astype(object).values.tolist(),
        }
    }


def _version(url: str, body: dict[str, object]) -> str:
    answer = httpx.post(f"{url}/invocations", json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-model-version"]


def test_two_replicas_converge_on_a_rollback_without_a_failed_request(cluster: Cluster) -> None:
    body = _body(cluster.rows.head(3))
    assert {_version(url, body) for url in cluster.urls} == {"2"}
    failures: list[str] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(3000):
                if stop.is_set():
                    return
                try:
                    answer = client.post("/invocations", json=body)
                    if answer.status_code != 200:
                        failures.append(answer.text)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load, args=(url,)) for url in cluster.urls]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        assert registry.rollback(cluster.ws, "loans", reason="test") == (2, 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if {_version(url, body) for url in cluster.urls} == {"1"}:
                break
            time.sleep(0.05)
        assert {_version(url, body) for url in cluster.urls} == {"1"}
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []


def _allow_connections(pg_admin: str, database: str, allowed: bool) -> None:
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (database,),
            )


def test_replicas_keep_serving_while_the_store_is_down_and_follow_it_when_back(
    cluster: Cluster, pg_server: str
) -> None:
    body = _body(cluster.rows.head(3))
    cluster.ws.close()
    _allow_connections(pg_server, cluster.database, False)
    try:
        for _ in range(3):  # several poll intervals with the store unreachable
            for url in cluster.urls:
                assert _version(url, body) == "2"
            time.sleep(0.2)
    finally:
        _allow_connections(pg_server, cluster.database, True)
    registry.set_alias(cluster.ws, "loans", "production", 1, reason="after the outage")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {_version(u, body) for u in cluster.urls} != {"1"}:
        time.sleep(0.1)
    assert {_version(url, body) for url in cluster.urls} == {"1"}
