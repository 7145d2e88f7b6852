"""Accounting identities of the backtest engine (METRICS.md, "Backtest accounting").

Every expectation is recomputed here from the prices and the engine's own
reported weights with the formulas of METRICS.md, or taken from empyrical;
no number is copied from the engine's output.
"""

from __future__ import annotations

import json
import math

import empyrical
import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig, run_backtest
from alphaswarm_backtester.engine.kernels import decision_schedule
from alphaswarm_common.config import BacktestConfig
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit


def _prices(seed: int, n_bars: int = 80, n_syms: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 30.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (n_bars, n_syms)), axis=0))


def _weights(seed: int, shape: tuple[int, int], gross: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed + 100)
    w = rng.normal(size=shape)
    w[rng.random(shape) < 0.25] = 0.0
    return w / np.abs(w).sum(axis=1, keepdims=True) * gross


def _run(w, close, **cfg):
    n_bars, n_syms = np.asarray(close).reshape(len(close), -1).shape
    extra = {k: cfg.pop(k) for k in ("open", "high", "low", "benchmark", "dates", "order_mask") if k in cfg}
    dates = extra.pop("dates", pd.bdate_range("2022-01-03", periods=n_bars))
    return run_backtest(
        w, close, dates=dates, symbols=[f"x{i}" for i in range(n_syms)], config=EngineConfig(**cfg), **extra
    )


def _marks(close: np.ndarray) -> np.ndarray:
    return pd.DataFrame(close).ffill().to_numpy()


def _bar_returns(close: np.ndarray) -> np.ndarray:
    """Close-to-close return of the last known close (0 over a missing bar), row 0 = 0."""
    m = np.nan_to_num(_marks(close), nan=1.0)
    r = np.zeros_like(m)
    r[1:] = m[1:] / m[:-1] - 1.0
    return r


@pytest.mark.parametrize(
    ("seed", "every", "rf", "nan"), [(0, 1, 0.0, False), (1, 3, 0.04, False), (2, 1, 0.02, True)]
)
def test_portfolio_return_identity(seed, every, rf, nan):
    close = _prices(seed)
    if nan:
        close[:6, 0] = np.nan
        close[30:36, 2] = np.nan
    w = _weights(seed, close.shape)
    out = _run(w, close, fees=0.0015, slippage=0.0005, rebalance_every=every, rf=rf, periods_per_year=252)
    h_prev = np.vstack([np.zeros(close.shape[1]), out.weights_held[:-1]])
    cash_prev = np.concatenate([[1.0], (out.cash / out.equity)[:-1]])
    expected = (h_prev * _bar_returns(close)).sum(axis=1) + cash_prev * rf / 252 - out.costs
    np.testing.assert_allclose(out.returns, expected, rtol=0, atol=1e-13)
    # equity is initial_capital * cumprod(1 + r_p)
    np.testing.assert_allclose(out.equity, 10_000 * np.cumprod(1 + out.returns), rtol=1e-12)
    # cash is the part of equity not held in symbols
    np.testing.assert_allclose(out.cash / out.equity, 1 - out.weights_held.sum(axis=1), rtol=0, atol=1e-12)


def test_costs_are_rate_times_traded_and_traded_is_the_weight_gap():
    close = _prices(3)
    w = _weights(3, close.shape)
    fees, slip = 0.002, 0.0007
    out = _run(w, close, fees=fees, slippage=slip)
    np.testing.assert_allclose(out.costs, (fees + slip) * out.traded, rtol=1e-14, atol=0)
    # METRICS.md: traded = sum_i |w_target - h_drifted| in units of the pre-trade value V;
    # we report it per unit of equity[s-1], i.e. times V / equity[s-1] = 1 + sum_i h[s-1] r[s].
    r = _bar_returns(close)
    h_prev = np.vstack([np.zeros(close.shape[1]), out.weights_held[:-1]])
    growth = 1.0 + (h_prev * r).sum(axis=1)
    drifted = h_prev * (1.0 + r) / growth[:, None]
    gap = np.abs(out.weights_target - drifted).sum(axis=1) * growth
    fills = out.fill_bars
    np.testing.assert_allclose(out.traded[fills], gap[fills], rtol=1e-12)
    assert np.all(out.traded[np.setdiff1d(np.arange(len(close)), fills)] == 0.0)
    np.testing.assert_allclose(
        out.turnover, np.abs(np.diff(out.weights_held, axis=0, prepend=0.0)).sum(axis=1), rtol=1e-12
    )
    assert out.to_summary()["total_costs"] == pytest.approx(
        float((out.costs * np.concatenate([[1e4], out.equity[:-1]])).sum())
    )


