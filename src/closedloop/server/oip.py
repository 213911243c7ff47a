"""Open Inference Protocol v2 (KServe / Triton "predict protocol v2") REST routes.

Tabular convention: one input tensor per column (name = column, shape ``[n]`` or ``[n, 1]``), or a
single ``[n, k]`` tensor whose ``k`` columns follow the signature order. Outputs are ``predict``
(the model's labels or values) and, for classifiers with ``predict_proba``, ``predict_proba`` (the
probability of the positive/last class).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from closedloop.errors import InvalidInputError
from closedloop.server import errors, payloads
from closedloop.server.openapi import INFER_REQUEST
from closedloop.server.payloads import OrjsonResponse

if TYPE_CHECKING:
    from closedloop.domain.model import LoadedVersion
    from closedloop.server.context import ServerContext

OUTPUTS = ("predict", "predict_proba")


MAX_VERSION = 2**31 - 1
"""The largest version number the store can hold (a 32-bit integer column)."""


def parse_version(version: str) -> int:
    """A path's version segment as an int in [1, MAX_VERSION]; 400 naming it otherwise."""
    number = int(version) if version.isascii() and version.isdigit() and len(version) < 12 else 0
    if not 1 <= number <= MAX_VERSION:
        raise InvalidInputError(
            f"the path parameter 'version' must be an integer from 1 to {MAX_VERSION}, "
            f"got {version[:40]!r}",
            hint="Version numbers are the ones `closedloop versions MODEL` lists.",
            details={"parameter": "version", "minimum": 1, "maximum": MAX_VERSION},
        )
    return number


def _has_scores(loaded: LoadedVersion) -> bool:
    return callable(getattr(loaded.estimator, "predict_proba", None))


def model_metadata(loaded: LoadedVersion) -> dict[str, Any]:
    """The OIP model metadata response for a loaded version."""
    classes = getattr(loaded.estimator, "classes_", None)
    label_type = payloads.oip_datatype(np.asarray(classes)) if classes is not None else "FP64"
    outputs = [{"name": "predict", "datatype": label_type, "shape": [-1]}]
    if _has_scores(loaded):
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1]})
    platform = type(loaded.estimator).__module__.split(".")[0] or "python"
    return {
        "name": loaded.model,
        "versions": [str(loaded.version)],
        "platform": platform,
        "inputs": payloads.signature_tensors(loaded.signature),
        "outputs": outputs,
    }


def _binary_wanted(doc: dict[str, Any]) -> set[str]:
    """Outputs the request wants in binary form (the binary tensor data extension)."""
    everything = isinstance(doc.get("parameters"), dict) and bool(
        doc["parameters"].get("binary_data_output")
    )
    wanted = set(OUTPUTS) if everything else set()
    for raw in doc.get("outputs") or []:
        if isinstance(raw, dict) and isinstance(raw.get("parameters"), dict):
            if raw["parameters"].get("binary_data"):
                wanted.add(str(raw.get("name")))
            else:
                wanted.discard(str(raw.get("name")))
    return wanted


