"""SQLAlchemy 2 declarative models of the AlphaSwarm catalog.

Two groups of tables share one `MetaData` (`Base.metadata`, the Alembic
`target_metadata`):

* The five backtest tables of the seed migration
  `013_add_backtest_persistence_models` (`mcp_backtest_results`,
  `mcp_backtest_trades`, `mcp_optimization_results`, `mcp_walk_forward_tests`,
  `mcp_backtest_portfolios`), column for column: same names, types,
  precisions, server defaults, nullability, foreign keys (ON DELETE CASCADE)
  and index names. Their JSON columns are plain `sa.JSON` (`json` on
  PostgreSQL) exactly as in the seed.
* The alpha-backtest tables: `tasks`, `deployments`, `ml_alpha_backtest_runs`,
  `ml_prediction_audit`, plus three small side tables that keep the seed schema
  exact: `catalog_request_keys` (the idempotency keys of every idempotent
  create, AIP-155), `catalog_trade_details` (the per-trade `symbol` and
  `duration_bars` of `alphaswarm.common.v1.Trade`, which the seed trades table
  has no column for) and `catalog_portfolio_details` (what a portfolio
  backtest's MetricSet carries beyond the seed's nine metric columns: the
  reasons of NULL metrics, metrics without a column and the conventions; the
  seed portfolio table has no free JSON column to keep them in). Their JSON
  columns are `sa.JSON().with_variant(JSONB, "postgresql")`: `jsonb` on
  PostgreSQL (indexable, comparable), JSON text on SQLite.

Conventions:

* Every timestamp is timezone-aware UTC. `UTCDateTime` stores
  `DateTime(timezone=True)` (`timestamptz` on PostgreSQL; on SQLite, which has
  no time zones, the UTC wall time as ISO text with microseconds, so that
  text order is time order) and always returns aware UTC datetimes; binding a
  naive datetime is an error rather than a silent guess.
* Python None is SQL NULL in every JSON column (`none_as_null=True`), never
  the JSON literal `null`.
* `created_at` / `updated_at` get Python-side defaults (UTC now), as the seed
  declares them NOT NULL without a server default.
* Numeric columns read back as `float` (`asdecimal=False`); the repository
  rounds to the column scale and checks the precision before writing, so
  SQLite (which enforces neither) and PostgreSQL store the same value.
* `ml_prediction_audit.symbol` uses the "C" collation on PostgreSQL, so
  symbols sort by code point on both databases (SQLite's BINARY collation) and
  the unique index (run_id, date, symbol) serves the keyset pagination of
  `ListPredictionAudit` directly.
* `ml_prediction_audit.id` is BIGSERIAL on PostgreSQL and `INTEGER PRIMARY
  KEY` (the rowid) on SQLite, the only SQLite type that autoincrements.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AUDIT_VALUE_FIELDS",
    "AlphaBacktestRunRow",
    "ApiTokenRow",
    "AuditLogRow",
    "BacktestPortfolioRow",
    "BacktestResultRow",
    "BacktestTradeRow",
    "Base",
    "DeploymentRow",
    "JSONVariant",
    "ModelArtifactTrustRow",
    "OptimizationResultRow",
    "PortfolioDetailRow",
    "PredictionAuditRow",
    "RequestKeyRow",
    "TaskRow",
    "TradeDetailRow",
    "UTCDateTime",
    "WalkForwardTestRow",
    "utcnow",
]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """`DateTime(timezone=True)` that only accepts and only returns aware UTC datetimes."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value!r}: the catalog stores timezone-aware UTC timestamps only"
            )
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


JSONVariant = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
"""JSON for the non-seed tables: jsonb on PostgreSQL, JSON text elsewhere."""

_JSON = sa.JSON(none_as_null=True)
_AUDIT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_SYMBOL_C = sa.String(length=32).with_variant(sa.String(length=32, collation="C"), "postgresql")


