"""Trades keyset index: one backtest's trades in page order without a sort.

Revision ID: 0010_trades_keyset_index
Revises: 0009_trace_ids
Create Date: 2026-12-07 00:00:00

`ListBacktestTrades` pages one backtest's trades ordered by
(trade_number, trade_id) under `backtest_id = :id`, resuming after the last
row of the previous page: `mcp_backtest_trades_keyset_idx` on
(backtest_id, trade_number, trade_id) serves the filter, the order and the
keyset condition from the index, so a page reads `page_size` index entries
instead of sorting all of the backtest's trades. The seed indexes stay as
they are.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_trades_keyset_index"
down_revision: str | Sequence[str] | None = "0009_trace_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "mcp_backtest_trades_keyset_idx"


def upgrade() -> None:
    op.create_index(INDEX, "mcp_backtest_trades", ["backtest_id", "trade_number", "trade_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="mcp_backtest_trades")
