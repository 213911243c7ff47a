"""`closedloop serve` as a real process refuses what it should not answer, and logs none of it.

Each refused request carries its own request id; a good request sent after it is waited for in
the prediction log, so "the refused one is not there" is checked once the log has caught up.
"""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from tests.conftest import make_workspace
from tests.e2e.conftest import Served, start_server, stop_server, wait_ready
from tests.e2e.test_cli import _clean_env, as_json, assert_clean_error, cli, ok
from tests.support import features, fit_model, loans

from closedloop.services import registry


def _split(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "dataframe_split": {
            "columns": list(rows.columns),
            "data": rows.astype(object).values.tolist(),
        }
    }


def _tensors(rows: pd.DataFrame) -> dict[str, Any]:
    def datatype(column: pd.Series) -> str:
        return {"i": "INT64", "f": "FP64"}.get(column.dtype.kind, "BYTES")

    return {
        "inputs": [
            {
                "name": c,
                "shape": [len(rows)],
                "datatype": datatype(rows[c]),
                "data": rows[c].tolist(),
            }
            for c in rows.columns
        ]
    }


def _serving(url: str, rows: pd.DataFrame, version: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        answer = httpx.post(f"{url}/invocations", json=_split(rows), timeout=10)
        if answer.headers.get("x-model-version") == str(version):
            return
        time.sleep(0.05)
    raise AssertionError(f"version {version} never answered")


def logged_request_ids(served: Served) -> set[str]:
    """The prediction log's request ids once a good request sent now has been written."""
    marker = f"marker-{uuid.uuid4().hex}"
    answer = httpx.post(
        f"{served.url}/models/loans/invocations",
        json=_split(served.rows.head(1)),
        headers={"X-Request-ID": marker},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        log = served.ws.prediction_log()
        try:
            ids = set(log.read("loans")["_request_id"])
        finally:
            log.close()
        if marker in ids:
            return ids
        time.sleep(0.1)
    raise AssertionError("the good request never reached the prediction log")


def test_a_version_number_too_large_for_the_store_is_a_400_naming_the_parameter(served):
    for path in ("ready", "infer"):
        url = f"{served.url}/v2/models/loans/versions/99999999999999999999/{path}"
        if path == "infer":
            answer = httpx.post(url, json=_tensors(served.rows.head(1)))
        else:
            answer = httpx.get(url)
        assert answer.status_code == 400, answer.text
        error = answer.json()["closedloop_error"]
        assert error["message"].startswith("the path parameter 'version' must be an integer")
        assert error["details"]["parameter"] == "version"


def test_a_version_rolled_back_is_not_answered_by_number_and_nothing_is_logged(served):
    rows = served.rows.head(2)
    registry.set_alias(served.ws, "loans", "production", 2)
    _serving(served.url, rows, 2)
    registry.set_alias(served.ws, "loans", "production", 1)  # version 2 was bad: rolled back
    _serving(served.url, rows, 1)

    answer = httpx.post(
        f"{served.url}/v2/models/loans/versions/2/infer",
        json=_tensors(rows),
        headers={"X-Request-ID": "asked-for-v2"},
    )

    assert answer.status_code == 404, answer.text
    assert "x-model-version" not in answer.headers
    error = answer.json()["closedloop_error"]
    assert (
        "version 2 of model 'loans' is not in its serving plan (production v1)"
        in (error["message"])
    )
    assert error["details"]["plan"] == {"production": 1}
    assert "Leave out the version" in error["hint"]
    assert "asked-for-v2" not in logged_request_ids(served)
    current = httpx.post(f"{served.url}/v2/models/loans/versions/1/infer", json=_tensors(rows))
    assert current.status_code == 200


def test_training_under_a_name_the_logs_would_refuse_stops_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    ok(tmp_path, "init")
    refused = cli(tmp_path, "train", env=_clean_env(CLOSEDLOOP_PIPELINE_MODEL="_loans"))
    assert_clean_error(refused, "model name '_loans' is not allowed", "1 to 128 ASCII letters")
    assert "hint:" in refused.stderr
    assert not (tmp_path / ".closedloop" / "metadata.db").exists()  # no store, so no model or run
    for command in ("models", "runs"):
        nothing = cli(tmp_path, command, "--json")
        assert nothing.returncode == 2
        assert as_json(nothing)["error"]["message"].startswith("Nothing is recorded")


def test_a_model_registered_under_a_bad_name_before_the_rule_serves_but_is_not_logged(
    tmp_path: Path,
) -> None:
    metadata = tmp_path / ".closedloop" / "metadata.db"
    artifacts = str(tmp_path / ".closedloop" / "artifacts")
    ws = make_workspace(tmp_path, f"sqlite:///{metadata}", artifacts)
    frame = loans(300)
    X = features(frame)
    for name in ("loans", "legacy"):
        registry.register_version(ws, name, fit_model(frame), X)
        registry.set_alias(ws, name, "production", 1)
    with sqlite3.connect(metadata) as conn:  # what an older closedloop let through
        conn.execute("UPDATE models SET name = '_legacy' WHERE name = 'legacy'")
    process, url = start_server(tmp_path, f"sqlite:///{metadata}", artifacts)
    try:
        wait_ready(url, process)
        answer = httpx.post(f"{url}/models/_legacy/invocations", json=_split(X.head(2)))
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-model-name"] == "_legacy"
        served = Served(ws=ws, url=url, process=process, rows=X)
        assert logged_request_ids(served)  # the well-named model's rows were written
    finally:
        stop_server(process)
        ws.close()
    logged = sorted(p.name for p in (Path(artifacts) / "predictions").iterdir())
    assert logged == ["model=loans"]
    server_log = next(tmp_path.glob("server-*.log")).read_text()
    assert "model '_legacy' is served, but its predictions and feedback are not logged" in (
        server_log
    )


def test_values_a_column_cannot_hold_are_refused_by_name_and_not_logged(served):
    rows = served.rows.head(2).reset_index(drop=True)
    huge = rows.astype(object)
    huge.loc[1, "age"] = 1e300
    answer = httpx.post(
        f"{served.url}/invocations", json=_split(huge), headers={"X-Request-ID": "huge-age"}
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["message"] == (
        "column 'age' holds integers from -9223372036854775808 to 9223372036854775807; "
        "row 1 has 1e+300"
    )

    infinite = rows.astype(object)
    infinite.loc[0, "income"] = float("inf")
    answer = httpx.post(
        f"{served.url}/invocations",
        content=infinite.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv", "X-Request-ID": "infinite-income"},
    )
    assert answer.status_code == 422, answer.text
    error = answer.json()["closedloop_error"]
    assert error["message"] == "column 'income' expects finite numbers; row 0 has inf"
    assert error["details"]["column"] == "income"

    logged = logged_request_ids(served)
    assert {"huge-age", "infinite-income"} & logged == set()


@pytest.fixture
def limited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A server that takes bodies of at most 4096 bytes and requests of at most 50 rows."""
    monkeypatch.setenv("CLOSEDLOOP_SERVER_MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("CLOSEDLOOP_SERVER_MAX_ROWS", "50")
    metadata = f"sqlite:///{tmp_path / '.closedloop' / 'metadata.db'}"
    artifacts = str(tmp_path / ".closedloop" / "artifacts")
    ws = make_workspace(tmp_path, metadata, artifacts)
    frame = loans(300)
    X = features(frame)
    registry.register_version(ws, "loans", fit_model(frame), X)
    registry.set_alias(ws, "loans", "production", 1)
    process, url = start_server(tmp_path, metadata, artifacts)
    try:
        wait_ready(url, process)
        yield Served(ws=ws, url=url, process=process, rows=X)
    finally:
        stop_server(process)
        ws.close()


def read_response(conn: socket.socket) -> tuple[str, str]:
    """The head and the whole body of one HTTP response (which may come in several segments)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed before a whole head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    assert length is not None, head
    while len(body) < int(length.group(1)):
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed inside the body: {body!r}"
        body += chunk
    return head.decode(), body.decode()


def test_a_body_declared_too_large_is_refused_before_it_is_sent(limited: Served) -> None:
    host, port = limited.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: declared-huge\r\nContent-Length: 1000000000\r\n\r\n"
        )
        head, body = read_response(conn)  # no byte of the body was sent
    assert head.startswith("HTTP/1.1 413"), head
    assert json.loads(body)["message"] == (
        "the request body of 1000000000 bytes is larger than this server takes (4096 bytes)"
    )
    assert "declared-huge" not in logged_request_ids(limited)


def test_a_chunked_body_past_the_limit_is_a_413(limited: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"dataframe_split": {"columns": [], "data": ['
        for _ in range(100):
            yield b"[1, 2, 3, 4, 5, 6, 7, 8]," * 10

    answer = httpx.post(
        f"{limited.url}/invocations",
        content=chunks(),
        headers={"Content-Type": "application/json", "X-Request-ID": "chunked-huge"},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json()["closedloop_error"]["details"] == {"limit_bytes": 4096}
    assert "chunked-huge" not in logged_request_ids(limited)


def test_too_many_rows_and_a_body_that_is_not_json_are_refused(limited: Served) -> None:
    rows = pd.concat([limited.rows.head(30)] * 2, ignore_index=True)  # 60 rows under 4096 bytes
    too_many = httpx.post(
        f"{limited.url}/invocations",
        content=rows.to_csv(index=False).encode(),
        headers={"Content-Type": "text/csv", "X-Request-ID": "too-many-rows"},
    )
    assert too_many.status_code == 413, too_many.text
    assert too_many.json()["message"] == (
        "the request has 60 rows; this server takes at most 50 rows per request"
    )

    plain = httpx.post(
        f"{limited.url}/v2/models/loans/infer",
        content=json.dumps(_tensors(limited.rows.head(2))).encode(),
        headers={"Content-Type": "text/plain", "X-Request-ID": "text-plain"},
    )
    assert plain.status_code == 415, plain.text
    assert plain.json()["error"] == (
        "unsupported Content-Type 'text/plain'; this route reads application/json or "
        "application/octet-stream"
    )

    charset = httpx.post(
        f"{limited.url}/invocations",
        content=json.dumps(_split(limited.rows.head(2))).encode(),
        headers={"Content-Type": "application/json; charset=utf-8", "X-Request-ID": "utf-8"},
    )
    assert charset.status_code == 200, charset.text
    logged = logged_request_ids(limited)
    assert "utf-8" in logged
    assert {"too-many-rows", "text-plain"} & logged == set()