def _num(precision: int, scale: int) -> sa.Numeric[float]:
    return sa.Numeric(precision=precision, scale=scale, asdecimal=False)


class Base(DeclarativeBase):
    """Declarative base of the catalog; `Base.metadata` is Alembic's target."""

    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy reads this class attribute
        dt.datetime: UTCDateTime(),
        uuid.UUID: sa.Uuid(),
    }


def _created() -> Any:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow)


def _updated() -> Any:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow, onupdate=utcnow)


# --------------------------------------------------------------------------- seed tables (013)


class BacktestResultRow(Base):
    """`mcp_backtest_results`: one backtest with its metrics and series."""

    __tablename__ = "mcp_backtest_results"

    backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    symbol: Mapped[str] = mapped_column(sa.String(length=10), nullable=False)
    strategy_type: Mapped[str] = mapped_column(sa.String(length=50), nullable=False)
    backtest_date: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    start_date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    end_date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    initial_capital: Mapped[float | None] = mapped_column(_num(15, 2), server_default="10000.0")
    fees: Mapped[float | None] = mapped_column(_num(6, 4), server_default="0.001")
    slippage: Mapped[float | None] = mapped_column(_num(6, 4), server_default="0.001")
    parameters: Mapped[Any | None] = mapped_column(_JSON)
    total_return: Mapped[float | None] = mapped_column(_num(10, 4))
    annualized_return: Mapped[float | None] = mapped_column(_num(10, 4))
    sharpe_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    sortino_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    calmar_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    max_drawdown: Mapped[float | None] = mapped_column(_num(8, 4))
    max_drawdown_duration: Mapped[int | None] = mapped_column(sa.Integer())
    volatility: Mapped[float | None] = mapped_column(_num(8, 4))
    downside_volatility: Mapped[float | None] = mapped_column(_num(8, 4))
    total_trades: Mapped[int | None] = mapped_column(sa.Integer(), server_default="0")
    winning_trades: Mapped[int | None] = mapped_column(sa.Integer(), server_default="0")
    losing_trades: Mapped[int | None] = mapped_column(sa.Integer(), server_default="0")
    win_rate: Mapped[float | None] = mapped_column(_num(5, 4))
    profit_factor: Mapped[float | None] = mapped_column(_num(8, 4))
    average_win: Mapped[float | None] = mapped_column(_num(12, 4))
    average_loss: Mapped[float | None] = mapped_column(_num(12, 4))
    largest_win: Mapped[float | None] = mapped_column(_num(12, 4))
    largest_loss: Mapped[float | None] = mapped_column(_num(12, 4))
    final_portfolio_value: Mapped[float | None] = mapped_column(_num(15, 2))
    peak_portfolio_value: Mapped[float | None] = mapped_column(_num(15, 2))
    beta: Mapped[float | None] = mapped_column(_num(8, 4))
    alpha: Mapped[float | None] = mapped_column(_num(8, 4))
    equity_curve: Mapped[Any | None] = mapped_column(_JSON)
    drawdown_series: Mapped[Any | None] = mapped_column(_JSON)
    execution_time_seconds: Mapped[float | None] = mapped_column(_num(8, 3))
    data_points: Mapped[int | None] = mapped_column(sa.Integer())
    status: Mapped[str | None] = mapped_column(sa.String(length=20), server_default="completed")
    error_message: Mapped[str | None] = mapped_column(sa.Text())
    notes: Mapped[str | None] = mapped_column(sa.Text())
    # the fingerprint of the data the backtest ran on (`parameters.dataset_fingerprint`), for the
    # leaderboard's trials of a dataset
    dataset_fingerprint: Mapped[str | None] = mapped_column(sa.String(length=64))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.Index("mcp_backtest_results_dataset_idx", "dataset_fingerprint"),
        sa.Index("mcp_backtest_results_symbol_idx", "symbol"),
        sa.Index("mcp_backtest_results_strategy_idx", "strategy_type"),
        sa.Index("mcp_backtest_results_date_idx", "backtest_date"),
        sa.Index("mcp_backtest_results_sharpe_idx", "sharpe_ratio"),
        sa.Index("mcp_backtest_results_total_return_idx", "total_return"),
        sa.Index("mcp_backtest_results_symbol_strategy_idx", "symbol", "strategy_type"),
    )


