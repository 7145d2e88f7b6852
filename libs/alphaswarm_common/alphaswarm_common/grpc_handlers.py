"""Wrap the behaviour of a gRPC method handler, whatever its arity (server interceptors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["rewrap"]


def rewrap(handler: Any, unary: Callable[[Any], Any], streaming: Callable[[Any], Any]) -> Any:
    """`handler` with its behaviour wrapped by `unary` (one response) or `streaming` (a response stream)."""
    if handler.unary_unary:
        return handler._replace(unary_unary=unary(handler.unary_unary))
    if handler.unary_stream:
        return handler._replace(unary_stream=streaming(handler.unary_stream))
    if handler.stream_unary:
        return handler._replace(stream_unary=unary(handler.stream_unary))
    if handler.stream_stream:
        return handler._replace(stream_stream=streaming(handler.stream_stream))
    return handler
