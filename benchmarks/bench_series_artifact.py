"""Benchmark: logging a backtest's series to MLflow as data (Parquet + PNG) against JSON lists.

    python benchmarks/bench_series_artifact.py [--bars 1000000] [--symbols 1] [--repeats 3]

One backtest of `--bars` minute bars (a long-only SMA 10/50 cross on a
geometric random walk, `--symbols` symbols, capital split equally) is run
once with the engine; then logged to a run of an MLflow store like the
product's default (SQLite tracking, a local artifact folder), each repeat a
new run:

- `json`: the former artifact, `Tracker.log_dict` of
  `{"dates": [...], "equity": [...], "drawdown": [...]}` as `equity_curve.json`
  (the lists built from the arrays as the backtester did);
- `parquet+png`: what the backtester logs now, `series_artifacts(out)`
  (`series.parquet`: date, equity, drawdown, returns and every symbol's
  weight; `equity.png`) uploaded with `Tracker.log_files`; the time of each
  part (Parquet bytes, PNG bytes, upload) is shown as well.

Reported: the median wall time of `--repeats` runs, the bytes written, and
for Parquet the time to read the file back into pandas. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np
import pandas as pd

from alphaswarm_backtester.engine import EngineConfig, run_backtest
from alphaswarm_backtester.series import series_artifacts, series_parquet, series_png
from alphaswarm_common.tracking import Tracker


def make_output(n_bars: int, n_syms: int, seed: int) -> Any:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, (n_bars, n_syms)), axis=0))
    fast = pd.DataFrame(close).rolling(10).mean().to_numpy()
    slow = pd.DataFrame(close).rolling(50).mean().to_numpy()
    weights = np.where(fast > slow, 1.0 / n_syms, 0.0)
    dates = np.datetime64("2000-01-03T00:00") + np.arange(
        n_bars
    )  # minute bars: 1M of them fit in datetime64[ns]
    return run_backtest(
        weights,
        close,
        dates=dates,
        symbols=[f"S{i:03d}" for i in range(n_syms)],
        config=EngineConfig(execution_lag=1, fees=0.001, slippage=0.0005),
    )


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return median(times), result


def log_json(out: Any, tracker: Tracker, experiment: str) -> str:
    run_id = tracker.create_run(experiment, "backtest")
    dates = [str(d) for d in np.asarray(out.dates).astype("datetime64[D]")]
    tracker.log_dict(
        run_id,
        {
            "dates": dates,
            "equity": [float(x) for x in out.equity],
            "drawdown": [float(x) for x in out.drawdown],
        },
        "equity_curve.json",
    )
    tracker.end_run(run_id)
    return run_id


def log_data(out: Any, tracker: Tracker, experiment: str) -> str:
    run_id = tracker.create_run(experiment, "backtest")
    tracker.log_files(run_id, series_artifacts(out))
    tracker.end_run(run_id)
    return run_id


def _artifact_bytes(root: Path, names: tuple[str, ...]) -> int:
    """The bytes of one run's artifacts `names` (every run logs the same files)."""
    return sum(next(root.rglob(name)).stat().st_size for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = make_output(args.bars, args.symbols, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The product's default store: SQLite tracking, artifacts in a local folder (set up untimed).
        tracker = Tracker(f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "artifacts").as_uri())
        experiment = tracker.ensure_experiment("bench-series")
        log_json(out, tracker, experiment)  # warm MLflow's artifact code paths once
        log_data(out, tracker, experiment)
        json_s, _ = _timed(lambda: log_json(out, tracker, experiment), args.repeats)
        data_s, _ = _timed(lambda: log_data(out, tracker, experiment), args.repeats)
        json_bytes = _artifact_bytes(root / "artifacts", ("equity_curve.json",))
        data_bytes = _artifact_bytes(root / "artifacts", ("series.parquet", "equity.png"))
    parquet_s, parquet = _timed(lambda: series_parquet(out), args.repeats)
    png_s, png = _timed(lambda: series_png(out), args.repeats)
    read_s, frame = _timed(lambda: pd.read_parquet(io.BytesIO(parquet)), args.repeats)
    assert np.array_equal(frame["equity"].to_numpy(), out.equity)  # the file holds the exact values

    print(f"Command: python benchmarks/bench_series_artifact.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, {platform.machine()}, "
        f"bars={args.bars}, symbols={args.symbols}, repeats={args.repeats}"
    )
    print("| artifact | median (s) | bytes | what |")
    print("|---|---|---|---|")
    print(
        f"| equity_curve.json (before) | {json_s:.3f} | {json_bytes:,} | dates, equity, drawdown as JSON lists |"
    )
    print(
        f"| series.parquet + equity.png (now) | {data_s:.3f} | {data_bytes:,} | "
        "date, equity, drawdown, returns, weights; a plot |"
    )
    print(f"| of which series.parquet bytes | {parquet_s:.3f} | {len(parquet):,} | LZ4 Parquet |")
    print(f"| of which equity.png bytes | {png_s:.3f} | {len(png):,} | Agg, thinned to min/max per bucket |")
    print(f"| read series.parquet back (pandas) | {read_s:.3f} | | |")
    print(f"speed-up: {json_s / data_s:.1f}x, size: {json_bytes / data_bytes:.1f}x smaller")


if __name__ == "__main__":
    main()