class BacktestTradeRow(Base):
    """`mcp_backtest_trades`: one trade of a backtest."""

    __tablename__ = "mcp_backtest_trades"

    trade_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    trade_number: Mapped[int] = mapped_column(sa.Integer(), nullable=False)
    entry_date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    entry_price: Mapped[float] = mapped_column(_num(12, 4), nullable=False)
    entry_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    exit_date: Mapped[dt.date | None] = mapped_column(sa.Date())
    exit_price: Mapped[float | None] = mapped_column(_num(12, 4))
    exit_time: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    position_size: Mapped[float | None] = mapped_column(_num(15, 2))
    direction: Mapped[str] = mapped_column(sa.String(length=5), nullable=False)
    pnl: Mapped[float | None] = mapped_column(_num(12, 4))
    pnl_percent: Mapped[float | None] = mapped_column(_num(8, 4))
    mae: Mapped[float | None] = mapped_column(_num(8, 4))
    mfe: Mapped[float | None] = mapped_column(_num(8, 4))
    duration_days: Mapped[int | None] = mapped_column(sa.Integer())
    duration_hours: Mapped[float | None] = mapped_column(_num(8, 2))
    exit_reason: Mapped[str | None] = mapped_column(sa.String(length=50))
    fees_paid: Mapped[float | None] = mapped_column(_num(10, 4), server_default="0")
    slippage_cost: Mapped[float | None] = mapped_column(_num(10, 4), server_default="0")
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.ForeignKeyConstraint(["backtest_id"], ["mcp_backtest_results.backtest_id"], ondelete="CASCADE"),
        sa.Index("mcp_backtest_trades_backtest_idx", "backtest_id"),
        sa.Index("mcp_backtest_trades_entry_date_idx", "entry_date"),
        sa.Index("mcp_backtest_trades_exit_date_idx", "exit_date"),
        sa.Index("mcp_backtest_trades_pnl_idx", "pnl"),
        sa.Index("mcp_backtest_trades_backtest_entry_idx", "backtest_id", "entry_date"),
        # ListBacktestTrades' keyset order (migration 0010_trades_keyset_index).
        sa.Index("mcp_backtest_trades_keyset_idx", "backtest_id", "trade_number", "trade_id"),
    )


class OptimizationResultRow(Base):
    """`mcp_optimization_results`: one parameter set of an optimization."""

    __tablename__ = "mcp_optimization_results"

    optimization_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    optimization_date: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    parameter_set: Mapped[int] = mapped_column(sa.Integer(), nullable=False)
    parameters: Mapped[Any] = mapped_column(_JSON, nullable=False)
    objective_function: Mapped[str | None] = mapped_column(sa.String(length=50))
    objective_value: Mapped[float | None] = mapped_column(_num(12, 6))
    total_return: Mapped[float | None] = mapped_column(_num(10, 4))
    sharpe_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    max_drawdown: Mapped[float | None] = mapped_column(_num(8, 4))
    win_rate: Mapped[float | None] = mapped_column(_num(5, 4))
    profit_factor: Mapped[float | None] = mapped_column(_num(8, 4))
    total_trades: Mapped[int | None] = mapped_column(sa.Integer())
    rank: Mapped[int | None] = mapped_column(sa.Integer())
    is_statistically_significant: Mapped[bool | None] = mapped_column(sa.Boolean(), server_default=sa.false())
    p_value: Mapped[float | None] = mapped_column(_num(8, 6))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.ForeignKeyConstraint(["backtest_id"], ["mcp_backtest_results.backtest_id"], ondelete="CASCADE"),
        sa.Index("mcp_optimization_results_backtest_idx", "backtest_id"),
        sa.Index("mcp_optimization_results_param_set_idx", "parameter_set"),
        sa.Index("mcp_optimization_results_objective_idx", "objective_value"),
    )


