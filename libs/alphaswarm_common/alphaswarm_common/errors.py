"""Domain errors that carry their own gRPC status and HTTP code.

Every layer raises these; one gRPC interceptor (`alphaswarm_common.grpc_server`)
and one FastAPI exception handler (the gateway) turn them into status codes
and a body `{"error": {"code", "reason", "message", "details"}}`. A client
(`alphaswarm_common.grpc_client`) turns a gRPC status back into the same class,
so an error keeps its meaning across every hop of the saga.

This module imports nothing but the standard library, so pure code may raise
these errors without depending on gRPC.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "Aborted",
    "AlphaSwarmError",
    "AlreadyExists",
    "DataError",
    "DependencyUnavailable",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Timeout",
    "Unauthenticated",
    "error_from_code",
]


class AlphaSwarmError(Exception):
    """Base of every error AlphaSwarm reports to a caller.

    `reason` is a stable UPPER_SNAKE identifier (google.rpc.ErrorInfo.reason);
    `field` names the offending input field with its dotted path, when there is one.
    """

    grpc_code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500
    default_reason: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.default_reason
        self.details = dict(details or {})

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.field:
            details.setdefault("field", self.field)
        return {
            "code": self.grpc_code,
            "reason": self.reason,
            "message": str(self),
            "details": details,
        }


class InvalidArgument(AlphaSwarmError):
    grpc_code = "INVALID_ARGUMENT"
    http_status = 400
    default_reason = "INVALID_ARGUMENT"


class DataError(InvalidArgument):
    """The data a config points at cannot be used (unsorted dates, bad prices, unknown symbols...)."""

    default_reason = "INVALID_DATA"


class NotFound(AlphaSwarmError):
    grpc_code = "NOT_FOUND"
    http_status = 404
    default_reason = "NOT_FOUND"


class AlreadyExists(AlphaSwarmError):
    grpc_code = "ALREADY_EXISTS"
    http_status = 409
    default_reason = "ALREADY_EXISTS"


class Aborted(AlphaSwarmError):
    """A compare-and-set lost to a concurrent writer: read again and retry."""

    grpc_code = "ABORTED"
    http_status = 409
    default_reason = "ABORTED"


class FailedPrecondition(AlphaSwarmError):
    grpc_code = "FAILED_PRECONDITION"
    http_status = 409
    default_reason = "FAILED_PRECONDITION"


class Unauthenticated(AlphaSwarmError):
    grpc_code = "UNAUTHENTICATED"
    http_status = 401
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(AlphaSwarmError):
    grpc_code = "PERMISSION_DENIED"
    http_status = 403
    default_reason = "PERMISSION_DENIED"


class ResourceExhausted(AlphaSwarmError):
    """A limit was reached; `details["retry_after"]` says when to try again, in seconds."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429
    default_reason = "RATE_LIMITED"


class DependencyUnavailable(AlphaSwarmError):
    grpc_code = "UNAVAILABLE"
    http_status = 503
    default_reason = "DEPENDENCY_UNAVAILABLE"


class RequestTooLarge(AlphaSwarmError):
    """A request over its size limit (a REST body, or a gRPC message over its method's limit)."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413
    default_reason = "REQUEST_TOO_LARGE"


class Timeout(AlphaSwarmError):
    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504
    default_reason = "TIMEOUT"


_BY_CODE: dict[str, type[AlphaSwarmError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Aborted,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        DependencyUnavailable,
        RequestTooLarge,
        Timeout,
    )
}


def error_from_code(code: str, message: str, **kwargs: Any) -> AlphaSwarmError:
    """The domain error for a gRPC status code name (`INVALID_ARGUMENT`, ...)."""
    if code == "RESOURCE_EXHAUSTED" and kwargs.get("reason") in ("RATE_LIMITED", "TOO_MANY_ACTIVE_RUNS"):
        return ResourceExhausted(message, **kwargs)
    return _BY_CODE.get(code, AlphaSwarmError)(message, **kwargs)
