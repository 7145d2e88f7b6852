"""Request body limit of the REST gateway (`ALPHASWARM_MAX_BODY_BYTES`, 16 MiB by default).

`BodyLimitMiddleware` answers 413 with the error body before the body is read:
a `Content-Length` above the limit is refused up front, and a body without one
(chunked transfer) is counted while it streams in, so the limit holds after at
most one extra chunk whatever the client sends. Bodies are then parsed off the
event loop (`parse_off_loop`), so a large YAML document does not stall
`/healthz` or the progress streams of other clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alphaswarm_gateway.errors import error_body, request_id_of

__all__ = ["BodyLimitMiddleware", "BodyTooLarge", "parse_off_loop"]

T = TypeVar("T")


class BodyTooLarge(HTTPException):
    """The body is larger than the limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body exceeds the limit of {limit} bytes (ALPHASWARM_MAX_BODY_BYTES)"
        )
        self.error_details = {"field": "body", "limit_bytes": limit}


def _too_large_message(limit: int, request_id: str) -> bytes:
    exc = BodyTooLarge(limit)
    body = error_body("RESOURCE_EXHAUSTED", "BODY_TOO_LARGE", str(exc.detail), exc.error_details, request_id)
    return json.dumps(body).encode()


class BodyLimitMiddleware:
    """413 for a request body above `max_bytes`, decided before the rest of the body is read."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, send: Send) -> None:
        payload = _too_large_message(self.max_bytes, request_id_of(scope))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1  # the server rejects a malformed length itself
                if declared > self.max_bytes:
                    await self._reject(scope, send)
                    return
                break

        received = 0
        started = False
        limit = self.max_bytes

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            # Read outside a route's error handling (a middleware or a stream): answer here if we still can.
            if started:
                raise
            await self._reject(scope, send)


async def parse_off_loop(parse: Callable[..., T], *args: Any) -> T:
    """Run a CPU-bound parse (YAML, validation) in the thread pool, off the event loop."""
    return await run_in_threadpool(parse, *args)
