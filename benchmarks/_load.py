"""A small bounded HTTP/1.1 load generator on raw asyncio streams (keep-alive, closed loop).

Each of ``concurrency`` workers holds one keep-alive connection and sends the same pre-encoded
request back to back until ``duration`` seconds pass or ``max_requests`` were sent in total, so
every run stops by itself. No HTTP library sits in the hot path: a request is one ``write`` of
fixed bytes and a response is ``readuntil(b"\\r\\n\\r\\n")`` plus ``readexactly(content-length)``
(chunked bodies are handled too), which lets one Python process drive several thousand
requests/s on one core. Connection errors are counted and the worker reconnects.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0


@dataclass
class Sample:
    started: float  # time.monotonic() when the request was written
    finished: float  # time.monotonic() when the whole response was read
    status: int  # HTTP status, 0 for a connection error or timeout
    target: int = 0  # which target (index into the list given to run_load) answered
    header: str | None = None  # the value of the watched response header, if any


@dataclass
class LoadResult:
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0

    @property
    def elapsed(self) -> float:
        return self.finished - self.started


def build_request(
    host: str, port: int, path: str, body: bytes, headers: dict[str, str] | None = None
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: keep-alive",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _header(head: bytes, name: bytes) -> bytes | None:
    """Value of header ``name`` (lower-case bytes) in a raw response head."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = _header(head, b"content-length")
    if length is not None:
        body = await reader.readexactly(int(length))
    elif (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = b""
    return status, head, body


async def _worker(
    target: int,
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    budget: list[int],
    out: list[Sample],
    watch: bytes | None,
) -> None:
    reader = writer = None
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        started = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), CONNECT_TIMEOUT
                )
            writer.write(request)
            status, head, _ = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT)
            value = _header(head, watch) if watch else None
            out.append(
                Sample(
                    started,
                    time.monotonic(),
                    status,
                    target,
                    value.decode("latin-1") if value is not None else None,
                )
            )
            if (_header(head, b"connection") or b"").lower() == b"close":
                writer.close()
                reader = writer = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            out.append(Sample(started, time.monotonic(), 0, target))
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)  # a refused connection must not spin
    if writer is not None:
        writer.close()


async def run_load_async(
    targets: list[tuple[str, int]],
    path: str,
    body: bytes,
    *,
    concurrency: int,
    duration: float,
    max_requests: int = 10_000_000,
    headers: dict[str, str] | None = None,
    watch_header: str | None = None,
    at: tuple[float, object] | None = None,
) -> LoadResult:
    """``concurrency`` workers per target for ``duration`` s (at most ``max_requests`` in all).

    ``at=(seconds, callable)`` runs ``callable()`` in a thread that many seconds into the run
    (the rollback benchmark uses it); its return value is ignored.
    """
    result = LoadResult()
    budget = [max_requests]
    watch = watch_header.lower().encode() if watch_header else None
    result.started = time.monotonic()
    deadline = result.started + duration
    tasks = [
        asyncio.create_task(
            _worker(
                i,
                host,
                port,
                build_request(host, port, path, body, headers),
                deadline,
                budget,
                result.samples,
                watch,
            )
        )
        for i, (host, port) in enumerate(targets)
        for _ in range(concurrency)
    ]
    if at is not None:
        delay, action = at
        await asyncio.sleep(delay)
        await asyncio.to_thread(action)  # type: ignore[arg-type]
    await asyncio.gather(*tasks)
    result.finished = time.monotonic()
    return result


def run_load(
    targets: list[tuple[str, int]], path: str, body: bytes, **kwargs: object
) -> LoadResult:
    return asyncio.run(run_load_async(targets, path, body, **kwargs))  # type: ignore[arg-type]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(result: LoadResult) -> dict[str, float | int]:
    """Requests/s (successful), p50/p99 latency in ms over successes, and the error count."""
    ok = [s.finished - s.started for s in result.samples if s.status == 200]
    return {
        "requests": len(result.samples),
        "errors": sum(1 for s in result.samples if s.status != 200),
        "rps": len(ok) / result.elapsed if result.elapsed else 0.0,
        "p50_ms": percentile(ok, 50) * 1000,
        "p99_ms": percentile(ok, 99) * 1000,
        "mean_ms": statistics.fmean(ok) * 1000 if ok else float("nan"),
    }
