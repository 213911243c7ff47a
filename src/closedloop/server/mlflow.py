"""MLflow scoring protocol routes (the ``mlflow models serve`` contract).

``POST /invocations`` accepts ``application/json`` bodies in the ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs`` format (with optional ``params``) and
``text/csv`` with a header row, and answers ``{"predictions": [...]}``. When several models are
served, pick one with the ``X-Closedloop-Model`` header or ``?model=NAME``, or use
``POST /models/{name}/invocations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from closedloop.errors import InvalidInputError
from closedloop.server import errors, payloads
from closedloop.server.openapi import INVOCATIONS_REQUEST
from closedloop.server.payloads import OrjsonResponse

if TYPE_CHECKING:
    from closedloop.server.app import ServerContext

MODEL_HEADER = "X-Closedloop-Model"


def choose_model(request: Request, served: list[str]) -> str:
    """The model ``/invocations`` should answer with: the only one, or the one asked for."""
    asked = request.headers.get(MODEL_HEADER) or request.query_params.get("model")
    if asked:
        return asked
    if len(served) == 1:
        return served[0]
    if not served:
        raise errors.not_ready(served)
    raise InvalidInputError(
        f"{len(served)} models are served ({', '.join(sorted(served))}); choose one with the "
        f"{MODEL_HEADER} header, ?model=NAME or POST /models/NAME/invocations",
        details={"served": sorted(served)},
    )


def router(ctx: ServerContext, server_version: str) -> APIRouter:
    """The MLflow scoring routes bound to a server context."""
    api = APIRouter(tags=["mlflow-scoring"])

    def health(request: Request) -> Response:
        return errors.not_ready_response(request, ctx.host) or OrjsonResponse({"status": "ok"})

    @api.get("/ping")
    async def ping(request: Request) -> Response:
        return health(request)

    @api.get("/health")
    async def health_route(request: Request) -> Response:
        return health(request)

    @api.get("/version")
    async def version() -> Response:
        return PlainTextResponse(server_version)

    @api.post("/invocations", openapi_extra=INVOCATIONS_REQUEST)
    async def invocations(request: Request) -> Response:
        return await _invoke(request, choose_model(request, ctx.host.names()))

    @api.post("/models/{name}/invocations", openapi_extra=INVOCATIONS_REQUEST)
    async def model_invocations(name: str, request: Request) -> Response:
        return await _invoke(request, name)

    async def _invoke(request: Request, name: str) -> Response:
        loaded = ctx.resolve(request, name)
        body = await request.body()
        content_type = request.headers.get("content-type")
        prediction = await ctx.predict(
            request,
            loaded,
            lambda: payloads.mlflow_rows(body, content_type, loaded.signature),
            size=len(body),
        )
        return OrjsonResponse({"predictions": prediction.labels})

    return api


__all__ = ["MODEL_HEADER", "choose_model", "router"]