@pytest.mark.parametrize("rf", [0.0, 0.03])
def test_zero_weights_earn_the_risk_free_rate_only(rf):
    close = _prices(4, n_bars=30)
    w = np.zeros_like(close)
    w[::3] = np.nan  # no opinion is a zero weight too
    out = _run(w, close, rf=rf, periods_per_year=252, initial_capital=5_000)
    np.testing.assert_allclose(out.equity, 5_000 * (1 + rf / 252) ** np.arange(1, 31), rtol=1e-13)
    np.testing.assert_allclose(out.returns, np.full(30, rf / 252), rtol=0, atol=1e-15)
    assert len(out.trades) == 0
    assert np.all(out.traded == 0) and np.all(out.weights_held == 0)


def test_periods_per_year_are_inferred_from_the_dates():
    close = _prices(5, n_bars=40)
    weekly = pd.date_range("2020-01-03", periods=40, freq="W-FRI")
    out = _run(np.zeros_like(close), close, rf=0.052, dates=weekly)
    assert out.periods_per_year == 52
    np.testing.assert_allclose(out.returns, 0.001, rtol=1e-12)


@pytest.mark.parametrize("lag", [1, 2])
def test_execution_lag_is_a_shift_of_the_targets(lag):
    close = _prices(6)
    w = _weights(6, close.shape)
    lagged = _run(w, close, execution_lag=lag)
    shifted = np.full_like(w, np.nan)
    shifted[lag:] = w[:-lag]
    immediate = _run(shifted, close, execution_lag=0)
    np.testing.assert_allclose(lagged.equity, immediate.equity, rtol=1e-14)
    np.testing.assert_allclose(lagged.weights_held, immediate.weights_held, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(lagged.weights_target, immediate.weights_target)
    assert lagged.weights_target[:lag].sum() == 0 and np.all(lagged.equity[:lag] == 1e4)


def test_rebalance_every_holds_shares_and_lets_weights_drift():
    close = _prices(7)
    w = _weights(7, close.shape)
    every, lag = 4, 1
    out = _run(w, close, rebalance_every=every, execution_lag=lag)
    _, fills = decision_schedule(len(close), lag, every)
    np.testing.assert_array_equal(out.fill_bars, fills)
    shares = out.shares(close)
    for f, nxt in zip(fills, np.append(fills[1:], len(close)), strict=True):
        # share counts are constant until the next fill ...
        np.testing.assert_allclose(shares[f:nxt], np.broadcast_to(shares[f], shares[f:nxt].shape), rtol=1e-12)
        # ... the target in force is the decision row, and the held weights drift with prices
        np.testing.assert_array_equal(
            out.weights_target[f:nxt], np.broadcast_to(w[f - lag], (nxt - f, w.shape[1]))
        )
        value = shares[f:nxt] * close[f:nxt]
        np.testing.assert_allclose(out.weights_held[f:nxt], value / out.equity[f:nxt, None], rtol=1e-12)
    # at a fill the pre-cost value is spread exactly as the target says
    f = fills[3]
    pre_cost = out.equity[f] + out.costs[f] * out.equity[f - 1]
    np.testing.assert_allclose(shares[f] * close[f], w[f - lag] * pre_cost, rtol=1e-12)


def test_untradable_symbol_is_not_entered_and_a_holding_keeps_its_last_price():
    close = _prices(8, n_bars=20, n_syms=3)
    close[:5, 1] = np.nan  # not listed yet
    close[10:14, 2] = np.nan  # suspended
    w = np.tile([0.3, 0.3, 0.3], (20, 1))
    out = _run(w, close, fees=0.001, slippage=0.0)
    shares = out.shares(close)
    # listed at bar 5: no entry before, the fill of bar 5 (decision of bar 4) enters it
    assert np.all(out.weights_held[:5, 1] == 0)
    assert out.weights_held[5, 1] > 0
    # the suspended holding keeps its shares and is valued at its last close
    np.testing.assert_allclose(shares[10:14, 2], shares[9, 2], rtol=1e-12)
    np.testing.assert_allclose(
        out.weights_held[10:14, 2] * out.equity[10:14], shares[9, 2] * close[9, 2], rtol=1e-12
    )
    # the others are not renormalised: they still get 30% of the pre-trade value each
    pre_trade = out.equity[11] + out.costs[11] * out.equity[10]
    np.testing.assert_allclose(shares[11, 0] * close[11, 0] / pre_trade, 0.3, rtol=1e-12)


def test_min_fee_applies_per_non_zero_order():
    close = _prices(9, n_bars=25, n_syms=4)
    w = _weights(9, close.shape, gross=0.8)
    w[:, 3] = 0.0  # never traded: pays nothing
    fees, slip, min_fee = 0.001, 0.0005, 2.5
    out = _run(w, close, fees=fees, slippage=slip, min_fee=min_fee)
    shares = out.shares(close)
    dshares = np.diff(shares, axis=0, prepend=0.0)
    notional = np.abs(dshares) * close
    per_order = np.where(dshares != 0, np.maximum(min_fee, (fees + slip) * notional), 0.0)
    equity_prev = np.concatenate([[1e4], out.equity[:-1]])
    np.testing.assert_allclose(out.costs * equity_prev, per_order.sum(axis=1), rtol=1e-9, atol=1e-9)
    assert (per_order == min_fee).any()  # the minimum did bind somewhere
    trades = out.trades
    np.testing.assert_allclose(
        trades["fees_paid"].sum() + trades["slippage_cost"].sum(), per_order.sum(), rtol=1e-9
    )


def test_max_gross_leverage_scales_rows_down():
    close = _prices(10)
    w = _weights(10, close.shape, gross=3.0)
    w[::2] *= 0.1  # gross 0.3: untouched
    out = _run(w, close, max_gross_leverage=1.5)
    gross = np.abs(out.weights_target).sum(axis=1)
    assert gross.max() <= 1.5 + 1e-12
    f = out.fill_bars
    expected = w[f - 1] * np.minimum(1.0, 1.5 / np.abs(w[f - 1]).sum(axis=1))[:, None]
    np.testing.assert_allclose(out.weights_target[f], expected, rtol=1e-14)


def test_open_fill_trades_at_the_open_and_marks_at_the_close():
    close = np.array([10.0, 11.0, 12.0, 12.5, 12.0])
    open_ = np.array([10.0, 10.5, 11.5, 12.2, 12.1])
    w = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    out = _run(w, close, open=open_, fill_price="open", fees=0.001, slippage=0.001)
    # bar 1: the decision of bar 0 buys with all 10000 at the open 10.5, paying 0.2%
    shares = 10_000 / 10.5
    cash = -0.002 * 10_000
    assert out.equity[1] == pytest.approx(cash + shares * 11.0, rel=1e-14)
    # bar 2: the decision of bar 1 (keep 100%) resizes to the open value 11.5 * shares + cash
    value = cash + shares * 11.5
    shares2 = value / 11.5
    cash2 = -0.002 * abs(shares2 - shares) * 11.5
    assert out.equity[2] == pytest.approx(cash2 + shares2 * 12.0, rel=1e-12)
    # bar 3: the decision of bar 2 (flat) sells everything at the open 12.2
    cash3 = cash2 + shares2 * 12.2 * (1 - 0.002)
    assert out.equity[3] == pytest.approx(cash3, rel=1e-12)
    assert out.equity[4] == pytest.approx(cash3, rel=1e-12)


def test_metrics_match_empyrical():
    close = _prices(11, n_bars=300, n_syms=8)
    w = _weights(11, close.shape)
    bench = np.random.default_rng(0).normal(0.0004, 0.01, 300)
    out = _run(w, close, rf=0.02, periods_per_year=252, benchmark=bench)
    r, rf_p = out.returns, 0.02 / 252
    m = out.metrics
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, risk_free=rf_p, period="daily"), rel=1e-10)
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(r, required_return=rf_p), rel=1e-10)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-10)
    assert m["annualized_return"] == pytest.approx(empyrical.annual_return(r), rel=1e-10)
    assert m["beta"] == pytest.approx(empyrical.beta(r, bench, risk_free=rf_p), rel=1e-9)
    np.testing.assert_allclose(out.drawdown.min(), empyrical.max_drawdown(r), rtol=1e-10)
    assert m["turnover"] == pytest.approx(out.turnover.mean())
    closed = out.trades[~out.trades["is_open"]]
    assert m["total_trades"] == len(closed)
    assert m["win_rate"] == pytest.approx((closed["pnl"] > 0).mean())
    penalised = empyrical.sharpe_ratio(r - 0.001 * out.traded, risk_free=rf_p)
    assert m["turnover_adj_sharpe"] == pytest.approx(penalised, rel=1e-10)


