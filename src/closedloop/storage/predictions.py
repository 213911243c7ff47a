"""The append-only prediction log: every prediction the server makes, as Parquet files.

Layout under ``root_url`` (a local folder or any fsspec URL such as ``s3://bucket/prefix``)::

    {root}/model={model}/date={YYYY-MM-DD}/part-{utc timestamp}-{uuid}.parquet

Each row holds the request's input columns plus ``_request_id`` (string), ``_version`` (int),
``_ts`` (UTC timestamp, millisecond precision, taken when :meth:`PredictionLog.append` was
called), ``_prediction`` (the model's label/value) and ``_score`` (float, null when the model
has no scores). The ``date`` partition is the UTC date of ``_ts``.

Writing never happens on the caller's thread. :meth:`PredictionLog.append` validates cheaply,
copies the inputs and puts them on an in-memory queue; a background daemon thread writes the
queue every ``flush_interval`` seconds (sooner once ``max_batch_rows`` rows are waiting), one
Parquet file per model, date and batch of at most ``max_batch_rows`` rows.

Files are append-only and appear atomically: on a local disk a file is written under a hidden
temporary name (``.part-….tmp``, fsynced) and renamed into place; on object stores (S3, GCS,
Azure, memory) a single PUT publishes the complete object. Readers only look at
``part-*.parquet`` names, so they never see a half-written file, and no file is modified
after it is written.

Failures: when a write fails (disk full, bucket gone, permissions), the rows stay queued in
memory, are retried at the next flush, and ``stats["failed_flushes"]`` is incremented; the
background thread logs the error and keeps running. An explicit :meth:`PredictionLog.flush`
raises :class:`~closedloop.errors.StoreError` when rows could not be written (they remain
queued). Note that the queue is unbounded: while storage is unavailable memory grows with the
prediction rate.

Durability: rows are in memory until their batch is written, so a crash or ``SIGKILL`` loses
at most the last ``flush_interval`` seconds of predictions (plus, while storage is failing,
everything still queued). A normal interpreter exit runs :meth:`PredictionLog.close`
through :mod:`atexit`, which writes whatever is left.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from closedloop.errors import ConfigError, InvalidInputError, StoreError
from closedloop.storage.names import check_model_name
from closedloop.storage.parts import PartFolder, is_part

logger = logging.getLogger(__name__)

META_COLUMNS: tuple[str, ...] = (
    "_request_id",
    "_version",
    "_ts",
    "_prediction",
    "_score",
    "_latency_ms",
    "_status",
    "_role",
)
"""Columns the log adds to every row (input columns may not use these names). ``_latency_ms``
is the request's server-side latency (NaN when unknown), ``_status`` its HTTP status (a failed
request is one row without inputs or prediction), ``_role`` ``"primary"`` for the answer the
caller got or ``"shadow"`` for a mirrored candidate's answer that was never returned."""
ROLES = ("primary", "shadow")

_DATE_DIR = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")


@dataclass
class _Entry:
    """One append call (a private copy of the inputs, turned into log rows on the writer
    thread) or, after a failed write, an already built frame waiting to be retried."""

    model: str
    rows: int
    version: int = 0
    ts_ms: int = 0
    request_ids: Sequence[str] | str = ""
    inputs: pd.DataFrame | None = None
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None
    latency_ms: float | np.ndarray = math.nan
    status: int = 200
    role: str = "primary"
    built: pd.DataFrame | None = field(default=None, repr=False)

    def signature(self) -> tuple[Any, ...]:
        """Entries with equal signatures can be concatenated column by column."""
        if self.built is not None:
            return ("built", id(self))
        assert self.inputs is not None and self.labels is not None
        return (tuple(self.inputs.columns), tuple(self.inputs.dtypes.tolist()), self.labels.dtype)


