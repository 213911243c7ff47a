"""``POST /models/{name}/feedback``: labels that arrive after the prediction, by request id.

A label names the request it answers by the ``X-Request-ID`` the prediction was returned with,
and, for a request that predicted several rows, the row's position in it (``"row"``, from 0).
The body is one label, an array of labels, or an object with a ``"labels"`` array::

    {"request_id": "r1", "label": 1}
    [{"request_id": "r2", "row": 0, "label": 0}, {"request_id": "r2", "row": 1, "label": 1}]
    {"labels": [{"request_id": "r2", "row": 0, "label": 0}, ...]}

A batch may name each (request id, row) once; a label posted again later corrects the earlier
one. Each label is coerced to the served version's target type (a finite number for a
regression, one of the version's classes for a classifier: ``"2"`` becomes ``2`` for integer
classes); a label that cannot be is refused with 422 naming the expected type and classes, and
nothing of the batch is stored. Labels are appended to the feedback log and joined to the
prediction log by request id (and row) for realised metrics. The request id is not checked
here: the prediction may have been answered by another replica, or still sit in a log buffer.
A label whose request id matches no logged prediction is never joined to anything; the join
leaves it out and counts it (:func:`closedloop.domain.performance.match_feedback`). The
answer is ``{"accepted": n}``.
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
    from closedloop.server.context import ServerContext

_LABEL: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "label"],
    "properties": {
        "request_id": {"type": "string", "description": "the prediction's X-Request-ID"},
        "row": {
            "type": "integer",
            "minimum": 0,
            "description": "the row's position in its request (for requests of several rows)",
        },
        "label": {"description": "the true label (number, string or boolean)"},
    },
}

FEEDBACK_REQUEST: dict[str, Any] = {
    "description": (
        "True labels for served predictions, by the request id each prediction was answered "
        "with (X-Request-ID) and, for a request of several rows, the row's position in it. "
        'One label, an array of labels, or {"labels": [...]}. Each (request_id, row) may '
        "appear once per batch; posting it again later corrects the label."
    ),
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _LABEL,
                        {"type": "array", "items": _LABEL, "minItems": 1},
                        {
                            "type": "object",
                            "required": ["labels"],
                            "properties": {
                                "labels": {"type": "array", "items": _LABEL, "minItems": 1}
                            },
                        },
                    ]
                },
                "example": [
                    {"request_id": "r-17", "row": 0, "label": 1},
                    {"request_id": "r-17", "row": 1, "label": 0},
                ],
            }
        },
    },
}

_SHAPE = "an object with 'request_id' and 'label' (and 'row' for a request of several rows)"


def parse_labels(doc: object) -> list[dict[str, Any]]:
    """The labels of a feedback body (one label, an array, or ``{"labels": [...]}``), checked:
    each is an object with a string ``request_id`` and a ``label``, an optional ``row`` >= 0,
    and no (request id, row) appears twice."""
    if isinstance(doc, list):
        items: Any = doc
        where = "the array"
    elif isinstance(doc, dict) and "labels" in doc:
        items = doc["labels"]
        where = "'labels'"
    elif isinstance(doc, dict):
        items, where = [doc], "the body"
    else:
        raise InvalidInputError(
            f"the feedback body must be {_SHAPE}, an array of those, or {{'labels': [...]}}; "
            f"got {str(doc)[:40]!r}"
        )
    if not isinstance(items, list) or not items:
        raise InvalidInputError(f"{where} must be a non-empty array of labels, each {_SHAPE}")
    first: dict[tuple[str, int | None], int] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "request_id" not in item or "label" not in item:
            raise InvalidInputError(f"label {i} must be {_SHAPE}")
        request_id, row = item["request_id"], item.get("row")
        if not isinstance(request_id, str) or not request_id:
            raise InvalidInputError(
                f"label {i}: 'request_id' must be a non-empty string (the prediction's "
                f"X-Request-ID), got {request_id!r}"
            )
        if row is not None and (isinstance(row, bool) or not isinstance(row, int) or row < 0):
            raise InvalidInputError(
                f"label {i}: 'row' must be an integer >= 0 (the row's position in its request), "
                f"got {row!r}"
            )
        earlier = first.setdefault((request_id, row), i)
        if earlier != i:
            named = f"request {request_id!r}" + ("" if row is None else f" row {row}")
            raise InvalidInputError(
                f"labels {earlier} and {i} both name {named}; a batch may label each "
                "(request_id, row) once",
                hint="Give each row of a request of several rows its position in 'row' "
                "(0, 1, ...); to correct a label, post it again in a later request.",
                details={"request_id": request_id, "row": row, "labels": [earlier, i]},
            )
    return items


def router(ctx: ServerContext) -> APIRouter:
    api = APIRouter(tags=["feedback"])

    @api.post("/models/{name}/feedback", openapi_extra=FEEDBACK_REQUEST)
    async def feedback(name: str, request: Request) -> Response:
        assert ctx.feedback is not None  # the route exists only with a feedback log
        payloads.require_media(request.headers.get("content-type"), (payloads.JSON,))
        items = parse_labels(payloads.parse_json(await request.body()))
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
