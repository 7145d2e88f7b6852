"""Load and render times of the Strategy Browser's catalog views at real sizes, in Chromium.

    .venv/bin/python benchmarks/bench_catalog_views.py                  # 10,000 backtests, 10 x 5,040 dates
    .venv/bin/python benchmarks/bench_catalog_views.py --backtests 2000 --dates 1260 --repeats 3

Seeds an embedded catalog (SQLite, the `alphaswarm serve` default) through the persistence
repository: `--backtests` backtests on one dataset (fingerprint, Sharpe, moments: what the
leaderboard reads), `--compared` of them with equity curves of `--dates` bars, and an
optimization of `--grid` x `--grid` parameter sets. Then serves the gateway (uvicorn over the
embedded stack) and measures, as medians of `--repeats`:

* the REST views: the leaderboard of the dataset (its backtests read with one indexed filter of
  the catalog, `dataset_fingerprint`; its first call on the fresh gateway also alone), the
  compare view of `--compared` curves downsampled to 800 dates, the optimization heatmap, the
  Monte Carlo fan (1,000 paths over `--dates` bars, 300 steps), the catalog's first page;
* the pages in Chromium, from navigation to the chart drawn (a fresh tab each: the page's
  JavaScript and the chart libraries load each time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FINGERPRINT = "ab" * 32


def seed(repo: Any, args: argparse.Namespace) -> tuple[list[str], str, float]:
    """The compared backtests' ids, the optimization's backtest id, seconds spent."""
    from alphaswarm_persistence.repository import BacktestResultRecord, OptimizationResultRecord

    rng = np.random.default_rng(3)
    t0 = time.perf_counter()
    days = np.busday_offset(np.datetime64("2000-01-03"), np.arange(args.dates), roll="forward")
    dates = [dt.date.fromisoformat(str(d)) for d in days]
    compared: list[str] = []
    for i in range(args.backtests):
        r = rng.normal(0.0003, 0.01, args.dates if i < args.compared else 8)
        metrics = {
            "sharpe": float(r.mean() / r.std(ddof=1) * np.sqrt(252)),
            "total_return": float(np.prod(1 + r) - 1),
            "max_drawdown": -abs(float(rng.normal(0.2, 0.05))),
            "skewness": float(rng.normal(0, 0.3)),
            "kurtosis": float(3 + abs(rng.normal(1, 0.5))),
            "n_periods": float(args.dates),
        }
        record = BacktestResultRecord(
            symbol=f"S{i % 500:03d}",
            strategy_type="sma_cross",
            start_date=dates[0],
            end_date=dates[-1],
            initial_capital=10_000.0,
            parameters={
                "strategy": {
                    "type": "sma_cross",
                    "params": {"fast_period": 5 + i % 20, "slow_period": 30 + i % 50},
                },
                "capital_per_symbol": 1.0,
                "dataset_fingerprint": FINGERPRINT,
            },
            metrics=metrics,
            conventions={"periods_per_year": 252, "rf": 0.0},
        )
        if i < args.compared:
            equity = 10_000.0 * np.cumprod(1 + r)
            record.dates = dates
            record.equity_curve = equity
            record.drawdown_series = equity / np.maximum.accumulate(equity) - 1
        bid, _ = repo.save_backtest_result(record, [])
        if i < args.compared:
            compared.append(str(bid))
    best, _ = repo.save_backtest_result(
        BacktestResultRecord(
            symbol="AAPL",
            strategy_type="sma_cross",
            start_date=dates[0],
            end_date=dates[-1],
            parameters={
                "strategy": {"type": "sma_cross", "params": {"fast_period": 5, "slow_period": 30}},
                "capital_per_symbol": 1.0,
                "dataset_fingerprint": FINGERPRINT,
                "optimization": {"objective": "sharpe", "method": "grid", "n_trials": args.grid**2},
            },
            metrics={"sharpe": 1.0, "skewness": 0.0, "kurtosis": 3.5, "n_periods": float(args.dates)},
            conventions={"periods_per_year": 252},
        ),
        [],
    )
    rows = []
    k = 0
    for a in range(args.grid):
        for b in range(args.grid):
            k += 1
            rows.append(
                OptimizationResultRecord(
                    backtest_id=best,
                    parameter_set=k,
                    parameters={"fast_period": 5 + a, "slow_period": 30 + 5 * b},
                    objective_function="sharpe",
                    sharpe_ratio=float(rng.normal(0.5, 0.3)),
                    p_value=float(rng.uniform(0, 1)),
                    rank=k,
                )
            )
    repo.save_optimization_results(rows)
    return compared, str(best), time.perf_counter() - t0


def _load(context: Any, url: str, selector: str) -> tuple[float, float]:
    """(seconds from navigation to the chart drawn, milliseconds the chart's draw call took)."""
    page = context.new_page()
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(f"{selector}[data-drawn='1']", timeout=600_000)
    took = time.perf_counter() - t0
    draw_ms = float(page.get_attribute(selector, "data-ms") or 0)
    page.close()
    return took, draw_ms


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _get(url: str, path: str, **params: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    resp = httpx.get(url + path, params=params, timeout=600)
    resp.raise_for_status()
    return time.perf_counter() - t0, len(resp.content)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backtests", type=int, default=10_000)
    ap.add_argument("--compared", type=int, default=10)
    ap.add_argument("--dates", type=int, default=5_040)
    ap.add_argument("--grid", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chromium", default=os.environ.get("ALPHASWARM_CHROMIUM", "/usr/bin/chromium"))
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from alphaswarm.embedded import EmbeddedStack
    from alphaswarm_common.settings import Settings
    from alphaswarm_persistence.db import Database
    from alphaswarm_persistence.repository import CatalogRepository
    from tests.e2e.conftest import serving

    home = Path(tempfile.mkdtemp(prefix="alphaswarm-bench-catalog-"))
    settings = Settings(
        home=home, database_url=None, mlflow_tracking_uri=None, nats_url=None, gateway_addr=None, grpc_port=0
    )
    med = statistics.median
    api: dict[str, tuple[list[float], int]] = {}
    pages: dict[str, list[tuple[float, float]]] = {}
    with EmbeddedStack(settings) as stack:
        db = Database(stack.settings.catalog_url())
        compared, best, seeded = seed(CatalogRepository(db), args)
        db.dispose()
        print(
            f"seeded {args.backtests + 1:,} backtests and {args.grid**2} optimization sets in {seeded:.1f} s"
        )
        with (
            serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url),
            sync_playwright() as pw,
        ):
            calls = {
                "leaderboard": (f"/catalog-views/leaderboard/{FINGERPRINT}", {}),
                "compare": ("/catalog-views/compare", {"backtest_id": compared, "points": 800}),
                "heatmap": (f"/catalog-views/optimizations/{best}/heatmap", {}),
                "monte_carlo": (
                    f"/catalog-views/monte-carlo/{compared[0]}",
                    {"n_simulations": 1000, "points": 300},
                ),
                "catalog_page": ("/backtests", {"page_size": 25}),
            }
            # the leaderboard's first call on the fresh gateway, wall time and CPU of the process
            # (gateway and catalog run in it; the HTTP client's share is small)
            c0 = _cpu()
            first_took, _ = _get(url, calls["leaderboard"][0])
            first_cpu = _cpu() - c0
            for name, (path, params) in calls.items():
                times, size = [], 0
                for _ in range(args.repeats):
                    took, size = _get(url, path, **params)
                    times.append(took)
                api[name] = (times, size)
            browser = pw.chromium.launch(
                executable_path=args.chromium,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            views = {
                "leaderboard": (f"#/leaderboard/{FINGERPRINT}", "#leaderboard-chart"),
                "compare": (f"#/compare?ids={','.join(compared)}", "#compare-chart"),
                "heatmap": (f"#/optimizations/{best}", "#heatmap-chart"),
                "monte_carlo": (f"#/monte-carlo/{compared[0]}", "#mc-fan"),
            }
            for name, (frag, selector) in views.items():
                pages[name] = [_load(context, f"{url}/{frag}", selector) for _ in range(args.repeats)]
            browser.close()

    cmd = "python benchmarks/bench_catalog_views.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\n$ {cmd.strip()}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"catalog: {args.backtests + 1:,} backtests on one dataset; {args.compared} compared curves of "
        f"{args.dates:,} dates; optimization of {args.grid**2} sets"
    )
    print(
        f"REST leaderboard, first call on a fresh gateway: {first_took * 1000:.0f} ms "
        f"({first_cpu * 1000:.0f} ms CPU of the gateway + catalog process)"
    )
    print(f"REST (median of {args.repeats} further calls)")
    for name, (times, size) in api.items():
        print(f"  {name:<14} {med(times) * 1000:8.0f} ms  {size / 1024:8.0f} KiB")
    print(
        f"page in Chromium, navigation to chart drawn; of which the chart's draw call (median of {args.repeats})"
    )
    for name, loads in pages.items():
        total = med(t for t, _ in loads)
        draw = med(d for _, d in loads)
        print(f"  {name:<14} {total * 1000:8.0f} ms  {draw:8.0f} ms")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
