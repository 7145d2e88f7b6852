"""Portfolio accounting: share counts stay fixed between rebalance dates, costs are not traded back.

A buy-and-hold portfolio must order on its entry and rebalance fills only,
whatever the costs (`min_fee` included): its equity, costs and orders are
checked against a share-and-cash loop written out here, and against
vectorbt's `Portfolio.from_orders(size_type="targetpercent",
cash_sharing=True)` given the same orders, with and without missing closes
at the end of the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.portfolio import PortfolioLeg, run_portfolio_backtest
from alphaswarm_common.config import StrategyConfig

pytestmark = pytest.mark.unit

BH = StrategyConfig(type="buy_and_hold")


def buy_and_hold(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.ones(bars["close"].shape[0])


def momentum(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    """Causal: long while the `lookback`-bar return is positive, else flat."""
    close = bars["close"]
    lookback = int(cfg.params.get("lookback", 10))
    out = np.zeros(close.shape)
    with np.errstate(invalid="ignore"):
        out[lookback:] = (close[lookback:] > close[:-lookback]).astype(np.float64)
    return out


def by_type(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    """`momentum` legs run `momentum`, every other leg is bought and held."""
    return momentum(cfg, bars) if cfg.type == "momentum" else buy_and_hold(cfg, bars)


def _market(seed: int, n_bars: int, n_syms: int, *, nan_tail: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, (n_bars, n_syms)), axis=0))
    if nan_tail:  # missing future bars: S1 stops trading 40 bars before the end, S2 10 bars before
        close[-40:, 1] = np.nan
        close[-10:, 2] = np.nan
    dates = pd.bdate_range("2020-01-01", periods=n_bars)
    return {"close": close, "dates": dates, "symbols": [f"S{j}" for j in range(n_syms)]}


def _run(legs: list[PortfolioLeg], m: dict[str, Any], config: EngineConfig, **kwargs: Any) -> Any:
    return run_portfolio_backtest(
        legs, m["close"], dates=m["dates"], symbols=m["symbols"], config=config, leg_weights=by_type, **kwargs
    )


def _month_fills(dates: pd.DatetimeIndex, lag: int, freq: str) -> np.ndarray:
    firsts = np.flatnonzero(~dates.to_period("M").duplicated()) if freq == "monthly" else np.array([0])
    fills = firsts + lag
    return fills[fills < dates.size]


def _share_and_cash_loop(
    close: np.ndarray, weights: np.ndarray, fills: np.ndarray, *, capital: float, rate: float, min_fee: float
) -> dict[str, np.ndarray]:
    """One bar at a time: on a fill, every symbol with a close goes to `weights * V` (V pre-trade)."""
    n_bars, n_syms = close.shape
    shares = np.zeros(n_syms)
    cash = capital
    mark = np.full(n_syms, np.nan)
    equity = np.empty(n_bars)
    costs = np.zeros(n_bars)
    n_orders = np.zeros(n_bars, dtype=np.int64)
    for s in range(n_bars):
        for i in range(n_syms):
            if not np.isnan(close[s, i]):
                mark[i] = close[s, i]
        if s in set(fills.tolist()):
            value = cash + sum(shares[i] * mark[i] for i in range(n_syms) if shares[i] != 0.0)
            for i in range(n_syms):
                if np.isnan(close[s, i]):
                    continue  # untradable: its shares are kept
                new = weights[i] * value / close[s, i]
                order = new - shares[i]
                if order != 0.0:
                    notional = abs(order) * close[s, i]
                    fee = max(min_fee, rate * notional)
                    cash -= order * close[s, i] + fee
                    costs[s] += fee
                    n_orders[s] += 1
                shares[i] = new
        equity[s] = cash + sum(shares[i] * mark[i] for i in range(n_syms) if shares[i] != 0.0)
    return {"equity": equity, "costs": costs, "n_orders": n_orders}


@pytest.mark.parametrize("nan_tail", [False, True])
@pytest.mark.parametrize("freq", ["none", "monthly"])
def test_buy_and_hold_pays_fees_on_entry_and_rebalance_fills_only(freq: str, nan_tail: bool) -> None:
    m = _market(31, 300, 3, nan_tail=nan_tail)
    cfg = EngineConfig(initial_capital=100_000.0, min_fee=1.0)  # fees + slippage 0.2%, lag 1
    out = _run([PortfolioLeg(s, BH) for s in m["symbols"]], m, cfg, rebalance_frequency=freq)
    fills = _month_fills(m["dates"], 1, freq)
    hand = _share_and_cash_loop(
        m["close"], np.full(3, 1 / 3), fills, capital=100_000.0, rate=cfg.cost_rate, min_fee=1.0
    )
    bt = out.backtest
    equity_prev = np.concatenate(([100_000.0], bt.equity[:-1]))
    paid = bt.costs * equity_prev  # currency
    np.testing.assert_allclose(bt.equity, hand["equity"], rtol=1e-12)
    np.testing.assert_allclose(paid, hand["costs"], rtol=1e-9, atol=1e-9)
    # orders on the fills only: nothing trades the costs back between them
    np.testing.assert_array_equal(np.flatnonzero(bt.traded), np.flatnonzero(hand["n_orders"]))
    assert set(np.flatnonzero(bt.traded).tolist()) <= set(fills.tolist())
    np.testing.assert_array_equal(bt.fill_bars, fills)
    n_orders = int(hand["n_orders"].sum())
    if freq == "none":
        assert n_orders == 3 and bt.fill_bars.tolist() == [1]
        assert paid.sum() == pytest.approx(0.002 * 100_000.0, rel=1e-12)  # the entry, nothing more
    else:
        assert len(fills) == 14
        # each rebalance orders at most the three symbols (two when one has no close)
        assert 3 * 2 < n_orders <= 3 * len(fills)
        assert paid.sum() < 200.0 + 3 * (len(fills) - 1) * 10.0
    # share counts are fixed between fills: held weights drift with the prices only
    shares = bt.shares(m["close"])
    between = np.setdiff1d(np.arange(1, 300), fills)
    np.testing.assert_allclose(shares[between], shares[between - 1], rtol=1e-12)


def test_monthly_rebalancing_orders_on_month_boundaries_and_signal_changes_only() -> None:
    m = _market(32, 320, 3)
    legs = [
        PortfolioLeg("S0", BH),
        PortfolioLeg("S1", BH),
        PortfolioLeg("S2", StrategyConfig(type="momentum", params={"lookback": 15})),
    ]

    out = _run(legs, m, EngineConfig(initial_capital=100_000.0, min_fee=1.0), rebalance_frequency="monthly")
    fills = _month_fills(m["dates"], 1, "monthly")
    signal = momentum(legs[2].strategy_cfg, {"close": m["close"][:, 2]})
    flips = np.flatnonzero(np.diff(signal)) + 1 + 1  # a change decided at t fills at t + 1
    flips = flips[flips < 320]
    shares = out.backtest.shares(m["close"])
    moved = np.zeros(shares.shape, dtype=bool)
    moved[0] = shares[0] != 0
    moved[1:] = np.abs(shares[1:] - shares[:-1]) > 1e-9 * np.abs(shares[:-1]).max()
    for j in (0, 1):  # buy-and-hold legs: month boundaries only
        assert set(np.flatnonzero(moved[:, j]).tolist()) <= set(fills.tolist())
    assert set(np.flatnonzero(moved[:, 2]).tolist()) <= set(fills.tolist()) | set(flips.tolist())
    assert set(flips.tolist()) - set(fills.tolist()) <= set(np.flatnonzero(moved[:, 2]).tolist())
    assert flips.size > 4
    traded_bars = set(np.flatnonzero(out.backtest.traded).tolist())
    assert traded_bars == set(out.backtest.fill_bars.tolist())
    assert traded_bars <= set(fills.tolist()) | set(flips.tolist())
    # a signal change between rebalances is one order (S2's), paying its own fee only
    only_flips = np.array(sorted(set(flips.tolist()) - set(fills.tolist())))
    equity_prev = np.concatenate(([100_000.0], out.backtest.equity[:-1]))
    paid = out.backtest.costs[only_flips] * equity_prev[only_flips]
    notional = np.abs(shares[only_flips, 2] - shares[only_flips - 1, 2]) * m["close"][only_flips, 2]
    np.testing.assert_allclose(paid, np.maximum(1.0, 0.002 * notional), rtol=1e-9)


vbt = pytest.importorskip("vectorbt")


@pytest.mark.parametrize("nan_tail", [False, True])
@pytest.mark.parametrize("with_signal", [False, True])
def test_portfolio_matches_vectorbt_given_the_same_orders(with_signal: bool, nan_tail: bool) -> None:
    m = _market(33, 280, 3, nan_tail=nan_tail)
    strategies = [BH, BH, StrategyConfig(type="momentum" if with_signal else "buy_and_hold")]
    legs = [PortfolioLeg(s, strategies[j], 0.3) for j, s in enumerate(m["symbols"])]

    cfg = EngineConfig(initial_capital=100_000.0, fees=0.001, slippage=0.0005)
    # fixed weights: 0.9 invested, so vectorbt never runs out of cash
    out = _run(legs, m, cfg, rebalance_frequency="monthly", position_sizing_method="fixed")
    # the orders: every symbol on a rebalance fill, the signal leg's symbol when its position changes
    size = np.full(m["close"].shape, np.nan)
    fills = _month_fills(m["dates"], 1, "monthly")
    size[fills] = out.target_weights[fills]
    if with_signal:
        held = out.held_positions[:, 2]
        changes = np.flatnonzero(np.diff(held)) + 1
        size[changes, 2] = out.target_weights[changes, 2]
        assert np.setdiff1d(changes, fills).size > 3
    else:
        np.testing.assert_array_equal(size[fills], 0.3)
    pf = vbt.Portfolio.from_orders(
        pd.DataFrame(m["close"]),
        size=pd.DataFrame(size),
        size_type="targetpercent",
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        fees=cfg.cost_rate,
        init_cash=100_000.0,
        direction="both",
        freq="1D",
    )
    np.testing.assert_allclose(out.backtest.equity, pf.value().to_numpy(), rtol=1e-9)
    their_w = pf.asset_value(group_by=False).to_numpy() / pf.value().to_numpy()[:, None]
    np.testing.assert_allclose(out.backtest.weights_held, their_w, rtol=0, atol=1e-9)
    n_orders = int(pf.orders.count())
    shares = out.backtest.shares(m["close"])
    ours = np.abs(np.diff(np.vstack([np.zeros((1, 3)), shares]), axis=0)) > 1e-9
    assert int(ours.sum()) == n_orders
