"""`Backtester.optimize` fed with chunks (`EvaluateParameterSets` through the wire) stores exactly
the rows and the chosen backtest of the unsplit optimization; chunks that do not tile the search
are refused naming `chunks`, with nothing written."""

from __future__ import annotations

import dataclasses

import pytest

from alphaswarm_backtester.core import Backtester, EvaluateInput, OptimizeInput, Recording
from alphaswarm_backtester.sharding import chunk_bounds
from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto
from alphaswarm_common.errors import InvalidArgument
from tests.unit.test_backtester_core import FakeCatalog, FakeTracker, _source, _window

pytestmark = pytest.mark.unit

GRID = {"fast_period": [3, 5, 10, 20, 40], "slow_period": [10, 30, 60]}  # 15 sets, some invalid


def _req(key: str) -> OptimizeInput:
    return OptimizeInput(
        "sma_cross",
        _window(),
        _source("AAPL"),
        grid=GRID,
        objective="sortino",
        recording=Recording(persist=True, request_id=key, fingerprint="ab"),
    )


@pytest.mark.parametrize("chunk", [1, 4, 15])
def test_chunked_optimization_stores_what_the_unsplit_one_stores(chunk: int) -> None:
    whole_catalog, split_catalog = FakeCatalog(), FakeCatalog()
    whole = Backtester(FakeTracker(), whole_catalog).optimize(_req("k"))
    worker = Backtester(FakeTracker(), FakeCatalog())
    chunks = tuple(
        chunk_from_proto(chunk_to_proto(worker.evaluate_parameter_sets(EvaluateInput(_req("k"), lo, hi))))
        for lo, hi in chunk_bounds(15, chunk)
    )
    split = Backtester(FakeTracker(), split_catalog).optimize(dataclasses.replace(_req("k"), chunks=chunks))
    assert split_catalog.optimizations == whole_catalog.optimizations  # every row, same order, same key
    (a,), (b,) = whole_catalog.backtests, split_catalog.backtests
    for name in ("symbol", "strategy_type", "notes", "request_id", "fingerprint", "backtest_id"):
        assert getattr(a, name) == getattr(b, name)
    assert a.output.metrics.values == b.output.metrics.values
    assert {k: v for k, v in a.parameters.items() if k != "optimization"} == {
        k: v for k, v in b.parameters.items() if k != "optimization"
    }
    for key in ("n_trials", "sharpe_trials_variance", "parameter_set", "n_skipped"):
        assert a.parameters["optimization"][key] == b.parameters["optimization"][key]
    assert split.chosen.parameter_set == whole.chosen.parameter_set
    assert split.chosen.p_value == whole.chosen.p_value


def test_chunks_that_miss_sets_are_refused_before_anything_is_written() -> None:
    catalog = FakeCatalog()
    worker = Backtester(FakeTracker(), FakeCatalog())
    part = worker.evaluate_parameter_sets(EvaluateInput(_req("k"), 0, 10))
    with pytest.raises(InvalidArgument) as err:
        Backtester(FakeTracker(), catalog).optimize(dataclasses.replace(_req("k"), chunks=(part,)))
    assert err.value.field == "chunks"
    assert not catalog.backtests and not catalog.optimizations


def test_chunks_of_another_window_are_refused_naming_the_chunk() -> None:
    worker = Backtester(FakeTracker(), FakeCatalog())
    other = dataclasses.replace(_req("k"), backtest_cfg=_window().model_copy(update={"start_date": None}))
    part = worker.evaluate_parameter_sets(EvaluateInput(other, 0, 15))
    catalog = FakeCatalog()
    with pytest.raises(InvalidArgument) as err:
        Backtester(FakeTracker(), catalog).optimize(dataclasses.replace(_req("k"), chunks=(part,)))
    assert err.value.field == "chunks[0].n_bars"
    assert not catalog.backtests and not catalog.optimizations
