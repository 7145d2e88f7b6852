"""REST routes the Strategy Browser needs beyond the resource API (`/browser/...`).

* `GET /browser/session`: who the caller is and which role it holds, so the page
  shows only the actions the role allows (the API still checks every call);
* `GET /browser/runs`: the alpha-backtest runs as table rows, filtered, sorted and
  paginated on the server;
* `GET /browser/runs/{run_id}/series?points=`: a finished run's chart data, long
  series downsampled on the server (`analytics.py`, `series.py`);
* `GET /browser/runs/{run_id}/trades`, `/audit`: its trade ledger and prediction
  audit, sorted and paginated (the ledger by trade number through the catalog's keyset pages);
* `GET /browser/runs/{run_id}/trades/scatter`: the trades of the MAE / MFE scatter, every one up
  to 2,000, else a deterministic stratified sample keeping the extremes (`series.trade_sample`).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import json
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from alphaswarm_common.auth import ADMIN, RESEARCHER, VIEWER, role_allows
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.protoconv import RUN_STATE_NAMES
from alphaswarm_gateway import auth
from alphaswarm_gateway.browser.data import (
    LIVE_STATES,
    SORT_KEYS,
    RunCache,
    RunData,
    RunIndex,
    all_trades,
    date_audit,
    symbol_audit_rows,
    trade_page,
)
from alphaswarm_gateway.browser.series import SCATTER_LIMIT, SCATTER_NOTE, series_view, trade_sample
from alphaswarm_gateway.core import Gateway
from alphaswarm_gateway.deps import GatewayDep

__all__ = ["router", "warm"]

router = APIRouter(prefix="/browser", tags=["browser"])
log = logging.getLogger(__name__)


@router.get("/session", operation_id="get_browser_session", summary="The caller's identity and role")
async def get_session() -> dict[str, Any]:
    who = auth.caller()
    return {
        "subject": who.subject,
        "role": who.role,
        "via": who.via,
        "can": {
            "view": role_allows(who.role, VIEWER),
            "submit": role_allows(who.role, RESEARCHER),
            "admin": role_allows(who.role, ADMIN),
        },
    }


# ------------------------------------------------------------------------------------------- runs


def _index(request: Request) -> RunIndex:
    return _index_of(request.app)


def _index_of(app: Any) -> RunIndex:
    index = getattr(app.state, "browser_run_index", None)
    if index is None:
        index = app.state.browser_run_index = RunIndex()
    return index  # type: ignore[no-any-return]


def _cache(request: Request) -> RunCache:
    return _cache_of(request.app)


def _cache_of(app: Any) -> RunCache:
    cache = getattr(app.state, "browser_run_cache", None)
    if cache is None:
        cache = app.state.browser_run_cache = RunCache()
    return cache  # type: ignore[no-any-return]


DEFAULT_POINTS = 800
"""Points per long series the run page asks for."""

Page = Annotated[int, Query(ge=0, le=1_000_000, description="Page number, from 0.")]
BrowserPageSize = Annotated[int, Query(ge=1, le=500, description="Rows per page.")]


def _sort_key(sort: str, allowed: frozenset[str]) -> str:
    if sort not in allowed:
        raise InvalidArgument(f"must be one of {', '.join(sorted(allowed))}", field="sort")
    return sort


@router.get(
    "/runs",
    operation_id="list_browser_runs",
    summary="Alpha-backtest runs as table rows, filtered, sorted and paginated on the server",
)
async def list_runs(
    request: Request,
    gw: GatewayDep,
    status: Annotated[str, Query(description="Only runs in this state.")] = "",
    q: Annotated[str, Query(max_length=200, description="Substring of the name, model or id.")] = "",
    sort: Annotated[str, Query(description="Column to sort by.")] = "created_at",
    desc: bool = True,
    page: Page = 0,
    page_size: BrowserPageSize = 50,
) -> dict[str, Any]:
    _sort_key(sort, SORT_KEYS)
    if status and status not in LIVE_STATES | {"succeeded", "failed", "cancelled"}:
        raise InvalidArgument("must be pending, running, succeeded, failed or cancelled", field="status")
    index = _index(request)
    index.start(gw)
    default_view = not status and not q.strip() and sort == "created_at" and desc
    covered = default_view and not index.complete and await index.wait_covering((page + 1) * page_size)
    partial = covered and not index.complete
    if not covered:
        # the newest-first page the first read already holds is answered at once; any other waits
        await index.refresh(gw)
    rows = index.query(status=status, q=q.strip(), sort=sort, desc=desc)
    active = sum(1 for r in index.rows.values() if r["status"] in LIVE_STATES)
    return {
        "items": rows[page * page_size : (page + 1) * page_size],
        "total": len(rows),
        "partial": partial,  # `total` counts the runs read so far; the rest are being read
        "active": active,
        "page": page,
        "page_size": page_size,
    }


WARM_RUNS = 2
"""Finished runs (the newest) whose run page data the gateway reads when it starts."""


def warm(app: Any) -> asyncio.Task[None]:
    """Read what the first page loads need, in the background (the gateway is ready meanwhile):
    the run index, the modules of the run page's statistics, and the run page data of the newest
    finished runs with their MAE / MFE sample (`WARM_RUNS`: the ones most likely opened next; a finished run never changes,
    so what is read stays right)."""

    async def run() -> None:
        gw = app.state.gateway
        index = _index_of(app)
        try:
            await index.start(gw)
            await asyncio.to_thread(_import_run_page_modules)
            newest = [
                r["run_id"]
                for r in (index.rows[k] for k in index.order)
                if r["status"] == "succeeded" and r["backtest_id"]
            ][:WARM_RUNS]
            for run_id in newest:
                run = await gw.get_run(run_id=run_id)
                data = await _cache_of(app).get(gw, run)
                await asyncio.to_thread(series_json, data, DEFAULT_POINTS)
            for run_id in newest:  # then the scatter's sample (the whole ledger read once)
                data = await _cache_of(app).get(gw, await gw.get_run(run_id=run_id))
                await _scatter(gw, data)
        except Exception as exc:  # the pages read what they need themselves
            log.warning("the Strategy Browser's data was not read at start (%s); pages read it on load", exc)

    return asyncio.ensure_future(run())


def _import_run_page_modules() -> None:
    from alphaswarm_gateway.browser import analytics, series, stored  # noqa: F401


async def _finished(request: Request, gw: Gateway, run_id: str) -> RunData:
    run = await gw.get_run(run_id=run_id)
    status = RUN_STATE_NAMES[run.state]
    if status != "succeeded" or not run.backtest_id:
        raise FailedPrecondition(
            f"run {run_id} has no backtest to chart (status: {status})",
            field="run_id",
            reason="RUN_NOT_FINISHED",
        )
    return await _cache(request).get(gw, run)


@router.get(
    "/runs/{run_id}/series",
    operation_id="get_browser_run_series",
    summary="A finished run's chart data: equity, drawdown, rolling Sharpe, monthly returns, IC, deciles, weights",
    response_class=Response,
    responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
)
async def get_series(
    run_id: str,
    request: Request,
    gw: GatewayDep,
    points: Annotated[
        int, Query(ge=50, le=20_000, description="About how many points per long series.")
    ] = DEFAULT_POINTS,
) -> Response:
    data = await _finished(request, gw, run_id)

    return Response(await asyncio.to_thread(series_json, data, points), media_type="application/json")


def series_json(data: RunData, points: int) -> bytes:
    """The series document of a finished run as JSON (made once per `points`: the run never
    changes); plain values, made off the event loop."""
    key = ("series_json", points)
    with data.lock:
        cached = data.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    doc = series_view(data, points)
    try:
        out = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:  # a NaN or infinity somewhere: JSON has neither, send null
        out = json.dumps(_finite(doc), separators=(",", ":")).encode()
    with data.lock:
        kept = [k for k in data.cache if isinstance(k, tuple) and k[0] == "series_json"]
        for old in kept[: max(0, len(kept) - _SERIES_KEPT + 1)]:
            del data.cache[old]
        data.cache[key] = out
    return out


_SERIES_KEPT = 4
"""Series documents kept per run (one per `points` asked for, the most recent)."""


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


TRADE_SORT = frozenset(
    {
        "trade_number",
        "symbol",
        "direction",
        "entry_date",
        "exit_date",
        "duration_bars",
        "pnl",
        "pnl_percent",
        "mae",
        "mfe",
        "fees_paid",
        "exit_reason",
        "position_size",
    }
)


def _sorted_page(
    rows: list[dict[str, Any]], sort: str, desc: bool, page: int, page_size: int
) -> dict[str, Any]:
    present = [r for r in rows if r.get(sort) is not None]
    missing = [r for r in rows if r.get(sort) is None]
    present.sort(key=lambda r: r[sort], reverse=desc)
    ordered = present + missing
    return {"items": ordered[page * page_size : (page + 1) * page_size], "total": len(ordered), "page": page}


@router.get(
    "/runs/{run_id}/trades",
    operation_id="list_browser_run_trades",
    summary="A finished run's trade ledger, sorted and paginated",
)
async def list_trades(
    run_id: str,
    request: Request,
    gw: GatewayDep,
    sort: str = "trade_number",
    desc: bool = False,
    page: Page = 0,
    page_size: BrowserPageSize = 50,
) -> dict[str, Any]:
    """By trade number (the page's default order), the first pages come from the keyset page read
    with the run's data and later ones from the catalog's keyset pages (ListBacktestTrades); any
    other order reads the whole ledger once and sorts it here."""
    _sort_key(sort, TRADE_SORT)
    data = await _finished(request, gw, run_id)
    if sort == "trade_number" and not desc and data.trades is None:
        start, end = page * page_size, (page + 1) * page_size
        if end <= len(data.first_trades) or len(data.first_trades) >= data.trades_total:
            items = data.first_trades[start:end]
        else:
            items = await _trades_slice(gw, data, start, page_size)
        return {"items": items, "total": data.trades_total, "page": page}
    return _sorted_page(await all_trades(gw, data), sort, desc, page, page_size)


async def _trades_slice(gw: Gateway, data: RunData, start: int, size: int) -> list[dict[str, Any]]:
    """Trades [start, start + size) by trade number, through the keyset pages: the token of each
    page boundary met is kept with the run's data, so paging forward reads one page each time."""
    tokens: dict[int, str] = data.cache.setdefault("trade_tokens", {0: ""})
    at = max(k for k in tokens if k <= start)
    rows: list[dict[str, Any]] = []
    token = tokens[at]
    while True:
        want = start + size - at
        got, token, _ = await trade_page(gw, data.backtest_id, min(max(want, 1), 10_000), token)
        if at + len(got) > start:
            rows.extend(got[max(start - at, 0) :])
        at += len(got)
        if token:
            tokens[at] = token
        if not token or not got or at >= start + size:
            return rows[:size]


@router.get(
    "/runs/{run_id}/trades/scatter",
    operation_id="get_browser_run_trade_scatter",
    summary="A finished run's trades for the MAE / MFE scatter: all, or a sample keeping the extremes",
)
async def trade_scatter(run_id: str, request: Request, gw: GatewayDep) -> dict[str, Any]:
    return await _scatter(gw, await _finished(request, gw, run_id))


async def _scatter(gw: Gateway, data: RunData) -> dict[str, Any]:
    cached = data.cache.get("trade_scatter")
    if cached is None:
        trades = await all_trades(gw, data)
        items = await asyncio.to_thread(trade_sample, trades, SCATTER_LIMIT)
        cached = data.cache["trade_scatter"] = {
            "total": len(trades),
            "sampled": len(items) < len(trades),
            "limit": SCATTER_LIMIT,
            "method": SCATTER_NOTE,
            "items": items,
        }
    return cached  # type: ignore[no-any-return]


AUDIT_SORT = frozenset(
    {"date", "symbol", "prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution"}
)
_AUDIT_COLUMNS = {
    "prediction": "prediction",
    "realized_return": "realized",
    "target_weight": "target",
    "held_weight": "held",
    "pnl_contribution": "pnl",
}


@router.get(
    "/runs/{run_id}/audit",
    operation_id="list_browser_run_audit",
    summary="A finished run's prediction audit on one date (every symbol) or for one symbol (every date)",
)
async def list_audit(
    run_id: str,
    request: Request,
    gw: GatewayDep,
    date: Annotated[str, Query(description="YYYY-MM-DD; the last audited date on or before it.")] = "",
    symbol: Annotated[str, Query(max_length=64)] = "",
    sort: str = "prediction",
    desc: bool = True,
    page: Page = 0,
    page_size: BrowserPageSize = 50,
) -> dict[str, Any]:
    _sort_key(sort, AUDIT_SORT)
    data = await _finished(request, gw, run_id)
    if date:
        try:
            dt.date.fromisoformat(date)
        except ValueError:
            raise InvalidArgument("must be a date YYYY-MM-DD", field="date") from None
    if data.stored is not None and data.audit is None:
        return await _stored_audit_page(gw, data, run_id, date, symbol, sort, desc, page, page_size)
    audit = data.audit
    if audit is None:
        return {"items": [], "total": 0, "page": page, "captured": False, "reason": data.audit_reason}
    if symbol:
        if symbol not in audit.symbols:
            raise NotFound(f"symbol {symbol} is not in the audit of run {run_id}", field="symbol")
        col = audit.symbols.index(symbol)
        rows = [
            _audit_row(audit, t, col)
            for t in range(len(audit.dates))
            if math.isfinite(float(audit.prediction[t, col]))
        ]
        shown: dict[str, Any] = {"symbol": symbol}
    else:
        at = bisect.bisect_right(audit.dates, date) - 1 if date else len(audit.dates) - 1
        rows = _date_rows(audit, max(at, 0))
        shown = {"date": audit.dates[max(at, 0)] if audit.dates else None}
    return {**_sorted_page(rows, sort, desc, page, page_size), "captured": True, **shown}


async def _stored_audit_page(
    gw: Gateway,
    data: RunData,
    run_id: str,
    date: str,
    symbol: str,
    sort: str,
    desc: bool,
    page: int,
    page_size: int,
) -> dict[str, Any]:
    """The audit table of a run that stored its page statistics: the last date from them, another
    date or one symbol read from the catalog (filtered there, not the whole audit streamed)."""
    stored = data.stored or {}
    if symbol:
        if symbol not in (stored.get("audit_symbols") or []):
            raise NotFound(f"symbol {symbol} is not in the audit of run {run_id}", field="symbol")
        rows = await symbol_audit_rows(gw, run_id, symbol)
        return {**_sorted_page(rows, sort, desc, page, page_size), "captured": True, "symbol": symbol}
    dates: list[str] = stored.get("audit_dates") or []
    if not dates:
        return {**_sorted_page([], sort, desc, page, page_size), "captured": True, "date": None}
    day = dates[max(bisect.bisect_right(dates, date) - 1, 0)] if date else dates[-1]
    last = data.last_rows
    if last and day == last["date"]:
        symbols = stored.get("audit_symbols") or []
        rows = [
            _last_row(last, c, sym) for c, sym in enumerate(symbols) if math.isfinite(last["prediction"][c])
        ]
    else:
        one = await date_audit(gw, run_id, day)
        rows = _date_rows(one, 0) if one.dates else []
    return {**_sorted_page(rows, sort, desc, page, page_size), "captured": True, "date": day}


def _date_rows(audit: Any, at: int) -> list[dict[str, Any]]:
    if not audit.dates:
        return []
    return [
        _audit_row(audit, at, c)
        for c in range(len(audit.symbols))
        if math.isfinite(float(audit.prediction[at, c]))
    ]


def _last_row(last: dict[str, Any], c: int, symbol: str) -> dict[str, Any]:
    row: dict[str, Any] = {"date": last["date"], "symbol": symbol}
    for key, f in _AUDIT_COLUMNS.items():
        v = float(last[f][c])
        row[key] = v if math.isfinite(v) else None
    return row


def _audit_row(audit: Any, t: int, c: int) -> dict[str, Any]:
    row: dict[str, Any] = {"date": audit.dates[t], "symbol": audit.symbols[c]}
    for key, f in _AUDIT_COLUMNS.items():
        v = float(getattr(audit, f)[t, c])
        row[key] = v if math.isfinite(v) else None
    return row
