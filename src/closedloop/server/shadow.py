"""Shadow traffic: a copy of each request goes to the shadow version after production answered.

The copy is put on a bounded queue and predicted by one background thread; its answer is logged
beside production's under the same request id (``_role = "shadow"``) and never returned. When the
queue is full the copy is dropped and counted, so a slow shadow can never slow production.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from closedloop.domain.model import LoadedVersion, Rows

Copy = tuple["LoadedVersion", "pd.DataFrame", "Sequence[str] | str", "Rows | None"]

log = logging.getLogger(__name__)


class ShadowMirror:
    """Bounded, non-blocking mirroring of requests to shadow versions."""

    def __init__(self, sink: Any, *, max_pending: int = 1000) -> None:
        self.sink = sink
        self._queue: queue.Queue[Copy | None] = queue.Queue(maxsize=max_pending)
        self.stats = {"mirrored": 0, "dropped": 0, "failed": 0}
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(
        self,
        loaded: LoadedVersion,
        frame: pd.DataFrame,
        request_ids: Sequence[str] | str,
        *,
        rows: Rows | None = None,
    ) -> None:
        """Queue a copy of one request's (or one batch's) rows for the shadow; drops (and
        counts) it when the queue is full. ``request_ids``: one id, or one per row."""
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:  # started on first use, and again after a close()
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="closedloop-shadow", daemon=True
                    )
                    self._thread.start()
        try:
            self._queue.put_nowait((loaded, frame, request_ids, rows))
        except queue.Full:
            self.stats["dropped"] += _requests(request_ids)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._mirror(*item)
            finally:
                self._queue.task_done()

    def _mirror(
        self,
        loaded: LoadedVersion,
        frame: pd.DataFrame,
        request_ids: Sequence[str] | str,
        rows: Rows | None,
    ) -> None:
        start = time.perf_counter()
        try:
            prediction = loaded.predict(frame) if rows is None else loaded.predict_rows(rows, frame)
        except Exception:
            self.stats["failed"] += _requests(request_ids)
            log.exception(
                "shadow %s v%d failed on request(s) %s", loaded.model, loaded.version, request_ids
            )
            return
        self.stats["mirrored"] += _requests(request_ids)
        if self.sink is None:
            return
        try:
            self.sink.append(
                loaded.model,
                loaded.version,
                request_ids,
                frame,
                prediction.labels,
                prediction.scores,
                latency_ms=(time.perf_counter() - start) * 1000,
                role="shadow",
            )
        except Exception:
            log.exception("could not log the shadow answer for %s", request_ids)

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued copy has been predicted (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._alive() and self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Stop the worker after the queued copies (idempotent)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=10)

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _requests(request_ids: Sequence[str] | str) -> int:
    """How many requests a copy holds (the stats count requests, not batches)."""
    return 1 if isinstance(request_ids, str) else len(set(request_ids))
