"""Progress of a task as server-sent events: `GET /chat/stream/{task_id}`.

Every event from the first (or after `Last-Event-ID`), ending after the terminal
one; the stream stops when the client disconnects and closes its watcher in
`finally`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sse_starlette.sse import EventSourceResponse

from alphaswarm_gateway.deps import GatewayDep

__all__ = ["ROUTERS", "stream"]

ORDER = 3


stream = APIRouter(tags=["progress"])


@stream.get(
    "/chat/stream/{task_id}",
    operation_id="stream_task_progress",
    summary="Progress events of a task as server-sent events",
    response_class=EventSourceResponse,
)
async def stream_progress(task_id: str, request: Request, gw: GatewayDep) -> EventSourceResponse:
    """Every event from the first (or after `Last-Event-ID`), ending after the terminal one."""
    await gw.get_task(task_id)  # 404 before the stream starts
    try:
        after = int(request.headers.get("last-event-id", "0") or 0)
    except ValueError:
        after = 0

    async def events() -> AsyncIterator[dict[str, Any]]:
        watcher = gw.watch(task_id, after_seq=after)
        try:
            async for event in watcher:
                if await request.is_disconnected():
                    break
                yield {"id": str(event.seq), "event": "progress", "data": event.model_dump_json()}
        finally:
            with contextlib.suppress(Exception):
                await watcher.aclose()  # type: ignore[attr-defined]

    return EventSourceResponse(events(), ping=15)


ROUTERS: tuple[APIRouter, ...] = (stream,)
