"""Parameter optimization: search spaces, the batch kernel against `run_backtest`, ranking, DSR p-values.

References are independent of the code under test: `run_backtest` (itself
matched to vectorbt) for every number of the batch kernel, brute-force
loops for the range statistics, and scipy's normal distribution and
moments for the Deflated Sharpe Ratio formula of Bailey & López de Prado (2014).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_backtester.engine import EngineConfig, run_backtest
from alphaswarm_backtester.engine.optimize import (
    OBJECTIVES,
    TRIAL_METRICS,
    evaluate_sides,
    grid_parameter_sets,
    kernel_returns,
    optimize,
    random_parameter_sets,
    rank_values,
)
from alphaswarm_backtester.engine.rules import RuleInputs, rule_sides, run_rule_backtest
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit

EULER = 0.5772156649015329


def _prices(seed: int, n_bars: int, vol: float = 0.025) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0.0003, vol, n_bars)))
    return close, pd.bdate_range("2001-01-02", periods=n_bars)


def _random_sides(seed: int, n_sets: int, n_bars: int) -> np.ndarray:
    """Target sequences with long, short, flat runs of every length, flips and one-bar runs."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_sets, n_bars), dtype=np.int8)
    for k in range(n_sets):
        p_change = (0.03, 0.25, 0.7)[k % 3]
        choices = (-1, 0, 1) if k % 2 else (0, 1)
        change = rng.random(n_bars) < p_change
        values = rng.choice(choices, size=n_bars)
        idx = np.where(change, np.arange(n_bars), 0)
        np.maximum.accumulate(idx, out=idx)
        out[k] = np.where(change.any(), values[idx], 0)
        out[k, : rng.integers(0, 5)] = 0
    return out


def _compare(ms, ref, names=TRIAL_METRICS, rtol=1e-9) -> None:  # type: ignore[no-untyped-def]
    for name in names:
        a, b = ms.get(name), ref.get(name)
        assert (a is None) == (b is None), (name, a, b, ms.reason(name), ref.reason(name))
        if a is None:
            assert ms.reason(name) == ref.reason(name), name
            continue
        assert a == pytest.approx(b, rel=rtol, abs=1e-12), name


# ----------------------------------------------------------------------------- the batch kernel


@pytest.mark.parametrize("lag", [0, 1, 2])
@pytest.mark.parametrize(("fees", "slippage"), [(0.001, 0.001), (0.0, 0.0), (0.01, 0.005)])
def test_kernel_returns_equal_run_backtest(lag, fees, slippage):
    close, dates = _prices(lag, 300)
    sides = _random_sides(10 + lag, 9, close.size)
    cfg = EngineConfig(execution_lag=lag, fees=fees, slippage=slippage)
    got = kernel_returns(sides, close, cfg)
    for k in range(sides.shape[0]):
        out = run_backtest(sides[k].astype(float), close, dates=dates, symbols=["X"], config=cfg)
        np.testing.assert_allclose(got[k], out.returns, rtol=0, atol=2e-15)


def test_kernel_returns_with_a_capped_size_equal_run_backtest():
    close, dates = _prices(4, 250, vol=0.05)
    sides = _random_sides(3, 6, close.size)
    cfg = EngineConfig(fees=0.002, slippage=0.0, max_gross_leverage=0.6)
    got = kernel_returns(sides, close, cfg, size=0.6)
    for k in range(sides.shape[0]):
        out = run_backtest(sides[k].astype(float), close, dates=dates, symbols=["X"], config=cfg)
        np.testing.assert_allclose(got[k], out.returns, rtol=0, atol=2e-15)


