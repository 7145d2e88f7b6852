"""Page load and render times of the Strategy Browser at real sizes, in Chromium.

    .venv/bin/python benchmarks/bench_browser.py                       # 10,000 runs; 3,000 symbols x 5,040 dates
    .venv/bin/python benchmarks/bench_browser.py --runs 2000 --symbols 500 --dates 1260 --repeats 3
    .venv/bin/python benchmarks/bench_browser.py --home /tmp/bench-browser   # seed once, measure again over it

Seeds an embedded catalog (SQLite, the `alphaswarm serve` default) through the persistence
repository: `--runs` finished alpha-backtest runs with their combined metrics, plus one run with a
backtest of `--dates` bars, `--trades` trades and a prediction audit of `--symbols` x `--dates`
cells. Then serves the gateway (uvicorn, the embedded stack) and drives Debian's Chromium with
Playwright:

* run list: from navigation to the first page of the table drawn (50 rows, sorted by the server
  over all runs), first load (the gateway reads every run into its index) and warm loads;
  then sorting by Sharpe (a click until the re-sorted rows are drawn);
* run page: from navigation to every chart drawn (equity, drawdown, rolling Sharpe, monthly
  heatmap, IC, IC decay, deciles, exposure, weights, MAE/MFE) and the ledger and audit tables
  filled. The first open of the fresh gateway reads the statistics the run stored on its MLflow
  parent run (`browser/run_page.npz`, computed once as the run does when it saves its audit);
  with `--no-stored-stats` (a run made before they were stored) it reads the audit
  (StreamPredictionAudit) and computes them. Later opens are served from the gateway's cache.

Times are wall-clock medians of `--repeats` fresh page loads (a new tab each, so the page's
JavaScript and the chart libraries load each time from the gateway).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
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

CHARTS = [
    "chart-equity",
    "chart-drawdown",
    "chart-rolling-sharpe",
    "chart-monthly",
    "chart-ic",
    "chart-ic-decay",
    "chart-deciles",
    "chart-exposure",
    "chart-weights",
    "chart-mae-mfe",
]


def _config() -> dict[str, Any]:
    from alphaswarm_common.config import AlphaBacktestConfig
    from tests.e2e.conftest import small_run

    doc = small_run(capture_predictions=True)
    return AlphaBacktestConfig.model_validate(doc).model_dump(mode="json")


def seed(repo: Any, args: argparse.Namespace, tracker: Any) -> tuple[str, dict[str, float]]:
    """Write the runs and the large run, with its MLflow parent run and, as the run itself does
    when it saves its audit, the run page's statistics on it (unless `--no-stored-stats`);
    (the large run's id, seconds per step)."""
    from alphaswarm_gateway.browser import stored
    from alphaswarm_persistence.repository import (
        AlphaBacktestRunRecord,
        BacktestResultRecord,
        PredictionAuditBatch,
        TradeRecord,
    )

    rng = np.random.default_rng(7)
    timings: dict[str, float] = {}
    config = _config()
    t0 = time.perf_counter()
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for i in range(args.runs):
        sharpe = float(rng.normal(0.3, 1.0))
        repo.create_alpha_backtest_run(
            AlphaBacktestRunRecord(
                run_name=f"bench-run-{i:05d}",
                state="succeeded",
                stage="completed",
                config=config,
                model_name=f"model-{i % 37}",
                model_version=str(1 + i % 9),
                combined_metrics={
                    "ml": {"ic_spearman": float(rng.normal(0.02, 0.02)), "icir": float(rng.normal(0.1, 0.1))},
                    "trading": {"sharpe": sharpe, "max_drawdown": -abs(float(rng.normal(0.2, 0.1)))},
                    "score": float(rng.normal(0.0, 1.0)),
                    "window": {"start": "2017-01-03", "end": "2018-12-31", "n_dates": 502},
                },
                started_at=base + dt.timedelta(minutes=i),
                finished_at=base + dt.timedelta(minutes=i, seconds=30),
                duration_seconds=30.0,
            )
        )
    timings["runs"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_dates, n_symbols = args.dates, args.symbols
    days = np.busday_offset(np.datetime64("2000-01-03"), np.arange(n_dates), roll="forward")
    dates = [str(d) for d in days]
    symbols = [f"S{i:04d}" for i in range(n_symbols)]
    rets = rng.normal(0.0003, 0.01, n_dates)
    equity = 10_000.0 * np.cumprod(1.0 + rets)
    drawdown = equity / np.maximum.accumulate(equity) - 1.0
    result = BacktestResultRecord(
        symbol="PORTFOLIO",
        strategy_type="alpha:long_short_topk",
        start_date=dt.date.fromisoformat(dates[0]),
        end_date=dt.date.fromisoformat(dates[-1]),
        initial_capital=10_000.0,
        metrics={"sharpe_ratio": float(rets.mean() / rets.std() * np.sqrt(252))},
        conventions={"periods_per_year": 252, "rf": 0.0},
        dates=[dt.date.fromisoformat(d) for d in dates],
        equity_curve=equity,
        drawdown_series=drawdown,
    )
    trades = []
    for k in range(args.trades):
        entry = int(rng.integers(0, n_dates - 10))
        trades.append(
            TradeRecord(
                trade_number=k + 1,
                direction="long" if k % 2 else "short",
                symbol=symbols[int(rng.integers(0, n_symbols))],
                entry_date=dt.date.fromisoformat(dates[entry]),
                entry_price=100.0,
                exit_date=dt.date.fromisoformat(dates[entry + 5]),
                exit_price=float(100 * (1 + rng.normal(0, 0.03))),
                position_size=10.0,
                pnl=float(rng.normal(0, 30)),
                pnl_percent=float(rng.normal(0, 0.03)),
                mae=-abs(float(rng.normal(0, 0.02))),
                mfe=abs(float(rng.normal(0, 0.02))),
                duration_bars=5,
                duration_days=7,
                exit_reason="rebalance",
                fees_paid=0.2,
                slippage_cost=0.2,
            )
        )
    backtest_id, _ = repo.save_backtest_result(result, trades)
    timings["backtest"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    experiment = tracker.ensure_experiment("bench-browser")
    parent = tracker.create_run(experiment, "bench-large-run", tags={})
    run, _ = repo.create_alpha_backtest_run(
        AlphaBacktestRunRecord(
            run_name="bench-large-run",
            state="succeeded",
            stage="completed",
            config=config,
            model_name="large-model",
            model_version="1",
            backtest_id=backtest_id,
            mlflow_parent_run_id=parent,
            combined_metrics={
                "ml": {"ic_spearman": 0.01, "icir": 0.1},
                "trading": {"sharpe": 0.5, "max_drawdown": float(drawdown.min())},
                "score": 0.1,
                "window": {"start": dates[0], "end": dates[-1], "n_dates": n_dates, "symbols": symbols},
            },
            started_at=base + dt.timedelta(days=30),
            finished_at=base + dt.timedelta(days=30, minutes=5),
            duration_seconds=300.0,
        )
    )
    prediction = rng.normal(size=(n_dates, n_symbols))
    realized = 0.01 * prediction * 0.05 + rng.normal(0, 0.01, (n_dates, n_symbols))
    target = np.where(np.abs(prediction) > 2.0, np.sign(prediction) / 100.0, 0.0)
    batch = PredictionAuditBatch(
        dates=dates,
        symbols=symbols,
        fields={
            "prediction": prediction,
            "realized_return": realized,
            "target_weight": target,
            "held_weight": target,
            "pnl_contribution": target * realized,
        },
    )
    rows = repo.save_prediction_audit(run.run_id, batch)
    del batch
    timings["audit"] = time.perf_counter() - t0
    timings["audit_rows"] = float(rows)
    if not args.no_stored_stats:
        t0 = time.perf_counter()
        fields = {
            "prediction": prediction,
            "realized": realized,
            "target": target,
            "held": target,
            "pnl": target * realized,
        }
        blob = stored.build(dates, symbols, fields, config)
        tracker.log_files(parent, {stored.ARTIFACT: blob})
        timings["stored"] = time.perf_counter() - t0
        timings["stored_bytes"] = float(len(blob))
    return str(run.run_id), timings


def _wait_run_page(page: Any) -> None:
    for chart in CHARTS:
        page.wait_for_selector(f"#{chart}[data-drawn='1']", timeout=600_000)
    page.wait_for_selector("#trades-table tbody tr", timeout=600_000)
    page.wait_for_selector("#run-body[data-drawn='1']", timeout=600_000)
    page.wait_for_selector("#audit-table tbody tr", timeout=600_000)


_SPLIT = """(sel) => {
  const at = [...document.querySelectorAll(sel)].map((e) => Number(e.dataset.at || 0));
  const api = performance.getEntriesByType("resource").filter((e) => {
    const path = new URL(e.name).pathname;
    return !path.startsWith("/ui/") && !path.includes("/stream");
  });
  return [Math.max(0, ...at), api.reduce((n, e) => n + (e.responseEnd - e.requestStart), 0), api.length,
          api.reduce((n, e) => n + (e.encodedBodySize || 0), 0)];
}"""


def _cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_load(context: Any, url: str, ready: Any, drawn: str = "", first: str = "") -> float:
    page = context.new_page()
    c0 = _cpu()
    start = time.perf_counter()
    page.goto(url)
    ready(page)
    took = time.perf_counter() - start
    cpu_ms = (_cpu() - c0) * 1000
    if drawn:
        page_ms, server_ms, n_api, api_bytes = page.evaluate(_SPLIT, drawn)
        first_ms = page.evaluate(_SPLIT, first)[0] if first else page_ms
        SPLITS.setdefault(drawn, []).append((page_ms, server_ms, cpu_ms, first_ms))
        REQUESTS[drawn] = (n_api, api_bytes)
    page.close()
    return took


SPLITS: dict[str, list[tuple[float, float, float, float]]] = {}
"""Per selector: (page clock when the last element drew, time spent waiting on the gateway's API
answers summed, CPU of this process (the gateway and the Playwright client) during the load,
page clock when the first screen drew) of each load timed with it."""
REQUESTS: dict[str, tuple[int, int]] = {}
"""Per selector: (API requests, their bytes) of the last load timed with it (the stream excluded)."""
FIRST_SCREEN = "#chart-equity"
"""The run page's first screen: header, metrics and the equity chart (drawn last of the three)."""
RUN_PAGE_DRAWN = ",".join([*(f"#{c}" for c in CHARTS), "#trades-table", "#audit-table"])


def _cold_run_data(stack: Any, run_id: str) -> tuple[float, float]:
    """(wall, process CPU) seconds the gateway takes to read a run's page data and make its series
    JSON with nothing cached (what a run not read at start costs on its first open)."""
    import asyncio
    import resource

    from alphaswarm_gateway.browser.api import DEFAULT_POINTS, series_json
    from alphaswarm_gateway.browser.data import RunCache

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    gw = stack._gateway
    c0, t0 = cpu(), time.perf_counter()
    run = asyncio.run_coroutine_threadsafe(gw.get_run(run_id=run_id), stack._loop).result()
    data = asyncio.run_coroutine_threadsafe(RunCache().get(gw, run), stack._loop).result()
    series_json(data, DEFAULT_POINTS)
    return time.perf_counter() - t0, cpu() - c0


def _cold_scatter(stack: Any, run_id: str) -> tuple[float, float]:
    """(wall, process CPU) seconds the gateway takes, with nothing cached, to read the whole ledger
    (keyset pages) and sample the MAE / MFE scatter: what the scatter's own request costs once."""
    import asyncio
    import resource

    from alphaswarm_gateway.browser.api import _scatter
    from alphaswarm_gateway.browser.data import RunCache

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    gw = stack._gateway
    run = asyncio.run_coroutine_threadsafe(gw.get_run(run_id=run_id), stack._loop).result()
    data = asyncio.run_coroutine_threadsafe(RunCache().get(gw, run), stack._loop).result()
    c0, t0 = cpu(), time.perf_counter()
    asyncio.run_coroutine_threadsafe(_scatter(gw, data), stack._loop).result()
    return time.perf_counter() - t0, cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--symbols", type=int, default=3_000)
    ap.add_argument("--dates", type=int, default=5_040)
    ap.add_argument("--trades", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--no-stored-stats",
        action="store_true",
        help="seed the large run without its stored page statistics (a run made before they were stored)",
    )
    ap.add_argument("--chromium", default=os.environ.get("ALPHASWARM_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument(
        "--home",
        type=Path,
        help="keep the seeded store in this directory and, when it already holds one seeded with the "
        "same sizes, measure over it without seeding again (a fresh gateway each time)",
    )
    args = ap.parse_args()
    if args.home is not None:
        args.home.mkdir(parents=True, exist_ok=True)
        _bench(args, args.home)
        return
    home = Path(tempfile.mkdtemp(prefix="alphaswarm-bench-browser-"))
    try:
        _bench(args, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _bench(args: argparse.Namespace, home: Path) -> None:
    from playwright.sync_api import sync_playwright

    from alphaswarm.embedded import EmbeddedStack
    from alphaswarm_common.settings import Settings
    from alphaswarm_persistence.db import Database
    from alphaswarm_persistence.repository import CatalogRepository
    from tests.e2e.conftest import serving

    settings = Settings(
        home=home,
        ml_prediction_audit_enabled=True,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
        grpc_port=0,
    )
    marker = home / "bench-seed.json"
    sizes = {"runs": args.runs, "symbols": args.symbols, "dates": args.dates, "trades": args.trades}
    sizes["stored"] = not args.no_stored_stats
    with EmbeddedStack(settings) as stack:
        previous = json.loads(marker.read_text()) if marker.is_file() else None
        if previous is not None and previous["sizes"] == sizes:
            run_id, seeded = previous["run_id"], previous["seeded"]
            print(f"store seeded earlier in {home} (run {run_id})", flush=True)
        else:
            db = Database(stack.settings.catalog_url())
            run_id, seeded = seed(CatalogRepository(db), args, stack.tracker)
            db.dispose()
            marker.write_text(json.dumps({"sizes": sizes, "run_id": run_id, "seeded": seeded}))
        print(
            f"seeded {args.runs:,} runs in {seeded['runs']:.1f} s; backtest of {args.dates:,} bars and "
            f"{args.trades:,} trades in {seeded['backtest']:.1f} s; audit of {int(seeded['audit_rows']):,} rows "
            f"in {seeded['audit']:.1f} s",
            flush=True,
        )
        if "stored" in seeded:
            print(
                f"run page statistics computed and stored (once, as the run does when it saves its audit) "
                f"in {seeded['stored']:.1f} s, {seeded['stored_bytes'] / 1024:.0f} KiB",
                flush=True,
            )
        with (
            serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url),
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(
                executable_path=args.chromium,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
            )
            context = browser.new_context(viewport={"width": 1400, "height": 1000})

            def runs_ready(page: Any) -> None:
                page.wait_for_function(
                    "() => document.querySelectorAll('#runs-table tbody tr').length === 50", timeout=600_000
                )

            list_first = _timed_load(context, f"{url}/#/runs", runs_ready, "#runs-table")
            first_split = SPLITS.pop("#runs-table")[0]
            list_warm = [
                _timed_load(context, f"{url}/#/runs", runs_ready, "#runs-table") for _ in range(args.repeats)
            ]
            api = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                httpx.get(
                    f"{url}/browser/runs", params={"sort": "sharpe", "page_size": 50}, timeout=600
                ).raise_for_status()
                api.append(time.perf_counter() - t0)
            sorts = []
            page = context.new_page()
            page.goto(f"{url}/#/runs")
            runs_ready(page)
            for _ in range(args.repeats):
                first = page.eval_on_selector("#runs-table tbody tr", "e => e.dataset.key")
                t0 = time.perf_counter()
                page.click("#runs-table th[data-key=sharpe]")
                page.wait_for_function(
                    "(k) => { const r = document.querySelector('#runs-table tbody tr');"
                    " return r && r.dataset.key !== k && !document.querySelector('#runs-table').hasAttribute('aria-busy'); }",
                    arg=first,
                    timeout=600_000,
                )
                sorts.append(time.perf_counter() - t0)
            page.close()

            run_url = f"{url}/#/runs/{run_id}"
            run_first = _timed_load(context, run_url, _wait_run_page, RUN_PAGE_DRAWN, FIRST_SCREEN)
            run_first_split = SPLITS.pop(RUN_PAGE_DRAWN)[0]
            run_warm = [
                _timed_load(context, run_url, _wait_run_page, RUN_PAGE_DRAWN, FIRST_SCREEN)
                for _ in range(args.repeats)
            ]
            above_fold = [
                _timed_load(
                    context,
                    run_url,
                    lambda p: p.wait_for_selector("#chart-equity[data-drawn='1']", timeout=600_000),
                )
                for _ in range(args.repeats)
            ]
            series = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                resp = httpx.get(f"{url}/browser/runs/{run_id}/series", params={"points": 800}, timeout=600)
                resp.raise_for_status()
                series.append(time.perf_counter() - t0)
            payload = len(resp.content)
            page = context.new_page()
            page.goto(run_url)
            _wait_run_page(page)
            points = {c: int(page.get_attribute(f"#{c}", "data-points") or 0) for c in CHARTS}
            draw_ms = {c: float(page.get_attribute(f"#{c}", "data-ms") or 0) for c in CHARTS}
            page.close()
            browser.close()
        cold_data = _cold_run_data(stack, run_id)
        cold_scatter = _cold_scatter(stack, run_id)

    med = statistics.median
    cmd = "python benchmarks/bench_browser.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print(f"\n$ {cmd.strip()}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"run list: {args.runs + 1:,} runs, 50 rows a page")

    def split(row: tuple[float, float, float, float]) -> str:
        page_ms, server_ms, cpu_ms, first_ms = row
        return (
            f"(page clock: first screen drawn {first_ms:.0f} ms, everything drawn {page_ms:.0f} ms; "
            f"gateway {server_ms:.0f} ms, gateway process CPU {cpu_ms:.0f} ms)"
        )

    def med_split(key: str) -> tuple[float, float, float, float]:
        rows = SPLITS[key]
        return (
            med(r[0] for r in rows),
            med(r[1] for r in rows),
            med(r[2] for r in rows),
            med(r[3] for r in rows),
        )

    print(
        f"  first load after the gateway starts                     {list_first * 1000:8.0f} ms {split(first_split)}"
    )
    print(
        f"  load, warm (median of {args.repeats})                         {med(list_warm) * 1000:8.0f} ms "
        f"{split(med_split('#runs-table'))}"
    )
    n_api, api_bytes = REQUESTS["#runs-table"]
    print(
        f"  API requests of a load: {n_api} ({api_bytes / 1024:.1f} KiB: the session and one page of 50 runs)"
    )
    print(f"  GET /browser/runs sorted by Sharpe (median)            {med(api) * 1000:8.0f} ms")
    print(f"  click a column to re-sort, rows redrawn (median)        {med(sorts) * 1000:8.0f} ms")
    print(
        f"run page: {args.symbols:,} symbols x {args.dates:,} dates ({int(seeded['audit_rows']):,} audit rows), {args.trades:,} trades"
    )
    how = (
        "audit streamed, statistics computed"
        if args.no_stored_stats
        else "a fresh gateway, which read the newest runs' page data at start"
    )
    print(f"  first open ({how})  {run_first * 1000:8.0f} ms {split(run_first_split)}")
    print(
        f"  open, warm: 10 charts + ledger + audit (median of {args.repeats})  {med(run_warm) * 1000:8.0f} ms "
        f"{split(med_split(RUN_PAGE_DRAWN))}"
    )
    n_api, api_bytes = REQUESTS[RUN_PAGE_DRAWN]
    print(f"  API requests of an open: {n_api} ({api_bytes / 1024:.0f} KiB)")
    print(f"  open, warm: header, metrics and the equity chart (median)  {med(above_fold) * 1000:8.0f} ms")
    print(
        f"  gateway, nothing cached: run, backtest, first ledger page, stored statistics, series JSON "
        f"{cold_data[0] * 1000:.0f} ms ({cold_data[1] * 1000:.0f} ms CPU)"
    )
    print(
        f"  gateway, nothing cached: the scatter's sample (whole ledger by keyset pages, sampled) "
        f"{cold_scatter[0] * 1000:.0f} ms ({cold_scatter[1] * 1000:.0f} ms CPU)"
    )
    print(
        f"  GET /browser/runs/{{id}}/series?points=800 (median)      {med(series) * 1000:8.0f} ms, {payload / 1024:.0f} KiB"
    )
    print(
        f"  points drawn: {sum(points.values()):,} ({', '.join(f'{k[6:]} {v}' for k, v in points.items())})"
    )
    print(
        f"  drawing the 10 charts in the page: {sum(draw_ms.values()):.0f} ms "
        f"({', '.join(f'{k[6:]} {v:.0f}' for k, v in draw_ms.items())})"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
