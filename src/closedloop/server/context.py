"""What every prediction route shares: the served host, batching and the prediction log.

A :class:`ServerContext` validates each request on its own (a bad one gets its own 4xx), then
queues it on its version's :class:`~closedloop.server.batching.Batcher`, which coalesces
concurrent requests into one model call; every request still gets exactly its rows' answers, one
log row per input row under its own request id, and its own shadow copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from closedloop.domain.model import Rows
from closedloop.errors import InvalidInputError, NotFoundError, TooLargeError, UserCodeError
from closedloop.server.batching import Batcher, Pending
from closedloop.server.shadow import ShadowMirror
from closedloop.storage.names import is_model_name

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.model import LoadedVersion, Prediction
    from closedloop.services.serving import ModelHost

logger = logging.getLogger(__name__)


class PredictionSink(Protocol):
    """Where served predictions are recorded (for monitoring). ``append`` must not block."""

    def append(
        self,
        model: str,
        version: int,
        request_ids: Sequence[str] | str,
        inputs: pd.DataFrame,
        labels: np.ndarray[Any, Any],
        scores: np.ndarray[Any, Any] | None,
        *,
        latency_ms: float | np.ndarray[Any, Any] | None = None,
        role: str = "primary",
    ) -> None:
        """Record predicted rows: ``request_ids`` and ``latency_ms`` are one per row, or one
        value shared by all rows (one request)."""
        ...


ROUTING_KEY_HEADER = "X-Routing-Key"


INLINE_PARSE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop; larger ones in a worker thread."""
DEFAULT_BATCH_MAX_ROWS = 1024
DEFAULT_BATCH_MAX_WAIT = 0.002
DEFAULT_MAX_ROWS = 100_000


def _nobody(request: Request) -> bool:
    return False


