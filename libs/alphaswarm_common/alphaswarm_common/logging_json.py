"""Structured logs: one JSON object a line, carrying the run, task, trace, service and stage.

`bind(run_id=..., task_id=..., stage=...)` sets the fields for the code it wraps (a
contextvar: asyncio tasks and `asyncio.to_thread` inherit it, a gRPC server thread gets
it from the call's metadata through `telemetry`); `JsonFormatter` writes every record
as `{"ts", "level", "logger", "message", "service", "run_id", "task_id", "stage",
"trace_id", "span_id", ...}` with the exception's traceback under `exc_info`.
`configure(fmt="json"|"text", service=...)` installs it on the root logger; `text` keeps
the human-readable line (the CLI's default) with the same fields appended.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "bound",
    "configure",
    "current",
    "pop",
    "push",
    "set_service",
]

# The fields a record carries from the context (empty ones are left out of the line).
FIELDS = ("service", "run_id", "task_id", "stage")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_fields: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "alphaswarm_log_fields", default=_EMPTY
)
_process_service = "alphaswarm"

# Attributes every LogRecord has; anything else passed through `extra=` goes into the line.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys() | {"message", "asctime", "taskName"}
)


def set_service(name: str) -> None:
    """The service name of lines logged outside any call (the process's own)."""
    global _process_service
    _process_service = name


def current() -> Mapping[str, str]:
    """The fields bound in this context, as they are (no copy, no default service)."""
    return _fields.get()


def bound() -> dict[str, str]:
    """The fields bound in this context (service defaults to the process's)."""
    values = dict(_fields.get())
    values.setdefault("service", _process_service)
    return values


def push(**fields: str | None) -> contextvars.Token[Mapping[str, str]]:
    """Bind `fields` until `pop(token)` (for code that cannot use `bind` as a block)."""
    return _fields.set({**_fields.get(), **{k: str(v) for k, v in fields.items() if v}})


def pop(token: contextvars.Token[Mapping[str, str]]) -> None:
    _fields.reset(token)


@contextlib.contextmanager
def bind(**fields: str | None) -> Iterator[None]:
    """Add `fields` (run_id, task_id, stage, service) to every line logged inside the block."""
    update = {k: str(v) for k, v in fields.items() if v}
    if not update:
        yield
        return
    token = _fields.set({**_fields.get(), **update})
    try:
        yield
    finally:
        _fields.reset(token)


def _trace_ids() -> tuple[str, str]:
    from alphaswarm_common.telemetry import current_ids

    return current_ids()


def _context(record: logging.LogRecord) -> dict[str, Any]:
    values: dict[str, Any] = bound()
    trace_id, span_id = _trace_ids()
    if trace_id:
        values["trace_id"] = trace_id
        values["span_id"] = span_id
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            values[key] = value
    return values


class JsonFormatter(logging.Formatter):
    """A record as one JSON line with the context's fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        doc.update(_context(record))
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human-readable line, with the context's ids appended (`run_id=... trace_id=...`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in _context(record).items() if k not in ("service", "span_id")}
        if not extra:
            return line
        head, sep, tail = line.partition("\n")
        return head + " [" + " ".join(f"{k}={v}" for k, v in extra.items()) + "]" + sep + tail


def configure(fmt: str = "json", *, service: str | None = None, level: int = logging.INFO) -> None:
    """Install the JSON (or text) formatter on the root logger's one stderr handler."""
    if service:
        set_service(service)
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_alphaswarm", False)), None)
    if handler is None:
        for old in list(root.handlers):
            if isinstance(old, logging.StreamHandler) and getattr(old, "stream", None) in (
                sys.stderr,
                sys.stdout,
            ):
                root.removeHandler(old)
        handler = logging.StreamHandler(sys.stderr)
        handler._alphaswarm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
