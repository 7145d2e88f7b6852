"""Benchmark: AlphaSwarm's backtest engine against vectorbt's `Portfolio.from_orders`.

    python benchmarks/bench_engine.py [--repeats 5] [--cases 2520x500,5040x3000] [--seed 0]

Both engines run the same target weights on the same prices in the same
process, one after the other, so the ratio is measured under the same
machine load:

- prices: geometric random walks, daily business dates;
- targets: `long_short_topk` (top_k = N / 10 each side) of an AR(1)
  prediction (persistence 0.95), rebalanced every bar, execution lag 1,
  fees 0.001 + slippage 0.001;
- ours: `run_backtest` with the full trade ledger and the trading metrics;
- vectorbt: `Portfolio.from_orders(close, size=<targets at the fill bar>,
  size_type="targetpercent", cash_sharing=True, group_by=True,
  call_seq="auto", fees=0.002, init_cash=1e12, direction="both")` followed
  by `.value()` (the equity curve; no trade records, no stats). Its first
  call compiles with numba, so each engine is warmed up once before timing.

Reported: the median wall time of `--repeats` runs of each engine, the
speed-up (vectorbt / ours), the largest relative difference between the two
equity curves, and our peak memory (tracemalloc, which NumPy reports its
buffers to) against the size of the close matrix. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import functools
import gc
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine import EngineConfig, run_backtest, weights_from_signal

FEES, SLIPPAGE = 0.001, 0.001


def make_case(n_bars: int, n_syms: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, (n_bars, n_syms)), axis=0))
    noise = rng.normal(size=(n_bars, n_syms))
    signal = np.empty_like(noise)
    signal[0] = noise[0]
    phi = 0.95
    for t in range(1, n_bars):
        signal[t] = phi * signal[t - 1] + np.sqrt(1 - phi * phi) * noise[t]
    weights = weights_from_signal(signal, "long_short_topk", {"top_k": max(1, n_syms // 10)})
    dates = pd.bdate_range("2000-01-03", periods=n_bars)
    symbols = [f"S{i:04d}" for i in range(n_syms)]
    return {"close": close, "weights": weights, "dates": dates, "symbols": symbols}


def run_ours(case: dict[str, Any]) -> Any:
    return run_backtest(
        case["weights"],
        case["close"],
        dates=case["dates"],
        symbols=case["symbols"],
        config=EngineConfig(fees=FEES, slippage=SLIPPAGE, execution_lag=1),
    )


def vbt_inputs(case: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    close = pd.DataFrame(case["close"], index=case["dates"], columns=case["symbols"])
    size = np.full(case["weights"].shape, np.nan)
    size[1:] = case["weights"][:-1]  # execution lag 1: the order sits at the fill bar
    return close, pd.DataFrame(size, index=close.index, columns=close.columns)


def run_vbt(close: pd.DataFrame, size: pd.DataFrame) -> np.ndarray:
    import vectorbt as vbt

    pf = vbt.Portfolio.from_orders(
        close,
        size=size,
        size_type="targetpercent",
        cash_sharing=True,
        group_by=True,
        call_seq="auto",
        fees=FEES + SLIPPAGE,
        init_cash=1e12,
        direction="both",
        freq="1D",
    )
    return pf.value().to_numpy()


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        result = None
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), result


def peak_memory(fn: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    result = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del result
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default="2520x500,5040x3000", help="comma-separated TxN")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import vectorbt as vbt

    print(
        f"command: python benchmarks/bench_engine.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"vectorbt {vbt.__version__}, {platform.machine()}, repeats={args.repeats} (median)"
    )
    header = (
        "| T x N | trades | ours (s) | vectorbt (s) | speed-up | max rel. equity diff "
        "| our peak memory | peak / close bytes |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.cases.split(","):
        n_bars, n_syms = (int(v) for v in spec.lower().split("x"))
        case = make_case(n_bars, n_syms, args.seed)
        close_df, size_df = vbt_inputs(case)
        run_ours(case)  # warm-up (imports, allocator)
        run_vbt(close_df, size_df)  # warm-up: numba compilation
        repeats_vbt = args.repeats if n_bars * n_syms <= 2_000_000 else max(1, min(args.repeats, 3))
        t_ours, out = median_time(functools.partial(run_ours, case), args.repeats)
        t_vbt, value = median_time(functools.partial(run_vbt, close_df, size_df), repeats_vbt)
        diff = float(np.max(np.abs(out.equity / out.config.initial_capital - value / 1e12) / (value / 1e12)))
        n_trades = len(out.trades)
        del out, value
        peak = peak_memory(functools.partial(run_ours, case))
        close_bytes = case["close"].nbytes
        print(
            f"| {n_bars} x {n_syms} | {n_trades} | {t_ours:.3f} | {t_vbt:.3f} | {t_vbt / t_ours:.1f}x "
            f"| {diff:.1e} | {peak / 2**20:.0f} MiB | {peak / close_bytes:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
