"""Benchmark: a parameter search evaluated in chunks and merged, against one process.

    python benchmarks/bench_sharded_optimize.py [--bars 5040] [--chunk 250] [--workers 2] [--repeats 3]

A 50 x 40 `sma_cross` grid (2,000 sets; fast 2..100, slow 20..410) on `--bars`
daily bars of one symbol (a seeded geometric random walk). Reported, as the
median of `--repeats` runs:

- one process: `engine.optimize` over every set (evaluation, ranking, DSR);
- chunks in one process: `evaluate_parameter_sets` per chunk of `--chunk`
  sets one after the other, then `merge_evaluations` (the overhead of
  splitting: every chunk rebuilds the search and the positions' indicators);
- the merge alone (ranks and p-values over the 2,000 sets);
- chunks over `--workers` processes (`ProcessPoolExecutor`, the chunks'
  evaluation in parallel, each chunk sent back in its wire form and merged in
  the parent): the wall time a set of
  backtester replicas would take without the network and price loading;
- the wire size of a chunk (`EvaluateParameterSetsResponse`, bytes per set).

The merged result is checked equal to the one-process result before timing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm_backtester.engine.optimize import optimize
from alphaswarm_backtester.sharding import (
    build_search,
    chunk_bounds,
    evaluate_parameter_sets,
    merge_evaluations,
    search_size,
)
from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto

GRID = {"fast_period": list(range(2, 102, 2)), "slow_period": list(range(20, 420, 10))}
_DATA: dict[str, Any] = {}


def _prices(n_bars: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.015, n_bars)))
    return {"close": close, "dates": pd.bdate_range("2000-01-03", periods=n_bars), "symbols": ["X"]}


def _init(n_bars: int) -> None:
    _DATA.update(_prices(n_bars))


def _chunk(bounds: tuple[int, int]) -> Any:
    return evaluate_parameter_sets("sma_cross", first=bounds[0], last=bounds[1], grid=GRID, **_DATA)


def _chunk_wire(bounds: tuple[int, int]) -> bytes:
    return bytes(chunk_to_proto(_chunk(bounds)).SerializeToString())


def _median(fn: Any, repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bars", type=int, default=5040)
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    _init(args.bars)
    n = search_size("grid", GRID, 0)
    bounds = chunk_bounds(n, args.chunk)
    _sets, skipped, where = build_search(
        "sma_cross", grid=GRID, space=None, method="grid", n_samples=0, seed=0, objective="sharpe"
    )

    def merge(parts: list[Any]) -> Any:
        return merge_evaluations(
            "sma_cross", parts, skipped=skipped, n_sets=n, objective="sharpe", method="grid", where=where
        )

    t_one, ref = _median(lambda: optimize("sma_cross", grid=GRID, **_DATA), args.repeats)
    t_seq, parts = _median(lambda: [_chunk(b) for b in bounds], args.repeats)
    t_merge, merged = _median(lambda: merge(parts), args.repeats)
    assert [(t.parameter_set, t.rank, t.p_value) for t in merged.trials] == [
        (t.parameter_set, t.rank, t.p_value) for t in ref.trials
    ]
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.bars,)) as pool:
        list(pool.map(_chunk_wire, bounds[: args.workers]))  # warm the workers up

        def parallel() -> Any:
            wires = pool.map(_chunk_wire, bounds)
            return merge([chunk_from_proto(pb.EvaluateParameterSetsResponse.FromString(w)) for w in wires])

        t_par, par = _median(parallel, args.repeats)
    assert [(t.parameter_set, t.rank, t.p_value) for t in par.trials] == [
        (t.parameter_set, t.rank, t.p_value) for t in ref.trials
    ]
    wire = sum(len(chunk_to_proto(p).SerializeToString()) for p in parts)
    print(f"{n} sets ({len(ref.trials)} valid), {args.bars} bars, {len(bounds)} chunks of {args.chunk}")
    print("| case | seconds |\n|---|---|")
    print(f"| one process (engine.optimize) | {t_one:.3f} |")
    print(f"| chunks one after the other + merge | {t_seq + t_merge:.3f} |")
    print(f"| merge alone | {t_merge:.4f} |")
    print(f"| chunks on {args.workers} processes + merge | {t_par:.3f} |")
    print(f"wire: {wire / max(1, len(ref.trials)):.0f} bytes per evaluated set ({wire / 1e6:.2f} MB in all)")


if __name__ == "__main__":
    main()
