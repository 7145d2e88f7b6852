"""REST views of the catalog for the Strategy Browser's charts (`/catalog-views`).

Read-only routes (role viewer) that answer what a chart draws, computed on
the server so the page stays small on real sizes (`catalog_math` holds the
math; each route reads the catalog through `PersistenceService` and calls it):

* `GET /catalog-views/compare?backtest_id=...` (1 to 10 ids, `points`): the
  equity curves aligned on their dates and downsampled, with their metrics
  lined up (`metrics[name][k]` is the value of backtest k);
* `GET /catalog-views/optimizations/{backtest_id}/heatmap?x=&y=`: the
  optimization rows of a backtest as a grid over two parameters, each cell's
  Sharpe and Deflated-Sharpe p-value;
* `GET /catalog-views/walk-forward/{parent_backtest_id}`: in-sample vs
  out-of-sample Sharpe per window with performance ratio and degradation;
* `GET /catalog-views/monte-carlo/{backtest_id}`: the fan of block-bootstrap
  equity paths (percentiles per step), drawn as the Monte Carlo job draws them;
* `GET /catalog-views/portfolios/{portfolio_backtest_id}`: equity, weights
  over time (downsampled) with concentration per date, and the stored
  diversification measures;
* `GET /catalog-views/datasets` and `GET /catalog-views/leaderboard/{fingerprint}`:
  every backtest run on the same data (by the dataset fingerprint) with its
  Sharpe and its Deflated Sharpe given every trial ever run on that data.

Trials of a dataset (the leaderboard): a backtest row is one trial, except
the best row of an optimization, which stands for all the parameter sets the
optimization evaluated (their Sharpes are its rows), and the stitched parent
of a walk-forward test, which stands for the in-sample evaluations of every
window (windows x grid sets, whose Sharpes are not kept: they count in N, not
in the variance). A row's dataset is the `dataset_fingerprint` the backtester
records in its parameters, which the catalog keeps in an indexed column of its
own: the leaderboard reads the rows of its dataset with one indexed query
(`ListDatasetTrials`).
Rows without one are counted as `unfingerprinted` by the datasets listing and
left out. That listing groups the whole catalog; its grouping is reused while the
catalog's newest row is unchanged, for at most `INDEX_TTL_SECONDS` (`_DatasetIndex`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Query
from google.protobuf.message import Message

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_common.grpc_client import aio_call
from alphaswarm_common.protoconv import (
    array_from_proto,
    metricset_from_proto,
    struct_to_dict,
)
from alphaswarm_gateway.browser import catalog_math as cv
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.deps import GatewayDep

__all__ = ["COMPARE_METRICS", "router"]

router = APIRouter(prefix="/catalog-views", tags=["catalog-views"])

COMPARE_METRICS: tuple[str, ...] = (
    "total_return",
    "annualized_return",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "volatility",
    "win_rate",
    "profit_factor",
    "total_trades",
    "probabilistic_sharpe",
)
"""The metrics the compare view lines up, in order."""

MAX_COMPARED = 10
_PAGE = 500

Points = Annotated[
    int, Query(ge=2, le=20_000, description="At most this many dates per series (evenly strided).")
]
_BacktestId = Annotated[uuid.UUID, Path(description="The backtest id (UUID).")]


# --------------------------------------------------------------------------- catalog reads


async def _call(gw: Gateway, method: str, request: Message) -> Any:
    return await aio_call(
        getattr(gw.clients.persistence, method),
        request,
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )


async def _backtest(gw: Gateway, backtest_id: str) -> ppb.BacktestRecord:
    reply = await _call(gw, "GetBacktestResult", ppb.GetBacktestResultRequest(backtest_id=backtest_id))
    return reply.result


def _opt(msg: Message, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _metrics(msg: Message) -> tuple[dict[str, float | None], dict[str, str], dict[str, Any]]:
    if not msg.HasField("metrics"):
        return {}, {}, {}
    values, reasons, conventions = metricset_from_proto(msg.metrics)  # type: ignore[attr-defined]
    clean = {k: (v if v is None or math.isfinite(v) else None) for k, v in values.items()}
    return clean, dict(reasons), dict(conventions)


def _params(msg: Message) -> dict[str, Any]:
    return struct_to_dict(msg.parameters) if msg.HasField("parameters") else {}  # type: ignore[attr-defined]


def _summary(msg: ppb.BacktestRecord) -> dict[str, Any]:
    params = _params(msg)
    strategy = params.get("strategy") if isinstance(params.get("strategy"), dict) else None
    return {
        "backtest_id": msg.backtest_id,
        "symbol": msg.symbol,
        "strategy_type": msg.strategy_type,
        "strategy": strategy,
        "start_date": msg.start_date,
        "end_date": msg.end_date,
        "initial_capital": msg.initial_capital,
        "status": msg.status,
        "notes": msg.notes or None,
    }


async def _optimization_rows(gw: Gateway, backtest_id: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        reply = await _call(
            gw,
            "ListOptimizationResults",
            ppb.ListOptimizationResultsRequest(backtest_id=backtest_id, page_size=_PAGE, page_token=token),
        )
        for r in reply.results:
            rows.append(
                {
                    "optimization_id": r.optimization_id,
                    "parameter_set": r.parameter_set,
                    "parameters": struct_to_dict(r.parameters) if r.HasField("parameters") else {},
                    "objective_function": r.objective_function or None,
                    "objective_value": _opt(r, "objective_value"),
                    "total_return": _opt(r, "total_return"),
                    "sharpe_ratio": _opt(r, "sharpe_ratio"),
                    "max_drawdown": _opt(r, "max_drawdown"),
                    "total_trades": _opt(r, "total_trades"),
                    "rank": _opt(r, "rank"),
                    "is_statistically_significant": r.is_statistically_significant,
                    "p_value": _opt(r, "p_value"),
                }
            )
        token = reply.next_page_token
        if not token:
            return rows


# --------------------------------------------------------------------------- compare


@router.get(
    "/compare",
    operation_id="compare_backtest_series",
    summary="Equity curves of up to 10 backtests aligned by date and downsampled, with their metrics",
)
async def compare_series(
    gw: GatewayDep,
    backtest_id: Annotated[
        list[uuid.UUID], Query(description="The backtests to compare (1 to 10; repeat the parameter).")
    ],
    points: Points = 500,
) -> dict[str, Any]:
    """`metrics[name][k]` is the metric of `backtests[k]` (null when undefined, reason in `metric_reasons`)."""
    ids = list(dict.fromkeys(str(b) for b in backtest_id))
    if not 1 <= len(ids) <= MAX_COMPARED:
        raise InvalidArgument(
            f"give 1 to {MAX_COMPARED} distinct backtest ids, got {len(ids)}", field="backtest_id"
        )
    records = await asyncio.gather(*(_backtest(gw, b) for b in ids))
    series = []
    for rec in records:
        equity = (
            array_from_proto(rec.equity_curve, field="equity_curve")
            if rec.HasField("equity_curve")
            else np.full(len(rec.dates), np.nan)
        )
        series.append((list(rec.dates), equity))
    aligned = cv.align_equity(series, points)
    metrics: dict[str, list[float | None]] = {m: [] for m in COMPARE_METRICS}
    reasons: list[dict[str, str]] = []
    conventions: list[dict[str, Any]] = []
    for rec in records:
        values, why, conv = _metrics(rec)
        for m in COMPARE_METRICS:
            metrics[m].append(values.get(m))
        reasons.append({m: why[m] for m in COMPARE_METRICS if m in why})
        conventions.append(conv)
    return {
        "backtests": [_summary(r) for r in records],
        "series": aligned,
        "metrics": metrics,
        "metric_names": list(COMPARE_METRICS),
        "metric_reasons": reasons,
        "conventions": conventions,
    }


# --------------------------------------------------------------------------- optimization heatmap


@router.get(
    "/optimizations/{backtest_id}/heatmap",
    operation_id="get_optimization_heatmap",
    summary="An optimization's parameter sets as a grid over two parameters (Sharpe, DSR p-value)",
)
async def optimization_heatmap(
    backtest_id: _BacktestId,
    gw: GatewayDep,
    x: Annotated[str | None, Query(max_length=100, description="The parameter across (columns).")] = None,
    y: Annotated[str | None, Query(max_length=100, description="The parameter down (rows).")] = None,
) -> dict[str, Any]:
    """`cells[j][i]`: the best-Sharpe set with `y_values[j]` and `x_values[i]`; its `p_value` is
    1 - Deflated Sharpe given the optimization's trials (the backtester's figure, METRICS.md)."""
    bid = str(backtest_id)
    record, rows = await asyncio.gather(_backtest(gw, bid), _optimization_rows(gw, bid))
    if not rows:
        raise NotFound(f"backtest {bid} has no optimization rows", field="backtest_id")
    grid = cv.optimization_grid(rows, x, y)
    params = _params(record)
    summary = params.get("optimization") if isinstance(params.get("optimization"), dict) else {}
    return {"backtest": _summary(record), "optimization": summary, **grid}


# --------------------------------------------------------------------------- walk-forward


@router.get(
    "/walk-forward/{parent_backtest_id}",
    operation_id="get_walk_forward_view",
    summary="Walk-forward windows: in-sample vs out-of-sample Sharpe, performance ratio, degradation",
)
async def walk_forward_view(
    parent_backtest_id: Annotated[uuid.UUID, Path(description="The stitched parent backtest (UUID).")],
    gw: GatewayDep,
) -> dict[str, Any]:
    pid = str(parent_backtest_id)
    record = await _backtest(gw, pid)
    windows: list[dict[str, Any]] = []
    token = ""
    while True:
        reply = await _call(
            gw,
            "ListWalkForwardTests",
            ppb.ListWalkForwardTestsRequest(parent_backtest_id=pid, page_size=_PAGE, page_token=token),
        )
        for w in reply.windows:
            windows.append(
                {
                    "walk_forward_id": w.walk_forward_id,
                    "training_start": w.training_start,
                    "training_end": w.training_end,
                    "test_period_start": w.test_period_start,
                    "test_period_end": w.test_period_end,
                    "optimal_parameters": struct_to_dict(w.optimal_parameters)
                    if w.HasField("optimal_parameters")
                    else None,
                    **{
                        name: _opt(w, name)
                        for name in (
                            "training_performance",
                            "out_of_sample_return",
                            "out_of_sample_sharpe",
                            "out_of_sample_drawdown",
                            "out_of_sample_trades",
                            "performance_ratio",
                            "degradation_factor",
                            "is_profitable",
                        )
                    },
                    "is_statistically_significant": w.is_statistically_significant,
                }
            )
        token = reply.next_page_token
        if not token:
            break
    if not windows:
        raise NotFound(f"backtest {pid} has no walk-forward windows", field="parent_backtest_id")
    windows.sort(key=lambda w: w["test_period_start"])
    params = _params(record)
    wf: dict[str, Any] = params["walk_forward"] if isinstance(params.get("walk_forward"), dict) else {}
    values, _, _ = _metrics(record)
    return {
        "backtest": _summary(record),
        "objective": wf.get("objective"),
        "stitched_metrics": {k: values.get(k) for k in ("sharpe", "total_return", "max_drawdown")},
        **cv.walk_forward_bars(windows),
    }


# --------------------------------------------------------------------------- Monte Carlo fan


@router.get(
    "/monte-carlo/{backtest_id}",
    operation_id="get_monte_carlo_fan",
    summary="Fan chart of a backtest's block-bootstrap equity paths: percentiles per step",
)
async def monte_carlo_fan(
    backtest_id: _BacktestId,
    gw: GatewayDep,
    n_simulations: Annotated[int, Query(ge=2, le=cv.MAX_FAN_SIMULATIONS, description="Paths.")] = 1000,
    block_length: Annotated[int, Query(ge=1, le=1_000_000, description="Mean bars per block.")] = 21,
    method: Annotated[str, Query(pattern="^(stationary|circular)$", description="The bootstrap.")] = (
        "stationary"
    ),
    seed: Annotated[int, Query(ge=0, le=2**31 - 1, description="The seed (the Monte Carlo job's).")] = 0,
    percentiles: Annotated[
        list[float] | None, Query(description="Percentiles in [0, 100] (default 5, 25, 50, 75, 95).")
    ] = None,
    points: Points = 300,
) -> dict[str, Any]:
    """Returns `equity[s] / equity[s-1] - 1` with `equity[-1] = initial_capital`, as the job uses."""
    bid = str(backtest_id)
    record = await _backtest(gw, bid)
    if not record.HasField("equity_curve"):
        raise NotFound(f"backtest {bid} has no equity curve", field="backtest_id")
    curve = array_from_proto(record.equity_curve, field="equity_curve").astype(np.float64).reshape(-1)
    if curve.size < 2 or not np.isfinite(curve).all() or (curve <= 0).any() or record.initial_capital <= 0:
        raise InvalidArgument(
            f"backtest {bid} has no usable equity curve (needs >= 2 positive finite values)",
            field="backtest_id",
        )
    returns = curve / np.concatenate(([record.initial_capital], curve[:-1])) - 1.0
    pct = percentiles or [5.0, 25.0, 50.0, 75.0, 95.0]
    out = await asyncio.to_thread(
        functools.partial(
            cv.fan,
            returns,
            n_simulations=n_simulations,
            block_length=block_length,
            method=method,
            seed=seed,
            percentiles=pct,
            points=points,
        )
    )
    dates = list(record.dates)
    # step s ends on bar s - 1; step 0 is the start, one bar before the first date
    out["dates"] = [dates[s - 1] if s > 0 else None for s in out["steps"]]
    out["initial_capital"] = record.initial_capital
    out["backtest"] = _summary(record)
    return out


# --------------------------------------------------------------------------- portfolios


@router.get(
    "/portfolios/{portfolio_backtest_id}",
    operation_id="get_portfolio_view",
    summary="A portfolio backtest: equity, weights over time (downsampled), diversification",
)
async def portfolio_view(
    portfolio_backtest_id: Annotated[uuid.UUID, Path(description="The portfolio backtest id (UUID).")],
    gw: GatewayDep,
    points: Points = 500,
) -> dict[str, Any]:
    reply = await _call(
        gw,
        "GetPortfolioBacktest",
        ppb.GetPortfolioBacktestRequest(portfolio_backtest_id=str(portfolio_backtest_id)),
    )
    p = reply.portfolio
    dates = list(p.dates)
    values, reasons, conventions = _metrics(p)
    keep = cv.keep_indices(len(dates), points) if dates else np.arange(0)
    equity = (
        array_from_proto(p.equity_curve, field="portfolio.equity_curve").reshape(-1)
        if p.HasField("equity_curve")
        else None
    )
    weights = None
    if p.HasField("weights_history") and dates:
        w = array_from_proto(p.weights_history, field="portfolio.weights_history")
        weights = cv.weights_view(dates, list(p.symbols), np.atleast_2d(w), points)
    diversification = {
        k: values.get(k) for k in ("diversification_ratio", "concentration_index", "turnover_rate")
    }
    return {
        "portfolio_backtest_id": p.portfolio_backtest_id,
        "portfolio_name": p.portfolio_name,
        "start_date": p.start_date,
        "end_date": p.end_date,
        "symbols": list(p.symbols),
        "target_weights": struct_to_dict(p.weights) if p.HasField("weights") else None,
        "rebalance_frequency": p.rebalance_frequency or None,
        "position_sizing_method": p.position_sizing_method or None,
        "metrics": values,
        "metric_reasons": reasons,
        "conventions": conventions,
        "diversification": diversification,
        "equity": None
        if equity is None
        else {"dates": [dates[i] for i in keep], "values": cv.json_values(equity[keep])},
        "weights": weights,
    }


# --------------------------------------------------------------------------- leaderboard


async def _all_backtests(gw: Gateway) -> list[ppb.BacktestRecord]:
    out: list[ppb.BacktestRecord] = []
    token = ""
    while True:
        reply = await _call(
            gw, "ListBacktestResults", ppb.ListBacktestResultsRequest(page_size=_PAGE, page_token=token)
        )
        out.extend(reply.results)
        token = reply.next_page_token
        if not token:
            return out


async def _runs_by_backtest(gw: Gateway) -> dict[str, Any]:
    out: dict[str, Any] = {}
    token = ""
    while True:
        page = await gw.list_runs(page_size=_PAGE, page_token=token, summary=True)
        for run in page.runs:
            if run.backtest_id:
                out[run.backtest_id] = run
        token = page.next_page_token
        if not token:
            return out


def _fingerprint_of(params: dict[str, Any]) -> str | None:
    fp = params.get("dataset_fingerprint")
    return fp if isinstance(fp, str) and fp else None


def _grid_size(grid: Any) -> int:
    if not isinstance(grid, dict) or not grid:
        return 1
    return int(np.prod([len(v) if isinstance(v, list) else 1 for v in grid.values()]))


def _shown(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _label(rec: ppb.BacktestRecord, params: dict[str, Any], run: Any, trials: int) -> tuple[str, str]:
    """(kind, label): the model and version of an alpha run, else the rule with its parameters."""
    if run is not None and run.model_name:
        return "alpha", f"{run.model_name} v{run.model_version} · {rec.strategy_type}"
    strategy: dict[str, Any] = params["strategy"] if isinstance(params.get("strategy"), dict) else {}
    values: dict[str, Any] = strategy["params"] if isinstance(strategy.get("params"), dict) else {}
    shown = ", ".join(
        k if v is True else f"{k}={_shown(v)}"
        for k, v in sorted(values.items())
        if v is not False and v is not None
    )
    if "walk_forward" in params:
        windows = len(params["walk_forward"].get("windows") or [])
        return "walk_forward", f"{rec.strategy_type} walk-forward, {windows} windows · {rec.symbol}"
    if "optimization" in params:
        return "optimization", f"{rec.strategy_type}({shown}) best of {trials} sets · {rec.symbol}"
    kind = "rule" if "capital_per_symbol" in params else "alpha"
    return kind, f"{rec.strategy_type}({shown}) · {rec.symbol}"


INDEX_TTL_SECONDS = 60.0
"""How long the dataset index may be reused while the catalog's newest row is unchanged."""


