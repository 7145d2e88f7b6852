"""The account kernel reads a read-only input in place: no copy, the caller's array unchanged."""

from __future__ import annotations

import numpy as np

from alphaswarm_backtester.engine import kernels
from alphaswarm_backtester.engine.config import EngineConfig


def test_read_only_input_is_read_in_place_and_left_read_only() -> None:
    close = np.linspace(10.0, 20.0, 40).reshape(20, 2)
    close.flags.writeable = False
    passed = kernels._plain(close)
    assert np.shares_memory(passed, close)
    assert not close.flags.writeable

    weights = np.full((20, 2), 0.5)
    weights.flags.writeable = False
    before = close.copy()
    ro = kernels.simulate(weights, close, config=EngineConfig(fees=0.001), periods_per_year=252.0)
    rw = kernels.simulate(
        weights.copy(), close.copy(), config=EngineConfig(fees=0.001), periods_per_year=252.0
    )
    np.testing.assert_array_equal(close, before)
    np.testing.assert_array_equal(ro.equity, rw.equity)


def test_non_float_input_is_converted() -> None:
    close = np.arange(1, 7, dtype=np.int64).reshape(3, 2)
    passed = kernels._plain(close)
    assert passed.dtype == np.float64 and passed.flags.c_contiguous and passed.flags.writeable
    np.testing.assert_array_equal(passed, close)
