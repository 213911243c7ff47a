"""MLflow scoring protocol routes (the ``mlflow models serve`` contract).

``POST /invocations`` accepts ``application/json`` bodies in the ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs`` format (with optional ``params``) and
``text/csv`` with a header row, and answers ``{"predictions": [...]}``: one label (or value) per
row. With ``"params": {"predict_method": "predict_proba"}`` (the convention of MLflow's pyfunc
models that take params), a classifier answers every class's probability instead, one list per
row in the order of the estimator's ``classes_``. When several models are served, pick one with
the ``X-Closedloop-Model`` header or ``?model=NAME``, or use ``POST /models/{name}/invocations``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import PlainTextResponse, Response

from closedloop.errors import InvalidInputError
from closedloop.server import errors, payloads
from closedloop.server.openapi import INVOCATIONS_REQUEST
from closedloop.server.payloads import OrjsonResponse

if TYPE_CHECKING:
    from closedloop.domain.model import LoadedVersion, Rows
    from closedloop.server.context import ServerContext

MODEL_HEADER = "X-Closedloop-Model"
PREDICT_METHODS = ("predict", "predict_proba")
"""What ``params.predict_method`` may ask for (``predict`` when absent)."""


def predict_method(params: dict[str, Any], loaded: LoadedVersion) -> str:
    """The method a request's ``params`` ask ``loaded`` to answer with; 400 for anything else."""
    unknown = sorted(set(params) - {"predict_method"})
    if unknown:
        raise InvalidInputError(
            f"unknown param(s) {unknown}; the only param is 'predict_method', one of "
            f"{list(PREDICT_METHODS)}",
            details={"accepted": ["predict_method"], "got": unknown},
        )
    method = params.get("predict_method", "predict")
    if method not in PREDICT_METHODS:
        raise InvalidInputError(
            f"params.predict_method must be one of {list(PREDICT_METHODS)}, got {method!r}",
            details={"accepted": list(PREDICT_METHODS), "got": method},
        )
    if method == "predict_proba" and not callable(getattr(loaded.estimator, "predict_proba", None)):
        raise InvalidInputError(
            f"model {loaded.model!r} version {loaded.version} "
            f"({type(loaded.estimator).__name__}) has no predict_proba: it answers labels or "
            "values only",
            hint="Leave out params.predict_method to get its predictions.",
            details={"model": loaded.model, "version": loaded.version},
        )
    return str(method)


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
        content_type = request.headers.get("content-type")
        payloads.require_media(content_type, (payloads.JSON, payloads.CSV))
        body = await request.body()
        method = "predict"

        def parse() -> Rows:
            nonlocal method
            rows, params = payloads.mlflow_request(body, content_type, loaded.signature)
            method = predict_method(params, loaded)
            return rows

        prediction = await ctx.predict(request, loaded, parse, size=len(body))
        if method == "predict_proba":
            return OrjsonResponse({"predictions": prediction.probabilities})
        return OrjsonResponse({"predictions": prediction.labels})

    return api


__all__ = ["MODEL_HEADER", "PREDICT_METHODS", "choose_model", "predict_method", "router"]
