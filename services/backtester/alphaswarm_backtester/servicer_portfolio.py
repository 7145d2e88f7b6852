"""gRPC methods of the backtester for risk and portfolios: `MonteCarlo` and `RunPortfolioBacktest`.

`PortfolioRiskMixin` is mixed into `BacktesterServicer`
(`alphaswarm_backtester.servicer`), which provides `self.persistence` (the
persistence service stub), `self.deadline` (seconds per outgoing call) and
`self.tracker`. The mixin subclasses the generated
`BacktesterServiceServicer`, so it must come before any other base that
does (Python refuses the other order), and its methods replace the
generated UNIMPLEMENTED ones.

- `MonteCarlo`: `returns`, or the equity curve of a stored backtest
  (`backtest_id`, read through `GetBacktestResult`) turned into per-bar
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

Leg positions come from `self.portfolio_leg_weights` when set on the
instance (a `LegWeights` callable; tests pass one), else from the rule
strategies (`alphaswarm_backtester.engine.rules.rule_weights`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as pb_grpc
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.montecarlo import (
    DEFAULT_BLOCK_LENGTH,
    DEFAULT_N_SIMULATIONS,
    MonteCarloResult,
    monte_carlo,
)
from alphaswarm_backtester.engine.portfolio import (
    DEFAULT_PORTFOLIO_CAPITAL,
    LegWeights,
    PortfolioBacktest,
    PortfolioLeg,
    run_portfolio_backtest,
)
from alphaswarm_common.config import BacktestConfig, DatasetConfig, StrategyConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.grpc_client import call
from alphaswarm_common.grpc_server import ensure_caller_waiting
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    config_from_proto,
    dates_to_strings,
    matrix_to_proto,
    metricset_from_proto,
    metricset_to_proto,
    struct_from_dict,
    timestamp_from_datetime,
)
from alphaswarm_common.tracking import Tracker

__all__ = ["DEFAULT_REBALANCE_FREQUENCY", "DEFAULT_SIZING_METHOD", "PortfolioRiskMixin"]

DEFAULT_REBALANCE_FREQUENCY = "monthly"
DEFAULT_SIZING_METHOD = "equal"
DEFAULT_PERIODS_PER_YEAR = 252.0
_NAME_LENGTH = 100  # mcp_backtest_portfolios.portfolio_name is VARCHAR(100)


def _engine_config(cfg: BacktestConfig) -> EngineConfig:
    """The engine config of a backtest section (an unset execution_lag is METRICS.md's default 1)."""
    return EngineConfig.from_backtest_config(
        cfg,
        execution_lag=cfg.execution_lag,
        min_fee=cfg.min_fee,
        max_gross_leverage=cfg.max_gross_leverage,
        stop_loss=cfg.stop_loss,
        take_profit=cfg.take_profit,
    )


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


def _returns_from_equity(equity: np.ndarray, initial_capital: float, backtest_id: str) -> np.ndarray:
    curve = np.asarray(equity, dtype=np.float64).reshape(-1)
    if curve.size < 2 or not np.isfinite(curve).all() or (curve <= 0).any():
        raise DataError(
            f"backtest {backtest_id} has no usable equity curve (needs >= 2 positive finite values)",
            field="backtest_id",
        )
    if not (math.isfinite(initial_capital) and initial_capital > 0):
        raise DataError(f"backtest {backtest_id} has no initial capital", field="backtest_id")
    previous = np.concatenate(([initial_capital], curve[:-1]))
    return curve / previous - 1.0


def _distribution_proto(result: MonteCarloResult) -> dict[str, pb.Distribution]:
    return {
        name: pb.Distribution(percentiles=list(d.percentiles), values=list(d.values), mean=d.mean, std=d.std)
        for name, d in result.distributions.items()
    }


def _day(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="D"))


