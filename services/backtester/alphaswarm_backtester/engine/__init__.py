"""The backtest engine of AlphaSwarm: NumPy and one numba-compiled account loop (`kernels`), no I/O.

- `EngineConfig`: the accounting conventions (`from_backtest_config` builds it
  from `alphaswarm_common.config.BacktestConfig`).
- `run_backtest(target_weights, close, *, dates, symbols, config, open, high,
  low, benchmark) -> BacktestOutput`: share-and-cash accounting that matches
  vectorbt's `Portfolio.from_orders(size_type="targetpercent",
  cash_sharing=True)` (see `kernels`), the trade ledger (`trades`) and the
  trading metrics (`alphaswarm_common.metrics.trading_metrics`).
- `weights_from_signal(signal, strategy_type, params)` and the registry
  `ALPHA_STRATEGIES`: predictions -> target weights (`strategies`).
- `rule_weights(strategy_type, params, *, close, open, high, low, volume)` and
  the registry `RULE_STRATEGIES`: prices -> positions of a rule strategy
  (`sma_cross`, `rsi`, ..., `buy_and_hold`); `run_rule_backtest` backtests one
  on a window with the indicators warmed up on the history before it (`rules`).
- `optimize(...) -> OptimizationResult`: grid / seeded random search over a
  rule's parameters, every set ranked, Deflated-Sharpe p-values, a batch
  kernel that evaluates all sets at once (`optimize`).
- `walk_forward(...) -> WalkForwardResult`: in-sample optimization and
  out-of-sample test over rolling or anchored windows, and the stitched
  out-of-sample account (`walkforward`).
"""

from alphaswarm_backtester.engine.backtest import BacktestOutput, run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.optimize import (
    OBJECTIVES,
    TRIAL_METRICS,
    OptimizationResult,
    ParameterSet,
    SkippedSet,
    Trial,
    optimize,
)
from alphaswarm_backtester.engine.rules import (
    RULE_STRATEGIES,
    RuleParams,
    is_rule_strategy,
    rule_target_weights,
    rule_weights,
    run_rule_backtest,
    validate_rule_params,
)
from alphaswarm_backtester.engine.strategies import (
    ALPHA_STRATEGIES,
    AlphaStrategy,
    validate_strategy_params,
    weights_from_signal,
)
from alphaswarm_backtester.engine.trades import EXIT_REASONS, TRADE_COLUMNS
from alphaswarm_backtester.engine.walkforward import (
    WalkForwardResult,
    WalkForwardWindow,
    walk_forward,
    walk_forward_windows,
)

__all__ = [
    "ALPHA_STRATEGIES",
    "EXIT_REASONS",
    "OBJECTIVES",
    "RULE_STRATEGIES",
    "TRADE_COLUMNS",
    "TRIAL_METRICS",
    "AlphaStrategy",
    "BacktestOutput",
    "EngineConfig",
    "OptimizationResult",
    "ParameterSet",
    "RuleParams",
    "SkippedSet",
    "Trial",
    "WalkForwardResult",
    "WalkForwardWindow",
    "is_rule_strategy",
    "optimize",
    "rule_target_weights",
    "rule_weights",
    "run_backtest",
    "run_rule_backtest",
    "validate_rule_params",
    "validate_strategy_params",
    "walk_forward",
    "walk_forward_windows",
    "weights_from_signal",
]
