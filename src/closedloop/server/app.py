"""The inference server's app factory and the steps every prediction route shares.

``create_app(host)`` serves the models of a :class:`ModelHost` over two protocols: the Open
Inference Protocol v2 (``/v2/...``, KServe/Triton) and the MLflow scoring protocol
(``/invocations``, ``/ping``). Routes stay thin: parse the body, ask the host for the version that
answers now, coerce through its signature, predict, respond. Every response carries
``X-Request-ID`` and, when a version answered, ``X-Model-Name`` and ``X-Model-Version``.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from closedloop.errors import InvalidInputError, UserCodeError
from closedloop.server import errors, feedback, mlflow, oip
from closedloop.server.metrics import MetricsMiddleware, ServerMetrics
from closedloop.server.payloads import Columns
from closedloop.server.shadow import ShadowMirror

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from closedloop.domain.model import LoadedVersion, Prediction
    from closedloop.services.serving import ModelHost

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"


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
        latency_ms: float | None = None,
        role: str = "primary",
    ) -> None:
        """Record one request's rows; all rows share the one request id."""
        ...


def closedloop_version() -> str:
    """The installed closedloop version."""
    try:
        return metadata.version("closedloop")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0+unknown"


ROUTING_KEY_HEADER = "X-Routing-Key"


@dataclass
class ServerContext:
    """What the routes share: the host, the optional sink, the shadow mirror and the name."""

    host: ModelHost
    sink: PredictionSink | None
    name: str
    mirror: ShadowMirror | None = None
    feedback: Any = None
    """A :class:`closedloop.storage.feedback.FeedbackLog`, when labels can be posted."""

    def resolve(self, request: Request, name: str, version: int | None = None) -> LoadedVersion:
        """The version answering this request; tagged on the response.

        Without a version, the caller's routing key (``X-Routing-Key``, else the request id)
        picks a side of a running canary, stickily.
        """
        if version is not None:
            loaded = self.host.get_version(name, version)
        else:
            key = request.headers.get(ROUTING_KEY_HEADER) or request.state.request_id
            loaded = self.host.route(name, key)
        request.state.model_name = loaded.model
        request.state.model_version = loaded.version
        return loaded

    async def predict(
        self, request: Request, loaded: LoadedVersion, parse: Callable[[], Columns]
    ) -> Prediction:
        """Parse, coerce, predict and record, off the event loop."""
        request_id: str = request.state.request_id
        started: float = getattr(request.state, "started", time.perf_counter())
        return await run_in_threadpool(self._predict, loaded, parse, request_id, started)

    def _predict(
        self, loaded: LoadedVersion, parse: Callable[[], Columns], request_id: str, started: float
    ) -> Prediction:
        frame = loaded.signature.frame_from_columns(parse())
        if frame.empty:
            raise InvalidInputError("the request has no rows; send at least one row")
        try:
            prediction = loaded.predict(frame)
        except Exception as exc:
            self._record_failure(loaded, request_id, started)
            raise UserCodeError(
                f"model {loaded.model!r} version {loaded.version} failed to predict: "
                f"{type(exc).__name__}: {exc}",
                hint="The estimator raised on well-formed input; see the server log.",
                details={"model": loaded.model, "version": loaded.version},
            ) from exc
        if self.sink is not None:
            try:
                self.sink.append(
                    loaded.model,
                    loaded.version,
                    request_id,
                    frame,
                    prediction.labels,
                    prediction.scores,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            except Exception:  # recording must never fail a served prediction
                logger.exception("prediction sink failed for request %s", request_id)
        shadow = self.host.shadow(loaded.model)
        if shadow is not None and self.mirror is not None and shadow.version != loaded.version:
            self.mirror.submit(shadow, frame, request_id)
        return prediction

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


class RequestIdMiddleware:
    """Assign each request an id (echoing ``X-Request-ID``) and tag every response with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = incoming[:200] or uuid.uuid4().hex
        state["started"] = time.perf_counter()

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                errors.tag_headers(MutableHeaders(scope=message), state)
            await send(message)

        await self.app(scope, receive, tagged)


def create_app(
    host: ModelHost,
    *,
    prediction_log: PredictionSink | None = None,
    server_name: str = "closedloop",
    on_shutdown: Callable[[], None] | None = None,
    feedback_log: Any = None,
) -> FastAPI:
    """An ASGI app serving ``host``'s models over OIP v2 and the MLflow scoring protocol.

    ``on_shutdown`` runs when the ASGI server shuts down (e.g. on SIGTERM), after the last request:
    the place to flush the prediction log.
    """
    mirror = ShadowMirror(prediction_log)
    ctx = ServerContext(
        host=host, sink=prediction_log, name=server_name, mirror=mirror, feedback=feedback_log
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
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
    app.include_router(oip.router(ctx, closedloop_version()))
    app.include_router(mlflow.router(ctx, closedloop_version()))
    app.include_router(server_metrics.router())
    if feedback_log is not None:
        app.include_router(feedback.router(ctx))
    errors.install(app)
    app.add_middleware(MetricsMiddleware, metrics=server_metrics)
    app.add_middleware(RequestIdMiddleware)
    return app


__all__ = ["PredictionSink", "ServerContext", "closedloop_version", "create_app"]