class WalkForwardTestRow(Base):
    """`mcp_walk_forward_tests`: one walk-forward window of a parent backtest."""

    __tablename__ = "mcp_walk_forward_tests"

    walk_forward_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    parent_backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    test_date: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    window_size_months: Mapped[int] = mapped_column(sa.Integer(), nullable=False)
    step_size_months: Mapped[int] = mapped_column(sa.Integer(), nullable=False)
    training_start: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    training_end: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    test_period_start: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    test_period_end: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    optimal_parameters: Mapped[Any | None] = mapped_column(_JSON)
    training_performance: Mapped[float | None] = mapped_column(_num(10, 4))
    out_of_sample_return: Mapped[float | None] = mapped_column(_num(10, 4))
    out_of_sample_sharpe: Mapped[float | None] = mapped_column(_num(8, 4))
    out_of_sample_drawdown: Mapped[float | None] = mapped_column(_num(8, 4))
    out_of_sample_trades: Mapped[int | None] = mapped_column(sa.Integer())
    performance_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    degradation_factor: Mapped[float | None] = mapped_column(_num(8, 4))
    is_profitable: Mapped[bool | None] = mapped_column(sa.Boolean())
    is_statistically_significant: Mapped[bool | None] = mapped_column(sa.Boolean(), server_default=sa.false())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["parent_backtest_id"], ["mcp_backtest_results.backtest_id"], ondelete="CASCADE"
        ),
        sa.Index("mcp_walk_forward_tests_parent_idx", "parent_backtest_id"),
        sa.Index("mcp_walk_forward_tests_period_idx", "test_period_start"),
        sa.Index("mcp_walk_forward_tests_performance_idx", "out_of_sample_return"),
    )


class BacktestPortfolioRow(Base):
    """`mcp_backtest_portfolios`: a portfolio-level backtest over several symbols."""

    __tablename__ = "mcp_backtest_portfolios"

    portfolio_backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    portfolio_name: Mapped[str] = mapped_column(sa.String(length=100), nullable=False)
    description: Mapped[str | None] = mapped_column(sa.Text())
    backtest_date: Mapped[dt.datetime] = mapped_column(UTCDateTime(), nullable=False)
    start_date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    end_date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    symbols: Mapped[Any] = mapped_column(_JSON, nullable=False)
    weights: Mapped[Any | None] = mapped_column(_JSON)
    rebalance_frequency: Mapped[str | None] = mapped_column(sa.String(length=20))
    initial_capital: Mapped[float | None] = mapped_column(_num(15, 2), server_default="100000.0")
    max_positions: Mapped[int | None] = mapped_column(sa.Integer())
    position_sizing_method: Mapped[str | None] = mapped_column(sa.String(length=50))
    portfolio_stop_loss: Mapped[float | None] = mapped_column(_num(6, 4))
    max_sector_allocation: Mapped[float | None] = mapped_column(_num(5, 4))
    correlation_threshold: Mapped[float | None] = mapped_column(_num(5, 4))
    total_return: Mapped[float | None] = mapped_column(_num(10, 4))
    annualized_return: Mapped[float | None] = mapped_column(_num(10, 4))
    sharpe_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    sortino_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    max_drawdown: Mapped[float | None] = mapped_column(_num(8, 4))
    volatility: Mapped[float | None] = mapped_column(_num(8, 4))
    diversification_ratio: Mapped[float | None] = mapped_column(_num(8, 4))
    concentration_index: Mapped[float | None] = mapped_column(_num(8, 4))
    turnover_rate: Mapped[float | None] = mapped_column(_num(8, 4))
    component_backtest_ids: Mapped[Any | None] = mapped_column(_JSON)
    portfolio_equity_curve: Mapped[Any | None] = mapped_column(_JSON)
    portfolio_weights_history: Mapped[Any | None] = mapped_column(_JSON)
    status: Mapped[str | None] = mapped_column(sa.String(length=20), server_default="completed")
    notes: Mapped[str | None] = mapped_column(sa.Text())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.Index("mcp_backtest_portfolios_name_idx", "portfolio_name"),
        sa.Index("mcp_backtest_portfolios_date_idx", "backtest_date"),
        sa.Index("mcp_backtest_portfolios_return_idx", "total_return"),
    )


