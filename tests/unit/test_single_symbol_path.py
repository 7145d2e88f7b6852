"""The one-symbol path: its building blocks against independent references.

- the window sums behind every SMA, against exact (long double) window sums on a long series,
  windows from 1 to 5000 bars;
- the one-column state machine, against the matrix path on random event streams;
- a one-symbol rule backtest with missing closes, against `run_backtest` of its targets;
- `trading_metrics` given a backtest's own drawdown and equity, against the same metrics compounded
  from the returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig, rules, run_backtest
from alphaswarm_backtester.engine.rules import RuleInputs, positions_from_events, rule_sides
from alphaswarm_common.metrics import trading_metrics

pytestmark = pytest.mark.unit


def _walk(seed: int, n_bars: int, n_cols: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (n_bars, n_cols)), axis=0))


@pytest.mark.parametrize("n", [1, 3, 10, 200, 4096, 5000])
def test_sma_equals_exact_window_means_on_a_long_series(n):
    close = _walk(1, 30_000, 3)
    close[:700, 1] = np.nan  # a symbol listed later
    sma = RuleInputs(close).sma(n)
    for j in range(3):
        x = close[:, j]
        first = int(np.argmax(~np.isnan(x)))
        v = x[first:].astype(np.longdouble)
        csum = np.concatenate(([0], np.cumsum(v)))
        exact = np.full(x.size, np.nan)
        exact[first + n - 1 :] = ((csum[n:] - csum[:-n]) / n).astype(np.float64)
        assert np.isnan(sma[: first + n - 1, j]).all()
        np.testing.assert_allclose(sma[first + n - 1 :, j], exact[first + n - 1 :], rtol=1e-13, atol=0)


def test_sma_of_a_constant_price_is_that_price_exactly():
    close = np.full((10_000, 1), 17.25)
    np.testing.assert_array_equal(RuleInputs(close).sma(20)[19:, 0], 17.25)


@pytest.mark.parametrize("shorts", [False, True])
def test_one_column_state_machine_equals_the_matrix_path(shorts):
    rng = np.random.default_rng(7)
    n_bars, n_cols = 3000, 4
    streams = [rng.random((n_bars, n_cols)) < p for p in (0.02, 0.03, 0.02, 0.03)]
    el, xl, es, xs = streams
    # conflicts on purpose: the same bar entering and exiting, entering both sides
    el[::97] = xl[::97] = True
    es[::89] = el[::89] = True
    args = (el, xl, es, xs) if shorts else (el, xl, None, None)
    matrix = positions_from_events(*args)
    for j in range(n_cols):
        one = positions_from_events(*(None if a is None else a[:, j : j + 1] for a in args))
        np.testing.assert_array_equal(one[:, 0], matrix[:, j], err_msg=f"column {j}")


def _sides(seed: int, n_bars: int, choices: tuple[int, ...], p_change: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    change = rng.random(n_bars) < p_change
    idx = np.where(change, np.arange(n_bars), 0)
    np.maximum.accumulate(idx, out=idx)
    return np.where(change.any(), rng.choice(choices, size=n_bars)[idx], 0).astype(np.int8)


def _assert_same_account(got, ref, *, min_trades: int) -> None:
    """The closed form's output equals the share-and-cash loop's to rounding: arrays, ledger, metrics."""
    for name in ("returns", "drawdown", "weights_held", "traded", "costs", "turnover"):
        np.testing.assert_allclose(
            getattr(got, name), getattr(ref, name), rtol=1e-9, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(got.equity, ref.equity, rtol=1e-9)
    np.testing.assert_allclose(got.cash, ref.cash, rtol=1e-9, atol=1e-9 * ref.config.initial_capital)
    assert len(got.trades) == len(ref.trades) > min_trades
    for col in ("entry_bar", "exit_bar", "entry_date", "exit_date", "direction", "exit_reason", "is_open"):
        np.testing.assert_array_equal(got.trades[col].to_numpy(), ref.trades[col].to_numpy(), err_msg=col)
    for col in ("entry_price", "exit_price", "shares", "pnl", "pnl_percent", "mae", "mfe", "fees_paid"):
        np.testing.assert_allclose(
            got.trades[col].to_numpy(), ref.trades[col].to_numpy(), rtol=1e-8, atol=1e-9, err_msg=col
        )
    for name, value in ref.metrics.values.items():
        other = got.metrics.get(name)
        if value is None or other is None:
            assert value is other, name
        else:
            assert other == pytest.approx(value, rel=1e-8, abs=1e-12), name


@pytest.mark.parametrize(
    ("strategy", "params"),
    [("sma_cross", {"fast_period": 10, "slow_period": 30}), ("rsi", {"period": 14, "allow_short": True})],
)
def test_missing_closes_are_held_through_as_the_fill_loop_holds_them(strategy, params):
    # a bar without a close is a bar where nothing trades and the position keeps its last close
    n_bars = 2500
    rng = np.random.default_rng(42)
    close = _walk(42, n_bars)[:, 0]
    close[rng.random(n_bars) < 0.04] = np.nan  # scattered missing bars
    close[:30] = np.nan  # listed late
    close[700:740] = np.nan  # a suspension
    close[-20:] = np.nan  # delisted before the end
    high = close * (1.0 + rng.uniform(0.0, 0.01, n_bars))
    low = close * (1.0 - rng.uniform(0.0, 0.01, n_bars))
    dates = pd.bdate_range("2001-01-02", periods=n_bars)
    cfg = EngineConfig(fees=0.002, slippage=0.001, execution_lag=2)

    def run():
        return rules.run_rule_backtest(
            strategy, params, close=close, high=high, low=low, dates=dates, symbols=["X"], config=cfg
        )

    # a high without a close inside the longest trade: the share-and-cash loop's ledger reads it
    longest = run().trades.sort_values("duration_bars").iloc[-1]
    spike = int(longest["entry_bar"]) + 2
    close[spike] = np.nan
    high[spike] = np.nanmax(close) * 2.0
    low[spike] = np.nanmin(close) / 2.0
    got = run()
    holding = got.trades[(got.trades["entry_bar"] < spike) & (got.trades["exit_bar"] >= spike)]
    assert len(holding) == 1
    assert holding["mfe"].iloc[0] > 0.4  # its best price is the spike's, a bar without a close
    decisions = np.concatenate((got.weights_target[2:, 0], np.zeros(2)))  # the targets before the lag
    ref = run_backtest(decisions, close, dates=dates, symbols=["X"], config=cfg, high=high, low=low)
    _assert_same_account(got, ref, min_trades=10)


def test_metrics_from_the_account_curves_equal_the_compounded_ones():
    rng = np.random.default_rng(11)
    r = rng.normal(0.0004, 0.01, 5000)
    capital = 25_000.0
    equity = capital * np.cumprod(1.0 + r)
    peak = np.maximum(np.maximum.accumulate(equity), capital)
    dd = equity / peak - 1.0
    traded = np.abs(rng.normal(0, 0.1, r.size))
    common = {"periods_per_year": 252.0, "traded": traded, "initial_capital": capital, "rf": 0.01}
    plain = trading_metrics(r, **common)
    given = trading_metrics(r, drawdown=dd, account_equity=equity, **common)
    assert plain.values.keys() == given.values.keys()
    for name, value in plain.values.items():
        assert given.get(name) == pytest.approx(value, rel=1e-10, abs=1e-14), name


@pytest.mark.parametrize(("fast", "slow", "shorts"), [(10, 20, False), (3, 50, True), (1, 2, True)])
def test_sma_cross_without_kept_means_equals_the_kept_means(fast, slow, shorts):
    close = _walk(13, 5000, 3)
    close[:300, 1] = np.nan  # listed later
    close[2000:2010, 2] = np.nan  # a gap (forward filled for the means, no event on it)
    params = {"fast_period": fast, "slow_period": slow, "allow_short": shorts}
    kept = rule_sides("sma_cross", params, RuleInputs(close))
    fused = rule_sides("sma_cross", params, RuleInputs(close, keep_indicators=False))
    np.testing.assert_array_equal(fused, kept)
    assert (kept != 0).any()
