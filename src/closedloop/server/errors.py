"""Exception handlers: every failure becomes a JSON error body, never an HTML page or a bare 500.

The structured shape is closedloop's ``{"error": {"code", "message", "hint", "details"}}``. The
two wire protocols have their own error bodies, which we honour and extend:

* OIP v2 (``/v2/...``): ``{"error": "<message>", "closedloop_error": {...}}``
* MLflow (``.../invocations``): ``{"error_code": "BAD_REQUEST", "message": "...",
  "closedloop_error": {...}}``
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from closedloop.errors import ClosedloopError, InvalidInputError, ModelLoadError, NotFoundError
from closedloop.server.payloads import OrjsonResponse

if TYPE_CHECKING:
    from closedloop.services.serving import ModelHost

logger = logging.getLogger(__name__)

_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "BAD_REQUEST",
    415: "BAD_REQUEST",
    422: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


def not_ready(served: list[str]) -> ModelLoadError:
    """Why a server cannot answer yet: it has nothing to serve, or a model's production version
    is still loading (``served``: the models that can answer already)."""
    if not served:
        return ModelLoadError(
            "no model has a production version yet, so there is nothing to serve",
            hint="Train one (`closedloop train`) or point an alias at a registered version "
            "(`closedloop alias set MODEL production VERSION`); the server picks it up "
            "without a restart.",
        )
    return ModelLoadError(
        "a model's production version is still loading or failed to load",
        hint="Retry shortly; a version that failed to load is named in the server log.",
        details={"served": served},
    )


def tag_headers(headers: MutableHeaders, state: MutableMapping[str, Any]) -> None:
    """Set ``X-Request-ID`` and, when a version answered, ``X-Model-Name``/``X-Model-Version``."""
    if "request_id" in state:
        headers["X-Request-ID"] = state["request_id"]
    if "model_name" in state:
        headers["X-Model-Name"] = str(state["model_name"])
        headers["X-Model-Version"] = str(state["model_version"])


def error_response(request: Request, error: ClosedloopError) -> Response:
    """Render ``error`` in the body shape of the protocol the request's path belongs to."""
    structured = error.to_dict()["error"]
    path = request.url.path
    body: dict[str, Any]
    if path == "/v2" or path.startswith("/v2/"):
        body = {"error": error.message, "closedloop_error": structured}
    elif path.endswith("/invocations"):
        code = _MLFLOW_CODES.get(error.http_status, "INTERNAL_ERROR")
        body = {"error_code": code, "message": error.message, "closedloop_error": structured}
    else:
        body = {"error": structured}
    response = OrjsonResponse(body, status_code=error.http_status)
    tag_headers(response.headers, request.scope.get("state", {}))
    return response


def not_ready_response(request: Request, host: ModelHost) -> Response | None:
    """The 503 a readiness probe gets while ``host`` cannot answer (None once it can); not
    logged, since probes ask often."""
    if host.ready():
        return None
    return error_response(request, not_ready(host.names()))


async def _closedloop_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClosedloopError)
    if exc.http_status >= 500:
        logger.error("request failed: %s", exc.message, exc_info=exc.__cause__ or exc)
    return error_response(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
        for e in exc.errors()
    ]
    error = InvalidInputError(
        "invalid request: " + "; ".join(problems), details={"problems": problems}
    )
    return error_response(request, error)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error: ClosedloopError
    if exc.status_code == 404:
        error = NotFoundError(
            f"no route {request.method} {request.url.path}",
            hint="OIP v2 routes live under /v2; MLflow scoring is POST /invocations.",
        )
    elif exc.status_code == 405:
        error = InvalidInputError(f"method {request.method} is not allowed on {request.url.path}")
    else:
        error = ClosedloopError(str(exc.detail))
    response = error_response(request, error)
    response.status_code = exc.status_code
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = ClosedloopError(
        f"internal server error: {type(exc).__name__}",
        hint="This is a bug in closedloop; the server log has the traceback.",
    )
    return error_response(request, error)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the JSON error shape."""
    app.add_exception_handler(ClosedloopError, _closedloop_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


__all__ = ["error_response", "install", "not_ready", "not_ready_response", "tag_headers"]