class PortfolioRiskMixin(pb_grpc.BacktesterServiceServicer):
    """`MonteCarlo` and `RunPortfolioBacktest`; the host class sets `persistence`, `deadline`, `tracker`."""

    persistence: ppb_grpc.PersistenceServiceStub
    deadline: float
    tracker: Tracker
    portfolio_leg_weights: LegWeights | None = None

    # ------------------------------------------------------------------------------ Monte Carlo
    def MonteCarlo(self, request: pb.MonteCarloRequest, context: Any) -> pb.MonteCarloResponse:
        returns, stored = self._monte_carlo_returns(request)
        ppy = request.periods_per_year or stored.get("periods_per_year") or DEFAULT_PERIODS_PER_YEAR
        result = monte_carlo(
            returns,
            n_simulations=request.n_simulations or DEFAULT_N_SIMULATIONS,
            block_length=request.block_length or DEFAULT_BLOCK_LENGTH,
            method="stationary",
            seed=request.seed,
            percentiles=list(request.percentiles) or None,
            periods_per_year=ppy,
            rf=float(stored.get("rf") or 0.0),
        )
        response = pb.MonteCarloResponse(
            probability_of_loss=result.probability_of_loss, n_simulations=result.n_simulations
        )
        for name, dist in _distribution_proto(result).items():
            response.distributions[name].CopyFrom(dist)
        return response

    def _monte_carlo_returns(self, request: pb.MonteCarloRequest) -> tuple[np.ndarray, dict[str, Any]]:
        """The returns to resample and, for a stored backtest, its `periods_per_year` and `rf`."""
        given = request.HasField("returns") and len(request.returns.shape) > 0
        if given and request.backtest_id:
            raise InvalidArgument("give returns or backtest_id, not both", field="backtest_id")
        if given:
            values = array_from_proto(request.returns, field="returns")
            if values.ndim != 1:
                raise InvalidArgument(f"must be a 1-D array, got shape {values.shape}", field="returns")
            return values.astype(np.float64), {}
        if not request.backtest_id:
            raise InvalidArgument("give returns or the backtest_id of a stored backtest", field="returns")
        record = call(
            self.persistence.GetBacktestResult,
            ppb.GetBacktestResultRequest(backtest_id=request.backtest_id, include_trades=False),
            timeout=self.deadline,
            target="persistence",
        ).result
        if not record.HasField("equity_curve"):
            raise DataError(f"backtest {request.backtest_id} has no equity curve", field="backtest_id")
        equity = array_from_proto(record.equity_curve, field="equity_curve")
        returns = _returns_from_equity(equity, record.initial_capital, request.backtest_id)
        _, _, conventions = metricset_from_proto(record.metrics)
        stored = {
            key: float(conventions[key])
            for key in ("periods_per_year", "rf")
            if isinstance(conventions.get(key), int | float) and math.isfinite(float(conventions[key]))
        }
        return returns, stored

    # ------------------------------------------------------------------------------ portfolios
    def RunPortfolioBacktest(
        self, request: pb.RunPortfolioBacktestRequest, context: Any
    ) -> pb.RunPortfolioBacktestResponse:
        legs = _legs_from_proto(request.legs)
        dataset_cfg = config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        backtest_cfg = config_from_proto(request.backtest_cfg, BacktestConfig, prefix="backtest_cfg")
        if not request.backtest_cfg.HasField("initial_capital"):
            backtest_cfg = backtest_cfg.model_copy(update={"initial_capital": DEFAULT_PORTFOLIO_CAPITAL})
        engine_cfg = _engine_config(backtest_cfg)
        frequency = request.rebalance_frequency or DEFAULT_REBALANCE_FREQUENCY
        sizing = request.position_sizing_method or DEFAULT_SIZING_METHOD
        max_positions = request.max_positions if request.HasField("max_positions") else None

        panel = self._portfolio_panel(dataset_cfg, backtest_cfg, legs)
        start = backtest_cfg.start_date or (dataset_cfg.segments.test.start if dataset_cfg.segments else None)
        end = backtest_cfg.end_date or (dataset_cfg.segments.test.end if dataset_cfg.segments else None)
        window = np.ones(panel.n_dates, dtype=bool)
        if start is not None:
            window &= panel.dates >= np.datetime64(start, "D")
        if end is not None:
            window &= panel.dates <= np.datetime64(end, "D")
        if window.sum() < 2:
            if backtest_cfg.start_date or backtest_cfg.end_date:
                field = "backtest_cfg.start_date" if backtest_cfg.start_date else "backtest_cfg.end_date"
            else:
                field = "dataset_cfg.segments.test" if dataset_cfg.segments else "dataset_cfg.start_date"
            raise DataError(
                f"the backtest window {start or 'start'}..{end or 'end'} has {int(window.sum())} bar(s) "
                "of the dataset; it needs at least 2",
                field=field,
            )
        if engine_cfg.fill_price == "open" and panel.open is None:
            raise InvalidArgument(
                f"dataset {dataset_cfg.source!r} has no open prices", field="backtest_cfg.fill_price"
            )
        benchmark = None
        if backtest_cfg.benchmark:
            bench_close = panel.close[:, panel.symbol_index(backtest_cfg.benchmark)]
            benchmark = np.zeros(panel.n_dates)
            with np.errstate(divide="ignore", invalid="ignore"):
                benchmark[1:] = bench_close[1:] / bench_close[:-1] - 1.0
            if not np.isfinite(benchmark[window]).all():
                raise DataError(
                    f"the benchmark {backtest_cfg.benchmark!r} misses a close in the backtest window",
                    field="backtest_cfg.benchmark",
                )

        result = run_portfolio_backtest(
            legs,
            panel.close,
            dates=panel.dates,
            symbols=panel.symbols,
            open=panel.open,
            high=panel.high,
            low=panel.low,
            volume=panel.volume,
            rebalance_frequency=frequency,
            position_sizing_method=sizing,
            max_positions=max_positions,
            config=engine_cfg,
            start=start,
            end=end,
            benchmark=benchmark,
            leg_weights=self.portfolio_leg_weights,
        )
        out = result.backtest
        metrics = result.metrics

        portfolio_id = ""
        if request.persist:
            ensure_caller_waiting(context, "the portfolio backtest")
            portfolio_id = self._save_portfolio(request, result, engine_cfg, frequency, sizing, max_positions)
        return pb.RunPortfolioBacktestResponse(
            portfolio_backtest_id=portfolio_id,
            metrics=metricset_to_proto(metrics.values, metrics.reasons, metrics.conventions),
            dates=dates_to_strings(out.dates),
            equity=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
            weights_held=matrix_to_proto(out.weights_held, out.dates, list(out.symbols)),
        )

    def _portfolio_panel(
        self, dataset_cfg: DatasetConfig, backtest_cfg: BacktestConfig, legs: list[PortfolioLeg]
    ) -> Panel:
        """The panel of the legs' symbols (and the benchmark's), each leg's symbol checked against the data."""
        full = load_panel(dataset_cfg.model_copy(update={"symbols": None}))
        allowed = set(dataset_cfg.symbols) if dataset_cfg.symbols else None
        for i, leg in enumerate(legs):
            if leg.symbol not in full.symbols:
                raise InvalidArgument(
                    f"{leg.symbol!r} is not a symbol of dataset {dataset_cfg.source!r}",
                    field=f"legs[{i}].symbol",
                )
            if allowed is not None and leg.symbol not in allowed:
                raise InvalidArgument(
                    f"{leg.symbol!r} is not one of dataset_cfg.symbols", field=f"legs[{i}].symbol"
                )
        needed = [leg.symbol for leg in legs]
        if backtest_cfg.benchmark:
            if backtest_cfg.benchmark not in full.symbols:
                raise InvalidArgument(
                    f"{backtest_cfg.benchmark!r} is not a symbol of dataset {dataset_cfg.source!r}",
                    field="backtest_cfg.benchmark",
                )
            needed.append(backtest_cfg.benchmark)
        return full.select(list(dict.fromkeys(needed)))

    def _save_portfolio(
        self,
        request: pb.RunPortfolioBacktestRequest,
        result: PortfolioBacktest,
        engine_cfg: EngineConfig,
        frequency: str,
        sizing: str,
        max_positions: int | None,
    ) -> str:
        out = result.backtest
        metrics = result.metrics
        name = request.portfolio_name or f"{sizing} {frequency}: {'+'.join(result.symbols)}"
        record = ppb.PortfolioRecord(
            portfolio_name=name[:_NAME_LENGTH],
            description=request.description,
            start_date=_day(out.dates[0]),
            end_date=_day(out.dates[-1]),
            symbols=list(result.symbols),
            weights=struct_from_dict(result.allocation_by_symbol()),
            rebalance_frequency=frequency,
            initial_capital=engine_cfg.initial_capital,
            position_sizing_method=sizing,
            metrics=metricset_to_proto(metrics.values, metrics.reasons, metrics.conventions),
            dates=dates_to_strings(out.dates),
            equity_curve=array_to_proto(np.asarray(out.equity, dtype=np.float64)),
            weights_history=array_to_proto(np.asarray(out.weights_held, dtype=np.float64)),
            status="completed",
        )
        if max_positions is not None:
            record.max_positions = max_positions
        record.backtest_date.CopyFrom(timestamp_from_datetime(dt.datetime.now(dt.UTC)))
        saved = call(
            self.persistence.SavePortfolioBacktest,
            ppb.SavePortfolioBacktestRequest(portfolio=record, request_id=request.request_id),
            timeout=self.deadline,
            target="persistence",
        )
        return str(saved.portfolio_backtest_id)
