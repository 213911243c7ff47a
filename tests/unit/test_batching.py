"""Concurrent requests share model calls, yet every caller gets exactly its own rows' answers,
its own errors, its own log rows and its own metrics; the call shortcuts change no answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from tests.unit.test_server_protocols import RecordingSink, pipeline, training_frame

from closedloop.domain.model import CallPlan, LoadedVersion, Rows
from closedloop.domain.signature import infer_signature
from closedloop.errors import ConfigError, SchemaError
from closedloop.server import create_app, payloads
from closedloop.server.batching import Batcher, Pending
from closedloop.storage.predictions import PredictionLog
from closedloop.testing.hosts import StaticModelHost

COLUMNS = [f"x{j}" for j in range(4)]


def numeric_frame(n: int = 400, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(COLUMNS))), columns=COLUMNS)
    y = (X.to_numpy() @ np.array([1.0, -2.0, 0.5, 0.0]) + rng.normal(0, 0.5, n) > 0).astype(int)
    return X, y


class Slow:
    """A classifier that takes a while per call and records how many rows each call got."""

    def __init__(self, inner: Any, delay: float = 0.02) -> None:
        self.inner = inner
        self.delay = delay
        self.classes_ = inner.classes_
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def fit(self, X: Any, y: Any) -> Slow:
        return self

    def _note(self, X: Any) -> None:
        with self.lock:
            self.calls.append(len(X))
        time.sleep(self.delay)

    def predict(self, X: Any) -> np.ndarray:
        self._note(X)
        return np.asarray(self.inner.predict(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        self._note(X)
        return np.asarray(self.inner.predict_proba(X))


class Poisoned(Slow):
    """Raises on any call that contains the poison value 999 in ``x0``."""

    def _note(self, X: Any) -> None:
        super()._note(X)
        if (np.asarray(X)[:, 0] == 999).any():
            raise ValueError("poisoned row")


class Threshold(LogisticRegression):
    """A classifier whose ``predict`` uses a custom threshold, not the argmax of its scores."""

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.3).astype(int)


@pytest.fixture(scope="module")
def fitted() -> tuple[pd.DataFrame, LogisticRegression]:
    X, y = numeric_frame()
    return X, LogisticRegression().fit(X, y)


def served(estimator: Any, X: pd.DataFrame, *, version: int = 1) -> LoadedVersion:
    loaded = LoadedVersion("churn", version, "0" * 64, infer_signature(X), estimator)
    loaded.calibrate(X)
    return loaded


def split_body(frame: pd.DataFrame) -> bytes:
    data = {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}
    return orjson.dumps({"dataframe_split": data})


async def _burst(
    app: Any, requests: Sequence[tuple[bytes, dict[str, str]]], path: str = "/invocations"
) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await asyncio.gather(
            *(
                client.post(path, content=body, headers={"Content-Type": "application/json", **h})
                for body, h in requests
            )
        )


def burst(
    app: Any, requests: Sequence[tuple[bytes, dict[str, str]]], path: str = "/invocations"
) -> list[httpx.Response]:
    """Send every request at once (one event loop, all in flight together)."""
    return asyncio.run(_burst(app, requests, path))


def rows_of(X: pd.DataFrame, i: int, n: int = 1) -> pd.DataFrame:
    return X.iloc[i * 3 : i * 3 + n]


# --- batching ---------------------------------------------------------------------------------


def test_fifty_concurrent_callers_each_get_exactly_their_own_rows_answers(fitted: Any) -> None:
    X, model = fitted
    slow = Slow(model)
    app = create_app(StaticModelHost({"churn": served(slow, X)}))
    slow.calls.clear()
    sizes = [1 + i % 3 for i in range(50)]
    bodies = [(split_body(rows_of(X, i, n)), {}) for i, n in enumerate(sizes)]
    answers = burst(app, bodies)
    for i, (answer, n) in enumerate(zip(answers, sizes, strict=True)):
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == model.predict(rows_of(X, i, n)).tolist()
    assert max(slow.calls) > max(sizes)  # requests really were answered together
    assert sum(slow.calls) == sum(sizes)  # one call per batch: every row predicted once


def test_oip_callers_get_their_own_labels_and_scores(fitted: Any) -> None:
    X, model = fitted
    app = create_app(StaticModelHost({"churn": served(Slow(model), X)}))

    def infer(frame: pd.DataFrame) -> bytes:
        inputs = [
            {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()}
            for c in COLUMNS
        ]
        return orjson.dumps({"inputs": inputs})

    answers = burst(
        app, [(infer(rows_of(X, i, 2)), {}) for i in range(20)], "/v2/models/churn/infer"
    )
    for i, answer in enumerate(answers):
        outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert outputs["predict"] == model.predict(rows_of(X, i, 2)).tolist()
        np.testing.assert_allclose(
            outputs["predict_proba"], model.predict_proba(rows_of(X, i, 2))[:, 1], rtol=1e-12
        )


def test_a_bad_request_in_a_burst_gets_its_own_4xx_and_the_others_are_answered(
    fitted: Any,
) -> None:
    X, model = fitted
    app = create_app(StaticModelHost({"churn": served(Slow(model), X)}))
    requests: list[tuple[bytes, dict[str, str]]] = []
    for i in range(40):
        frame = rows_of(X, i)
        if i % 4 == 1:
            requests.append(
                (
                    orjson.dumps(
                        {
                            "dataframe_split": {
                                "columns": COLUMNS[1:],
                                "data": frame[COLUMNS[1:]].to_numpy().tolist(),
                            }
                        }
                    ),
                    {},
                )
            )
        elif i % 4 == 2:
            data = frame.to_numpy().tolist()
            data[0][2] = "high"
            requests.append(
                (orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": data}}), {})
            )
        else:
            requests.append((split_body(frame), {}))
    answers = burst(app, requests)
    for i, answer in enumerate(answers):
        if i % 4 == 1:
            assert answer.status_code == 422
            assert answer.json()["closedloop_error"]["details"]["missing"] == ["x0"]
        elif i % 4 == 2:
            assert answer.status_code == 422
            assert answer.json()["closedloop_error"]["details"]["column"] == "x2"
        else:
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == model.predict(rows_of(X, i)).tolist()


def test_a_failing_batch_is_retried_request_by_request(fitted: Any) -> None:
    X, model = fitted
    poisoned = Poisoned(model)
    sink = RecordingSink()
    app = create_app(StaticModelHost({"churn": served(poisoned, X)}), prediction_log=sink)
    poisoned.calls.clear()
    requests = []
    for i in range(30):
        frame = rows_of(X, i).copy()
        if i == 17:
            frame.iloc[0, 0] = 999.0
        requests.append((split_body(frame), {"X-Request-ID": f"r{i}"}))
    answers = burst(app, requests)
    assert [a.status_code for a in answers] == [500 if i == 17 else 200 for i in range(30)]
    for i, answer in enumerate(answers):
        if i != 17:
            assert answer.json()["predictions"] == model.predict(rows_of(X, i)).tolist()
    assert max(poisoned.calls) > 1  # the poison really was in a batch with others
    failures = [c for c in sink.calls if c.get("status") == 500]
    assert [c["request_ids"] for c in failures] == ["r17"]


def test_log_rows_are_one_per_input_row_under_each_request_id(fitted: Any, tmp_path: Path) -> None:
    X, model = fitted
    slow = Slow(model)
    log = PredictionLog(str(tmp_path / "predictions"), flush_interval=60)
    app = create_app(StaticModelHost({"churn": served(slow, X)}), prediction_log=log)
    slow.calls.clear()
    sizes = {f"req-{i}": 1 + i % 4 for i in range(40)}
    requests = [
        (split_body(rows_of(X, i, n)), {"X-Request-ID": rid})
        for i, (rid, n) in enumerate(sizes.items())
    ]
    answers = burst(app, requests)
    assert all(a.status_code == 200 for a in answers)
    assert max(slow.calls) > max(sizes.values())
    log.flush()
    logged = log.read("churn")
    log.close()
    assert logged.groupby("_request_id").size().to_dict() == sizes
    assert set(logged["_version"]) == {1} and set(logged["_role"]) == {"primary"}
    assert logged["_latency_ms"].notna().all() and (logged["_latency_ms"] >= 0).all()
    for i, (rid, n) in enumerate(sizes.items()):
        mine = logged[logged["_request_id"] == rid]
        expected = rows_of(X, i, n)
        np.testing.assert_array_equal(mine[COLUMNS].to_numpy(), expected.to_numpy())
        assert mine["_prediction"].tolist() == model.predict(expected).tolist()
        np.testing.assert_allclose(mine["_score"], model.predict_proba(expected)[:, 1])


def test_metrics_count_every_request_of_a_burst(fitted: Any) -> None:
    X, model = fitted
    app = create_app(StaticModelHost({"churn": served(Slow(model), X)}))
    good = [(split_body(rows_of(X, i)), {}) for i in range(24)]
    bad = [(b'{"dataframe_split": {"columns": ["x0"], "data": [[1.0]]}}', {}) for _ in range(6)]
    answers = burst(app, good + bad)
    assert [a.status_code for a in answers] == [200] * 24 + [422] * 6
    text = asyncio.run(_get(app, "/metrics"))
    ok = 'closedloop_requests_total{model="churn",protocol="mlflow",status="200",version="1"} 24.0'
    failed = (
        'closedloop_requests_total{model="churn",protocol="mlflow",status="422",version="1"} 6.0'
    )
    assert ok in text and failed in text


async def _get(app: Any, path: str) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return (await client.get(path)).text


def test_canary_and_shadow_stay_exact_under_batching(fitted: Any) -> None:
    X, model = fitted
    inverted = LogisticRegression().fit(X, 1 - model.predict(X))
    host = StaticModelHost({"churn": served(Slow(model), X, version=1)})
    host.set_canary("churn", served(Slow(inverted), X, version=2), 0.5)
    host.set_shadow("churn", served(Slow(inverted), X, version=3))
    sink = RecordingSink()
    app = create_app(host, prediction_log=sink)
    requests = [(split_body(rows_of(X, i)), {"X-Routing-Key": f"user-{i}"}) for i in range(40)]
    answers = burst(app, requests)
    for i, answer in enumerate(answers):
        version = host.route("churn", f"user-{i}").version
        assert answer.headers["x-model-version"] == str(version)
        chosen = model if version == 1 else inverted
        assert answer.json()["predictions"] == chosen.predict(rows_of(X, i)).tolist()
    assert {a.headers["x-model-version"] for a in answers} == {"1", "2"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _rows(sink, "shadow") < 40:
        time.sleep(0.02)
    primary_ids = sorted(_ids(sink, "primary"))
    assert len(primary_ids) == 40
    assert sorted(_ids(sink, "shadow")) == primary_ids
    assert {c["version"] for c in sink.calls if c["role"] == "shadow"} == {3}


def _ids(sink: RecordingSink, role: str) -> list[str]:
    out: list[str] = []
    for call in sink.calls:
        if call["role"] == role:
            ids = call["request_ids"]
            out.extend([ids] * len(call["inputs"]) if isinstance(ids, str) else list(ids))
    return out


def _rows(sink: RecordingSink, role: str) -> int:
    return sum(len(c["inputs"]) for c in sink.calls if c["role"] == role)


def test_batch_max_rows_1_calls_the_model_once_per_request(fitted: Any) -> None:
    X, model = fitted
    slow = Slow(model, delay=0.005)
    app = create_app(StaticModelHost({"churn": served(slow, X)}), batch_max_rows=1)
    slow.calls.clear()
    answers = burst(app, [(split_body(rows_of(X, i, 2)), {}) for i in range(12)])
    assert all(a.status_code == 200 for a in answers)
    assert slow.calls == [2] * 12


def test_a_batch_never_exceeds_batch_max_rows(fitted: Any) -> None:
    X, model = fitted
    slow = Slow(model)
    app = create_app(StaticModelHost({"churn": served(slow, X)}), batch_max_rows=5)
    slow.calls.clear()
    answers = burst(app, [(split_body(rows_of(X, i, 2)), {}) for i in range(20)])
    assert all(a.status_code == 200 for a in answers)
    assert max(slow.calls) <= 5 and sum(slow.calls) == 40


@pytest.mark.parametrize("rows, wait", [(0, 2.0), (-3, 2.0), (8, -1.0)])
def test_bad_batching_settings_are_refused(rows: int, wait: float) -> None:
    with pytest.raises(ConfigError, match=r"server\.batch_max"):
        create_app(StaticModelHost({}), batch_max_rows=rows, batch_max_wait_ms=wait)


# --- call shortcuts ---------------------------------------------------------------------------


def test_one_call_gives_the_two_calls_labels_and_scores(fitted: Any) -> None:
    X, model = fitted
    loaded = served(model, X)
    assert loaded.plan.one_call
    rows = payloads.validated_rows({c: X[c].to_numpy() for c in COLUMNS}, loaded.signature)
    one = loaded.predict_rows(rows)
    loaded.plan = CallPlan()
    two = loaded.predict_rows(rows)
    np.testing.assert_array_equal(one.labels, two.labels)
    assert one.labels.dtype == two.labels.dtype
    np.testing.assert_array_equal(one.scores, two.scores)


def test_one_call_holds_for_string_labels_and_pipelines() -> None:
    frame, label, _ = training_frame()
    names = np.array(["stay", "leave"])[label]
    model = pipeline(LogisticRegression(max_iter=1000)).fit(frame, names)
    loaded = served(model, frame)
    assert loaded.plan == CallPlan(one_call=True, array_input=False)  # the pipeline needs names
    answer = loaded.predict(frame)
    assert answer.labels.tolist() == model.predict(frame).tolist()
    np.testing.assert_array_equal(answer.scores, model.predict_proba(frame)[:, 1])


def test_a_predict_that_is_not_the_argmax_keeps_two_calls() -> None:
    X, y = numeric_frame()
    model = Threshold().fit(X, y)
    loaded = served(model, X)
    assert not loaded.plan.one_call
    app = create_app(StaticModelHost({"churn": loaded}))
    answers = burst(app, [(split_body(X.iloc[i : i + 5]), {}) for i in range(0, 100, 5)])
    got = [p for a in answers for p in a.json()["predictions"]]
    assert got == model.predict(X.iloc[:100]).tolist()
    assert got != LogisticRegression.predict(model, X.iloc[:100]).tolist()  # the case matters


def test_an_array_fitted_estimator_gets_arrays_with_the_same_answers(fitted: Any) -> None:
    X, _ = fitted
    _, y = numeric_frame()
    model = LogisticRegression().fit(X.to_numpy(), y)
    loaded = served(model, X)
    assert loaded.plan == CallPlan(one_call=True, array_input=True)
    rows = payloads.validated_rows({c: X[c].to_numpy() for c in COLUMNS}, loaded.signature)
    fast = loaded.predict_rows(rows)
    np.testing.assert_array_equal(fast.labels, model.predict(X.to_numpy()))
    loaded.plan = CallPlan(one_call=True, array_input=False)
    with pytest.warns(UserWarning, match="feature names"):
        framed = loaded.predict_rows(rows)  # what the DataFrame path would have cost
    np.testing.assert_array_equal(fast.labels, framed.labels)
    # The same float64 values in another memory order: equal up to round-off.
    np.testing.assert_allclose(fast.scores, framed.scores, rtol=1e-12, atol=0)


def test_a_frame_fitted_estimator_keeps_the_dataframe(fitted: Any) -> None:
    X, model = fitted
    assert not served(model, X).plan.array_input


def test_an_uncalibrated_version_makes_the_plain_calls(fitted: Any) -> None:
    X, model = fitted
    slow = Slow(model, delay=0)
    loaded = LoadedVersion("churn", 1, "0" * 64, infer_signature(X), slow)
    loaded.predict(X.head(3))
    assert slow.calls == [3, 3]  # predict, then predict_proba


# --- the numeric fast path of request parsing -------------------------------------------------


def test_the_numeric_fast_path_equals_the_general_path(fitted: Any) -> None:
    X, _ = fitted
    signature = infer_signature(X)
    part = X.head(7)
    fast = payloads.mlflow_rows(split_body(part), "application/json", signature)
    assert fast.matrix is not None
    general = payloads.validated_rows(
        payloads.mlflow_columns(split_body(part), "application/json", signature), signature
    )
    assert general.matrix is None
    pd.testing.assert_frame_equal(fast.frame(), general.frame())
    np.testing.assert_array_equal(fast.array(), general.array())
    both = Rows.concat([fast, general])
    np.testing.assert_array_equal(both.array(), np.vstack([part.to_numpy()] * 2))


@pytest.mark.parametrize(
    "value, column",
    [(True, "x1"), ("1.5", "x1"), (None, "x1"), ([1.0], "x1")],
)
def test_the_fast_path_refuses_what_the_general_path_refuses(
    fitted: Any, value: object, column: str
) -> None:
    X, _ = fitted
    data = X.head(2).to_numpy().tolist()
    data[1][1] = value
    body = orjson.dumps({"dataframe_split": {"columns": COLUMNS, "data": data}})
    with pytest.raises(SchemaError) as refused:
        payloads.mlflow_rows(body, "application/json", infer_signature(X))
    assert refused.value.details["column"] == column


# --- the batcher's waiting rule ---------------------------------------------------------------


def _pending(rows: Rows, answered: list[Any], event: threading.Event) -> Pending:
    def done(result: Any) -> None:
        answered.append(result)
        event.set()

    return Pending(cast(Any, None), rows, "r", 0.0, done)


def _recording_batcher(batches: list[int]) -> Batcher:
    """A batcher with a long max_wait whose runner records each batch's size and answers it."""

    def run(items: list[Pending]) -> None:
        batches.append(len(items))
        for item in items:
            item.done(item.rows)

    return Batcher(run, max_rows=100, max_wait=600.0)


