"""The data behind the Strategy Browser's run views, read through the gateway's clients and kept
in memory: an index of the runs (for sorting and filtering on the server) and, per finished run,
its backtest series, trades and prediction audit (for the charts, the ledger and the audit).

A finished run never changes, so its data is computed once and kept in a small LRU; the index
reads only the runs it has not seen (new runs come first in the newest-first listing) and
re-reads the runs still in progress.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import logging
import math
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.errors import NotFound
from alphaswarm_common.grpc_client import aio_call, aio_stream
from alphaswarm_common.protoconv import (
    RUN_STATE_NAMES,
    array_from_proto,
    metricset_from_proto,
    struct_to_dict,
    timestamp_to_datetime,
)
from alphaswarm_gateway.browser.analytics import Audit

__all__ = [
    "RunData",
    "RunIndex",
    "all_trades",
    "date_audit",
    "load_run_data",
    "read_stored_stats",
    "run_summary",
    "symbol_audit_rows",
    "trade_page",
]

log = logging.getLogger(__name__)

LIVE_STATES = frozenset({"pending", "running"})
_LIST_PAGE = 500
_FIRST_PAGE = 10
_FIRST_PAGE_COLD = 100
_AUDIT_ROWS_PER_MESSAGE = 200_000


def _iso(ts: Any) -> str | None:
    value = timestamp_to_datetime(ts)
    return value.isoformat() if value else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def run_summary(run: resources_pb2.AlphaBacktestRun) -> dict[str, Any]:
    """One row of the runs table (no config, no symbol list)."""
    combined = struct_to_dict(run.combined_metrics) if run.HasField("combined_metrics") else {}
    ml = combined.get("ml") or {}
    trading = combined.get("trading") or {}
    window = combined.get("window") or {}
    model_type = run.config.model_cfg.type if run.HasField("config") else ""
    if not window and run.HasField("config"):
        test = run.config.dataset_cfg.segments.test
        window = {"start": test.start, "end": test.end} if test.start else {}
    status = RUN_STATE_NAMES[run.state]
    started = timestamp_to_datetime(run.started_at) if run.HasField("started_at") else None
    duration = run.duration_seconds or None
    if duration is None and started is not None and status in LIVE_STATES:
        duration = max(0.0, (dt.datetime.now(dt.UTC) - started).total_seconds())
    return {
        "run_id": run.run_id,
        "task_id": run.task_id,
        "run_name": run.run_name,
        "status": status,
        "stage": run.stage,
        "model_name": run.model_name or None,
        "model_version": run.model_version or None,
        "model_type": model_type or None,
        "model": f"{run.model_name or model_type} {run.model_version}".strip(),
        "window_start": window.get("start"),
        "window_end": window.get("end"),
        "ic": _num(ml.get("ic_spearman")),
        "icir": _num(ml.get("icir")),
        "sharpe": _num(trading.get("sharpe")),
        "max_drawdown": _num(trading.get("max_drawdown")),
        "score": _num(combined.get("score")),
        "created_at": _iso(run.created_at) if run.HasField("created_at") else None,
        "started_at": started.isoformat() if started else None,
        "finished_at": _iso(run.finished_at) if run.HasField("finished_at") else None,
        "duration_seconds": duration,
        "backtest_id": run.backtest_id or None,
    }


SORT_KEYS = frozenset(
    {
        "status",
        "run_name",
        "model",
        "window_start",
        "ic",
        "icir",
        "sharpe",
        "max_drawdown",
        "score",
        "created_at",
        "started_at",
        "duration_seconds",
    }
)


class RunIndex:
    """Every run's table row, read from PersistenceService.ListAlphaBacktestRuns (summaries: no
    whole configs) and refreshed incrementally.

    The first read of every run runs in the background (`start`, called when the gateway starts):
    until it is `complete`, the newest-first rows read so far answer the pages they cover (`rows`
    grow page by page, newest first); any other view waits for it."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []  # newest first, as listed
        self.complete = False
        self._lock = asyncio.Lock()
        self._build: asyncio.Task[None] | None = None
        self._page = asyncio.Event()  # set (and replaced) each time the first read adds a page

    def start(self, gw: Any) -> asyncio.Task[None]:
        """The first read of every run, started once (in the background)."""
        if self._build is None or (self._build.done() and not self.complete):
            self._build = asyncio.ensure_future(self._read_all(gw))
        return self._build

    async def _read_all(self, gw: Any) -> None:
        async with self._lock:
            try:
                if self.complete:
                    return
                self.rows.clear()
                self.order.clear()
                token = ""
                size = _FIRST_PAGE_COLD  # the first rows quickly, then large pages
                while True:
                    page = await gw.list_runs(page_size=size, page_token=token, summary=True)
                    size = _LIST_PAGE
                    for run in page.runs:
                        if run.run_id not in self.rows:
                            self.rows[run.run_id] = run_summary(run)
                            self.order.append(run.run_id)
                    token = page.next_page_token
                    if not token:
                        break
                    self._signal()
                self.complete = True
            finally:
                self._signal()

    def _signal(self) -> None:
        page, self._page = self._page, asyncio.Event()
        page.set()

    def covers(self, rows: int) -> bool:
        """Whether the rows read so far hold the first `rows` of the newest-first listing."""
        return self.complete or len(self.order) >= rows

    async def wait_covering(self, rows: int) -> bool:
        """Wait until the first read holds the first `rows` rows, or ends; whether it holds them."""
        while not self.covers(rows) and self._build is not None and not self._build.done():
            await self._page.wait()
        return self.covers(rows)

    async def refresh(self, gw: Any) -> None:
        if not self.complete:
            await asyncio.shield(self.start(gw))
        async with self._lock:
            fresh: list[str] = []
            token = ""
            # A small first page: usually only the newest runs are new.
            size = _FIRST_PAGE
            while True:
                page = await gw.list_runs(page_size=size, page_token=token, summary=True)
                size = _LIST_PAGE
                seen_known = False
                for run in page.runs:
                    if run.run_id in self.rows:
                        seen_known = True
                        continue
                    self.rows[run.run_id] = run_summary(run)
                    fresh.append(run.run_id)
                token = page.next_page_token
                if seen_known or not token:
                    break
            if fresh:
                known = set(fresh)
                self.order = fresh + [r for r in self.order if r not in known]
            live = [
                rid for rid, row in self.rows.items() if row["status"] in LIVE_STATES and rid not in fresh
            ]
            for rid in live:
                self.rows[rid] = run_summary(await gw.get_run(run_id=rid))

    def query(
        self, *, status: str = "", q: str = "", sort: str = "created_at", desc: bool = True
    ) -> list[dict[str, Any]]:
        rows = [self.rows[r] for r in self.order]
        if status:
            rows = [r for r in rows if r["status"] == status]
        if q:
            needle = q.lower()
            rows = [
                r
                for r in rows
                if needle in (r["run_name"] or "").lower()
                or needle in (r["model"] or "").lower()
                or needle in r["run_id"]
            ]
        if sort != "created_at" or not desc:
            present = [r for r in rows if r.get(sort) is not None]
            missing = [r for r in rows if r.get(sort) is None]
            present.sort(key=lambda r: r[sort], reverse=desc)
            rows = present + missing  # runs without the value last, whichever the direction
        return rows


