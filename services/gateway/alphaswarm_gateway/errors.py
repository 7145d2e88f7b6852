"""Error responses of the REST gateway: one body shape, a correlation id, nothing internal.

Every error answers `{"error": {"code", "reason", "message", "details"}}` with
`details.request_id`, the request's correlation id: the `X-Request-ID` header
the client sent (when it is a plain token of at most 128 characters) or a new
one, echoed in the `X-Request-ID` response header of every response.

* A domain error keeps its status (`AlphaSwarmError.http_status`, or the
  `status` its details carry) and, below 500, its message and field.
* A dependency that is down (a gRPC UNAVAILABLE, the event bus) is 503 with
  `Retry-After`; a deadline is 504. Their body names the dependency, never its
  address.
* Anything else is 500 with a generic message. The exception, whatever text
  it carries (SQL, parameters, paths, hosts), goes to the log with the
  request id, never to the client.
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alphaswarm_common.errors import (
    AlphaSwarmError,
    DependencyUnavailable,
    InvalidArgument,
    ResourceExhausted,
    Unauthenticated,
)

__all__ = [
    "REQUEST_ID_HEADER",
    "RETRY_AFTER_SECONDS",
    "RequestIdMiddleware",
    "document_error_responses",
    "error_body",
    "install_error_handlers",
    "request_id_of",
]

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
RETRY_AFTER_SECONDS = 5
"""What `Retry-After` asks a client to wait after a 503 (a dependency restarting or reconnecting)."""

_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
_GENERIC: dict[int, str] = {
    500: "internal error; the gateway's log has the details under this request id",
    503: "a service this request needs is unavailable; retry later",
    504: "a service this request needs did not answer in time; retry later",
}
_HTTP_CODES: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "BAD_REQUEST"),
    404: ("NOT_FOUND", "NOT_FOUND"),
    405: ("UNIMPLEMENTED", "METHOD_NOT_ALLOWED"),
    406: ("INVALID_ARGUMENT", "NOT_ACCEPTABLE"),
    413: ("RESOURCE_EXHAUSTED", "BODY_TOO_LARGE"),
    415: ("INVALID_ARGUMENT", "UNSUPPORTED_MEDIA_TYPE"),
}


def _new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(scope: Scope | Request) -> str:
    """The correlation id of a request (set by `RequestIdMiddleware`)."""
    state = (scope.scope if isinstance(scope, Request) else scope).get("state") or {}
    return str(state.get("request_id") or "")


class RequestIdMiddleware:
    """Honour or assign `X-Request-ID` and echo it on every response (pure ASGI: streams pass through)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = ""
        for key, value in scope.get("headers") or ():
            if key == b"x-request-id":
                sent = value.decode("latin-1")
                break
        request_id = sent if _VALID_ID.fullmatch(sent) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def error_body(
    code: str, reason: str, message: str, details: dict[str, Any] | None, request_id: str
) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "reason": reason,
            "message": message,
            "details": {**(details or {}), "request_id": request_id},
        }
    }


def _dependency(exc: AlphaSwarmError) -> str | None:
    """The name of the dependency a 503/504 is about ("persistence", "event bus"), never its address."""
    named = exc.details.get("dependency")
    if isinstance(named, str) and named:
        return named
    head = exc.message.split(":", 1)[0]
    for suffix in (" unavailable", " exceeded its deadline"):
        if head.endswith(suffix):
            return head.removesuffix(suffix)
    return None


def domain_error_response(request: Request, exc: AlphaSwarmError, status: int | None = None) -> JSONResponse:
    """The response of a domain error; 5xx bodies carry no text of the failure itself."""
    request_id = request_id_of(request)
    status = int(status or exc.http_status)
    if status < 500:
        body = exc.to_dict()
        client_headers: dict[str, str] = {}
        if isinstance(exc, Unauthenticated):
            client_headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", error_description="{exc.reason}"'
            )
        if isinstance(exc, ResourceExhausted):
            client_headers["Retry-After"] = str(exc.details.get("retry_after", 1))
        return JSONResponse(
            status_code=status,
            content=error_body(body["code"], body["reason"], body["message"], body["details"], request_id),
            headers=client_headers or None,
        )
    dependency = _dependency(exc) if status in (503, 504) else None
    level = logging.WARNING if status in (503, 504) else logging.ERROR
    log.log(
        level, "request %s failed with %d (%s %s): %s", request_id, status, exc.grpc_code, exc.reason, exc
    )
    details = {"dependency": dependency} if dependency else {}
    message = _GENERIC.get(status, _GENERIC[500])
    if dependency:
        message = f"{dependency}: {message}"
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    reason = exc.reason if status in (503, 504) else "INTERNAL"
    return JSONResponse(
        status_code=status,
        content=error_body(
            exc.grpc_code if status != 500 else "INTERNAL", reason, message, details, request_id
        ),
        headers=headers,
    )