ONE_ROW = Rows.from_matrix(["a"], np.zeros((1, 1)))


def test_a_lone_request_is_run_without_waiting_for_max_wait() -> None:
    batches: list[int] = []
    batcher = _recording_batcher(batches)
    event = threading.Event()
    batcher.arriving()
    batcher.submit(_pending(ONE_ROW, [], event))
    assert event.wait(30), "a lone request waited for max_wait"
    assert batches == [1]
    batcher.close()


def test_a_request_still_being_parsed_is_waited_for_and_joins_the_batch() -> None:
    batches: list[int] = []
    batcher = _recording_batcher(batches)
    event = threading.Event()
    batcher.arriving()
    batcher.arriving()  # a second request is being parsed
    batcher.submit(_pending(ONE_ROW, [], threading.Event()))
    time.sleep(0.05)  # the worker is waiting for the second one now
    assert batches == []
    batcher.submit(_pending(ONE_ROW, [], event))
    assert event.wait(30)
    assert batches == [2]
    batcher.close()


def test_an_abandoned_request_ends_the_wait() -> None:
    batches: list[int] = []
    batcher = _recording_batcher(batches)
    event = threading.Event()
    batcher.arriving()
    batcher.arriving()
    batcher.submit(_pending(ONE_ROW, [], event))
    batcher.abandoned()  # the other one was invalid: nothing left to wait for
    assert event.wait(30)
    assert batches == [1]
    batcher.close()


# --- the registry host chooses the plan when it loads a version ------------------------------


def test_the_registry_host_calibrates_each_version_on_its_stored_rows(sqlite_ws: Any) -> None:
    from closedloop.services import registry
    from closedloop.services.serving import RegistryModelHost

    X, y = numeric_frame()
    registry.register_version(sqlite_ws, "plain", LogisticRegression().fit(X, y), X)
    registry.register_version(sqlite_ws, "custom", Threshold().fit(X, y), X)
    for name in ("plain", "custom"):
        registry.set_alias(sqlite_ws, name, "production", 1)
    host = RegistryModelHost(sqlite_ws, poll_interval=3600)
    host.start()
    try:
        assert host.get("plain").plan == CallPlan(one_call=True, array_input=False)
        assert host.get("custom").plan == CallPlan(one_call=False, array_input=False)
    finally:
        host.stop()
