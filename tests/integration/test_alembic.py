"""The one Alembic history on SQLite and PostgreSQL.

* upgrade head -> downgrade base -> upgrade head works on both, and base
  leaves no catalog table behind;
* autogenerate finds no difference between the migrated database and the
  models (types and server defaults compared), and does find one when the
  models change (so the check can fail);
* the seed tables keep the seed's defaults, cascades and index names (plus the indexes
  later revisions add, `ADDED_INDEXES`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import create_engine
from alphaswarm_persistence.models import Base

pytestmark = pytest.mark.integration

CATALOG_TABLES = {
    "mcp_backtest_results",
    "mcp_backtest_trades",
    "mcp_optimization_results",
    "mcp_walk_forward_tests",
    "mcp_backtest_portfolios",
    "tasks",
    "deployments",
    "ml_alpha_backtest_runs",
    "ml_prediction_audit",
    "catalog_request_keys",
    "catalog_trade_details",
}
SEED_INDEXES = {
    "mcp_backtest_results": {
        "mcp_backtest_results_symbol_idx",
        "mcp_backtest_results_strategy_idx",
        "mcp_backtest_results_date_idx",
        "mcp_backtest_results_sharpe_idx",
        "mcp_backtest_results_total_return_idx",
        "mcp_backtest_results_symbol_strategy_idx",
    },
    "mcp_backtest_trades": {
        "mcp_backtest_trades_backtest_idx",
        "mcp_backtest_trades_entry_date_idx",
        "mcp_backtest_trades_exit_date_idx",
        "mcp_backtest_trades_pnl_idx",
        "mcp_backtest_trades_backtest_entry_idx",
    },
    "mcp_optimization_results": {
        "mcp_optimization_results_backtest_idx",
        "mcp_optimization_results_param_set_idx",
        "mcp_optimization_results_objective_idx",
    },
    "mcp_walk_forward_tests": {
        "mcp_walk_forward_tests_parent_idx",
        "mcp_walk_forward_tests_period_idx",
        "mcp_walk_forward_tests_performance_idx",
    },
    "mcp_backtest_portfolios": {
        "mcp_backtest_portfolios_name_idx",
        "mcp_backtest_portfolios_date_idx",
        "mcp_backtest_portfolios_return_idx",
    },
}
# Indexes later revisions add to the seed tables (the seed's own names stay as they are).
ADDED_INDEXES = {
    "mcp_backtest_trades": {"mcp_backtest_trades_keyset_idx"},  # 0010_trades_keyset_index
    "mcp_backtest_results": {"mcp_backtest_results_dataset_idx"},  # 0011_backtest_fingerprint
}


def _index_names(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        return {str(i["name"]) for i in sa.inspect(engine).get_indexes(table)}
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return factory()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _diff(url: str, metadata: sa.MetaData) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True, "target_metadata": metadata}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_url: str) -> None:
    head = migrations.head_revision()
    assert head is not None and len(head) <= 32
    migrations.upgrade(empty_url)
    assert migrations.current_revision(empty_url) == head
    assert _tables(empty_url) >= CATALOG_TABLES
    migrations.downgrade(empty_url, "base")
    assert migrations.current_revision(empty_url) is None
    assert _tables(empty_url) & CATALOG_TABLES == set()
    migrations.upgrade(empty_url)
    assert migrations.current_revision(empty_url) == head
    assert _tables(empty_url) >= CATALOG_TABLES


def test_step_by_step_history(empty_url: str) -> None:
    migrations.upgrade(empty_url, "0001_backtest_persistence")
    assert _tables(empty_url) & CATALOG_TABLES == set(SEED_INDEXES)
    for table, names in SEED_INDEXES.items():
        assert _index_names(empty_url, table) == names
    migrations.upgrade(empty_url, "head")
    migrations.downgrade(empty_url, "0001_backtest_persistence")
    assert _tables(empty_url) & CATALOG_TABLES == set(SEED_INDEXES)
    for table, names in SEED_INDEXES.items():  # the later indexes leave with their revisions
        assert _index_names(empty_url, table) == names


def test_autogenerate_finds_no_difference(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    assert _diff(empty_url, Base.metadata) == []


def test_autogenerate_detects_a_model_change(empty_url: str) -> None:
    """The comparison is able to fail: a changed type, default and a missing index all show up."""
    migrations.upgrade(empty_url)
    changed = sa.MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    results = changed.tables["mcp_backtest_results"]
    results.c.symbol.type = sa.String(length=12)
    results.c.status.server_default = sa.DefaultClause("done")
    index = next(i for i in results.indexes if i.name == "mcp_backtest_results_sharpe_idx")
    results.indexes.discard(index)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _diff(empty_url, changed)}
    assert {"modify_type", "modify_default", "remove_index"} <= kinds


def test_seed_tables_keep_defaults_cascades_and_index_names(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    engine = create_engine(empty_url)
    try:
        inspector = sa.inspect(engine)
        for table, names in SEED_INDEXES.items():
            assert {i["name"] for i in inspector.get_indexes(table)} == names | ADDED_INDEXES.get(
                table, set()
            )
        for table in ("mcp_backtest_trades", "mcp_optimization_results", "mcp_walk_forward_tests"):
            (fk,) = inspector.get_foreign_keys(table)
            assert fk["referred_table"] == "mcp_backtest_results"
            assert fk["options"].get("ondelete", "").upper() == "CASCADE"
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO mcp_backtest_results (backtest_id, symbol, strategy_type, backtest_date, start_date, "
                    "end_date, created_at, updated_at) VALUES (:id, 'A', 's', :ts, :d, :d, :ts, :ts)"
                ),
                {
                    "id": "00000000000000000000000000000001"
                    if engine.dialect.name == "sqlite"
                    else "00000000-0000-0000-0000-000000000001",
                    "ts": "2024-01-01 00:00:00",
                    "d": "2024-01-01",
                },
            )
            conn.execute(
                sa.text(
                    "INSERT INTO mcp_optimization_results (optimization_id, backtest_id, optimization_date, parameter_set, "
                    "parameters, created_at, updated_at) SELECT backtest_id, backtest_id, created_at, 1, '{}', created_at, "
                    "created_at FROM mcp_backtest_results"
                )
            )
            row = conn.execute(
                sa.text(
                    "SELECT initial_capital, fees, slippage, status, total_trades FROM mcp_backtest_results"
                )
            ).one()
            flag = conn.execute(
                sa.text("SELECT is_statistically_significant FROM mcp_optimization_results")
            ).scalar_one()
        assert (float(row.initial_capital), float(row.fees), float(row.slippage)) == (10000.0, 0.001, 0.001)
        assert (row.status, row.total_trades) == ("completed", 0)
        assert (
            not flag
        )  # sa.false(): false on PostgreSQL, 0 on SQLite (the string "false" would read back true there)
    finally:
        engine.dispose()


def _migrate_in_process(url: str, barrier: Any) -> None:
    barrier.wait(timeout=120)
    migrations.upgrade(url)


def test_concurrent_migrators_apply_each_revision_once(empty_url: str) -> None:
    """Replicas starting together all migrate: they queue in the database (advisory lock / BEGIN IMMEDIATE)."""
    import multiprocessing as mp
    import threading

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=_migrate_in_process, args=(empty_url, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert migrations.current_revision(empty_url) == migrations.head_revision()
    assert _diff(empty_url, Base.metadata) == []

    # Threads of one process take turns (Alembic's context is process-global).
    errors: list[BaseException] = []

    def downgrade_then_upgrade() -> None:
        try:
            migrations.downgrade(empty_url, "base")
            migrations.upgrade(empty_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=downgrade_then_upgrade) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert migrations.current_revision(empty_url) == migrations.head_revision()
