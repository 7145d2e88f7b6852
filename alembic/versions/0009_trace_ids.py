"""Trace ids: the W3C trace id of the request that submitted each alpha-backtest run.

Revision ID: 0009_trace_ids
Revises: 0006_task_leases
Create Date: 2026-12-07 00:00:00

`ml_alpha_backtest_runs.trace_id` (32 hex digits, null when tracing was off) joins a run to
its trace in the tracing backend and to its log lines (`trace_id` field), and is indexed so
that a trace found in a backend leads back to its run.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009_trace_ids"
down_revision: str | Sequence[str] | None = "0006_task_leases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ml_alpha_backtest_runs") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(length=32), nullable=True))
        batch.create_index("ml_alpha_backtest_runs_trace_idx", ["trace_id"])


def downgrade() -> None:
    with op.batch_alter_table("ml_alpha_backtest_runs") as batch:
        batch.drop_index("ml_alpha_backtest_runs_trace_idx")
        batch.drop_column("trace_id")
