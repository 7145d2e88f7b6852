"""Alpha-backtest catalog: tasks, deployments, runs, prediction audit and side tables.

Revision ID: 0002_alpha_backtest_catalog
Revises: 0001_backtest_persistence
Create Date: 2025-06-01 00:00:00

* `tasks`: long-running jobs (kind, state, stage, pct, error).
* `deployments`: model versions deployed as alphas, with their version history.
* `ml_alpha_backtest_runs`: the combined row of an alpha backtest; its task
  owns it (CASCADE); deployment and backtest result are optional links
  (SET NULL when they are deleted).
* `ml_prediction_audit`: one row per (run, date, symbol); BIGSERIAL id on
  PostgreSQL, rowid alias on SQLite; `symbol` in the "C" collation on
  PostgreSQL so both databases order symbols by code point.
* `catalog_request_keys`: idempotency keys (kind, request_id) of every
  idempotent create, so that the seed tables need no request_id column.
* `catalog_trade_details`: the trade fields the seed `mcp_backtest_trades`
  has no column for (symbol, duration_bars), one row per trade (CASCADE).

JSON columns are `jsonb` on PostgreSQL and JSON text on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002_alpha_backtest_catalog"
down_revision: str | Sequence[str] | None = "0001_backtest_persistence"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[object]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("task_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False, server_default="pending"),
        sa.Column("stage", sa.String(length=30)),
        sa.Column("pct", sa.Float(), nullable=False, server_default="0"),
        sa.Column("error", _json()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("tasks_state_idx", "tasks", ["state"])
    op.create_index("tasks_created_idx", "tasks", ["created_at"])

    op.create_table(
        "deployments",
        sa.Column("deployment_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.String(length=50), nullable=False),
        sa.Column("model_alias", sa.String(length=100)),
        sa.Column("model_uri", sa.String(length=1000)),
        sa.Column("dataset_cfg", _json()),
        sa.Column("strategy_cfg", _json()),
        sa.Column("state", sa.String(length=20), nullable=False, server_default="active"),
        sa.Column("history", _json(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("deployments_model_idx", "deployments", ["model_name", "model_version"])
    op.create_index("deployments_created_idx", "deployments", ["created_at"])

    op.create_table(
        "ml_alpha_backtest_runs",
        sa.Column("run_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("run_name", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False, server_default="pending"),
        sa.Column("stage", sa.String(length=30)),
        sa.Column("config", _json()),
        sa.Column("model_name", sa.String(length=255)),
        sa.Column("model_version", sa.String(length=50)),
        sa.Column("deployment_id", sa.Uuid()),
        sa.Column("mlflow_parent_run_id", sa.String(length=64)),
        sa.Column("mlflow_train_run_id", sa.String(length=64)),
        sa.Column("mlflow_backtest_run_id", sa.String(length=64)),
        sa.Column("backtest_id", sa.Uuid()),
        sa.Column("combined_metrics", _json()),
        sa.Column("error", _json()),
        sa.Column("predictions_captured", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("duration_seconds", sa.Float()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.deployment_id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["backtest_id"], ["mcp_backtest_results.backtest_id"], ondelete="SET NULL"),
    )
    op.create_index("ml_alpha_backtest_runs_task_idx", "ml_alpha_backtest_runs", ["task_id"], unique=True)
    op.create_index("ml_alpha_backtest_runs_created_idx", "ml_alpha_backtest_runs", ["created_at"])
    op.create_index("ml_alpha_backtest_runs_state_idx", "ml_alpha_backtest_runs", ["state"])
    op.create_index(
        "ml_alpha_backtest_runs_model_idx", "ml_alpha_backtest_runs", ["model_name", "model_version"]
    )
    op.create_index("ml_alpha_backtest_runs_deployment_idx", "ml_alpha_backtest_runs", ["deployment_id"])
    op.create_index("ml_alpha_backtest_runs_backtest_idx", "ml_alpha_backtest_runs", ["backtest_id"])

    op.create_table(
        "ml_prediction_audit",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("date", sa.Date(), nullable=False),
        sa.Column(
            "symbol",
            sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql"),
            nullable=False,
        ),
        sa.Column("prediction", sa.Double()),
        sa.Column("realized_return", sa.Double()),
        sa.Column("target_weight", sa.Double()),
        sa.Column("held_weight", sa.Double()),
        sa.Column("pnl_contribution", sa.Double()),
        sa.ForeignKeyConstraint(["run_id"], ["ml_alpha_backtest_runs.run_id"], ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "date", "symbol", name="ml_prediction_audit_run_date_symbol_key"),
    )
    op.create_index(
        "ml_prediction_audit_run_symbol_date_idx", "ml_prediction_audit", ["run_id", "symbol", "date"]
    )

    op.create_table(
        "catalog_request_keys",
        sa.Column("kind", sa.String(length=50), nullable=False, primary_key=True),
        sa.Column("request_id", sa.String(length=200), nullable=False, primary_key=True),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("catalog_request_keys_entity_idx", "catalog_request_keys", ["entity_id"])

    op.create_table(
        "catalog_trade_details",
        sa.Column("trade_id", sa.Uuid(), nullable=False, primary_key=True),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("duration_bars", sa.Integer()),
        sa.ForeignKeyConstraint(["trade_id"], ["mcp_backtest_trades.trade_id"], ondelete="CASCADE"),
    )
    op.create_index("catalog_trade_details_symbol_idx", "catalog_trade_details", ["symbol"])


def downgrade() -> None:
    # Children first (foreign keys).
    op.drop_table("catalog_trade_details")
    op.drop_table("catalog_request_keys")
    op.drop_table("ml_prediction_audit")
    op.drop_table("ml_alpha_backtest_runs")
    op.drop_table("deployments")
    op.drop_table("tasks")
