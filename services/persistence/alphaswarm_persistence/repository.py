"""The catalog operations: plain SQLAlchemy over `Database`, no gRPC, no protos.

`CatalogRepository` is what `servicer.py` adapts to `PersistenceService`; tests,
benchmarks and the embedded launcher may call it directly. It takes and
returns the plain records defined here (dataclasses, dicts, NumPy arrays,
aware UTC datetimes) and raises `alphaswarm_common.errors` classes whose
`field` is the dotted path of the offending field in the RPC's request
message (`run.deployment_id`, `page_size`, `batch.fields[prediction]`, ...).

Behaviour a caller can rely on:

* Transactions. Every public method is one transaction: a create writes the
  entity, its children and its idempotency key together or not at all.
* Idempotency (AIP-155). A `request_id` is kept in `catalog_request_keys`
  under (kind, request_id) — kinds `alpha_backtest_run`, `deployment`,
  `backtest_result`, `optimization_results`, `walk_forward_tests`,
  `portfolio_backtest`, `task` (tasks.py) — with the SHA-256 of the request
  (timestamps and timings of the attempt excluded, so a replay matches). The same key with the
  same request returns the entity created the first time (`created=False`);
  the same key with a different request is `AlreadyExists` (reason
  `REQUEST_ID_REUSED`, field `request_id`). Concurrent requests with one key
  create one entity: the key row is inserted before the entity, so the
  loser of the race blocks on the unique key, rolls back and reads the
  winner's entity.
* Runs. `create_alpha_backtest_run` writes the task (kind `alpha_backtest`)
  and the run; ids left empty are assigned. `update_alpha_backtest_run` takes
  `{field name of AlphaBacktestRun: new value}`; `state`, `stage` and `error`
  are mirrored to the task (`pct` becomes 100 on success). Moving to
  `running` stamps `started_at`, reaching a terminal state stamps
  `finished_at` and `duration_seconds`, each unless the same update sets it
  or it is already set. A terminal state (succeeded, failed, cancelled) is
  final: changing it to another state is `FailedPrecondition`.
* Deployments. `save_deployment` creates (no id: a new UUID is assigned) or
  replaces the mutable fields of an existing deployment. Creating with a
  caller-chosen id is not allowed: an id that does not exist is `NotFound`,
  so a mistyped id cannot silently fork a second deployment. When an update
  changes `model_version` and the caller sends no `history`, the previous
  version is appended to the history as `{version, from, to}` (ISO-8601 UTC).
* Prediction audit. `save_prediction_audit` replaces the run's rows (delete
  then insert in one transaction) with one row per (date, symbol) whose
  prediction is not NaN; NaN in the other fields is stored as NULL; an
  infinite value is `InvalidArgument`. PostgreSQL is written through psycopg
  3 binary `COPY ... FROM STDIN` with the COPY buffer built by NumPy (no
  per-row Python), SQLite through `executemany` in batches. The run's
  `predictions_captured` becomes whether any row was written.
* Backtest results. Metric names map to the seed columns (`METRIC_COLUMNS`;
  the column names themselves are accepted too). Values are rounded half
  away from zero to the column scale — as PostgreSQL does — on both
  databases. A value that does not fit its column (|x| >= 10^(p-s) after
  rounding, or outside INT4 for integer columns), an infinite value, or an
  undefined one is stored as NULL and the reason is appended to `notes`
  (`"sharpe_ratio: 12345.6 exceeds Numeric(8,4)"`, `"profit_factor: no losing
  trades"`); a save never fails because of one metric, and 0.0 stays 0.0.
  The same applies to the optional numeric columns of trades (reason lines
  start with `trade <n>`); a trade's required `entry_price` that does not fit
  is `InvalidArgument`. Metrics without a column, the reasons of NULL
  metrics and the MetricSet's conventions are kept under the reserved key
  `"_alphaswarm"` of the `parameters` JSON and removed again on read, so a
  MetricSet survives the round trip. The trade fields the seed table lacks
  (symbol, duration_bars) live in `catalog_trade_details`. Equity curve and
  drawdown series are JSON `{"dates": [...], "values": [...]}` with NaN as
  null.
* Catalog queries. `get_best_backtest` ranks the completed results that have
  the metric (and at least `min_trades` trades) in the metric's direction:
  higher is better except for `LOWER_IS_BETTER_METRICS` (volatility,
  downside_volatility, and — beyond the issue's list, because nobody wants
  the longest — max_drawdown_duration and losing_trades); `max_drawdown`
  (<= 0) is higher-better, i.e. the smallest loss wins. `compare_backtests`
  ranks 2 to 50 results per metric in the same directions, ties sharing the
  better rank ("min"), NULLs unranked. `get_performance_summary` aggregates
  the results of the last N days (default 30) overall, by symbol and by
  strategy type with GROUP BY; its means come from exact integer sums, so
  SQLite and PostgreSQL give the same floats.
* Optimizations and walk-forward windows. A save stores all rows of the
  request in one transaction or none; every row's parent backtest must exist
  (`NotFound` naming `results[i].backtest_id` / `windows[i].parent_backtest_id`;
  the parents are share-locked until commit so a concurrent delete cannot
  orphan the rows). Ids left empty are assigned as UUIDv5(batch id, index),
  the batch id being kept with the request key, so a replay returns the same
  ids in request order; the save stands while any of its rows exists (rows
  only go away with their parent). The seed tables have no notes column: the
  reasons of numbers stored as NULL are kept under the reserved key
  `"_alphaswarm": {"null_reasons": {...}}` of `parameters` (optimization) /
  `optimal_parameters` (walk-forward) and removed again on read (the
  records' `null_reasons`). A walk-forward window's test period must start
  after its training window ends. Deleting the parent backtest deletes the
  rows (ON DELETE CASCADE).
* Portfolio backtests. Metric names map to the seed columns
  (`PORTFOLIO_METRIC_COLUMNS`); values that do not fit are NULL with the
  reason in `notes`, as for backtest results. The reasons, the metrics
  without a column and the MetricSet's conventions live in the side table
  `catalog_portfolio_details` (the seed row has no free JSON column), so the
  MetricSet survives the round trip. The equity curve is JSON `{"dates",
  "values"}`, the weights held `{"dates", "symbols", "values": [[...]]}`
  (dates x the portfolio's symbols), NaN as null. `component_backtest_ids`
  are references, not foreign keys (the seed declares none): a deleted
  component stays listed.
* Pagination. Every list is keyset-paginated, so pages stay stable while rows
  are inserted or deleted. A page token is URL-safe base64 of JSON
  `{"c": cursor, "f": filter hash}`; a token used with other filters or
  another order is `InvalidArgument(field="page_token")`. Runs and
  deployments: newest first on (created_at, id). Prediction audit: (date,
  symbol) ascending, symbols in code-point order on both databases. Backtest
  results: `order_by` column (default `-backtest_date`), NULLs last in both
  directions on both databases, ties broken by `backtest_id` in the same
  direction. Optimizations of one backtest: `rank` (NULLs last), newest
  `optimization_date`, `parameter_set`, id; of all: newest
  `optimization_date`, `parameter_set`, id. Walk-forward windows of one
  parent: `test_period_start`, newest `test_date`, id; of all: newest
  `test_date`, `test_period_start`, id. Portfolios: newest `backtest_date`,
  id descending. `page_size` 0 means the default, a negative one is
  `InvalidArgument`, larger than the maximum is clamped (AIP-158).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Generic, TypeVar, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from alphaswarm_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import (
    AUDIT_VALUE_FIELDS,
    AlphaBacktestRunRow,
    BacktestPortfolioRow,
    BacktestResultRow,
    BacktestTradeRow,
    DeploymentRow,
    OptimizationResultRow,
    PortfolioDetailRow,
    PredictionAuditRow,
    RequestKeyRow,
    TaskRow,
    TradeDetailRow,
    WalkForwardTestRow,
    utcnow,
)

__all__ = [
    "BACKTEST_STATUSES",
    "COMPARE_DEFAULT_METRICS",
    "DEPLOYMENT_STATES",
    "LOWER_IS_BETTER_METRICS",
    "METRIC_COLUMNS",
    "PORTFOLIO_METRIC_COLUMNS",
    "POSITION_SIZING_METHODS",
    "REBALANCE_FREQUENCIES",
    "RUN_STATES",
    "RUN_UPDATABLE_FIELDS",
    "TERMINAL_RUN_STATES",
    "AlphaBacktestRunRecord",
    "BacktestComparison",
    "BacktestResultRecord",
    "CatalogRepository",
    "DeploymentRecord",
    "MetricComparisonRecord",
    "OptimizationResultRecord",
    "Page",
    "PerformanceGroupRecord",
    "PerformanceSummary",
    "PortfolioBacktestRecord",
    "PredictionAuditBatch",
    "PredictionAuditRecord",
    "TaskRecord",
    "TradeRecord",
    "WalkForwardTestRecord",
    "metric_higher_is_better",
    "parse_date",
    "parse_uuid",
]

log = logging.getLogger(__name__)

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


# =========================================================================== helpers


def parse_uuid(value: uuid.UUID | str | None, field_name: str, *, required: bool = False) -> uuid.UUID | None:
    """A UUID from a UUID or its text; empty is None (InvalidArgument naming `field_name` when required or malformed)."""
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{value!r} is not a UUID", field=field_name) from None


def _required_uuid(value: uuid.UUID | str | None, field_name: str) -> uuid.UUID:
    parsed = parse_uuid(value, field_name, required=True)
    assert parsed is not None
    return parsed


def _as_date(value: Any, field_name: str, *, required: bool = True) -> dt.date | None:
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required (YYYY-MM-DD)", field=field_name)
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidArgument(f"{value!r} is not a date (YYYY-MM-DD)", field=field_name) from None


def parse_date(value: Any, field_name: str) -> dt.date:
    """A required date from a date, datetime64 or ISO-8601 text (InvalidArgument naming `field_name`)."""
    parsed = _as_date(value, field_name)
    assert parsed is not None
    return parsed


def _check_aware(value: dt.datetime | None, field_name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidArgument(f"{value!r} is not a timestamp", field=field_name)
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument("must be timezone-aware", field=field_name)
    return value.astimezone(dt.UTC)


def _column_length(column: Any) -> int | None:
    return getattr(column.type, "length", None)


def _check_str(value: str | None, column: Any, field_name: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{value!r} is not a string", field=field_name)
    length = _column_length(column)
    if length is not None and len(value) > length:
        raise InvalidArgument(
            f"is {len(value)} characters long, at most {length} are stored", field=field_name
        )
    return value


def _json_safe(value: Any) -> Any:
    """A JSON document with NaN/inf as null, NumPy scalars as Python, dates as ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _check_json(value: Any, field_name: str, *, kind: type | tuple[type, ...] = dict) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind):
        raise InvalidArgument(f"must be a JSON {getattr(kind, '__name__', 'document')}", field=field_name)
    return _json_safe(value)


# When a request happened and how long it took describe the attempt, not the request: a replay
# of the same save (a redelivered job) carries new values and must still match.
_VOLATILE_FIELDS = frozenset(
    {"created_at", "updated_at", "backtest_date", "optimization_date", "test_date", "execution_time_seconds"}
)


def _log_conflict(kind: str, exc: BaseException | None) -> str:
    """Log a constraint violation (its text names tables, columns and values) under a new error id."""
    error_id = uuid.uuid4().hex[:12]
    log.info("%s conflicts with a stored row (error id %s): %s", kind, error_id, exc)
    return error_id


def _conflict(kind: str, exc: IntegrityError) -> AlreadyExists:
    """AlreadyExists for a violated constraint, without the database's text."""
    error_id = _log_conflict(kind, exc)
    return AlreadyExists(
        f"the {kind.replace('_', ' ')} conflicts with a stored row (error id {error_id})",
        details={"error_id": error_id},
    )


