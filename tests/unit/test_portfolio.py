"""Portfolio backtests (`alphaswarm_backtester.engine.portfolio`) and the `RunPortfolioBacktest` method.

Legs take explicit position callables (buy-and-hold, a causal momentum
rule), so these tests do not depend on the rule strategies (one test checks
that the default legs run `engine.rules` and agree with them). Equity is
checked against hand computations from the prices, the rebalance calendar
against pandas periods, inverse volatility against pandas' rolling std,
`max_positions` against a sort written out here, the portfolio metrics
against independent numpy / pandas, and causality by perturbing the future.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm.common.v1 import config_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_backtester.catalog_writer import PersistenceCatalogWriter
from alphaswarm_backtester.core import Backtester
from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.portfolio import (
    PortfolioLeg,
    concentration_index,
    diversification_ratio,
    rebalance_bars,
    run_portfolio_backtest,
    trailing_volatility,
    turnover_rate,
)
from alphaswarm_backtester.servicer import BacktesterServicer
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.protoconv import array_from_proto, metricset_from_proto, struct_to_dict

pytestmark = pytest.mark.unit

BH = StrategyConfig(type="buy_and_hold")
FREE: dict[str, Any] = {"fees": 0.0, "slippage": 0.0}


def buy_and_hold(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.ones(bars["close"].shape[0])


def momentum(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
    """Causal: sign of the `lookback`-bar return, scaled by `size`; flat while it is unknown."""
    close = bars["close"]
    lookback = int(cfg.params.get("lookback", 10))
    out = np.full(close.shape, np.nan)
    out[lookback:] = np.sign(close[lookback:] / close[:-lookback] - 1.0) * float(cfg.params.get("size", 1.0))
    return out


def _market(seed: int, n_bars: int, n_syms: int, start: str = "2019-01-01") -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    vols = rng.uniform(0.008, 0.03, n_syms)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0003, vols, (n_bars, n_syms)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.004, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, close.shape))
    dates = pd.bdate_range(start, periods=n_bars)
    symbols = [f"S{j}" for j in range(n_syms)]
    return {"close": close, "open": open_, "high": high, "low": low, "dates": dates, "symbols": symbols}


def _legs(
    symbols: list[str], strategy: StrategyConfig = BH, weights: list[float] | None = None
) -> list[PortfolioLeg]:
    return [PortfolioLeg(s, strategy, None if weights is None else weights[i]) for i, s in enumerate(symbols)]


# ----------------------------------------------------------------------------- hand computations


def test_equal_buy_and_hold_without_rebalancing_is_buy_and_hold() -> None:
    m = _market(1, 260, 3)
    cfg = EngineConfig(initial_capital=100_000.0, execution_lag=0, **FREE)
    out = run_portfolio_backtest(
        _legs(["S0", "S2"]),
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="none",
        config=cfg,
        leg_weights=buy_and_hold,
    )
    px = m["close"]
    hand = 50_000.0 * px[:, 0] / px[0, 0] + 50_000.0 * px[:, 2] / px[0, 2]
    np.testing.assert_allclose(out.backtest.equity, hand, rtol=1e-12)
    assert out.symbols == ("S0", "S2")
    assert out.rebalance_bars.tolist() == [0]
    drift = np.column_stack([px[:, 0] / px[0, 0], px[:, 2] / px[0, 2]])
    np.testing.assert_allclose(
        out.backtest.weights_held, drift / drift.sum(axis=1, keepdims=True), rtol=1e-12
    )
    assert len(out.backtest.trades) == 2  # one buy per symbol, held to the end
    assert out.allocation_by_symbol() == {"S0": 0.5, "S2": 0.5}


@pytest.mark.parametrize("lag", [0, 1, 3])
def test_monthly_rebalancing_resets_the_drift(lag: int) -> None:
    m = _market(2, 300, 2)
    cfg = EngineConfig(initial_capital=100_000.0, execution_lag=lag, **FREE)
    out = run_portfolio_backtest(
        _legs(["S0", "S1"]),
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="monthly",
        config=cfg,
        leg_weights=buy_and_hold,
    )
    px = m["close"]
    firsts = np.flatnonzero(~pd.DatetimeIndex(m["dates"]).to_period("M").duplicated())
    assert firsts.size == 14
    fills = firsts + lag  # decided at the close of a month's first bar, executed `lag` bars later
    hand = np.full(px.shape[0], 100_000.0)
    for k, f in enumerate(fills):  # at the fill, half the value goes in each symbol
        stop = fills[k + 1] if k + 1 < fills.size else px.shape[0] - 1
        hand[f : stop + 1] = hand[f] * (px[f : stop + 1] / px[f]).mean(axis=1)
    np.testing.assert_allclose(out.backtest.equity, hand, rtol=1e-12)
    trading = np.flatnonzero(out.backtest.traded > 1e-12)
    np.testing.assert_array_equal(trading, fills)  # nothing trades between rebalances


def test_daily_rebalancing_with_a_lag_is_a_constant_mix() -> None:
    m = _market(3, 120, 2)
    cfg = EngineConfig(initial_capital=10_000.0, execution_lag=1, **FREE)
    out = run_portfolio_backtest(
        _legs(["S0", "S1"]),
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="daily",
        config=cfg,
        leg_weights=buy_and_hold,
    )
    r = m["close"][1:] / m["close"][:-1] - 1.0
    growth = np.concatenate(([1.0, 1.0], np.cumprod(1.0 + 0.5 * r[1:, 0] + 0.5 * r[1:, 1])))
    np.testing.assert_allclose(out.backtest.equity, 10_000.0 * growth, rtol=1e-12)


@pytest.mark.parametrize(("lag", "fill"), [(1, "close"), (2, "close"), (1, "open"), (3, "open")])
def test_buy_and_hold_with_a_lag_trades_once(lag: int, fill: str) -> None:
    m = _market(4, 80, 3)
    cfg = EngineConfig(initial_capital=100_000.0, execution_lag=lag, fill_price=fill, **FREE)  # type: ignore[arg-type]
    out = run_portfolio_backtest(
        _legs(["S0", "S1", "S2"]),
        m["close"],
        open=m["open"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="none",
        config=cfg,
        leg_weights=buy_and_hold,
    )
    entry = (m["open"] if fill == "open" else m["close"])[lag]  # bought at the fill price of bar `lag`
    hand = np.full(80, 100_000.0)
    hand[lag:] = 100_000.0 / 3.0 * (m["close"][lag:] / entry).sum(axis=1)
    np.testing.assert_allclose(out.backtest.equity, hand, rtol=1e-12)
    assert np.flatnonzero(out.backtest.traded > 1e-12).tolist() == [lag]
    assert len(out.backtest.trades) == 3
    np.testing.assert_array_equal(out.target_weights[:lag], 0.0)
    np.testing.assert_allclose(out.target_weights, out.backtest.weights_target, rtol=1e-12, atol=1e-15)
    if fill == "close":
        np.testing.assert_allclose(out.backtest.weights_held[lag:], out.leg_shares[lag:], rtol=1e-12)
    assert out.config.execution_lag == lag


def test_costs_are_paid_from_cash_and_never_traded_back() -> None:
    m = _market(19, 250, 3)
    out = run_portfolio_backtest(
        _legs(["S0", "S1", "S2"]),
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="none",
        leg_weights=buy_and_hold,
    )
    traded = out.backtest.traded
    assert out.backtest.config.initial_capital == 100_000.0  # the portfolio default
    assert traded[1] == pytest.approx(1.0, rel=1e-12)  # the purchase, at the default lag 1
    assert np.flatnonzero(traded).tolist() == [1]  # nothing trades after it
    assert out.backtest.costs.sum() == pytest.approx(0.002, rel=1e-12)
    assert out.backtest.cash[1] == pytest.approx(-0.002 * 100_000.0, rel=1e-12)  # the costs, borrowed
    np.testing.assert_array_equal(out.backtest.cash[2:] == out.backtest.cash[1], True)


def test_legs_on_one_symbol_add_up() -> None:
    m = _market(5, 60, 2)
    legs = [
        PortfolioLeg("S0", StrategyConfig(type="long", params={"size": 1.0})),
        PortfolioLeg("S0", StrategyConfig(type="short", params={"size": -0.5})),
        PortfolioLeg("S1", StrategyConfig(type="long", params={"size": 1.0})),
    ]

    def sized(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.full(bars["close"].shape[0], cfg.params["size"])

    out = run_portfolio_backtest(
        legs,
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="daily",
        leg_weights=sized,
    )
    np.testing.assert_allclose(out.target_weights[1:], np.tile([1 / 3 - 1 / 6, 1 / 3], (59, 1)), rtol=1e-12)
    np.testing.assert_array_equal(out.target_weights[0], 0.0)  # executed from bar 1 (the default lag)
    assert out.symbols == ("S0", "S1")


# ----------------------------------------------------------------------------- calendar


def test_rebalance_calendar_matches_pandas_periods() -> None:
    rng = np.random.default_rng(6)
    days = pd.date_range("2019-12-20", "2021-02-10", freq="D")
    days = days[rng.random(days.size) < 0.6]  # gaps, weekends included, year and quarter ends crossed
    for freq, code in (("weekly", "W"), ("monthly", "M"), ("quarterly", "Q")):
        expected = np.flatnonzero(~days.to_period(code).duplicated())
        np.testing.assert_array_equal(rebalance_bars(days, freq), expected, err_msg=freq)
    np.testing.assert_array_equal(rebalance_bars(days, "daily"), np.arange(days.size))
    np.testing.assert_array_equal(rebalance_bars(days, "none"), [0])
    with pytest.raises(InvalidArgument) as info:
        rebalance_bars(days, "yearly")
    assert info.value.field == "rebalance_frequency"


def test_allocations_change_only_on_rebalance_dates() -> None:
    m = _market(7, 400, 4)
    out = run_portfolio_backtest(
        _legs(m["symbols"]),
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        start=m["dates"][100],
        rebalance_frequency="weekly",
        position_sizing_method="inverse_volatility",
        leg_weights=buy_and_hold,
    )
    changed = np.flatnonzero((np.diff(out.allocations, axis=0) != 0).any(axis=1)) + 1
    assert set(changed) <= set(out.rebalance_bars.tolist())
    assert len(changed) > 10
    window = pd.DatetimeIndex(m["dates"][100:])
    np.testing.assert_array_equal(out.rebalance_bars, np.flatnonzero(~window.to_period("W").duplicated()))


# ----------------------------------------------------------------------------- sizing


def test_inverse_volatility_matches_pandas() -> None:
    m = _market(8, 320, 4)
    close = m["close"].copy()
    close[150:153, 1] = np.nan  # a halt: S1 has no sigma while the gap is in its window
    start = m["dates"][70]
    out = run_portfolio_backtest(
        _legs(m["symbols"]),
        close,
        dates=m["dates"],
        symbols=m["symbols"],
        start=start,
        rebalance_frequency="monthly",
        position_sizing_method="inverse_volatility",
        leg_weights=buy_and_hold,
    )
    frame = pd.DataFrame(close, index=m["dates"], columns=m["symbols"])
    sigma = frame.pct_change(fill_method=None).rolling(63).std().loc[start:].iloc[out.rebalance_bars]
    np.testing.assert_allclose(out.volatility, sigma.to_numpy(), rtol=1e-10)
    inverse = (1.0 / sigma).fillna(0.0)
    expected = inverse.div(inverse.sum(axis=1), axis=0).to_numpy()
    np.testing.assert_allclose(out.allocations[out.rebalance_bars], expected, rtol=1e-10)
    assert np.isnan(sigma["S1"]).any() and (expected[:, 1] == 0).any()

    standalone = trailing_volatility(close, np.arange(320), 63)
    reference = frame.pct_change(fill_method=None).rolling(63).std().to_numpy()
    np.testing.assert_allclose(standalone, reference, rtol=1e-10)
    assert np.array_equal(np.isnan(standalone), np.isnan(reference))


def test_inverse_volatility_needs_history() -> None:
    m = _market(9, 100, 2)
    with pytest.raises(DataError) as info:
        run_portfolio_backtest(
            _legs(["S0", "S1"]),
            m["close"],
            dates=m["dates"],
            symbols=m["symbols"],
            position_sizing_method="inverse_volatility",
            leg_weights=buy_and_hold,
        )
    assert info.value.field == "position_sizing_method"


def test_fixed_weights_as_given_or_normalised() -> None:
    m = _market(10, 60, 3)
    kwargs = {
        "dates": m["dates"],
        "symbols": m["symbols"],
        "rebalance_frequency": "none",
        "leg_weights": buy_and_hold,
    }
    given = run_portfolio_backtest(
        _legs(m["symbols"], weights=[0.5, 0.2, 0.1]), m["close"], position_sizing_method="fixed", **kwargs
    )
    np.testing.assert_allclose(given.allocations[0], [0.5, 0.2, 0.1])
    assert given.leg_shares[1].sum() == pytest.approx(0.8)  # 20% stays in cash (executed at bar 1)
    scaled = run_portfolio_backtest(
        _legs(m["symbols"], weights=[3.0, 1.0, 0.0]), m["close"], position_sizing_method="fixed", **kwargs
    )
    np.testing.assert_allclose(scaled.allocations[0], [0.75, 0.25, 0.0])
    assert scaled.allocation_by_symbol() == {"S0": 0.75, "S1": 0.25, "S2": 0.0}


@pytest.mark.parametrize(
    ("legs", "kwargs", "field"),
    [
        (
            [PortfolioLeg("S0", BH, 0.5), PortfolioLeg("S1", BH)],
            {"position_sizing_method": "fixed"},
            "legs[1].weight",
        ),
        ([PortfolioLeg("S0", BH, -0.1)], {"position_sizing_method": "fixed"}, "legs[0].weight"),
        ([PortfolioLeg("S0", BH, math.nan)], {"position_sizing_method": "fixed"}, "legs[0].weight"),
        ([PortfolioLeg("S0", BH, 0.0)], {"position_sizing_method": "fixed"}, "legs"),
        ([PortfolioLeg("S0", BH, 0.5)], {}, "legs[0].weight"),
        ([PortfolioLeg("XX", BH)], {}, "legs[0].symbol"),
        ([], {}, "legs"),
        ([PortfolioLeg("S0", BH)], {"rebalance_frequency": "hourly"}, "rebalance_frequency"),
        ([PortfolioLeg("S0", BH)], {"position_sizing_method": "kelly"}, "position_sizing_method"),
        ([PortfolioLeg("S0", BH)], {"max_positions": 0}, "max_positions"),
        ([PortfolioLeg("S0", BH)], {"volatility_window": 1}, "volatility_window"),
        ([PortfolioLeg("S0", BH)], {"start": "2030-01-01"}, "start"),
        (
            [PortfolioLeg("S0", BH)],
            {"config": EngineConfig(rebalance_every=5)},
            "backtest_cfg.rebalance_every",
        ),
        ([PortfolioLeg("S0", BH)], {"config": EngineConfig(fill_price="open")}, "open"),
    ],
)
def test_invalid_portfolios_name_the_field(
    legs: list[PortfolioLeg], kwargs: dict[str, Any], field: str
) -> None:
    m = _market(11, 40, 2)
    with pytest.raises(InvalidArgument) as info:
        run_portfolio_backtest(
            legs, m["close"], dates=m["dates"], symbols=m["symbols"], leg_weights=buy_and_hold, **kwargs
        )
    assert info.value.field == field


@pytest.mark.parametrize(
    ("positions", "raises", "field"),
    [
        (lambda n: np.full(n, 1.5), None, "legs[1].strategy_cfg"),
        (lambda n: np.full(n, np.inf), None, "legs[1].strategy_cfg"),
        (lambda n: np.ones(n - 1), None, "legs[1].strategy_cfg"),
        (
            None,
            InvalidArgument("window must be >= 2", field="params.window"),
            "legs[1].strategy_cfg.params.window",
        ),
        (None, InvalidArgument("unknown strategy", field="strategy_cfg.type"), "legs[1].strategy_cfg.type"),
        (None, InvalidArgument("bad"), "legs[1].strategy_cfg"),
    ],
)
def test_strategy_errors_name_the_leg(positions: Any, raises: Exception | None, field: str) -> None:
    m = _market(12, 40, 2)

    def second_fails(cfg: StrategyConfig, bars: Mapping[str, np.ndarray]) -> np.ndarray:
        if cfg.type == "bad":
            if raises is not None:
                raise raises
            return positions(bars["close"].shape[0])  # type: ignore[no-any-return]
        return np.ones(bars["close"].shape[0])

    legs = [PortfolioLeg("S0", BH), PortfolioLeg("S1", StrategyConfig(type="bad"))]
    with pytest.raises(InvalidArgument) as info:
        run_portfolio_backtest(
            legs, m["close"], dates=m["dates"], symbols=m["symbols"], leg_weights=second_fails
        )
    assert info.value.field == field


def test_max_positions_keeps_the_top_legs() -> None:
    m = _market(13, 250, 5)
    sizes = [0.4, 1.0, 0.7, 1.0, 0.2]
    legs = [
        PortfolioLeg(s, StrategyConfig(type="momentum", params={"lookback": 5 + 3 * j, "size": sizes[j]}))
        for j, s in enumerate(m["symbols"])
    ]
    out = run_portfolio_backtest(
        legs,
        m["close"],
        dates=m["dates"],
        symbols=m["symbols"],
        rebalance_frequency="weekly",
        max_positions=2,
        leg_weights=momentum,
    )
    for row in out.rebalance_bars:
        p = out.leg_positions[row]
        ranked = sorted(range(5), key=lambda i: (-abs(0.2 * p[i]), i))  # equal allocations over all legs
        expected = np.zeros(5)
        expected[ranked[:2]] = 0.5
        np.testing.assert_allclose(out.allocations[row], expected, err_msg=str(row))
    assert ((out.leg_targets != 0).sum(axis=1) <= 2).all()
    assert ((out.backtest.weights_held != 0).sum(axis=1) <= 2).all()
    assert (np.abs(out.leg_positions[out.rebalance_bars]) > 0).sum(axis=1).max() > 2  # the cap did bind


# ----------------------------------------------------------------------------- causality


@pytest.mark.parametrize(
    ("sizing", "freq", "engine"),
    [
        ("inverse_volatility", "monthly", {}),
        ("equal", "weekly", {"execution_lag": 0, "rf": 0.03}),
        ("fixed", "none", {"execution_lag": 2, "fill_price": "open", "stop_loss": 0.05}),
    ],
)
def test_data_after_t_changes_nothing_at_or_before_t(sizing: str, freq: str, engine: dict[str, Any]) -> None:
    m = _market(14, 260, 4)
    legs = [
        PortfolioLeg(
            s,
            StrategyConfig(type="momentum", params={"lookback": 5 + 2 * j}),
            0.3 if sizing == "fixed" else None,
        )
        for j, s in enumerate(m["symbols"])
    ]
    kwargs = {
        "dates": m["dates"],
        "symbols": m["symbols"],
        "start": m["dates"][70],
        "rebalance_frequency": freq,
        "position_sizing_method": sizing,
        "max_positions": 3,
        "config": EngineConfig(initial_capital=100_000.0, **engine),
        "leg_weights": momentum,
    }
    prices = {k: m[k] for k in ("close", "open", "high", "low")}
    base = run_portfolio_backtest(legs, **prices, **kwargs)
    rng = np.random.default_rng(15)
    for t in (75, 130, 200):
        noisy = {k: v.copy() for k, v in prices.items()}
        for v in noisy.values():
            v[t + 1 :] = rng.uniform(5.0, 200.0, v[t + 1 :].shape)
        noisy["high"] = np.maximum.reduce([noisy["open"], noisy["close"], noisy["high"]])
        noisy["low"] = np.minimum.reduce([noisy["open"], noisy["close"], noisy["low"]])
        other = run_portfolio_backtest(legs, **noisy, **kwargs)
        s = t - 70  # the window starts at bar 70
        names = (
            "leg_positions",
            "allocations",
            "held_positions",
            "leg_shares",
            "leg_targets",
            "target_weights",
        )
        for name in names:
            np.testing.assert_array_equal(
                getattr(other, name)[: s + 1], getattr(base, name)[: s + 1], err_msg=name
            )
        for name in ("equity", "returns", "cash", "weights_held", "weights_target", "traded", "costs"):
            np.testing.assert_array_equal(
                getattr(other.backtest, name)[: s + 1], getattr(base.backtest, name)[: s + 1], err_msg=name
            )
        assert not np.array_equal(other.backtest.equity, base.backtest.equity)


# ----------------------------------------------------------------------------- metrics


def _dr_reference(h: np.ndarray, close: np.ndarray, ppy: float) -> float:
    w = h.mean(axis=0)
    held = w != 0
    rets = pd.DataFrame(close).pct_change(fill_method=None).loc[:, held].dropna()
    sigma = rets.std() * math.sqrt(ppy)
    cov = rets.cov() * ppy
    return float(np.abs(w[held]) @ sigma.to_numpy() / math.sqrt(w[held] @ cov.to_numpy() @ w[held]))


def test_portfolio_metrics_match_independent_formulas() -> None:
    m = _market(16, 300, 3)
    close = m["close"].copy()
    close[140:142, 2] = np.nan  # a gap: those bars leave the covariance
    legs = [PortfolioLeg(s, StrategyConfig(type="momentum", params={"lookback": 20})) for s in m["symbols"]]
    out = run_portfolio_backtest(
        legs,
        close,
        dates=m["dates"],
        symbols=m["symbols"],
        start=m["dates"][1],
        rebalance_frequency="monthly",
        leg_weights=momentum,
    )
    h = np.asarray(out.backtest.weights_held)
    ppy = out.backtest.periods_per_year
    assert ppy == 252.0
    metrics = out.metrics
    assert metrics["diversification_ratio"] == pytest.approx(_dr_reference(h, close[1:], ppy), rel=1e-10)
    hhi = []
    for row in h:
        gross = sum(abs(x) for x in row)
        if gross > 0:
            hhi.append(sum((abs(x) / gross) ** 2 for x in row))
    assert metrics["concentration_index"] == pytest.approx(sum(hhi) / len(hhi), rel=1e-12)
    assert metrics["turnover_rate"] == pytest.approx(float(np.mean(out.backtest.traded)) * 252.0, rel=1e-12)
    for name in ("sharpe", "total_return", "max_drawdown", "turnover"):
        assert metrics[name] == out.backtest.metrics[name]
    conventions = metrics.conventions["portfolio"]
    assert conventions["legs"][0]["strategy"] == {"type": "momentum", "params": {"lookback": 20}}
    assert conventions["rebalance_frequency"] == "monthly"


def test_metric_functions_on_known_cases() -> None:
    rng = np.random.default_rng(17)
    x = rng.normal(0, 0.01, (500, 2))
    one = diversification_ratio(np.tile([0.7, 0.0], (500, 1)), x, periods_per_year=252.0)
    assert one == (pytest.approx(1.0), None)
    two = diversification_ratio(np.tile([0.5, 0.5], (500, 1)), x, periods_per_year=252.0)
    sigma = x.std(axis=0, ddof=1)
    corr = float(np.asarray(np.corrcoef(x, rowvar=False))[0, 1])
    quad = float(np.einsum("i,ij,j->", sigma, np.array([[1.0, corr], [corr, 1.0]]), sigma))
    expected = (sigma.sum() / 2) / math.sqrt(quad / 4)
    assert two[0] == pytest.approx(expected, rel=1e-12)
    hedge = diversification_ratio(
        np.tile([0.5, -0.5], (500, 1)), np.column_stack([x[:, 0], x[:, 0]]), periods_per_year=252.0
    )
    assert hedge == (None, "zero portfolio variance")
    assert diversification_ratio(np.zeros((5, 2)), x[:5], periods_per_year=252.0) == (
        None,
        "no position was held",
    )
    assert concentration_index(np.array([[0.25, 0.25, 0.25, 0.25], [0.0, -1.0, 0.0, 0.0], [0, 0, 0, 0]])) == (
        pytest.approx((0.25 + 1.0) / 2),
        None,
    )
    assert concentration_index(np.zeros((3, 2))) == (None, "no position was held")
    assert turnover_rate(np.array([0.0, 1.0, 0.02, 0.02]), periods_per_year=52.0) == (
        pytest.approx(0.26 * 52),
        None,
    )


# ----------------------------------------------------------------------------- gRPC method


class _FakePersistence:
    def __init__(self) -> None:
        self.saved: list[ppb.SavePortfolioBacktestRequest] = []

    def SavePortfolioBacktest(self, request: ppb.SavePortfolioBacktestRequest, timeout: float) -> Any:
        self.saved.append(request)
        return ppb.SavePortfolioBacktestResponse(portfolio_backtest_id="pf-1", created=True)


class _Servicer(BacktesterServicer):
    def __init__(self) -> None:
        self.persistence = _FakePersistence()
        catalog = PersistenceCatalogWriter(self.persistence, deadline=5.0)  # type: ignore[arg-type]
        super().__init__(None, catalog, backtester=Backtester(None, catalog, leg_weights=buy_and_hold))  # type: ignore[arg-type]


def _request(**overrides: Any) -> pb.RunPortfolioBacktestRequest:
    doc: dict[str, Any] = {
        "dataset_cfg": config_pb2.DatasetConfig(
            source="sp500", start_date="2016-01-01", end_date="2018-12-31"
        ),
        "legs": [
            pb.PortfolioLeg(
                symbol="AAPL", strategy_cfg=config_pb2.StrategyConfig(type="buy_and_hold"), weight=0.6
            ),
            pb.PortfolioLeg(
                symbol="KO", strategy_cfg=config_pb2.StrategyConfig(type="buy_and_hold"), weight=0.3
            ),
        ],
        "rebalance_frequency": "none",
        "position_sizing_method": "fixed",
        "backtest_cfg": config_pb2.BacktestConfig(
            fees=0.0, slippage=0.0, execution_lag=0, start_date="2017-01-03", end_date="2018-06-29"
        ),
        "portfolio_name": "aapl-ko",
        "persist": True,
        "request_id": "req-1",
    }
    doc.update(overrides)
    return pb.RunPortfolioBacktestRequest(**doc)


def test_run_portfolio_backtest_rpc_and_what_it_saves() -> None:
    servicer = _Servicer()
    response = servicer.RunPortfolioBacktest(_request(), None)
    full = load_panel(DatasetConfig(source="sp500"))
    panel = full.select(["AAPL", "KO"]).slice("2017-01-03", "2018-06-29")
    px = panel.close
    hand = 100_000.0 * (0.6 * px[:, 0] / px[0, 0] + 0.3 * px[:, 1] / px[0, 1] + 0.1)
    equity = array_from_proto(response.equity)
    np.testing.assert_allclose(equity, hand, rtol=1e-12)
    assert list(response.dates) == [str(d) for d in panel.dates]
    assert response.portfolio_backtest_id == "pf-1"
    assert list(response.weights_held.symbols) == ["AAPL", "KO"]
    values, _, conventions = metricset_from_proto(response.metrics)
    assert {"diversification_ratio", "concentration_index", "turnover_rate", "sharpe"} <= set(values)
    assert conventions["portfolio"]["position_sizing_method"] == "fixed"

    saved = servicer.persistence.saved[0]  # type: ignore[attr-defined]
    assert saved.request_id == "req-1"
    record = saved.portfolio
    assert record.portfolio_name == "aapl-ko"
    assert list(record.symbols) == ["AAPL", "KO"]
    assert struct_to_dict(record.weights) == {"AAPL": pytest.approx(0.6), "KO": pytest.approx(0.3)}
    assert record.initial_capital == 100_000.0
    assert record.rebalance_frequency == "none" and record.position_sizing_method == "fixed"
    assert not record.HasField("max_positions")
    assert (record.start_date, record.end_date) == ("2017-01-03", "2018-06-29")
    np.testing.assert_allclose(array_from_proto(record.equity_curve), hand, rtol=1e-12)
    history = array_from_proto(record.weights_history)
    assert history.shape == (len(hand), 2)
    stored, _, _ = metricset_from_proto(record.metrics)
    assert stored == values


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"legs": []}, "legs"),
        (
            {
                "legs": [
                    pb.PortfolioLeg(symbol="ZZZ", strategy_cfg=config_pb2.StrategyConfig(type="buy_and_hold"))
                ]
            },
            "legs[0].symbol",
        ),
        ({"legs": [pb.PortfolioLeg(symbol="AAPL")]}, "legs[0].strategy_cfg.type"),
        (
            {"legs": [pb.PortfolioLeg(strategy_cfg=config_pb2.StrategyConfig(type="buy_and_hold"))]},
            "legs[0].symbol",
        ),
        ({"rebalance_frequency": "hourly"}, "rebalance_frequency"),
        ({"max_positions": 0}, "max_positions"),
        ({"backtest_cfg": config_pb2.BacktestConfig(start_date="2030-01-01")}, "backtest_cfg.start_date"),
        ({"backtest_cfg": config_pb2.BacktestConfig(benchmark="ZZZ")}, "backtest_cfg.benchmark"),
        ({"backtest_cfg": config_pb2.BacktestConfig(fees=2.0)}, "backtest_cfg.fees"),
        ({"backtest_cfg": config_pb2.BacktestConfig(rebalance_every=5)}, "backtest_cfg.rebalance_every"),
        ({"backtest_cfg": config_pb2.BacktestConfig(fill_price="open")}, "backtest_cfg.fill_price"),
        ({"backtest_cfg": config_pb2.BacktestConfig(end_date="2015-06-30")}, "backtest_cfg.end_date"),
    ],
)
def test_run_portfolio_backtest_rpc_errors(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        _Servicer().RunPortfolioBacktest(_request(**overrides), None)
    assert info.value.field == field


def test_run_portfolio_backtest_rpc_defaults_and_benchmark() -> None:
    servicer = _Servicer()
    request = _request(
        position_sizing_method="",
        rebalance_frequency="",
        persist=False,
        legs=[pb.PortfolioLeg(symbol="AAPL", strategy_cfg=config_pb2.StrategyConfig(type="buy_and_hold"))],
        backtest_cfg=config_pb2.BacktestConfig(
            start_date="2017-01-03", end_date="2017-12-29", benchmark="KO"
        ),
    )
    response = servicer.RunPortfolioBacktest(request, None)
    values, _, conventions = metricset_from_proto(response.metrics)
    assert conventions["portfolio"]["rebalance_frequency"] == "monthly"
    assert conventions["portfolio"]["position_sizing_method"] == "equal"
    assert conventions["initial_capital"] == 100_000.0
    assert values["beta"] is not None
    assert response.portfolio_backtest_id == ""
    assert servicer.persistence.saved == []  # type: ignore[attr-defined]


def test_rule_strategies_drive_the_default_legs() -> None:
    rules = pytest.importorskip("alphaswarm_backtester.engine.rules")
    assert "buy_and_hold" in rules.RULE_STRATEGIES
    m = _market(18, 120, 2)
    kwargs = {"dates": m["dates"], "symbols": m["symbols"], "rebalance_frequency": "monthly"}
    by_rule = run_portfolio_backtest(_legs(["S0", "S1"]), m["close"], **kwargs)
    by_hand = run_portfolio_backtest(_legs(["S0", "S1"]), m["close"], leg_weights=buy_and_hold, **kwargs)
    np.testing.assert_array_equal(by_rule.leg_positions, by_hand.leg_positions)
    np.testing.assert_array_equal(by_rule.backtest.equity, by_hand.backtest.equity)
