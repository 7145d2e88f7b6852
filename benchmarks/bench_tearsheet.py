"""Seconds and peak memory of a tearsheet: the comparisons the backtester computes and the page.

Two steps, timed separately on a synthetic panel (dates x symbols, 3% of
closes missing, a signal with some information):

- `compute_comparisons`: buy-and-hold of the universe, the benchmark curve,
  IC / RankIC per date, IC decay (1, 5, 10, 20 bars) and the decile returns
  gross and net of costs: what an alpha backtest adds to its MLflow run;
- `render_tearsheet`: the seven PNG charts and the page, from the catalog's
  view of the backtest (series, metrics, 2,000 trades).

    .venv/bin/python benchmarks/bench_tearsheet.py                          # 500 and 3000 symbols x 5040 dates
    .venv/bin/python benchmarks/bench_tearsheet.py --sizes 200x1260 --repeats 1

Times are wall-clock medians after a warm-up (imports and matplotlib's font
cache are paid once per process, a few seconds). Peak memory is
`tracemalloc`'s peak of Python allocations (NumPy included) in one more
call, reported against the size of one (dates x symbols) float64 matrix.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _panel(t: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dates = (np.datetime64("2000-01-03") + np.arange(t)).astype("datetime64[D]")
    r = rng.normal(0.0003, 0.015, (t, n))
    close = 40 * np.exp(np.cumsum(r, axis=0))
    close[rng.random((t, n)) < 0.03] = np.nan
    nxt = np.vstack([r[2:], np.zeros((2, n))])
    signal = nxt + rng.normal(0, 0.05, (t, n))
    return dates, close, signal


def _record(dates: np.ndarray, returns: np.ndarray, n_trades: int) -> tuple[object, list[object]]:
    from alphaswarm.common.v1 import resources_pb2
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm_common.metrics import trading_metrics
    from alphaswarm_common.protoconv import array_to_proto, metricset_to_proto, struct_from_dict

    equity = 10_000 * np.cumprod(1 + returns)
    ms = trading_metrics(returns, periods_per_year=252, initial_capital=10_000)
    rec = ppb.BacktestRecord(
        backtest_id="00000000-0000-4000-8000-000000000000",
        symbol="PORTFOLIO",
        strategy_type="alpha:long_short_topk",
        initial_capital=10_000,
        fees=0.001,
        slippage=0.001,
        dates=[str(d) for d in dates],
    )
    rec.equity_curve.CopyFrom(array_to_proto(equity))
    rec.drawdown_series.CopyFrom(array_to_proto(equity / np.maximum.accumulate(equity) - 1))
    rec.metrics.CopyFrom(metricset_to_proto(ms.values, ms.reasons, ms.conventions))
    rec.parameters.CopyFrom(struct_from_dict({"strategy": {"params": {"top_k": 10}}, "backtest": {}}))
    trades = [
        resources_pb2.Trade(
            trade_number=i,
            symbol=f"S{i % 50}",
            direction="long",
            entry_date=str(dates[0]),
            exit_date=str(dates[-1]),
            pnl=float(i % 7 - 3),
            duration_bars=5,
            exit_reason="signal",
        )
        for i in range(1, n_trades + 1)
    ]
    return rec, trades


def _timed(fn: object, repeats: int) -> tuple[list[float], int, object]:
    """Wall times of `repeats` calls, then one more call under tracemalloc for the peak (tracemalloc
    slows allocation-heavy Python such as matplotlib several times, so it never runs while timing)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()  # type: ignore[operator]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return times, peak, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500x5040,3000x5040", help="SYMBOLSxDATES, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/tearsheet.md"))
    args = parser.parse_args()

    from alphaswarm_common.reporting import compute_comparisons, from_catalog, render_tearsheet

    # Warm up once on a tiny panel: imports, matplotlib's font cache.
    d0, c0, s0 = _panel(60, 12)
    r0, t0 = _record(d0, np.zeros(60), 3)
    render_tearsheet(
        from_catalog(
            r0, t0, comparisons=compute_comparisons(dates=d0, initial_capital=1.0, close=c0, signal=s0)
        )
    )  # type: ignore[arg-type]

    rows = []
    for size in args.sizes.split(","):
        n, t = (int(x) for x in size.split("x"))
        dates, close, signal = _panel(t, n)
        bench = np.r_[0.0, np.diff(close[:, 0]) / close[:-1, 0]]
        bench = np.nan_to_num(bench)

        def comparisons(
            dates: np.ndarray = dates,
            close: np.ndarray = close,
            signal: np.ndarray = signal,
            bench: np.ndarray = bench,
        ) -> dict[str, object]:
            return compute_comparisons(
                dates=dates,
                initial_capital=10_000,
                close=close,
                benchmark_returns=bench,
                signal=signal,
                execution_lag=1,
                fees=0.001,
                slippage=0.001,
            )

        times, peak, doc = _timed(comparisons, args.repeats)
        matrix = t * n * 8
        rows.append((f"{n} x {t}", "compute_comparisons", times, peak, peak / matrix))
        returns = np.random.default_rng(1).normal(0.0003, 0.01, t)
        rec, trades = _record(dates, returns, 2000)

        def page(rec: object = rec, trades: list[object] = trades, doc: object = doc) -> str:
            return render_tearsheet(from_catalog(rec, trades, comparisons=doc))  # type: ignore[arg-type]

        times, peak, html = _timed(page, args.repeats)
        rows.append(
            (f"{n} x {t}", f"render_tearsheet ({len(html) / 1e6:.2f} MB page)", times, peak, peak / matrix)
        )
        print(
            rows[-2][:2], statistics.median(rows[-2][2]), rows[-1][:2], statistics.median(times), flush=True
        )

    import matplotlib

    lines = [
        f"Command: python benchmarks/bench_tearsheet.py {shlex.join(sys.argv[1:])}".rstrip(),
        f"python {platform.python_version()}, numpy {np.__version__}, matplotlib {matplotlib.__version__}, "
        f"{platform.machine()}, repeats={args.repeats}",
        "| symbols x dates | step | median (s) | min (s) | peak memory | peak / (T x N float64) |",
        "|---|---|---|---|---|---|",
    ]
    for size, step, times, peak, ratio in rows:
        lines.append(
            f"| {size} | {step} | {statistics.median(times):.2f} | {min(times):.2f} | "
            f"{peak / 2**20:.0f} MiB | {ratio:.1f} |"
        )
    Path(args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
