"""Tests for closedloop.storage.predictions: the append-only, non-blocking prediction log.

Real local folders (``tmp_path``) and the fsspec in-memory filesystem; no mocks.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from closedloop.errors import ConfigError, InvalidInputError, StoreError
from closedloop.storage.predictions import META_COLUMNS, PredictionLog


@pytest.fixture
def log(tmp_path: Path) -> Iterator[PredictionLog]:
    prediction_log = PredictionLog(str(tmp_path / "log"), flush_interval=60)
    yield prediction_log
    prediction_log.close()


def _frame(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {"x": np.arange(start, start + n), "city": [f"c{i % 3}" for i in range(start, start + n)]}
    )


def _parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def _wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")


def test_append_then_flush_writes_rows_with_meta_columns(
    log: PredictionLog, tmp_path: Path
) -> None:
    log.append("churn", 3, ["a", "b"], _frame(2), np.array([0, 1]), np.array([0.2, 0.9]))
    assert log.stats == {"appended": 2, "written": 0, "failed_flushes": 0, "pending": 2, "files": 0}
    assert _parts(tmp_path) == []  # nothing written on the caller's thread

    log.flush()
    assert log.stats["written"] == 2 and log.stats["pending"] == 0
    frame = log.read("churn")
    assert list(frame.columns) == ["x", "city", *META_COLUMNS]
    assert frame["_request_id"].tolist() == ["a", "b"]
    assert frame["_version"].tolist() == [3, 3]
    assert frame["_prediction"].tolist() == [0, 1]
    assert frame["_score"].tolist() == [0.2, 0.9]
    assert str(frame["_ts"].dtype) == "datetime64[ms, UTC]"
    assert abs(frame["_ts"].iloc[0] - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(seconds=30)

    (part,) = _parts(tmp_path)
    today = frame["_ts"].iloc[0].strftime("%Y-%m-%d")
    assert part.parent.name == f"date={today}"
    assert part.parent.parent.name == "model=churn"
    assert part.name.startswith("part-") and part.name.endswith(".parquet")


def test_single_request_id_is_shared_and_missing_scores_are_null(log: PredictionLog) -> None:
    log.append("m", 1, "req-1", _frame(3), np.array(["yes", "no", "yes"]), None)
    log.flush()
    frame = log.read("m")
    assert frame["_request_id"].tolist() == ["req-1"] * 3
    assert frame["_prediction"].tolist() == ["yes", "no", "yes"]
    assert frame["_score"].isna().all()


def test_caller_may_reuse_its_objects_after_append(log: PredictionLog) -> None:
    inputs, labels = _frame(2), np.array([5, 6])
    log.append("m", 1, ["a", "b"], inputs, labels, None)
    inputs.loc[0, "x"] = 999
    labels[0] = 999
    log.flush()
    frame = log.read("m")
    assert frame["x"].tolist() == [0, 1]
    assert frame["_prediction"].tolist() == [5, 6]


def test_concurrent_appends_land_exactly_once(tmp_path: Path) -> None:
    threads, calls = 8, 150
    with PredictionLog(str(tmp_path), flush_interval=0.02, max_batch_rows=97) as plog:
        barrier = threading.Barrier(threads)

        def worker(worker_id: int) -> None:
            barrier.wait()
            for call in range(calls):
                rows = 1 + call % 3
                ids = [f"w{worker_id}-c{call}-r{r}" for r in range(rows)]
                plog.append("m", 1, ids, _frame(rows), np.zeros(rows, dtype=int), np.ones(rows))

        pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        plog.flush()
        expected = threads * sum(1 + c % 3 for c in range(calls))
        frame = plog.read("m")
        assert plog.stats["appended"] == plog.stats["written"] == expected
        assert plog.stats["pending"] == 0 and plog.stats["failed_flushes"] == 0
    assert len(frame) == expected
    assert frame["_request_id"].is_unique
    # Batches never exceed max_batch_rows.
    for part in _parts(tmp_path):
        assert len(pd.read_parquet(part)) <= 97


def test_background_thread_writes_without_flush(tmp_path: Path) -> None:
    with PredictionLog(str(tmp_path), flush_interval=0.05) as plog:
        plog.append("m", 1, "r", _frame(4), np.arange(4), None)
        _wait_until(lambda: plog.stats["written"] == 4)
        assert len(plog.read("m")) == 4


def test_large_backlog_is_split_into_batches(tmp_path: Path) -> None:
    small = PredictionLog(str(tmp_path / "small"), flush_interval=60, max_batch_rows=10)
    small.append("m", 1, "r", _frame(25), np.arange(25), None)
    small.close()
    sizes = sorted(len(pd.read_parquet(p)) for p in _parts(tmp_path / "small"))
    assert sizes == [5, 10, 10]
    assert small.read("m")["x"].tolist() == list(range(25))


def test_read_orders_by_time_and_filters(log: PredictionLog) -> None:
    log.append("m", 1, "first", _frame(2, 0), np.array([0, 0]), None)
    log.flush()  # separate files, written in different order from their times
    time.sleep(0.02)
    middle = datetime.now(UTC)
    time.sleep(0.02)
    log.append("m", 2, "second", _frame(2, 2), np.array([1, 1]), None)
    time.sleep(0.02)
    log.append("m", 1, "third", _frame(2, 4), np.array([2, 2]), None)
    log.append("other", 1, "elsewhere", _frame(1), np.array([9]), None)
    log.flush()

    everything = log.read("m")
    assert everything["x"].tolist() == [0, 1, 2, 3, 4, 5]
    assert everything["_ts"].is_monotonic_increasing
    assert log.read("m", since=middle)["_request_id"].tolist() == ["second"] * 2 + ["third"] * 2
    assert log.read("m", until=middle)["_request_id"].tolist() == ["first"] * 2
    assert log.read("m", version=1)["x"].tolist() == [0, 1, 4, 5]
    assert log.read("m", last_rows=3)["x"].tolist() == [3, 4, 5]
    assert log.read("m", last_rows=3, version=2)["x"].tolist() == [2, 3]
    assert log.read("m", last_rows=0).empty
    assert len(log.read("m", last_rows=100)) == 6
    # A naive datetime is taken as UTC.
    naive = middle.replace(tzinfo=None)
    assert len(log.read("m", since=naive)) == 4
    far = datetime.now(UTC) + timedelta(days=3)
    assert log.read("m", since=far).empty
    assert log.read("other")["_prediction"].tolist() == [9]


def test_unknown_model_reads_as_empty_frame(log: PredictionLog) -> None:
    frame = log.read("never-seen")
    assert frame.empty
    assert list(frame.columns) == list(META_COLUMNS)


def test_versions_with_different_columns_are_combined(log: PredictionLog) -> None:
    v1 = pd.DataFrame({"age": [30, 40], "city": ["a", "b"]})
    v2 = pd.DataFrame({"age": [50], "income": [1234.5]})
    log.append("m", 1, ["r1", "r2"], v1, np.array([0, 1]), np.array([0.1, 0.8]))
    log.flush()
    log.append("m", 2, ["r3"], v2, np.array([1]), np.array([0.7]))
    log.flush()
    # A single flush holding both versions is combined the same way.
    log.append("m", 1, ["r4"], v1.iloc[:1], np.array([0]), None)
    log.append("m", 2, ["r5"], v2, np.array([1]), None)
    log.flush()

    frame = log.read("m")
    assert set(frame.columns) == {"age", "city", "income", *META_COLUMNS}
    assert frame["_request_id"].tolist() == ["r1", "r2", "r3", "r4", "r5"]
    assert frame["age"].tolist() == [30, 40, 50, 30, 50]
    assert frame["city"].isna().tolist() == [False, False, True, False, True]
    assert frame["income"].isna().tolist() == [True, True, False, True, False]
    assert log.read("m", version=2)["income"].tolist() == [1234.5, 1234.5]


def test_mixed_value_types_across_requests_are_still_written(log: PredictionLog) -> None:
    log.append("m", 1, "a", pd.DataFrame({"v": [1]}, dtype=object), np.array([0]), None)
    log.append("m", 1, "b", pd.DataFrame({"v": ["text"]}, dtype=object), np.array([1]), None)
    log.flush()
    assert log.read("m")["v"].tolist() == ["1", "text"]


def test_reader_never_sees_partial_files(tmp_path: Path) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []

    with PredictionLog(str(tmp_path), flush_interval=0.005) as plog:

        def reader() -> None:
            while not stop.is_set():
                try:
                    seen.append(len(plog.read("m")))
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return

        thread = threading.Thread(target=reader)
        thread.start()
        for i in range(150):
            plog.append("m", 1, f"r{i}", _frame(20, i * 20), np.zeros(20, dtype=int), None)
            if i % 10 == 0:
                time.sleep(0.005)
        plog.flush()
        time.sleep(0.05)
        stop.set()
        thread.join()
        final = len(plog.read("m"))

    assert errors == []
    assert seen, "the reader never ran"
    assert all(a <= b for a, b in itertools.pairwise(seen)), "rows disappeared"
    assert final == 150 * 20
    assert plog.stats["files"] > 1
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_temporary_and_foreign_files_are_ignored(log: PredictionLog, tmp_path: Path) -> None:
    log.append("m", 1, "r", _frame(2), np.array([0, 1]), None)
    log.flush()
    (part,) = _parts(tmp_path)
    # A half-written file as a crash during a write would leave it, and unrelated files.
    (part.parent / f".{part.name}.tmp").write_bytes(b"PAR1 truncated")
    (part.parent / "notes.txt").write_text("hello")
    (part.parent.parent / "date=garbage").mkdir()
    assert len(log.read("m")) == 2


def test_failing_storage_keeps_rows_and_writes_them_once_fixed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("a file where the log's folder should be")
    plog = PredictionLog(str(root), flush_interval=0.02)
    try:
        plog.append("m", 1, ["a", "b"], _frame(2), np.array([0, 1]), None)
        plog.append("m", 1, ["c"], _frame(1, 2), np.array([1]), None)
        with pytest.raises(StoreError, match="Could not write 3 prediction rows") as info:
            plog.flush()
        assert info.value.details["pending"] == 3
        assert plog.stats["pending"] == 3 and plog.stats["written"] == 0
        # The background writer keeps retrying and failing, and stays alive.
        failures = plog.stats["failed_flushes"]
        _wait_until(lambda: plog.stats["failed_flushes"] > failures)
        assert plog.last_error is not None
        plog.append("m", 1, ["d"], _frame(1, 3), np.array([0]), None)  # appends still work
        assert plog.stats["pending"] == 4

        root.unlink()
        root.mkdir()  # storage is back: the writer thread catches up on its own
        _wait_until(lambda: plog.stats["pending"] == 0)
        frame = plog.read("m")
        assert frame["_request_id"].tolist() == ["a", "b", "c", "d"]
        assert frame["x"].tolist() == [0, 1, 2, 3]
        assert plog.stats["written"] == 4
    finally:
        plog.close()


def test_failure_of_one_model_does_not_block_another(tmp_path: Path) -> None:
    (tmp_path / "model=broken").write_text("not a folder")
    with PredictionLog(str(tmp_path), flush_interval=60) as plog:
        plog.append("broken", 1, "a", _frame(1), np.array([0]), None)
        plog.append("fine", 1, "b", _frame(2), np.array([0, 1]), None)
        with pytest.raises(StoreError):
            plog.flush()
        assert len(plog.read("fine")) == 2
        assert plog.stats == {
            "appended": 3,
            "written": 2,
            "failed_flushes": 1,
            "pending": 1,
            "files": 1,
        }
        (tmp_path / "model=broken").unlink()
        plog.flush()
        assert plog.read("broken")["_request_id"].tolist() == ["a"]
        assert len(plog.read("fine")) == 2  # written exactly once


def test_close_writes_pending_rows_and_is_idempotent(tmp_path: Path) -> None:
    plog = PredictionLog(str(tmp_path), flush_interval=3600)
    plog.append("m", 1, "r", _frame(3), np.arange(3), None)
    plog.close()
    assert plog.closed
    assert plog.stats["written"] == 3
    plog.close()
    plog.close()
    assert not any(t.name.endswith(f"{id(plog):x}") for t in threading.enumerate())
    with pytest.raises(StoreError, match="closed"):
        plog.append("m", 1, "r", _frame(1), np.arange(1), None)
    assert len(plog.read("m")) == 3  # reading a closed log still works


def test_close_reports_rows_it_could_not_write_and_can_retry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("blocker")
    plog = PredictionLog(str(root), flush_interval=3600)
    plog.append("m", 1, "r", _frame(2), np.arange(2), None)
    with pytest.raises(StoreError, match="Could not write 2"):
        plog.close()
    root.unlink()
    plog.close()  # second call retries the write
    assert plog.stats["pending"] == 0
    assert len(plog.read("m")) == 2


def test_fsspec_url_on_an_object_store(tmp_path: Path) -> None:
    url = f"memory://closedloop-test-{uuid.uuid4().hex}/predictions"
    with PredictionLog(url, flush_interval=60) as plog:
        plog.append("m", 1, ["a", "b"], _frame(2), np.array([0, 1]), np.array([0.5, 0.6]))
        plog.flush()
        frame = plog.read("m")
    assert frame["_request_id"].tolist() == ["a", "b"]
    import fsspec

    fs = fsspec.filesystem("memory")
    files = fs.find(url.removeprefix("memory://"))
    assert len(files) == 1 and "/model=m/date=" in files[0]
    fs.rm(url.removeprefix("memory://"), recursive=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "bad/name"}, "is not allowed: a model name"),
        ({"model": ""}, "is not allowed: a model name"),
        ({"version": -1}, "'version' parameter must be an int >= 0"),
        ({"request_ids": ["only-one"]}, "one id per input row"),
        ({"labels": np.array([1])}, "'labels' parameter must have one value per input row"),
        ({"scores": np.array([0.1, 0.2, 0.3])}, "'scores' parameter"),
        ({"scores": np.array(["a", "b"])}, "must be numeric"),
        ({"inputs": pd.DataFrame({"_ts": [1, 2]})}, "other than"),
        ({"inputs": [[1], [2]]}, "pandas DataFrame"),
    ],
)
def test_invalid_appends_are_rejected_on_the_callers_thread(
    log: PredictionLog, kwargs: dict[str, object], message: str
) -> None:
    call: dict[str, object] = {
        "model": "m",
        "version": 1,
        "request_ids": ["a", "b"],
        "inputs": _frame(2),
        "labels": np.array([0, 1]),
        "scores": None,
    }
    call.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        log.append(**call)  # type: ignore[arg-type]
    assert log.stats["appended"] == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flush_interval": 0}, "'flush_interval' parameter must be a float > 0. Got 0 instead."),
        ({"max_batch_rows": 0}, "'max_batch_rows' parameter must be an int >= 1. Got 0 instead."),
        ({"max_batch_rows": 1.5}, "'max_batch_rows'"),
    ],
)
def test_invalid_settings_are_config_errors(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PredictionLog(str(tmp_path), **kwargs)  # type: ignore[arg-type]
    assert message in info.value.message


def test_read_validates_arguments(log: PredictionLog) -> None:
    with pytest.raises(InvalidInputError, match="'last_rows'"):
        log.read("m", last_rows=-1)
    with pytest.raises(InvalidInputError, match="'since'"):
        log.read("m", since="yesterday")  # type: ignore[arg-type]


def test_append_is_cheap_and_does_no_io(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.write_text("broken storage must not slow down or fail appends")
    plog = PredictionLog(str(root), flush_interval=3600)
    inputs, labels, scores = _frame(1), np.array([1]), np.array([0.9])
    started = time.perf_counter()
    for i in range(2000):
        plog.append("m", 1, f"r{i}", inputs, labels, scores)
    per_call = (time.perf_counter() - started) / 2000
    assert per_call < 0.002  # typically ~30-60 µs
    assert plog.stats["pending"] == 2000
    root.unlink()
    plog.close()
    assert plog.stats["written"] == 2000


def test_a_damaged_file_is_reported_by_name(log: PredictionLog, tmp_path: Path) -> None:
    log.append("m", 1, "r", _frame(2), np.array([0, 1]), None)
    log.flush()
    (part,) = _parts(tmp_path)
    part.write_bytes(b"not parquet")
    with pytest.raises(StoreError, match=part.name):
        log.read("m")


def test_requests_carry_latency_status_and_role_and_failures_are_logged(log: PredictionLog) -> None:
    rows = pd.DataFrame({"age": [30, 40]})
    log.append("m", 1, "ok-1", rows, np.array([0, 1]), np.array([0.2, 0.9]), latency_ms=3.5)
    log.append("m", 2, "ok-1", rows, np.array([1, 1]), None, latency_ms=7.0, role="shadow")
    log.append_failure("m", 1, "failed-1", status=500, latency_ms=12.0)
    log.flush()
    frame = log.read("m")
    assert len(frame) == 5
    primary = frame[frame["_role"] == "primary"]
    assert sorted(primary["_status"].tolist()) == [200, 200, 500]
    failed = frame[frame["_status"] == 500]
    assert failed["_request_id"].tolist() == ["failed-1"]
    assert failed["_latency_ms"].tolist() == [12.0]
    assert failed["_prediction"].isna().all()
    shadow = frame[frame["_role"] == "shadow"]
    assert shadow["_version"].tolist() == [2, 2]
    assert shadow["_request_id"].tolist() == ["ok-1", "ok-1"]
    with pytest.raises(InvalidInputError, match="role"):
        log.append("m", 1, "x", rows, np.array([0, 1]), None, role="canary")
