"""Alembic environment of the AlphaSwarm catalog: one history for PostgreSQL and SQLite.

The database URL comes from, in order: `alembic -x url=...`, the environment
variable `ALPHASWARM_DATABASE_URL`, then `sqlalchemy.url` of alembic.ini
(`sqlite:///./.alphaswarm/catalog.db`). `alphaswarm_persistence.migrations`
passes its URL the same way (`-x url=`), and also sets the config attribute
`configure_logger=False` so that a service running its migrations at start
keeps its own logging setup.

`target_metadata` is the catalog models' metadata, so
`alembic revision --autogenerate` diffs the models against the database, with
types and server defaults compared. The models' `UTCDateTime` decorator is
rendered as its impl, `sa.DateTime(timezone=True)`, so generated revisions
import nothing from the application.

PostgreSQL: the upgrade runs in one transaction holding an advisory lock, so
several processes migrating the same database at once apply each revision once.

SQLite specifics:

* `render_as_batch=True`: ALTERs are rendered as batch (copy-and-move)
  operations, the only way SQLite can change most of a table.
* The whole upgrade runs in one `BEGIN IMMEDIATE` transaction (SQLite has
  transactional DDL once SQLAlchemy, not the sqlite3 module, emits BEGIN; see
  `alphaswarm_persistence.db`), so concurrent migrators queue on the lock.
* Foreign keys are switched off for the duration (a batch "move" drops the old
  table, which with `foreign_keys=ON` would cascade deletes into child
  tables) and `PRAGMA foreign_key_check` must come back empty before the
  transaction commits.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext

from alembic import context
from alphaswarm_persistence.db import create_engine, normalize_url, write_engine
from alphaswarm_persistence.models import Base, UTCDateTime

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata

# pg_advisory_xact_lock key of the migration (any constant unique to this application).
_MIGRATION_LOCK_KEY = 0x616C7068  # "alph"


def _database_url() -> str:
    x_args = context.get_x_argument(as_dictionary=True)
    url = (
        x_args.get("url")
        or os.environ.get("ALPHASWARM_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise RuntimeError("no database URL: pass -x url=..., set ALPHASWARM_DATABASE_URL or sqlalchemy.url")
    return normalize_url(url).render_as_string(hide_password=False)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure_kwargs(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "render_as_batch": dialect_name == "sqlite",
        "compare_type": True,
        "compare_server_default": True,
        "render_item": _render_item,
        "transactional_ddl": True,
    }


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (`alembic upgrade head --sql`)."""
    url = _database_url()
    dialect_name = sa.engine.make_url(url).get_backend_name()
    context.configure(
        url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **_configure_kwargs(dialect_name)
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against the database, in one transaction."""
    engine = create_engine(_database_url())
    try:
        with write_engine(engine).connect() as connection:
            is_sqlite = connection.dialect.name == "sqlite"
            raw: Any = connection.connection.driver_connection
            if is_sqlite:
                # Outside any transaction: PRAGMA foreign_keys is a no-op inside one.
                raw.execute("PRAGMA foreign_keys=OFF")
            try:
                context.configure(connection=connection, **_configure_kwargs(connection.dialect.name))
                with context.begin_transaction():
                    if connection.dialect.name == "postgresql":
                        # One migrator at a time: replicas starting together queue here, and the
                        # later ones find the schema at head (the version is read after the lock).
                        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
                    context.run_migrations()
                    if is_sqlite:
                        violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                        if violations:
                            raise RuntimeError(f"foreign key violations after migrating: {violations[:10]}")
            finally:
                if is_sqlite:
                    raw.execute("PRAGMA foreign_keys=ON")
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
