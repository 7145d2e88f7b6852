"""Tearsheets: one self-contained HTML page per backtest (charts, metrics with units, config, trades).

- `from_catalog(record, trades, run=..., comparisons=...)` gathers a catalog
  backtest into a `TearsheetData`; `render_tearsheet(data)` draws the page
  (`alphaswarm report`, `GET /backtests/{id}/tearsheet.html`).
- `log_backtest_tearsheet(tracker, run_id, ...)` is what the backtester calls
  on its MLflow `backtest` run: it logs `tearsheet/comparisons.json` (the
  benchmark, buy-and-hold and signal diagnostics the catalog does not keep)
  and `tearsheet/tearsheet.html`.
- `TEARSHEET_ARTIFACT`, `COMPARISONS_ARTIFACT`: those artifact paths.

The page loads nothing (inline PNGs and CSS); see `reporting.html`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from alphaswarm_common import chart_worker
from alphaswarm_common.reporting.data import (
    AlphaDiagnostics,
    TearsheetData,
    alpha_diagnostics,
    alpha_run_id_from_notes,
    buy_and_hold_equity,
    compute_comparisons,
    from_catalog,
    make_config,
    trade_row,
)
from alphaswarm_common.reporting.html import (
    METRIC_FORMATS,
    config_rows,
    format_metric,
    render_tearsheet,
    verdict,
)

__all__ = [
    "COMPARISONS_ARTIFACT",
    "METRIC_FORMATS",
    "TEARSHEET_ARTIFACT",
    "AlphaDiagnostics",
    "TearsheetData",
    "alpha_diagnostics",
    "alpha_run_id_from_notes",
    "build_tearsheet",
    "buy_and_hold_equity",
    "compute_comparisons",
    "config_rows",
    "format_metric",
    "from_catalog",
    "log_backtest_tearsheet",
    "make_config",
    "read_comparisons",
    "render_tearsheet",
    "trade_row",
    "verdict",
]

log = logging.getLogger(__name__)

TEARSHEET_ARTIFACT = "tearsheet/tearsheet.html"
COMPARISONS_ARTIFACT = "tearsheet/comparisons.json"


def log_backtest_tearsheet(
    tracker: Any,
    run_id: str,
    *,
    out: Any,
    trades: Sequence[Any],
    close: Any,
    strategy_type: str,
    strategy_params: Mapping[str, Any],
    backtest: Mapping[str, Any],
    benchmark_returns: Any = None,
    signal: Any = None,
) -> None:
    """Log the comparisons and the tearsheet of a finished backtest on its MLflow run.

    `out` is the engine's `BacktestOutput` (dates, equity, drawdown, metrics,
    symbols, config); `trades` its `Trade` messages; `close` the `(T, N)`
    closes it traded on; `signal` the `(T, N)` signal of an alpha backtest.
    A failure to draw is logged and leaves the backtest's own artifacts as
    they are: the tearsheet is a view of the result, not part of it.
    """
    try:
        cfg = out.config
        comparisons = compute_comparisons(
            dates=out.dates,
            initial_capital=float(cfg.initial_capital),
            close=close,
            benchmark_returns=benchmark_returns,
            signal=signal,
            execution_lag=int(cfg.execution_lag),
            fees=float(cfg.fees),
            slippage=float(cfg.slippage),
        )
        metrics = out.metrics
        symbols = list(out.symbols)
        data = TearsheetData(
            backtest_id=f"of MLflow run {run_id}",
            kind="alpha" if signal is not None else "rule",
            title=f"{strategy_type} on {symbols[0] if len(symbols) == 1 else f'{len(symbols)} symbols'}",
            dates=np.asarray(out.dates).astype("datetime64[D]"),
            equity=np.asarray(out.equity, dtype=np.float64),
            drawdown=np.asarray(out.drawdown, dtype=np.float64),
            initial_capital=float(cfg.initial_capital),
            metrics=dict(metrics.values),
            metric_reasons=dict(metrics.reasons),
            conventions=dict(metrics.conventions),
            config=make_config(
                strategy_type=strategy_type,
                strategy_params=strategy_params,
                backtest=backtest,
                symbols=symbols,
                dates=np.asarray(out.dates),
                fees=float(cfg.fees),
                slippage=float(cfg.slippage),
                initial_capital=float(cfg.initial_capital),
            ),
            trades=[trade_row(t) for t in trades],
            links={"mlflow_backtest_run_id": run_id},
        )
        data.merge_comparisons(comparisons)
        page = chart_worker.submit(
            render_tearsheet, data
        )  # the charts drawn while the comparisons are logged
        tracker.log_dict(run_id, comparisons, COMPARISONS_ARTIFACT)
        tracker.log_text(run_id, page.result(), TEARSHEET_ARTIFACT)
    except Exception:  # a chart that cannot be drawn must not fail the backtest it describes
        log.exception("could not log the tearsheet of MLflow run %s", run_id)


def read_comparisons(tracker: Any, mlflow_run_id: str) -> dict[str, Any] | None:
    """`tearsheet/comparisons.json` of an MLflow `backtest` run, or None when the run has none."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from alphaswarm_common.errors import NotFound

    tmp = tempfile.mkdtemp(prefix="alphaswarm-tearsheet-")
    try:
        tracker.artifact_entry(mlflow_run_id, COMPARISONS_ARTIFACT)
        local = Path(tracker.download_run_artifact(mlflow_run_id, COMPARISONS_ARTIFACT, tmp))
        doc = json.loads(local.read_text())
        return doc if isinstance(doc, dict) else None
    except NotFound:
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_tearsheet(response: Any, *, run: Any = None, comparisons: Mapping[str, Any] | None = None) -> str:
    """The page of a `GetBacktestResultResponse` (asked with `include_trades`), its alpha-backtest run
    and the comparisons logged on that run's MLflow `backtest` run, when known."""
    return render_tearsheet(from_catalog(response.result, response.trades, run=run, comparisons=comparisons))
