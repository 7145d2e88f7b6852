"""Portfolio backtests with their side details (metrics without a column, NULL reasons)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session, defer

from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_persistence.models import (
    BacktestPortfolioRow,
    PortfolioDetailRow,
    utcnow,
)
from alphaswarm_persistence.repo_common import (
    RepositoryBase,
    _check_aware,
    _check_int,
    _check_str,
    _chunks,
    _fingerprint,
    _fit_column,
    _float,
    _json_safe,
    _required_uuid,
    _series_from_json,
    _series_json,
    _SortKey,
    parse_date,
    parse_uuid,
)
from alphaswarm_persistence.repo_records import (
    _PORTFOLIO_COLUMN_METRIC,
    _PORTFOLIO_NUMBERS,
    _PORTFOLIO_PAGE,
    BACKTEST_STATUSES,
    PORTFOLIO_METRIC_COLUMNS,
    POSITION_SIZING_METHODS,
    REBALANCE_FREQUENCIES,
    Page,
    PortfolioBacktestRecord,
)


def _check_choice(value: str | None, choices: Sequence[str], field_name: str) -> str | None:
    if value is None or value == "":
        return None
    if value not in choices:
        raise InvalidArgument(f"{value!r} is not one of {', '.join(choices)}", field=field_name)
    return value


def _matrix_json(
    dates: list[str], symbols: list[str], values: np.ndarray | None, field_name: str
) -> dict[str, Any] | None:
    """A (dates x symbols) matrix as JSON `{"dates", "symbols", "values": [[...], ...]}`, NaN as null."""
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0 and not dates:
        return None
    if arr.ndim == 1 and len(symbols) == 1:
        arr = arr[:, None]
    expected = (len(dates), len(symbols))
    if arr.shape != expected:
        raise InvalidArgument(
            f"has shape {arr.shape}, expected {expected} (dates x symbols)", field=field_name
        )
    cells = arr.astype(object)
    cells[~np.isfinite(arr)] = None
    return {"dates": dates, "symbols": symbols, "values": cells.tolist()}


def _matrix_from_json(doc: Any) -> tuple[list[dt.date], list[str], np.ndarray] | None:
    if not isinstance(doc, Mapping) or "values" not in doc:
        return None
    symbols = [str(s) for s in doc.get("symbols") or []]
    dates = [dt.date.fromisoformat(str(d)) for d in doc.get("dates") or []]
    values = np.array(doc["values"], dtype=np.float64)  # None -> NaN
    if values.size == 0:
        values = values.reshape(len(dates), len(symbols))
    return dates, symbols, values


class PortfoliosMixin(RepositoryBase):
    """Portfolio backtests."""

    # ------------------------------------------------------------------ portfolio backtests

    def save_portfolio_backtest(
        self, portfolio: PortfolioBacktestRecord, *, request_id: str | None = None
    ) -> tuple[uuid.UUID, bool]:
        """Store a portfolio backtest; (portfolio_backtest_id, created)."""
        pid = parse_uuid(portfolio.portfolio_backtest_id, "portfolio.portfolio_backtest_id")
        values, details = self._portfolio_values(portfolio)

        def create(s: Session, eid: uuid.UUID) -> tuple[uuid.UUID, bool]:
            if s.get(BacktestPortfolioRow, eid) is not None:
                raise AlreadyExists(
                    f"portfolio backtest {eid} already exists", field="portfolio.portfolio_backtest_id"
                )
            now = utcnow()
            # Core INSERT: a None is an explicit NULL; an absent key takes the server default.
            s.execute(
                sa.insert(BacktestPortfolioRow).values(
                    portfolio_backtest_id=eid, created_at=now, updated_at=now, **values
                )
            )
            if details:
                s.execute(sa.insert(PortfolioDetailRow).values(portfolio_backtest_id=eid, **details))
            return eid, True

        def load(s: Session, eid: uuid.UUID) -> uuid.UUID | None:
            return eid if s.get(BacktestPortfolioRow, eid) is not None else None

        fingerprint = _fingerprint("portfolio_backtest", portfolio)
        return self._idempotent("portfolio_backtest", request_id, fingerprint, pid, create, load)

    @staticmethod
    def _portfolio_values(portfolio: PortfolioBacktestRecord) -> tuple[dict[str, Any], dict[str, Any]]:
        model = BacktestPortfolioRow
        start = parse_date(portfolio.start_date, "portfolio.start_date")
        end = parse_date(portfolio.end_date, "portfolio.end_date")
        if end < start:
            raise InvalidArgument(f"end_date {end} is before start_date {start}", field="portfolio.end_date")
        symbols: list[str] = []
        for i, sym in enumerate(portfolio.symbols or []):
            if not isinstance(sym, str) or not sym:
                raise InvalidArgument("must be a non-empty string", field=f"portfolio.symbols[{i}]")
            if sym in symbols:
                raise InvalidArgument(f"{sym!r} appears twice", field=f"portfolio.symbols[{i}]")
            symbols.append(sym)
        if not symbols:
            raise InvalidArgument("needs at least one symbol", field="portfolio.symbols")
        weights: dict[str, float] | None = None
        if portfolio.weights is not None:
            if not isinstance(portfolio.weights, Mapping):
                raise InvalidArgument("must map symbols to weights", field="portfolio.weights")
            weights = {}
            for sym, weight in portfolio.weights.items():
                path = f"portfolio.weights[{sym}]"
                if sym not in symbols:
                    raise InvalidArgument(f"{sym!r} is not one of the portfolio's symbols", field=path)
                if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
                    raise InvalidArgument(f"{weight!r} is not a number", field=path)
                if not math.isfinite(float(weight)):
                    raise InvalidArgument(f"{weight!r} is not finite", field=path)
                weights[str(sym)] = float(weight)
        values: dict[str, Any] = {
            "portfolio_name": _check_str(
                portfolio.portfolio_name, model.portfolio_name, "portfolio.portfolio_name", required=True
            ),
            "description": portfolio.description or None,
            "backtest_date": _check_aware(portfolio.backtest_date, "portfolio.backtest_date") or utcnow(),
            "start_date": start,
            "end_date": end,
            "symbols": symbols,
            "weights": weights,
            "rebalance_frequency": _check_choice(
                portfolio.rebalance_frequency, REBALANCE_FREQUENCIES, "portfolio.rebalance_frequency"
            ),
            "max_positions": _check_int(
                portfolio.max_positions, "portfolio.max_positions", minimum=1, required=False
            ),
            "position_sizing_method": _check_choice(
                portfolio.position_sizing_method, POSITION_SIZING_METHODS, "portfolio.position_sizing_method"
            ),
            "status": _check_choice(portfolio.status or "completed", BACKTEST_STATUSES, "portfolio.status"),
        }
        notes: list[str] = []
        for name in _PORTFOLIO_NUMBERS:
            raw = getattr(portfolio, name)
            if raw is None:
                continue  # initial_capital: the seed's server default; the others: NULL
            stored, why = _fit_column(raw, getattr(model, name))
            values[name] = stored
            if why:
                notes.append(f"{name}: {why}")
        values.update(dict.fromkeys(PORTFOLIO_METRIC_COLUMNS.values()))
        seen: dict[str, str] = {}
        reasons: dict[str, str] = {}
        metric_notes: dict[str, str] = {}
        extra: dict[str, float | None] = {}
        for name, raw in portfolio.metrics.items():
            column = PORTFOLIO_METRIC_COLUMNS.get(name) or (
                name if name in _PORTFOLIO_COLUMN_METRIC else None
            )
            if column is None:
                number = None if raw is None else float(raw)
                if number is not None and not math.isfinite(number):
                    reasons[name] = f"{number!r} is not finite"
                    number = None
                extra[name] = number
                if number is None and name not in reasons:
                    reasons[name] = portfolio.metric_reasons.get(name) or "undefined"
                continue
            if column in seen:
                raise InvalidArgument(
                    f"{name!r} and {seen[column]!r} both name column {column}",
                    field=f"portfolio.metrics.values[{name}]",
                )
            seen[column] = name
            reason: str | None
            if raw is None:
                reason = portfolio.metric_reasons.get(name) or "undefined"
                values[column] = None
            else:
                values[column], reason = _fit_column(raw, getattr(model, column))
            if reason:
                reasons[_PORTFOLIO_COLUMN_METRIC[column]] = reason
                metric_notes[column] = f"{column}: {reason}"
        notes += [metric_notes[c] for c in PORTFOLIO_METRIC_COLUMNS.values() if c in metric_notes]
        components: list[str] = []
        for i, raw_id in enumerate(portfolio.component_backtest_ids or []):
            cid = str(_required_uuid(raw_id, f"portfolio.component_backtest_ids[{i}]"))
            if cid in components:
                raise InvalidArgument(f"{cid} appears twice", field=f"portfolio.component_backtest_ids[{i}]")
            components.append(cid)
        values["component_backtest_ids"] = components or None
        series_dates = [
            parse_date(d, f"portfolio.dates[{i}]").isoformat() for i, d in enumerate(portfolio.dates or [])
        ]
        if len(set(series_dates)) != len(series_dates):
            raise InvalidArgument("dates must be unique", field="portfolio.dates")
        values["portfolio_equity_curve"] = _series_json(
            series_dates, portfolio.equity_curve, "portfolio.equity_curve"
        )
        values["portfolio_weights_history"] = _matrix_json(
            series_dates, symbols, portfolio.weights_history, "portfolio.weights_history"
        )
        all_notes = [n for n in [portfolio.notes or None, *notes] if n]
        values["notes"] = "\n".join(all_notes) if all_notes else None
        details: dict[str, Any] = {}
        if reasons:
            details["metric_reasons"] = reasons
        if extra:
            details["extra_metrics"] = _json_safe(extra)
        if portfolio.conventions:
            details["conventions"] = _json_safe(dict(portfolio.conventions))
        if details:
            details = {"metric_reasons": None, "extra_metrics": None, "conventions": None, **details}
        return values, details

    @staticmethod
    def _portfolio_record(
        row: BacktestPortfolioRow, detail: PortfolioDetailRow | None, *, include_series: bool
    ) -> PortfolioBacktestRecord:
        reasons: dict[str, str] = dict((detail.metric_reasons if detail else None) or {})
        metrics: dict[str, float | None] = {}
        for name, column in PORTFOLIO_METRIC_COLUMNS.items():
            value = getattr(row, column)
            if value is not None:
                metrics[name] = float(value)
            elif name in reasons:
                metrics[name] = None
        for name, value in ((detail.extra_metrics if detail else None) or {}).items():
            metrics[name] = value
        record = PortfolioBacktestRecord(
            portfolio_backtest_id=row.portfolio_backtest_id,
            portfolio_name=row.portfolio_name,
            description=row.description,
            backtest_date=row.backtest_date,
            start_date=row.start_date,
            end_date=row.end_date,
            symbols=[str(s) for s in row.symbols or []],
            weights=dict(row.weights) if isinstance(row.weights, Mapping) else None,
            rebalance_frequency=row.rebalance_frequency,
            initial_capital=_float(row.initial_capital),
            max_positions=row.max_positions,
            position_sizing_method=row.position_sizing_method,
            portfolio_stop_loss=_float(row.portfolio_stop_loss),
            max_sector_allocation=_float(row.max_sector_allocation),
            correlation_threshold=_float(row.correlation_threshold),
            metrics=metrics,
            metric_reasons={k: v for k, v in reasons.items() if metrics.get(k, 0.0) is None},
            conventions=dict((detail.conventions if detail else None) or {}),
            component_backtest_ids=[uuid.UUID(str(c)) for c in row.component_backtest_ids or []],
            status=row.status or "completed",
            notes=row.notes,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )
        if include_series:
            equity = _series_from_json(row.portfolio_equity_curve)
            history = _matrix_from_json(row.portfolio_weights_history)
            if equity is not None:
                record.dates, record.equity_curve = equity
            if history is not None:
                record.dates = record.dates or history[0]
                record.weights_history = history[2]
        return record

    def get_portfolio_backtest(self, portfolio_backtest_id: uuid.UUID | str) -> PortfolioBacktestRecord:
        """One portfolio backtest with its series."""
        pid = _required_uuid(portfolio_backtest_id, "portfolio_backtest_id")
        with self.db.session() as s:
            row = s.get(BacktestPortfolioRow, pid)
            if row is None:
                raise NotFound(f"portfolio backtest {pid} does not exist", field="portfolio_backtest_id")
            return self._portfolio_record(row, s.get(PortfolioDetailRow, pid), include_series=True)

    def list_portfolio_backtests(
        self, *, portfolio_name: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[PortfolioBacktestRecord]:
        """Portfolio backtests (without series), newest `backtest_date` first, keyset-paginated."""
        model = BacktestPortfolioRow
        stmt = sa.select(model).options(
            defer(model.portfolio_equity_curve), defer(model.portfolio_weights_history)
        )
        if portfolio_name:
            stmt = stmt.where(model.portfolio_name == portfolio_name)
        keys: list[_SortKey] = [
            (model.backtest_date, True, False),
            (model.portfolio_backtest_id, True, False),
        ]

        def records(s: Session, rows: list[BacktestPortfolioRow]) -> list[PortfolioBacktestRecord]:
            ids = [r.portfolio_backtest_id for r in rows]
            details: dict[uuid.UUID, PortfolioDetailRow] = {}
            for chunk in _chunks(ids):
                detail_stmt = sa.select(PortfolioDetailRow).where(
                    PortfolioDetailRow.portfolio_backtest_id.in_(chunk)
                )
                details.update((d.portfolio_backtest_id, d) for d in s.scalars(detail_stmt))
            return [
                self._portfolio_record(r, details.get(r.portfolio_backtest_id), include_series=False)
                for r in rows
            ]

        return self._keyset_page(
            stmt,
            keys,
            kind="portfolios",
            filters={"portfolio_name": portfolio_name or None},
            page_size=page_size,
            page_token=page_token,
            limits=_PORTFOLIO_PAGE,
            records=records,
        )
