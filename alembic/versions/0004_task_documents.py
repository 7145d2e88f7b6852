"""Task documents: the submitted request and the produced result of every task.

Revision ID: 0004_task_documents
Revises: 0003_catalog_portfolio_details
Create Date: 2026-11-21 00:00:00

Backtester jobs (backtests, optimizations, walk-forward tests, portfolio
backtests, Monte Carlo simulations) are tasks without a run row of their own:
the task keeps the job document it was accepted with and the catalog ids and
headline figures it produced. JSON columns are `jsonb` on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0004_task_documents"
down_revision: str | Sequence[str] | None = "0003_catalog_portfolio_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("request", _json(), nullable=True))
        batch.add_column(sa.Column("result", _json(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("result")
        batch.drop_column("request")
