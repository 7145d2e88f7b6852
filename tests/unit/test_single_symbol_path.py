"""The one-symbol fast path: its building blocks against independent references.

- the window sums behind every SMA, against exact (long double) window sums on a long series,
  windows from 1 to 5000 bars;
- the one-column state machine, against the matrix path on random event streams;
- `kernel_backtest` on long series (many Jacobi sweeps, both the sparse and the whole-array ones,
  in one block and in many), against `run_backtest`'s share-and-cash loop;
- `trading_metrics` given a backtest's own drawdown and equity, against the same metrics compounded
  from the returns.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig, rules, run_backtest, single
from alphaswarm_backtester.engine.rules import RuleInputs, positions_from_events, rule_sides
from alphaswarm_backtester.engine.single import kernel_backtest
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


@pytest.mark.parametrize(
    ("choices", "cfg_kwargs"),
    [
        ((0, 1), {}),
        ((-1, 0, 1), {}),
        ((-1, 1), {"fees": 0.004, "slippage": 0.002}),
        ((-1, 0, 1), {"fees": 0.0, "slippage": 0.0}),
        ((-1, 0, 1), {"max_gross_leverage": 0.6, "execution_lag": 2}),
    ],
)
@pytest.mark.parametrize("block", [None, 997])
def test_kernel_backtest_equals_the_fill_loop_on_long_series(choices, cfg_kwargs, block, monkeypatch):
    if block is not None:  # many blocks, a partial last one: every carry between blocks is exercised
        monkeypatch.setattr(single, "_CHUNK", block)
    n_bars = 20_000
    close = _walk(3, n_bars)[:, 0]
    dates = pd.date_range("2000-01-03", periods=n_bars, freq="min")
    cfg = EngineConfig(periods_per_year=98_280, **cfg_kwargs)
    size = min(1.0, cfg.max_gross_leverage or 1.0)
    side = _sides(len(choices), n_bars, choices, 0.02)
    got = kernel_backtest(side, close, dates=dates, symbol="X", config=cfg, size=size)
    ref = run_backtest(size * side.astype(float), close, dates=dates, symbols=["X"], config=cfg)
    assert got is not None
    _assert_same_account(got, ref, min_trades=100)


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


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_kernel_dates_are_nanoseconds_whatever_the_input_unit(unit):
    n_bars = 500
    close = _walk(5, n_bars)[:, 0]
    dates = pd.date_range("1999-12-31 09:30", periods=n_bars, freq="min", unit=unit)
    side = _sides(5, n_bars, (0, 1), 0.05)
    got = kernel_backtest(side, close, dates=dates, symbol="X", config=EngineConfig())
    ref = run_backtest(side.astype(float), close, dates=dates, symbols=["X"], config=EngineConfig())
    assert got is not None
    assert got.dates.dtype == np.dtype("datetime64[ns]") == ref.dates.dtype
    np.testing.assert_array_equal(got.dates, ref.dates)
    np.testing.assert_array_equal(got.dates, dates.as_unit("ns").to_numpy())
    tz = kernel_backtest(
        side, close, dates=dates.tz_localize("America/New_York"), symbol="X", config=EngineConfig()
    )
    assert tz is not None
    np.testing.assert_array_equal(
        tz.dates,
        dates.tz_localize("America/New_York").tz_convert("UTC").tz_localize(None).as_unit("ns").to_numpy(),
    )


def test_kernel_extras_are_derived_once_and_read_only():
    n_bars = 300
    close = _walk(9, n_bars)[:, 0]
    dates = pd.date_range("2001-01-02", periods=n_bars, freq="D")
    got = kernel_backtest(
        _sides(9, n_bars, (0, 1), 0.1), close, dates=dates, symbol="X", config=EngineConfig()
    )
    assert got is not None
    for name in ("cash", "weights_target", "costs", "fill_bars"):
        first = getattr(got, name)
        assert getattr(got, name) is first, name  # computed at most once
        assert not first.flags.writeable, name
    assert got.weights_target.shape == (n_bars, 1) and got.fill_bars.dtype == np.int64


@pytest.mark.parametrize("block_cells", [None, 64])
@pytest.mark.parametrize(("fast", "slow", "shorts"), [(10, 20, False), (3, 50, True), (1, 2, True)])
def test_sma_cross_without_kept_means_equals_the_kept_means(fast, slow, shorts, block_cells, monkeypatch):
    if block_cells is not None:  # many row blocks, each window's history taken from the block before
        monkeypatch.setattr(rules, "_BLOCK_CELLS", block_cells)
    close = _walk(13, 5000, 3)
    close[:300, 1] = np.nan  # listed later
    close[2000:2010, 2] = np.nan  # a gap (forward filled for the means, no event on it)
    params = {"fast_period": fast, "slow_period": slow, "allow_short": shorts}
    kept = rule_sides("sma_cross", params, RuleInputs(close))
    fused = rule_sides("sma_cross", params, RuleInputs(close, keep_indicators=False))
    np.testing.assert_array_equal(fused, kept)
    assert (kept != 0).any()


@pytest.mark.parametrize("block", [None, 7])
def test_kernel_declines_an_account_that_is_wiped_out(block, monkeypatch):
    if block is not None:
        monkeypatch.setattr(single, "_CHUNK", block)
    n_bars = 40
    close = np.full(n_bars, 10.0)
    close[25:] = 25.0  # a short position loses 150% on one bar
    side = np.full(n_bars, -1, dtype=np.int8)
    dates = pd.date_range("2010-01-04", periods=n_bars, freq="D")
    assert kernel_backtest(side, close, dates=dates, symbol="X", config=EngineConfig()) is None
    # a loss short of wiping the account out stays on the closed form
    close[25:] = 14.0
    assert kernel_backtest(side, close, dates=dates, symbol="X", config=EngineConfig()) is not None


@pytest.mark.parametrize("drift", [-1e-3, 0.0, 2e-4, 1e-2])
@pytest.mark.parametrize("size", [1, 255, 256, 257, 5000, 32768])
def test_running_peak_equals_the_running_maximum(drift, size):
    rng = np.random.default_rng(size)
    values = 100.0 * np.exp(np.cumsum(rng.normal(drift, 1e-3, size)))
    for before in (0.0, 100.0, float(values.max()) + 1.0):
        out = np.empty(size)
        kept = values.copy()
        single._running_peak(values, before, out)
        np.testing.assert_array_equal(out, np.maximum.accumulate(np.maximum(values, before)))
        np.testing.assert_array_equal(values, kept)  # the input is left as it was
