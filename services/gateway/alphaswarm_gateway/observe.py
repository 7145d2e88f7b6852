"""The gateway's REST metrics and trace hooks.

`HttpMetricsMiddleware` (pure ASGI) counts and times every request by method, route template
(`/ml/alpha-backtest-runs/{run_id}`, never the raw path, so ids do not explode the label set)
and status, into `alphaswarm_http_requests_total` and `alphaswarm_http_request_duration_seconds`;
a streamed response (SSE) is timed to its last byte. With tracing on, every response names its
trace in `x-trace-id`, and `install(app)` adds the FastAPI instrumentation's server spans.
"""

from __future__ import annotations

import time
from typing import Any

from alphaswarm_common import telemetry
from alphaswarm_common.service_metrics import observe_http

__all__ = ["HttpMetricsMiddleware", "install"]


def _route(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None) or getattr(route, "path_format", None)
    return str(path) if path else "unmatched"


class HttpMetricsMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if telemetry.enabled():
                    trace_id = telemetry.current_trace_id()
                    if trace_id:
                        message.setdefault("headers", [])
                        message["headers"] = [*message["headers"], (b"x-trace-id", trace_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe_http(scope.get("method", ""), _route(scope), status, time.perf_counter() - start)


def install(app: Any) -> None:
    """Metrics on every request; server spans when tracing is on (added last: outermost)."""
    app.add_middleware(HttpMetricsMiddleware)
    telemetry.instrument_fastapi(app)
