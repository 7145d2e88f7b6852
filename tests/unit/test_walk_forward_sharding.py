"""A walk-forward test whose windows' in-sample searches were evaluated in chunks (one window per
chunk, or a window's search split further) and merged equals the one-process walk-forward exactly:
the windows, each window's whole search (metrics, ranks, Deflated-Sharpe p-values), the optimum's
in- and out-of-sample metrics, the performance ratio and degradation, the stitched account, and the
catalog rows saved."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from alphaswarm_backtester.core import (
    Backtester,
    EvaluateInput,
    OptimizeInput,
    Recording,
    WalkForwardInput,
    WindowSelector,
)
from alphaswarm_backtester.engine.backtest import Extras
from alphaswarm_backtester.engine.optimize import OptimizationResult
from alphaswarm_backtester.engine.walkforward import WalkForwardResult
from alphaswarm_backtester.sharding import chunk_bounds
from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto
from alphaswarm_common.errors import InvalidArgument
from tests.unit.test_backtester_core import FakeCatalog, FakeTracker, _source, _window

pytestmark = pytest.mark.unit

GRID = {"fast_period": [3, 5, 10, 20], "slow_period": [10, 30, 60]}  # 12 sets, some invalid
N_SETS = 12


def _req(key: str, *, anchored: bool = False, objective: str = "sharpe") -> WalkForwardInput:
    return WalkForwardInput(
        "sma_cross",
        _window(),
        _source("AAPL", "KO"),
        grid=GRID,
        objective=objective,
        in_sample_bars=126,
        out_of_sample_bars=63,
        step_bars=42,
        anchored=anchored,
        recording=Recording(persist=True, request_id=key, fingerprint="cd"),
    )


def _window_chunks(req: WalkForwardInput, chunk_sets: int) -> tuple[Any, ...]:
    """Every window's search in chunks of `chunk_sets` sets, each through the wire form."""
    search = OptimizeInput(req.strategy_type, req.backtest_cfg, req.source, grid=req.grid, method="grid")
    worker = Backtester(FakeTracker(), FakeCatalog())

    def selector(index: int) -> WindowSelector:
        return WindowSelector(req.in_sample_bars, req.out_of_sample_bars, req.step_bars, req.anchored, index)

    probe = worker.evaluate_parameter_sets(EvaluateInput(search, 0, 0, selector(0)))
    assert probe.sets == () and probe.n_windows > 1
    return tuple(
        chunk_from_proto(
            chunk_to_proto(worker.evaluate_parameter_sets(EvaluateInput(search, lo, hi, selector(i))))
        )
        for i in reversed(range(probe.n_windows))  # any order
        for lo, hi in chunk_bounds(N_SETS, chunk_sets)
    )


def _same_search(a: OptimizationResult, b: OptimizationResult) -> None:
    # how it was evaluated and how long it took differ; every figure is equal
    assert dataclasses.replace(a, evaluation="", seconds=0.0) == dataclasses.replace(
        b, evaluation="", seconds=0.0
    )


def _same(x: Any, y: Any, path: str = "") -> None:
    """Equal bit for bit, through dataclasses, mappings, sequences, arrays and frames (NaN where NaN)."""
    assert type(x) is type(y), path
    if isinstance(x, np.ndarray):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), path
    elif hasattr(x, "equals"):  # a DataFrame or Series (the ledger)
        assert x.equals(y), path
    elif isinstance(x, Extras):
        for name in ("cash", "weights_target", "costs", "fill_bars"):
            _same(x.get(name), y.get(name), f"{path}.{name}")
    elif dataclasses.is_dataclass(x):
        for f in dataclasses.fields(x):
            _same(getattr(x, f.name), getattr(y, f.name), f"{path}.{f.name}")
    elif isinstance(x, dict):
        assert list(x) == list(y), path
        for k in x:
            _same(x[k], y[k], f"{path}[{k!r}]")
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), path
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _same(u, v, f"{path}[{i}]")
    elif isinstance(x, float) and math.isnan(x):
        assert math.isnan(y), path
    else:
        assert x == y, path


def _same_result(a: WalkForwardResult, b: WalkForwardResult) -> None:
    assert len(a.windows) == len(b.windows) > 2
    for wa, wb in zip(a.windows, b.windows, strict=True):
        _same_search(wa.optimization, wb.optimization)
        _same(dataclasses.replace(wa, optimization=None), dataclasses.replace(wb, optimization=None))
    _same(a.stitched, b.stitched)
    assert dataclasses.replace(a, windows=(), stitched=None) == dataclasses.replace(
        b, windows=(), stitched=None
    )


@pytest.mark.parametrize(
    ("chunk_sets", "anchored", "objective"), [(12, False, "sharpe"), (5, True, "sortino")]
)
def test_merged_window_searches_equal_the_one_process_walk_forward(
    chunk_sets: int, anchored: bool, objective: str
) -> None:
    whole_catalog, split_catalog = FakeCatalog(), FakeCatalog()
    req = _req("wf", anchored=anchored, objective=objective)
    whole = Backtester(FakeTracker(), whole_catalog).walk_forward(req)
    merged = Backtester(FakeTracker(), split_catalog).walk_forward(
        dataclasses.replace(req, window_searches=_window_chunks(req, chunk_sets))
    )
    _same_result(whole.result, merged.result)
    assert np.array_equal(whole.dates, merged.dates)
    assert split_catalog.walk_forward == whole_catalog.walk_forward  # every window row, same key
    (a,), (b,) = whole_catalog.backtests, split_catalog.backtests
    assert a.request_id == b.request_id and a.parameters == b.parameters
    assert a.output.metrics == b.output.metrics


def test_a_window_without_its_search_is_refused_before_anything_is_written() -> None:
    req = _req("wf")
    chunks = [c for c in _window_chunks(req, N_SETS) if c.window_index != 1]
    catalog = FakeCatalog()
    with pytest.raises(InvalidArgument) as err:
        Backtester(FakeTracker(), catalog).walk_forward(
            dataclasses.replace(req, window_searches=tuple(chunks))
        )
    assert err.value.field == "window_searches"
    assert not catalog.backtests and not catalog.walk_forward


def test_a_window_index_past_the_last_window_is_refused_naming_it() -> None:
    req = _req("wf")
    search = OptimizeInput(req.strategy_type, req.backtest_cfg, req.source, grid=req.grid, method="grid")
    with pytest.raises(InvalidArgument) as err:
        Backtester(FakeTracker(), FakeCatalog()).evaluate_parameter_sets(
            EvaluateInput(search, 0, N_SETS, WindowSelector(126, 63, 42, False, 10_000))
        )
    assert err.value.field == "window.index"