# --------------------------------------------------------------------------- alpha-backtest tables


class TaskRow(Base):
    """`tasks`: a long-running job (AIP-151); `state` in pending/running/succeeded/failed/cancelled."""

    __tablename__ = "tasks"

    task_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(sa.String(length=50), nullable=False)
    state: Mapped[str] = mapped_column(sa.String(length=20), nullable=False, server_default="pending")
    stage: Mapped[str | None] = mapped_column(sa.String(length=30))
    pct: Mapped[float] = mapped_column(sa.Float(), nullable=False, server_default="0")
    error: Mapped[Any | None] = mapped_column(JSONVariant)
    request: Mapped[Any | None] = mapped_column(JSONVariant)
    result: Mapped[Any | None] = mapped_column(JSONVariant)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()
    # The lease of the worker executing the task (`repo_leases`): owner, expiry, the fencing
    # token every claim increments, the attempts claimed and the outputs of completed stages.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(length=200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    fencing_token: Mapped[int] = mapped_column(sa.BigInteger(), nullable=False, server_default="0", default=0)
    attempts: Mapped[int] = mapped_column(sa.Integer(), nullable=False, server_default="0", default=0)
    stage_outputs: Mapped[Any | None] = mapped_column(JSONVariant)

    __table_args__ = (
        sa.Index("tasks_state_idx", "state"),
        sa.Index("tasks_created_idx", "created_at"),
        sa.Index("tasks_lease_idx", "state", "lease_expires_at"),
    )


class DeploymentRow(Base):
    """`deployments`: a model version deployed as an alpha; `state` active or retired."""

    __tablename__ = "deployments"

    deployment_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    model_name: Mapped[str] = mapped_column(sa.String(length=255), nullable=False)
    model_version: Mapped[str] = mapped_column(sa.String(length=50), nullable=False)
    model_alias: Mapped[str | None] = mapped_column(sa.String(length=100))
    model_uri: Mapped[str | None] = mapped_column(sa.String(length=1000))
    dataset_cfg: Mapped[Any | None] = mapped_column(JSONVariant)
    strategy_cfg: Mapped[Any | None] = mapped_column(JSONVariant)
    state: Mapped[str] = mapped_column(sa.String(length=20), nullable=False, server_default="active")
    history: Mapped[Any] = mapped_column(JSONVariant, nullable=False, default=list)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.Index("deployments_model_idx", "model_name", "model_version"),
        sa.Index("deployments_created_idx", "created_at"),
    )


