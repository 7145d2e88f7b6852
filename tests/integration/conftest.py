"""Fixtures of the integration layer: a real PostgreSQL server.

The admin URL comes from `ALPHASWARM_TEST_PG_URL` (default
`postgresql+psycopg://postgres@127.0.0.1:5432/postgres`). Tests never touch
existing databases: `pg_database_factory()` creates a fresh database named
`alphaswarm_test_<session>_<n>` and every database it created is dropped when
the session ends. When the server is unreachable the PostgreSQL tests are
skipped, or fail when `CI=true` (a CI run must not pass by skipping).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string (for psycopg directly)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The admin URL of a reachable PostgreSQL server (skip, or fail under CI, when there is none)."""
    url = os.environ.get("ALPHASWARM_TEST_PG_URL", DEFAULT_PG_ADMIN_URL)
    try:
        psycopg.connect(_libpq(url), connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {make_url(url).render_as_string(hide_password=True)}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(scope="session")
def pg_database_factory(pg_admin_url: str) -> Iterator[Callable[[], str]]:
    """`make() -> url` of a new empty database; all of them are dropped at the end of the session."""
    session_tag = uuid.uuid4().hex[:8]
    created: list[str] = []

    def make() -> str:
        name = f"alphaswarm_test_{session_tag}_{len(created)}"
        with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return (
            make_url(pg_admin_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )

    yield make
    with psycopg.connect(_libpq(pg_admin_url), autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