@pytest.mark.parametrize("seed", range(3))
def test_batch_metrics_equal_run_backtest_metrics(seed):
    close, dates = _prices(seed, 500)
    sides = _random_sides(seed, 12, close.size)
    sides[0] = 0  # never trades
    sides[1] = 0
    sides[1, -3:] = 1  # enters at the end: one open trade only
    cfg = EngineConfig(execution_lag=1)
    results, path = evaluate_sides(sides, close, dates=dates, symbols=["X"], config=cfg)
    assert path == "kernel"
    for k in range(sides.shape[0]):
        out = run_backtest(sides[k].astype(float), close, dates=dates, symbols=["X"], config=cfg)
        ms = results[k]
        assert set(ms.values) == set(TRIAL_METRICS)
        _compare(ms, out.metrics)
    assert results[0].get("total_trades") == 0 and results[0].reason("sharpe") == "zero variance"


def test_long_fast_flipping_sequences_match_run_backtest():
    close, dates = _prices(9, 3000, vol=0.01)
    sides = np.zeros((2, close.size), dtype=np.int8)
    sides[0, ::2] = 1  # a new run of one or two bars forever: no bar ever settles
    sides[1, 100:] = -1
    results, path = evaluate_sides(sides, close, dates=dates, symbols=["X"], config=EngineConfig())
    assert path == "kernel"
    for k in range(2):
        out = run_backtest(sides[k].astype(float), close, dates=dates, symbols=["X"], config=EngineConfig())
        _compare(results[k], out.metrics)


@pytest.mark.parametrize(
    "cfg",
    [
        EngineConfig(rf=0.03),
        EngineConfig(fill_price="open"),
        EngineConfig(rebalance_every=5),
        EngineConfig(min_fee=1.0),
        EngineConfig(stop_loss=0.05),
    ],
)
def test_other_configurations_run_in_the_kernel(cfg):
    close, dates = _prices(2, 200)
    rng = np.random.default_rng(0)
    opens = close * (1 + rng.normal(0, 0.003, close.size))
    sides = _random_sides(1, 3, close.size)
    results, path = evaluate_sides(sides, close, dates=dates, symbols=["X"], config=cfg, open=opens)
    assert path == "kernel"
    for k in range(3):
        out = run_backtest(sides[k].astype(float), close, dates=dates, symbols=["X"], config=cfg, open=opens)
        _compare(results[k], out.metrics, rtol=1e-15)


def test_several_symbols_split_capital_and_match_run_backtest():
    rng = np.random.default_rng(3)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, (150, 3)), axis=0))
    dates = pd.bdate_range("2010-01-01", periods=150)
    inputs = RuleInputs(close)
    sides = np.stack([rule_sides("sma_cross", {"fast_period": f, "slow_period": 12}, inputs) for f in (3, 5)])
    results, _ = evaluate_sides(sides, close, dates=dates, symbols=["A", "B", "C"], config=EngineConfig())
    for k in range(2):
        out = run_backtest(sides[k] / 3.0, close, dates=dates, symbols=["A", "B", "C"], config=EngineConfig())
        _compare(results[k], out.metrics, rtol=1e-15)


# ----------------------------------------------------------------------------- search spaces


def test_grid_order_invalid_combinations_and_duplicates_are_reported():
    # names in the params model's order whatever the mapping's order (a protobuf Struct has none)
    sets, skipped = grid_parameter_sets("sma_cross", {"slow_period": [10, 30], "fast_period": [5, 20, 5.0]})
    assert [(s.index, s.values["fast_period"], s.values["slow_period"]) for s in sets] == [
        (0, 5, 10),
        (1, 5, 30),
        (3, 20, 30),
    ]
    by_index = {s.index: s for s in skipped}
    assert by_index[2].field == "strategy_cfg.params.slow_period"  # fast 20 >= slow 10
    assert "duplicate of parameter set 0" in by_index[4].message
    assert "duplicate of parameter set 1" in by_index[5].message


@pytest.mark.parametrize(
    ("grid", "field"),
    [
        ({"speed": [1]}, "grid.speed"),
        ({"fast_period": []}, "grid.fast_period"),
        ({"fast_period": 5}, "grid.fast_period"),
        ({}, "grid"),
    ],
)
def test_grid_errors_name_the_field(grid, field):
    with pytest.raises(InvalidArgument) as info:
        grid_parameter_sets("sma_cross", grid)
    assert info.value.field == field


