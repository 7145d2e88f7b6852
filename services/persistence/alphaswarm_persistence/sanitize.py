"""No database text in the persistence service's errors.

An exception that is not a domain error (a SQLAlchemy ProgrammingError,
DataError, a driver error...) carries the SQL statement, its parameters and
sometimes the server's host in its message. `sanitize_errors(servicer)` wraps
every RPC of the servicer so such an exception is logged in full under a new
error id and answered as INTERNAL with only "internal error (error id ...)".
Domain errors (`AlphaSwarmError`) pass through unchanged: their messages are
written for the caller.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import AlphaSwarmError

__all__ = ["internal_error", "sanitize_errors"]

log = logging.getLogger(__name__)
_METHODS = tuple(pb.DESCRIPTOR.services_by_name["PersistenceService"].methods_by_name)


def internal_error(method: str, exc: BaseException) -> AlphaSwarmError:
    """Log `exc` under a new error id; the INTERNAL domain error that names only that id."""
    error_id = uuid.uuid4().hex[:12]
    log.error("%s failed (error id %s)", method, error_id, exc_info=exc)
    return AlphaSwarmError(f"internal error (error id {error_id})", details={"error_id": error_id})


def _wrap(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(behavior)
    def wrapper(request: Any, context: Any) -> Any:
        try:
            return behavior(request, context)
        except AlphaSwarmError:
            raise
        except Exception as exc:
            raise internal_error(method, exc) from None

    return wrapper


def sanitize_errors(servicer: Any) -> Any:
    """Wrap every PersistenceService RPC of `servicer` (in place); returns it."""
    for method in _METHODS:
        behavior = getattr(servicer, method, None)
        if behavior is not None:
            setattr(servicer, method, _wrap(method, behavior))
    return servicer
