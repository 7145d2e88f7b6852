"""The plain records and vocabularies of the catalog repository (states, metric columns, page sizes)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from alphaswarm_persistence.models import (
    AUDIT_VALUE_FIELDS,
)

T = TypeVar("T")

RUN_STATES: tuple[str, ...] = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL_RUN_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
DEPLOYMENT_STATES: tuple[str, ...] = ("active", "retired")
TASK_KIND_ALPHA_BACKTEST = "alpha_backtest"

RUN_UPDATABLE_FIELDS: frozenset[str] = frozenset(
    {
        "run_name",
        "state",
        "stage",
        "config",
        "model_name",
        "model_version",
        "deployment_id",
        "mlflow_parent_run_id",
        "mlflow_train_run_id",
        "mlflow_backtest_run_id",
        "backtest_id",
        "combined_metrics",
        "error",
        "started_at",
        "finished_at",
        "duration_seconds",
        "predictions_captured",
    }
)
_RUN_IMMUTABLE_FIELDS = frozenset({"run_id", "task_id", "created_at", "updated_at"})

METRIC_COLUMNS: dict[str, str] = {
    "total_return": "total_return",
    "annualized_return": "annualized_return",
    "sharpe": "sharpe_ratio",
    "sortino": "sortino_ratio",
    "calmar": "calmar_ratio",
    "max_drawdown": "max_drawdown",
    "max_drawdown_duration": "max_drawdown_duration",
    "volatility": "volatility",
    "downside_volatility": "downside_volatility",
    "total_trades": "total_trades",
    "winning_trades": "winning_trades",
    "losing_trades": "losing_trades",
    "win_rate": "win_rate",
    "profit_factor": "profit_factor",
    "average_win": "average_win",
    "average_loss": "average_loss",
    "largest_win": "largest_win",
    "largest_loss": "largest_loss",
    "final_value": "final_portfolio_value",
    "peak_value": "peak_portfolio_value",
    "beta": "beta",
    "alpha": "alpha",
}
"""MetricSet name -> `mcp_backtest_results` column. Column names are accepted as metric names too."""

_COLUMN_METRIC = {col: name for name, col in METRIC_COLUMNS.items()}
_ORDERABLE_EXTRA = (
    "backtest_date",
    "created_at",
    "updated_at",
    "start_date",
    "end_date",
    "initial_capital",
    "fees",
    "slippage",
    "execution_time_seconds",
    "data_points",
)
_RESERVED_PARAMETERS_KEY = "_alphaswarm"
_INT4_MAX = 2**31 - 1
_AUDIT_FIELD_SET = frozenset(AUDIT_VALUE_FIELDS)
_SQLITE_BATCH_ROWS = 100_000
_COPY_CHUNK_ROWS = 200_000
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01 in days: PostgreSQL's binary date epoch

_RUN_PAGE = (50, 500)
_DEPLOYMENT_PAGE = (50, 500)
_BACKTEST_PAGE = (50, 500)
_TRADE_PAGE = (500, 10_000)
_AUDIT_PAGE = (500, 10_000)
_OPTIMIZATION_PAGE = (50, 500)
_WALK_FORWARD_PAGE = (50, 500)
_PORTFOLIO_PAGE = (50, 500)
_COMPARE_MIN, _COMPARE_MAX = 2, 50
_SUMMARY_DEFAULT_DAYS = 30
_IN_CHUNK = 500  # ids per IN (...) list: far below SQLite's bound-parameter limit

LOWER_IS_BETTER_METRICS: frozenset[str] = frozenset(
    {"volatility", "downside_volatility", "max_drawdown_duration", "losing_trades"}
)
"""Metric columns of `mcp_backtest_results` where a smaller value is better; every other one is higher-better.