@dataclass
class RunData:
    """A finished run's backtest series, trades and (when captured) prediction audit."""

    run: dict[str, Any]
    config: dict[str, Any]
    combined: dict[str, Any]
    dates: list[str]
    equity: np.ndarray
    drawdown: np.ndarray
    initial_capital: float
    conventions: dict[str, Any]
    trades_total: int
    # the ledger's first keyset page by trade number (what the run page opens with); the whole
    # ledger is read only when asked for (another sort order, the MAE / MFE sample): `all_trades`
    first_trades: list[dict[str, Any]]
    audit: Audit | None
    audit_reason: str | None
    built_seconds: float = 0.0
    # the audit statistics the run stored (`stored.py`), when it did: the audit itself is then
    # never streamed; the audit table reads one date or one symbol from the catalog
    stored: dict[str, Any] | None = None
    last_rows: dict[str, Any] | None = None
    backtest_id: str = ""
    trades: list[dict[str, Any]] | None = None  # every trade by trade number, once read
    cache: dict[Any, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)  # one computation of `cache` at a time


_TRADE_FIELDS = tuple(f.name for f in resources_pb2.Trade.DESCRIPTOR.fields)


def _trade(msg: resources_pb2.Trade) -> dict[str, Any]:
    """One ledger row: every field of the trade (read directly: a ledger has tens of thousands)."""
    doc: dict[str, Any] = {name: getattr(msg, name) for name in _TRADE_FIELDS}
    for key, value in doc.items():
        if isinstance(value, float) and not math.isfinite(value):
            doc[key] = None
    if not msg.exit_date:
        doc["exit_date"] = None
        doc["exit_price"] = None
    for key in ("symbol", "exit_reason"):
        doc[key] = doc.get(key) or None
    return doc


