"""`closedloop serve` as a real process refuses what it should not answer, and logs none of it.

Each refused request carries its own request id; a good request sent after it is waited for in
the prediction log, so "the refused one is not there" is checked once the log has caught up.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pandas as pd
from tests.e2e.conftest import Served

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
        f"{served.url}/invocations",
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
