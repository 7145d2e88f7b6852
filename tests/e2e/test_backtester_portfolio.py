"""MonteCarlo and RunPortfolioBacktest end to end over the embedded stack's gRPC servers.

The responses are checked against computations made here from the raw
prices (buy-and-hold by hand), against the pure engine functions on the same
panel, and against what the catalog returns for the saved rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import numpy as np
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as pb_grpc
from alphaswarm.common.v1 import arrays_pb2, config_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.montecarlo import monte_carlo
from alphaswarm_backtester.engine.portfolio import PortfolioLeg, run_portfolio_backtest
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import call, remote_field
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    dates_to_strings,
    matrix_from_proto,
    matrix_to_proto,
    metricset_from_proto,
    struct_from_dict,
    struct_to_dict,
)

pytestmark = pytest.mark.e2e

TIMEOUT = 120.0
WINDOW = ("2017-01-03", "2018-12-31")


def _panel(symbols: list[str], start: str = "2016-01-04", end: str = WINDOW[1]) -> Panel:
    """The shipped panel cut as the servicer cuts it."""
    full = load_panel(DatasetConfig(source="sp500"))
    return full.select(symbols).slice(start, end)


def _leg(symbol: str, strategy: str, **params: Any) -> pb.PortfolioLeg:
    return pb.PortfolioLeg(
        symbol=symbol, strategy_cfg=config_pb2.StrategyConfig(type=strategy, params=struct_from_dict(params))
    )


def _dataset() -> config_pb2.DatasetConfig:
    return config_pb2.DatasetConfig(source="sp500", start_date="2016-01-04", end_date=WINDOW[1])


# ----------------------------------------------------------------------------- Monte Carlo


def test_monte_carlo_of_returns(backtester: pb_grpc.BacktesterServiceStub) -> None:
    rng = np.random.default_rng(31)
    r = rng.normal(0.0004, 0.011, 504)
    response = call(
        backtester.MonteCarlo,
        pb.MonteCarloRequest(returns=array_to_proto(r), n_simulations=2000, block_length=21, seed=17),
        timeout=TIMEOUT,
    )
    expected = monte_carlo(r, n_simulations=2000, block_length=21, seed=17)
    assert response.n_simulations == 2000
    assert response.probability_of_loss == pytest.approx(expected.probability_of_loss, abs=0)
    assert set(response.distributions) == {"total_return", "max_drawdown", "sharpe"}
    for name, dist in expected.distributions.items():
        got = response.distributions[name]
        np.testing.assert_allclose(got.values, dist.values, rtol=1e-12)
        assert got.mean == pytest.approx(dist.mean, rel=1e-12)
        assert got.std == pytest.approx(dist.std, rel=1e-12)
    # the i.i.d. total return has mean (1 + mean r)^n - 1; 21-bar blocks keep it within a few standard errors
    analytic = (1.0 + r.mean()) ** r.size - 1.0
    se = response.distributions["total_return"].std / np.sqrt(2000)
    assert abs(response.distributions["total_return"].mean - analytic) < 5 * se


def test_monte_carlo_of_a_stored_backtest(
    backtester: pb_grpc.BacktesterServiceStub, persistence: ppb_grpc.PersistenceServiceStub
) -> None:
    panel = _panel(["AAPL", "KO", "XOM", "JPM", "PFE"], start="2017-01-03")
    close = np.asarray(panel.close)
    signal = np.full(close.shape, np.nan)
    signal[20:] = close[20:] / close[:-20] - 1.0  # 20-bar momentum, known at the close of t
    dates = panel.dates
    run = call(
        backtester.RunBacktest,
        pb.RunBacktestRequest(
            signal=matrix_to_proto(signal, dates, list(panel.symbols)),
            prices=arrays_pb2.Panel(
                dates=dates_to_strings(dates),
                symbols=list(panel.symbols),
                fields={"close": array_to_proto(close)},
            ),
            strategy_cfg=config_pb2.StrategyConfig(
                type="long_only_topk", params=struct_from_dict({"top_k": 2})
            ),
            backtest_cfg=config_pb2.BacktestConfig(execution_lag=1, initial_capital=50_000.0),
            persist=True,
            request_id=f"mc-e2e-{uuid.uuid4()}",
        ),
        timeout=TIMEOUT,
    )
    assert run.backtest_id
    response = call(
        backtester.MonteCarlo,
        pb.MonteCarloRequest(backtest_id=run.backtest_id, n_simulations=500, block_length=10, seed=3),
        timeout=TIMEOUT,
    )
    stored = call(
        persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=run.backtest_id),
        timeout=TIMEOUT,
    ).result
    equity = array_from_proto(stored.equity_curve)
    returns = equity / np.concatenate(([50_000.0], equity[:-1])) - 1.0
    np.testing.assert_allclose(returns, array_from_proto(run.returns), rtol=1e-9, atol=1e-12)
    expected = monte_carlo(returns, n_simulations=500, block_length=10, seed=3, periods_per_year=252.0)
    for name, dist in expected.distributions.items():
        np.testing.assert_allclose(response.distributions[name].values, dist.values, rtol=1e-9)
    assert response.probability_of_loss == expected.probability_of_loss


def test_monte_carlo_errors_name_the_field(backtester: pb_grpc.BacktesterServiceStub) -> None:
    short = array_to_proto(np.array([0.01, -0.02, 0.005]))
    for request, field in (
        (pb.MonteCarloRequest(returns=short), "block_length"),
        (pb.MonteCarloRequest(returns=array_to_proto(np.array([0.01, np.nan])), block_length=1), "returns"),
        (pb.MonteCarloRequest(), "returns"),
    ):
        with pytest.raises(InvalidArgument) as info:
            call(backtester.MonteCarlo, request, timeout=TIMEOUT)
        assert remote_field(info.value) == field
    with pytest.raises(grpc.RpcError) as raw:
        backtester.MonteCarlo(pb.MonteCarloRequest(returns=short), timeout=TIMEOUT)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ----------------------------------------------------------------------------- portfolios


def test_buy_and_hold_portfolio_is_saved_and_matches_the_prices(
    backtester: pb_grpc.BacktesterServiceStub, persistence: ppb_grpc.PersistenceServiceStub
) -> None:
    pytest.importorskip("alphaswarm_backtester.engine.rules")
    symbols = ["AAPL", "KO", "XOM"]
    response = call(
        backtester.RunPortfolioBacktest,
        pb.RunPortfolioBacktestRequest(
            dataset_cfg=_dataset(),
            legs=[_leg(s, "buy_and_hold") for s in symbols],
            rebalance_frequency="none",
            position_sizing_method="equal",
            backtest_cfg=config_pb2.BacktestConfig(
                fees=0.0, slippage=0.0, start_date=WINDOW[0], end_date=WINDOW[1]
            ),  # execution_lag defaults to 1: decided at the first close, bought at the second
            portfolio_name="e2e buy and hold",
            description="three stocks, equal weights, no rebalancing",
            persist=True,
            request_id=f"pf-e2e-{uuid.uuid4()}",
        ),
        timeout=TIMEOUT,
    )
    panel = _panel(symbols, start=WINDOW[0])
    px = np.asarray(panel.close)
    growth = px[1:] / px[1]  # bought at the close of the second bar, then held
    hand = np.concatenate(([100_000.0], 100_000.0 / 3.0 * growth.sum(axis=1)))
    equity = array_from_proto(response.equity)
    np.testing.assert_allclose(equity, hand, rtol=1e-10)
    assert list(response.dates) == dates_to_strings(panel.dates)
    held, _, held_symbols = matrix_from_proto(response.weights_held)
    assert held_symbols == symbols
    np.testing.assert_array_equal(held[0], 0.0)
    np.testing.assert_allclose(held[1:], growth / growth.sum(axis=1, keepdims=True), rtol=1e-10)
    values, _, conventions = metricset_from_proto(response.metrics)
    assert values["total_return"] == pytest.approx(hand[-1] / 100_000.0 - 1.0, rel=1e-10)
    assert values["turnover_rate"] == pytest.approx(252.0 / len(hand), rel=1e-10)  # one purchase
    assert values["diversification_ratio"] is not None and values["diversification_ratio"] > 1.0
    assert values["concentration_index"] == pytest.approx(
        np.mean((growth**2).sum(axis=1) / growth.sum(axis=1) ** 2), rel=1e-10
    )
    assert conventions["portfolio"]["rebalance_frequency"] == "none"

    assert response.portfolio_backtest_id
    stored = call(
        persistence.GetPortfolioBacktest,
        ppb.GetPortfolioBacktestRequest(portfolio_backtest_id=response.portfolio_backtest_id),
        timeout=TIMEOUT,
    ).portfolio
    assert stored.portfolio_name == "e2e buy and hold"
    assert list(stored.symbols) == symbols
    assert stored.initial_capital == 100_000.0
    assert stored.rebalance_frequency == "none" and stored.position_sizing_method == "equal"
    assert struct_to_dict(stored.weights) == {s: pytest.approx(1 / 3) for s in symbols}
    assert (stored.start_date, stored.end_date) == (
        dates_to_strings(panel.dates)[0],
        dates_to_strings(panel.dates)[-1],
    )
    np.testing.assert_allclose(array_from_proto(stored.equity_curve), equity, rtol=1e-12)
    assert array_from_proto(stored.weights_history).shape == (len(equity), 3)
    stored_values, _, _ = metricset_from_proto(stored.metrics)
    for name in ("sharpe", "total_return", "diversification_ratio", "concentration_index", "turnover_rate"):
        assert stored_values[name] == pytest.approx(values[name], abs=5e-5), name  # NUMERIC(_, 4) columns


def test_rule_strategy_portfolio_matches_the_engine(backtester: pb_grpc.BacktesterServiceStub) -> None:
    pytest.importorskip("alphaswarm_backtester.engine.rules")
    legs = [
        _leg("AAPL", "sma_cross", fast_period=10, slow_period=30),
        _leg("MSFT", "rsi", period=14),
        _leg("XOM", "momentum", lookback=20, threshold=0.02),
        _leg("KO", "buy_and_hold"),
        _leg("JPM", "bollinger"),
    ]
    response = call(
        backtester.RunPortfolioBacktest,
        pb.RunPortfolioBacktestRequest(
            dataset_cfg=_dataset(),
            legs=legs,
            rebalance_frequency="monthly",
            position_sizing_method="inverse_volatility",
            max_positions=3,
            backtest_cfg=config_pb2.BacktestConfig(start_date=WINDOW[0], end_date=WINDOW[1]),
        ),
        timeout=TIMEOUT,
    )
    assert response.portfolio_backtest_id == ""
    panel = _panel(["AAPL", "MSFT", "XOM", "KO", "JPM"])
    expected = run_portfolio_backtest(
        [
            PortfolioLeg(
                leg.symbol,
                StrategyConfig(type=leg.strategy_cfg.type, params=struct_to_dict(leg.strategy_cfg.params)),
            )
            for leg in legs
        ],
        panel.close,
        dates=panel.dates,
        symbols=panel.symbols,
        rebalance_frequency="monthly",
        position_sizing_method="inverse_volatility",
        max_positions=3,
        config=EngineConfig(initial_capital=100_000.0),
        start=WINDOW[0],
        end=WINDOW[1],
    )
    np.testing.assert_allclose(array_from_proto(response.equity), expected.backtest.equity, rtol=1e-12)
    held, _, _ = matrix_from_proto(response.weights_held)
    np.testing.assert_allclose(held, expected.backtest.weights_held, rtol=1e-12, atol=1e-15)
    assert ((held != 0).sum(axis=1) <= 3).all()
    assert len(expected.backtest.trades) > 5  # the rules did trade
    values, _, conventions = metricset_from_proto(response.metrics)
    assert values["turnover_rate"] == pytest.approx(expected.metrics["turnover_rate"], rel=1e-12)
    assert [leg["strategy"]["type"] for leg in conventions["portfolio"]["legs"]] == [
        "sma_cross",
        "rsi",
        "momentum",
        "buy_and_hold",
        "bollinger",
    ]


def test_portfolio_errors_name_the_field(backtester: pb_grpc.BacktesterServiceStub) -> None:
    base: dict[str, Any] = {
        "dataset_cfg": _dataset(),
        "backtest_cfg": config_pb2.BacktestConfig(start_date=WINDOW[0], end_date=WINDOW[1]),
    }
    for overrides, field in (
        ({"legs": [_leg("NOPE", "buy_and_hold")]}, "legs[0].symbol"),
        ({"legs": [_leg("AAPL", "buy_and_hold"), _leg("KO", "no_such_rule")]}, "legs[1].strategy_cfg.type"),
        (
            {"legs": [_leg("AAPL", "sma_cross", fast_period=30, slow_period=10)]},
            "legs[0].strategy_cfg.params.slow_period",
        ),
        (
            {"legs": [_leg("AAPL", "buy_and_hold")], "position_sizing_method": "kelly"},
            "position_sizing_method",
        ),
    ):
        with pytest.raises(InvalidArgument) as info:
            call(
                backtester.RunPortfolioBacktest,
                pb.RunPortfolioBacktestRequest(**base, **overrides),
                timeout=TIMEOUT,
            )
        assert remote_field(info.value) == field
