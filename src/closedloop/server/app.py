"""The inference server's app factory: it assembles the routes, handlers and middleware.

``create_app(host)`` serves the models of a :class:`ModelHost` over two protocols: the Open
Inference Protocol v2 (``/v2/...``, KServe/Triton) and the MLflow scoring protocol
(``/invocations``, ``/ping``). Routes stay thin: parse the body, ask the host for the version that
answers now, coerce through its signature, predict, respond. Every response carries
``X-Request-ID`` and, when a version answered, ``X-Model-Name`` and ``X-Model-Version``.

What the routes share (validation, micro-batching, logging) is the
:class:`~closedloop.server.context.ServerContext`; the request id is the
:class:`~closedloop.server.middleware.RequestIdMiddleware`'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from closedloop.errors import ConfigError
from closedloop.server import errors, feedback, mlflow, oip
from closedloop.server.context import (
    DEFAULT_BATCH_MAX_ROWS,
    DEFAULT_BATCH_MAX_WAIT,
    DEFAULT_MAX_ROWS,
    PredictionSink,
    ServerContext,
)
from closedloop.server.metrics import MetricsMiddleware, ServerMetrics
from closedloop.server.middleware import (
    DEFAULT_MAX_BODY_BYTES,
    BodyLimitMiddleware,
    RequestIdMiddleware,
)
from closedloop.server.shadow import ShadowMirror

if TYPE_CHECKING:
    from closedloop.services.serving import ModelHost


def closedloop_version() -> str:
    """The installed closedloop version."""
    try:
        return metadata.version("closedloop")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0+unknown"


def _check_batching(max_rows: int, max_wait_ms: float) -> None:
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise ConfigError(
            f"The setting server.batch_max_rows must be an int >= 1. Got {max_rows!r} instead.",
            hint="Use 1 to turn batching off.",
        )
    if not 0 <= max_wait_ms <= 1000:
        raise ConfigError(
            "The setting server.batch_max_wait_ms must be a number of milliseconds in [0, 1000]. "
            f"Got {max_wait_ms!r} instead."
        )


def _check_limit(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"The setting server.{name} must be an int >= 1. Got {value!r} instead.")


def create_app(
    host: ModelHost,
    *,
    prediction_log: PredictionSink | None = None,
    server_name: str = "closedloop",
    on_shutdown: Callable[[], None] | None = None,
    feedback_log: Any = None,
    batch_max_rows: int = DEFAULT_BATCH_MAX_ROWS,
    batch_max_wait_ms: float = DEFAULT_BATCH_MAX_WAIT * 1000,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> FastAPI:
    """An ASGI app serving ``host``'s models over OIP v2 and the MLflow scoring protocol.

    ``on_shutdown`` runs when the ASGI server shuts down (e.g. on SIGTERM), after the last request:
    the place to flush the prediction log. ``batch_max_rows`` and ``batch_max_wait_ms`` tune the
    micro-batching of concurrent requests (``server.batch_*`` settings; 1 row turns it off).
    ``max_body_bytes`` and ``max_rows`` bound one request (``server.max_*``; a 413 beyond).
    """
    _check_batching(batch_max_rows, batch_max_wait_ms)
    _check_limit("max_body_bytes", max_body_bytes)
    _check_limit("max_rows", max_rows)
    mirror = ShadowMirror(prediction_log)
    ctx = ServerContext(
        host=host,
        sink=prediction_log,
        name=server_name,
        mirror=mirror,
        feedback=feedback_log,
        batch_max_rows=batch_max_rows,
        batch_max_wait=batch_max_wait_ms / 1000,
        max_rows=max_rows,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        ctx.close()
        mirror.drain()
        mirror.close()
        if on_shutdown is not None:
            on_shutdown()

    app = FastAPI(
        title=f"{server_name} inference server",
        version=closedloop_version(),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.context = ctx
    server_metrics = ServerMetrics(ctx)
    app.state.metrics = server_metrics
    app.include_router(mlflow.router(ctx, closedloop_version()))  # /invocations matched first
    app.include_router(oip.router(ctx, closedloop_version()))
    app.include_router(server_metrics.router())
    if feedback_log is not None:
        app.include_router(feedback.router(ctx))
    errors.install(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=server_metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


__all__ = ["closedloop_version", "create_app"]
