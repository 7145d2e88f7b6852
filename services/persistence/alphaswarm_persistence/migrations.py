"""Programmatic Alembic over the project's `alembic.ini` and `alembic/` folder.

Embedded mode calls `upgrade(url)` when the persistence service starts; the
CLI and operators use the same history through `alembic -x url=... upgrade head`.
The URL reaches `alembic/env.py` as `-x url=...`, exactly as on the command
line, so both paths run the same code. The caller's logging setup is left
alone (env.py skips `fileConfig`).

The project root is found from this file (`<root>/services/persistence/
alphaswarm_persistence/migrations.py`); a caller running an installed copy
passes `ini_path=`.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from alembic import command
from alphaswarm_persistence.db import create_engine, normalize_url

__all__ = ["alembic_config", "current_revision", "default_ini_path", "downgrade", "head_revision", "upgrade"]


# Alembic keeps the running environment in module globals (`alembic.context`): one command at a time per process.
# Several processes are fine: env.py serialises them in the database (advisory lock / BEGIN IMMEDIATE).
_ALEMBIC_LOCK = threading.Lock()


def default_ini_path() -> Path:
    """`alembic.ini`: the copy shipped inside an installed wheel, else the one at the project root."""
    packaged = Path(__file__).resolve().parent / "_migrations" / "alembic.ini"
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parents[3] / "alembic.ini"


def _url_string(url: str | URL) -> str:
    return normalize_url(url).render_as_string(hide_password=False)


def alembic_config(url: str | URL, *, ini_path: str | Path | None = None) -> Config:
    """The Alembic config of the project with `-x url=<url>` set."""
    path = Path(ini_path) if ini_path is not None else default_ini_path()
    if not path.is_file():
        raise FileNotFoundError(f"alembic.ini not found at {path}; pass ini_path=")
    cfg = Config(str(path))
    cfg.cmd_opts = argparse.Namespace(x=[f"url={_url_string(url)}"])
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str | URL, revision: str = "head", *, ini_path: str | Path | None = None) -> None:
    """Migrate the database at `url` up to `revision` (default: the head)."""
    cfg = alembic_config(url, ini_path=ini_path)
    with _ALEMBIC_LOCK:
        command.upgrade(cfg, revision)


def downgrade(url: str | URL, revision: str, *, ini_path: str | Path | None = None) -> None:
    """Migrate the database at `url` down to `revision` (`"base"` drops every table)."""
    cfg = alembic_config(url, ini_path=ini_path)
    with _ALEMBIC_LOCK:
        command.downgrade(cfg, revision)


def head_revision(*, ini_path: str | Path | None = None) -> str | None:
    """The head revision of the history."""
    cfg = Config(str(Path(ini_path) if ini_path is not None else default_ini_path()))
    return ScriptDirectory.from_config(cfg).get_current_head()


def current_revision(url: str | URL) -> str | None:
    """The revision the database at `url` is at (None when unversioned)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
