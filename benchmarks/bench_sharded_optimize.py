"""Benchmark: a parameter search evaluated in chunks and merged, against one process.

    python benchmarks/bench_sharded_optimize.py [--bars 5040] [--chunk 250] [--workers 2] [--repeats 3]
        [--is-bars 504] [--oos-bars 126]

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

Then a walk-forward test split by windows (`--is-bars` in sample, `--oos-bars`
out of sample, rolling) over a 20 x 20 grid (400 sets): the one-process
`walk_forward`, against each window's in-sample search evaluated as one chunk
(`evaluate_parameter_sets` on the window's training rows, one after the other
and over `--workers` processes) and merged (`merge_evaluations` per window, then
`walk_forward(searches=...)`: the optimum's in- and out-of-sample backtests and
the stitched account).

Merged results are checked equal to the one-process results before timing.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from alphaswarm.backtester.v1 import backtester_service_pb2 as pb
from alphaswarm_backtester.engine.optimize import optimize
from alphaswarm_backtester.engine.walkforward import walk_forward, window_bounds
from alphaswarm_backtester.sharding import (
    build_search,
    chunk_bounds,
    evaluate_parameter_sets,
    merge_evaluations,
    search_size,
)
from alphaswarm_backtester.sharding_proto import chunk_from_proto, chunk_to_proto

GRID = {"fast_period": list(range(2, 102, 2)), "slow_period": list(range(20, 420, 10))}
WF_GRID = {"fast_period": list(range(2, 42, 2)), "slow_period": list(range(20, 220, 10))}
_DATA: dict[str, Any] = {}
# spawned workers: the kernels may run OpenMP threads, which a fork() cannot carry safely
_SPAWN = multiprocessing.get_context("spawn")


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


def _window_wire(rows: tuple[int, int, int]) -> bytes:
    """One walk-forward window's whole in-sample search, in its wire form (`index`, train rows)."""
    _index, lo, hi = rows
    n = search_size("grid", WF_GRID, 0)
    chunk = evaluate_parameter_sets("sma_cross", first=0, last=n, grid=WF_GRID, start=lo, stop=hi, **_DATA)
    return bytes(chunk_to_proto(chunk).SerializeToString())


def _walk_forward(args: Any) -> None:
    n = search_size("grid", WF_GRID, 0)
    _sets, skipped, where = build_search(
        "sma_cross", grid=WF_GRID, space=None, method="grid", n_samples=0, seed=0, objective="sharpe"
    )
    frame = {"in_sample_bars": args.is_bars, "out_of_sample_bars": args.oos_bars}
    windows = [(i, b[0], b[1]) for i, b in enumerate(window_bounds(args.bars, args.is_bars, args.oos_bars))]

    def merged(wires: Any) -> Any:
        searches = {
            i: merge_evaluations(
                "sma_cross",
                [chunk_from_proto(pb.EvaluateParameterSetsResponse.FromString(w))],
                skipped=skipped,
                n_sets=n,
                objective="sharpe",
                method="grid",
                where=where,
            )
            for (i, _, _), w in zip(windows, wires, strict=True)
        }
        return walk_forward("sma_cross", grid=WF_GRID, searches=searches, **frame, **_DATA)

    def same(a: Any, b: Any) -> None:
        assert [(w.best_params, w.performance_ratio, w.degradation_factor) for w in a.windows] == [
            (w.best_params, w.performance_ratio, w.degradation_factor) for w in b.windows
        ]
        assert np.array_equal(a.stitched.returns, b.stitched.returns)

    t_one, ref = _median(lambda: walk_forward("sma_cross", grid=WF_GRID, **frame, **_DATA), args.repeats)
    t_seq, seq = _median(lambda: merged([_window_wire(w) for w in windows]), args.repeats)
    same(seq, ref)
    with ProcessPoolExecutor(
        args.workers, mp_context=_SPAWN, initializer=_init, initargs=(args.bars,)
    ) as pool:
        list(pool.map(_window_wire, windows[: args.workers]))  # warm the workers up
        t_par, par = _median(lambda: merged(list(pool.map(_window_wire, windows))), args.repeats)
    same(par, ref)
    print(f"\nwalk-forward: {len(windows)} windows of {args.is_bars} + {args.oos_bars} bars, {n} sets each")
    print("| case | seconds |\n|---|---|")
    print(f"| one process (engine.walk_forward) | {t_one:.3f} |")
    print(f"| window chunks one after the other + merge | {t_seq:.3f} |")
    print(f"| window chunks on {args.workers} processes + merge | {t_par:.3f} |")


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
    ap.add_argument("--is-bars", type=int, default=504)
    ap.add_argument("--oos-bars", type=int, default=126)
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
    with ProcessPoolExecutor(
        args.workers, mp_context=_SPAWN, initializer=_init, initargs=(args.bars,)
    ) as pool:
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
    _walk_forward(args)


if __name__ == "__main__":
    main()
