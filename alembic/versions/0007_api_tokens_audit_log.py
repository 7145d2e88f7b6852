"""API tokens and the audit log.

Revision ID: 0007_api_tokens_audit_log
Revises: 0004_task_documents
Create Date: 2026-12-06 00:00:00

`api_tokens` keeps bearer tokens by their sha256 hash (name and hash unique);
`audit_log` records who (token name, JWT subject or service) submitted,
cancelled or deleted what, and which task a submission started (the per-token
cap on concurrent runs counts those tasks).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0007_api_tokens_audit_log"
down_revision: str | Sequence[str] | None = "0004_task_documents"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
    )
    op.create_index("api_tokens_name_idx", "api_tokens", ["name"], unique=True)
    op.create_index("api_tokens_hash_idx", "api_tokens", ["token_hash"], unique=True)
    op.create_table(
        "audit_log",
        sa.Column("audit_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target_kind", sa.String(length=50)),
        sa.Column("target_id", sa.String(length=100)),
        sa.Column("task_id", sa.Uuid()),
        sa.Column("detail", _json()),
    )
    op.create_index("audit_log_subject_idx", "audit_log", ["subject", "at"])
    op.create_index("audit_log_target_idx", "audit_log", ["target_id"])
    op.create_index("audit_log_task_idx", "audit_log", ["task_id"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
