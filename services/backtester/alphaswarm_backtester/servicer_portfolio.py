"""gRPC methods of the backtester for risk and portfolios: `MonteCarlo` and `RunPortfolioBacktest`.

`PortfolioRiskMixin` is mixed into `BacktesterServicer`
(`alphaswarm_backtester.servicer`), which provides `self.backtester` (the
use cases, `alphaswarm_backtester.core.Backtester`). The mixin subclasses the generated
`BacktesterServiceServicer`, so it must come before any other base that
does (Python refuses the other order), and its methods replace the
generated UNIMPLEMENTED ones.

- `MonteCarlo`: `returns`, or the equity curve of a stored backtest
  (`backtest_id`, read from the catalog) turned into per-bar
  returns `equity[s] / equity[s-1] - 1` with `equity[-1] =
  initial_capital`; then `alphaswarm_backtester.engine.montecarlo.monte_carlo`
  with the stationary bootstrap. Unset fields take the proto's defaults
  (1000 paths, 21-bar blocks, percentiles 5/25/50/75/95, 252 bars a year);
  for a stored backtest, an unset `periods_per_year` and the risk-free rate
  come from the conventions its metrics were computed with, so the
  simulated Sharpe is on the stored Sharpe's scale (`returns` given: rf 0).
- `RunPortfolioBacktest`: loads the legs' symbols from `dataset_cfg`
  (its `segments` are not needed), runs
  `alphaswarm_backtester.engine.portfolio.run_portfolio_backtest`, and saves
  the result through `SavePortfolioBacktest` when `persist` is set. The
  window is `backtest_cfg.start_date`..`end_date`, else the dataset's test
  segment when it has segments, else every loaded bar; bars before it warm
  the strategies and the volatility estimate up. `initial_capital` defaults
  to 100000; `rebalance_frequency` to `monthly`; `position_sizing_method` to
  `equal`; `execution_lag` to 1. The legs, sizing and formulas are recorded
  in the metric set's conventions (the catalog keeps them), and
  `PortfolioRecord.weights` holds each symbol's allocation averaged over the
  window. `backtest_cfg.rebalance_every` must be 1 (the portfolio rebalances
  by `rebalance_frequency`).

Leg positions come from the `leg_weights` of the `Backtester` when set (a
`LegWeights` callable; tests pass one), else from the rule strategies
(`alphaswarm_backtester.engine.rules.rule_weights`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as pb_grpc
from alphaswarm_backtester.core import Backtester, MonteCarloInput, PortfolioInput, PortfolioRun, Recording
from alphaswarm_backtester.engine.montecarlo import MonteCarloResult
from alphaswarm_backtester.engine.portfolio import DEFAULT_PORTFOLIO_CAPITAL, PortfolioLeg
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ensure_caller_waiting
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    config_from_proto,
    dates_to_strings,
    matrix_to_proto,
    metricset_to_proto,
)

__all__ = ["DEFAULT_REBALANCE_FREQUENCY", "DEFAULT_SIZING_METHOD", "PortfolioRiskMixin"]

DEFAULT_REBALANCE_FREQUENCY = "monthly"
DEFAULT_SIZING_METHOD = "equal"


def _legs_from_proto(legs: Any) -> list[PortfolioLeg]:
    if not legs:
        raise InvalidArgument("a portfolio needs at least one leg", field="legs")
    out = []
    for i, leg in enumerate(legs):
        if not leg.symbol:
            raise InvalidArgument("must name a symbol", field=f"legs[{i}].symbol")
        if not leg.strategy_cfg.HasField("type"):
            raise InvalidArgument(
                "must name the leg's strategy (a rule strategy or buy_and_hold)",
                field=f"legs[{i}].strategy_cfg.type",
            )
        strategy = config_from_proto(leg.strategy_cfg, StrategyConfig, prefix=f"legs[{i}].strategy_cfg")
        weight = leg.weight if leg.HasField("weight") else None
        out.append(PortfolioLeg(symbol=leg.symbol, strategy_cfg=strategy, weight=weight))
    return out


def monte_carlo_from_proto(request: pb.MonteCarloRequest) -> MonteCarloInput:
    given = request.HasField("returns") and len(request.returns.shape) > 0
    if given and request.backtest_id:
        raise InvalidArgument("give returns or backtest_id, not both", field="backtest_id")
    returns = None
    if given:
        returns = array_from_proto(request.returns, field="returns")
        if returns.ndim != 1:
            raise InvalidArgument(f"must be a 1-D array, got shape {returns.shape}", field="returns")
    elif not request.backtest_id:
        raise InvalidArgument("give returns or the backtest_id of a stored backtest", field="returns")
    return MonteCarloInput(
        returns=None if returns is None else returns.astype(np.float64),
        backtest_id=request.backtest_id,
        n_simulations=request.n_simulations,
        block_length=request.block_length,
        seed=request.seed,
        percentiles=list(request.percentiles),
        periods_per_year=request.periods_per_year,
    )


def monte_carlo_to_proto(result: MonteCarloResult) -> pb.MonteCarloResponse:
    response = pb.MonteCarloResponse(
        probability_of_loss=result.probability_of_loss, n_simulations=result.n_simulations
    )
    for name, d in result.distributions.items():
        response.distributions[name].CopyFrom(
            pb.Distribution(percentiles=list(d.percentiles), values=list(d.values), mean=d.mean, std=d.std)
        )
    return response


def portfolio_from_proto(request: pb.RunPortfolioBacktestRequest) -> PortfolioInput:
    legs = _legs_from_proto(request.legs)
    dataset_cfg = config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
    backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
    if not request.backtest_cfg.HasField("initial_capital"):
        backtest_cfg = backtest_cfg.model_copy(update={"initial_capital": DEFAULT_PORTFOLIO_CAPITAL})
    return PortfolioInput(
        legs=legs,
        dataset_cfg=dataset_cfg,
        backtest_cfg=backtest_cfg,
        rebalance_frequency=request.rebalance_frequency or DEFAULT_REBALANCE_FREQUENCY,
        position_sizing_method=request.position_sizing_method or DEFAULT_SIZING_METHOD,
        max_positions=request.max_positions if request.HasField("max_positions") else None,
        portfolio_name=request.portfolio_name,
        description=request.description,
        recording=Recording(persist=request.persist, request_id=request.request_id),
    )


def portfolio_to_proto(run: PortfolioRun) -> pb.RunPortfolioBacktestResponse:
    out, metrics = run.result.backtest, run.result.metrics
    return pb.RunPortfolioBacktestResponse(
        portfolio_backtest_id=run.portfolio_backtest_id,
        metrics=metricset_to_proto(metrics.values, metrics.reasons, metrics.conventions),
        dates=dates_to_strings(out.dates),
        equity=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
        weights_held=matrix_to_proto(out.weights_held, out.dates, list(out.symbols)),
    )


class PortfolioRiskMixin(pb_grpc.BacktesterServiceServicer):
    """`MonteCarlo` and `RunPortfolioBacktest`; the host class sets `backtester`."""

    backtester: Backtester

    def MonteCarlo(self, request: pb.MonteCarloRequest, context: Any) -> pb.MonteCarloResponse:
        return monte_carlo_to_proto(self.backtester.monte_carlo(monte_carlo_from_proto(request)))

    def RunPortfolioBacktest(
        self, request: pb.RunPortfolioBacktestRequest, context: Any
    ) -> pb.RunPortfolioBacktestResponse:
        run = self.backtester.run_portfolio(
            portfolio_from_proto(request), lambda what: ensure_caller_waiting(context, what)
        )
        return portfolio_to_proto(run)
