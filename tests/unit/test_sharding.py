"""A parameter search evaluated in chunks and merged equals the one-process `engine.optimize` exactly.

The reference is `engine.optimize` itself: the merged result must carry the
same sets, metrics, ranks, Deflated-Sharpe p-values, number of trials and
Sharpe variance, bit for bit, for any chunking (size 1, uneven splits, one
chunk), for grid and random searches, with skipped sets, on the batch kernel
and on the `run_backtest` fallback, on one and several symbols.
"""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from alphaswarm_backtester.engine import EngineConfig
from alphaswarm_backtester.engine.optimize import optimize
from alphaswarm_backtester.sharding import (
    build_search,
    chunk_bounds,
    evaluate_parameter_sets,
    merge_evaluations,
    search_size,
)
from alphaswarm_common.errors import InvalidArgument

pytestmark = pytest.mark.unit


def _prices(seed: int, n_bars: int, n_syms: int = 1) -> tuple[np.ndarray, pd.DatetimeIndex]:
    rng = np.random.default_rng(seed)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0.0003, 0.02, (n_bars, n_syms)), axis=0))
    return close, pd.bdate_range("2003-01-02", periods=n_bars)


def _sharded(strategy, *, chunk, order=None, **kw):  # type: ignore[no-untyped-def]
    search = {k: kw[k] for k in ("grid", "space", "method", "n_samples", "seed") if k in kw}
    search.setdefault("method", "grid")
    search.setdefault("n_samples", 50)
    search.setdefault("seed", 0)
    search.setdefault("grid", None)
    search.setdefault("space", None)
    objective = kw.get("objective", "sharpe")
    _sets, skipped, where = build_search(strategy, objective=objective, **search)
    n_sets = search_size(search["method"], search["grid"], search["n_samples"])
    bounds = chunk_bounds(n_sets, chunk)
    if order is not None:
        order.shuffle(bounds)  # chunks complete in any order
    data = {k: kw[k] for k in ("close", "dates", "symbols", "config", "start", "stop") if k in kw}
    parts = [evaluate_parameter_sets(strategy, first=lo, last=hi, **search, **data) for lo, hi in bounds]
    return merge_evaluations(
        strategy,
        parts,
        skipped=skipped,
        n_sets=n_sets,
        objective=objective,
        method=search["method"],
        where=where,
    )


def _assert_same(merged, ref) -> None:  # type: ignore[no-untyped-def]
    assert merged.n_trials == ref.n_trials
    assert merged.sharpe_variance == ref.sharpe_variance
    assert merged.periods_per_year == ref.periods_per_year
    assert merged.n_bars == ref.n_bars
    assert [(s.index, s.params, s.field, s.message) for s in merged.skipped] == [
        (s.index, s.params, s.field, s.message) for s in ref.skipped
    ]
    assert len(merged.trials) == len(ref.trials)
    for a, b in zip(merged.trials, ref.trials, strict=True):
        assert a.parameter_set == b.parameter_set
        assert a.params == b.params
        assert a.rank == b.rank
        assert a.objective_value == b.objective_value
        assert a.objective_reason == b.objective_reason
        assert a.p_value == b.p_value
        assert a.p_value_reason == b.p_value_reason
        assert a.metrics.values == b.metrics.values
        assert a.metrics.reasons == b.metrics.reasons
    assert [t.parameter_set for t in merged.ranked] == [t.parameter_set for t in ref.ranked]
    assert (merged.best is None) == (ref.best is None)
    if ref.best is not None:
        assert merged.best.parameter_set == ref.best.parameter_set
        assert merged.best.p_value == ref.best.p_value


GRID = {
    "fast_period": [3, 5, 8, 10, 12, 20],
    "slow_period": [10, 15, 20, 30, 40, 60, 90],
}  # 42 sets, some invalid


@pytest.mark.parametrize("chunk", [1, 4, 7, 11, 41, 42, 1000])
def test_grid_chunks_merge_to_the_one_process_result(chunk):
    close, dates = _prices(3, 700)
    ref = optimize("sma_cross", close=close, dates=dates, symbols=["X"], grid=GRID)
    assert ref.skipped, "the grid holds invalid sets (fast >= slow)"
    merged = _sharded(
        "sma_cross",
        chunk=chunk,
        order=random.Random(chunk),
        close=close,
        dates=dates,
        symbols=["X"],
        grid=GRID,
    )
    _assert_same(merged, ref)