FIRST_TRADES = 100
"""Trades read with the run's page data: the ledger's first pages by trade number."""
_TRADE_PAGE = 10_000  # the catalog's largest keyset page


async def trade_page(
    gw: Any, backtest_id: str, page_size: int, page_token: str = ""
) -> tuple[list[dict[str, Any]], str, int]:
    """One keyset page of a backtest's trades by trade number (ListBacktestTrades): (ledger rows,
    the next page's token or "", the number of trades in all pages)."""
    reply = await aio_call(
        gw.clients.persistence.ListBacktestTrades,
        ppb.ListBacktestTradesRequest(backtest_id=backtest_id, page_size=page_size, page_token=page_token),
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )
    return [_trade(t) for t in reply.trades], reply.next_page_token, int(reply.total_size)


async def all_trades(gw: Any, data: RunData) -> list[dict[str, Any]]:
    """Every trade of the run's backtest by trade number, read once (keyset pages of 10,000) and
    kept with the run's page data; concurrent callers share the one read."""
    if data.trades is not None:
        return data.trades
    fut: asyncio.Future[list[dict[str, Any]]] | None = data.cache.get("all_trades")
    if fut is None:

        async def read() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            token = ""
            while True:
                page, token, _ = await trade_page(gw, data.backtest_id, _TRADE_PAGE, token)
                rows.extend(page)
                if not token or not page:
                    return rows

        fut = asyncio.ensure_future(read())
        data.cache["all_trades"] = fut
    try:
        trades = await asyncio.shield(fut)
    except BaseException:
        if fut.done() and data.cache.get("all_trades") is fut:
            del data.cache["all_trades"]  # a failed read is tried again by the next caller
        raise
    data.trades = trades
    return trades


async def _audit(gw: Any, run_id: str, *, date: str = "") -> Audit:
    """The audit of a run (of one date when `date` is set: the catalog filters it) as
    (dates x symbols) float32 matrices, streamed as packed blocks of dates
    (PersistenceService.StreamPredictionAudit)."""
    names = {
        "prediction": "prediction",
        "realized": "realized_return",
        "target": "target_weight",
        "held": "held_weight",
        "pnl": "pnl_contribution",
    }
    dates: list[str] = []
    symbols: list[str] = []
    blocks: dict[str, list[np.ndarray]] = {f: [] for f in Audit.FIELDS}
    stream = aio_stream(
        gw.clients.persistence.StreamPredictionAudit,
        ppb.StreamPredictionAuditRequest(run_id=run_id, rows_per_message=_AUDIT_ROWS_PER_MESSAGE, date=date),
        timeout=gw.settings.deadline_backtest_seconds,
        target="persistence",
    )
    async for msg in stream:
        batch = msg.batch
        if not symbols:
            symbols = list(batch.symbols)
        dates.extend(batch.dates)
        n_dates = len(batch.dates)
        for f, name in names.items():
            if name in batch.fields and n_dates:
                arr = array_from_proto(batch.fields[name], field=f"batch.fields.{name}")
                blocks[f].append(np.asarray(arr, dtype=np.float32).reshape(n_dates, len(symbols)))
            elif n_dates:
                blocks[f].append(np.full((n_dates, len(symbols)), np.nan, dtype=np.float32))
    shape = (0, len(symbols))
    mats = {
        f: np.concatenate(parts) if parts else np.zeros(shape, dtype=np.float32)
        for f, parts in blocks.items()
    }
    return Audit(dates=dates, symbols=symbols, **mats)


