"""The ASGI middleware every request passes: its request id, echoed on every response, and the
limit on its body's size."""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request

from closedloop.errors import TooLargeError
from closedloop.server import errors

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"


class RequestIds:
    """Unique request ids without a system call per request: 32 hex digits, a random prefix per
    process (from the OS) followed by a counter. A ``uuid4()`` per request releases and re-takes
    the interpreter lock, which under load stalls the event loop behind the model threads."""

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


class RequestIdMiddleware:
    """Assign each request an id (echoing ``X-Request-ID``) and tag every response with it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ids = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1").strip()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = incoming[:200] or self.ids.next()
        state["started"] = time.perf_counter()

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                errors.tag_headers(MutableHeaders(scope=message), state)
            await send(message)

        await self.app(scope, receive, tagged)


DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


def body_too_large(limit: int, got: int | None = None) -> TooLargeError:
    """The 413 for a body over ``limit`` bytes (``got``: its declared length, when known)."""
    size = f" of {got} bytes" if got is not None else ""
    return TooLargeError(
        f"the request body{size} is larger than this server takes ({limit} bytes)",
        hint="Split the rows over several requests, or raise the setting server.max_body_bytes.",
        details={"limit_bytes": limit, **({"got_bytes": got} if got is not None else {})},
    )


class BodyLimitMiddleware:
    """Refuse a request body over ``max_bytes`` with a 413: at once when its ``Content-Length``
    says so (nothing of it is read), else as soon as the bytes streamed in pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            error = body_too_large(self.max_bytes, declared)
            await errors.error_response(Request(scope), error)(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None


__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "REQUEST_ID_HEADER",
    "BodyLimitMiddleware",
    "RequestIdMiddleware",
    "RequestIds",
    "body_too_large",
]
