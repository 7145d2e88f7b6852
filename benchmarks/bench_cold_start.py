"""Cold start of the embedded workflow, and how much of it is compiling the engine's numba kernels.

    python benchmarks/bench_cold_start.py [--repeats 3] [--config configs/ml/alpha_backtest/ridge_alpha_backtest.yaml]

Each case runs `alphaswarm run CONFIG --output json` (what `make run` does)
in a fresh process with an empty store folder (`--home` a new temporary
folder: both SQLite schemas, the gRPC servers, the run), `--repeats` times:

1. warmed cache: the kernels were compiled into numba's cache at install
   (`alphaswarm warmup`, run here once first, which also builds the MLflow
   store's schema template that a new store copies), so the run loads them;
2. empty cache: `NUMBA_CACHE_DIR` points to a new empty folder for each run,
   so the run compiles every kernel signature it uses (what a cold start
   would cost without the install step).

The compilation share of a cold start is the difference of the two. Wall
time (median) and CPU time of the child (user + system, median; the
machine's load shows in wall time, much less in CPU time) are printed with
the load average. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(config: str, numba_cache: str | None) -> tuple[float, float, float]:
    """(wall seconds, child CPU seconds, saga seconds) of one cold `alphaswarm run`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_", "NUMBA_CACHE"))}
    if numba_cache is not None:
        env["NUMBA_CACHE_DIR"] = numba_cache
    with tempfile.TemporaryDirectory(prefix="alphaswarm-cold-") as home:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [str(BIN / "alphaswarm"), "run", config, "--output", "json", "--home", home],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"alphaswarm run failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, float(json.loads(proc.stdout)["duration_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/ml/alpha_backtest/ridge_alpha_backtest.yaml")
    args = parser.parse_args()
    load_before = os.getloadavg()
    subprocess.run([str(BIN / "alphaswarm"), "warmup"], check=True, cwd=ROOT, capture_output=True)
    rows = {}
    for label, fresh in (("warmed cache (after `alphaswarm warmup`)", False), ("empty numba cache", True)):
        runs = []
        for _ in range(args.repeats):
            if fresh:
                with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
                    runs.append(_run(args.config, cache))
            else:
                runs.append(_run(args.config, None))
        rows[label] = [statistics.median(r[i] for r in runs) for i in range(3)]
    print(f"# command: python benchmarks/bench_cold_start.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"# python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.1f}' for x in load_before)} before, "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} after, repeats={args.repeats} (median)"
    )
    print()
    print("| cold `alphaswarm run` (fresh process, empty store) | wall (s) | CPU (s) | saga (s) |")
    print("|---|---|---|---|")
    for label, (wall, cpu, saga) in rows.items():
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {saga:.2f} |")
    warm, cold = rows["warmed cache (after `alphaswarm warmup`)"], rows["empty numba cache"]
    print()
    print(
        f"compilation of the kernels a run uses: {cold[0] - warm[0]:.2f} s wall, {cold[1] - warm[1]:.2f} s CPU "
        f"(empty cache minus warmed cache); with the warmed cache the kernels are loaded, not compiled."
    )


if __name__ == "__main__":
    main()