def _build(entries: list[_Entry]) -> pd.DataFrame:
    """One frame (input columns + meta columns) from entries with the same signature."""
    if entries[0].built is not None:
        return entries[0].built
    total = sum(e.rows for e in entries)
    inputs = [e.inputs for e in entries if e.inputs is not None]
    frame = (
        inputs[0].reset_index(drop=True)
        if len(inputs) == 1
        else pd.concat(inputs, ignore_index=True)
    )
    data: dict[str, Any] = {}
    ids: list[str] = []
    for e in entries:
        if isinstance(e.request_ids, str):
            ids.extend([e.request_ids] * e.rows)
        else:
            ids.extend(str(r) for r in e.request_ids)
    rows = np.array([e.rows for e in entries])
    scores = np.full(total, np.nan)
    offset = 0
    for e in entries:
        if e.scores is not None:
            scores[offset : offset + e.rows] = e.scores
        offset += e.rows
    ts = np.repeat(np.array([e.ts_ms for e in entries], dtype="datetime64[ms]"), rows)
    data["_request_id"] = np.array(ids, dtype=object)
    data["_version"] = np.repeat(np.array([e.version for e in entries], dtype=np.int64), rows)
    data["_ts"] = pd.Series(ts).dt.tz_localize("UTC")
    data["_prediction"] = np.concatenate([e.labels for e in entries if e.labels is not None])
    data["_score"] = scores
    data["_latency_ms"] = np.concatenate(
        [np.broadcast_to(np.asarray(e.latency_ms, dtype=float), e.rows) for e in entries]
    )
    data["_status"] = np.repeat(np.array([e.status for e in entries], dtype=np.int64), rows)
    data["_role"] = np.repeat(np.array([e.role for e in entries], dtype=object), rows)
    return frame.assign(**data)


