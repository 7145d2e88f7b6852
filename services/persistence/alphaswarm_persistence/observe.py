"""What the catalog tells Prometheus, and its SQL spans.

`observe(db)` counts every row a write session inserts, updates or deletes
(`alphaswarm_catalog_writes_total{table, op}`, from SQLAlchemy's `after_flush`), registers
the catalog as the source of `alphaswarm_runs{state}` and `alphaswarm_tasks{kind, state}`
(counted on scrape, at most once every `ttl` seconds), and, when tracing is on, adds a CLIENT
span for every SQL statement (`SELECT ml_alpha_backtest_runs`, with `db.system.name` and the
statement text, never its parameters) from the engine's cursor events. (The OpenTelemetry
SQLAlchemy instrumentation declares SQLAlchemy < 2.1 and needs greenlet; these hooks are the
part of it the catalog uses.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from alphaswarm_common import service_metrics, telemetry
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import AlphaBacktestRunRow, TaskRow

__all__ = ["CatalogCounts", "observe"]


def _count_flush(session: Session, _flush_context: Any) -> None:
    for op, objects in (("insert", session.new), ("update", session.dirty), ("delete", session.deleted)):
        by_table: dict[str, int] = {}
        for obj in objects:
            if op == "update" and not session.is_modified(obj, include_collections=False):
                continue
            table = getattr(type(obj), "__tablename__", type(obj).__name__)
            by_table[table] = by_table.get(table, 0) + 1
        for table, n in by_table.items():
            service_metrics.count_catalog_write(table, op, n)


class CatalogCounts:
    """Runs by state and tasks by (kind, state), read from the catalog; a reading is reused for
    `ttl` seconds unless the catalog was written since (several scrapers cost one query)."""

    def __init__(self, db: Database, *, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._written = False
        self._lock = threading.Lock()

    def written(self) -> None:
        self._written = True

    def state_counts(self) -> dict[str, Any]:
        with self._lock:
            if (
                self._cached is not None
                and not self._written
                and time.monotonic() - self._cached[0] < self.ttl
            ):
                return self._cached[1]
            self._written = False
            with self.db.session() as s:
                runs = {
                    str(state): int(n)
                    for state, n in s.execute(
                        sa.select(AlphaBacktestRunRow.state, sa.func.count()).group_by(
                            AlphaBacktestRunRow.state
                        )
                    )
                }
                tasks = {
                    (str(kind), str(state)): int(n)
                    for kind, state, n in s.execute(
                        sa.select(TaskRow.kind, TaskRow.state, sa.func.count()).group_by(
                            TaskRow.kind, TaskRow.state
                        )
                    )
                }
            counts = {"runs": runs, "tasks": tasks}
            self._cached = (time.monotonic(), counts)
            return counts


_SPAN_KEY = "alphaswarm_span"


def _span_name(statement: str) -> str:
    words = statement.split()
    if not words:
        return "SQL"
    verb = words[0].upper()
    target = ""
    for marker in ("FROM", "INTO", "UPDATE", "TABLE"):
        upper = [w.upper() for w in words[:40]]
        if marker in upper and upper.index(marker) + 1 < len(words):
            target = words[upper.index(marker) + 1].strip('"();')
            break
    return f"{verb} {target}".strip()


def _trace_sql(engine: sa.Engine) -> None:
    """A CLIENT span per statement while tracing is on (the hooks are free when it is off)."""
    system = engine.dialect.name

    def before(conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, _many: bool) -> None:
        tracer = telemetry.tracer()
        if tracer is None or context is None:
            return
        span = tracer.start_span(
            _span_name(statement),
            kind=telemetry.SpanKind.CLIENT,
            attributes={"db.system.name": system, "db.system": system, "db.query.text": statement[:2000]},
        )
        setattr(context, _SPAN_KEY, span)

    def after(conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, _many: bool) -> None:
        span = getattr(context, _SPAN_KEY, None)
        if span is not None:
            span.end()
            setattr(context, _SPAN_KEY, None)

    def failed(exception_context: Any) -> None:
        context = exception_context.execution_context
        span = getattr(context, _SPAN_KEY, None) if context is not None else None
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, type(exception_context.original_exception).__name__))
            span.end()
            setattr(context, _SPAN_KEY, None)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "handle_error", failed)


def observe(db: Database) -> CatalogCounts:
    counts = CatalogCounts(db)

    def flushed(session: Session, flush_context: Any) -> None:
        _count_flush(session, flush_context)
        counts.written()

    for factory in (db._read, db._write):  # this catalog's sessions only (not MLflow's SQL store)
        event.listen(factory, "after_flush", flushed)
    if telemetry.enabled():
        _trace_sql(db.engine)
    service_metrics.add_catalog_source(counts)
    return counts
