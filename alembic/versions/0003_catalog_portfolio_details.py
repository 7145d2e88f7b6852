"""Portfolio backtest details: the MetricSet beyond the seed's metric columns.

Revision ID: 0003_catalog_portfolio_details
Revises: 0002_alpha_backtest_catalog
Create Date: 2025-06-15 00:00:00

* `catalog_portfolio_details`: one row per portfolio backtest (CASCADE from
  `mcp_backtest_portfolios`) with the reasons of NULL metrics, the metrics the
  seed table has no column for, and the MetricSet's conventions, so a
  portfolio's MetricSet survives the round trip without changing the seed
  table. JSON columns are `jsonb` on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0003_catalog_portfolio_details"
down_revision: str | Sequence[str] | None = "0002_alpha_backtest_catalog"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "catalog_portfolio_details",
        sa.Column("portfolio_backtest_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("metric_reasons", _json()),
        sa.Column("extra_metrics", _json()),
        sa.Column("conventions", _json()),
        sa.ForeignKeyConstraint(
            ["portfolio_backtest_id"],
            ["mcp_backtest_portfolios.portfolio_backtest_id"],
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("catalog_portfolio_details")
