"""The backtest engine of AlphaSwarm: pure NumPy, no I/O.

- `EngineConfig`: the accounting conventions (`from_backtest_config` builds it
  from `alphaswarm_common.config.BacktestConfig`).
- `run_backtest(target_weights, close, *, dates, symbols, config, open, high,
  low, benchmark) -> BacktestOutput`: share-and-cash accounting that matches
  vectorbt's `Portfolio.from_orders(size_type="targetpercent",
  cash_sharing=True)` (see `accounting`), the trade ledger (`trades`) and the
  trading metrics (`alphaswarm_common.metrics.trading_metrics`).
- `weights_from_signal(signal, strategy_type, params)` and the registry
  `ALPHA_STRATEGIES`: predictions -> target weights (`strategies`).
"""

from alphaswarm_backtester.engine.backtest import BacktestOutput, run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.strategies import (
    ALPHA_STRATEGIES,
    AlphaStrategy,
    validate_strategy_params,
    weights_from_signal,
)
from alphaswarm_backtester.engine.trades import EXIT_REASONS, TRADE_COLUMNS

__all__ = [
    "ALPHA_STRATEGIES",
    "EXIT_REASONS",
    "TRADE_COLUMNS",
    "AlphaStrategy",
    "BacktestOutput",
    "EngineConfig",
    "run_backtest",
    "validate_strategy_params",
    "weights_from_signal",
]
