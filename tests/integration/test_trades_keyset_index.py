"""`ListBacktestTrades` pages are served by `mcp_backtest_trades_keyset_idx` on PostgreSQL.

The statements the repository really runs for a first and a later page
(captured from the engine) are EXPLAINed on a catalog holding 40,000
trades of one backtest among 120,000, analysed: the plan must read the
keyset index, start a later page at its cursor (an index condition on
`trade_number`, not a filter over the rows before it) and sort nothing.
Without the index (dropped inside a rolled-back transaction) the same
statement needs a sort: the check can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.repository import CatalogRepository

pytestmark = pytest.mark.integration

INDEX = "mcp_backtest_trades_keyset_idx"
TRADES_PER_BACKTEST = 40_000


@pytest.fixture(scope="module")
def catalog(pg_database_factory: Callable[[], str]) -> Iterator[tuple[Database, uuid.UUID]]:
    url = pg_database_factory()
    migrations.upgrade(url)
    db = Database(url)
    ids = [uuid.uuid4() for _ in range(3)]
    with db.engine.begin() as conn:
        for bid in ids:
            conn.execute(
                sa.text(
                    "INSERT INTO mcp_backtest_results (backtest_id, symbol, strategy_type, backtest_date, "
                    "start_date, end_date, created_at, updated_at) "
                    "VALUES (:id, 'PORTFOLIO', 'sma_cross', now(), '2024-01-01', '2024-12-31', now(), now())"
                ),
                {"id": bid},
            )
            # Trade numbers inserted out of order, so the table's physical order is not the page order.
            conn.execute(
                sa.text(
                    "INSERT INTO mcp_backtest_trades (trade_id, backtest_id, trade_number, entry_date, "
                    "entry_price, direction, created_at, updated_at) "
                    "SELECT gen_random_uuid(), :id, (n * 7919) % :n + 1, DATE '2024-01-01' + (n % 300), "
                    "100 + n % 50, 'long', now(), now() FROM generate_series(0, :n - 1) AS n"
                ),
                {"id": bid, "n": TRADES_PER_BACKTEST},
            )
        conn.execute(sa.text("ANALYZE mcp_backtest_trades"))
    yield db, ids[1]
    db.dispose()


def _page_statements(db: Database, backtest_id: uuid.UUID) -> list[tuple[str, Any]]:
    """The trade SELECTs of a first page and of the page after it, as the repository sends them."""
    seen: list[tuple[str, Any]] = []

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        if "FROM mcp_backtest_trades" in statement and "ORDER BY" in statement:
            seen.append((statement, parameters))

    repo = CatalogRepository(db)
    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        first, total = repo.list_backtest_trades(backtest_id, page_size=500)
        assert total == TRADES_PER_BACKTEST and first.next_page_token
        second, _ = repo.list_backtest_trades(backtest_id, page_size=500, page_token=first.next_page_token)
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)
    assert [t.trade_number for t in first.items] == list(range(1, 501))
    assert [t.trade_number for t in second.items] == list(range(501, 1001))
    assert len(seen) == 2
    return seen


def _plan(conn: sa.Connection, statement: str, parameters: Any) -> dict[str, Any]:
    doc = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
    plan: dict[str, Any] = doc[0]["Plan"]
    return plan


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_page_reads_the_keyset_index_and_sorts_nothing(catalog: tuple[Database, uuid.UUID]) -> None:
    db, backtest_id = catalog
    (first_sql, first_params), (next_sql, next_params) = _page_statements(db, backtest_id)
    with db.engine.connect() as conn:
        for statement, parameters in ((first_sql, first_params), (next_sql, next_params)):
            nodes = list(_nodes(_plan(conn, statement, parameters)))
            types = [n["Node Type"] for n in nodes]
            assert "Sort" not in types and "Seq Scan" not in types, types
            scans = [n for n in nodes if n.get("Index Name") == INDEX]
            assert scans and scans[0]["Node Type"] in ("Index Scan", "Index Only Scan"), nodes
        # The later page starts at its cursor: trade_number is bounded in the index condition.
        (scan,) = (n for n in _nodes(_plan(conn, next_sql, next_params)) if n.get("Index Name") == INDEX)
        assert "trade_number >=" in scan["Index Cond"], scan["Index Cond"]


def test_without_the_index_the_page_needs_a_sort(catalog: tuple[Database, uuid.UUID]) -> None:
    db, backtest_id = catalog
    (_, _), (next_sql, next_params) = _page_statements(db, backtest_id)
    with db.engine.connect() as conn:
        trans = conn.begin()
        try:
            conn.exec_driver_sql(f"DROP INDEX {INDEX}")
            types = [n["Node Type"] for n in _nodes(_plan(conn, next_sql, next_params))]
        finally:
            trans.rollback()
        assert "Sort" in types or "Incremental Sort" in types, types
        assert any(n.get("Index Name") == INDEX for n in _nodes(_plan(conn, next_sql, next_params)))