def _respond(body: dict[str, Any], arrays: dict[str, Any], binary: set[str]) -> Response:
    """JSON, or JSON header + binary tensors when the request asked for binary outputs."""
    from closedloop.server.binary import encode

    blobs = []
    for output in body["outputs"]:
        if output["name"] in binary:
            blob = encode(np.asarray(arrays[output["name"]]), output["datatype"])
            output.pop("data")
            output["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
    if not blobs:
        return OrjsonResponse(body)
    header = orjson.dumps(body)
    return Response(
        header + b"".join(blobs),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )


def _requested_outputs(doc: dict[str, Any], loaded: LoadedVersion) -> list[str]:
    """Output names the request asks for (all available ones when it names none)."""
    available = [name for name in OUTPUTS if name != "predict_proba" or _has_scores(loaded)]
    raw = doc.get("outputs")
    if raw is None:
        return available
    if not isinstance(raw, list) or not all(isinstance(o, dict) for o in raw):
        raise InvalidInputError("'outputs' must be an array of objects like {'name': 'predict'}")
    wanted = [o.get("name") for o in raw]
    unknown = [w for w in wanted if w not in available]
    if unknown:
        raise InvalidInputError(
            f"unknown output(s) {unknown}; this model provides {available}",
            details={"expected": available, "got": unknown},
        )
    return [name for name in available if name in wanted] if wanted else available


def router(ctx: ServerContext, server_version: str) -> APIRouter:
    """The ``/v2`` routes bound to a server context."""
    api = APIRouter(prefix="/v2", tags=["open-inference-protocol-v2"])

    @api.get("")
    async def server_metadata() -> Response:
        return OrjsonResponse(
            {"name": ctx.name, "version": server_version, "extensions": ["binary_tensor_data"]}
        )

    @api.get("/health/live")
    async def live() -> Response:
        return OrjsonResponse({"live": True})

    @api.get("/health/ready")
    async def ready(request: Request) -> Response:
        return errors.not_ready_response(request, ctx.host) or OrjsonResponse({"ready": True})

    @api.get("/models/{name}")
    async def metadata(name: str, request: Request) -> Response:
        return OrjsonResponse(model_metadata(ctx.resolve(request, name)))

    @api.get("/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str, request: Request) -> Response:
        loaded = await ctx.resolve_version(request, name, parse_version(version))
        return OrjsonResponse(model_metadata(loaded))

    @api.get("/models/{name}/ready")
    async def model_ready(name: str, request: Request) -> Response:
        loaded = ctx.resolve(request, name)
        return OrjsonResponse({"name": loaded.model, "ready": True})

    @api.get("/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str, request: Request) -> Response:
        loaded = await ctx.resolve_version(request, name, parse_version(version))
        return OrjsonResponse({"name": loaded.model, "version": str(loaded.version), "ready": True})

    @api.post("/models/{name}/infer", openapi_extra=INFER_REQUEST)
    async def infer(name: str, request: Request) -> Response:
        return await _infer(request, ctx.resolve(request, name))

    @api.post("/models/{name}/versions/{version}/infer", openapi_extra=INFER_REQUEST)
    async def infer_version(name: str, version: str, request: Request) -> Response:
        return await _infer(
            request, await ctx.resolve_version(request, name, parse_version(version))
        )

    async def _infer(request: Request, loaded: LoadedVersion) -> Response:
        from closedloop.server.binary import HEADER, split_body

        payloads.require_media(
            request.headers.get("content-type"), (payloads.JSON, payloads.OCTET_STREAM)
        )
        raw = await request.body()
        json_part, binary_part = split_body(raw, request.headers.get(HEADER))
        doc = payloads.require_object(
            payloads.parse_json(json_part), "with an 'inputs' array of tensors"
        )
        request_id: str = request.state.request_id
        answer_id = doc.get("id", request_id)
        if not isinstance(answer_id, str):
            raise InvalidInputError(f"'id' must be a string, got {answer_id!r}")
        wanted = _requested_outputs(doc, loaded)
        prediction = await ctx.predict(
            request,
            loaded,
            lambda: payloads.oip_rows(payloads.oip_tensors(doc, binary_part), loaded.signature),
            size=len(raw),
        )
        results = {"predict": prediction.labels}
        if prediction.scores is not None:
            results["predict_proba"] = prediction.scores
        outputs = [
            payloads.output_tensor(name, results[name]) for name in wanted if name in results
        ]
        body = {
            "model_name": loaded.model,
            "model_version": str(loaded.version),
            "id": answer_id,
            "parameters": {"request_id": request_id},
            "outputs": outputs,
        }
        return _respond(body, results, _binary_wanted(doc))

    return api


__all__ = ["MAX_VERSION", "model_metadata", "parse_version", "router"]
