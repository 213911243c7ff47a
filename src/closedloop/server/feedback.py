"""``POST /models/{name}/feedback``: labels that arrive after the prediction, by request id.

Body: one label ``{"request_id": "r1", "label": 1}`` (optionally ``"row"`` for a request that
predicted several rows), or a batch ``{"labels": [{"request_id": ..., "label": ..., "row": ...},
...]}``. Each label is coerced to the served version's target type (a number for a regression,
one of the classes' type for a classifier: ``"2"`` becomes ``2`` for integer classes); a label that
cannot be is refused with 422 naming the expected type. Labels are appended to the feedback log and
joined to the prediction log by request id for realised metrics. The answer is
``{"accepted": n}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from closedloop.errors import InvalidInputError
from closedloop.server import payloads
from closedloop.server.payloads import OrjsonResponse

if TYPE_CHECKING:
    from closedloop.server.app import ServerContext

FEEDBACK_REQUEST: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"type": "object", "required": ["request_id", "label"]},
                        {
                            "type": "object",
                            "required": ["labels"],
                            "properties": {
                                "labels": {"type": "array", "items": {"type": "object"}}
                            },
                        },
                    ]
                }
            }
        },
    }
}


def _items(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if "labels" in doc:
        items = doc["labels"]
        if not isinstance(items, list) or not items:
            raise InvalidInputError("'labels' must be a non-empty array of objects")
    else:
        items = [doc]
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
            raise InvalidInputError(
                f"label {i} must be an object with 'request_id' and 'label' (and optional 'row')"
            )
    return items


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(tags=["feedback"])

    @api.post("/models/{name}/feedback", openapi_extra=FEEDBACK_REQUEST)
    async def feedback(name: str, request: Request) -> Response:
        assert ctx.feedback is not None  # the route exists only with a feedback log
        doc = payloads.require_object(
            payloads.parse_json(await request.body()), "with 'request_id' and 'label', or 'labels'"
        )
        items = _items(doc)
        loaded = ctx.host.get(name)  # 404 for a model this server does not serve
        labels: list[Any] = [item["label"] for item in items]
        target = loaded.target()
        if target is not None:  # 422 naming the expected type for a label that is not one
            labels = target.coerce(labels).tolist()
        rows = [item.get("row") for item in items]
        accepted = await run_in_threadpool(
            ctx.feedback.append,
            name,
            [item["request_id"] for item in items],
            labels,
            rows=None if all(r is None for r in rows) else rows,
        )
        return OrjsonResponse({"accepted": accepted})

    return api
