"""The compiled ledger pass (no stops) against the vectorised cell path of the ledger.

`_compiled_trades` (one pass over the share rows, running sums per symbol)
and `_block_trades` over `_cells_with_stops` (the (symbol, step) cells with
two steps per bar, sums by `bincount`, extremes by `reduceat`) are two
independent computations of the same ledger; on a run without stop exits
they must agree on every column of every trade.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.kernels import simulate
from alphaswarm_backtester.engine.trades import _block_trades, _cells_with_stops, _compiled_trades


def _case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_bars, n_syms = int(rng.integers(2, 40)), int(rng.integers(1, 5))
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_syms)), axis=0))
    if seed % 3 == 0:
        close[rng.random((n_bars, n_syms)) < 0.1] = (
            np.nan
        )  # missing bars: untradable, marked at the last close
    opens = close * (1.0 + rng.normal(0.0, 0.003, close.shape))
    high = np.maximum(close, opens) * 1.01
    low = np.minimum(close, opens) * 0.99
    # entries, exits, resizes and flips
    weights = rng.choice([-0.3, 0.0, 0.2, 0.5], size=close.shape) * (rng.random(close.shape) < 0.7)
    return weights, close, opens, high, low


@pytest.mark.parametrize("seed", range(12))
def test_compiled_ledger_matches_the_vectorised_cells(seed: int) -> None:
    weights, close, opens, high, low = _case(seed)
    n_syms = close.shape[1]
    checked = 0
    for fill_price, with_range, min_fee in itertools.product(["close", "open"], [False, True], [0.0, 1.0]):
        cfg = EngineConfig(
            fill_price=fill_price,
            execution_lag=1,
            fees=0.001,
            slippage=0.0005,
            min_fee=min_fee,
            initial_capital=1000.0,
        )
        hi, lo = (high, low) if with_range else (None, None)
        sim = simulate(weights, close, config=cfg, periods_per_year=252.0, open=opens, high=hi, low=lo)
        by_open = fill_price == "open"
        fill_px = opens if by_open else close
        compiled = _compiled_trades(sim, fill_px, hi, lo, close, by_open, cfg)
        cells = _cells_with_stops(sim, fill_px, hi, lo, close, by_open, 0, n_syms)
        vectorised = None if cells is None else _block_trades(cells, cfg)
        if compiled is None or vectorised is None:
            assert compiled is None and vectorised is None
            continue
        assert compiled.keys() == vectorised.keys()
        for key, got in compiled.items():
            want = vectorised[key]
            if np.asarray(got).dtype.kind == "f":
                np.testing.assert_array_equal(got, want, err_msg=key)  # NaN where NaN, every value equal
            else:
                assert np.array_equal(got, want), key
        checked += 1
    assert checked > 0