class AlphaBacktestRunRow(Base):
    """`ml_alpha_backtest_runs`: the combined row of one alpha backtest (MLAlphaBacktestRun)."""

    __tablename__ = "ml_alpha_backtest_runs"

    run_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    task_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    run_name: Mapped[str] = mapped_column(sa.String(length=200), nullable=False)
    state: Mapped[str] = mapped_column(sa.String(length=20), nullable=False, server_default="pending")
    stage: Mapped[str | None] = mapped_column(sa.String(length=30))
    config: Mapped[Any | None] = mapped_column(JSONVariant)
    model_name: Mapped[str | None] = mapped_column(sa.String(length=255))
    model_version: Mapped[str | None] = mapped_column(sa.String(length=50))
    deployment_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid())
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(sa.String(length=64))
    mlflow_train_run_id: Mapped[str | None] = mapped_column(sa.String(length=64))
    mlflow_backtest_run_id: Mapped[str | None] = mapped_column(sa.String(length=64))
    backtest_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid())
    combined_metrics: Mapped[Any | None] = mapped_column(JSONVariant)
    error: Mapped[Any | None] = mapped_column(JSONVariant)
    predictions_captured: Mapped[bool] = mapped_column(
        sa.Boolean(), nullable=False, server_default=sa.false()
    )
    # The W3C trace id of the submitting request (traces and log lines find the run by it).
    trace_id: Mapped[str | None] = mapped_column(sa.String(length=32))
    created_at: Mapped[dt.datetime] = _created()
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float())
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.deployment_id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["backtest_id"], ["mcp_backtest_results.backtest_id"], ondelete="SET NULL"),
        sa.Index("ml_alpha_backtest_runs_task_idx", "task_id", unique=True),
        sa.Index("ml_alpha_backtest_runs_created_idx", "created_at"),
        sa.Index("ml_alpha_backtest_runs_state_idx", "state"),
        sa.Index("ml_alpha_backtest_runs_model_idx", "model_name", "model_version"),
        sa.Index("ml_alpha_backtest_runs_deployment_idx", "deployment_id"),
        sa.Index("ml_alpha_backtest_runs_backtest_idx", "backtest_id"),
        sa.Index("ml_alpha_backtest_runs_trace_idx", "trace_id"),
    )


AUDIT_VALUE_FIELDS: tuple[str, ...] = (
    "prediction",
    "realized_return",
    "target_weight",
    "held_weight",
    "pnl_contribution",
)
"""The value columns of `ml_prediction_audit`, in table order (the fields of PredictionAuditBatch)."""


class PredictionAuditRow(Base):
    """`ml_prediction_audit`: one (date, symbol) of a run's backtest window."""

    __tablename__ = "ml_prediction_audit"

    id: Mapped[int] = mapped_column(_AUDIT_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    date: Mapped[dt.date] = mapped_column(sa.Date(), nullable=False)
    symbol: Mapped[str] = mapped_column(_SYMBOL_C, nullable=False)
    prediction: Mapped[float | None] = mapped_column(sa.Double())
    realized_return: Mapped[float | None] = mapped_column(sa.Double())
    target_weight: Mapped[float | None] = mapped_column(sa.Double())
    held_weight: Mapped[float | None] = mapped_column(sa.Double())
    pnl_contribution: Mapped[float | None] = mapped_column(sa.Double())

    __table_args__ = (
        sa.ForeignKeyConstraint(["run_id"], ["ml_alpha_backtest_runs.run_id"], ondelete="CASCADE"),
        sa.UniqueConstraint("run_id", "date", "symbol", name="ml_prediction_audit_run_date_symbol_key"),
        sa.Index("ml_prediction_audit_run_symbol_date_idx", "run_id", "symbol", "date"),
    )


# --------------------------------------------------------------------------- side tables


class RequestKeyRow(Base):
    """`catalog_request_keys`: idempotency keys (AIP-155) of every idempotent create.

    The key is (kind, request_id), so one client key may name a run and a
    backtest result without collision. `fingerprint` is the SHA-256 of the
    request that first used the key: the same key with another payload is
    rejected instead of silently returning an unrelated entity.
    """

    __tablename__ = "catalog_request_keys"

    kind: Mapped[str] = mapped_column(sa.String(length=50), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.String(length=200), primary_key=True)
    entity_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), nullable=False)
    fingerprint: Mapped[str] = mapped_column(sa.String(length=64), nullable=False)
    created_at: Mapped[dt.datetime] = _created()

    __table_args__ = (sa.Index("catalog_request_keys_entity_idx", "entity_id"),)


