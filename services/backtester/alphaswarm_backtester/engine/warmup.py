"""Compile every numba kernel signature the engine uses, so that no run pays for compilation.

The kernels (`kernels`, the ledger pass of `trades`, the moments pass
of `alphaswarm_common.metrics.trading`, and the feature loops of
`alphaswarm_common.features._compiled`) are `numba.njit(cache=True)`: the
first call of each signature compiles it (seconds) and writes the machine
code to numba's cache; every later process loads it from there
(milliseconds). `warm_up()` makes those first calls on tiny inputs that
take every path whose argument types differ (a target-weight panel, one
symbol, K parameter sets, open fills, stops with and without high / low,
order masks, a minimum fee; writable and read-only series for the
metrics). `make install` runs it through `alphaswarm warmup`.

Where the cache lives: numba writes it to `__pycache__` beside each module
when that folder is writable, else to a per-user folder
(`~/.cache/numba`); `NUMBA_CACHE_DIR` overrides both (set it when the
package is installed read-only and the home folder is not writable either,
e.g. in a container: `NUMBA_CACHE_DIR=/var/cache/alphaswarm/numba`).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine.backtest import run_backtest
from alphaswarm_backtester.engine.config import EngineConfig
from alphaswarm_backtester.engine.optimize import evaluate_sides, optimize
from alphaswarm_backtester.engine.rules import run_rule_backtest
from alphaswarm_common.features._compiled import warm_up as warm_up_features
from alphaswarm_common.metrics import trading_metrics

__all__ = ["warm_up"]


def _configs() -> list[EngineConfig]:
    return [
        EngineConfig(),
        EngineConfig(fill_price="open", rebalance_every=2, rf=0.02, min_fee=1.0),
        EngineConfig(stop_loss=0.02, take_profit=0.03),
        EngineConfig(fill_price="open", stop_loss=0.02, max_gross_leverage=0.5),
    ]


def warm_up() -> dict[str, Any]:
    """Compile (or load from the cache) every kernel signature; returns what ran and how long it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    n_bars, n_syms = 64, 3
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (n_bars, n_syms)), axis=0))
    opens = close * (1.0 + rng.normal(0.0, 0.002, close.shape))
    high = np.maximum(close, opens) * 1.01
    low = np.minimum(close, opens) * 0.99
    dates = pd.bdate_range("2020-01-01", periods=n_bars)
    weights = rng.uniform(-0.3, 0.3, (n_bars, n_syms))
    mask = rng.random((n_bars, n_syms)) < 0.5
    sides = rng.integers(-1, 2, (4, n_bars, n_syms)).astype(np.int8)
    runs = 0
    for cfg in _configs():
        for with_range in (False, True):
            extra = {"high": high, "low": low} if with_range else {}
            run_backtest(
                weights, close, dates=dates, symbols=["A", "B", "C"], config=cfg, open=opens, **extra
            )
            run_backtest(
                weights[:, 0],
                close[:, 0],
                dates=dates,
                symbols=["A"],
                config=cfg,
                open=opens[:, 0],
                **{k: v[:, 0] for k, v in extra.items()},
            )
            evaluate_sides(
                sides, close, dates=dates, symbols=["A", "B", "C"], config=cfg, open=opens, **extra
            )
            evaluate_sides(
                sides[:, :, 0],
                close[:, 0],
                dates=dates,
                symbols=["A"],
                config=cfg,
                open=opens[:, 0],
                **{k: v[:, 0] for k, v in extra.items()},
            )
            runs += 4
        run_backtest(
            weights, close, dates=dates, symbols=["A", "B", "C"], config=cfg, open=opens, order_mask=mask
        )
        runs += 1
    # the rules hand the engine read-only prices: the signatures of read-only arrays
    frozen_close, frozen_open = close.copy(), opens.copy()
    frozen_close.flags.writeable = frozen_open.flags.writeable = False
    for cfg in _configs()[:2]:
        for cols in (slice(None), slice(0, 1)):
            run_rule_backtest(
                "sma_cross",
                {"fast_period": 2, "slow_period": 5},
                close=frozen_close[:, cols],
                open=frozen_open[:, cols],
                dates=dates,
                symbols=["A", "B", "C"][cols],
                config=cfg,
            )
            runs += 1
    # the compiled cross rule, on the indicators an optimization keeps (read-only)
    optimize(
        "sma_cross",
        close=frozen_close[:, 0],
        dates=dates,
        symbols=["A"],
        grid={"fast_period": [2, 3], "slow_period": [5]},
    )
    for name in ("ema_cross", "macd"):
        run_rule_backtest(name, {}, close=frozen_close[:, 0], dates=dates, symbols=["A"])
    runs += 3
    returns = rng.normal(0.0, 0.01, n_bars)
    frozen = returns.copy()
    frozen.flags.writeable = False
    for series in (returns, frozen):
        trading_metrics(series, turnover=np.abs(series), traded=np.abs(series))
        runs += 1
    runs += warm_up_features()["runs"]
    return {"runs": runs, "seconds": time.perf_counter() - started}