def test_output_is_read_only_and_the_summary_is_strict_json():
    close = _prices(12, n_bars=30)
    out = _run(_weights(12, close.shape), close)
    for arr in (out.returns, out.equity, out.weights_held, out.weights_target, out.traded, out.costs):
        assert not arr.flags.writeable
    summary = out.to_summary()
    text = json.dumps(summary, allow_nan=False)
    assert json.loads(text)["n_bars"] == 30
    assert summary["final_equity"] == pytest.approx(out.equity[-1])
    assert summary["n_trades"] == len(out.trades)
    assert summary["config"]["fees"] == 0.001


# ----------------------------------------------------------------------------- configuration


def test_engine_config_from_backtest_config():
    cfg = BacktestConfig(fees=0.0005, slippage=0.0002, rebalance_every=5, rf=0.01)
    eng = EngineConfig.from_backtest_config(cfg, execution_lag=2, stop_loss=0.1)
    assert (eng.fees, eng.slippage, eng.rebalance_every, eng.rf) == (0.0005, 0.0002, 5, 0.01)
    assert eng.execution_lag == 2 and eng.stop_loss == 0.1 and eng.min_fee == 0.0
    assert EngineConfig.from_backtest_config(BacktestConfig()).execution_lag == 1
    assert EngineConfig.from_backtest_config(BacktestConfig(execution_lag=3)).execution_lag == 3
    with pytest.raises(InvalidArgument) as err:
        EngineConfig.from_backtest_config(BacktestConfig(execution_lag=1), execution_lag=2)
    assert err.value.field == "backtest_cfg.execution_lag"
    with pytest.raises(InvalidArgument) as err:
        EngineConfig.from_backtest_config(cfg, leverage=2)
    assert err.value.field == "backtest_cfg.leverage"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fees": 1.0}, "backtest_cfg.fees"),
        ({"slippage": -0.1}, "backtest_cfg.slippage"),
        ({"initial_capital": 0}, "backtest_cfg.initial_capital"),
        ({"execution_lag": -1}, "backtest_cfg.execution_lag"),
        ({"rebalance_every": 0}, "backtest_cfg.rebalance_every"),
        ({"fill_price": "vwap"}, "backtest_cfg.fill_price"),
        ({"fill_price": "open", "execution_lag": 0}, "backtest_cfg.fill_price"),
        ({"stop_loss": 0.0}, "backtest_cfg.stop_loss"),
        ({"max_gross_leverage": -1.0}, "backtest_cfg.max_gross_leverage"),
        ({"rf": math.inf}, "backtest_cfg.rf"),
        ({"min_fee": -1.0}, "backtest_cfg.min_fee"),
    ],
)
def test_engine_config_validation(kwargs, field):
    with pytest.raises(InvalidArgument) as err:
        EngineConfig(**kwargs)
    assert err.value.field == field


