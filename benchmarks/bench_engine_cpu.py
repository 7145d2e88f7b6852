"""Benchmark: CPU seconds of our three headline cases, for comparing engine versions on a shared machine.

Wall times on a loaded machine move 2-3x from run to run; the process CPU
time of our side does not. Run it once per source tree with that tree's
code first on the path:

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=<tree>/libs/alphaswarm_common:<tree>/libs/alphaswarm:<tree>/services/backtester \\
        .venv/bin/python benchmarks/bench_engine_cpu.py

Cases (the inputs of `bench_rules.py` and `bench_engine.py`): SMA cross
(10, 20) on 1,000,000 bars with ledger and metrics; `optimize` over 100 SMA
pairs on 100,000 bars (CPU of every thread); target weights 5040 x 3000.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TQDM_DISABLE", "1")

import bench_engine as be
import bench_rules as br
import numpy as np

import alphaswarm_backtester
from alphaswarm_backtester.engine import optimize, run_rule_backtest


def cpu(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    fn()  # warm-up: imports, numba cache, allocator
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times), float(np.median(times))


def main() -> int:
    single = br.prices(1_000_000, 0)
    batch = br.prices(100_000, 1)
    case = be.make_case(5040, 3000, 0)
    a = cpu(
        lambda: run_rule_backtest(
            "sma_cross",
            {"fast_period": 10, "slow_period": 20},
            close=single.to_numpy(),
            dates=single.index,
            symbols=["X"],
            config=br.config(),
        ),
        5,
    )
    b = cpu(
        lambda: optimize(
            "sma_cross",
            close=batch.to_numpy(),
            dates=batch.index,
            symbols=["X"],
            grid={"fast_period": br.FAST, "slow_period": br.SLOW},
            config=br.config(),
        ),
        5,
    )
    e = cpu(lambda: be.run_ours(case), 3)
    print(f"engine: {Path(alphaswarm_backtester.__file__).parent}")
    print("| case | CPU s (min) | CPU s (median) |\n|---|---|---|")
    print(f"| SMA cross 1,000,000 bars | {a[0]:.3f} | {a[1]:.3f} |")
    print(f"| 100 SMA pairs x 100,000 bars | {b[0]:.3f} | {b[1]:.3f} |")
    print(f"| target weights 5040 x 3000 | {e[0]:.3f} | {e[1]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
