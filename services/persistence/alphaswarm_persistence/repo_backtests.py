"""Backtest results with their trades, and the catalog queries over them (best, compare, summary)."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_persistence.models import (
    BacktestResultRow,
    BacktestTradeRow,
    RequestKeyRow,
    TradeDetailRow,
    utcnow,
)
from alphaswarm_persistence.repo_common import (
    RepositoryBase,
    _as_date,
    _check_aware,
    _check_int,
    _check_json,
    _check_str,
    _chunks,
    _decode_token,
    _encode_token,
    _fingerprint,
    _fit_column,
    _json_safe,
    _page_size,
    _parse_token_uuid,
    _required_uuid,
    _series_from_json,
    _series_json,
    parse_uuid,
)
from alphaswarm_persistence.repo_records import (
    _BACKTEST_PAGE,
    _COLUMN_METRIC,
    _COMPARE_MAX,
    _COMPARE_MIN,
    _INT4_MAX,
    _ORDERABLE_EXTRA,
    _RESERVED_PARAMETERS_KEY,
    _SUMMARY_DEFAULT_DAYS,
    _TRADE_PAGE,
    COMPARE_DEFAULT_METRICS,
    LOWER_IS_BETTER_METRICS,
    METRIC_COLUMNS,
    BacktestComparison,
    BacktestResultRecord,
    MetricComparisonRecord,
    Page,
    PerformanceGroupRecord,
    PerformanceSummary,
    TradeRecord,
)


def _metric_column(name: str) -> str | None:
    if name in METRIC_COLUMNS:
        return METRIC_COLUMNS[name]
    if name in _COLUMN_METRIC:
        return name
    return None


def metric_higher_is_better(column: str) -> bool:
    """Whether a larger value of a `mcp_backtest_results` metric column is better (see LOWER_IS_BETTER_METRICS)."""
    return column not in LOWER_IS_BETTER_METRICS


def _known_metric(name: str, field_name: str) -> str:
    """The `mcp_backtest_results` column of a metric (MetricSet or column name); InvalidArgument otherwise."""
    text = (name or "").strip()
    if not text:
        raise InvalidArgument("is required (a metric column such as sharpe_ratio)", field=field_name)
    column = _metric_column(text)
    if column is None:
        raise InvalidArgument(
            f"{text!r} is not a metric column; use one of {', '.join(METRIC_COLUMNS.values())}",
            field=field_name,
        )
    return column


def _exact_mean_parts(column: Any) -> tuple[Any, Any]:
    """SQL (sum of the value in units of the column's scale, as an exact integer; count of non-NULL values).

    A Numeric(p, s) value times 10^s is an integer, so summing those integers
    is exact on both databases (PostgreSQL's numeric and SQLite's REAL, which
    holds the rounded value to within far less than half a unit), and the mean
    computed from them is the same float on both.
    """
    scale = int(column.type.scale or 0)
    units = sa.cast(sa.func.round(column * (10**scale)), sa.BigInteger)
    return sa.func.sum(units), sa.func.count(column)


def _exact_mean(units_sum: Any, count: Any, scale: int) -> float | None:
    n = int(count or 0)
    if n == 0 or units_sum is None:
        return None
    return float(decimal.Decimal(int(units_sum)) / (decimal.Decimal(10) ** scale * n))


_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def dataset_fingerprint_of(params: Any) -> str | None:
    """The dataset fingerprint a backtest's parameters record (`dataset_fingerprint`, SHA-256 hex)."""
    fp = params.get("dataset_fingerprint") if isinstance(params, Mapping) else None
    return fp if isinstance(fp, str) and _FINGERPRINT.match(fp) else None


class BacktestsMixin(RepositoryBase):
    """Backtest results, trades and the catalog queries."""

    # ------------------------------------------------------------------ backtest results

    def save_backtest_result(
        self,
        result: BacktestResultRecord,
        trades: Sequence[TradeRecord] = (),
        *,
        request_id: str | None = None,
    ) -> tuple[uuid.UUID, bool]:
        """Store a result with its trades in one transaction; (backtest_id, created)."""
        bid = parse_uuid(result.backtest_id, "result.backtest_id")
        row_values, notes = self._result_values(result)
        trade_rows, detail_rows, trade_notes = self._trade_values(trades)
        all_notes = [n for n in [result.notes or None, *notes, *trade_notes] if n]
        row_values["notes"] = "\n".join(all_notes) if all_notes else None

        def create(s: Session, eid: uuid.UUID) -> tuple[uuid.UUID, bool]:
            if s.get(BacktestResultRow, eid) is not None:
                raise AlreadyExists(f"backtest result {eid} already exists", field="result.backtest_id")
            now = utcnow()
            # Core INSERT: a None is an explicit NULL (the ORM would leave it to the server default).
            s.execute(
                sa.insert(BacktestResultRow).values(
                    backtest_id=eid, created_at=now, updated_at=now, **row_values
                )
            )
            if trade_rows:
                for tr in trade_rows:
                    tr.update(backtest_id=eid, created_at=now, updated_at=now)
                s.execute(sa.insert(BacktestTradeRow), trade_rows)
                if detail_rows:
                    s.execute(sa.insert(TradeDetailRow), detail_rows)
            return eid, True

        def load(s: Session, eid: uuid.UUID) -> uuid.UUID | None:
            return eid if s.get(BacktestResultRow, eid) is not None else None

        fingerprint = _fingerprint("backtest_result", result, list(trades))
        return self._idempotent("backtest_result", request_id, fingerprint, bid, create, load)

    @staticmethod
    def _result_values(result: BacktestResultRecord) -> tuple[dict[str, Any], list[str]]:
        model = BacktestResultRow
        start = _as_date(result.start_date, "result.start_date")
        end = _as_date(result.end_date, "result.end_date")
        assert start is not None and end is not None
        if end < start:
            raise InvalidArgument(f"end_date {end} is before start_date {start}", field="result.end_date")
        values: dict[str, Any] = {
            "symbol": _check_str(result.symbol, model.symbol, "result.symbol", required=True),
            "strategy_type": _check_str(
                result.strategy_type, model.strategy_type, "result.strategy_type", required=True
            ),
            "backtest_date": _check_aware(result.backtest_date, "result.backtest_date") or utcnow(),
            "start_date": start,
            "end_date": end,
            "status": _check_str(result.status or "completed", model.status, "result.status"),
            "error_message": result.error_message or None,
        }
        notes: list[str] = []
        reserved: dict[str, Any] = {}
        for name in ("initial_capital", "fees", "slippage", "execution_time_seconds", "data_points"):
            raw = getattr(result, name)
            if raw is None:
                continue
            stored, why = _fit_column(raw, getattr(model, name))
            values[name] = stored
            if why:
                notes.append(f"{name}: {why}")
        # Metrics: columns where there is one, the rest (and every reason) in the reserved parameters key.
        # A metric that was not sent is NULL, not the seed's server default (0 for the trade counts).
        values.update(dict.fromkeys(METRIC_COLUMNS.values()))
        seen: dict[str, str] = {}
        metric_notes: dict[str, str] = {}
        reasons: dict[str, str] = {}
        extra: dict[str, float | None] = {}
        for name, raw in result.metrics.items():
            column = _metric_column(name)
            if column is None:
                number = None if raw is None else float(raw)
                if number is not None and not math.isfinite(number):
                    reasons[name] = f"{number!r} is not finite"
                    number = None
                extra[name] = number
                if number is None and name not in reasons:
                    reasons[name] = result.metric_reasons.get(name) or "undefined"
                continue
            if column in seen:
                raise InvalidArgument(
                    f"{name!r} and {seen[column]!r} both name column {column}",
                    field=f"result.metrics.values[{name}]",
                )
            seen[column] = name
            canonical = _COLUMN_METRIC[column]
            if raw is None:
                why = result.metric_reasons.get(name) or "undefined"
                values[column] = None
            else:
                stored, why = _fit_column(raw, getattr(model, column))  # type: ignore[assignment]
                values[column] = stored
            if why:
                reasons[canonical] = why
                metric_notes[column] = f"{column}: {why}"
        # In table column order, whatever the order of the (unordered) metric map.
        notes += [metric_notes[c] for c in METRIC_COLUMNS.values() if c in metric_notes]
        params = _check_json(result.parameters, "result.parameters")
        if params is not None and _RESERVED_PARAMETERS_KEY in params:
            raise InvalidArgument(f"key {_RESERVED_PARAMETERS_KEY!r} is reserved", field="result.parameters")
        if reasons:
            reserved["metric_reasons"] = reasons
        if extra:
            reserved["extra_metrics"] = _json_safe(extra)
        if result.conventions:
            reserved["conventions"] = _json_safe(dict(result.conventions))
        if reserved:
            params = {**(params or {}), _RESERVED_PARAMETERS_KEY: reserved}
        values["parameters"] = params
        values["dataset_fingerprint"] = dataset_fingerprint_of(params)
        series_dates = [
            d.isoformat() for d in (_as_date(x, "result.dates") for x in (result.dates or [])) if d
        ]
        values["equity_curve"] = _series_json(series_dates, result.equity_curve, "result.equity_curve")
        values["drawdown_series"] = _series_json(
            series_dates, result.drawdown_series, "result.drawdown_series"
        )
        return values, notes

    @staticmethod
    def _trade_values(
        trades: Sequence[TradeRecord],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        model = BacktestTradeRow
        rows: list[dict[str, Any]] = []
        details: list[dict[str, Any]] = []
        notes: list[str] = []
        numbers: set[int] = set()
        optional_numbers = (
            "exit_price",
            "position_size",
            "pnl",
            "pnl_percent",
            "mae",
            "mfe",
            "duration_days",
            "fees_paid",
            "slippage_cost",
        )
        for i, trade in enumerate(trades):
            path = f"trades[{i}]"
            number = int(trade.trade_number)
            if not 0 < number <= _INT4_MAX:
                raise InvalidArgument(
                    f"must be a positive integer, got {number}", field=f"{path}.trade_number"
                )
            if number in numbers:
                raise InvalidArgument(f"trade number {number} appears twice", field=f"{path}.trade_number")
            numbers.add(number)
            direction = (trade.direction or "").lower()
            if direction not in ("long", "short"):
                raise InvalidArgument(f"{trade.direction!r} is not long or short", field=f"{path}.direction")
            entry = _as_date(trade.entry_date, f"{path}.entry_date")
            exit_ = _as_date(trade.exit_date, f"{path}.exit_date", required=False)
            assert entry is not None
            if exit_ is not None and exit_ < entry:
                raise InvalidArgument(
                    f"exit_date {exit_} is before entry_date {entry}", field=f"{path}.exit_date"
                )
            entry_price, why = _fit_column(trade.entry_price, model.entry_price)
            if entry_price is None:
                raise InvalidArgument(f"entry_price {why or 'is required'}", field=f"{path}.entry_price")
            row: dict[str, Any] = {
                "trade_id": uuid.uuid4(),
                "trade_number": number,
                "entry_date": entry,
                "entry_price": entry_price,
                "exit_date": exit_,
                "direction": direction,
                "exit_reason": _check_str(trade.exit_reason, model.exit_reason, f"{path}.exit_reason"),
            }
            for name in optional_numbers:
                raw = getattr(trade, name)
                if raw is None and name in ("fees_paid", "slippage_cost"):
                    raw = 0.0  # the seed's server default; executemany needs the key in every row
                stored, why = _fit_column(raw, getattr(model, name))
                row[name] = stored
                if why:
                    notes.append(f"trade {number} {name}: {why}")
            rows.append(row)
            symbol = _check_str(trade.symbol, TradeDetailRow.symbol, f"{path}.symbol")
            bars = trade.duration_bars
            if symbol is not None or bars is not None:
                details.append(
                    {
                        "trade_id": row["trade_id"],
                        "symbol": symbol or "",
                        "duration_bars": None if bars is None else int(bars),
                    }
                )
        return rows, details, notes

    @staticmethod
    def _result_record(row: BacktestResultRow, *, include_series: bool) -> BacktestResultRecord:
        params = dict(row.parameters) if isinstance(row.parameters, Mapping) else row.parameters
        reserved: dict[str, Any] = {}
        if isinstance(params, dict) and _RESERVED_PARAMETERS_KEY in params:
            reserved = params.pop(_RESERVED_PARAMETERS_KEY) or {}
            params = params or None  # the reserved key was the only content: no parameters were sent
        reasons: dict[str, str] = dict(reserved.get("metric_reasons") or {})
        metrics: dict[str, float | None] = {}
        for name, column in METRIC_COLUMNS.items():
            value = getattr(row, column)
            if value is not None:
                metrics[name] = float(value) if not isinstance(value, int) else value
            elif name in reasons:
                metrics[name] = None
        for name, value in (reserved.get("extra_metrics") or {}).items():
            metrics[name] = value
        record = BacktestResultRecord(
            backtest_id=row.backtest_id,
            symbol=row.symbol,
            strategy_type=row.strategy_type,
            backtest_date=row.backtest_date,
            start_date=row.start_date,
            end_date=row.end_date,
            initial_capital=row.initial_capital,
            fees=row.fees,
            slippage=row.slippage,
            parameters=params,
            metrics=metrics,
            metric_reasons={k: v for k, v in reasons.items() if metrics.get(k, 0.0) is None},
            conventions=dict(reserved.get("conventions") or {}),
            execution_time_seconds=row.execution_time_seconds,
            data_points=row.data_points,
            status=row.status or "completed",
            error_message=row.error_message,
            notes=row.notes,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        if include_series:
            equity = _series_from_json(row.equity_curve)
            drawdown = _series_from_json(row.drawdown_series)
            if equity is not None:
                record.dates, record.equity_curve = equity
            if drawdown is not None:
                record.dates = record.dates or drawdown[0]
                record.drawdown_series = drawdown[1]
        return record

    def get_backtest_result(
        self, backtest_id: uuid.UUID | str, *, include_trades: bool = False
    ) -> tuple[BacktestResultRecord, list[TradeRecord]]:
        """One result with its series, and its trades (by trade number) when asked for."""
        bid = _required_uuid(backtest_id, "backtest_id")
        with self.db.session() as s:
            row = s.get(BacktestResultRow, bid)
            if row is None:
                raise NotFound(f"backtest result {bid} does not exist", field="backtest_id")
            record = self._result_record(row, include_series=True)
            trades = self._all_trades(s, bid) if include_trades else []
            return record, trades

    @staticmethod
    def _all_trades(s: Session, bid: uuid.UUID) -> list[TradeRecord]:
        """Every trade of a backtest by trade number, with its details: one joined query of plain
        rows (no ORM objects: a ledger of tens of thousands of trades reads in a fraction)."""
        t, d = BacktestTradeRow, TradeDetailRow
        stmt = (
            sa.select(
                t.trade_number,
                t.direction,
                t.entry_date,
                t.entry_price,
                d.symbol,
                t.exit_date,
                t.exit_price,
                t.position_size,
                t.pnl,
                t.pnl_percent,
                t.mae,
                t.mfe,
                d.duration_bars,
                t.duration_days,
                t.exit_reason,
                t.fees_paid,
                t.slippage_cost,
            )
            .outerjoin(d, d.trade_id == t.trade_id)
            .where(t.backtest_id == bid)
            .order_by(t.trade_number, t.trade_id)
        )
        return [
            TradeRecord(
                trade_number=r[0],
                direction=r[1],
                entry_date=r[2],
                entry_price=r[3],
                symbol=r[4] or None,
                exit_date=r[5],
                exit_price=r[6],
                position_size=r[7],
                pnl=r[8],
                pnl_percent=r[9],
                mae=r[10],
                mfe=r[11],
                duration_bars=r[12],
                duration_days=r[13],
                exit_reason=r[14],
                fees_paid=r[15],
                slippage_cost=r[16],
            )
            for r in s.execute(stmt)
        ]

    @staticmethod
    def _trade_records(s: Session, rows: Sequence[BacktestTradeRow]) -> list[TradeRecord]:
        """The trades of `rows` (in their order) with their `catalog_trade_details` rows."""
        details: dict[uuid.UUID, TradeDetailRow] = {}
        for chunk in _chunks([t.trade_id for t in rows]):
            details.update(
                (d.trade_id, d)
                for d in s.scalars(sa.select(TradeDetailRow).where(TradeDetailRow.trade_id.in_(chunk)))
            )
        out = []
        for t in rows:
            d = details.get(t.trade_id)
            out.append(
                TradeRecord(
                    trade_number=t.trade_number,
                    direction=t.direction,
                    entry_date=t.entry_date,
                    entry_price=t.entry_price,
                    symbol=(d.symbol or None) if d is not None else None,
                    exit_date=t.exit_date,
                    exit_price=t.exit_price,
                    position_size=t.position_size,
                    pnl=t.pnl,
                    pnl_percent=t.pnl_percent,
                    mae=t.mae,
                    mfe=t.mfe,
                    duration_bars=d.duration_bars if d is not None else None,
                    duration_days=t.duration_days,
                    exit_reason=t.exit_reason,
                    fees_paid=t.fees_paid,
                    slippage_cost=t.slippage_cost,
                )
            )
        return out

    def list_backtest_trades(
        self, backtest_id: uuid.UUID | str, *, page_size: int = 0, page_token: str = ""
    ) -> tuple[Page[TradeRecord], int]:
        """One backtest's trades by trade number, keyset-paginated (default 500, at most 10000 a
        page), and the number of its trades in all pages. NotFound naming `backtest_id` when the
        backtest does not exist; a token of another backtest's trades is refused naming `page_token`."""
        bid = _required_uuid(backtest_id, "backtest_id")
        model = BacktestTradeRow
        total = 0

        def check(s: Session) -> None:
            nonlocal total
            if s.get(BacktestResultRow, bid) is None:
                raise NotFound(f"backtest result {bid} does not exist", field="backtest_id")
            total = int(s.scalar(sa.select(sa.func.count()).where(model.backtest_id == bid)) or 0)

        page = self._keyset_page(
            sa.select(model).where(model.backtest_id == bid),
            [(model.trade_number, False, False), (model.trade_id, False, False)],
            kind="trades",
            filters={"backtest_id": str(bid)},
            page_size=page_size,
            page_token=page_token,
            limits=_TRADE_PAGE,
            records=self._trade_records,
            check=check,
        )
        return page, total

    @staticmethod
    def _order_column(order_by: str | None) -> tuple[str, bool]:
        text = (order_by or "-backtest_date").strip()
        descending = text.startswith("-")
        name = text[1:] if descending else text
        column = _metric_column(name) or (name if name in _ORDERABLE_EXTRA else None)
        if column is None:
            allowed = sorted({*METRIC_COLUMNS, *_COLUMN_METRIC, *_ORDERABLE_EXTRA})
            raise InvalidArgument(
                f"cannot order by {name!r}; use one of {', '.join(allowed)} (prefix '-' for descending)",
                field="order_by",
            )
        return column, descending

    def list_backtest_results(
        self,
        *,
        symbol: str | None = None,
        strategy_type: str | None = None,
        from_date: dt.date | str | None = None,
        to_date: dt.date | str | None = None,
        status: str | None = None,
        dataset_fingerprint: str | None = None,
        order_by: str | None = None,
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[BacktestResultRecord]:
        """Results (without series) filtered and ordered, NULLs last, keyset-paginated.

        `from_date` / `to_date` bound `backtest_date` by UTC calendar day, both inclusive.
        """
        size = _page_size(page_size, *_BACKTEST_PAGE)
        column_name, descending = self._order_column(order_by)
        start = _as_date(from_date, "from_date", required=False)
        end = _as_date(to_date, "to_date", required=False)
        if start and end and end < start:
            raise InvalidArgument(f"to_date {end} is before from_date {start}", field="to_date")
        model = BacktestResultRow
        filters = {
            "symbol": symbol or None,
            "strategy_type": strategy_type or None,
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "status": status or None,
            "order_by": f"{'-' if descending else ''}{column_name}",
        }
        if dataset_fingerprint:
            filters["dataset"] = dataset_fingerprint
        cursor = _decode_token(page_token, "backtests", filters, 2)
        stmt = sa.select(model).options(defer(model.equity_curve), defer(model.drawdown_series))
        if symbol:
            stmt = stmt.where(model.symbol == symbol)
        if strategy_type:
            stmt = stmt.where(model.strategy_type == strategy_type)
        if status:
            stmt = stmt.where(model.status == status)
        if dataset_fingerprint:
            stmt = stmt.where(model.dataset_fingerprint == dataset_fingerprint)
        if start:
            stmt = stmt.where(model.backtest_date >= dt.datetime.combine(start, dt.time(), dt.UTC))
        if end:
            stmt = stmt.where(
                model.backtest_date < dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
            )
        col = getattr(model, column_name)
        key = model.backtest_id
        if cursor is not None:
            c_value, c_id = cursor[0], _parse_token_uuid(cursor[1])
            id_after = key < c_id if descending else key > c_id
            if c_value is None:
                stmt = stmt.where(col.is_(None), id_after)
            else:
                param = self._cursor_param(col, c_value)
                value_after = col < param if descending else col > param
                stmt = stmt.where(sa.or_(col.is_(None), value_after, sa.and_(col == param, id_after)))
        ordered = col.desc() if descending else col.asc()
        stmt = stmt.order_by(col.is_(None), ordered, key.desc() if descending else key.asc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._result_record(r, include_series=False) for r in rows[:size]]
            token = ""
            if len(rows) > size:
                last = rows[size - 1]
                value = getattr(last, column_name)
                if isinstance(value, dt.datetime | dt.date):
                    value = value.isoformat()
                token = _encode_token("backtests", [value, str(last.backtest_id)], filters)
        return Page(items, token)

    def dataset_trials(self, dataset_fingerprint: str) -> list[dict[str, Any]]:
        """The completed backtests on a dataset, by backtest id, as plain rows: `backtest_id`,
        `symbol`, `strategy_type`, `start_date`, `end_date`, `parameters`, `metrics` (as
        `BacktestResultRecord.metrics`) and `conventions`. One indexed query of the columns a
        leaderboard reads (no series, no ORM objects)."""
        if not _FINGERPRINT.match(dataset_fingerprint or ""):
            raise InvalidArgument(
                "must be a SHA-256 fingerprint (64 lowercase hex)", field="dataset_fingerprint"
            )
        model = BacktestResultRow
        metric_columns = list(METRIC_COLUMNS.items())
        stmt = (
            sa.select(
                model.backtest_id,
                model.symbol,
                model.strategy_type,
                model.start_date,
                model.end_date,
                model.parameters,
                *(getattr(model, column) for _, column in metric_columns),
            )
            .where(
                model.dataset_fingerprint == dataset_fingerprint,
                sa.func.coalesce(model.status, "completed") == "completed",
            )
            .order_by(model.backtest_id)
        )
        out: list[dict[str, Any]] = []
        with self.db.session() as s:
            for row in s.execute(stmt):
                params = dict(row[5]) if isinstance(row[5], Mapping) else {}
                reserved = params.pop(_RESERVED_PARAMETERS_KEY, None) or {}
                reasons = reserved.get("metric_reasons") or {}
                metrics: dict[str, Any] = {}
                for (name, _), value in zip(metric_columns, row[6:], strict=True):
                    if value is not None:
                        metrics[name] = float(value) if not isinstance(value, int) else value
                    elif name in reasons:
                        metrics[name] = None
                metrics.update(reserved.get("extra_metrics") or {})
                out.append(
                    {
                        "backtest_id": row[0],
                        "symbol": row[1],
                        "strategy_type": row[2],
                        "start_date": row[3],
                        "end_date": row[4],
                        "parameters": params,
                        "metrics": metrics,
                        "conventions": dict(reserved.get("conventions") or {}),
                    }
                )
        return out

    def delete_backtest_result(self, backtest_id: uuid.UUID | str) -> bool:
        """Delete a result; its trades, optimizations and walk-forward rows go with it (runs keep a NULL link)."""
        bid = _required_uuid(backtest_id, "backtest_id")
        with self.db.session(write=True) as s:
            result = s.execute(sa.delete(BacktestResultRow).where(BacktestResultRow.backtest_id == bid))
            deleted = cast("sa.CursorResult[Any]", result).rowcount
            s.execute(
                sa.delete(RequestKeyRow).where(
                    RequestKeyRow.kind == "backtest_result", RequestKeyRow.entity_id == bid
                )
            )
        return bool(deleted)

    # ------------------------------------------------------------------ catalog queries over backtest results

    def get_best_backtest(
        self,
        metric: str,
        *,
        min_trades: int = 0,
        symbol: str | None = None,
        strategy_type: str | None = None,
    ) -> BacktestResultRecord:
        """The best completed result (without series) by a metric column, in that metric's direction.

        Only results with status "completed", a non-NULL value of the metric
        and, when `min_trades` > 0, `total_trades >= min_trades` qualify. Ties
        go to the newest `backtest_date`, then to the larger `backtest_id`.
        """
        column_name = _known_metric(metric, "metric")
        minimum = _check_int(min_trades or 0, "min_trades", minimum=0)
        model = BacktestResultRow
        column = getattr(model, column_name)
        higher = metric_higher_is_better(column_name)
        stmt = (
            sa.select(model)
            .options(defer(model.equity_curve), defer(model.drawdown_series))
            .where(column.is_not(None), model.status == "completed")
        )
        if minimum:
            stmt = stmt.where(model.total_trades >= minimum)
        if symbol:
            stmt = stmt.where(model.symbol == symbol)
        if strategy_type:
            stmt = stmt.where(model.strategy_type == strategy_type)
        stmt = stmt.order_by(
            column.desc() if higher else column.asc(), model.backtest_date.desc(), model.backtest_id.desc()
        ).limit(1)
        with self.db.session() as s:
            row = s.scalars(stmt).first()
            if row is None:
                scope = [f"{column_name} set"]
                if minimum:
                    scope.append(f"at least {minimum} trades")
                if symbol:
                    scope.append(f"symbol {symbol!r}")
                if strategy_type:
                    scope.append(f"strategy_type {strategy_type!r}")
                raise NotFound(f"no completed backtest with {', '.join(scope)}", field="metric")
            return self._result_record(row, include_series=False)

    def compare_backtests(
        self, backtest_ids: Sequence[uuid.UUID | str], metrics: Sequence[str] = ()
    ) -> BacktestComparison:
        """Compare 2 to 50 results metric by metric.

        `metrics` are metric or column names (default `COMPARE_DEFAULT_METRICS`)
        and come back as column names. Each metric is ranked in its own
        direction (`metric_higher_is_better`) among the results where it is
        not NULL, ties sharing the better rank (the "min" method: 1, 1, 3);
        NULL values have no rank. Comparisons are metric-major in the order of
        `metrics`, then in request order.
        """
        if not _COMPARE_MIN <= len(backtest_ids) <= _COMPARE_MAX:
            raise InvalidArgument(
                f"give {_COMPARE_MIN} to {_COMPARE_MAX} backtest ids, got {len(backtest_ids)}",
                field="backtest_ids",
            )
        ids: list[uuid.UUID] = []
        for i, raw in enumerate(backtest_ids):
            bid = _required_uuid(raw, f"backtest_ids[{i}]")
            if bid in ids:
                raise InvalidArgument(f"{bid} appears twice", field=f"backtest_ids[{i}]")
            ids.append(bid)
        columns: list[str] = []
        for j, name in enumerate(metrics or COMPARE_DEFAULT_METRICS):
            column = _known_metric(name, f"metrics[{j}]")
            if column in columns:
                raise InvalidArgument(f"{name!r} names {column} twice", field=f"metrics[{j}]")
            columns.append(column)
        model = BacktestResultRow
        stmt = (
            sa.select(model)
            .options(defer(model.equity_curve), defer(model.drawdown_series))
            .where(model.backtest_id.in_(ids))
        )
        with self.db.session() as s:
            found = {row.backtest_id: row for row in s.scalars(stmt)}
            for i, bid in enumerate(ids):
                if bid not in found:
                    raise NotFound(f"backtest result {bid} does not exist", field=f"backtest_ids[{i}]")
            rows = [found[bid] for bid in ids]
            results = [self._result_record(row, include_series=False) for row in rows]
        comparisons: list[MetricComparisonRecord] = []
        for column in columns:
            raw_values = [getattr(row, column) for row in rows]
            values = np.array([np.nan if v is None else float(v) for v in raw_values], dtype=np.float64)
            higher = metric_higher_is_better(column)
            signed = values if higher else -values
            # rank = 1 + number of non-NULL values strictly better (NaN compares false): the "min" method.
            ranks = 1 + (signed[None, :] > signed[:, None]).sum(axis=1)
            for bid, raw, rank in zip(ids, raw_values, ranks.tolist(), strict=True):
                comparisons.append(
                    MetricComparisonRecord(
                        metric=column,
                        backtest_id=bid,
                        value=None if raw is None else float(raw),
                        rank=None if raw is None else int(rank),
                        higher_is_better=higher,
                    )
                )
        return BacktestComparison(results=results, metrics=columns, comparisons=comparisons)

    def get_performance_summary(self, days: int = 0, *, now: dt.datetime | None = None) -> PerformanceSummary:
        """Aggregates of the results whose `backtest_date` is on or after `now - days` (default 30 days).

        The window is rolling (an exact timestamp, UTC) and open at the top, so
        a result stamped slightly in the future by a writer with a skewed clock
        still counts. Groups: overall, by symbol, by strategy type (each sorted
        by key in code-point order). Per group, in SQL with GROUP BY: the
        count of results, the means of total_return, sharpe_ratio, max_drawdown
        and win_rate over the results where they are not NULL (None when there
        are none), the largest sharpe_ratio and the sum of total_trades (NULL
        counts as 0). Means are computed from exact integer sums (see
        `_exact_mean_parts`), so SQLite and PostgreSQL return the same floats.
        """
        window = int(days or 0)
        if window < 0:
            raise InvalidArgument(f"must be a positive number of days, got {window}", field="days")
        window = window or _SUMMARY_DEFAULT_DAYS
        current = _check_aware(now, "now") or utcnow()
        since: dt.datetime | None
        try:
            since = current - dt.timedelta(days=window)
        except OverflowError:
            since = None  # before year 1: every result
        model = BacktestResultRow
        mean_columns = (model.total_return, model.sharpe_ratio, model.max_drawdown, model.win_rate)
        aggregates: list[Any] = [sa.func.count()]
        for column in mean_columns:
            aggregates.extend(_exact_mean_parts(column))
        aggregates += [sa.func.max(model.sharpe_ratio), sa.func.sum(model.total_trades)]
        scales = [int(c.type.scale or 0) for c in mean_columns]

        def group(key: str, row: Sequence[Any]) -> PerformanceGroupRecord:
            means = [_exact_mean(row[1 + 2 * k], row[2 + 2 * k], scales[k]) for k in range(len(scales))]
            best = row[1 + 2 * len(scales)]
            trades = row[2 + 2 * len(scales)]
            return PerformanceGroupRecord(
                key=key,
                count=int(row[0] or 0),
                avg_total_return=means[0],
                avg_sharpe_ratio=means[1],
                best_sharpe_ratio=None if best is None else float(best),
                avg_max_drawdown=means[2],
                avg_win_rate=means[3],
                total_trades=int(trades or 0),
            )

        def grouped(*keys: Any) -> Any:
            stmt = sa.select(*keys, *aggregates).select_from(model)
            if since is not None:
                stmt = stmt.where(model.backtest_date >= since)
            return stmt.group_by(*keys) if keys else stmt

        with self.db.session() as s:
            overall = group("", s.execute(grouped()).one())
            by_symbol = [group(r[0], r[1:]) for r in s.execute(grouped(model.symbol))]
            by_strategy = [group(r[0], r[1:]) for r in s.execute(grouped(model.strategy_type))]
        # Sorted here rather than in SQL: PostgreSQL's collation may not be code-point order.
        by_symbol.sort(key=lambda g: g.key)
        by_strategy.sort(key=lambda g: g.key)
        return PerformanceSummary(
            days=window, since=since, overall=overall, by_symbol=by_symbol, by_strategy=by_strategy
        )
