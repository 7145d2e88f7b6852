"""Engine and session factory of the catalog.

`Database(url)` is the one object that owns connections; nothing connects at
import time. URLs:

* PostgreSQL: `postgresql+psycopg://user@host:port/db` (psycopg 3). Plain
  `postgresql://` and `postgres://` are rewritten to the psycopg 3 driver, the
  only one installed. Sessions run in UTC (`timezone=UTC`) under READ
  COMMITTED; connections are pre-pinged.
* SQLite: `sqlite:///path/catalog.db` (the parent folder is created) or
  `sqlite://` (in memory, one shared connection). Every connection gets
  `PRAGMA foreign_keys=ON` (ON DELETE CASCADE / SET NULL are enforced),
  `journal_mode=WAL` (readers do not block the writer), `synchronous=NORMAL`
  (the WAL recommendation: durable against process crashes, may lose the
  last commits on power loss), a busy timeout and a page cache of up to
  64 MiB (grown on demand; the 2 MiB default makes index maintenance of a
  million-row audit write several times slower). SQLAlchemy emits `BEGIN`
  itself instead of the sqlite3 module: write sessions (`session(write=True)`)
  start with `BEGIN IMMEDIATE`, taking the write lock up front so that two
  writers queue on the busy timeout instead of failing with "database is
  locked" when a read lock cannot be upgraded; read sessions use a deferred
  `BEGIN`.

A database that cannot be reached (refused or dropped connections, a server
shutting down: SQLAlchemy's OperationalError / InterfaceError) surfaces from
`session()` as `DependencyUnavailable` (gRPC UNAVAILABLE, HTTP 503) with a
message that names no host, query or parameter; the original goes to the log
under an error id that the message quotes. `ping()` runs `SELECT 1` for the
service's health check.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from alphaswarm_common.errors import DependencyUnavailable

__all__ = ["Database", "create_engine", "database_unavailable", "normalize_url", "write_engine"]

log = logging.getLogger(__name__)
_PG_CONNECT_TIMEOUT_S = 10

_SQLITE_BUSY_TIMEOUT_S = 30.0
_SQLITE_CACHE_KIB = 64 * 1024
_BEGIN_OPTION = "alphaswarm_sqlite_begin"


def normalize_url(url: str | URL) -> URL:
    """Parse a URL and pin PostgreSQL to the psycopg 3 driver."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _is_memory_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_engine(
    url: str | URL, *, echo: bool = False, pool_size: int = 5, max_overflow: int = 10
) -> Engine:
    """An engine for `url` with the catalog's connection settings (see the module docstring)."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs: dict[str, Any] = {
            "connect_args": {"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_S},
        }
        if _is_memory_sqlite(parsed):
            kwargs["poolclass"] = StaticPool
        else:
            Path(str(parsed.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, echo=echo, **kwargs)
        _install_sqlite_hooks(engine, wal=not _is_memory_sqlite(parsed))
        return engine
    if backend == "postgresql":
        return sa.create_engine(
            parsed,
            echo=echo,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=max_overflow,
            connect_args={
                "options": "-c timezone=UTC",
                "application_name": "alphaswarm-persistence",
                "connect_timeout": _PG_CONNECT_TIMEOUT_S,
            },
        )
    return sa.create_engine(parsed, echo=echo)


def _install_sqlite_hooks(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cursor.execute(f"PRAGMA cache_size=-{_SQLITE_CACHE_KIB}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def write_engine(engine: Engine) -> Engine:
    """`engine` whose transactions take SQLite's write lock at BEGIN (`BEGIN IMMEDIATE`); other databases unchanged."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


class Database:
    """The catalog's engine with a read and a write session factory.

    `session()` / `session(write=True)` are transactional scopes: commit on
    success, rollback on any exception. Objects stay loaded after commit
    (`expire_on_commit=False`).
    """

    def __init__(
        self, url: str | URL | None = None, *, engine: Engine | None = None, echo: bool = False
    ) -> None:
        if engine is None:
            if url is None:
                raise ValueError("Database needs a url or an engine")
            engine = create_engine(url, echo=echo)
        self.engine = engine
        self.dialect = engine.dialect.name
        writer = write_engine(engine)
        self._read = sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
        self._write = sessionmaker(bind=writer, expire_on_commit=False, autoflush=False)

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        factory = self._write if write else self._read
        try:
            with factory() as session, session.begin():
                yield session
        except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            raise database_unavailable(exc) from None

    def ping(self) -> bool:
        """Whether the database answers `SELECT 1` now (the persistence service's health)."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa_exc.SQLAlchemyError as exc:
            log.warning("catalog database health check failed: %s", type(exc).__name__)
            return False
        return True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"


def database_unavailable(exc: BaseException) -> DependencyUnavailable:
    """The domain error of a database that cannot be reached; the details go to the log only."""
    error_id = uuid.uuid4().hex[:12]
    log.warning("catalog database unavailable (error id %s): %s", error_id, exc)
    return DependencyUnavailable(
        f"catalog database unavailable (error id {error_id})",
        reason="DATABASE_UNAVAILABLE",
        details={"dependency": "database", "error_id": error_id},
    )
