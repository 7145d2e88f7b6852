"""Model artifact trust: the registry's sha256 and HMAC of every version it registered.

Revision ID: 0008
Revises: 0007_api_tokens_audit_log
Create Date: 2026-12-06 00:00:00

The registry records, when it registers a model version, the sha256 of the
artifact it checked and an HMAC-SHA256 (a key only the registry holds) over
(model name, version, artifact URI, sha256, serialisation format). It
verifies both before it deserialises the artifact; a version without a
record was not registered through the registry and is never loaded.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007_api_tokens_audit_log"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "model_artifact_trust",
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("artifact_uri", sa.String(length=1000), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("hmac", sa.String(length=64), nullable=False),
        sa.Column("serialization_format", sa.String(length=20), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("registered_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("model_name", "version"),
    )


def downgrade() -> None:
    op.drop_table("model_artifact_trust")