def test_random_search_is_seeded_typed_and_bounded():
    space = {
        "fast_period": {"low": 2, "high": 9},
        "slow_period": {"low": 10, "high": 400, "log": True},
        "allow_short": [True, False],
    }
    a, _ = random_parameter_sets("sma_cross", space, 60, seed=7)
    b, _ = random_parameter_sets("sma_cross", dict(reversed(space.items())), 60, seed=7)
    c, _ = random_parameter_sets("sma_cross", space, 60, seed=8)
    assert [s.values for s in a] == [s.values for s in b] != [s.values for s in c]
    for s in a:
        assert 2 <= s.values["fast_period"] <= 9 and 10 <= s.values["slow_period"] <= 400
        assert isinstance(s.values["slow_period"], int)
    slows = np.array([s.values["slow_period"] for s in a])
    assert np.median(slows) < 150  # log-uniform on [10, 400]: median ~ 63
    floats, _ = random_parameter_sets("rsi", {"lower": {"low": 10, "high": 40}}, 20, seed=1)
    assert all(isinstance(s.values["lower"], float) and 10 <= s.values["lower"] <= 40 for s in floats)


@pytest.mark.parametrize(
    ("space", "field"),
    [
        ({"nope": [1]}, "space.nope"),
        ({"fast_period": {"low": 1}}, "space.fast_period.high"),
        ({"fast_period": {"low": 5, "high": 1}}, "space.fast_period.high"),
        ({"fast_period": {"low": 0, "high": 3, "log": True}}, "space.fast_period.low"),
        ({"fast_period": {"low": 1, "high": 3, "step": 1}}, "space.fast_period.step"),
        ({"fast_period": {"low": 1, "high": 3, "type": "str"}}, "space.fast_period.type"),
    ],
)
def test_random_space_errors_name_the_field(space, field):
    with pytest.raises(InvalidArgument) as info:
        random_parameter_sets("sma_cross", space, 5)
    assert info.value.field == field


# ----------------------------------------------------------------------------- ranking and p-values


def test_rank_values_larger_first_ties_by_index_none_unranked():
    assert rank_values([0.5, None, 2.0, 0.5, -1.0]) == [2, None, 1, 3, 4]
    assert rank_values([None, None]) == [None, None]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_ranking_follows_each_objective_direction(objective):
    close, dates = _prices(21, 600)
    grid = {"fast_period": [3, 5, 8, 13], "slow_period": [15, 30, 60], "allow_short": [False, True]}
    res = optimize("sma_cross", close=close, dates=dates, symbols=["X"], grid=grid, objective=objective)
    ranked = [t for t in res.ranked if t.rank is not None]
    values = [t.objective_value for t in ranked]
    assert values == sorted(values, reverse=True)  # max_drawdown <= 0: the smallest loss first
    assert [t.rank for t in ranked] == list(range(1, len(ranked) + 1))
    for t in res.trials:
        assert t.objective_value == t.metrics.get(objective)
    if objective == "max_drawdown":
        assert all(v <= 0 for v in values) and res.best is not None
        assert res.best.objective_value == max(values)


def test_ties_rank_by_parameter_set():
    flat = np.full(80, 10.0)
    dates = pd.bdate_range("2020-01-01", periods=80)
    res = optimize(
        "sma_cross",
        close=flat,
        dates=dates,
        symbols=["X"],
        grid={"fast_period": [2, 3, 4]},
        objective="total_return",
    )
    assert [t.rank for t in res.trials] == [1, 2, 3]  # all 0.0 (no trade on flat prices)


