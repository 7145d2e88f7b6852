"""Benchmark: the Monte Carlo block bootstrap (`alphaswarm_backtester.engine.montecarlo.monte_carlo`).

    python benchmarks/bench_montecarlo.py [--repeats 5] [--cases 10000x2520] [--block-length 21] [--seed 0]

For each case `PATHSxBARS` and each scheme (`stationary`, `circular`), one
call of `monte_carlo` resamples a Student-t(4) return series of BARS bars
into PATHS paths and computes the total return, max drawdown and Sharpe of
every path plus the distributions (5/25/50/75/95 percentiles, mean, std).

Reported: the median and minimum wall time of `--repeats` calls (after one
warm-up), the throughput in path-bars per second, and the peak memory of one
call (tracemalloc, which NumPy reports its buffers to) against the size of
the full `(PATHS, BARS)` float64 path matrix the computation never holds at
once (it works in chunks of paths). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

from alphaswarm_backtester.engine.montecarlo import monte_carlo


def make_returns(n_bars: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, n_bars) * 0.012 / np.sqrt(2.0) + 0.0004


def timed(returns: np.ndarray, n_paths: int, method: str, block: int, seed: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        monte_carlo(returns, n_simulations=n_paths, block_length=block, method=method, seed=seed)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t0)
    return times


def peak_memory(returns: np.ndarray, n_paths: int, method: str, block: int, seed: int) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = monte_carlo(returns, n_simulations=n_paths, block_length=block, method=method, seed=seed)  # type: ignore[arg-type]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="10000x2520", help="comma-separated PATHSxBARS")
    parser.add_argument("--block-length", type=int, default=21)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(
        f"command: python benchmarks/bench_montecarlo.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cpus, block_length={args.block_length}, repeats={args.repeats}"
    )
    print(
        "| paths x bars | method | median (s) | min (s) | path-bars / s | peak memory | peak / path matrix |"
    )
    print("|---|---|---|---|---|---|---|")
    for spec in args.cases.split(","):
        n_paths, n_bars = (int(v) for v in spec.lower().split("x"))
        returns = make_returns(n_bars, args.seed)
        for method in ("stationary", "circular"):
            monte_carlo(returns, n_simulations=min(n_paths, 100), block_length=args.block_length, seed=1)
            times = timed(returns, n_paths, method, args.block_length, args.seed, args.repeats)
            peak, result = peak_memory(returns, n_paths, method, args.block_length, args.seed)
            median = float(np.median(times))
            full = n_paths * n_bars * 8
            print(
                f"| {n_paths} x {n_bars} | {method} | {median:.3f} | {min(times):.3f} "
                f"| {n_paths * n_bars / median:.2e} | {peak / 2**20:.0f} MiB | {peak / full:.2f} |"
            )
            del result
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