def _fingerprint(*parts: Any) -> str:
    def canon(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: canon(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name not in _VOLATILE_FIELDS
            }
        if isinstance(value, np.ndarray):
            return [None if isinstance(v, float) and math.isnan(v) else v for v in value.tolist()]
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, Mapping):
            return {str(k): canon(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [canon(v) for v in value]
        return value

    doc = json.dumps([canon(p) for p in parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def _page_size(value: int | None, default: int, maximum: int) -> int:
    size = int(value or 0)
    if size < 0:
        raise InvalidArgument(f"must not be negative (got {size})", field="page_size")
    return default if size == 0 else min(size, maximum)


def _filter_hash(kind: str, filters: Mapping[str, Any]) -> str:
    doc = json.dumps({"kind": kind, **filters}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _encode_token(kind: str, cursor: list[Any], filters: Mapping[str, Any]) -> str:
    doc = {"c": cursor, "f": _filter_hash(kind, filters)}
    raw = json.dumps(doc, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None, kind: str, filters: Mapping[str, Any], arity: int) -> list[Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        cursor = doc["c"]
        fhash = doc["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("is not a page token of this list", field="page_token") from None
    if not isinstance(cursor, list) or len(cursor) != arity:
        raise InvalidArgument("is not a page token of this list", field="page_token")
    if fhash != _filter_hash(kind, filters):
        raise InvalidArgument(
            "was issued for other filters or another order; repeat the request that produced it",
            field="page_token",
        )
    return cursor


def _parse_token_datetime(value: Any) -> dt.datetime:
    try:
        out = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidArgument("is not a page token of this list", field="page_token") from None
    if out.tzinfo is None:
        raise InvalidArgument("is not a page token of this list", field="page_token")
    return out


def _parse_token_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument("is not a page token of this list", field="page_token") from None


def _fit_numeric(value: float, precision: int, scale: int) -> tuple[float | None, str | None]:
    """Round half away from zero to `scale` (as PostgreSQL does); None and a reason when it does not fit."""
    quantum = decimal.Decimal(1).scaleb(-scale)
    rounded = decimal.Decimal(repr(float(value))).quantize(quantum, rounding=decimal.ROUND_HALF_UP)
    if abs(rounded) >= decimal.Decimal(10) ** (precision - scale):
        return None, f"{float(value)!r} exceeds Numeric({precision},{scale})"
    return float(rounded), None


def _fit_column(value: Any, column: Any) -> tuple[float | int | None, str | None]:
    """The value to store in a numeric/integer column and, when it becomes NULL, why."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None, f"{value!r} is not a number"
    number = float(value)
    if math.isnan(number):
        return None, "NaN is not a number"
    if math.isinf(number):
        return None, f"{number!r} is not finite"
    col_type = column.type
    if isinstance(col_type, sa.Integer):
        integral = round(number)
        if abs(integral) > _INT4_MAX:
            return None, f"{number!r} exceeds Integer"
        return int(integral), None
    if isinstance(col_type, sa.Numeric) and not isinstance(col_type, sa.Float):
        return _fit_numeric(number, int(col_type.precision or 0), int(col_type.scale or 0))
    return number, None


def _metric_column(name: str) -> str | None:
    if name in METRIC_COLUMNS:
        return METRIC_COLUMNS[name]
    if name in _COLUMN_METRIC:
        return name
    return None


def _series_json(dates: list[str], values: np.ndarray | None, field_name: str) -> dict[str, Any] | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidArgument(f"must be 1-D, got shape {arr.shape}", field=field_name)
    if arr.size == 0 and not dates:
        return None
    if arr.size != len(dates):
        raise InvalidArgument(f"has {arr.size} values for {len(dates)} dates", field=field_name)
    out: list[float | None] = [v if math.isfinite(v) else None for v in arr.tolist()]
    return {"dates": dates, "values": out}


def _series_from_json(doc: Any) -> tuple[list[dt.date], np.ndarray] | None:
    if not isinstance(doc, Mapping) or "values" not in doc:
        return None
    values = np.asarray([np.nan if v is None else v for v in doc["values"]], dtype=np.float64)
    dates = [dt.date.fromisoformat(str(d)) for d in doc.get("dates") or []]
    return dates, values


def metric_higher_is_better(column: str) -> bool:
    """Whether a larger value of a `mcp_backtest_results` metric column is better (see LOWER_IS_BETTER_METRICS)."""
    return column not in LOWER_IS_BETTER_METRICS


def _known_metric(name: str, field_name: str) -> str:
    """The `mcp_backtest_results` column of a metric (MetricSet or column name); InvalidArgument otherwise."""
    text = (name or "").strip()
    if not text:
        raise InvalidArgument("is required (a metric column such as sharpe_ratio)", field=field_name)
    column = _metric_column(text)
    if column is None:
        raise InvalidArgument(
            f"{text!r} is not a metric column; use one of {', '.join(METRIC_COLUMNS.values())}",
            field=field_name,
        )
    return column


_SortKey = tuple[Any, bool, bool]
"""(column attribute, descending, nullable) of a keyset order; NULLs sort last in both directions."""


def _keyset_order(keys: Sequence[_SortKey]) -> list[Any]:
    out: list[Any] = []
    for column, descending, nullable in keys:
        if nullable:
            out.append(column.is_(None))  # false < true: values first, NULLs last
        out.append(column.desc() if descending else column.asc())
    return out


def _token_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _check_int(value: Any, field_name: str, *, minimum: int, required: bool = True) -> int | None:
    if value is None:
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"{value!r} is not an integer", field=field_name)
    number = int(value)
    if not minimum <= number <= _INT4_MAX:
        raise InvalidArgument(f"must be between {minimum} and {_INT4_MAX}, got {number}", field=field_name)
    return number


def _check_choice(value: str | None, choices: Sequence[str], field_name: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in choices:
        raise InvalidArgument(f"{value!r} is not one of {', '.join(choices)}", field=field_name)
    return value


def _fit_fields(source: Any, model: Any, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """{name: storable value} of numeric attributes of `source` and, for those that became NULL, why."""
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name in names:
        stored, why = _fit_column(getattr(source, name), getattr(model, name))
        values[name] = stored
        if why:
            reasons[name] = why
    return values, reasons


def _with_reserved(
    params: dict[str, Any] | None, reasons: Mapping[str, str], field_name: str, *, keep_absent: bool
) -> dict[str, Any] | None:
    """`params` with the reasons of NULL numbers under the reserved key (absent when there are none)."""
    if params is not None and _RESERVED_PARAMETERS_KEY in params:
        raise InvalidArgument(f"key {_RESERVED_PARAMETERS_KEY!r} is reserved", field=field_name)
    if not reasons:
        return params
    reserved: dict[str, Any] = {"null_reasons": dict(reasons)}
    if params is None and keep_absent:
        reserved["no_parameters"] = True
    return {**(params or {}), _RESERVED_PARAMETERS_KEY: reserved}


def _split_reserved(doc: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(the caller's JSON document, null reasons) of a stored JSON column that may carry the reserved key."""
    if not isinstance(doc, Mapping):
        return doc, {}
    params = dict(doc)
    reserved = params.pop(_RESERVED_PARAMETERS_KEY, None) or {}
    if reserved.get("no_parameters") and not params:
        return None, dict(reserved.get("null_reasons") or {})
    return params, dict(reserved.get("null_reasons") or {})


def _matrix_json(
    dates: list[str], symbols: list[str], values: np.ndarray | None, field_name: str
) -> dict[str, Any] | None:
    """A (dates x symbols) matrix as JSON `{"dates", "symbols", "values": [[...], ...]}`, NaN as null."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 and not dates:
        return None
    if arr.ndim == 1 and len(symbols) == 1:
        arr = arr[:, None]
    expected = (len(dates), len(symbols))
    if arr.shape != expected:
        raise InvalidArgument(
            f"has shape {arr.shape}, expected {expected} (dates x symbols)", field=field_name
        )
    cells = arr.astype(object)
    cells[~np.isfinite(arr)] = None
    return {"dates": dates, "symbols": symbols, "values": cells.tolist()}


def _matrix_from_json(doc: Any) -> tuple[list[dt.date], list[str], np.ndarray] | None:
    if not isinstance(doc, Mapping) or "values" not in doc:
        return None
    symbols = [str(s) for s in doc.get("symbols") or []]
    dates = [dt.date.fromisoformat(str(d)) for d in doc.get("dates") or []]
    values = np.array(doc["values"], dtype=np.float64)  # None -> NaN
    if values.size == 0:
        values = values.reshape(len(dates), len(symbols))
    return dates, symbols, values


def _chunks(values: Sequence[T], size: int = _IN_CHUNK) -> Iterable[Sequence[T]]:
    for lo in range(0, len(values), size):
        yield values[lo : lo + size]


def _exact_mean_parts(column: Any) -> tuple[Any, Any]:
    """SQL (sum of the value in units of the column's scale, as an exact integer; count of non-NULL values).

    A Numeric(p, s) value times 10^s is an integer, so summing those integers
    is exact on both databases (PostgreSQL's numeric and SQLite's REAL, which
    holds the rounded value to within far less than half a unit), and the mean
    computed from them is the same float on both.
    """
    scale = int(column.type.scale or 0)
    units = sa.cast(sa.func.round(column * (10**scale)), sa.BigInteger)
    return sa.func.sum(units), sa.func.count(column)


def _exact_mean(units_sum: Any, count: Any, scale: int) -> float | None:
    n = int(count or 0)
    if n == 0 or units_sum is None:
        return None
    return float(decimal.Decimal(int(units_sum)) / (decimal.Decimal(10) ** scale * n))


def _float(value: Any) -> float | None:
    """A Numeric column's value as float (SQLite hands back an integral value as int)."""
    return None if value is None else float(value)


# =========================================================================== repository


class CatalogRepository:
    """The catalog operations over one `Database` (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ idempotency

    def _idempotent(
        self,
        kind: str,
        request_id: str | None,
        fingerprint: str,
        entity_id: uuid.UUID | None,
        create: Callable[[Session, uuid.UUID], tuple[T, bool]],
        load: Callable[[Session, uuid.UUID], T | None],
    ) -> tuple[T, bool]:
        """Run `create` once per (kind, request_id); replay the stored entity for a repeated key.

        `create(session, entity_id)` returns (result, created). The key row is
        inserted and flushed first, so a concurrent request with the same key
        waits on the unique key and fails there, before creating anything.
        """
        eid = entity_id or uuid.uuid4()
        if not request_id:
            try:
                with self.db.session(write=True) as s:
                    return create(s, eid)
            except IntegrityError as exc:
                raise _conflict(kind, exc) from None
        _check_str(request_id, RequestKeyRow.request_id, "request_id")
        last_error: IntegrityError | None = None
        for _attempt in range(5):
            try:
                with self.db.session(write=True) as s:
                    key = s.get(RequestKeyRow, (kind, request_id))
                    if key is not None:
                        if key.fingerprint != fingerprint:
                            raise AlreadyExists(
                                f"request_id {request_id!r} was already used for a different {kind} request",
                                field="request_id",
                                reason="REQUEST_ID_REUSED",
                            )
                        existing = load(s, key.entity_id)
                        if existing is not None:
                            return existing, False
                        # The entity was deleted since: the key is stale, start over.
                        s.delete(key)
                        s.flush()
                    s.add(
                        RequestKeyRow(
                            kind=kind, request_id=request_id, entity_id=eid, fingerprint=fingerprint
                        )
                    )
                    s.flush()
                    return create(s, eid)
            except IntegrityError as exc:
                # Another transaction stored the key (or the entity) first: read it on the next attempt.
                last_error = exc
                continue
        _log_conflict(kind, last_error)
        raise AlreadyExists(f"request_id {request_id!r} kept conflicting", field="request_id")

    # ------------------------------------------------------------------ runs

    @staticmethod
    def _run_record(row: AlphaBacktestRunRow) -> AlphaBacktestRunRecord:
        return AlphaBacktestRunRecord(
            run_id=row.run_id,
            task_id=row.task_id,
            run_name=row.run_name,
            state=row.state,
            stage=row.stage,
            config=row.config,
            model_name=row.model_name,
            model_version=row.model_version,
            deployment_id=row.deployment_id,
            mlflow_parent_run_id=row.mlflow_parent_run_id,
            mlflow_train_run_id=row.mlflow_train_run_id,
            mlflow_backtest_run_id=row.mlflow_backtest_run_id,
            backtest_id=row.backtest_id,
            combined_metrics=row.combined_metrics,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration_seconds,
            predictions_captured=bool(row.predictions_captured),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @staticmethod
    def _check_state(state: str, field_name: str) -> str:
        if state not in RUN_STATES:
            raise InvalidArgument(f"{state!r} is not one of {', '.join(RUN_STATES)}", field=field_name)
        return state

    @staticmethod
    def _check_error(error: Mapping[str, Any] | None, field_name: str) -> dict[str, Any] | None:
        if error is None:
            return None
        if not isinstance(error, Mapping):
            raise InvalidArgument("must be {stage, code, message, field}", field=field_name)
        unknown = set(error) - {"stage", "code", "message", "field"}
        if unknown:
            raise InvalidArgument(
                f"unknown keys {sorted(unknown)}; expected stage, code, message, field", field=field_name
            )
        return {
            k: (None if error.get(k) in (None, "") else str(error[k]))
            for k in ("stage", "code", "message", "field")
        }

    @staticmethod
    def _check_link(
        session: Session, model: Any, value: uuid.UUID | None, field_name: str, what: str
    ) -> None:
        if value is not None and session.get(model, value) is None:
            raise NotFound(f"{what} {value} does not exist", field=field_name)

    def create_alpha_backtest_run(
        self, run: AlphaBacktestRunRecord, *, request_id: str | None = None
    ) -> tuple[AlphaBacktestRunRecord, bool]:
        """Create a run and its task in one transaction; (run, created). See the module docstring."""
        run_id = parse_uuid(run.run_id, "run.run_id")
        task_id = parse_uuid(run.task_id, "run.task_id")
        config = _check_json(run.config, "run.config")
        run_name = run.run_name or (config or {}).get("run_name") or "alpha-backtest"
        values: dict[str, Any] = {
            "run_name": _check_str(run_name, AlphaBacktestRunRow.run_name, "run.run_name", required=True),
            "state": self._check_state(run.state or "pending", "run.state"),
            "stage": _check_str(run.stage, AlphaBacktestRunRow.stage, "run.stage"),
            "config": config,
            "model_name": _check_str(run.model_name, AlphaBacktestRunRow.model_name, "run.model_name"),
            "model_version": _check_str(
                run.model_version, AlphaBacktestRunRow.model_version, "run.model_version"
            ),
            "deployment_id": parse_uuid(run.deployment_id, "run.deployment_id"),
            "backtest_id": parse_uuid(run.backtest_id, "run.backtest_id"),
            "combined_metrics": _check_json(run.combined_metrics, "run.combined_metrics"),
            "error": self._check_error(run.error, "run.error"),
            "started_at": _check_aware(run.started_at, "run.started_at"),
            "finished_at": _check_aware(run.finished_at, "run.finished_at"),
            "duration_seconds": self._check_duration(run.duration_seconds, "run.duration_seconds"),
            "predictions_captured": bool(run.predictions_captured),
        }
        for name in ("mlflow_parent_run_id", "mlflow_train_run_id", "mlflow_backtest_run_id"):
            values[name] = _check_str(getattr(run, name), getattr(AlphaBacktestRunRow, name), f"run.{name}")

        def create(s: Session, eid: uuid.UUID) -> tuple[AlphaBacktestRunRecord, bool]:
            if s.get(AlphaBacktestRunRow, eid) is not None:
                raise AlreadyExists(f"run {eid} already exists", field="run.run_id")
            tid = task_id or uuid.uuid4()
            if s.get(TaskRow, tid) is not None:
                raise AlreadyExists(f"task {tid} already exists", field="run.task_id")
            self._check_link(s, DeploymentRow, values["deployment_id"], "run.deployment_id", "deployment")
            self._check_link(
                s, BacktestResultRow, values["backtest_id"], "run.backtest_id", "backtest result"
            )
            now = utcnow()
            s.add(
                TaskRow(
                    task_id=tid,
                    kind=TASK_KIND_ALPHA_BACKTEST,
                    state=values["state"],
                    stage=values["stage"],
                    pct=100.0 if values["state"] == "succeeded" else 0.0,
                    error=values["error"],
                    created_at=now,
                    updated_at=now,
                )
            )
            s.flush()
            row = AlphaBacktestRunRow(run_id=eid, task_id=tid, created_at=now, updated_at=now, **values)
            s.add(row)
            s.flush()
            return self._run_record(row), True

        def load(s: Session, eid: uuid.UUID) -> AlphaBacktestRunRecord | None:
            row = s.get(AlphaBacktestRunRow, eid)
            return None if row is None else self._run_record(row)

        fingerprint = _fingerprint("alpha_backtest_run", run)
        return self._idempotent("alpha_backtest_run", request_id, fingerprint, run_id, create, load)

    @staticmethod
    def _check_duration(value: float | None, field_name: str) -> float | None:
        if value is None:
            return None
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise InvalidArgument(f"must be a finite number of seconds >= 0, got {value!r}", field=field_name)
        return number

    def update_alpha_backtest_run(
        self,
        run_id: uuid.UUID | str,
        changes: Mapping[str, Any],
        *,
        guard: Callable[[Session, uuid.UUID], None] | None = None,
    ) -> AlphaBacktestRunRecord:
        """Apply `changes` ({AlphaBacktestRun field name: value}) to a run and mirror state/stage/error to its task.

        `guard(session, task_id)` runs in the same transaction once the run row is locked (the
        fencing check of `repo_leases`); it refuses the update by raising."""
        rid = _required_uuid(run_id, "run.run_id")
        if not changes:
            raise InvalidArgument("names no field to update", field="update_mask")
        for name in changes:
            if name in _RUN_IMMUTABLE_FIELDS:
                raise InvalidArgument(f"{name!r} cannot be changed", field="update_mask")
            if name not in RUN_UPDATABLE_FIELDS:
                raise InvalidArgument(
                    f"unknown field {name!r}; updatable fields: {', '.join(sorted(RUN_UPDATABLE_FIELDS))}",
                    field="update_mask",
                )
        values: dict[str, Any] = {}
        for name, value in changes.items():
            path = f"run.{name}"
            if name == "state":
                values[name] = self._check_state(value, path)
            elif name == "run_name":
                values[name] = _check_str(value, AlphaBacktestRunRow.run_name, path, required=True)
            elif name in ("config", "combined_metrics"):
                values[name] = _check_json(value, path)
            elif name == "error":
                values[name] = self._check_error(value, path)
            elif name in ("deployment_id", "backtest_id"):
                values[name] = parse_uuid(value, path)
            elif name in ("started_at", "finished_at"):
                values[name] = _check_aware(value, path)
            elif name == "duration_seconds":
                values[name] = self._check_duration(value, path)
            elif name == "predictions_captured":
                values[name] = bool(value)
            else:
                values[name] = _check_str(value, getattr(AlphaBacktestRunRow, name), path)

        with self.db.session(write=True) as s:
            row = s.get(AlphaBacktestRunRow, rid, with_for_update=True)
            if row is None:
                raise NotFound(f"run {rid} does not exist", field="run.run_id")
            if guard is not None:
                guard(s, row.task_id)
            if "deployment_id" in values:
                self._check_link(s, DeploymentRow, values["deployment_id"], "run.deployment_id", "deployment")
            if "backtest_id" in values:
                self._check_link(
                    s, BacktestResultRow, values["backtest_id"], "run.backtest_id", "backtest result"
                )
            new_state = values.get("state", row.state)
            if row.state in TERMINAL_RUN_STATES and new_state != row.state:
                raise FailedPrecondition(
                    f"run {rid} is {row.state}, a terminal state; it cannot become {new_state}",
                    field="run.state",
                )
            now = utcnow()
            if new_state == "running" and "started_at" not in values and row.started_at is None:
                values["started_at"] = now
            if new_state in TERMINAL_RUN_STATES and "finished_at" not in values and row.finished_at is None:
                values["finished_at"] = now
            for name, value in values.items():
                setattr(row, name, value)
            if (
                "duration_seconds" not in values
                and row.duration_seconds is None
                and row.started_at
                and row.finished_at
            ):
                row.duration_seconds = max((row.finished_at - row.started_at).total_seconds(), 0.0)
            row.updated_at = now
            if {"state", "stage", "error"} & values.keys():
                task = s.get(TaskRow, row.task_id, with_for_update=True)
                if task is not None:
                    task.state = row.state
                    task.stage = row.stage
                    task.error = row.error
                    if row.state == "succeeded":
                        task.pct = 100.0
                    task.updated_at = now
            s.flush()
            return self._run_record(row)

    def get_alpha_backtest_run(
        self, *, run_id: uuid.UUID | str | None = None, task_id: uuid.UUID | str | None = None
    ) -> AlphaBacktestRunRecord:
        """One run by run id, or by task id when the run id is empty."""
        rid = parse_uuid(run_id, "run_id")
        tid = parse_uuid(task_id, "task_id")
        if rid is None and tid is None:
            raise InvalidArgument("give run_id or task_id", field="run_id")
        with self.db.session() as s:
            if rid is not None:
                row = s.get(AlphaBacktestRunRow, rid)
                if row is None or (tid is not None and row.task_id != tid):
                    raise NotFound(
                        f"run {rid} does not exist" + (f" for task {tid}" if tid else ""), field="run_id"
                    )
            else:
                row = s.scalars(
                    sa.select(AlphaBacktestRunRow).where(AlphaBacktestRunRow.task_id == tid)
                ).one_or_none()
                if row is None:
                    raise NotFound(f"no run for task {tid}", field="task_id")
            return self._run_record(row)

    def get_task(self, task_id: uuid.UUID | str) -> TaskRecord:
        """One task."""
        tid = _required_uuid(task_id, "task_id")
        with self.db.session() as s:
            row = s.get(TaskRow, tid)
            if row is None:
                raise NotFound(f"task {tid} does not exist", field="task_id")
            return TaskRecord(
                task_id=row.task_id,
                kind=row.kind,
                state=row.state,
                stage=row.stage,
                pct=row.pct,
                error=row.error,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )

    def list_alpha_backtest_runs(
        self, *, page_size: int = 0, page_token: str = "", state: str | None = None
    ) -> Page[AlphaBacktestRunRecord]:
        """Runs newest first (created_at, run_id descending), optionally of one state."""
        size = _page_size(page_size, *_RUN_PAGE)
        if state:
            self._check_state(state, "state")
        filters = {"state": state or None}
        cursor = _decode_token(page_token, "runs", filters, 2)
        model = AlphaBacktestRunRow
        stmt = sa.select(model)
        if state:
            stmt = stmt.where(model.state == state)
        if cursor is not None:
            c_at, c_id = _parse_token_datetime(cursor[0]), _parse_token_uuid(cursor[1])
            stmt = stmt.where(
                sa.or_(model.created_at < c_at, sa.and_(model.created_at == c_at, model.run_id < c_id))
            )
        stmt = stmt.order_by(model.created_at.desc(), model.run_id.desc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._run_record(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("runs", [last.created_at.isoformat(), str(last.run_id)], filters)
        return Page(items, token)

    # ------------------------------------------------------------------ deployments

    @staticmethod
    def _deployment_record(row: DeploymentRow) -> DeploymentRecord:
        return DeploymentRecord(
            deployment_id=row.deployment_id,
            model_name=row.model_name,
            model_version=row.model_version,
            model_alias=row.model_alias,
            model_uri=row.model_uri,
            dataset_cfg=row.dataset_cfg,
            strategy_cfg=row.strategy_cfg,
            state=row.state,
            history=list(row.history or []),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def save_deployment(
        self, deployment: DeploymentRecord, *, request_id: str | None = None
    ) -> tuple[DeploymentRecord, bool]:
        """Create (no id) or update (existing id) a deployment; (deployment, created)."""
        did = parse_uuid(deployment.deployment_id, "deployment.deployment_id")
        state = deployment.state or None
        if state is not None and state not in DEPLOYMENT_STATES:
            raise InvalidArgument(
                f"{state!r} is not one of {', '.join(DEPLOYMENT_STATES)}", field="deployment.state"
            )
        values: dict[str, Any] = {
            "model_name": _check_str(
                deployment.model_name, DeploymentRow.model_name, "deployment.model_name", required=True
            ),
            "model_version": _check_str(
                deployment.model_version,
                DeploymentRow.model_version,
                "deployment.model_version",
                required=True,
            ),
            "model_alias": _check_str(
                deployment.model_alias, DeploymentRow.model_alias, "deployment.model_alias"
            ),
            "model_uri": _check_str(deployment.model_uri, DeploymentRow.model_uri, "deployment.model_uri"),
            "dataset_cfg": _check_json(deployment.dataset_cfg, "deployment.dataset_cfg"),
            "strategy_cfg": _check_json(deployment.strategy_cfg, "deployment.strategy_cfg"),
        }
        history = _check_json(deployment.history, "deployment.history", kind=list)

        def save(s: Session, eid: uuid.UUID) -> tuple[DeploymentRecord, bool]:
            now = utcnow()
            if did is None:
                row = DeploymentRow(
                    deployment_id=eid,
                    state=state or "active",
                    history=history or [],
                    created_at=now,
                    updated_at=now,
                    **values,
                )
                s.add(row)
                s.flush()
                return self._deployment_record(row), True
            current = s.get(DeploymentRow, did, with_for_update=True)
            if current is None:
                raise NotFound(
                    f"deployment {did} does not exist; leave deployment_id empty to create one "
                    "(ids are assigned by the catalog)",
                    field="deployment.deployment_id",
                )
            if history is not None:
                current.history = history
            elif values["model_version"] != current.model_version:
                past = list(current.history or [])
                since = past[-1].get("to") if past and isinstance(past[-1], dict) else None
                past.append(
                    {
                        "version": current.model_version,
                        "from": since or current.created_at.isoformat(),
                        "to": now.isoformat(),
                    }
                )
                current.history = past
            for name, value in values.items():
                setattr(current, name, value)
            if state is not None:
                current.state = state
            current.updated_at = now
            s.flush()
            return self._deployment_record(current), False

        def load(s: Session, eid: uuid.UUID) -> DeploymentRecord | None:
            row = s.get(DeploymentRow, eid)
            return None if row is None else self._deployment_record(row)

        fingerprint = _fingerprint("deployment", deployment)
        return self._idempotent("deployment", request_id, fingerprint, did, save, load)

    def get_deployment(self, deployment_id: uuid.UUID | str) -> DeploymentRecord:
        """One deployment."""
        did = _required_uuid(deployment_id, "deployment_id")
        with self.db.session() as s:
            row = s.get(DeploymentRow, did)
            if row is None:
                raise NotFound(f"deployment {did} does not exist", field="deployment_id")
            return self._deployment_record(row)

    def list_deployments(self, *, page_size: int = 0, page_token: str = "") -> Page[DeploymentRecord]:
        """Deployments newest first (created_at, deployment_id descending)."""
        size = _page_size(page_size, *_DEPLOYMENT_PAGE)
        cursor = _decode_token(page_token, "deployments", {}, 2)
        model = DeploymentRow
        stmt = sa.select(model)
        if cursor is not None:
            c_at, c_id = _parse_token_datetime(cursor[0]), _parse_token_uuid(cursor[1])
            stmt = stmt.where(
                sa.or_(model.created_at < c_at, sa.and_(model.created_at == c_at, model.deployment_id < c_id))
            )
        stmt = stmt.order_by(model.created_at.desc(), model.deployment_id.desc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._deployment_record(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("deployments", [last.created_at.isoformat(), str(last.deployment_id)], {})
        return Page(items, token)

    # ------------------------------------------------------------------ prediction audit

    @staticmethod
    def _audit_arrays(batch: PredictionAuditBatch) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
        try:
            dates = np.asarray(batch.dates, dtype="datetime64[D]")
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"not ISO dates: {exc}", field="batch.dates") from None
        if dates.ndim != 1:
            raise InvalidArgument("must be a list of dates", field="batch.dates")
        if np.isnat(dates).any():
            raise InvalidArgument("contains an empty date", field="batch.dates")
        if np.unique(dates).size != dates.size:
            raise InvalidArgument("dates must be unique", field="batch.dates")
        symbols = [str(s) for s in batch.symbols]
        limit = _column_length(PredictionAuditRow.symbol) or 32
        for i, sym in enumerate(symbols):
            if not sym:
                raise InvalidArgument("is empty", field=f"batch.symbols[{i}]")
            if len(sym) > limit:
                raise InvalidArgument(
                    f"{sym!r} is longer than {limit} characters", field=f"batch.symbols[{i}]"
                )
        if len(set(symbols)) != len(symbols):
            raise InvalidArgument("symbols must be unique", field="batch.symbols")
        unknown = set(batch.fields) - _AUDIT_FIELD_SET
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidArgument(
                f"unknown field {name!r}; fields are {', '.join(AUDIT_VALUE_FIELDS)}",
                field=f"batch.fields[{name}]",
            )
        if "prediction" not in batch.fields:
            raise InvalidArgument("prediction is required", field="batch.fields[prediction]")
        shape = (dates.size, len(symbols))
        fields: dict[str, np.ndarray] = {}
        for name in AUDIT_VALUE_FIELDS:
            if name not in batch.fields:
                continue
            arr = np.asarray(batch.fields[name])
            path = f"batch.fields[{name}]"
            if arr.shape != shape:
                raise InvalidArgument(
                    f"has shape {arr.shape}, expected {shape} (dates x symbols)", field=path
                )
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise InvalidArgument(f"dtype {arr.dtype} is not numeric", field=path)
            arr = arr.astype(np.float64, copy=False)
            inf = np.isinf(arr)
            if inf.any():
                t, n = np.argwhere(inf)[0]
                raise InvalidArgument(
                    f"is infinite at ({dates[t]}, {symbols[n]}); use NaN for a missing value", field=path
                )
            fields[name] = arr
        return dates, symbols, fields

    def save_prediction_audit(self, run_id: uuid.UUID | str, batch: PredictionAuditBatch) -> int:
        """Replace the audit rows of a run with the cells of `batch` whose prediction is present; rows written."""
        rid = _required_uuid(run_id, "run_id")
        dates, symbols, fields = self._audit_arrays(batch)
        present = ~np.isnan(fields["prediction"])
        t_idx, s_idx = np.nonzero(present)  # row-major: by date, then by the batch's symbol order
        columns = {name: arr[t_idx, s_idx] for name, arr in fields.items()}
        n_rows = int(t_idx.size)
        with self.db.session(write=True) as s:
            run = s.get(AlphaBacktestRunRow, rid, with_for_update=True)
            if run is None:
                raise NotFound(f"run {rid} does not exist", field="run_id")
            s.execute(sa.delete(PredictionAuditRow).where(PredictionAuditRow.run_id == rid))
            if n_rows:
                dbapi = s.connection().connection.driver_connection
                if self.db.is_postgresql:
                    _copy_audit_postgresql(dbapi, rid, dates, symbols, t_idx, s_idx, columns)
                else:
                    _insert_audit_executemany(dbapi, rid, dates, symbols, t_idx, s_idx, columns)
            run.predictions_captured = n_rows > 0
            run.updated_at = utcnow()
        return n_rows

    def list_prediction_audit(
        self, run_id: uuid.UUID | str, *, symbol: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[PredictionAuditRecord]:
        """Audit rows of a run by (date, symbol), optionally of one symbol; `total_size` counts all pages."""
        rid = _required_uuid(run_id, "run_id")
        size = _page_size(page_size, *_AUDIT_PAGE)
        filters = {"run_id": str(rid), "symbol": symbol or None}
        cursor = _decode_token(page_token, "audit", filters, 2)
        model = PredictionAuditRow
        where = [model.run_id == rid]
        if symbol:
            where.append(model.symbol == symbol)
        stmt = sa.select(model).where(*where)
        if cursor is not None:
            try:
                c_date, c_symbol = dt.date.fromisoformat(str(cursor[0])), str(cursor[1])
            except ValueError:
                raise InvalidArgument("is not a page token of this list", field="page_token") from None
            stmt = stmt.where(
                sa.or_(model.date > c_date, sa.and_(model.date == c_date, model.symbol > c_symbol))
            )
        stmt = stmt.order_by(model.date, model.symbol).limit(size + 1)
        with self.db.session() as s:
            if s.get(AlphaBacktestRunRow, rid) is None:
                raise NotFound(f"run {rid} does not exist", field="run_id")
            total = int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)
            rows = list(s.scalars(stmt))
            items = [
                PredictionAuditRecord(
                    date=r.date,
                    symbol=r.symbol,
                    prediction=r.prediction,
                    realized_return=r.realized_return,
                    target_weight=r.target_weight,
                    held_weight=r.held_weight,
                    pnl_contribution=r.pnl_contribution,
                )
                for r in rows[:size]
            ]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("audit", [last.date.isoformat(), last.symbol], filters)
        return Page(items, token, total)

    # ------------------------------------------------------------------ backtest results

    def save_backtest_result(
        self,
        result: BacktestResultRecord,
        trades: Sequence[TradeRecord] = (),
        *,
        request_id: str | None = None,
    ) -> tuple[uuid.UUID, bool]:
        """Store a result with its trades in one transaction; (backtest_id, created)."""
        bid = parse_uuid(result.backtest_id, "result.backtest_id")
        row_values, notes = self._result_values(result)
        trade_rows, detail_rows, trade_notes = self._trade_values(trades)
        all_notes = [n for n in [result.notes or None, *notes, *trade_notes] if n]
        row_values["notes"] = "\n".join(all_notes) if all_notes else None

        def create(s: Session, eid: uuid.UUID) -> tuple[uuid.UUID, bool]:
            if s.get(BacktestResultRow, eid) is not None:
                raise AlreadyExists(f"backtest result {eid} already exists", field="result.backtest_id")
            now = utcnow()
            # Core INSERT: a None is an explicit NULL (the ORM would leave it to the server default).
            s.execute(
                sa.insert(BacktestResultRow).values(
                    backtest_id=eid, created_at=now, updated_at=now, **row_values
                )
            )
            if trade_rows:
                for tr in trade_rows:
                    tr.update(backtest_id=eid, created_at=now, updated_at=now)
                s.execute(sa.insert(BacktestTradeRow), trade_rows)
                if detail_rows:
                    s.execute(sa.insert(TradeDetailRow), detail_rows)
            return eid, True

        def load(s: Session, eid: uuid.UUID) -> uuid.UUID | None:
            return eid if s.get(BacktestResultRow, eid) is not None else None

        fingerprint = _fingerprint("backtest_result", result, list(trades))
        return self._idempotent("backtest_result", request_id, fingerprint, bid, create, load)

    @staticmethod
    def _result_values(result: BacktestResultRecord) -> tuple[dict[str, Any], list[str]]:
        model = BacktestResultRow
        start = _as_date(result.start_date, "result.start_date")
        end = _as_date(result.end_date, "result.end_date")
        assert start is not None and end is not None
        if end < start:
            raise InvalidArgument(f"end_date {end} is before start_date {start}", field="result.end_date")
        values: dict[str, Any] = {
            "symbol": _check_str(result.symbol, model.symbol, "result.symbol", required=True),
            "strategy_type": _check_str(
                result.strategy_type, model.strategy_type, "result.strategy_type", required=True
            ),
            "backtest_date": _check_aware(result.backtest_date, "result.backtest_date") or utcnow(),
            "start_date": start,
            "end_date": end,
            "status": _check_str(result.status or "completed", model.status, "result.status"),
            "error_message": result.error_message or None,
        }
        notes: list[str] = []
        reserved: dict[str, Any] = {}
        for name in ("initial_capital", "fees", "slippage", "execution_time_seconds", "data_points"):
            raw = getattr(result, name)
            if raw is None:
                continue
            stored, why = _fit_column(raw, getattr(model, name))
            values[name] = stored
            if why:
                notes.append(f"{name}: {why}")
        # Metrics: columns where there is one, the rest (and every reason) in the reserved parameters key.
        # A metric that was not sent is NULL, not the seed's server default (0 for the trade counts).
        values.update(dict.fromkeys(METRIC_COLUMNS.values()))
        seen: dict[str, str] = {}
        metric_notes: dict[str, str] = {}
        reasons: dict[str, str] = {}
        extra: dict[str, float | None] = {}
        for name, raw in result.metrics.items():
            column = _metric_column(name)
            if column is None:
                number = None if raw is None else float(raw)
                if number is not None and not math.isfinite(number):
                    reasons[name] = f"{number!r} is not finite"
                    number = None
                extra[name] = number
                if number is None and name not in reasons:
                    reasons[name] = result.metric_reasons.get(name) or "undefined"
                continue
            if column in seen:
                raise InvalidArgument(
                    f"{name!r} and {seen[column]!r} both name column {column}",
                    field=f"result.metrics.values[{name}]",
                )
            seen[column] = name
            canonical = _COLUMN_METRIC[column]
            if raw is None:
                why = result.metric_reasons.get(name) or "undefined"
                values[column] = None
            else:
                stored, why = _fit_column(raw, getattr(model, column))  # type: ignore[assignment]
                values[column] = stored
            if why:
                reasons[canonical] = why
                metric_notes[column] = f"{column}: {why}"
        # In table column order, whatever the order of the (unordered) metric map.
        notes += [metric_notes[c] for c in METRIC_COLUMNS.values() if c in metric_notes]
        params = _check_json(result.parameters, "result.parameters")
        if params is not None and _RESERVED_PARAMETERS_KEY in params:
            raise InvalidArgument(f"key {_RESERVED_PARAMETERS_KEY!r} is reserved", field="result.parameters")
        if reasons:
            reserved["metric_reasons"] = reasons
        if extra:
            reserved["extra_metrics"] = _json_safe(extra)
        if result.conventions:
            reserved["conventions"] = _json_safe(dict(result.conventions))
        if reserved:
            params = {**(params or {}), _RESERVED_PARAMETERS_KEY: reserved}
        values["parameters"] = params
        series_dates = [
            d.isoformat() for d in (_as_date(x, "result.dates") for x in (result.dates or [])) if d
        ]
        values["equity_curve"] = _series_json(series_dates, result.equity_curve, "result.equity_curve")
        values["drawdown_series"] = _series_json(
            series_dates, result.drawdown_series, "result.drawdown_series"
        )
        return values, notes

    @staticmethod
    def _trade_values(
        trades: Sequence[TradeRecord],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        model = BacktestTradeRow
        rows: list[dict[str, Any]] = []
        details: list[dict[str, Any]] = []
        notes: list[str] = []
        numbers: set[int] = set()
        optional_numbers = (
            "exit_price",
            "position_size",
            "pnl",
            "pnl_percent",
            "mae",
            "mfe",
            "duration_days",
            "fees_paid",
            "slippage_cost",
        )
        for i, trade in enumerate(trades):
            path = f"trades[{i}]"
            number = int(trade.trade_number)
            if not 0 < number <= _INT4_MAX:
                raise InvalidArgument(
                    f"must be a positive integer, got {number}", field=f"{path}.trade_number"
                )
            if number in numbers:
                raise InvalidArgument(f"trade number {number} appears twice", field=f"{path}.trade_number")
            numbers.add(number)
            direction = (trade.direction or "").lower()
            if direction not in ("long", "short"):
                raise InvalidArgument(f"{trade.direction!r} is not long or short", field=f"{path}.direction")
            entry = _as_date(trade.entry_date, f"{path}.entry_date")
            exit_ = _as_date(trade.exit_date, f"{path}.exit_date", required=False)
            assert entry is not None
            if exit_ is not None and exit_ < entry:
                raise InvalidArgument(
                    f"exit_date {exit_} is before entry_date {entry}", field=f"{path}.exit_date"
                )
            entry_price, why = _fit_column(trade.entry_price, model.entry_price)
            if entry_price is None:
                raise InvalidArgument(f"entry_price {why or 'is required'}", field=f"{path}.entry_price")
            row: dict[str, Any] = {
                "trade_id": uuid.uuid4(),
                "trade_number": number,
                "entry_date": entry,
                "entry_price": entry_price,
                "exit_date": exit_,
                "direction": direction,
                "exit_reason": _check_str(trade.exit_reason, model.exit_reason, f"{path}.exit_reason"),
            }
            for name in optional_numbers:
                raw = getattr(trade, name)
                if raw is None and name in ("fees_paid", "slippage_cost"):
                    raw = 0.0  # the seed's server default; executemany needs the key in every row
                stored, why = _fit_column(raw, getattr(model, name))
                row[name] = stored
                if why:
                    notes.append(f"trade {number} {name}: {why}")
            rows.append(row)
            symbol = _check_str(trade.symbol, TradeDetailRow.symbol, f"{path}.symbol")
            bars = trade.duration_bars
            if symbol is not None or bars is not None:
                details.append(
                    {
                        "trade_id": row["trade_id"],
                        "symbol": symbol or "",
                        "duration_bars": None if bars is None else int(bars),
                    }
                )
        return rows, details, notes

    @staticmethod
    def _result_record(row: BacktestResultRow, *, include_series: bool) -> BacktestResultRecord:
        params = dict(row.parameters) if isinstance(row.parameters, Mapping) else row.parameters
        reserved: dict[str, Any] = {}
        if isinstance(params, dict) and _RESERVED_PARAMETERS_KEY in params:
            reserved = params.pop(_RESERVED_PARAMETERS_KEY) or {}
            params = params or None  # the reserved key was the only content: no parameters were sent
        reasons: dict[str, str] = dict(reserved.get("metric_reasons") or {})
        metrics: dict[str, float | None] = {}
        for name, column in METRIC_COLUMNS.items():
            value = getattr(row, column)
            if value is not None:
                metrics[name] = float(value) if not isinstance(value, int) else value
            elif name in reasons:
                metrics[name] = None
        for name, value in (reserved.get("extra_metrics") or {}).items():
            metrics[name] = value
        record = BacktestResultRecord(
            backtest_id=row.backtest_id,
            symbol=row.symbol,
            strategy_type=row.strategy_type,
            backtest_date=row.backtest_date,
            start_date=row.start_date,
            end_date=row.end_date,
            initial_capital=row.initial_capital,
            fees=row.fees,
            slippage=row.slippage,
            parameters=params,
            metrics=metrics,
            metric_reasons={k: v for k, v in reasons.items() if metrics.get(k, 0.0) is None},
            conventions=dict(reserved.get("conventions") or {}),
            execution_time_seconds=row.execution_time_seconds,
            data_points=row.data_points,
            status=row.status or "completed",
            error_message=row.error_message,
            notes=row.notes,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        if include_series:
            equity = _series_from_json(row.equity_curve)
            drawdown = _series_from_json(row.drawdown_series)
            if equity is not None:
                record.dates, record.equity_curve = equity
            if drawdown is not None:
                record.dates = record.dates or drawdown[0]
                record.drawdown_series = drawdown[1]
        return record

    def get_backtest_result(
        self, backtest_id: uuid.UUID | str, *, include_trades: bool = False
    ) -> tuple[BacktestResultRecord, list[TradeRecord]]:
        """One result with its series, and its trades (by trade number) when asked for."""
        bid = _required_uuid(backtest_id, "backtest_id")
        with self.db.session() as s:
            row = s.get(BacktestResultRow, bid)
            if row is None:
                raise NotFound(f"backtest result {bid} does not exist", field="backtest_id")
            record = self._result_record(row, include_series=True)
            trades: list[TradeRecord] = []
            if include_trades:
                stmt = (
                    sa.select(BacktestTradeRow, TradeDetailRow)
                    .outerjoin(TradeDetailRow, TradeDetailRow.trade_id == BacktestTradeRow.trade_id)
                    .where(BacktestTradeRow.backtest_id == bid)
                    .order_by(BacktestTradeRow.trade_number)
                )
                for t, d in s.execute(stmt):
                    trades.append(
                        TradeRecord(
                            trade_number=t.trade_number,
                            direction=t.direction,
                            entry_date=t.entry_date,
                            entry_price=t.entry_price,
                            symbol=(d.symbol or None) if d is not None else None,
                            exit_date=t.exit_date,
                            exit_price=t.exit_price,
                            position_size=t.position_size,
                            pnl=t.pnl,
                            pnl_percent=t.pnl_percent,
                            mae=t.mae,
                            mfe=t.mfe,
                            duration_bars=d.duration_bars if d is not None else None,
                            duration_days=t.duration_days,
                            exit_reason=t.exit_reason,
                            fees_paid=t.fees_paid,
                            slippage_cost=t.slippage_cost,
                        )
                    )
            return record, trades

    @staticmethod
    def _order_column(order_by: str | None) -> tuple[str, bool]:
        text = (order_by or "-backtest_date").strip()
        descending = text.startswith("-")
        name = text[1:] if descending else text
        column = _metric_column(name) or (name if name in _ORDERABLE_EXTRA else None)
        if column is None:
            allowed = sorted({*METRIC_COLUMNS, *_COLUMN_METRIC, *_ORDERABLE_EXTRA})
            raise InvalidArgument(
                f"cannot order by {name!r}; use one of {', '.join(allowed)} (prefix '-' for descending)",
                field="order_by",
            )
        return column, descending

    def _cursor_param(self, column: Any, value: Any) -> Any:
        col_type = column.type
        if isinstance(col_type, sa.Integer):
            return sa.literal(int(value), type_=col_type)
        if isinstance(col_type, sa.Numeric):
            if self.db.is_postgresql:
                # An exact numeric literal: compares with the column without a float round trip, index friendly.
                return sa.cast(sa.literal(str(decimal.Decimal(repr(float(value))))), col_type)
            return sa.literal(float(value), type_=sa.Float())
        if isinstance(col_type, sa.Date):
            return sa.literal(dt.date.fromisoformat(str(value)), type_=col_type)
        return sa.literal(_parse_token_datetime(value), type_=col_type)

    def list_backtest_results(
        self,
        *,
        symbol: str | None = None,
        strategy_type: str | None = None,
        from_date: dt.date | str | None = None,
        to_date: dt.date | str | None = None,
        status: str | None = None,
        order_by: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[BacktestResultRecord]:
        """Results (without series) filtered and ordered, NULLs last, keyset-paginated.

        `from_date` / `to_date` bound `backtest_date` by UTC calendar day, both inclusive.
        """
        size = _page_size(page_size, *_BACKTEST_PAGE)
        column_name, descending = self._order_column(order_by)
        start = _as_date(from_date, "from_date", required=False)
        end = _as_date(to_date, "to_date", required=False)
        if start and end and end < start:
            raise InvalidArgument(f"to_date {end} is before from_date {start}", field="to_date")
        model = BacktestResultRow
        filters = {
            "symbol": symbol or None,
            "strategy_type": strategy_type or None,
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "status": status or None,
            "order_by": f"{'-' if descending else ''}{column_name}",
        }
        cursor = _decode_token(page_token, "backtests", filters, 2)
        stmt = sa.select(model).options(defer(model.equity_curve), defer(model.drawdown_series))
        if symbol:
            stmt = stmt.where(model.symbol == symbol)
        if strategy_type:
            stmt = stmt.where(model.strategy_type == strategy_type)
        if status:
            stmt = stmt.where(model.status == status)
        if start:
            stmt = stmt.where(model.backtest_date >= dt.datetime.combine(start, dt.time(), dt.UTC))
        if end:
            stmt = stmt.where(
                model.backtest_date < dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
            )
        col = getattr(model, column_name)
        key = model.backtest_id
        if cursor is not None:
            c_value, c_id = cursor[0], _parse_token_uuid(cursor[1])
            id_after = key < c_id if descending else key > c_id
            if c_value is None:
                stmt = stmt.where(col.is_(None), id_after)
            else:
                param = self._cursor_param(col, c_value)
                value_after = col < param if descending else col > param
                stmt = stmt.where(sa.or_(col.is_(None), value_after, sa.and_(col == param, id_after)))
        ordered = col.desc() if descending else col.asc()
        stmt = stmt.order_by(col.is_(None), ordered, key.desc() if descending else key.asc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._result_record(r, include_series=False) for r in rows[:size]]
            token = ""
            if len(rows) > size:
                last = rows[size - 1]
                value = getattr(last, column_name)
                if isinstance(value, dt.datetime | dt.date):
                    value = value.isoformat()
                token = _encode_token("backtests", [value, str(last.backtest_id)], filters)
        return Page(items, token)

    def delete_backtest_result(self, backtest_id: uuid.UUID | str) -> bool:
        """Delete a result; its trades, optimizations and walk-forward rows go with it (runs keep a NULL link)."""
        bid = _required_uuid(backtest_id, "backtest_id")
        with self.db.session(write=True) as s:
            result = s.execute(sa.delete(BacktestResultRow).where(BacktestResultRow.backtest_id == bid))
            deleted = cast("sa.CursorResult[Any]", result).rowcount
            s.execute(
                sa.delete(RequestKeyRow).where(
                    RequestKeyRow.kind == "backtest_result", RequestKeyRow.entity_id == bid
                )
            )
        return bool(deleted)

    # ------------------------------------------------------------------ catalog queries over backtest results

    def get_best_backtest(
        self,
        metric: str,
        *,
        min_trades: int = 0,
        symbol: str | None = None,
        strategy_type: str | None = None,
    ) -> BacktestResultRecord:
        """The best completed result (without series) by a metric column, in that metric's direction.

        Only results with status "completed", a non-NULL value of the metric
        and, when `min_trades` > 0, `total_trades >= min_trades` qualify. Ties
        go to the newest `backtest_date`, then to the larger `backtest_id`.
        """
        column_name = _known_metric(metric, "metric")
        minimum = _check_int(min_trades or 0, "min_trades", minimum=0)
        model = BacktestResultRow
        column = getattr(model, column_name)
        higher = metric_higher_is_better(column_name)
        stmt = (
            sa.select(model)
            .options(defer(model.equity_curve), defer(model.drawdown_series))
            .where(column.is_not(None), model.status == "completed")
        )
        if minimum:
            stmt = stmt.where(model.total_trades >= minimum)
        if symbol:
            stmt = stmt.where(model.symbol == symbol)
        if strategy_type:
            stmt = stmt.where(model.strategy_type == strategy_type)
        stmt = stmt.order_by(
            column.desc() if higher else column.asc(), model.backtest_date.desc(), model.backtest_id.desc()
        ).limit(1)
        with self.db.session() as s:
            row = s.scalars(stmt).first()
            if row is None:
                scope = [f"{column_name} set"]
                if minimum:
                    scope.append(f"at least {minimum} trades")
                if symbol:
                    scope.append(f"symbol {symbol!r}")
                if strategy_type:
                    scope.append(f"strategy_type {strategy_type!r}")
                raise NotFound(f"no completed backtest with {', '.join(scope)}", field="metric")
            return self._result_record(row, include_series=False)

    def compare_backtests(
        self, backtest_ids: Sequence[uuid.UUID | str], metrics: Sequence[str] = ()
    ) -> BacktestComparison:
        """Compare 2 to 50 results metric by metric.

        `metrics` are metric or column names (default `COMPARE_DEFAULT_METRICS`)
        and come back as column names. Each metric is ranked in its own
        direction (`metric_higher_is_better`) among the results where it is
        not NULL, ties sharing the better rank (the "min" method: 1, 1, 3);
        NULL values have no rank. Comparisons are metric-major in the order of
        `metrics`, then in request order.
        """
        if not _COMPARE_MIN <= len(backtest_ids) <= _COMPARE_MAX:
            raise InvalidArgument(
                f"give {_COMPARE_MIN} to {_COMPARE_MAX} backtest ids, got {len(backtest_ids)}",
                field="backtest_ids",
            )
        ids: list[uuid.UUID] = []
        for i, raw in enumerate(backtest_ids):
            bid = _required_uuid(raw, f"backtest_ids[{i}]")
            if bid in ids:
                raise InvalidArgument(f"{bid} appears twice", field=f"backtest_ids[{i}]")
            ids.append(bid)
        columns: list[str] = []
        for j, name in enumerate(metrics or COMPARE_DEFAULT_METRICS):
            column = _known_metric(name, f"metrics[{j}]")
            if column in columns:
                raise InvalidArgument(f"{name!r} names {column} twice", field=f"metrics[{j}]")
            columns.append(column)
        model = BacktestResultRow
        stmt = (
            sa.select(model)
            .options(defer(model.equity_curve), defer(model.drawdown_series))
            .where(model.backtest_id.in_(ids))
        )
        with self.db.session() as s:
            found = {row.backtest_id: row for row in s.scalars(stmt)}
            for i, bid in enumerate(ids):
                if bid not in found:
                    raise NotFound(f"backtest result {bid} does not exist", field=f"backtest_ids[{i}]")
            rows = [found[bid] for bid in ids]
            results = [self._result_record(row, include_series=False) for row in rows]
        comparisons: list[MetricComparisonRecord] = []
        for column in columns:
            raw_values = [getattr(row, column) for row in rows]
            values = np.array([np.nan if v is None else float(v) for v in raw_values], dtype=np.float64)
            higher = metric_higher_is_better(column)
            signed = values if higher else -values
            # rank = 1 + number of non-NULL values strictly better (NaN compares false): the "min" method.
            ranks = 1 + (signed[None, :] > signed[:, None]).sum(axis=1)
            for bid, raw, rank in zip(ids, raw_values, ranks.tolist(), strict=True):
                comparisons.append(
                    MetricComparisonRecord(
                        metric=column,
                        backtest_id=bid,
                        value=None if raw is None else float(raw),
                        rank=None if raw is None else int(rank),
                        higher_is_better=higher,
                    )
                )
        return BacktestComparison(results=results, metrics=columns, comparisons=comparisons)

    def get_performance_summary(self, days: int = 0, *, now: dt.datetime | None = None) -> PerformanceSummary:
        """Aggregates of the results whose `backtest_date` is on or after `now - days` (default 30 days).

        The window is rolling (an exact timestamp, UTC) and open at the top, so
        a result stamped slightly in the future by a writer with a skewed clock
        still counts. Groups: overall, by symbol, by strategy type (each sorted
        by key in code-point order). Per group, in SQL with GROUP BY: the
        count of results, the means of total_return, sharpe_ratio, max_drawdown
        and win_rate over the results where they are not NULL (None when there
        are none), the largest sharpe_ratio and the sum of total_trades (NULL
        counts as 0). Means are computed from exact integer sums (see
        `_exact_mean_parts`), so SQLite and PostgreSQL return the same floats.
        """
        window = int(days or 0)
        if window < 0:
            raise InvalidArgument(f"must be a positive number of days, got {window}", field="days")
        window = window or _SUMMARY_DEFAULT_DAYS
        current = _check_aware(now, "now") or utcnow()
        since: dt.datetime | None
        try:
            since = current - dt.timedelta(days=window)
        except OverflowError:
            since = None  # before year 1: every result
        model = BacktestResultRow
        mean_columns = (model.total_return, model.sharpe_ratio, model.max_drawdown, model.win_rate)
        aggregates: list[Any] = [sa.func.count()]
        for column in mean_columns:
            aggregates.extend(_exact_mean_parts(column))
        aggregates += [sa.func.max(model.sharpe_ratio), sa.func.sum(model.total_trades)]
        scales = [int(c.type.scale or 0) for c in mean_columns]

        def group(key: str, row: Sequence[Any]) -> PerformanceGroupRecord:
            means = [_exact_mean(row[1 + 2 * k], row[2 + 2 * k], scales[k]) for k in range(len(scales))]
            best = row[1 + 2 * len(scales)]
            trades = row[2 + 2 * len(scales)]
            return PerformanceGroupRecord(
                key=key,
                count=int(row[0] or 0),
                avg_total_return=means[0],
                avg_sharpe_ratio=means[1],
                best_sharpe_ratio=None if best is None else float(best),
                avg_max_drawdown=means[2],
                avg_win_rate=means[3],
                total_trades=int(trades or 0),
            )

        def grouped(*keys: Any) -> Any:
            stmt = sa.select(*keys, *aggregates).select_from(model)
            if since is not None:
                stmt = stmt.where(model.backtest_date >= since)
            return stmt.group_by(*keys) if keys else stmt

        with self.db.session() as s:
            overall = group("", s.execute(grouped()).one())
            by_symbol = [group(r[0], r[1:]) for r in s.execute(grouped(model.symbol))]
            by_strategy = [group(r[0], r[1:]) for r in s.execute(grouped(model.strategy_type))]
        # Sorted here rather than in SQL: PostgreSQL's collation may not be code-point order.
        by_symbol.sort(key=lambda g: g.key)
        by_strategy.sort(key=lambda g: g.key)
        return PerformanceSummary(
            days=window, since=since, overall=overall, by_symbol=by_symbol, by_strategy=by_strategy
        )

    # ------------------------------------------------------------------ keyset pagination (shared)

    def _keyset_param(self, column: Any, raw: Any) -> Any:
        if isinstance(column.type, sa.Uuid):
            return _parse_token_uuid(raw)
        try:
            return self._cursor_param(column, raw)
        except (ValueError, TypeError, ArithmeticError):
            raise InvalidArgument("is not a page token of this list", field="page_token") from None

    def _keyset_after(self, keys: Sequence[_SortKey], cursor: Sequence[Any]) -> Any:
        """Rows strictly after `cursor` in the order of `keys` (NULLs last in both directions)."""
        clauses: list[Any] = []
        prefix: list[Any] = []
        for (column, descending, nullable), raw in zip(keys, cursor, strict=True):
            if raw is None:
                if not nullable:
                    raise InvalidArgument("is not a page token of this list", field="page_token")
                prefix.append(column.is_(None))  # nothing sorts after NULL in this column
                continue
            param = self._keyset_param(column, raw)
            after = column < param if descending else column > param
            if nullable:
                after = sa.or_(after, column.is_(None))
            clauses.append(sa.and_(*prefix, after))
            prefix.append(column == param)
        return sa.or_(*clauses)

    def _keyset_page(
        self,
        stmt: Any,
        keys: Sequence[_SortKey],
        *,
        kind: str,
        filters: Mapping[str, Any],
        page_size: int,
        page_token: str,
        limits: tuple[int, int],
        records: Callable[[Session, list[Any]], list[T]],
        check: Callable[[Session], None] | None = None,
    ) -> Page[T]:
        size = _page_size(page_size, *limits)
        cursor = _decode_token(page_token, kind, filters, len(keys))
        if cursor is not None:
            stmt = stmt.where(self._keyset_after(keys, cursor))
        stmt = stmt.order_by(*_keyset_order(keys)).limit(size + 1)
        with self.db.session() as s:
            if check is not None:
                check(s)
            rows = list(s.scalars(stmt))
            items = records(s, rows[:size])
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token(kind, [_token_value(getattr(last, c.key)) for c, _, _ in keys], filters)
        return Page(items, token)

    @staticmethod
    def _check_parents(
        session: Session, column: Any, refs: Sequence[tuple[str, uuid.UUID]], what: str
    ) -> None:
        """NotFound naming the first reference whose row does not exist; the others are share-locked."""
        wanted = list(dict.fromkeys(ref for _, ref in refs))
        present: set[uuid.UUID] = set()
        for chunk in _chunks(wanted):
            stmt = sa.select(column).where(column.in_(chunk)).with_for_update(read=True)
            present.update(session.scalars(stmt))
        for field_name, ref in refs:
            if ref not in present:
                raise NotFound(f"{what} {ref} does not exist", field=field_name)

    @staticmethod
    def _existing_ids(session: Session, column: Any, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        found: set[uuid.UUID] = set()
        for chunk in _chunks(list(ids)):
            found.update(session.scalars(sa.select(column).where(column.in_(chunk))))
        return found

    def _save_batch(
        self,
        kind: str,
        rows: list[dict[str, Any]],
        given_ids: list[uuid.UUID | None],
        *,
        model: Any,
        id_column: Any,
        id_field: str,
        parent_column: str,
        parent_field: str,
        request_id: str | None,
        fingerprint: str,
    ) -> tuple[list[uuid.UUID], bool]:
        """Insert `rows` in one transaction, idempotent by request_id (see the module docstring).

        `given_ids[i]` is the caller's id of row i or None (assigned); `id_field`
        and `parent_field` are the request paths with an `{i}` placeholder.
        """
        seen: dict[uuid.UUID, int] = {}
        for i, gid in enumerate(given_ids):
            if gid is not None:
                if gid in seen:
                    raise InvalidArgument(f"{gid} appears twice", field=id_field.format(i=i))
                seen[gid] = i

        def ids_for(batch_id: uuid.UUID) -> list[uuid.UUID]:
            # Assigned ids derive from the batch id kept with the request key, so a replay can find them.
            return [gid or uuid.uuid5(batch_id, str(i)) for i, gid in enumerate(given_ids)]

        def create(s: Session, batch_id: uuid.UUID) -> tuple[list[uuid.UUID], bool]:
            ids = ids_for(batch_id)
            refs = [(parent_field.format(i=i), row[parent_column]) for i, row in enumerate(rows)]
            self._check_parents(s, BacktestResultRow.backtest_id, refs, "backtest result")
            taken = self._existing_ids(s, id_column, [gid for gid in given_ids if gid is not None])
            for i, gid in enumerate(given_ids):
                if gid is not None and gid in taken:
                    raise AlreadyExists(f"{gid} already exists", field=id_field.format(i=i))
            now = utcnow()
            s.execute(
                sa.insert(model),
                [
                    {**row, id_column.key: rid, "created_at": now, "updated_at": now}
                    for row, rid in zip(rows, ids, strict=True)
                ],
            )
            return ids, True

        def load(s: Session, batch_id: uuid.UUID) -> list[uuid.UUID] | None:
            ids = ids_for(batch_id)
            # Rows go away only with their parent backtest: while any is left, the save stands.
            return ids if self._existing_ids(s, id_column, ids) else None

        return self._idempotent(kind, request_id, fingerprint, None, create, load)

    # ------------------------------------------------------------------ optimization results

    @staticmethod
    def _optimization_values(
        record: OptimizationResultRecord, i: int, now: dt.datetime
    ) -> tuple[uuid.UUID | None, dict[str, Any]]:
        model = OptimizationResultRow
        path = f"results[{i}]"
        numbers, reasons = _fit_fields(record, model, _OPTIMIZATION_NUMBERS)
        params = _check_json(record.parameters, f"{path}.parameters")
        values: dict[str, Any] = {
            "backtest_id": _required_uuid(record.backtest_id, f"{path}.backtest_id"),
            "optimization_date": _check_aware(record.optimization_date, f"{path}.optimization_date") or now,
            "parameter_set": _check_int(record.parameter_set, f"{path}.parameter_set", minimum=0),
            "parameters": _with_reserved(params, reasons, f"{path}.parameters", keep_absent=False) or {},
            "objective_function": _check_str(
                record.objective_function, model.objective_function, f"{path}.objective_function"
            ),
            "is_statistically_significant": bool(record.is_statistically_significant),
            **numbers,
        }
        return parse_uuid(record.optimization_id, f"{path}.optimization_id"), values

    def save_optimization_results(
        self, results: Sequence[OptimizationResultRecord], *, request_id: str | None = None
    ) -> tuple[list[uuid.UUID], bool]:
        """Store every parameter set of an optimization in one transaction; (ids in request order, created)."""
        if not results:
            raise InvalidArgument("needs at least one row", field="results")
        now = utcnow()
        given: list[uuid.UUID | None] = []
        rows: list[dict[str, Any]] = []
        keys: dict[tuple[Any, ...], int] = {}
        for i, record in enumerate(results):
            gid, values = self._optimization_values(record, i, now)
            key = (values["backtest_id"], values["objective_function"], values["parameter_set"])
            if key in keys:
                raise InvalidArgument(
                    f"parameter set {key[2]} of backtest {key[0]} ({key[1] or 'no objective'}) "
                    f"is also results[{keys[key]}]",
                    field=f"results[{i}].parameter_set",
                )
            keys[key] = i
            given.append(gid)
            rows.append(values)
        return self._save_batch(
            "optimization_results",
            rows,
            given,
            model=OptimizationResultRow,
            id_column=OptimizationResultRow.optimization_id,
            id_field="results[{i}].optimization_id",
            parent_column="backtest_id",
            parent_field="results[{i}].backtest_id",
            request_id=request_id,
            fingerprint=_fingerprint("optimization_results", list(results)),
        )

    @staticmethod
    def _optimization_record(row: OptimizationResultRow) -> OptimizationResultRecord:
        params, reasons = _split_reserved(row.parameters)
        return OptimizationResultRecord(
            optimization_id=row.optimization_id,
            backtest_id=row.backtest_id,
            optimization_date=row.optimization_date,
            parameter_set=row.parameter_set,
            parameters=params if params is not None else {},
            objective_function=row.objective_function,
            objective_value=_float(row.objective_value),
            total_return=_float(row.total_return),
            sharpe_ratio=_float(row.sharpe_ratio),
            max_drawdown=_float(row.max_drawdown),
            win_rate=_float(row.win_rate),
            profit_factor=_float(row.profit_factor),
            total_trades=row.total_trades,
            rank=row.rank,
            is_statistically_significant=bool(row.is_statistically_significant),
            p_value=_float(row.p_value),
            null_reasons=reasons,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_optimization_result(self, optimization_id: uuid.UUID | str) -> OptimizationResultRecord:
        """One optimization row."""
        oid = _required_uuid(optimization_id, "optimization_id")
        with self.db.session() as s:
            row = s.get(OptimizationResultRow, oid)
            if row is None:
                raise NotFound(f"optimization result {oid} does not exist", field="optimization_id")
            return self._optimization_record(row)

    def list_optimization_results(
        self, *, backtest_id: uuid.UUID | str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[OptimizationResultRecord]:
        """Optimization rows, keyset-paginated.

        Of one backtest (NotFound when it does not exist): by `rank` (NULLs
        last), then newest `optimization_date` first, `parameter_set`,
        `optimization_id`. Of all backtests: newest `optimization_date` first,
        then `parameter_set`, `optimization_id`.
        """
        bid = parse_uuid(backtest_id, "backtest_id")
        model = OptimizationResultRow
        stmt = sa.select(model)
        keys: list[_SortKey]
        if bid is not None:
            stmt = stmt.where(model.backtest_id == bid)
            keys = [
                (model.rank, False, True),
                (model.optimization_date, True, False),
                (model.parameter_set, False, False),
                (model.optimization_id, False, False),
            ]
        else:
            keys = [
                (model.optimization_date, True, False),
                (model.parameter_set, False, False),
                (model.optimization_id, False, False),
            ]

        def check(s: Session) -> None:
            if bid is not None and s.get(BacktestResultRow, bid) is None:
                raise NotFound(f"backtest result {bid} does not exist", field="backtest_id")

        return self._keyset_page(
            stmt,
            keys,
            kind="optimizations",
            filters={"backtest_id": str(bid) if bid else None},
            page_size=page_size,
            page_token=page_token,
            limits=_OPTIMIZATION_PAGE,
            records=lambda _s, rows: [self._optimization_record(r) for r in rows],
            check=check,
        )

    # ------------------------------------------------------------------ walk-forward tests

    @staticmethod
    def _walk_forward_values(
        record: WalkForwardTestRecord, i: int, now: dt.datetime
    ) -> tuple[uuid.UUID | None, dict[str, Any]]:
        model = WalkForwardTestRow
        path = f"windows[{i}]"
        dates = {
            name: parse_date(getattr(record, name), f"{path}.{name}")
            for name in ("training_start", "training_end", "test_period_start", "test_period_end")
        }
        if dates["training_end"] < dates["training_start"]:
            raise InvalidArgument(
                f"training_end {dates['training_end']} is before training_start {dates['training_start']}",
                field=f"{path}.training_end",
            )
        if dates["test_period_end"] < dates["test_period_start"]:
            raise InvalidArgument(
                f"test_period_end {dates['test_period_end']} is before test_period_start "
                f"{dates['test_period_start']}",
                field=f"{path}.test_period_end",
            )
        if dates["test_period_start"] <= dates["training_end"]:
            raise InvalidArgument(
                f"test_period_start {dates['test_period_start']} must come after training_end "
                f"{dates['training_end']} (out-of-sample data may not overlap the training window)",
                field=f"{path}.test_period_start",
            )
        numbers, reasons = _fit_fields(record, model, _WALK_FORWARD_NUMBERS)
        params = _check_json(record.optimal_parameters, f"{path}.optimal_parameters")
        values: dict[str, Any] = {
            "parent_backtest_id": _required_uuid(record.parent_backtest_id, f"{path}.parent_backtest_id"),
            "test_date": _check_aware(record.test_date, f"{path}.test_date") or now,
            "window_size_months": _check_int(
                record.window_size_months, f"{path}.window_size_months", minimum=0
            ),
            "step_size_months": _check_int(record.step_size_months, f"{path}.step_size_months", minimum=0),
            **dates,
            "optimal_parameters": _with_reserved(
                params, reasons, f"{path}.optimal_parameters", keep_absent=True
            ),
            "is_profitable": None if record.is_profitable is None else bool(record.is_profitable),
            "is_statistically_significant": bool(record.is_statistically_significant),
            **numbers,
        }
        return parse_uuid(record.walk_forward_id, f"{path}.walk_forward_id"), values

    def save_walk_forward_tests(
        self, windows: Sequence[WalkForwardTestRecord], *, request_id: str | None = None
    ) -> tuple[list[uuid.UUID], bool]:
        """Store the windows of a walk-forward test in one transaction; (ids in request order, created)."""
        if not windows:
            raise InvalidArgument("needs at least one window", field="windows")
        now = utcnow()
        given: list[uuid.UUID | None] = []
        rows: list[dict[str, Any]] = []
        for i, record in enumerate(windows):
            gid, values = self._walk_forward_values(record, i, now)
            given.append(gid)
            rows.append(values)
        return self._save_batch(
            "walk_forward_tests",
            rows,
            given,
            model=WalkForwardTestRow,
            id_column=WalkForwardTestRow.walk_forward_id,
            id_field="windows[{i}].walk_forward_id",
            parent_column="parent_backtest_id",
            parent_field="windows[{i}].parent_backtest_id",
            request_id=request_id,
            fingerprint=_fingerprint("walk_forward_tests", list(windows)),
        )

    @staticmethod
    def _walk_forward_record(row: WalkForwardTestRow) -> WalkForwardTestRecord:
        params, reasons = _split_reserved(row.optimal_parameters)
        return WalkForwardTestRecord(
            walk_forward_id=row.walk_forward_id,
            parent_backtest_id=row.parent_backtest_id,
            test_date=row.test_date,
            window_size_months=row.window_size_months,
            step_size_months=row.step_size_months,
            training_start=row.training_start,
            training_end=row.training_end,
            test_period_start=row.test_period_start,
            test_period_end=row.test_period_end,
            optimal_parameters=params,
            training_performance=_float(row.training_performance),
            out_of_sample_return=_float(row.out_of_sample_return),
            out_of_sample_sharpe=_float(row.out_of_sample_sharpe),
            out_of_sample_drawdown=_float(row.out_of_sample_drawdown),
            out_of_sample_trades=row.out_of_sample_trades,
            performance_ratio=_float(row.performance_ratio),
            degradation_factor=_float(row.degradation_factor),
            is_profitable=row.is_profitable,
            is_statistically_significant=bool(row.is_statistically_significant),
            null_reasons=reasons,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_walk_forward_test(self, walk_forward_id: uuid.UUID | str) -> WalkForwardTestRecord:
        """One walk-forward window."""
        wid = _required_uuid(walk_forward_id, "walk_forward_id")
        with self.db.session() as s:
            row = s.get(WalkForwardTestRow, wid)
            if row is None:
                raise NotFound(f"walk-forward test {wid} does not exist", field="walk_forward_id")
            return self._walk_forward_record(row)

    def list_walk_forward_tests(
        self, *, parent_backtest_id: uuid.UUID | str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[WalkForwardTestRecord]:
        """Walk-forward windows, keyset-paginated.

        Of one parent backtest (NotFound when it does not exist): by
        `test_period_start`, then newest `test_date` first, `walk_forward_id`.
        Of all parents: newest `test_date` first, then `test_period_start`,
        `walk_forward_id`.
        """
        pid = parse_uuid(parent_backtest_id, "parent_backtest_id")
        model = WalkForwardTestRow
        stmt = sa.select(model)
        keys: list[_SortKey]
        if pid is not None:
            stmt = stmt.where(model.parent_backtest_id == pid)
            keys = [
                (model.test_period_start, False, False),
                (model.test_date, True, False),
                (model.walk_forward_id, False, False),
            ]
        else:
            keys = [
                (model.test_date, True, False),
                (model.test_period_start, False, False),
                (model.walk_forward_id, False, False),
            ]

        def check(s: Session) -> None:
            if pid is not None and s.get(BacktestResultRow, pid) is None:
                raise NotFound(f"backtest result {pid} does not exist", field="parent_backtest_id")

        return self._keyset_page(
            stmt,
            keys,
            kind="walk_forward",
            filters={"parent_backtest_id": str(pid) if pid else None},
            page_size=page_size,
            page_token=page_token,
            limits=_WALK_FORWARD_PAGE,
            records=lambda _s, rows: [self._walk_forward_record(r) for r in rows],
            check=check,
        )

    # ------------------------------------------------------------------ portfolio backtests

    def save_portfolio_backtest(
        self, portfolio: PortfolioBacktestRecord, *, request_id: str | None = None
    ) -> tuple[uuid.UUID, bool]:
        """Store a portfolio backtest; (portfolio_backtest_id, created)."""
        pid = parse_uuid(portfolio.portfolio_backtest_id, "portfolio.portfolio_backtest_id")
        values, details = self._portfolio_values(portfolio)

        def create(s: Session, eid: uuid.UUID) -> tuple[uuid.UUID, bool]:
            if s.get(BacktestPortfolioRow, eid) is not None:
                raise AlreadyExists(
                    f"portfolio backtest {eid} already exists", field="portfolio.portfolio_backtest_id"
                )
            now = utcnow()
            # Core INSERT: a None is an explicit NULL; an absent key takes the server default.
            s.execute(
                sa.insert(BacktestPortfolioRow).values(
                    portfolio_backtest_id=eid, created_at=now, updated_at=now, **values
                )
            )
            if details:
                s.execute(sa.insert(PortfolioDetailRow).values(portfolio_backtest_id=eid, **details))
            return eid, True

        def load(s: Session, eid: uuid.UUID) -> uuid.UUID | None:
            return eid if s.get(BacktestPortfolioRow, eid) is not None else None

        fingerprint = _fingerprint("portfolio_backtest", portfolio)
        return self._idempotent("portfolio_backtest", request_id, fingerprint, pid, create, load)

    @staticmethod
    def _portfolio_values(portfolio: PortfolioBacktestRecord) -> tuple[dict[str, Any], dict[str, Any]]:
        model = BacktestPortfolioRow
        start = parse_date(portfolio.start_date, "portfolio.start_date")
        end = parse_date(portfolio.end_date, "portfolio.end_date")
        if end < start:
            raise InvalidArgument(f"end_date {end} is before start_date {start}", field="portfolio.end_date")
        symbols: list[str] = []
        for i, sym in enumerate(portfolio.symbols or []):
            if not isinstance(sym, str) or not sym:
                raise InvalidArgument("must be a non-empty string", field=f"portfolio.symbols[{i}]")
            if sym in symbols:
                raise InvalidArgument(f"{sym!r} appears twice", field=f"portfolio.symbols[{i}]")
            symbols.append(sym)
        if not symbols:
            raise InvalidArgument("needs at least one symbol", field="portfolio.symbols")
        weights: dict[str, float] | None = None
        if portfolio.weights is not None:
            if not isinstance(portfolio.weights, Mapping):
                raise InvalidArgument("must map symbols to weights", field="portfolio.weights")
            weights = {}
            for sym, weight in portfolio.weights.items():
                path = f"portfolio.weights[{sym}]"
                if sym not in symbols:
                    raise InvalidArgument(f"{sym!r} is not one of the portfolio's symbols", field=path)
                if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
                    raise InvalidArgument(f"{weight!r} is not a number", field=path)
                if not math.isfinite(float(weight)):
                    raise InvalidArgument(f"{weight!r} is not finite", field=path)
                weights[str(sym)] = float(weight)
        values: dict[str, Any] = {
            "portfolio_name": _check_str(
                portfolio.portfolio_name, model.portfolio_name, "portfolio.portfolio_name", required=True
            ),
            "description": portfolio.description or None,
            "backtest_date": _check_aware(portfolio.backtest_date, "portfolio.backtest_date") or utcnow(),
            "start_date": start,
            "end_date": end,
            "symbols": symbols,
            "weights": weights,
            "rebalance_frequency": _check_choice(
                portfolio.rebalance_frequency, REBALANCE_FREQUENCIES, "portfolio.rebalance_frequency"
            ),
            "max_positions": _check_int(
                portfolio.max_positions, "portfolio.max_positions", minimum=1, required=False
            ),
            "position_sizing_method": _check_choice(
                portfolio.position_sizing_method, POSITION_SIZING_METHODS, "portfolio.position_sizing_method"
            ),
            "status": _check_choice(portfolio.status or "completed", BACKTEST_STATUSES, "portfolio.status"),
        }
        notes: list[str] = []
        for name in _PORTFOLIO_NUMBERS:
            raw = getattr(portfolio, name)
            if raw is None:
                continue  # initial_capital: the seed's server default; the others: NULL
            stored, why = _fit_column(raw, getattr(model, name))
            values[name] = stored
            if why:
                notes.append(f"{name}: {why}")
        values.update(dict.fromkeys(PORTFOLIO_METRIC_COLUMNS.values()))
        seen: dict[str, str] = {}
        reasons: dict[str, str] = {}
        metric_notes: dict[str, str] = {}
        extra: dict[str, float | None] = {}
        for name, raw in portfolio.metrics.items():
            column = PORTFOLIO_METRIC_COLUMNS.get(name) or (
                name if name in _PORTFOLIO_COLUMN_METRIC else None
            )
            if column is None:
                number = None if raw is None else float(raw)
                if number is not None and not math.isfinite(number):
                    reasons[name] = f"{number!r} is not finite"
                    number = None
                extra[name] = number
                if number is None and name not in reasons:
                    reasons[name] = portfolio.metric_reasons.get(name) or "undefined"
                continue
            if column in seen:
                raise InvalidArgument(
                    f"{name!r} and {seen[column]!r} both name column {column}",
                    field=f"portfolio.metrics.values[{name}]",
                )
            seen[column] = name
            reason: str | None
            if raw is None:
                reason = portfolio.metric_reasons.get(name) or "undefined"
                values[column] = None
            else:
                values[column], reason = _fit_column(raw, getattr(model, column))
            if reason:
                reasons[_PORTFOLIO_COLUMN_METRIC[column]] = reason
                metric_notes[column] = f"{column}: {reason}"
        notes += [metric_notes[c] for c in PORTFOLIO_METRIC_COLUMNS.values() if c in metric_notes]
        components: list[str] = []
        for i, raw_id in enumerate(portfolio.component_backtest_ids or []):
            cid = str(_required_uuid(raw_id, f"portfolio.component_backtest_ids[{i}]"))
            if cid in components:
                raise InvalidArgument(f"{cid} appears twice", field=f"portfolio.component_backtest_ids[{i}]")
            components.append(cid)
        values["component_backtest_ids"] = components or None
        series_dates = [
            parse_date(d, f"portfolio.dates[{i}]").isoformat() for i, d in enumerate(portfolio.dates or [])
        ]
        if len(set(series_dates)) != len(series_dates):
            raise InvalidArgument("dates must be unique", field="portfolio.dates")
        values["portfolio_equity_curve"] = _series_json(
            series_dates, portfolio.equity_curve, "portfolio.equity_curve"
        )
        values["portfolio_weights_history"] = _matrix_json(
            series_dates, symbols, portfolio.weights_history, "portfolio.weights_history"
        )
        all_notes = [n for n in [portfolio.notes or None, *notes] if n]
        values["notes"] = "\n".join(all_notes) if all_notes else None
        details: dict[str, Any] = {}
        if reasons:
            details["metric_reasons"] = reasons
        if extra:
            details["extra_metrics"] = _json_safe(extra)
        if portfolio.conventions:
            details["conventions"] = _json_safe(dict(portfolio.conventions))
        if details:
            details = {"metric_reasons": None, "extra_metrics": None, "conventions": None, **details}
        return values, details

    @staticmethod
    def _portfolio_record(
        row: BacktestPortfolioRow, detail: PortfolioDetailRow | None, *, include_series: bool
    ) -> PortfolioBacktestRecord:
        reasons: dict[str, str] = dict((detail.metric_reasons if detail else None) or {})
        metrics: dict[str, float | None] = {}
        for name, column in PORTFOLIO_METRIC_COLUMNS.items():
            value = getattr(row, column)
            if value is not None:
                metrics[name] = float(value)
            elif name in reasons:
                metrics[name] = None
        for name, value in ((detail.extra_metrics if detail else None) or {}).items():
            metrics[name] = value
        record = PortfolioBacktestRecord(
            portfolio_backtest_id=row.portfolio_backtest_id,
            portfolio_name=row.portfolio_name,
            description=row.description,
            backtest_date=row.backtest_date,
            start_date=row.start_date,
            end_date=row.end_date,
            symbols=[str(s) for s in row.symbols or []],
            weights=dict(row.weights) if isinstance(row.weights, Mapping) else None,
            rebalance_frequency=row.rebalance_frequency,
            initial_capital=_float(row.initial_capital),
            max_positions=row.max_positions,
            position_sizing_method=row.position_sizing_method,
            portfolio_stop_loss=_float(row.portfolio_stop_loss),
            max_sector_allocation=_float(row.max_sector_allocation),
            correlation_threshold=_float(row.correlation_threshold),
            metrics=metrics,
            metric_reasons={k: v for k, v in reasons.items() if metrics.get(k, 0.0) is None},
            conventions=dict((detail.conventions if detail else None) or {}),
            component_backtest_ids=[uuid.UUID(str(c)) for c in row.component_backtest_ids or []],
            status=row.status or "completed",
            notes=row.notes,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        if include_series:
            equity = _series_from_json(row.portfolio_equity_curve)
            history = _matrix_from_json(row.portfolio_weights_history)
            if equity is not None:
                record.dates, record.equity_curve = equity
            if history is not None:
                record.dates = record.dates or history[0]
                record.weights_history = history[2]
        return record

    def get_portfolio_backtest(self, portfolio_backtest_id: uuid.UUID | str) -> PortfolioBacktestRecord:
        """One portfolio backtest with its series."""
        pid = _required_uuid(portfolio_backtest_id, "portfolio_backtest_id")
        with self.db.session() as s:
            row = s.get(BacktestPortfolioRow, pid)
            if row is None:
                raise NotFound(f"portfolio backtest {pid} does not exist", field="portfolio_backtest_id")
            return self._portfolio_record(row, s.get(PortfolioDetailRow, pid), include_series=True)

    def list_portfolio_backtests(
        self, *, portfolio_name: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[PortfolioBacktestRecord]:
        """Portfolio backtests (without series), newest `backtest_date` first, keyset-paginated."""
        model = BacktestPortfolioRow
        stmt = sa.select(model).options(
            defer(model.portfolio_equity_curve), defer(model.portfolio_weights_history)
        )
        if portfolio_name:
            stmt = stmt.where(model.portfolio_name == portfolio_name)
        keys: list[_SortKey] = [
            (model.backtest_date, True, False),
            (model.portfolio_backtest_id, True, False),
        ]

        def records(s: Session, rows: list[BacktestPortfolioRow]) -> list[PortfolioBacktestRecord]:
            ids = [r.portfolio_backtest_id for r in rows]
            details: dict[uuid.UUID, PortfolioDetailRow] = {}
            for chunk in _chunks(ids):
                detail_stmt = sa.select(PortfolioDetailRow).where(
                    PortfolioDetailRow.portfolio_backtest_id.in_(chunk)
                )
                details.update((d.portfolio_backtest_id, d) for d in s.scalars(detail_stmt))
            return [
                self._portfolio_record(r, details.get(r.portfolio_backtest_id), include_series=False)
                for r in rows
            ]

        return self._keyset_page(
            stmt,
            keys,
            kind="portfolios",
            filters={"portfolio_name": portfolio_name or None},
            page_size=page_size,
            page_token=page_token,
            limits=_PORTFOLIO_PAGE,
            records=records,
        )


# =========================================================================== bulk audit writers


def _copy_audit_postgresql(
    conn: Any,
    run_id: uuid.UUID,
    dates: np.ndarray,
    symbols: Sequence[str],
    t_idx: np.ndarray,
    s_idx: np.ndarray,
    columns: Mapping[str, np.ndarray | None],
) -> None:
    """COPY the rows in PostgreSQL's binary format, the buffer built with NumPy.

    Each tuple is: int16 field count, then per field an int32 byte length (-1
    for NULL) and the value in network byte order (uuid 16 bytes, date int32
    days since 2000-01-01, symbol UTF-8, five float8). Rows are laid out in a
    fixed-width structured array (symbols padded to the longest) and the
    padding and NULL payloads are dropped with one boolean mask.
    """
    encoded = [s.encode("utf-8") for s in symbols]
    width = max(len(b) for b in encoded)
    sym_bytes = np.zeros((len(encoded), width), dtype=np.uint8)
    for i, b in enumerate(encoded):
        sym_bytes[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    sym_len = np.array([len(b) for b in encoded], dtype=np.int64)
    days = dates.astype("datetime64[D]").astype(np.int64) - _PG_EPOCH_DAYS
    value_fields = list(AUDIT_VALUE_FIELDS)
    dtype = np.dtype(
        [
            ("nf", ">i2"),
            ("l_run", ">i4"),
            ("run", "u1", (16,)),
            ("l_date", ">i4"),
            ("date", ">i4"),
            ("l_sym", ">i4"),
            ("sym", "u1", (width,)),
            *[item for name in value_fields for item in ((f"l_{name}", ">i4"), (f"v_{name}", ">f8"))],
        ]
    )
    layout = dtype.fields
    assert layout is not None
    sym_offset = layout["sym"][1]
    run_bytes = np.frombuffer(run_id.bytes, dtype=np.uint8)
    names = ", ".join(["run_id", "date", "symbol", *value_fields])
    header = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY ml_prediction_audit ({names}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(header)
        for lo in range(0, t_idx.size, _COPY_CHUNK_ROWS):
            hi = min(lo + _COPY_CHUNK_ROWS, t_idx.size)
            ti, si = t_idx[lo:hi], s_idx[lo:hi]
            n = hi - lo
            rec = np.empty(n, dtype=dtype)
            rec["nf"] = 3 + len(value_fields)
            rec["l_run"] = 16
            rec["run"] = run_bytes
            rec["l_date"] = 4
            rec["date"] = days[ti]
            lens = sym_len[si]
            rec["l_sym"] = lens
            rec["sym"] = sym_bytes[si]
            raw = rec.view(np.uint8).reshape(n, dtype.itemsize)
            keep = np.ones((n, dtype.itemsize), dtype=bool)
            keep[:, sym_offset : sym_offset + width] = np.arange(width)[None, :] < lens[:, None]
            for name in value_fields:
                values = columns.get(name)
                v_off = layout[f"v_{name}"][1]
                if values is None:
                    rec[f"l_{name}"] = -1
                    keep[:, v_off : v_off + 8] = False
                    continue
                chunk = values[lo:hi]
                null = np.isnan(chunk)
                rec[f"l_{name}"] = np.where(null, -1, 8)
                rec[f"v_{name}"] = chunk
                keep[:, v_off : v_off + 8] = ~null[:, None]
            copy.write(raw[keep].tobytes())
        copy.write(b"\xff\xff")


def _insert_audit_executemany(
    conn: Any,
    run_id: uuid.UUID,
    dates: np.ndarray,
    symbols: Sequence[str],
    t_idx: np.ndarray,
    s_idx: np.ndarray,
    columns: Mapping[str, np.ndarray | None],
) -> None:
    """INSERT through the DBAPI's executemany, in batches, in SQLAlchemy's SQLite storage formats.

    `sa.Uuid` is stored as 32 hex characters and `sa.Date` as 'YYYY-MM-DD'
    text on SQLite; NaN becomes None (NULL).
    """
    value_fields = list(AUDIT_VALUE_FIELDS)
    date_text = np.asarray([str(d) for d in dates.astype("datetime64[D]")], dtype=object)
    symbol_arr = np.asarray(list(symbols), dtype=object)
    placeholders = ", ".join("?" * (3 + len(value_fields)))
    sql = (
        f"INSERT INTO ml_prediction_audit (run_id, date, symbol, {', '.join(value_fields)}) "
        f"VALUES ({placeholders})"
    )
    cur = conn.cursor()
    try:
        for lo in range(0, t_idx.size, _SQLITE_BATCH_ROWS):
            hi = min(lo + _SQLITE_BATCH_ROWS, t_idx.size)
            cols: list[Iterable[Any]] = [
                repeat(run_id.hex),
                date_text[t_idx[lo:hi]],
                symbol_arr[s_idx[lo:hi]],
            ]
            for name in value_fields:
                values = columns.get(name)
                if values is None:
                    cols.append(repeat(None))
                    continue
                chunk = values[lo:hi]
                obj = chunk.astype(object)
                obj[np.isnan(chunk)] = None
                cols.append(obj)
            cur.executemany(sql, zip(*cols, strict=False))
    finally:
        cur.close()