class TradeDetailRow(Base):
    """`catalog_trade_details`: fields of a trade the seed `mcp_backtest_trades` has no column for."""

    __tablename__ = "catalog_trade_details"

    trade_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True)
    symbol: Mapped[str] = mapped_column(sa.String(length=32), nullable=False)
    duration_bars: Mapped[int | None] = mapped_column(sa.Integer())

    __table_args__ = (
        sa.ForeignKeyConstraint(["trade_id"], ["mcp_backtest_trades.trade_id"], ondelete="CASCADE"),
        sa.Index("catalog_trade_details_symbol_idx", "symbol"),
    )


class PortfolioDetailRow(Base):
    """`catalog_portfolio_details`: the MetricSet of a portfolio backtest beyond the seed's metric columns.

    `metric_reasons` maps metric names to why they are NULL (the same reasons
    are also appended to the seed row's `notes` for SQL readers),
    `extra_metrics` holds metrics the seed table has no column for (null for
    undefined ones) and `conventions` the MetricSet's conventions document.
    One row per portfolio backtest, written only when one of them is non-empty.
    """

    __tablename__ = "catalog_portfolio_details"

    portfolio_backtest_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True)
    metric_reasons: Mapped[Any | None] = mapped_column(JSONVariant)
    extra_metrics: Mapped[Any | None] = mapped_column(JSONVariant)
    conventions: Mapped[Any | None] = mapped_column(JSONVariant)

    __table_args__ = (
        sa.ForeignKeyConstraint(
            ["portfolio_backtest_id"], ["mcp_backtest_portfolios.portfolio_backtest_id"], ondelete="CASCADE"
        ),
    )


# --------------------------------------------------------------------------- access (0007)


class ApiTokenRow(Base):
    """`api_tokens`: bearer tokens by sha256 hash (the token itself is never stored)."""

    __tablename__ = "api_tokens"

    token_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(sa.String(length=100), nullable=False)
    role: Mapped[str] = mapped_column(sa.String(length=20), nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(length=64), nullable=False)
    created_by: Mapped[str | None] = mapped_column(sa.String(length=200))
    created_at: Mapped[dt.datetime] = _created()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        sa.Index("api_tokens_name_idx", "name", unique=True),
        sa.Index("api_tokens_hash_idx", "token_hash", unique=True),
    )


class AuditLogRow(Base):
    """`audit_log`: who (token name, JWT subject, service) did what to which resource."""

    __tablename__ = "audit_log"

    audit_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid(), primary_key=True, default=uuid.uuid4)
    at: Mapped[dt.datetime] = _created()
    subject: Mapped[str] = mapped_column(sa.String(length=200), nullable=False)
    role: Mapped[str] = mapped_column(sa.String(length=20), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(length=50), nullable=False)
    target_kind: Mapped[str | None] = mapped_column(sa.String(length=50))
    target_id: Mapped[str | None] = mapped_column(sa.String(length=100))
    task_id: Mapped[uuid.UUID | None] = mapped_column(sa.Uuid())
    detail: Mapped[Any | None] = mapped_column(JSONVariant)

    __table_args__ = (
        sa.Index("audit_log_subject_idx", "subject", "at"),
        sa.Index("audit_log_target_idx", "target_id"),
        sa.Index("audit_log_task_idx", "task_id"),
    )


# --------------------------------------------------------------------------- model artifact trust (0008)


class ModelArtifactTrustRow(Base):
    """`model_artifact_trust`: the registry's record of a registered model version (sha256 + HMAC)."""

    __tablename__ = "model_artifact_trust"

    model_name: Mapped[str] = mapped_column(sa.String(length=255), primary_key=True)
    version: Mapped[str] = mapped_column(sa.String(length=50), primary_key=True)
    artifact_uri: Mapped[str] = mapped_column(sa.String(length=1000), nullable=False)
    sha256: Mapped[str] = mapped_column(sa.String(length=64), nullable=False)
    hmac: Mapped[str] = mapped_column(sa.String(length=64), nullable=False)
    serialization_format: Mapped[str] = mapped_column(sa.String(length=20), nullable=False)
    registered_at: Mapped[dt.datetime] = _created()
    registered_by: Mapped[str | None] = mapped_column(sa.String(length=200))