async def load_run_data(gw: Any, run: resources_pb2.AlphaBacktestRun) -> RunData:
    """Read everything the run page draws for a finished run."""
    from alphaswarm_common.config import AlphaBacktestConfig
    from alphaswarm_common.protoconv import config_from_proto

    started = time.perf_counter()
    reply = await aio_call(
        gw.clients.persistence.GetBacktestResult,
        ppb.GetBacktestResultRequest(backtest_id=run.backtest_id, include_trades=False),
        timeout=gw.settings.deadline_default_seconds,
        target="persistence",
    )
    rec = reply.result
    equity = (
        array_from_proto(rec.equity_curve, field="equity_curve").astype(np.float64).ravel()
        if rec.HasField("equity_curve")
        else np.zeros(0)
    )
    drawdown = (
        array_from_proto(rec.drawdown_series, field="drawdown_series").astype(np.float64).ravel()
        if rec.HasField("drawdown_series")
        else np.zeros(0)
    )
    _, _, conventions = metricset_from_proto(rec.metrics) if rec.HasField("metrics") else ({}, {}, {})
    first, _, trades_total = await trade_page(gw, run.backtest_id, FIRST_TRADES)
    config = (
        config_from_proto(run.config, AlphaBacktestConfig).model_dump(mode="json")
        if run.HasField("config")
        else {}
    )
    audit: Audit | None = None
    reason: str | None = None
    stored: dict[str, Any] | None = None
    last: dict[str, Any] | None = None
    if run.predictions_captured:
        found = await read_stored_stats(gw, run)
        if found is not None:
            stored, last = found
        else:
            audit = await _audit(gw, run.run_id)
    elif not (run.config.capture_predictions if run.config.HasField("capture_predictions") else False):
        reason = "the run was started with capture_predictions=false: no per-date predictions to chart"
    else:
        reason = "the run wrote no prediction audit (ALPHASWARM_ML_PREDICTION_AUDIT_ENABLED is off)"
    return RunData(
        run=run_summary(run),
        config=config,
        combined=struct_to_dict(run.combined_metrics) if run.HasField("combined_metrics") else {},
        dates=list(rec.dates),
        equity=equity,
        drawdown=drawdown,
        initial_capital=float(rec.initial_capital or (equity[0] if equity.size else 1.0)),
        conventions=conventions,
        trades_total=trades_total,
        first_trades=first,
        backtest_id=run.backtest_id,
        audit=audit,
        audit_reason=reason,
        built_seconds=time.perf_counter() - started,
        stored=stored,
        last_rows=last,
    )


async def read_stored_stats(
    gw: Any, run: resources_pb2.AlphaBacktestRun
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The audit statistics the run stored on its MLflow parent run, or None when it has none (a
    run made before they were stored) or they cannot be read (the caller computes them then)."""
    from alphaswarm_gateway.browser import stored

    if not run.mlflow_parent_run_id:
        return None

    def read() -> bytes:
        with tempfile.TemporaryDirectory(prefix="alphaswarm-run-page-") as tmp:
            path = gw.tracker.download_run_artifact(run.mlflow_parent_run_id, stored.ARTIFACT, tmp)
            return Path(path).read_bytes()

    try:
        blob = await asyncio.to_thread(read)
        return await asyncio.to_thread(stored.from_bytes, blob)
    except NotFound:
        return None
    except Exception as exc:  # unreadable or unreachable: compute them from the audit instead
        log.warning("run %s: stored run page statistics not read (%s); computing them", run.run_id, exc)
        return None


async def symbol_audit_rows(gw: Any, run_id: str, symbol: str) -> list[dict[str, Any]]:
    """The audit rows of one symbol (every date with a prediction), read page by page with
    PersistenceService.ListPredictionAudit, values as the streamed audit gives them (float32)."""
    rows: list[dict[str, Any]] = []
    token = ""
    while True:
        reply = await aio_call(
            gw.clients.persistence.ListPredictionAudit,
            ppb.ListPredictionAuditRequest(run_id=run_id, symbol=symbol, page_size=10_000, page_token=token),
            timeout=gw.settings.deadline_default_seconds,
            target="persistence",
        )
        for r in reply.rows:
            if not r.HasField("prediction") or not math.isfinite(r.prediction):
                continue
            row: dict[str, Any] = {"date": r.date, "symbol": r.symbol}
            for key in _AUDIT_KEYS:
                v = float(np.float32(getattr(r, key))) if r.HasField(key) else math.nan
                row[key] = v if math.isfinite(v) else None
            rows.append(row)
        token = reply.next_page_token
        if not token:
            return rows


_AUDIT_KEYS = ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")


async def date_audit(gw: Any, run_id: str, date: str) -> Audit:
    """The audit of one date of a run (every symbol audited on it), filtered by the catalog."""
    return await _audit(gw, run_id, date=date)


class RunCache:
    """Finished runs' data, the `size` most recently used; one read per run even when asked
    concurrently."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._items: collections.OrderedDict[str, asyncio.Future[RunData]] = collections.OrderedDict()

    async def get(self, gw: Any, run: resources_pb2.AlphaBacktestRun) -> RunData:
        fut = self._items.get(run.run_id)
        if fut is None:
            fut = asyncio.ensure_future(load_run_data(gw, run))
            self._items[run.run_id] = fut
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(run.run_id)
        try:
            return await asyncio.shield(fut)
        except BaseException:
            if fut.done() and self._items.get(run.run_id) is fut:
                del self._items[run.run_id]
            raise