class PredictionLog:
    """Append-only, non-blocking log of predictions, written as Parquet via fsspec.

    Thread-safe: any number of threads may call :meth:`append` concurrently. Use as a
    context manager or call :meth:`close` (also registered with :mod:`atexit`).
    """

    def __init__(
        self,
        root_url: str,
        *,
        flush_interval: float = 1.0,
        max_batch_rows: int = 10_000,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(root_url, str | os.PathLike) or not str(root_url).strip():
            raise ConfigError(
                "The 'root_url' parameter must be a folder path or fsspec URL. "
                f"Got {root_url!r} instead."
            )
        if (
            isinstance(flush_interval, bool)
            or not isinstance(flush_interval, int | float)
            or not math.isfinite(flush_interval)
            or flush_interval <= 0
        ):
            raise ConfigError(
                f"The 'flush_interval' parameter must be a float > 0. Got {flush_interval!r} "
                "instead."
            )
        if isinstance(max_batch_rows, bool) or not isinstance(max_batch_rows, int):
            raise ConfigError(
                f"The 'max_batch_rows' parameter must be an int >= 1. Got {max_batch_rows!r} "
                "instead."
            )
        if max_batch_rows < 1:
            raise ConfigError(
                f"The 'max_batch_rows' parameter must be an int >= 1. Got {max_batch_rows} instead."
            )
        self.root_url = str(root_url)
        self._parts = PartFolder(self.root_url, storage_options, what="prediction log")
        self.flush_interval = float(flush_interval)
        self.max_batch_rows = max_batch_rows

        self._cond = threading.Condition()  # guards the queue, counters and state flags
        self._queue: list[_Entry] = []
        self._appended = 0
        self._written = 0
        self._failed_flushes = 0
        self._files = 0
        self._failing = False
        self._stopping = False
        self._closed = False
        self.last_error: BaseException | None = None
        self._flush_lock = threading.Lock()  # one writer at a time (thread or flush())

        self._thread = threading.Thread(
            target=self._run, name=f"closedloop-prediction-log-{id(self):x}", daemon=True
        )
        self._thread.start()
        atexit.register(self._close_at_exit)

    # -- public API ------------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters in rows (``appended``, ``written``, ``pending``), failed write attempts
        (``failed_flushes``) and Parquet ``files`` written."""
        with self._cond:
            return {
                "appended": self._appended,
                "written": self._written,
                "failed_flushes": self._failed_flushes,
                "pending": self._appended - self._written,
                "files": self._files,
            }

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def append(
        self,
        model: str,
        version: int,
        request_ids: Sequence[str] | str,
        inputs: pd.DataFrame,
        labels: np.ndarray,
        scores: np.ndarray | None,
        *,
        latency_ms: float | np.ndarray | None = None,
        role: str = "primary",
    ) -> None:
        """Queue one prediction call's rows; never does I/O and returns immediately.

        ``request_ids`` is one id per row, or a single string shared by all rows of the call;
        ``latency_ms`` likewise one value per row (a batch of requests) or one for all.
        ``labels`` (and ``scores`` when given) have one entry per input row. Raises
        :class:`InvalidInputError` for mismatched lengths or reserved column names and
        :class:`StoreError` after :meth:`close`.
        """
        ts_ms = time.time_ns() // 1_000_000
        check_model_name(model)
        if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 0:
            raise InvalidInputError(
                f"The 'version' parameter must be an int >= 0. Got {version!r} instead."
            )
        if not isinstance(inputs, pd.DataFrame):
            raise InvalidInputError(
                f"The 'inputs' parameter must be a pandas DataFrame. Got {type(inputs).__name__} "
                "instead."
            )
        rows = len(inputs)
        if not inputs.columns.is_unique:
            raise InvalidInputError(
                "Input column names must be unique. Got duplicates: "
                f"{sorted(set(inputs.columns[inputs.columns.duplicated()].tolist()))!r}."
            )
        bad_names = [c for c in inputs.columns if not isinstance(c, str) or c in META_COLUMNS]
        if bad_names:
            raise InvalidInputError(
                "Input column names must be strings other than "
                f"{', '.join(META_COLUMNS)}. Got {bad_names!r}."
            )
        label_array = _one_per_row(labels, rows, "labels")
        score_array = None if scores is None else _one_per_row(scores, rows, "scores")
        if score_array is not None and score_array.dtype.kind not in "biuf":
            raise InvalidInputError(
                f"The 'scores' parameter must be numeric. Got dtype {score_array.dtype} instead."
            )
        if isinstance(request_ids, str):
            ids: Sequence[str] | str = request_ids
        else:
            ids = list(request_ids)
            if len(ids) != rows:
                raise InvalidInputError(
                    f"request_ids must have one id per input row ({rows}). Got {len(ids)} instead."
                )
        if role not in ROLES:
            raise InvalidInputError(f"The 'role' parameter must be one of {ROLES}. Got {role!r}.")
        latency = _latency(latency_ms, rows)
        if rows == 0:
            return
        entry = _Entry(
            model=model,
            rows=rows,
            version=int(version),
            ts_ms=ts_ms,
            request_ids=ids,
            # Copies, so the caller may reuse its frame and arrays once append returns.
            inputs=inputs.copy(),
            labels=label_array.copy(),
            scores=None if score_array is None else score_array.astype(np.float64, copy=True),
            latency_ms=latency,
            role=role,
        )
        self._enqueue(entry)

    def append_failure(
        self,
        model: str,
        version: int,
        request_id: str,
        *,
        status: int,
        latency_ms: float,
        role: str = "primary",
    ) -> None:
        """Record a request that got no prediction (one row without inputs), for error rates."""
        check_model_name(model)
        if not 100 <= int(status) <= 599:
            raise InvalidInputError(f"status must be an HTTP status code. Got {status!r}.")
        entry = _Entry(
            model=model,
            rows=1,
            version=int(version),
            ts_ms=time.time_ns() // 1_000_000,
            request_ids=request_id,
            inputs=pd.DataFrame(index=range(1)),
            labels=np.array([None], dtype=object),
            scores=None,
            latency_ms=float(latency_ms),
            status=int(status),
            role=role,
        )
        self._enqueue(entry)

    def _enqueue(self, entry: _Entry) -> None:
        rows = entry.rows
        with self._cond:
            if self._closed:
                raise StoreError(
                    "The prediction log is closed; predictions can no longer be appended.",
                    hint="Create a new PredictionLog, or append before calling close().",
                )
            self._queue.append(entry)
            self._appended += rows
            if self._appended - self._written >= self.max_batch_rows:
                self._cond.notify_all()

    def flush(self) -> None:
        """Write every row appended so far (blocking).

        Raises :class:`StoreError` when some rows could not be written; they stay queued and
        are retried by the next flush.
        """
        with self._flush_lock:
            error = self._write_queue()
        if error is not None:
            pending = self.stats["pending"]
            raise StoreError(
                f"Could not write {pending} prediction rows to {self.root_url!r}: {error}",
                hint="The rows are kept in memory and retried on the next flush.",
                details={"pending": pending, "root_url": self.root_url},
            ) from error

    def close(self) -> None:
        """Stop the background thread and write what is left; safe to call more than once.

        Raises :class:`StoreError` if rows are still unwritten (call again once storage
        works to retry).
        """
        with self._cond:
            first = not self._closed
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        if first:
            atexit.unregister(self._close_at_exit)
            if self._thread is not threading.current_thread():
                self._thread.join()
        if self.stats["pending"]:
            self.flush()

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(
        self,
        model: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        last_rows: int | None = None,
        version: int | None = None,
    ) -> pd.DataFrame:
        """The logged rows of ``model`` in time order (only what has been written: call
        :meth:`flush` first to include the queue).

        ``since`` is inclusive and ``until`` exclusive (naive datetimes are taken as UTC);
        ``version`` keeps one model version; ``last_rows`` keeps the most recent rows after
        the other filters. Files from versions with different input columns are combined on
        the union of their columns, missing values as null. An unknown model gives an empty
        frame with the log's own columns.
        """
        check_model_name(model)
        since_ts = _utc("since", since)
        until_ts = _utc("until", until)
        if last_rows is not None and (
            isinstance(last_rows, bool) or not isinstance(last_rows, int) or last_rows < 0
        ):
            raise InvalidInputError(
                f"The 'last_rows' parameter must be an int >= 0. Got {last_rows!r} instead."
            )
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise InvalidInputError(f"The 'version' parameter must be an int. Got {version!r}.")

        paths = self._list_parts(model, since_ts, until_ts)
        tables = []
        for path in paths:
            try:
                tables.append(self._read_part(path, version))
            except FileNotFoundError:
                continue  # removed by retention since it was listed
            except (OSError, ValueError) as exc:
                raise StoreError(
                    f"Could not read the prediction log file {path!r}: {exc}",
                    hint="Files written by closedloop are never partial; this one was changed "
                    "or damaged by something else. Move it away to read the rest.",
                ) from exc
        frame = _combine(tables)
        if frame.empty:
            return frame
        mask = np.ones(len(frame), dtype=bool)
        if since_ts is not None:
            mask &= (frame["_ts"] >= since_ts).to_numpy()
        if until_ts is not None:
            mask &= (frame["_ts"] < until_ts).to_numpy()
        if version is not None:
            mask &= (frame["_version"] == version).to_numpy()
        if not mask.all():
            frame = frame.loc[mask]
        frame = frame.sort_values("_ts", kind="stable")
        if last_rows is not None:
            frame = frame.iloc[len(frame) - min(last_rows, len(frame)) :]
        return frame.reset_index(drop=True)

    # -- writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(self._should_wake, timeout=self.flush_interval)
                if self._stopping:
                    return
            try:
                with self._flush_lock:
                    self._write_queue()
            except Exception:  # never let the writer thread die
                logger.exception("Unexpected error in the prediction log writer")

    def _should_wake(self) -> bool:
        if self._stopping:
            return True
        # While storage is failing, retry only once per interval, not on every append.
        return not self._failing and self._appended - self._written >= self.max_batch_rows

    def _write_queue(self) -> BaseException | None:
        """Write the queued rows, one file per (model, date, batch). Rows whose write fails
        go back to the front of the queue. Returns the first error, if any. Callers hold
        ``_flush_lock``."""
        with self._cond:
            entries, self._queue = self._queue, []
        if not entries:
            return None
        by_model: dict[str, list[_Entry]] = {}
        for entry in entries:
            by_model.setdefault(entry.model, []).append(entry)
        failed: list[_Entry] = []
        first_error: BaseException | None = None
        for model, model_entries in by_model.items():
            try:
                groups: dict[tuple[Any, ...], list[_Entry]] = {}
                for entry in model_entries:
                    groups.setdefault(entry.signature(), []).append(entry)
                frame = _concat([_build(group) for group in groups.values()])
            except Exception as exc:
                # Cannot even build the batch: keep the raw entries and report.
                failed.extend(model_entries)
                first_error = first_error or exc
                continue
            model_failed = False
            dates = frame["_ts"].dt.strftime("%Y-%m-%d").to_numpy()
            for date in pd.unique(dates):
                part = frame.loc[dates == date]
                for start in range(0, len(part), self.max_batch_rows):
                    chunk = part.iloc[start : start + self.max_batch_rows].reset_index(drop=True)
                    if not model_failed:
                        try:
                            self._write_part(model, str(date), chunk)
                        except Exception as exc:
                            model_failed = True
                            first_error = first_error or exc
                    if model_failed:
                        # Keep this chunk (and, without retrying now, the rest of the model's).
                        failed.append(_Entry(model=model, rows=len(chunk), built=chunk))
                        continue
                    with self._cond:
                        self._written += len(chunk)
                        self._files += 1
        with self._cond:
            if failed:
                self._queue[:0] = failed
                self._failed_flushes += 1
                was_failing, self._failing = self._failing, True
                self.last_error = first_error
            else:
                was_failing, self._failing = self._failing, False
        if failed:
            log = logger.debug if was_failing else logger.error
            log(
                "Could not write %d prediction rows to %s (kept in memory, will retry): %s",
                sum(e.rows for e in failed),
                self.root_url,
                first_error,
            )
        elif was_failing:
            logger.info("Prediction log %s is writable again", self.root_url)
        return first_error

    def _write_part(self, model: str, date: str, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = _to_table(frame)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        self._parts.publish(f"{self._parts.root}/model={model}/date={date}", data)

    def _close_at_exit(self) -> None:
        try:
            self.close()
        except Exception:
            logger.exception("Prediction rows were lost at exit (%s)", self.root_url)

    # -- reader ----------------------------------------------------------------------------

    def _list_parts(
        self, model: str, since: pd.Timestamp | None, until: pd.Timestamp | None
    ) -> list[str]:
        date_dirs = self._parts.entries(f"{self._parts.root}/model={model}")
        first_day = since.date().isoformat() if since is not None else None
        last_day = until.date().isoformat() if until is not None else None
        paths: list[str] = []
        for date_dir in date_dirs:
            match = _DATE_DIR.match(date_dir.rsplit("/", 1)[-1])
            if match is None:
                continue
            day = match.group(1)
            if (first_day is not None and day < first_day) or (
                last_day is not None and day > last_day
            ):
                continue
            paths.extend(p for p in self._parts.entries(date_dir) if is_part(p))
        return paths

    def _read_part(self, path: str, version: int | None) -> Any:
        table = self._parts.read(path)
        if version is not None:
            import pyarrow.compute as pc

            table = table.filter(pc.equal(table["_version"], version))
        return table


def _one_per_row(values: Any, rows: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or array.shape[0] != rows:
        raise InvalidInputError(
            f"The '{name}' parameter must have one value per input row ({rows}). "
            f"Got shape {array.shape} instead."
        )
    return array


def _latency(value: float | np.ndarray | None, rows: int) -> float | np.ndarray:
    """NaN when unknown, one float shared by all rows, or a private float64 copy (one per row)."""
    if value is None:
        return math.nan
    if np.ndim(value) == 0:
        return float(value)
    return _one_per_row(value, rows, "latency_ms").astype(np.float64, copy=True)


def _utc(name: str, value: datetime | None) -> pd.Timestamp | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"The '{name}' parameter must be a datetime. Got {value!r}.")
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    # Batches of one model may come from versions with different columns: go through Arrow,
    # whose permissive promotion fills missing columns with nulls and unifies types.
    import pyarrow as pa

    try:
        tables = [_to_table(f) for f in frames]
        combined = pa.concat_tables(tables, promote_options="permissive")
        return _to_pandas(combined)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Incompatible types across requests: keep every batch separately typed as text.
        return pd.concat([_stringify(f) for f in frames], ignore_index=True)


def _to_table(frame: pd.DataFrame) -> Any:
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Mixed-type object columns (e.g. ints and strings from different requests).
        table = pa.Table.from_pandas(_stringify(frame), preserve_index=False)
    ts_index = table.schema.get_field_index("_ts")
    if ts_index >= 0:
        table = table.set_column(
            ts_index, "_ts", table.column(ts_index).cast(pa.timestamp("ms", tz="UTC"))
        )
    return table.replace_schema_metadata(None)


def _stringify(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if column in ("_version", "_ts", "_score"):
            continue
        if frame[column].dtype == object:
            values = frame[column]
            frame[column] = values.where(values.isna(), values.astype(str)).astype(object)
    return frame


def _to_pandas(table: Any) -> pd.DataFrame:
    return table.to_pandas(ignore_metadata=True)  # type: ignore[no-any-return]


def _combine(tables: list[Any]) -> pd.DataFrame:
    import pyarrow as pa

    tables = [t for t in tables if t.num_rows]
    if not tables:
        return _empty_frame()
    try:
        combined = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frames = [_to_pandas(t) for t in tables]
        return pd.concat(frames, ignore_index=True)
    return _to_pandas(combined)


def _empty_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "_request_id": pd.Series([], dtype=object),
            "_version": pd.Series([], dtype=np.int64),
            "_ts": pd.Series([], dtype="datetime64[ms, UTC]"),
            "_prediction": pd.Series([], dtype=object),
            "_score": pd.Series([], dtype=np.float64),
            "_latency_ms": pd.Series([], dtype=np.float64),
            "_status": pd.Series([], dtype=np.int64),
            "_role": pd.Series([], dtype=object),
        }
    )


__all__ = ["META_COLUMNS", "PredictionLog"]