@pytest.mark.parametrize("objective", ["sortino", "win_rate", "max_drawdown"])
def test_other_objectives_and_a_window_merge_identically(objective):
    close, dates = _prices(5, 600)
    kw = {"close": close, "dates": dates, "symbols": ["X"], "grid": GRID, "objective": objective}
    ref = optimize("sma_cross", start=200, stop=560, **kw)
    _assert_same(_sharded("sma_cross", chunk=5, start=200, stop=560, **kw), ref)


@pytest.mark.parametrize("chunk", [1, 9, 16])
def test_random_search_chunks_merge_identically(chunk):
    close, dates = _prices(8, 500)
    space = {"period": {"low": 5, "high": 40}, "lower": {"low": 15.0, "high": 40.0}}
    kw = {
        "close": close,
        "dates": dates,
        "symbols": ["X"],
        "space": space,
        "method": "random",
        "n_samples": 33,
    }
    ref = optimize("rsi", seed=11, **kw)
    _assert_same(_sharded("rsi", chunk=chunk, seed=11, **kw), ref)


def test_run_backtest_fallback_and_several_symbols_merge_identically():
    close, dates = _prices(13, 300, n_syms=3)
    cfg = EngineConfig(min_fee=1.0)  # a minimum fee, on several symbols
    kw = {"close": close, "dates": dates, "symbols": ["A", "B", "C"], "grid": GRID, "config": cfg}
    ref = optimize("sma_cross", **kw)
    _assert_same(_sharded("sma_cross", chunk=6, **kw), ref)


def test_the_merge_refuses_chunks_that_do_not_tile_the_search():
    close, dates = _prices(3, 200)
    _sets, skipped, _ = build_search(
        "sma_cross", grid=GRID, space=None, method="grid", n_samples=0, seed=0, objective="sharpe"
    )
    part = evaluate_parameter_sets(
        "sma_cross", first=0, last=20, close=close, dates=dates, symbols=["X"], grid=GRID
    )
    with pytest.raises(InvalidArgument) as err:
        merge_evaluations("sma_cross", [part], skipped=skipped, n_sets=42, objective="sharpe", method="grid")
    assert err.value.field == "chunks"
    with pytest.raises(InvalidArgument) as err:
        merge_evaluations(
            "sma_cross", [part, part], skipped=skipped, n_sets=42, objective="sharpe", method="grid"
        )
    assert err.value.field == "chunks"
    with pytest.raises(InvalidArgument) as err:
        chunk_bounds(42, 0)
    assert err.value.field == "chunk_sets"


@pytest.mark.parametrize("chunk", [1, 10])
def test_chunks_through_the_wire_merge_identically(chunk):
    """Packed as EvaluateParameterSetsResponse and back (integers of params become floats in a Struct:
    the merge takes each set's parameters from the search)."""
    from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto

    close, dates = _prices(21, 400)
    ref = optimize("sma_cross", close=close, dates=dates, symbols=["X"], grid=GRID)
    sets, skipped, where = build_search(
        "sma_cross", grid=GRID, space=None, method="grid", n_samples=0, seed=0, objective="sharpe"
    )
    parts = []
    for lo, hi in chunk_bounds(42, chunk):
        part = evaluate_parameter_sets(
            "sma_cross", first=lo, last=hi, close=close, dates=dates, symbols=["X"], grid=GRID
        )
        wire = chunk_to_proto(part).SerializeToString()
        parts.append(chunk_from_proto(type(chunk_to_proto(part)).FromString(wire)))
    merged = merge_evaluations(
        "sma_cross",
        parts,
        skipped=skipped,
        n_sets=42,
        objective="sharpe",
        method="grid",
        where=where,
        sets=sets,
    )
    _assert_same(merged, ref)
    assert all(
        isinstance(v, int) for t in merged.trials for v in t.params.values() if not isinstance(v, bool)
    )
