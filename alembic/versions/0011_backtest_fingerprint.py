"""Backtest dataset fingerprint: the leaderboard's trials of a dataset read with one indexed filter.

Revision ID: 0011_backtest_fingerprint
Revises: 0010_trades_keyset_index
Create Date: 2026-12-07 05:00:00

`mcp_backtest_results.dataset_fingerprint` holds the fingerprint of the data a
backtest ran on, the `dataset_fingerprint` of its parameters (where the
backtester records it), written when the result is saved;
`mcp_backtest_results_dataset_idx` serves the filter. Existing rows are
backfilled from their parameters; rows whose parameters have no fingerprint
(a 64-character lowercase hex SHA-256) keep NULL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011_backtest_fingerprint"
down_revision: str | Sequence[str] | None = "0010_trades_keyset_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "mcp_backtest_results"
COLUMN = "dataset_fingerprint"
INDEX = "mcp_backtest_results_dataset_idx"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_BATCH = 1000


def _fingerprint(params: object) -> str | None:
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            return None
    fp = params.get(COLUMN) if isinstance(params, dict) else None
    return fp if isinstance(fp, str) and _HEX64.match(fp) else None


def upgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.add_column(sa.Column(COLUMN, sa.String(length=64), nullable=True))
    conn = op.get_bind()
    table = sa.table(
        TABLE,
        sa.column("backtest_id", sa.Uuid()),
        sa.column("parameters", sa.JSON()),
        sa.column(COLUMN, sa.String(length=64)),
    )
    rows = conn.execute(
        sa.select(table.c.backtest_id, table.c.parameters).where(table.c.parameters.is_not(None))
    )
    updates = [{"bid": bid, "fp": fp} for bid, params in rows if (fp := _fingerprint(params)) is not None]
    stmt = (
        table.update().where(table.c.backtest_id == sa.bindparam("bid")).values({COLUMN: sa.bindparam("fp")})
    )
    for i in range(0, len(updates), _BATCH):
        conn.execute(stmt, updates[i : i + _BATCH])
    op.create_index(INDEX, TABLE, [COLUMN])


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_column(COLUMN)
