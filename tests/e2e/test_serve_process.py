"""`closedloop serve` as a real process on loopback: protocols, hot swaps, the prediction log."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
from tests.conftest import make_workspace
from tests.e2e.conftest import start_server, stop_server, wait_ready
from tests.support import features, fit_model, loans

from closedloop.services import registry


def _records(rows: pd.DataFrame) -> dict[str, object]:
    return {
        "dataframe_split": {
            "columns": list(rows.columns),
            "data": rows.astype(object).values.tolist(),
        }
    }


def _wait_for_version(url: str, body: dict[str, object], version: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = httpx.post(f"{url}/invocations", json=body, timeout=10)
        if answer.headers.get("x-model-version") == str(version):
            return
        time.sleep(0.05)
    raise AssertionError(f"version {version} never answered")


def test_the_production_version_answers_both_protocols_with_version_and_request_id(served):
    rows = served.rows.head(3)
    mlflow = httpx.post(
        f"{served.url}/invocations", json=_records(rows), headers={"X-Request-ID": "req-1"}
    )
    assert mlflow.status_code == 200
    assert len(mlflow.json()["predictions"]) == 3
    assert mlflow.headers["x-model-version"] == "1"
    assert mlflow.headers["x-request-id"] == "req-1"
    inputs = [
        {
            "name": c,
            "shape": [3],
            "datatype": "BYTES"
            if rows[c].dtype.kind not in "iuf"
            else ("INT64" if rows[c].dtype.kind in "iu" else "FP64"),
            "data": rows[c].tolist(),
        }
        for c in rows.columns
    ]
    oip = httpx.post(f"{served.url}/v2/models/loans/infer", json={"id": "abc", "inputs": inputs})
    assert oip.status_code == 200
    body = oip.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("loans", "1", "abc")
    assert body["outputs"][0]["data"] == mlflow.json()["predictions"]


def test_bad_requests_get_a_4xx_that_names_the_column(served):
    rows = served.rows.head(2)
    missing = httpx.post(f"{served.url}/invocations", json=_records(rows.drop(columns=["income"])))
    assert missing.status_code == 422
    assert "income" in missing.json()["message"]
    wrong = rows.astype(object)
    wrong.loc[wrong.index[0], "age"] = "old"
    typed = httpx.post(f"{served.url}/invocations", json=_records(wrong))
    assert typed.status_code == 422
    assert "age" in typed.json()["message"]
    broken = httpx.post(
        f"{served.url}/invocations",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert 400 <= broken.status_code < 500
    unusual = rows.copy()
    unusual["purpose"] = "time_travel"  # unseen category: answered, not refused
    unusual["income"] = 1e12  # far outside the training range
    assert httpx.post(f"{served.url}/invocations", json=_records(unusual)).status_code == 200


def test_twenty_alias_flips_under_concurrent_load_fail_no_request(served):
    body = _records(served.rows.head(5))
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=served.url, timeout=10) as client:
            for _ in range(5000):
                if stop.is_set():
                    return
                try:
                    answer = client.post("/invocations", json=body)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                seen.add(answer.headers.get("x-model-version", "?"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for flip in range(20):
            registry.set_alias(served.ws, "loans", "production", 2 if flip % 2 == 0 else 1)
            time.sleep(0.25)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == []
    assert seen == {"1", "2"}
    _wait_for_version(served.url, body, 1)  # the last flip (to v1) is what serves now


def test_a_version_whose_artifact_was_tampered_with_never_serves(served):
    info = registry.register_version(served.ws, "loans", fit_model(loans(300)), served.rows)
    Path(served.ws.artifacts.path_of(info.artifact_sha256)).write_bytes(b"not a model")
    registry.set_alias(served.ws, "loans", "production", info.number)
    body = _records(served.rows.head(2))
    time.sleep(1.0)  # ten poll intervals
    for _ in range(20):
        answer = httpx.post(f"{served.url}/invocations", json=body)
        assert answer.status_code == 200
        assert answer.headers["x-model-version"] == "1"
    registry.set_alias(served.ws, "loans", "production", 2)
    _wait_for_version(served.url, body, 2)


def test_every_prediction_is_logged_and_flushed_on_sigterm(served):
    rows = served.rows.head(7)
    ids = [f"req-{i}" for i in range(6)]
    for request_id in ids:
        answer = httpx.post(
            f"{served.url}/invocations", json=_records(rows), headers={"X-Request-ID": request_id}
        )
        assert answer.status_code == 200
    served.process.send_signal(signal.SIGTERM)
    # uvicorn re-raises the signal after a graceful shutdown, so the process "dies" by SIGTERM.
    assert served.process.wait(timeout=30) in (0, -signal.SIGTERM)
    log = served.ws.prediction_log()
    try:
        logged = log.read("loans")
    finally:
        log.close()
    assert len(logged) == 6 * 7
    assert sorted(set(logged["_request_id"])) == ids
    assert set(logged["_version"]) == {1}
    assert list(logged["income"][:7]) == list(rows["income"])


def test_on_sigkill_only_the_last_flush_interval_of_predictions_can_be_lost(served):
    rows = served.rows.head(2)
    early = [f"early-{i}" for i in range(10)]
    for request_id in early:
        answer = httpx.post(
            f"{served.url}/invocations", json=_records(rows), headers={"X-Request-ID": request_id}
        )
        assert answer.status_code == 200
    time.sleep(1.0)  # five flush intervals (0.2 s in this fixture)
    late = [f"late-{i}" for i in range(5)]
    for request_id in late:  # answered just before the kill: these may be lost
        httpx.post(
            f"{served.url}/invocations", json=_records(rows), headers={"X-Request-ID": request_id}
        )
    served.process.send_signal(signal.SIGKILL)
    served.process.wait(timeout=30)
    log = served.ws.prediction_log()
    try:
        logged = set(log.read("loans")["_request_id"])
    finally:
        log.close()
    assert set(early) <= logged  # everything older than the flush interval survived
    assert logged <= set(early) | set(late)


def _wait_live(url: str, process) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/v2/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("server not live")


def test_a_server_with_nothing_to_serve_is_not_ready_until_a_production_version_loads(tmp_path):
    url_db = f"sqlite:///{tmp_path / '.closedloop' / 'metadata.db'}"
    artifacts = str(tmp_path / ".closedloop" / "artifacts")
    process, url = start_server(tmp_path, url_db, artifacts)
    ws = None
    try:
        _wait_live(url, process)
        for path in ("/ping", "/health", "/v2/health/ready"):
            answer = httpx.get(f"{url}{path}")
            assert answer.status_code == 503, path
            assert "no model has a production version yet" in answer.text, path
            assert "closedloop train" in answer.text, path
        ws = make_workspace(tmp_path, url_db, artifacts)
        frame = loans(300)
        registry.register_version(ws, "loans", fit_model(frame), features(frame))
        time.sleep(0.5)  # five poll intervals: a version without the production alias
        assert httpx.get(f"{url}/ping").status_code == 503
        registry.set_alias(ws, "loans", "production", 1)
        wait_ready(url, process)
        assert httpx.get(f"{url}/ping").json() == {"status": "ok"}
        assert httpx.get(f"{url}/health").status_code == 200
        answer = httpx.post(f"{url}/invocations", json=_records(features(frame).head(2)))
        assert answer.status_code == 200
        assert answer.headers["x-model-version"] == "1"
    finally:
        stop_server(process)
        if ws is not None:
            ws.close()


def test_labels_posted_as_an_array_reach_the_feedback_log_and_duplicates_are_refused(served):
    rows = served.rows.head(3)
    answer = httpx.post(
        f"{served.url}/invocations", json=_records(rows), headers={"X-Request-ID": "req-7"}
    )
    assert answer.status_code == 200
    labels = [{"request_id": "req-7", "row": i, "label": i % 2} for i in range(3)]
    posted = httpx.post(f"{served.url}/models/loans/feedback", json=labels)
    assert posted.status_code == 200, posted.text
    assert posted.json() == {"accepted": 3}
    every_row_zero = [{"request_id": "req-7", "row": 0, "label": i % 2} for i in range(3)]
    refused = httpx.post(f"{served.url}/models/loans/feedback", json={"labels": every_row_zero})
    assert refused.status_code == 400
    assert "both name request 'req-7' row 0" in refused.json()["error"]["message"]
    stored = served.ws.feedback_log().read("loans").sort_values("_row")
    assert stored["_row"].tolist() == [0, 1, 2]
    assert stored["_label"].tolist() == [0, 1, 0]


def test_params_predict_proba_answers_class_probabilities(served):
    rows = served.rows.head(4)
    body = {**_records(rows), "params": {"predict_method": "predict_proba"}}
    answer = httpx.post(f"{served.url}/invocations", json=body)
    assert answer.status_code == 200, answer.text
    probabilities = answer.json()["predictions"]
    labels = httpx.post(f"{served.url}/invocations", json=_records(rows)).json()["predictions"]
    assert [len(p) for p in probabilities] == [2, 2, 2, 2]
    assert all(abs(sum(p) - 1) < 1e-9 for p in probabilities)
    assert [int(p[1] > p[0]) for p in probabilities] == labels
    refused = httpx.post(f"{served.url}/invocations", json={**body, "params": {"top_k": 1}})
    assert refused.status_code == 400
    assert "predict_method" in refused.json()["message"]