@dataclass
class ServerContext:
    """What the routes share: the host, the optional sink, the shadow mirror and the name."""

    host: ModelHost
    sink: PredictionSink | None
    name: str
    mirror: ShadowMirror | None = None
    feedback: Any = None
    """A :class:`closedloop.storage.feedback.FeedbackLog`, when labels can be posted."""
    batch_max_rows: int = DEFAULT_BATCH_MAX_ROWS
    """Most rows one model call gets; 1 turns batching off (each request is called alone)."""
    batch_max_wait: float = DEFAULT_BATCH_MAX_WAIT
    """Most seconds a batch waits for requests still being parsed."""
    max_rows: int = DEFAULT_MAX_ROWS
    """Most rows one request may send (a 413 names the limit beyond it)."""
    outside_plan: Callable[[Request], bool] = field(default=_nobody, repr=False)
    """Who may ask for a version outside the serving plan by number: nobody for now (callers
    have no roles yet; this is where a role allowed to operate would be let through)."""
    _batchers: dict[int, Batcher] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, request: Request, name: str) -> LoadedVersion:
        """The version answering this request; tagged on the response.

        The caller's routing key (``X-Routing-Key``, else the request id) picks a side of a
        running canary, stickily.
        """
        key = request.headers.get(ROUTING_KEY_HEADER) or request.state.request_id
        return _tag(request, self.host.route(name, key))

    async def resolve_version(self, request: Request, name: str, version: int) -> LoadedVersion:
        """Version ``version`` of ``name``, which must be in its serving plan (production, canary
        or shadow), unless :attr:`outside_plan` lets this caller have any registered version
        (loaded in a worker thread, never on the event loop)."""
        try:
            return _tag(request, self.host.get_version(name, version))
        except NotFoundError:
            if not self.outside_plan(request):
                raise
        return _tag(request, await run_in_threadpool(self.host.load_version, name, version))

    async def predict(
        self, request: Request, loaded: LoadedVersion, parse: Callable[[], Rows], size: int = 0
    ) -> Prediction:
        """Validate (``parse``), then predict in a batch and record; ``size``: the body's bytes."""
        request_id: str = request.state.request_id
        started: float = getattr(request.state, "started", time.perf_counter())
        if self.batch_max_rows <= 1:
            return await run_in_threadpool(self._predict_alone, loaded, parse, request_id, started)
        batcher = self._batcher(loaded)
        batcher.arriving()
        try:
            rows = parse() if size <= INLINE_PARSE_BYTES else await run_in_threadpool(parse)
            _require_rows(rows, self.max_rows)
        except BaseException:
            batcher.abandoned()
            raise
        waiter = Waiter(asyncio.get_running_loop())
        batcher.submit(Pending(loaded, rows, request_id, started, waiter))
        return await waiter.future

    def _predict_alone(
        self, loaded: LoadedVersion, parse: Callable[[], Rows], request_id: str, started: float
    ) -> Prediction:
        rows = parse()
        _require_rows(rows, self.max_rows)
        answers: list[Prediction | BaseException] = []
        self.run_batch([Pending(loaded, rows, request_id, started, answers.append)])
        if isinstance(answers[0], BaseException):
            raise answers[0]
        return answers[0]

    def _batcher(self, loaded: LoadedVersion) -> Batcher:
        key = id(loaded)
        batcher = self._batchers.get(key)
        if batcher is not None:
            return batcher
        with self._lock:
            batcher = self._batchers.get(key)
            if batcher is None:
                for stale in [k for k, b in self._batchers.items() if b.idle()]:
                    del self._batchers[stale]
                batcher = Batcher(
                    self.run_batch, max_rows=self.batch_max_rows, max_wait=self.batch_max_wait
                )
                self._batchers[key] = batcher
            return batcher

    def close(self) -> None:
        """Answer what is queued and stop the batch workers."""
        with self._lock:
            batchers = list(self._batchers.values())
            self._batchers.clear()
        for batcher in batchers:
            batcher.close()

    def run_batch(self, items: list[Pending]) -> None:
        """One model call for ``items`` (all for one version); each gets its own answer.

        When the call fails for a batch of several requests, each is retried alone, so a request
        that would have succeeded alone succeeds.
        """
        loaded = items[0].loaded
        rows = Rows.concat([item.rows for item in items])
        frame = None
        try:
            frame = None if loaded.plan.array_input else rows.frame()
            prediction = loaded.predict_rows(rows, frame)
            if len(items) > 1:
                _require_length(prediction, rows.count)
        except Exception as exc:
            if len(items) > 1:
                for item in items:
                    self.run_batch([item])
                return
            items[0].done(self._failure(items[0], exc))
            return
        self._record(items, rows, frame, prediction, time.perf_counter())
        # Answered after logging: a caller holding its answer finds it in the log.
        if len(items) == 1:
            items[0].done(prediction)
            return
        answers: list[Prediction | BaseException] = []
        offset = 0
        for item in items:
            answers.append(prediction.slice(offset, offset + item.rows.count))
            offset += item.rows.count
        answer_all(items, answers)

    def _record(
        self,
        items: list[Pending],
        rows: Rows,
        frame: pd.DataFrame | None,
        prediction: Prediction,
        finished: float,
    ) -> None:
        """Log the batch's rows (each under its request's id and latency); mirror to a shadow."""
        loaded = items[0].loaded
        if not is_model_name(loaded.model):
            return  # an older store's name that breaks the rule: served, not logged (see host)
        shadow = self.host.shadow(loaded.model) if self.mirror is not None else None
        if shadow is not None and shadow.version == loaded.version:
            shadow = None
        if self.sink is None and shadow is None:
            return
        frame = rows.frame() if frame is None else frame
        ids, latency = _per_row(items, finished)
        if self.sink is not None:
            try:
                self.sink.append(
                    loaded.model,
                    loaded.version,
                    ids,
                    frame,
                    prediction.labels,
                    prediction.scores,
                    latency_ms=latency,
                )
            except Exception:  # recording must never fail a served prediction
                logger.exception("prediction sink failed for request(s) %s", ids)
        if shadow is not None and self.mirror is not None:
            same_columns = _columns(shadow) == _columns(loaded)  # else the shadow gets the frame
            self.mirror.submit(shadow, frame, ids, rows=rows if same_columns else None)

    def _failure(self, item: Pending, exc: Exception) -> UserCodeError:
        loaded = item.loaded
        self._record_failure(loaded, item.request_id, item.started)
        error = UserCodeError(
            f"model {loaded.model!r} version {loaded.version} failed to predict: "
            f"{type(exc).__name__}: {exc}",
            hint="The estimator raised on well-formed input; see the server log.",
            details={"model": loaded.model, "version": loaded.version},
        )
        error.__cause__ = exc
        return error

    def _record_failure(self, loaded: LoadedVersion, request_id: str, started: float) -> None:
        record = getattr(self.sink, "append_failure", None)
        if callable(record):
            try:
                record(
                    loaded.model,
                    loaded.version,
                    request_id,
                    status=500,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            except Exception:
                logger.exception("could not log the failure of request %s", request_id)


def _tag(request: Request, loaded: LoadedVersion) -> LoadedVersion:
    request.state.model_name = loaded.model
    request.state.model_version = loaded.version
    return loaded


def _columns(loaded: LoadedVersion) -> list[tuple[str, str]]:
    return [(c.name, c.dtype) for c in loaded.signature.columns]


def _require_rows(rows: Rows, max_rows: int) -> None:
    if rows.count == 0:
        raise InvalidInputError("the request has no rows; send at least one row")
    if rows.count > max_rows:
        raise TooLargeError(
            f"the request has {rows.count} rows; this server takes at most {max_rows} rows "
            "per request",
            hint="Split the rows over several requests, or raise the setting server.max_rows.",
            details={"limit_rows": max_rows, "got_rows": rows.count},
        )


def _require_length(prediction: Prediction, count: int) -> None:
    """A batch's answers must be one per row, or they cannot be split between requests."""
    lengths = {len(prediction.labels)}
    if prediction.scores is not None:
        lengths.add(len(prediction.scores))
    if prediction.probabilities is not None:
        lengths.add(len(prediction.probabilities))
    if lengths != {count}:
        raise ValueError(f"the model returned {sorted(lengths)} answers for {count} rows")


def _per_row(
    items: list[Pending], finished: float
) -> tuple[str | list[str], float | np.ndarray[Any, Any]]:
    """Request ids and latencies (ms) for the log: one value for one request, else per row."""
    if len(items) == 1:
        return items[0].request_id, (finished - items[0].started) * 1000
    counts = [item.rows.count for item in items]
    ids = [item.request_id for item, count in zip(items, counts, strict=True) for _ in range(count)]
    latency = np.repeat(np.array([(finished - item.started) * 1000 for item in items]), counts)
    return ids, latency


class Waiter:
    """An awaiting request's ``done``: settles its future on its event loop, from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Prediction] = loop.create_future()

    def __call__(self, result: Prediction | BaseException) -> None:
        with contextlib.suppress(RuntimeError):  # the caller's loop is gone
            self.loop.call_soon_threadsafe(_settle, self.future, result)


def answer_all(items: list[Pending], answers: list[Prediction | BaseException]) -> None:
    """Answer each item; the waiters of one event loop are woken with one call, not one each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, Any]]] = {}
    for item, answer in zip(items, answers, strict=True):
        if isinstance(item.done, Waiter):
            by_loop.setdefault(item.done.loop, []).append((item.done, answer))
        else:
            item.done(answer)
    for loop, waiters in by_loop.items():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_many, waiters)


def _settle_many(waiters: list[tuple[Waiter, Prediction | BaseException]]) -> None:
    for waiter, answer in waiters:
        _settle(waiter.future, answer)


def _settle(future: asyncio.Future[Prediction], result: Prediction | BaseException) -> None:
    if future.done():  # cancelled (the client went away) or already answered
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


__all__ = [
    "DEFAULT_BATCH_MAX_ROWS",
    "DEFAULT_BATCH_MAX_WAIT",
    "DEFAULT_MAX_ROWS",
    "INLINE_PARSE_BYTES",
    "ROUTING_KEY_HEADER",
    "PredictionSink",
    "ServerContext",
    "Waiter",
    "answer_all",
]