class _DatasetIndex:
    """The catalog's backtests by dataset, rebuilt when the catalog changed.

    Reading every backtest is the leaderboard's cost (one pass over the
    catalog), so the grouping is kept per gateway process and reused while
    the most recently written backtest row is the same one and at most
    `INDEX_TTL_SECONDS` old (the age bounds how long a deletion, which leaves
    the newest row in place, goes unseen).
    """

    def __init__(self) -> None:
        self.key: tuple[str, str] | None = None
        self.built = 0.0
        self.value: tuple[dict[str, list[dict[str, Any]]], int] | None = None
        self.lock = asyncio.Lock()


async def _newest(gw: Gateway, fingerprint: str = "") -> tuple[str, str]:
    """The catalog's (or one dataset's) most recently written row: (id, updated_at)."""
    reply = await _call(
        gw,
        "ListBacktestResults",
        ppb.ListBacktestResultsRequest(order_by="-updated_at", page_size=1, dataset_fingerprint=fingerprint),
    )
    if not reply.results:
        return ("", "")
    row = reply.results[0]
    return (row.backtest_id, row.updated_at.ToJsonString() if row.HasField("updated_at") else "")


async def _dataset_rows(gw: Gateway) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Backtest rows by dataset fingerprint (with their params and run), and the unfingerprinted count."""
    index: _DatasetIndex | None = getattr(gw, "_dataset_index", None)
    if index is None:
        index = _DatasetIndex()
        gw._dataset_index = index  # type: ignore[attr-defined]
    async with index.lock:
        key = await _newest(gw)
        fresh = time.monotonic() - index.built < INDEX_TTL_SECONDS
        if index.value is not None and index.key == key and fresh:
            return index.value
        value = await _build_dataset_rows(gw)
        index.key, index.built, index.value = key, time.monotonic(), value
        return value


async def _build_dataset_rows(gw: Gateway) -> tuple[dict[str, list[dict[str, Any]]], int]:
    by_fp: dict[str, list[dict[str, Any]]] = {}
    missing = 0
    for rec in await _all_backtests(gw):
        if rec.status and rec.status != "completed":
            continue
        params = _params(rec)
        fp = _fingerprint_of(params)
        if fp is None:
            missing += 1
            continue
        by_fp.setdefault(fp, []).append({"record": rec, "params": params})
    return by_fp, missing


@dataclass
class _Trial:
    """A backtest on a dataset, as the leaderboard reads it (`ListDatasetTrials`)."""

    backtest_id: str
    symbol: str
    strategy_type: str
    start_date: str
    end_date: str


async def _trials_of(gw: Gateway, fingerprint: str) -> list[dict[str, Any]]:
    """The completed backtests on a dataset with their params, metrics and (alpha rows) run: one
    indexed query of the catalog (`ListDatasetTrials`, columns as JSON text), not a pass over
    every backtest."""
    reply = await _call(
        gw, "ListDatasetTrials", ppb.ListDatasetTrialsRequest(dataset_fingerprint=fingerprint)
    )
    loads = json.loads

    def rows_of() -> list[dict[str, Any]]:
        out = []
        for i, bid in enumerate(reply.backtest_ids):
            metrics = loads(reply.metrics_json[i])
            out.append(
                {
                    "record": _Trial(
                        bid,
                        reply.symbols[i],
                        reply.strategy_types[i],
                        reply.start_dates[i],
                        reply.end_dates[i],
                    ),
                    "params": loads(reply.parameters_json[i]),
                    "run": None,
                    "values": {k: (v if v is None else float(v)) for k, v in metrics.items()},
                    "conventions": loads(reply.conventions_json[i]),
                }
            )
        return out

    rows = await asyncio.to_thread(rows_of)
    # an alpha-backtest run's row is labelled with its model: read the runs only when there are some
    if any(_maybe_run(r["params"]) for r in rows):
        runs = await _runs_by_backtest(gw)
        for r in rows:
            r["run"] = runs.get(r["record"].backtest_id)
    return rows


def _maybe_run(params: dict[str, Any]) -> bool:
    """Whether a backtest may be an alpha-backtest run's (a rule backtest, an optimization and a
    walk-forward test say what they are in their parameters)."""
    return not any(k in params for k in ("capital_per_symbol", "optimization", "walk_forward"))


@router.get(
    "/datasets",
    operation_id="list_dataset_fingerprints",
    summary="The datasets (by fingerprint) backtests ran on, with their number of backtests",
)
async def list_datasets(gw: GatewayDep) -> dict[str, Any]:
    by_fp, missing = await _dataset_rows(gw)
    items = []
    for fp, rows in by_fp.items():
        starts = [r["record"].start_date for r in rows]
        ends = [r["record"].end_date for r in rows]
        symbols = sorted({s for r in rows for s in (r["params"].get("symbols") or [r["record"].symbol])})
        items.append(
            {
                "fingerprint": fp,
                "n_backtests": len(rows),
                "start_date": min(starts),
                "end_date": max(ends),
                "symbols": symbols[:20],
                "n_symbols": len(symbols),
                "strategies": sorted({r["record"].strategy_type for r in rows}),
            }
        )
    items.sort(key=lambda i: (-i["n_backtests"], i["fingerprint"]))
    return {"items": items, "unfingerprinted": missing}


@router.get(
    "/leaderboard/{fingerprint}",
    operation_id="get_dataset_leaderboard",
    summary="Every backtest on a dataset with its Sharpe and Deflated Sharpe given all trials on it",
)
async def leaderboard(
    fingerprint: Annotated[
        str, Path(pattern="^[0-9a-f]{64}$", description="The dataset fingerprint (SHA-256, hex).")
    ],
    gw: GatewayDep,
    limit: Annotated[
        int, Query(ge=1, le=100_000, description="At most this many entries, the best Deflated Sharpe first.")
    ] = 500,
) -> dict[str, Any]:
    """All trials count, whatever `limit`; `n_entries` is the number of backtests on the dataset.

    The scored board is kept per dataset while the dataset's most recently written row is the
    same one, for at most `INDEX_TTL_SECONDS` (one indexed single-row read checks it)."""
    boards: dict[str, tuple[tuple[str, str], float, dict[str, Any]]] = (
        getattr(gw, "_leaderboards", None) or {}
    )
    gw._leaderboards = boards  # type: ignore[attr-defined]
    key = await _newest(gw, fingerprint)
    kept = boards.get(fingerprint)
    if kept is not None and kept[0] == key and time.monotonic() - kept[1] < INDEX_TTL_SECONDS:
        board = kept[2]
    else:
        board = await _board(gw, fingerprint)
        boards[fingerprint] = (key, time.monotonic(), board)
        while len(boards) > _BOARDS_KEPT:
            boards.pop(next(iter(boards)))
    return {
        "fingerprint": fingerprint,
        **board,
        "n_entries": len(board["entries"]),
        "entries": board["entries"][:limit],
    }


_BOARDS_KEPT = 16


async def _board(gw: Gateway, fingerprint: str) -> dict[str, Any]:
    rows = await _trials_of(gw, fingerprint)
    if not rows:
        raise NotFound(f"no backtest ran on dataset {fingerprint}", field="fingerprint")
    optimizations = [r for r in rows if isinstance(r["params"].get("optimization"), dict)]
    opt_rows = await asyncio.gather(*(_optimization_rows(gw, r["record"].backtest_id) for r in optimizations))
    opt_by_id = {r["record"].backtest_id: o for r, o in zip(optimizations, opt_rows, strict=True)}
    entries: list[cv.Entry] = []
    trials: list[float | None] = []
    for r in rows:
        rec, params, run = r["record"], r["params"], r["run"]
        values, conventions = r["values"], r["conventions"]
        ppy = float(conventions.get("periods_per_year") or 252.0)
        n_trials = 1
        if rec.backtest_id in opt_by_id:
            sets = opt_by_id[rec.backtest_id]
            trials.extend(_finite_or_none(s["sharpe_ratio"]) for s in sets)
            n_trials = len(sets)
        elif isinstance(params.get("walk_forward"), dict):
            wf = params["walk_forward"]
            n_trials = len(wf.get("windows") or []) * _grid_size(wf.get("grid"))
            trials.extend([None] * n_trials)
        else:
            trials.append(values.get("sharpe"))
        kind, label = _label(rec, params, run, n_trials)
        n_obs = values.get("n_periods")
        entries.append(
            cv.Entry(
                key=rec.backtest_id,
                label=label,
                kind=kind,
                sharpe=values.get("sharpe"),
                periods_per_year=ppy,
                n_obs=int(n_obs) if n_obs is not None else None,
                skewness=values.get("skewness"),
                kurtosis=values.get("kurtosis"),
                trials=n_trials,
                detail={
                    "backtest_id": rec.backtest_id,
                    "strategy_type": rec.strategy_type,
                    "symbol": rec.symbol,
                    "start_date": rec.start_date,
                    "end_date": rec.end_date,
                    "total_return": values.get("total_return"),
                    "max_drawdown": values.get("max_drawdown"),
                    "run_id": run.run_id if run is not None else None,
                    "model_name": (run.model_name or None) if run is not None else None,
                    "model_version": (run.model_version or None) if run is not None else None,
                },
            )
        )
    return cv.leaderboard(entries, trials)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    out = float(value)
    return out if math.isfinite(out) else None
