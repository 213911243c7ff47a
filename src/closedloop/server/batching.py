"""Adaptive micro-batching: concurrent requests for one served version share one model call.

Each served version gets a :class:`Batcher` with one worker thread (started on demand, gone
after a minute without traffic). Requests arrive already validated; the worker takes what is
queued, up to ``max_rows`` rows (always at least one request), and hands the batch to the
server's runner, which calls the model once and gives each request its own slice of the answer.

Adaptive: the worker never waits on a lone request. Requests queue up by themselves while a
batch is being predicted; only when other requests for the version are still being parsed does
the worker wait for them, at most ``max_wait`` seconds.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from closedloop.domain.model import LoadedVersion, Prediction, Rows

IDLE_SECONDS = 60.0
"""A worker with nothing to do for this long ends; the next request starts a new one."""


@dataclass
class Pending:
    """One request waiting for its answer."""

    loaded: LoadedVersion
    rows: Rows
    request_id: str
    started: float
    """``time.perf_counter()`` when the request arrived (for its logged latency)."""
    done: Callable[[Prediction | BaseException], None]
    """Receives the request's own prediction, or the error that answers it; only the first call
    counts (a later one, after an unexpected runner failure, is ignored)."""


Runner = Callable[[list[Pending]], None]


class Batcher:
    """Coalesces the pending requests of one served version into batches for ``runner``."""

    def __init__(self, runner: Runner, *, max_rows: int, max_wait: float) -> None:
        self.runner = runner
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._cond = threading.Condition()
        self._queue: deque[Pending] = deque()
        self._arriving = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def arriving(self) -> None:
        """A request for this version started parsing: worth waiting for (see :meth:`submit`)."""
        with self._cond:
            self._arriving += 1

    def abandoned(self) -> None:
        """A request announced with :meth:`arriving` will not be submitted (it was invalid)."""
        with self._cond:
            self._arriving -= 1
            self._cond.notify()

    def submit(self, item: Pending) -> None:
        """Queue a request announced with :meth:`arriving`; its ``done`` is called once."""
        with self._cond:
            self._arriving -= 1
            self._queue.append(item)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="closedloop-batcher", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def idle(self) -> bool:
        """True when nothing is queued or announced and no worker runs."""
        with self._cond:
            return self._thread is None and not self._queue and self._arriving <= 0

    def close(self) -> None:
        """Answer what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self.runner(batch)
            except BaseException as exc:  # the runner answers errors itself; never strand a caller
                for item in batch:
                    item.done(exc)

    def _next_batch(self) -> list[Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closed or (not self._cond.wait(IDLE_SECONDS) and not self._queue):
                    self._thread = None
                    return None
            batch: list[Pending] = []
            rows = self._take(batch, 0)
            if self.max_wait > 0:
                self._wait_for_arrivals(batch, rows)
            return batch

    def _take(self, batch: list[Pending], rows: int) -> int:
        """Move queued requests into ``batch`` while they fit; returns the batch's rows."""
        while self._queue and (not batch or rows + self._queue[0].rows.count <= self.max_rows):
            item = self._queue.popleft()
            batch.append(item)
            rows += item.rows.count
        return rows

    def _wait_for_arrivals(self, batch: list[Pending], rows: int) -> None:
        """While requests are being parsed and the batch has room, wait (bounded) for them."""
        import time

        deadline = time.monotonic() + self.max_wait
        while self._arriving > 0 and rows < self.max_rows and not self._closed:
            left = deadline - time.monotonic()
            if left <= 0 or (self._queue and rows + self._queue[0].rows.count > self.max_rows):
                return
            self._cond.wait(left)
            rows = self._take(batch, rows)


__all__ = ["IDLE_SECONDS", "Batcher", "Pending", "Runner"]
