"""One log line per RPC a service answers: method, status code and duration.

`rpc /alphaswarm.backtester.v1.BacktesterService/RunBacktest OK 412 ms` on the
logger `alphaswarm.rpc` (INFO), so an operator sees which replica served what
and how long it took. Health checks and reflection are not logged (probes ask
every few seconds). The line names no request content: no parameters, tokens
or paths.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from alphaswarm_common.grpc_handlers import rewrap

__all__ = ["AccessLogInterceptor"]

log = logging.getLogger("alphaswarm.rpc")
_QUIET = ("/grpc.health.v1.", "/grpc.reflection.")


def _code(context: Any, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if code is None:
        return "UNKNOWN" if failed else "OK"
    return str(getattr(code, "name", code))


class AccessLogInterceptor(grpc.ServerInterceptor):
    """Logs each RPC of a threaded server once it ends (outermost interceptor: the final code)."""

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_QUIET):
            return handler

        def unary(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                start, failed = time.perf_counter(), True
                try:
                    response = behavior(request, context)
                    failed = False
                    return response
                finally:
                    log.info(
                        "rpc %s %s %.0f ms",
                        method,
                        _code(context, failed),
                        1e3 * (time.perf_counter() - start),
                    )

            return wrapper

        def streaming(behavior):  # type: ignore[no-untyped-def]
            def wrapper(request, context):  # type: ignore[no-untyped-def]
                start, failed = time.perf_counter(), True
                try:
                    yield from behavior(request, context)
                    failed = False
                finally:
                    log.info(
                        "rpc %s %s %.0f ms",
                        method,
                        _code(context, failed),
                        1e3 * (time.perf_counter() - start),
                    )

            return wrapper

        return rewrap(handler, unary, streaming)