def test_input_validation_names_the_field():
    close = _prices(13, n_bars=10, n_syms=2)
    w = np.zeros_like(close)
    dates = pd.bdate_range("2022-01-03", periods=10)
    ok = {"dates": dates, "symbols": ["a", "b"]}

    def field_of(*args, **kwargs):
        with pytest.raises(InvalidArgument) as err:
            run_backtest(*args, **{**ok, **kwargs})
        return err.value.field

    assert field_of(w, close[:, :1]) == "close"
    bad = w.copy()
    bad[3, 1] = np.inf
    assert field_of(bad, close) == "target_weights"
    neg = close.copy()
    neg[2, 0] = -1.0
    assert field_of(w, neg) == "close"
    assert field_of(w, close, dates=dates[::-1]) == "dates"
    assert field_of(w, close, dates=dates[:9]) == "dates"
    assert field_of(w, close, symbols=["a", "a"]) == "symbols"
    assert field_of(w, close, config=EngineConfig(fill_price="open")) == "open"
    assert field_of(w, close, benchmark=np.zeros(3)) == "benchmark"
    with pytest.raises(DataError):
        run_backtest(w, close, **ok, high=close[:5])


def test_order_mask_keeps_the_shares_of_symbols_without_an_order() -> None:
    close = _prices(40, 30, 3)
    w = np.tile([0.3, 0.3, 0.3], (30, 1))
    mask = np.zeros(close.shape, dtype=bool)
    mask[0] = True  # the entry
    mask[10, 1] = True  # symbol 1 alone is rebalanced at the fill of decision 10
    every_bar = _run(w, close, execution_lag=1, min_fee=1.0)
    out = _run(w, close, execution_lag=1, min_fee=1.0, order_mask=mask)
    assert np.flatnonzero(every_bar.traded).tolist() == list(range(1, 30))  # min_fee dust every bar
    assert out.fill_bars.tolist() == [1, 11]
    assert np.flatnonzero(out.traded).tolist() == [1, 11]
    shares = out.shares(close)
    np.testing.assert_allclose(shares[1:11], np.broadcast_to(shares[1], (10, 3)), rtol=1e-12)
    np.testing.assert_allclose(shares[11:, [0, 2]], np.broadcast_to(shares[1, [0, 2]], (19, 2)), rtol=1e-12)
    cash_before = out.cash[10]
    value = cash_before + shares[10] @ close[11]  # the pre-trade value at the fill
    assert shares[11, 1] * close[11, 1] == pytest.approx(0.3 * value, rel=1e-12)
    paid = out.costs[11] * out.equity[10]
    assert paid == pytest.approx(
        max(1.0, 0.002 * abs(shares[11, 1] - shares[10, 1]) * close[11, 1]), rel=1e-12
    )
    np.testing.assert_array_equal(out.weights_target[11:], np.broadcast_to([0.3, 0.3, 0.3], (19, 3)))
    with pytest.raises(DataError) as err:
        _run(w, close, order_mask=mask[:, :2])
    assert err.value.field == "order_mask"


@pytest.mark.parametrize("fill", ["close", "open"])
def test_order_mask_fill_loop_equals_the_every_bar_loop(fill: str) -> None:
    # the fill-bar loop of an order mask against the every-bar loop (taken when stops are set; a
    # take-profit that never fires changes nothing else), with rf, a minimum fee and missing prices
    close = _prices(41, 120, 4)
    close[:10, 1] = np.nan
    close[50:60, 2] = np.nan
    open_ = close * 1.001
    w = _weights(41, close.shape, gross=0.9)
    mask = np.random.default_rng(41).random(close.shape) < 0.25
    common = {
        "execution_lag": 1,
        "fill_price": fill,
        "rf": 0.04,
        "min_fee": 0.5,
        "order_mask": mask,
        "open": open_,
    }
    fast = _run(w, close, **dict(common))
    slow = _run(w, close, take_profit=1e6, **dict(common))
    for name in ("equity", "cash", "weights_held", "traded", "costs", "weights_target"):
        np.testing.assert_allclose(
            getattr(fast, name), getattr(slow, name), rtol=1e-12, atol=1e-12, err_msg=name
        )
    np.testing.assert_array_equal(fast.fill_bars, slow.fill_bars)
    assert len(fast.trades) == len(slow.trades) > 10