`max_drawdown` is higher-better: drawdowns are fractions <= 0, so the
largest value is the smallest loss. `average_loss` / `largest_loss` are <= 0
as well (higher-better). `max_drawdown_duration` (bars under water) and
`losing_trades` are lower-better: nobody ranks the longest drawdown or the
most losing trades first.
"""

COMPARE_DEFAULT_METRICS: tuple[str, ...] = (
    "total_return",
    "annualized_return",
    "sharpe_ratio",
    "sortino_ratio",
    "calmar_ratio",
    "max_drawdown",
    "volatility",
    "win_rate",
    "profit_factor",
    "total_trades",
)
"""The metric columns `compare_backtests` ranks when the caller names none."""

PORTFOLIO_METRIC_COLUMNS: dict[str, str] = {
    "total_return": "total_return",
    "annualized_return": "annualized_return",
    "sharpe": "sharpe_ratio",
    "sortino": "sortino_ratio",
    "max_drawdown": "max_drawdown",
    "volatility": "volatility",
    "diversification_ratio": "diversification_ratio",
    "concentration_index": "concentration_index",
    "turnover_rate": "turnover_rate",
}
"""MetricSet name -> `mcp_backtest_portfolios` column. Column names are accepted as metric names too."""

_PORTFOLIO_COLUMN_METRIC = {col: name for name, col in PORTFOLIO_METRIC_COLUMNS.items()}
REBALANCE_FREQUENCIES: tuple[str, ...] = ("daily", "weekly", "monthly", "quarterly", "none")
POSITION_SIZING_METHODS: tuple[str, ...] = ("equal", "fixed", "inverse_volatility")
BACKTEST_STATUSES: tuple[str, ...] = ("completed", "failed")

_OPTIMIZATION_NUMBERS = (
    "objective_value",
    "total_return",
    "sharpe_ratio",
    "max_drawdown",
    "win_rate",
    "profit_factor",
    "total_trades",
    "rank",
    "p_value",
)
_WALK_FORWARD_NUMBERS = (
    "training_performance",
    "out_of_sample_return",
    "out_of_sample_sharpe",
    "out_of_sample_drawdown",
    "out_of_sample_trades",
    "performance_ratio",
    "degradation_factor",
)
_PORTFOLIO_NUMBERS = (
    "initial_capital",
    "portfolio_stop_loss",
    "max_sector_allocation",
    "correlation_threshold",
)


# =========================================================================== records


@dataclass(slots=True)
class TaskRecord:
    """A row of `tasks`."""

    task_id: uuid.UUID
    kind: str
    state: str
    stage: str | None
    pct: float
    error: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(slots=True)
class AlphaBacktestRunRecord:
    """An alpha-backtest run (the fields of `alphaswarm.common.v1.AlphaBacktestRun`).

    On create, `run_id` / `task_id` None are assigned, `run_name` empty falls
    back to `config["run_name"]` then "alpha-backtest", and `created_at` /
    `updated_at` are ignored (the server stamps them). `error` is
    `{stage, code, message, field}`.
    """

    run_name: str = ""
    run_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    state: str = "pending"
    stage: str | None = None
    config: dict[str, Any] | None = None
    model_name: str | None = None
    model_version: str | None = None
    deployment_id: uuid.UUID | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_train_run_id: str | None = None
    mlflow_backtest_run_id: str | None = None
    backtest_id: uuid.UUID | None = None
    combined_metrics: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_seconds: float | None = None
    predictions_captured: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    trace_id: str | None = None


@dataclass(slots=True)
class DeploymentRecord:
    """A deployment (DeployedModelAlpha).

    `state` None means "active" on create and "unchanged" on update; `history`
    None means "maintained by the catalog" (see the module docstring).
    """

    model_name: str
    model_version: str
    deployment_id: uuid.UUID | None = None
    model_alias: str | None = None
    model_uri: str | None = None
    dataset_cfg: dict[str, Any] | None = None
    strategy_cfg: dict[str, Any] | None = None
    state: str | None = None
    history: list[dict[str, Any]] | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class PredictionAuditBatch:
    """The audit of one run as matrices over (dates x symbols).

    `fields` maps names of `AUDIT_VALUE_FIELDS` to (T, N) arrays; `prediction`
    is required, the others are optional (absent means NULL). `dates` are
    `datetime64[D]` values or ISO-8601 strings.
    """

    dates: Sequence[Any] | np.ndarray
    symbols: Sequence[str]
    fields: Mapping[str, np.ndarray]


@dataclass(slots=True, frozen=True)
class PredictionAuditRecord:
    """A stored audit row; a NULL value is None."""

    date: dt.date
    symbol: str
    prediction: float | None
    realized_return: float | None
    target_weight: float | None
    held_weight: float | None
    pnl_contribution: float | None


@dataclass(slots=True)
class TradeRecord:
    """A trade: `mcp_backtest_trades` plus its `catalog_trade_details` row.

    Optional numbers that are None are stored as NULL; `exit_date` None means
    the trade was still open.
    """

    trade_number: int
    direction: str
    entry_date: dt.date
    entry_price: float
    symbol: str | None = None
    exit_date: dt.date | None = None
    exit_price: float | None = None
    position_size: float | None = None
    pnl: float | None = None
    pnl_percent: float | None = None
    mae: float | None = None
    mfe: float | None = None
    duration_bars: int | None = None
    duration_days: int | None = None
    exit_reason: str | None = None
    fees_paid: float | None = None
    slippage_cost: float | None = None


@dataclass(slots=True)
class BacktestResultRecord:
    """A backtest result: one row of `mcp_backtest_results`.

    `metrics` maps MetricSet names (or column names) to values, None for
    undefined ones, whose reasons are in `metric_reasons`. `conventions` is the
    MetricSet's conventions document. `dates` index `equity_curve` and
    `drawdown_series` (1-D float arrays, NaN for missing). `initial_capital`,
    `fees`, `slippage` None take the seed's server defaults. On read, `notes`
    contains the reasons of every metric stored as NULL.
    """

    symbol: str
    strategy_type: str
    start_date: dt.date
    end_date: dt.date
    backtest_id: uuid.UUID | None = None
    backtest_date: dt.datetime | None = None
    initial_capital: float | None = None
    fees: float | None = None
    slippage: float | None = None
    parameters: dict[str, Any] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_reasons: dict[str, str] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    dates: list[dt.date] | None = None
    equity_curve: np.ndarray | None = None
    drawdown_series: np.ndarray | None = None
    execution_time_seconds: float | None = None
    data_points: int | None = None
    status: str = "completed"
    error_message: str | None = None
    notes: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a list; `next_page_token` is empty on the last page."""

    items: list[T]
    next_page_token: str = ""
    total_size: int | None = None


