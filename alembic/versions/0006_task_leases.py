"""Task leases: one worker at a time per task, fenced writes, resumable stages.

Revision ID: 0006_task_leases
Revises: 0008
Create Date: 2026-12-06 00:00:00

Every task (an alpha-backtest run's task or a backtester job) gets the lease
of the worker executing it (`lease_owner`, `lease_expires_at`), a
`fencing_token` incremented by every claim (a write carrying an older token
is refused), the number of `attempts` claimed so far, and `stage_outputs`,
the recorded outputs of the stages already completed (a redelivered job
continues after the last of them).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0006_task_leases"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("fencing_token", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("stage_outputs", _json(), nullable=True))
        batch.create_index("tasks_lease_idx", ["state", "lease_expires_at"])


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("tasks_lease_idx")
        batch.drop_column("stage_outputs")
        batch.drop_column("attempts")
        batch.drop_column("fencing_token")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