def _is_event_bus_error(exc: BaseException) -> bool:
    """A NATS client error (the event bus or job queue is down or timed out)."""
    try:
        import nats.errors
    except ImportError:  # pragma: no cover - nats-py is a dependency of the gateway
        return False
    return isinstance(exc, nats.errors.Error)


def _validation_field(loc: Any) -> str:
    return ".".join(str(p) for p in loc if p not in ("query", "path", "body", "header"))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of every error the app can raise (see the module docstring)."""

    @app.exception_handler(AlphaSwarmError)
    async def _domain_error(request: Request, exc: AlphaSwarmError) -> JSONResponse:
        return domain_error_response(request, exc, exc.details.pop("status", None))

    @app.exception_handler(RequestValidationError)
    async def _request_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _validation_field(first.get("loc", ()))
        err = InvalidArgument(
            str(first.get("msg")),
            field=field or None,
            details={
                "violations": [
                    {"field": _validation_field(e.get("loc", ())), "description": str(e.get("msg"))}
                    for e in errors
                ]
            },
        )
        return domain_error_response(request, err, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, reason = _HTTP_CODES.get(exc.status_code, ("INVALID_ARGUMENT", "BAD_REQUEST"))
        if exc.status_code >= 500:
            err = AlphaSwarmError(str(exc.detail))
            return domain_error_response(request, err, exc.status_code)
        details = dict(getattr(exc, "error_details", None) or {})
        response = JSONResponse(
            status_code=exc.status_code,
            content=error_body(code, reason, str(exc.detail), details, request_id_of(request)),
        )
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # ServerErrorMiddleware answers outside the request-id middleware's send: set the header here.
        response = _unexpected_response(request, exc)
        response.headers[REQUEST_ID_HEADER] = request_id_of(request)
        return response


def _unexpected_response(request: Request, exc: Exception) -> JSONResponse:
    """The response of an exception no route turned into a domain error."""
    request_id = request_id_of(request)
    if _is_event_bus_error(exc):
        log.warning("request %s: event bus error: %r", request_id, exc)
        err = DependencyUnavailable("event bus unavailable", details={"dependency": "event bus"})
        return domain_error_response(request, err)
    if isinstance(exc, UnicodeError):  # text a proto field cannot hold, past every field check
        log.warning("request %s: %r", request_id, exc)
        return domain_error_response(
            request,
            InvalidArgument("text must be valid Unicode (no unpaired surrogates)", reason="INVALID_TEXT"),
        )
    log.error("request %s failed: unhandled %s", request_id, type(exc).__name__, exc_info=exc)
    return domain_error_response(request, AlphaSwarmError("unhandled error"), 500)


def document_error_responses(schema: dict[str, Any]) -> None:
    """Add the answers every operation may give (413 for a body, 500, 503 with Retry-After) to an
    OpenAPI document, with the error body's schema."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    content = (
        {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        if "ErrorBody" in components
        else {}
    )
    request_id = {"description": "The request's correlation id.", "schema": {"type": "string"}}
    retry_after = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
    for path, item in schema.get("paths", {}).items():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "requestBody" in operation:
                responses.setdefault(
                    "413",
                    {
                        "description": "The body is larger than ALPHASWARM_MAX_BODY_BYTES (BODY_TOO_LARGE).",
                        "content": content,
                        "headers": {REQUEST_ID_HEADER: request_id},
                    },
                )
            if path != "/healthz":
                responses.setdefault(
                    "503",
                    {
                        "description": "A service, the catalog database or the event bus is unavailable; "
                        "`details.dependency` names it.",
                        "content": content,
                        "headers": {"Retry-After": retry_after, REQUEST_ID_HEADER: request_id},
                    },
                )
            responses.setdefault(
                "500",
                {
                    "description": "An unexpected failure; the log has it under `details.request_id`.",
                    "content": content,
                    "headers": {REQUEST_ID_HEADER: request_id},
                },
            )
