"""Benchmark: writing fresh long arrays, from `np.empty` and from `alphaswarm_common.buffers.empty`.

    python benchmarks/bench_buffers.py [--bars 1000000] [--arrays 8] [--repeats 15]

Each repeat allocates `--arrays` float64 arrays of `--bars` values, fills
them (the first touch of their pages) and keeps them until the repeat ends,
as a backtest keeps its per-bar outputs; then drops them. Reported: the
median wall time of a repeat and the minor page faults it took
(`getrusage`), for NumPy's own allocation and for the huge-page aligned one.
Both run in the same process, alternating, so they see the same machine
load. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import sys
import time
from collections.abc import Callable

import numpy as np

from alphaswarm_common.buffers import empty


def repeat_once(alloc: Callable[[int], np.ndarray], bars: int, arrays: int) -> tuple[float, int]:
    gc.collect()
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    kept = []
    for _ in range(arrays):
        arr = alloc(bars)
        arr.fill(1.0)
        kept.append(arr)
    elapsed = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    del kept
    return elapsed, faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--arrays", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    engines: dict[str, Callable[[int], np.ndarray]] = {
        "np.empty": np.empty,
        "buffers.empty (2 MiB aligned)": empty,
    }
    for alloc in engines.values():  # warm-up
        repeat_once(alloc, args.bars, args.arrays)
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, alloc in engines.items():
            runs[name].append(repeat_once(alloc, args.bars, args.arrays))
    print(f"# command: python benchmarks/bench_buffers.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}")
    print(
        f"\n{args.arrays} fresh arrays of {args.bars:,} float64 values, written once and kept (median of {args.repeats})\n"
    )
    print("| allocation | median (ms) | minor page faults |")
    print("|---|---|---|")
    for name, results in runs.items():
        times, faults = zip(*results, strict=True)
        print(f"| {name} | {np.median(times) * 1e3:.2f} | {int(np.median(faults))} |")


if __name__ == "__main__":
    main()
