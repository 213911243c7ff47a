"""The ASGI middleware every request passes: its request id, echoed on every response."""

from __future__ import annotations

import itertools
import os
import time
from typing import TYPE_CHECKING, Any

from starlette.datastructures import MutableHeaders

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


__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware", "RequestIds"]
