"""What the backtester's use cases write to the catalog, and the port they write it through.

The use cases (`alphaswarm_backtester.core`) build these entries from engine
results and hand them to a `CatalogWriter`; they never see a proto or a
channel. `alphaswarm_backtester.catalog_writer.PersistenceCatalogWriter` is
the real writer (the persistence service over gRPC, the records built by
`catalog_mapping`); unit tests pass an in-memory one.

Every `save_*` returns the ids the catalog assigned (or, for a replay of the
same `request_id`, the ids it assigned the first time).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from alphaswarm_backtester.engine import BacktestOutput
from alphaswarm_common.config import BacktestConfig
from alphaswarm_common.metrics import MetricSet

__all__ = [
    "BacktestEntry",
    "CatalogWriter",
    "OptimizationEntry",
    "PortfolioEntry",
    "StoredEquity",
    "WalkForwardEntry",
]


@dataclass(frozen=True)
class BacktestEntry:
    """One `mcp_backtest_results` row with its trades, equity and drawdown (from `output`).

    `backtest_id` is the id the row must get ("" lets the catalog assign
    one); `fingerprint` identifies the request that made it, so a replay of
    that request under the same `request_id` is recognised.
    """

    output: BacktestOutput
    symbol: str
    strategy_type: str
    backtest_cfg: BacktestConfig
    parameters: Mapping[str, Any]
    elapsed: float
    notes: str = ""
    request_id: str = ""
    fingerprint: str = ""
    backtest_id: str = ""
    metrics: MetricSet | None = None

    @property
    def metric_set(self) -> MetricSet:
        return self.metrics or self.output.metrics


@dataclass(frozen=True)
class OptimizationEntry:
    """One `mcp_optimization_results` row: an evaluated parameter set of an optimization."""

    backtest_id: str
    parameter_set: int
    params: Mapping[str, Any]
    objective_function: str
    is_statistically_significant: bool
    objective_value: float | None = None
    total_return: float | None = None
    sharpe_ratio: float | None = None
    max_drawdown: float | None = None
    win_rate: float | None = None
    profit_factor: float | None = None
    total_trades: int | None = None
    p_value: float | None = None
    rank: int | None = None


@dataclass(frozen=True)
class WalkForwardEntry:
    """One `mcp_walk_forward_tests` row: a window of a walk-forward test (dates as ISO days)."""

    parent_backtest_id: str
    window_size_months: int
    step_size_months: int
    training_start: str
    training_end: str
    test_period_start: str
    test_period_end: str
    optimal_parameters: Mapping[str, Any] | None = None
    training_performance: float | None = None
    out_of_sample_return: float | None = None
    out_of_sample_sharpe: float | None = None
    out_of_sample_drawdown: float | None = None
    out_of_sample_trades: int | None = None
    is_profitable: bool | None = None
    is_statistically_significant: bool = False
    performance_ratio: float | None = None
    degradation_factor: float | None = None


@dataclass(frozen=True)
class PortfolioEntry:
    """One `mcp_backtest_portfolios` row (dates as ISO days, `weights_history` `(T, N)`)."""

    portfolio_name: str
    description: str
    symbols: Sequence[str]
    allocation: Mapping[str, float]
    rebalance_frequency: str
    initial_capital: float
    position_sizing_method: str
    metrics: MetricSet
    dates: Sequence[str]
    equity: np.ndarray
    weights_history: np.ndarray
    backtest_date: dt.datetime
    max_positions: int | None = None

    @property
    def start_date(self) -> str:
        return self.dates[0]

    @property
    def end_date(self) -> str:
        return self.dates[-1]


@dataclass(frozen=True)
class StoredEquity:
    """A stored backtest's equity curve (None when it has none), capital and metric conventions."""

    equity: np.ndarray | None
    initial_capital: float
    conventions: Mapping[str, Any] = field(default_factory=dict)


class CatalogWriter(Protocol):
    """The catalog as the backtester's use cases see it."""

    def save_backtest(self, entry: BacktestEntry) -> str:
        """Store one backtest result; its id."""
        ...

    def save_optimizations(self, rows: Sequence[OptimizationEntry], *, request_id: str = "") -> list[str]:
        """Store the rows of one optimization in one transaction; their ids in order."""
        ...

    def save_walk_forward(self, rows: Sequence[WalkForwardEntry], *, request_id: str = "") -> list[str]:
        """Store the windows of one walk-forward test in one transaction; their ids in order."""
        ...

    def save_portfolio(self, entry: PortfolioEntry, *, request_id: str = "") -> str:
        """Store one portfolio backtest; its id."""
        ...

    def stored_equity(self, backtest_id: str) -> StoredEquity:
        """The equity curve of a stored backtest (NotFound naming `backtest_id` when there is none)."""
        ...