@dataclass(slots=True)
class OptimizationResultRecord:
    """One parameter set of an optimization: a row of `mcp_optimization_results`.

    The optional numbers are None when not computed. A number that cannot be
    stored (see the module docstring) is NULL on read and `null_reasons` says
    why; on save `null_reasons` is ignored. `optimization_date` None is the
    time of the save; `parameters` None is stored as `{}` (the seed column is
    NOT NULL).
    """

    backtest_id: uuid.UUID | str | None
    parameter_set: int
    parameters: dict[str, Any] | None = None
    optimization_id: uuid.UUID | None = None
    optimization_date: dt.datetime | None = None
    objective_function: str | None = None
    objective_value: float | None = None
    total_return: float | None = None
    sharpe_ratio: float | None = None
    max_drawdown: float | None = None
    win_rate: float | None = None
    profit_factor: float | None = None
    total_trades: int | None = None
    rank: int | None = None
    is_statistically_significant: bool = False
    p_value: float | None = None
    null_reasons: dict[str, str] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class WalkForwardTestRecord:
    """One window of a walk-forward test: a row of `mcp_walk_forward_tests`.

    Optional numbers and `null_reasons` as in `OptimizationResultRecord`;
    `test_date` None is the time of the save. `is_profitable` None means
    unknown.
    """

    parent_backtest_id: uuid.UUID | str | None
    window_size_months: int
    step_size_months: int
    training_start: dt.date
    training_end: dt.date
    test_period_start: dt.date
    test_period_end: dt.date
    walk_forward_id: uuid.UUID | None = None
    test_date: dt.datetime | None = None
    optimal_parameters: dict[str, Any] | None = None
    training_performance: float | None = None
    out_of_sample_return: float | None = None
    out_of_sample_sharpe: float | None = None
    out_of_sample_drawdown: float | None = None
    out_of_sample_trades: int | None = None
    performance_ratio: float | None = None
    degradation_factor: float | None = None
    is_profitable: bool | None = None
    is_statistically_significant: bool = False
    null_reasons: dict[str, str] = field(default_factory=dict)
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class PortfolioBacktestRecord:
    """A portfolio backtest: a row of `mcp_backtest_portfolios` (+ `catalog_portfolio_details`).

    `metrics` maps MetricSet names (`PORTFOLIO_METRIC_COLUMNS`, or the column
    names) to values, None for undefined ones whose reasons are in
    `metric_reasons`; metrics without a column and `conventions` are kept too.
    `weights` maps symbols to target weights. `dates` index `equity_curve`
    (T,) and `weights_history` (T, len(symbols)), NaN for missing.
    `initial_capital` None takes the seed's default 100000. On read, `notes`
    contains the reasons of every number stored as NULL.
    """

    portfolio_name: str
    start_date: dt.date
    end_date: dt.date
    symbols: list[str]
    portfolio_backtest_id: uuid.UUID | None = None
    description: str | None = None
    backtest_date: dt.datetime | None = None
    weights: dict[str, float] | None = None
    rebalance_frequency: str | None = None
    initial_capital: float | None = None
    max_positions: int | None = None
    position_sizing_method: str | None = None
    portfolio_stop_loss: float | None = None
    max_sector_allocation: float | None = None
    correlation_threshold: float | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_reasons: dict[str, str] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    component_backtest_ids: list[uuid.UUID | str] = field(default_factory=list)
    dates: list[dt.date] | None = None
    equity_curve: np.ndarray | None = None
    weights_history: np.ndarray | None = None
    status: str = "completed"
    notes: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True, frozen=True)
class MetricComparisonRecord:
    """One metric of one backtest in a comparison; `value` / `rank` None when the metric is NULL."""

    metric: str
    backtest_id: uuid.UUID
    value: float | None
    rank: int | None
    higher_is_better: bool


@dataclass(slots=True)
class BacktestComparison:
    """The compared results (request order, without series) and one entry per (metric, backtest)."""

    results: list[BacktestResultRecord]
    metrics: list[str]
    comparisons: list[MetricComparisonRecord]


@dataclass(slots=True, frozen=True)
class PerformanceGroupRecord:
    """Aggregates of a group of backtests; an average is None when no backtest of the group has the metric."""

    key: str
    count: int
    avg_total_return: float | None
    avg_sharpe_ratio: float | None
    best_sharpe_ratio: float | None
    avg_max_drawdown: float | None
    avg_win_rate: float | None
    total_trades: int


@dataclass(slots=True)
class PerformanceSummary:
    """The backtests whose `backtest_date` is on or after `since` (= now - `days`), overall and by group."""

    days: int
    since: dt.datetime | None
    overall: PerformanceGroupRecord
    by_symbol: list[PerformanceGroupRecord]
    by_strategy: list[PerformanceGroupRecord]
