"""A new SQLite MLflow store starts as a copy of the installed MLflow's migrated empty schema
(`tracking.schema_template`) instead of running MLflow's whole migration history: the copy has
the same tables, indexes and Alembic revision as a store MLflow migrates itself, an existing
store is never overwritten, and a template MLflow refuses is dropped and the store migrated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alphaswarm_common import tracking
from alphaswarm_common.tracking import Tracker, schema_template, seed_sqlite_store

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def _schema(db: Path) -> tuple[list[tuple[str, str, str, list[str]]], list[tuple[str]]]:
    """Every table and index with its definition; the clauses of a definition as a sorted list
    (MLflow's own migrations write a table's named CHECK constraints in a varying order)."""
    with sqlite3.connect(db) as conn:
        rows = sorted(
            (kind, name, table, sorted(line.strip().rstrip(",") for line in sql.splitlines()))
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master"
            )
        )
        revision = list(conn.execute("SELECT version_num FROM alembic_version"))
    return rows, revision


def test_a_seeded_store_has_the_schema_mlflow_migrates_to(tmp_path: Path, own_cache: Path) -> None:
    import mlflow
    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    migrated = tmp_path / "migrated.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{migrated}")
    _initialize_tables(engine)
    engine.dispose()

    template = schema_template()
    assert template == own_cache / "alphaswarm" / f"mlflow-{mlflow.__version__}-schema.db"
    seeded = tmp_path / "home" / "mlflow.db"
    seeded.parent.mkdir()
    assert seed_sqlite_store(seeded) == template
    assert _schema(seeded) == _schema(migrated)
    assert _schema(seeded)[1], "the copy carries MLflow's Alembic revision"

    tracker = Tracker(f"sqlite:///{seeded}", artifact_root=(tmp_path / "art").as_uri())
    run_id = tracker.client.create_run(tracker.ensure_experiment("seeded")).info.run_id
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
    assert [e.name for e in tracker.client.search_experiments(order_by=["name"])] == ["Default", "seeded"]


def test_an_existing_store_is_never_replaced(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not empty")
    assert seed_sqlite_store(db) is None
    assert db.read_bytes() == b"not empty"


def test_the_template_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = schema_template()
    assert first is not None
    stamp = first.stat().st_mtime_ns

    def never(*_: object) -> None:
        raise AssertionError("the template was rebuilt")

    monkeypatch.setattr("mlflow.store.db.utils._initialize_tables", never)
    assert schema_template() == first
    assert first.stat().st_mtime_ns == stamp


def test_an_unwritable_cache_leaves_the_store_to_mlflow(tmp_path: Path, own_cache: Path) -> None:
    own_cache.write_text("a file where the cache folder should be")
    assert schema_template() is None
    db = tmp_path / "mlflow.db"
    assert seed_sqlite_store(db) is None
    tracker = Tracker(f"sqlite:///{db}", artifact_root=(tmp_path / "art").as_uri())
    assert [e.name for e in tracker.client.search_experiments()] == ["Default"]


def test_a_template_mlflow_refuses_is_dropped_and_the_store_migrated(tmp_path: Path) -> None:
    template = schema_template()
    assert template is not None
    with sqlite3.connect(template) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'not-a-revision'")
    db = tmp_path / "home" / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", artifact_root=(tmp_path / "art").as_uri())
    assert [e.name for e in tracker.client.search_experiments()] == ["Default"]
    assert not template.exists()
    assert _schema(db)[1] != [("not-a-revision",)]
    assert tracking.schema_template() is not None  # rebuilt on the next new store