def test_deflated_p_values_match_the_formula():
    close, dates = _prices(8, 700)
    grid = {"fast_period": [2, 4, 6, 9], "slow_period": [20, 40, 80], "allow_short": [True]}
    res = optimize("sma_cross", close=close, dates=dates, symbols=["X"], grid=grid)
    ppy = 252.0
    srs, moments = [], []
    for t in res.trials:
        out = run_rule_backtest("sma_cross", t.params, close=close, dates=dates, symbols=["X"])
        r = out.returns
        srs.append(r.mean() / r.std(ddof=1))
        moments.append((stats.skew(r), stats.kurtosis(r, fisher=False)))
    n_trials = len(srs)
    variance = np.var(srs, ddof=1)
    sr0 = math.sqrt(variance) * (
        (1 - EULER) * stats.norm.ppf(1 - 1 / n_trials) + EULER * stats.norm.ppf(1 - 1 / (n_trials * math.e))
    )
    assert res.n_trials == n_trials and res.sharpe_variance == pytest.approx(variance, rel=1e-9)
    for t, sr, (g3, g4) in zip(res.trials, srs, moments, strict=True):
        z = (sr - sr0) * math.sqrt(close.size - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr * sr)
        expected = 1 - stats.norm.cdf(z)
        assert t.p_value == pytest.approx(expected, rel=1e-7, abs=1e-12)
        assert t.is_statistically_significant == (expected < 0.05)
        assert t.metrics.get("sharpe") == pytest.approx(sr * math.sqrt(ppy), rel=1e-9)
    best = res.best
    assert best is not None and best.p_value == min(
        t.p_value for t in res.trials if t.metrics.get("sharpe") == best.metrics.get("sharpe")
    )


def test_optimize_window_warms_up_on_history_and_matches_run_rule_backtest():
    close, dates = _prices(13, 400)
    grid = {"fast_period": [4, 7], "slow_period": [25, 50]}
    res = optimize("sma_cross", close=close, dates=dates, symbols=["X"], grid=grid, start=150, stop=330)
    assert res.n_bars == 180
    for t in res.trials:
        out = run_rule_backtest(
            "sma_cross", t.params, close=close, dates=dates, symbols=["X"], start=150, stop=330
        )
        _compare(t.metrics, out.metrics)
        assert out.weights_target[1:].any()  # positions from the first bars: the indicators were warm


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"objective": "alpha"}, "objective"),
        ({"method": "bayes"}, "method"),
        ({"grid": {"fast_period": [30], "slow_period": [10]}}, "grid"),
        ({"grid": None}, "grid"),
        ({"method": "random", "grid": None}, "space"),
        ({"strategy_type": "long_short_topk"}, "strategy_type"),
    ],
)
def test_optimize_errors_name_the_field(kwargs, field):
    close, dates = _prices(1, 60)
    args = {"strategy_type": "sma_cross", "grid": {"fast_period": [3]}, **kwargs}
    with pytest.raises(InvalidArgument) as info:
        optimize(close=close, dates=dates, symbols=["X"], **args)
    assert info.value.field == field


def test_random_search_over_a_grid_and_reported_skips():
    close, dates = _prices(6, 300)
    res = optimize(
        "sma_cross",
        close=close,
        dates=dates,
        symbols=["X"],
        method="random",
        space={"fast_period": {"low": 2, "high": 30}, "slow_period": {"low": 10, "high": 40}},
        n_samples=40,
        seed=3,
    )
    assert len(res.trials) + len(res.skipped) == 40
    assert any(s.field == "strategy_cfg.params.slow_period" for s in res.skipped)
    assert all(t.params["fast_period"] < t.params["slow_period"] for t in res.trials)
    assert sorted(t.parameter_set for t in res.trials) == [t.parameter_set for t in res.trials]


def test_invalid_prices_and_dates_name_the_field():
    close, dates = _prices(1, 50)
    gappy = close.copy()
    gappy[10] = np.nan
    gappy[20] = -1.0
    with pytest.raises(DataError) as err:
        run_rule_backtest("buy_and_hold", {}, close=gappy, dates=dates, symbols=["X"])
    assert err.value.field == "close"
    far = pd.date_range("2300-01-01", periods=50, freq="D", unit="us")
    with pytest.raises(DataError) as err:
        run_rule_backtest("buy_and_hold", {}, close=close, dates=far, symbols=["X"])
    assert err.value.field == "dates"
