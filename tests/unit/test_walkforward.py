"""Walk-forward: window arithmetic, warm-up from history, per-window ratios, the stitched account.

The expected windows are written out by hand; every number of a window is
recomputed here from `optimize` / `run_rule_backtest` on that window alone
and from the pandas reference of the rule (a plain rolling mean and a loop).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.optimize import optimize
from alphaswarm_backtester.engine.rules import rule_weights, run_rule_backtest
from alphaswarm_backtester.engine.walkforward import walk_forward, walk_forward_windows
from alphaswarm_common.errors import InvalidArgument

pytestmark = pytest.mark.unit

GRID = {"fast_period": [3, 6, 10], "slow_period": [20, 35]}


def _prices(seed: int, n_bars: int, drift: float = 0.0004) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    return 40 * np.exp(np.cumsum(rng.normal(drift, 0.02, n_bars))), pd.bdate_range(
        "2005-01-03", periods=n_bars
    )


def test_rolling_windows():
    assert walk_forward_windows(100, 40, 20) == [(0, 40, 40, 60), (20, 60, 60, 80), (40, 80, 80, 100)]
    assert walk_forward_windows(99, 40, 20) == [(0, 40, 40, 60), (20, 60, 60, 80)]  # whole OOS windows only
    assert walk_forward_windows(100, 40, 20, step_bars=10) == [
        (0, 40, 40, 60),
        (10, 50, 50, 70),
        (20, 60, 60, 80),
        (30, 70, 70, 90),
        (40, 80, 80, 100),
    ]


def test_anchored_windows_expand():
    assert walk_forward_windows(100, 40, 20, anchored=True) == [
        (0, 40, 40, 60),
        (0, 60, 60, 80),
        (0, 80, 80, 100),
    ]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ((100, 40, 20, 30), "step_bars"),
        ((50, 40, 20, None), "in_sample_bars"),
        ((100, 1, 20, None), "in_sample_bars"),
        ((100, 40, 0, None), "out_of_sample_bars"),
        ((100, 40, 20, -1), "step_bars"),
    ],
)
def test_window_errors_name_the_field(args, field):
    with pytest.raises(InvalidArgument) as info:
        walk_forward_windows(*args)
    assert info.value.field == field


def test_each_window_is_its_own_optimization_and_test():
    close, dates = _prices(1, 420)
    cfg = EngineConfig()
    res = walk_forward(
        "sma_cross",
        close=close,
        dates=dates,
        symbols=["X"],
        grid=GRID,
        in_sample_bars=150,
        out_of_sample_bars=60,
    )
    assert [(w.train_start, w.train_stop, w.test_start, w.test_stop) for w in res.windows] == [
        (0, 150, 150, 210),
        (60, 210, 210, 270),
        (120, 270, 270, 330),
        (180, 330, 330, 390),
    ]
    for w in res.windows:
        alone = optimize(
            "sma_cross",
            close=close,
            dates=dates,
            symbols=["X"],
            grid=GRID,
            start=w.train_start,
            stop=w.train_stop,
        )
        assert alone.best is not None and w.best is not None
        assert w.best.params == alone.best.params
        oos = run_rule_backtest(
            "sma_cross",
            w.best.params,
            close=close,
            dates=dates,
            symbols=["X"],
            config=cfg,
            start=w.test_start,
            stop=w.test_stop,
        )
        ins = run_rule_backtest(
            "sma_cross",
            w.best.params,
            close=close,
            dates=dates,
            symbols=["X"],
            config=cfg,
            start=w.train_start,
            stop=w.train_stop,
        )
        assert w.out_of_sample is not None and w.in_sample is not None
        np.testing.assert_array_equal(w.out_of_sample.returns, oos.returns)
        expected_ratio = oos.metrics["annualized_return"] / ins.metrics["annualized_return"]
        assert w.performance_ratio == pytest.approx(expected_ratio, rel=1e-12)
        assert w.degradation_factor == pytest.approx(
            1 - oos.metrics["sharpe"] / ins.metrics["sharpe"], rel=1e-12
        )
        assert w.in_sample.metrics["sharpe"] == pytest.approx(w.best.metrics["sharpe"], rel=1e-9)


def test_out_of_sample_windows_warm_up_on_history():
    """A decline then a steady rise: the fast SMA crossed above the slow one long before the OOS windows."""
    n = 300
    t = np.arange(n)
    close = 50 * np.exp(np.where(t < 70, -0.003 * t, -0.21 + 0.004 * (t - 70)) + 0.001 * np.sin(t))
    dates = pd.bdate_range("2010-01-04", periods=n)
    grid = {"fast_period": [5], "slow_period": [50]}
    res = walk_forward(
        "sma_cross",
        close=close,
        dates=dates,
        symbols=["X"],
        grid=grid,
        in_sample_bars=120,
        out_of_sample_bars=60,
    )
    reference = rule_weights("sma_cross", grid | {"fast_period": 5, "slow_period": 50}, close=close)[:, 0]
    for w in res.windows:
        oos = w.out_of_sample
        assert oos is not None
        # the decision of the first OOS bar is already long, and it fills at the first fill bar
        assert oos.weights_target[1, 0] == 1.0 and oos.weights_held[1, 0] > 0.99
        assert reference[w.test_start] == 1.0
        # without the history the window would have started flat (SMA(50) warming up, no cross seen)
        cold = rule_weights(
            "sma_cross", {"fast_period": 5, "slow_period": 50}, close=close[w.test_start : w.test_stop]
        )
        assert not cold.any()
    # the stitched account holds the position across window boundaries without re-trading it
    assert res.stitched.weights_target[1:, 0].min() == 1.0
    assert len(res.stitched.trades) == 1


def test_stitched_account_follows_the_governing_window():
    close, dates = _prices(7, 400, drift=0.0)
    res = walk_forward(
        "sma_cross",
        close=close,
        dates=dates,
        symbols=["X"],
        grid={**GRID, "allow_short": [True, False]},
        in_sample_bars=120,
        out_of_sample_bars=80,
        step_bars=40,
    )
    assert res.stitched_start == 120 and res.stitched_stop == 400
    expected = np.zeros(res.stitched_stop - res.stitched_start)
    for i, w in enumerate(res.windows):
        assert w.best is not None
        governs_to = res.windows[i + 1].test_start if i + 1 < len(res.windows) else w.test_stop
        full = rule_weights("sma_cross", w.best.params, close=close)[:, 0]
        expected[w.test_start - 120 : governs_to - 120] = full[w.test_start : governs_to]
    # targets in force lag the decisions by one bar
    np.testing.assert_array_equal(res.stitched.weights_target[1:, 0], expected[:-1])
    assert res.stitched.dates[0] == np.datetime64(dates[120])


def test_walk_forward_is_causal():
    close, dates = _prices(3, 360)
    kwargs = {"symbols": ["X"], "grid": GRID, "in_sample_bars": 100, "out_of_sample_bars": 50}
    base = walk_forward("sma_cross", close=close, dates=dates, **kwargs)
    t = 260
    noisy = close.copy()
    noisy[t + 1 :] *= np.exp(np.random.default_rng(0).normal(0, 0.05, noisy.size - t - 1))
    other = walk_forward("sma_cross", close=noisy, dates=dates, **kwargs)
    for a, b in zip(base.windows, other.windows, strict=True):
        if a.test_stop <= t + 1:
            assert a.best_params == b.best_params
            np.testing.assert_array_equal(a.out_of_sample.returns, b.out_of_sample.returns)  # type: ignore[union-attr]
    upto = t + 1 - base.stitched_start
    np.testing.assert_array_equal(base.stitched.returns[:upto], other.stitched.returns[:upto])


def test_undefined_ratios_and_windows_without_an_optimum():
    close = np.full(200, 30.0)
    dates = pd.bdate_range("2015-01-01", periods=200)
    res = walk_forward(
        "sma_cross",
        close=close,
        dates=dates,
        symbols=["X"],
        grid=GRID,
        objective="win_rate",
        in_sample_bars=100,
        out_of_sample_bars=50,
    )
    for w in res.windows:
        assert w.best is None and "win_rate" in (w.best_reason or "")
        assert w.performance_ratio is None and w.degradation_factor is None
    assert not res.stitched.weights_target.any()
    res = walk_forward(
        "sma_cross", close=close, dates=dates, symbols=["X"], grid=GRID, objective="total_return",
        in_sample_bars=100, out_of_sample_bars=50,
    )  # fmt: skip
    w = res.windows[0]
    assert w.performance_ratio is None and w.performance_ratio_reason == "in-sample annualized return is 0"
    assert w.degradation_factor is None and w.degradation_factor_reason == "out-of-sample Sharpe is undefined"
