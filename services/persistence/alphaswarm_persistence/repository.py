"""The catalog operations: plain SQLAlchemy over `Database`, no gRPC, no protos.

`CatalogRepository` is what `servicer.py` adapts to `PersistenceService`; tests,
benchmarks and the embedded launcher may call it directly. It takes and
returns the plain records defined here (dataclasses, dicts, NumPy arrays,
aware UTC datetimes) and raises `alphaswarm_common.errors` classes whose
`field` is the dotted path of the offending field in the RPC's request
message (`run.deployment_id`, `page_size`, `batch.fields[prediction]`, ...).

Behaviour a caller can rely on:

* Transactions. Every public method is one transaction: a create writes the
  entity, its children and its idempotency key together or not at all.
* Idempotency (AIP-155). A `request_id` is kept in `catalog_request_keys`
  under (kind, request_id) — kinds `alpha_backtest_run`, `deployment`,
  `backtest_result` — with the SHA-256 of the request. The same key with the
  same request returns the entity created the first time (`created=False`);
  the same key with a different request is `AlreadyExists` (reason
  `REQUEST_ID_REUSED`, field `request_id`). Concurrent requests with one key
  create one entity: the key row is inserted before the entity, so the
  loser of the race blocks on the unique key, rolls back and reads the
  winner's entity.
* Runs. `create_alpha_backtest_run` writes the task (kind `alpha_backtest`)
  and the run; ids left empty are assigned. `update_alpha_backtest_run` takes
  `{field name of AlphaBacktestRun: new value}`; `state`, `stage` and `error`
  are mirrored to the task (`pct` becomes 100 on success). Moving to
  `running` stamps `started_at`, reaching a terminal state stamps
  `finished_at` and `duration_seconds`, each unless the same update sets it
  or it is already set. A terminal state (succeeded, failed, cancelled) is
  final: changing it to another state is `FailedPrecondition`.
* Deployments. `save_deployment` creates (no id: a new UUID is assigned) or
  replaces the mutable fields of an existing deployment. Creating with a
  caller-chosen id is not allowed: an id that does not exist is `NotFound`,
  so a mistyped id cannot silently fork a second deployment. When an update
  changes `model_version` and the caller sends no `history`, the previous
  version is appended to the history as `{version, from, to}` (ISO-8601 UTC).
* Prediction audit. `save_prediction_audit` replaces the run's rows (delete
  then insert in one transaction) with one row per (date, symbol) whose
  prediction is not NaN; NaN in the other fields is stored as NULL; an
  infinite value is `InvalidArgument`. PostgreSQL is written through psycopg
  3 binary `COPY ... FROM STDIN` with the COPY buffer built by NumPy (no
  per-row Python), SQLite through `executemany` in batches. The run's
  `predictions_captured` becomes whether any row was written.
* Backtest results. Metric names map to the seed columns (`METRIC_COLUMNS`;
  the column names themselves are accepted too). Values are rounded half
  away from zero to the column scale — as PostgreSQL does — on both
  databases. A value that does not fit its column (|x| >= 10^(p-s) after
  rounding, or outside INT4 for integer columns), an infinite value, or an
  undefined one is stored as NULL and the reason is appended to `notes`
  (`"sharpe_ratio: 12345.6 exceeds Numeric(8,4)"`, `"profit_factor: no losing
  trades"`); a save never fails because of one metric, and 0.0 stays 0.0.
  The same applies to the optional numeric columns of trades (reason lines
  start with `trade <n>`); a trade's required `entry_price` that does not fit
  is `InvalidArgument`. Metrics without a column, the reasons of NULL
  metrics and the MetricSet's conventions are kept under the reserved key
  `"_alphaswarm"` of the `parameters` JSON and removed again on read, so a
  MetricSet survives the round trip. The trade fields the seed table lacks
  (symbol, duration_bars) live in `catalog_trade_details`. Equity curve and
  drawdown series are JSON `{"dates": [...], "values": [...]}` with NaN as
  null.
* Pagination. Every list is keyset-paginated, so pages stay stable while rows
  are inserted or deleted. A page token is URL-safe base64 of JSON
  `{"c": cursor, "f": filter hash}`; a token used with other filters or
  another order is `InvalidArgument(field="page_token")`. Runs and
  deployments: newest first on (created_at, id). Prediction audit: (date,
  symbol) ascending, symbols in code-point order on both databases. Backtest
  results: `order_by` column (default `-backtest_date`), NULLs last in both
  directions on both databases, ties broken by `backtest_id` in the same
  direction. `page_size` 0 means the default, a negative one is
  `InvalidArgument`, larger than the maximum is clamped (AIP-158).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Generic, TypeVar, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from alphaswarm_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import (
    AUDIT_VALUE_FIELDS,
    AlphaBacktestRunRow,
    BacktestResultRow,
    BacktestTradeRow,
    DeploymentRow,
    PredictionAuditRow,
    RequestKeyRow,
    TaskRow,
    TradeDetailRow,
    utcnow,
)

__all__ = [
    "DEPLOYMENT_STATES",
    "METRIC_COLUMNS",
    "RUN_STATES",
    "RUN_UPDATABLE_FIELDS",
    "TERMINAL_RUN_STATES",
    "AlphaBacktestRunRecord",
    "BacktestResultRecord",
    "CatalogRepository",
    "DeploymentRecord",
    "Page",
    "PredictionAuditBatch",
    "PredictionAuditRecord",
    "TaskRecord",
    "TradeRecord",
    "parse_date",
    "parse_uuid",
]

T = TypeVar("T")

RUN_STATES: tuple[str, ...] = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL_RUN_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
DEPLOYMENT_STATES: tuple[str, ...] = ("active", "retired")
TASK_KIND_ALPHA_BACKTEST = "alpha_backtest"

RUN_UPDATABLE_FIELDS: frozenset[str] = frozenset(
    {
        "run_name",
        "state",
        "stage",
        "config",
        "model_name",
        "model_version",
        "deployment_id",
        "mlflow_parent_run_id",
        "mlflow_train_run_id",
        "mlflow_backtest_run_id",
        "backtest_id",
        "combined_metrics",
        "error",
        "started_at",
        "finished_at",
        "duration_seconds",
        "predictions_captured",
    }
)
_RUN_IMMUTABLE_FIELDS = frozenset({"run_id", "task_id", "created_at", "updated_at"})

METRIC_COLUMNS: dict[str, str] = {
    "total_return": "total_return",
    "annualized_return": "annualized_return",
    "sharpe": "sharpe_ratio",
    "sortino": "sortino_ratio",
    "calmar": "calmar_ratio",
    "max_drawdown": "max_drawdown",
    "max_drawdown_duration": "max_drawdown_duration",
    "volatility": "volatility",
    "downside_volatility": "downside_volatility",
    "total_trades": "total_trades",
    "winning_trades": "winning_trades",
    "losing_trades": "losing_trades",
    "win_rate": "win_rate",
    "profit_factor": "profit_factor",
    "average_win": "average_win",
    "average_loss": "average_loss",
    "largest_win": "largest_win",
    "largest_loss": "largest_loss",
    "final_value": "final_portfolio_value",
    "peak_value": "peak_portfolio_value",
    "beta": "beta",
    "alpha": "alpha",
}
"""MetricSet name -> `mcp_backtest_results` column. Column names are accepted as metric names too."""

_COLUMN_METRIC = {col: name for name, col in METRIC_COLUMNS.items()}
_ORDERABLE_EXTRA = (
    "backtest_date",
    "created_at",
    "updated_at",
    "start_date",
    "end_date",
    "initial_capital",
    "fees",
    "slippage",
    "execution_time_seconds",
    "data_points",
)
_RESERVED_PARAMETERS_KEY = "_alphaswarm"
_INT4_MAX = 2**31 - 1
_AUDIT_FIELD_SET = frozenset(AUDIT_VALUE_FIELDS)
_SQLITE_BATCH_ROWS = 100_000
_COPY_CHUNK_ROWS = 200_000
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01 in days: PostgreSQL's binary date epoch

_RUN_PAGE = (50, 500)
_DEPLOYMENT_PAGE = (50, 500)
_BACKTEST_PAGE = (50, 500)
_AUDIT_PAGE = (500, 10_000)


# =========================================================================== records


@dataclass(slots=True)
class TaskRecord:
    """A row of `tasks`."""

    task_id: uuid.UUID
    kind: str
    state: str
    stage: str | None
    pct: float
    error: dict[str, Any] | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(slots=True)
class AlphaBacktestRunRecord:
    """An alpha-backtest run (the fields of `alphaswarm.common.v1.AlphaBacktestRun`).

    On create, `run_id` / `task_id` None are assigned, `run_name` empty falls
    back to `config["run_name"]` then "alpha-backtest", and `created_at` /
    `updated_at` are ignored (the server stamps them). `error` is
    `{stage, code, message, field}`.
    """

    run_name: str = ""
    run_id: uuid.UUID | None = None
    task_id: uuid.UUID | None = None
    state: str = "pending"
    stage: str | None = None
    config: dict[str, Any] | None = None
    model_name: str | None = None
    model_version: str | None = None
    deployment_id: uuid.UUID | None = None
    mlflow_parent_run_id: str | None = None
    mlflow_train_run_id: str | None = None
    mlflow_backtest_run_id: str | None = None
    backtest_id: uuid.UUID | None = None
    combined_metrics: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_seconds: float | None = None
    predictions_captured: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class DeploymentRecord:
    """A deployment (DeployedModelAlpha).

    `state` None means "active" on create and "unchanged" on update; `history`
    None means "maintained by the catalog" (see the module docstring).
    """

    model_name: str
    model_version: str
    deployment_id: uuid.UUID | None = None
    model_alias: str | None = None
    model_uri: str | None = None
    dataset_cfg: dict[str, Any] | None = None
    strategy_cfg: dict[str, Any] | None = None
    state: str | None = None
    history: list[dict[str, Any]] | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class PredictionAuditBatch:
    """The audit of one run as matrices over (dates x symbols).

    `fields` maps names of `AUDIT_VALUE_FIELDS` to (T, N) arrays; `prediction`
    is required, the others are optional (absent means NULL). `dates` are
    `datetime64[D]` values or ISO-8601 strings.
    """

    dates: Sequence[Any] | np.ndarray
    symbols: Sequence[str]
    fields: Mapping[str, np.ndarray]


@dataclass(slots=True, frozen=True)
class PredictionAuditRecord:
    """A stored audit row; a NULL value is None."""

    date: dt.date
    symbol: str
    prediction: float | None
    realized_return: float | None
    target_weight: float | None
    held_weight: float | None
    pnl_contribution: float | None


@dataclass(slots=True)
class TradeRecord:
    """A trade: `mcp_backtest_trades` plus its `catalog_trade_details` row.

    Optional numbers that are None are stored as NULL; `exit_date` None means
    the trade was still open.
    """

    trade_number: int
    direction: str
    entry_date: dt.date
    entry_price: float
    symbol: str | None = None
    exit_date: dt.date | None = None
    exit_price: float | None = None
    position_size: float | None = None
    pnl: float | None = None
    pnl_percent: float | None = None
    mae: float | None = None
    mfe: float | None = None
    duration_bars: int | None = None
    duration_days: int | None = None
    exit_reason: str | None = None
    fees_paid: float | None = None
    slippage_cost: float | None = None


@dataclass(slots=True)
class BacktestResultRecord:
    """A backtest result: one row of `mcp_backtest_results`.

    `metrics` maps MetricSet names (or column names) to values, None for
    undefined ones, whose reasons are in `metric_reasons`. `conventions` is the
    MetricSet's conventions document. `dates` index `equity_curve` and
    `drawdown_series` (1-D float arrays, NaN for missing). `initial_capital`,
    `fees`, `slippage` None take the seed's server defaults. On read, `notes`
    contains the reasons of every metric stored as NULL.
    """

    symbol: str
    strategy_type: str
    start_date: dt.date
    end_date: dt.date
    backtest_id: uuid.UUID | None = None
    backtest_date: dt.datetime | None = None
    initial_capital: float | None = None
    fees: float | None = None
    slippage: float | None = None
    parameters: dict[str, Any] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_reasons: dict[str, str] = field(default_factory=dict)
    conventions: dict[str, Any] = field(default_factory=dict)
    dates: list[dt.date] | None = None
    equity_curve: np.ndarray | None = None
    drawdown_series: np.ndarray | None = None
    execution_time_seconds: float | None = None
    data_points: int | None = None
    status: str = "completed"
    error_message: str | None = None
    notes: str | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass(slots=True)
class Page(Generic[T]):
    """One page of a list; `next_page_token` is empty on the last page."""

    items: list[T]
    next_page_token: str = ""
    total_size: int | None = None


# =========================================================================== helpers


def parse_uuid(value: uuid.UUID | str | None, field_name: str, *, required: bool = False) -> uuid.UUID | None:
    """A UUID from a UUID or its text; empty is None (InvalidArgument naming `field_name` when required or malformed)."""
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, AttributeError, TypeError):
        raise InvalidArgument(f"{value!r} is not a UUID", field=field_name) from None


def _required_uuid(value: uuid.UUID | str | None, field_name: str) -> uuid.UUID:
    parsed = parse_uuid(value, field_name, required=True)
    assert parsed is not None
    return parsed


def _as_date(value: Any, field_name: str, *, required: bool = True) -> dt.date | None:
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required (YYYY-MM-DD)", field=field_name)
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, np.datetime64):
        return dt.date.fromisoformat(str(value.astype("datetime64[D]")))
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise InvalidArgument(f"{value!r} is not a date (YYYY-MM-DD)", field=field_name) from None


def parse_date(value: Any, field_name: str) -> dt.date:
    """A required date from a date, datetime64 or ISO-8601 text (InvalidArgument naming `field_name`)."""
    parsed = _as_date(value, field_name)
    assert parsed is not None
    return parsed


def _check_aware(value: dt.datetime | None, field_name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise InvalidArgument(f"{value!r} is not a timestamp", field=field_name)
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument("must be timezone-aware", field=field_name)
    return value.astimezone(dt.UTC)


def _column_length(column: Any) -> int | None:
    return getattr(column.type, "length", None)


def _check_str(value: str | None, column: Any, field_name: str, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"{value!r} is not a string", field=field_name)
    length = _column_length(column)
    if length is not None and len(value) > length:
        raise InvalidArgument(
            f"is {len(value)} characters long, at most {length} are stored", field=field_name
        )
    return value


def _json_safe(value: Any) -> Any:
    """A JSON document with NaN/inf as null, NumPy scalars as Python, dates as ISO strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _check_json(value: Any, field_name: str, *, kind: type | tuple[type, ...] = dict) -> Any:
    if value is None:
        return None
    if not isinstance(value, kind):
        raise InvalidArgument(f"must be a JSON {getattr(kind, '__name__', 'document')}", field=field_name)
    return _json_safe(value)


def _fingerprint(*parts: Any) -> str:
    def canon(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: canon(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name not in ("created_at", "updated_at")
            }
        if isinstance(value, np.ndarray):
            return [None if isinstance(v, float) and math.isnan(v) else v for v in value.tolist()]
        if isinstance(value, float) and math.isnan(value):
            return "NaN"
        if isinstance(value, Mapping):
            return {str(k): canon(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [canon(v) for v in value]
        return value

    doc = json.dumps([canon(p) for p in parts], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(doc.encode()).hexdigest()


def _page_size(value: int | None, default: int, maximum: int) -> int:
    size = int(value or 0)
    if size < 0:
        raise InvalidArgument(f"must not be negative (got {size})", field="page_size")
    return default if size == 0 else min(size, maximum)


def _filter_hash(kind: str, filters: Mapping[str, Any]) -> str:
    doc = json.dumps({"kind": kind, **filters}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _encode_token(kind: str, cursor: list[Any], filters: Mapping[str, Any]) -> str:
    doc = {"c": cursor, "f": _filter_hash(kind, filters)}
    raw = json.dumps(doc, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str | None, kind: str, filters: Mapping[str, Any], arity: int) -> list[Any] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        doc = json.loads(raw)
        cursor = doc["c"]
        fhash = doc["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument("is not a page token of this list", field="page_token") from None
    if not isinstance(cursor, list) or len(cursor) != arity:
        raise InvalidArgument("is not a page token of this list", field="page_token")
    if fhash != _filter_hash(kind, filters):
        raise InvalidArgument(
            "was issued for other filters or another order; repeat the request that produced it",
            field="page_token",
        )
    return cursor


def _parse_token_datetime(value: Any) -> dt.datetime:
    try:
        out = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidArgument("is not a page token of this list", field="page_token") from None
    if out.tzinfo is None:
        raise InvalidArgument("is not a page token of this list", field="page_token")
    return out


def _parse_token_uuid(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise InvalidArgument("is not a page token of this list", field="page_token") from None


def _fit_numeric(value: float, precision: int, scale: int) -> tuple[float | None, str | None]:
    """Round half away from zero to `scale` (as PostgreSQL does); None and a reason when it does not fit."""
    quantum = decimal.Decimal(1).scaleb(-scale)
    rounded = decimal.Decimal(repr(float(value))).quantize(quantum, rounding=decimal.ROUND_HALF_UP)
    if abs(rounded) >= decimal.Decimal(10) ** (precision - scale):
        return None, f"{float(value)!r} exceeds Numeric({precision},{scale})"
    return float(rounded), None


def _fit_column(value: Any, column: Any) -> tuple[float | int | None, str | None]:
    """The value to store in a numeric/integer column and, when it becomes NULL, why."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None, f"{value!r} is not a number"
    number = float(value)
    if math.isnan(number):
        return None, "NaN is not a number"
    if math.isinf(number):
        return None, f"{number!r} is not finite"
    col_type = column.type
    if isinstance(col_type, sa.Integer):
        integral = round(number)
        if abs(integral) > _INT4_MAX:
            return None, f"{number!r} exceeds Integer"
        return int(integral), None
    if isinstance(col_type, sa.Numeric) and not isinstance(col_type, sa.Float):
        return _fit_numeric(number, int(col_type.precision or 0), int(col_type.scale or 0))
    return number, None


def _metric_column(name: str) -> str | None:
    if name in METRIC_COLUMNS:
        return METRIC_COLUMNS[name]
    if name in _COLUMN_METRIC:
        return name
    return None


def _series_json(dates: list[str], values: np.ndarray | None, field_name: str) -> dict[str, Any] | None:
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidArgument(f"must be 1-D, got shape {arr.shape}", field=field_name)
    if arr.size == 0 and not dates:
        return None
    if arr.size != len(dates):
        raise InvalidArgument(f"has {arr.size} values for {len(dates)} dates", field=field_name)
    out: list[float | None] = [v if math.isfinite(v) else None for v in arr.tolist()]
    return {"dates": dates, "values": out}


def _series_from_json(doc: Any) -> tuple[list[dt.date], np.ndarray] | None:
    if not isinstance(doc, Mapping) or "values" not in doc:
        return None
    values = np.asarray([np.nan if v is None else v for v in doc["values"]], dtype=np.float64)
    dates = [dt.date.fromisoformat(str(d)) for d in doc.get("dates") or []]
    return dates, values


# =========================================================================== repository


class CatalogRepository:
    """The catalog operations over one `Database` (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------------ idempotency

    def _idempotent(
        self,
        kind: str,
        request_id: str | None,
        fingerprint: str,
        entity_id: uuid.UUID | None,
        create: Callable[[Session, uuid.UUID], tuple[T, bool]],
        load: Callable[[Session, uuid.UUID], T | None],
    ) -> tuple[T, bool]:
        """Run `create` once per (kind, request_id); replay the stored entity for a repeated key.

        `create(session, entity_id)` returns (result, created). The key row is
        inserted and flushed first, so a concurrent request with the same key
        waits on the unique key and fails there, before creating anything.
        """
        eid = entity_id or uuid.uuid4()
        if not request_id:
            try:
                with self.db.session(write=True) as s:
                    return create(s, eid)
            except IntegrityError as exc:
                raise AlreadyExists(f"conflicts with a stored row: {exc.orig}") from exc
        _check_str(request_id, RequestKeyRow.request_id, "request_id")
        last_error: IntegrityError | None = None
        for _attempt in range(5):
            try:
                with self.db.session(write=True) as s:
                    key = s.get(RequestKeyRow, (kind, request_id))
                    if key is not None:
                        if key.fingerprint != fingerprint:
                            raise AlreadyExists(
                                f"request_id {request_id!r} was already used for a different {kind} request",
                                field="request_id",
                                reason="REQUEST_ID_REUSED",
                            )
                        existing = load(s, key.entity_id)
                        if existing is not None:
                            return existing, False
                        # The entity was deleted since: the key is stale, start over.
                        s.delete(key)
                        s.flush()
                    s.add(
                        RequestKeyRow(
                            kind=kind, request_id=request_id, entity_id=eid, fingerprint=fingerprint
                        )
                    )
                    s.flush()
                    return create(s, eid)
            except IntegrityError as exc:
                # Another transaction stored the key (or the entity) first: read it on the next attempt.
                last_error = exc
                continue
        raise AlreadyExists(f"request_id {request_id!r} kept conflicting: {last_error}", field="request_id")

    # ------------------------------------------------------------------ runs

    @staticmethod
    def _run_record(row: AlphaBacktestRunRow) -> AlphaBacktestRunRecord:
        return AlphaBacktestRunRecord(
            run_id=row.run_id,
            task_id=row.task_id,
            run_name=row.run_name,
            state=row.state,
            stage=row.stage,
            config=row.config,
            model_name=row.model_name,
            model_version=row.model_version,
            deployment_id=row.deployment_id,
            mlflow_parent_run_id=row.mlflow_parent_run_id,
            mlflow_train_run_id=row.mlflow_train_run_id,
            mlflow_backtest_run_id=row.mlflow_backtest_run_id,
            backtest_id=row.backtest_id,
            combined_metrics=row.combined_metrics,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
            duration_seconds=row.duration_seconds,
            predictions_captured=bool(row.predictions_captured),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    @staticmethod
    def _check_state(state: str, field_name: str) -> str:
        if state not in RUN_STATES:
            raise InvalidArgument(f"{state!r} is not one of {', '.join(RUN_STATES)}", field=field_name)
        return state

    @staticmethod
    def _check_error(error: Mapping[str, Any] | None, field_name: str) -> dict[str, Any] | None:
        if error is None:
            return None
        if not isinstance(error, Mapping):
            raise InvalidArgument("must be {stage, code, message, field}", field=field_name)
        unknown = set(error) - {"stage", "code", "message", "field"}
        if unknown:
            raise InvalidArgument(
                f"unknown keys {sorted(unknown)}; expected stage, code, message, field", field=field_name
            )
        return {
            k: (None if error.get(k) in (None, "") else str(error[k]))
            for k in ("stage", "code", "message", "field")
        }

    @staticmethod
    def _check_link(
        session: Session, model: Any, value: uuid.UUID | None, field_name: str, what: str
    ) -> None:
        if value is not None and session.get(model, value) is None:
            raise NotFound(f"{what} {value} does not exist", field=field_name)

    def create_alpha_backtest_run(
        self, run: AlphaBacktestRunRecord, *, request_id: str | None = None
    ) -> tuple[AlphaBacktestRunRecord, bool]:
        """Create a run and its task in one transaction; (run, created). See the module docstring."""
        run_id = parse_uuid(run.run_id, "run.run_id")
        task_id = parse_uuid(run.task_id, "run.task_id")
        config = _check_json(run.config, "run.config")
        run_name = run.run_name or (config or {}).get("run_name") or "alpha-backtest"
        values: dict[str, Any] = {
            "run_name": _check_str(run_name, AlphaBacktestRunRow.run_name, "run.run_name", required=True),
            "state": self._check_state(run.state or "pending", "run.state"),
            "stage": _check_str(run.stage, AlphaBacktestRunRow.stage, "run.stage"),
            "config": config,
            "model_name": _check_str(run.model_name, AlphaBacktestRunRow.model_name, "run.model_name"),
            "model_version": _check_str(
                run.model_version, AlphaBacktestRunRow.model_version, "run.model_version"
            ),
            "deployment_id": parse_uuid(run.deployment_id, "run.deployment_id"),
            "backtest_id": parse_uuid(run.backtest_id, "run.backtest_id"),
            "combined_metrics": _check_json(run.combined_metrics, "run.combined_metrics"),
            "error": self._check_error(run.error, "run.error"),
            "started_at": _check_aware(run.started_at, "run.started_at"),
            "finished_at": _check_aware(run.finished_at, "run.finished_at"),
            "duration_seconds": self._check_duration(run.duration_seconds, "run.duration_seconds"),
            "predictions_captured": bool(run.predictions_captured),
        }
        for name in ("mlflow_parent_run_id", "mlflow_train_run_id", "mlflow_backtest_run_id"):
            values[name] = _check_str(getattr(run, name), getattr(AlphaBacktestRunRow, name), f"run.{name}")

        def create(s: Session, eid: uuid.UUID) -> tuple[AlphaBacktestRunRecord, bool]:
            if s.get(AlphaBacktestRunRow, eid) is not None:
                raise AlreadyExists(f"run {eid} already exists", field="run.run_id")
            tid = task_id or uuid.uuid4()
            if s.get(TaskRow, tid) is not None:
                raise AlreadyExists(f"task {tid} already exists", field="run.task_id")
            self._check_link(s, DeploymentRow, values["deployment_id"], "run.deployment_id", "deployment")
            self._check_link(
                s, BacktestResultRow, values["backtest_id"], "run.backtest_id", "backtest result"
            )
            now = utcnow()
            s.add(
                TaskRow(
                    task_id=tid,
                    kind=TASK_KIND_ALPHA_BACKTEST,
                    state=values["state"],
                    stage=values["stage"],
                    pct=100.0 if values["state"] == "succeeded" else 0.0,
                    error=values["error"],
                    created_at=now,
                    updated_at=now,
                )
            )
            s.flush()
            row = AlphaBacktestRunRow(run_id=eid, task_id=tid, created_at=now, updated_at=now, **values)
            s.add(row)
            s.flush()
            return self._run_record(row), True

        def load(s: Session, eid: uuid.UUID) -> AlphaBacktestRunRecord | None:
            row = s.get(AlphaBacktestRunRow, eid)
            return None if row is None else self._run_record(row)

        fingerprint = _fingerprint("alpha_backtest_run", run)
        return self._idempotent("alpha_backtest_run", request_id, fingerprint, run_id, create, load)

    @staticmethod
    def _check_duration(value: float | None, field_name: str) -> float | None:
        if value is None:
            return None
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise InvalidArgument(f"must be a finite number of seconds >= 0, got {value!r}", field=field_name)
        return number

    def update_alpha_backtest_run(
        self, run_id: uuid.UUID | str, changes: Mapping[str, Any]
    ) -> AlphaBacktestRunRecord:
        """Apply `changes` ({AlphaBacktestRun field name: value}) to a run and mirror state/stage/error to its task."""
        rid = _required_uuid(run_id, "run.run_id")
        if not changes:
            raise InvalidArgument("names no field to update", field="update_mask")
        for name in changes:
            if name in _RUN_IMMUTABLE_FIELDS:
                raise InvalidArgument(f"{name!r} cannot be changed", field="update_mask")
            if name not in RUN_UPDATABLE_FIELDS:
                raise InvalidArgument(
                    f"unknown field {name!r}; updatable fields: {', '.join(sorted(RUN_UPDATABLE_FIELDS))}",
                    field="update_mask",
                )
        values: dict[str, Any] = {}
        for name, value in changes.items():
            path = f"run.{name}"
            if name == "state":
                values[name] = self._check_state(value, path)
            elif name == "run_name":
                values[name] = _check_str(value, AlphaBacktestRunRow.run_name, path, required=True)
            elif name in ("config", "combined_metrics"):
                values[name] = _check_json(value, path)
            elif name == "error":
                values[name] = self._check_error(value, path)
            elif name in ("deployment_id", "backtest_id"):
                values[name] = parse_uuid(value, path)
            elif name in ("started_at", "finished_at"):
                values[name] = _check_aware(value, path)
            elif name == "duration_seconds":
                values[name] = self._check_duration(value, path)
            elif name == "predictions_captured":
                values[name] = bool(value)
            else:
                values[name] = _check_str(value, getattr(AlphaBacktestRunRow, name), path)

        with self.db.session(write=True) as s:
            row = s.get(AlphaBacktestRunRow, rid, with_for_update=True)
            if row is None:
                raise NotFound(f"run {rid} does not exist", field="run.run_id")
            if "deployment_id" in values:
                self._check_link(s, DeploymentRow, values["deployment_id"], "run.deployment_id", "deployment")
            if "backtest_id" in values:
                self._check_link(
                    s, BacktestResultRow, values["backtest_id"], "run.backtest_id", "backtest result"
                )
            new_state = values.get("state", row.state)
            if row.state in TERMINAL_RUN_STATES and new_state != row.state:
                raise FailedPrecondition(
                    f"run {rid} is {row.state}, a terminal state; it cannot become {new_state}",
                    field="run.state",
                )
            now = utcnow()
            if new_state == "running" and "started_at" not in values and row.started_at is None:
                values["started_at"] = now
            if new_state in TERMINAL_RUN_STATES and "finished_at" not in values and row.finished_at is None:
                values["finished_at"] = now
            for name, value in values.items():
                setattr(row, name, value)
            if (
                "duration_seconds" not in values
                and row.duration_seconds is None
                and row.started_at
                and row.finished_at
            ):
                row.duration_seconds = max((row.finished_at - row.started_at).total_seconds(), 0.0)
            row.updated_at = now
            if {"state", "stage", "error"} & values.keys():
                task = s.get(TaskRow, row.task_id, with_for_update=True)
                if task is not None:
                    task.state = row.state
                    task.stage = row.stage
                    task.error = row.error
                    if row.state == "succeeded":
                        task.pct = 100.0
                    task.updated_at = now
            s.flush()
            return self._run_record(row)

    def get_alpha_backtest_run(
        self, *, run_id: uuid.UUID | str | None = None, task_id: uuid.UUID | str | None = None
    ) -> AlphaBacktestRunRecord:
        """One run by run id, or by task id when the run id is empty."""
        rid = parse_uuid(run_id, "run_id")
        tid = parse_uuid(task_id, "task_id")
        if rid is None and tid is None:
            raise InvalidArgument("give run_id or task_id", field="run_id")
        with self.db.session() as s:
            if rid is not None:
                row = s.get(AlphaBacktestRunRow, rid)
                if row is None or (tid is not None and row.task_id != tid):
                    raise NotFound(
                        f"run {rid} does not exist" + (f" for task {tid}" if tid else ""), field="run_id"
                    )
            else:
                row = s.scalars(
                    sa.select(AlphaBacktestRunRow).where(AlphaBacktestRunRow.task_id == tid)
                ).one_or_none()
                if row is None:
                    raise NotFound(f"no run for task {tid}", field="task_id")
            return self._run_record(row)

    def get_task(self, task_id: uuid.UUID | str) -> TaskRecord:
        """One task."""
        tid = _required_uuid(task_id, "task_id")
        with self.db.session() as s:
            row = s.get(TaskRow, tid)
            if row is None:
                raise NotFound(f"task {tid} does not exist", field="task_id")
            return TaskRecord(
                task_id=row.task_id,
                kind=row.kind,
                state=row.state,
                stage=row.stage,
                pct=row.pct,
                error=row.error,
                created_at=row.created_at,
                updated_at=row.updated_at,
            )

    def list_alpha_backtest_runs(
        self, *, page_size: int = 0, page_token: str = "", state: str | None = None
    ) -> Page[AlphaBacktestRunRecord]:
        """Runs newest first (created_at, run_id descending), optionally of one state."""
        size = _page_size(page_size, *_RUN_PAGE)
        if state:
            self._check_state(state, "state")
        filters = {"state": state or None}
        cursor = _decode_token(page_token, "runs", filters, 2)
        model = AlphaBacktestRunRow
        stmt = sa.select(model)
        if state:
            stmt = stmt.where(model.state == state)
        if cursor is not None:
            c_at, c_id = _parse_token_datetime(cursor[0]), _parse_token_uuid(cursor[1])
            stmt = stmt.where(
                sa.or_(model.created_at < c_at, sa.and_(model.created_at == c_at, model.run_id < c_id))
            )
        stmt = stmt.order_by(model.created_at.desc(), model.run_id.desc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._run_record(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("runs", [last.created_at.isoformat(), str(last.run_id)], filters)
        return Page(items, token)

    # ------------------------------------------------------------------ deployments

    @staticmethod
    def _deployment_record(row: DeploymentRow) -> DeploymentRecord:
        return DeploymentRecord(
            deployment_id=row.deployment_id,
            model_name=row.model_name,
            model_version=row.model_version,
            model_alias=row.model_alias,
            model_uri=row.model_uri,
            dataset_cfg=row.dataset_cfg,
            strategy_cfg=row.strategy_cfg,
            state=row.state,
            history=list(row.history or []),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def save_deployment(
        self, deployment: DeploymentRecord, *, request_id: str | None = None
    ) -> tuple[DeploymentRecord, bool]:
        """Create (no id) or update (existing id) a deployment; (deployment, created)."""
        did = parse_uuid(deployment.deployment_id, "deployment.deployment_id")
        state = deployment.state or None
        if state is not None and state not in DEPLOYMENT_STATES:
            raise InvalidArgument(
                f"{state!r} is not one of {', '.join(DEPLOYMENT_STATES)}", field="deployment.state"
            )
        values: dict[str, Any] = {
            "model_name": _check_str(
                deployment.model_name, DeploymentRow.model_name, "deployment.model_name", required=True
            ),
            "model_version": _check_str(
                deployment.model_version,
                DeploymentRow.model_version,
                "deployment.model_version",
                required=True,
            ),
            "model_alias": _check_str(
                deployment.model_alias, DeploymentRow.model_alias, "deployment.model_alias"
            ),
            "model_uri": _check_str(deployment.model_uri, DeploymentRow.model_uri, "deployment.model_uri"),
            "dataset_cfg": _check_json(deployment.dataset_cfg, "deployment.dataset_cfg"),
            "strategy_cfg": _check_json(deployment.strategy_cfg, "deployment.strategy_cfg"),
        }
        history = _check_json(deployment.history, "deployment.history", kind=list)

        def save(s: Session, eid: uuid.UUID) -> tuple[DeploymentRecord, bool]:
            now = utcnow()
            if did is None:
                row = DeploymentRow(
                    deployment_id=eid,
                    state=state or "active",
                    history=history or [],
                    created_at=now,
                    updated_at=now,
                    **values,
                )
                s.add(row)
                s.flush()
                return self._deployment_record(row), True
            current = s.get(DeploymentRow, did, with_for_update=True)
            if current is None:
                raise NotFound(
                    f"deployment {did} does not exist; leave deployment_id empty to create one "
                    "(ids are assigned by the catalog)",
                    field="deployment.deployment_id",
                )
            if history is not None:
                current.history = history
            elif values["model_version"] != current.model_version:
                past = list(current.history or [])
                since = past[-1].get("to") if past and isinstance(past[-1], dict) else None
                past.append(
                    {
                        "version": current.model_version,
                        "from": since or current.created_at.isoformat(),
                        "to": now.isoformat(),
                    }
                )
                current.history = past
            for name, value in values.items():
                setattr(current, name, value)
            if state is not None:
                current.state = state
            current.updated_at = now
            s.flush()
            return self._deployment_record(current), False

        def load(s: Session, eid: uuid.UUID) -> DeploymentRecord | None:
            row = s.get(DeploymentRow, eid)
            return None if row is None else self._deployment_record(row)

        fingerprint = _fingerprint("deployment", deployment)
        return self._idempotent("deployment", request_id, fingerprint, did, save, load)

    def get_deployment(self, deployment_id: uuid.UUID | str) -> DeploymentRecord:
        """One deployment."""
        did = _required_uuid(deployment_id, "deployment_id")
        with self.db.session() as s:
            row = s.get(DeploymentRow, did)
            if row is None:
                raise NotFound(f"deployment {did} does not exist", field="deployment_id")
            return self._deployment_record(row)

    def list_deployments(self, *, page_size: int = 0, page_token: str = "") -> Page[DeploymentRecord]:
        """Deployments newest first (created_at, deployment_id descending)."""
        size = _page_size(page_size, *_DEPLOYMENT_PAGE)
        cursor = _decode_token(page_token, "deployments", {}, 2)
        model = DeploymentRow
        stmt = sa.select(model)
        if cursor is not None:
            c_at, c_id = _parse_token_datetime(cursor[0]), _parse_token_uuid(cursor[1])
            stmt = stmt.where(
                sa.or_(model.created_at < c_at, sa.and_(model.created_at == c_at, model.deployment_id < c_id))
            )
        stmt = stmt.order_by(model.created_at.desc(), model.deployment_id.desc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [self._deployment_record(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("deployments", [last.created_at.isoformat(), str(last.deployment_id)], {})
        return Page(items, token)

    # ------------------------------------------------------------------ prediction audit

    @staticmethod
    def _audit_arrays(batch: PredictionAuditBatch) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
        try:
            dates = np.asarray(batch.dates, dtype="datetime64[D]")
        except (ValueError, TypeError) as exc:
            raise InvalidArgument(f"not ISO dates: {exc}", field="batch.dates") from None
        if dates.ndim != 1:
            raise InvalidArgument("must be a list of dates", field="batch.dates")
        if np.isnat(dates).any():
            raise InvalidArgument("contains an empty date", field="batch.dates")
        if np.unique(dates).size != dates.size:
            raise InvalidArgument("dates must be unique", field="batch.dates")
        symbols = [str(s) for s in batch.symbols]
        limit = _column_length(PredictionAuditRow.symbol) or 32
        for i, sym in enumerate(symbols):
            if not sym:
                raise InvalidArgument("is empty", field=f"batch.symbols[{i}]")
            if len(sym) > limit:
                raise InvalidArgument(
                    f"{sym!r} is longer than {limit} characters", field=f"batch.symbols[{i}]"
                )
        if len(set(symbols)) != len(symbols):
            raise InvalidArgument("symbols must be unique", field="batch.symbols")
        unknown = set(batch.fields) - _AUDIT_FIELD_SET
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidArgument(
                f"unknown field {name!r}; fields are {', '.join(AUDIT_VALUE_FIELDS)}",
                field=f"batch.fields[{name}]",
            )
        if "prediction" not in batch.fields:
            raise InvalidArgument("prediction is required", field="batch.fields[prediction]")
        shape = (dates.size, len(symbols))
        fields: dict[str, np.ndarray] = {}
        for name in AUDIT_VALUE_FIELDS:
            if name not in batch.fields:
                continue
            arr = np.asarray(batch.fields[name])
            path = f"batch.fields[{name}]"
            if arr.shape != shape:
                raise InvalidArgument(
                    f"has shape {arr.shape}, expected {shape} (dates x symbols)", field=path
                )
            if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
                raise InvalidArgument(f"dtype {arr.dtype} is not numeric", field=path)
            arr = arr.astype(np.float64, copy=False)
            inf = np.isinf(arr)
            if inf.any():
                t, n = np.argwhere(inf)[0]
                raise InvalidArgument(
                    f"is infinite at ({dates[t]}, {symbols[n]}); use NaN for a missing value", field=path
                )
            fields[name] = arr
        return dates, symbols, fields

    def save_prediction_audit(self, run_id: uuid.UUID | str, batch: PredictionAuditBatch) -> int:
        """Replace the audit rows of a run with the cells of `batch` whose prediction is present; rows written."""
        rid = _required_uuid(run_id, "run_id")
        dates, symbols, fields = self._audit_arrays(batch)
        present = ~np.isnan(fields["prediction"])
        t_idx, s_idx = np.nonzero(present)  # row-major: by date, then by the batch's symbol order
        columns = {name: arr[t_idx, s_idx] for name, arr in fields.items()}
        n_rows = int(t_idx.size)
        with self.db.session(write=True) as s:
            run = s.get(AlphaBacktestRunRow, rid, with_for_update=True)
            if run is None:
                raise NotFound(f"run {rid} does not exist", field="run_id")
            s.execute(sa.delete(PredictionAuditRow).where(PredictionAuditRow.run_id == rid))
            if n_rows:
                dbapi = s.connection().connection.driver_connection
                if self.db.is_postgresql:
                    _copy_audit_postgresql(dbapi, rid, dates, symbols, t_idx, s_idx, columns)
                else:
                    _insert_audit_executemany(dbapi, rid, dates, symbols, t_idx, s_idx, columns)
            run.predictions_captured = n_rows > 0
            run.updated_at = utcnow()
        return n_rows

    def list_prediction_audit(
        self, run_id: uuid.UUID | str, *, symbol: str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[PredictionAuditRecord]:
        """Audit rows of a run by (date, symbol), optionally of one symbol; `total_size` counts all pages."""
        rid = _required_uuid(run_id, "run_id")
        size = _page_size(page_size, *_AUDIT_PAGE)
        filters = {"run_id": str(rid), "symbol": symbol or None}
        cursor = _decode_token(page_token, "audit", filters, 2)
        model = PredictionAuditRow
        where = [model.run_id == rid]
        if symbol:
            where.append(model.symbol == symbol)
        stmt = sa.select(model).where(*where)
        if cursor is not None:
            try:
                c_date, c_symbol = dt.date.fromisoformat(str(cursor[0])), str(cursor[1])
            except ValueError:
                raise InvalidArgument("is not a page token of this list", field="page_token") from None
            stmt = stmt.where(
                sa.or_(model.date > c_date, sa.and_(model.date == c_date, model.symbol > c_symbol))
            )
        stmt = stmt.order_by(model.date, model.symbol).limit(size + 1)
        with self.db.session() as s:
            if s.get(AlphaBacktestRunRow, rid) is None:
                raise NotFound(f"run {rid} does not exist", field="run_id")
            total = int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)
            rows = list(s.scalars(stmt))
            items = [
                PredictionAuditRecord(
                    date=r.date,
                    symbol=r.symbol,
                    prediction=r.prediction,
                    realized_return=r.realized_return,
                    target_weight=r.target_weight,
                    held_weight=r.held_weight,
                    pnl_contribution=r.pnl_contribution,
                )
                for r in rows[:size]
            ]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token("audit", [last.date.isoformat(), last.symbol], filters)
        return Page(items, token, total)

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
            trades: list[TradeRecord] = []
            if include_trades:
                stmt = (
                    sa.select(BacktestTradeRow, TradeDetailRow)
                    .outerjoin(TradeDetailRow, TradeDetailRow.trade_id == BacktestTradeRow.trade_id)
                    .where(BacktestTradeRow.backtest_id == bid)
                    .order_by(BacktestTradeRow.trade_number)
                )
                for t, d in s.execute(stmt):
                    trades.append(
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
            return record, trades

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

    def _cursor_param(self, column: Any, value: Any) -> Any:
        col_type = column.type
        if isinstance(col_type, sa.Integer):
            return sa.literal(int(value), type_=col_type)
        if isinstance(col_type, sa.Numeric):
            if self.db.is_postgresql:
                # An exact numeric literal: compares with the column without a float round trip, index friendly.
                return sa.cast(sa.literal(str(decimal.Decimal(repr(float(value))))), col_type)
            return sa.literal(float(value), type_=sa.Float())
        if isinstance(col_type, sa.Date):
            return sa.literal(dt.date.fromisoformat(str(value)), type_=col_type)
        return sa.literal(_parse_token_datetime(value), type_=col_type)

    def list_backtest_results(
        self,
        *,
        symbol: str | None = None,
        strategy_type: str | None = None,
        from_date: dt.date | str | None = None,
        to_date: dt.date | str | None = None,
        status: str | None = None,
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
        cursor = _decode_token(page_token, "backtests", filters, 2)
        stmt = sa.select(model).options(defer(model.equity_curve), defer(model.drawdown_series))
        if symbol:
            stmt = stmt.where(model.symbol == symbol)
        if strategy_type:
            stmt = stmt.where(model.strategy_type == strategy_type)
        if status:
            stmt = stmt.where(model.status == status)
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


# =========================================================================== bulk audit writers


def _copy_audit_postgresql(
    conn: Any,
    run_id: uuid.UUID,
    dates: np.ndarray,
    symbols: Sequence[str],
    t_idx: np.ndarray,
    s_idx: np.ndarray,
    columns: Mapping[str, np.ndarray | None],
) -> None:
    """COPY the rows in PostgreSQL's binary format, the buffer built with NumPy.

    Each tuple is: int16 field count, then per field an int32 byte length (-1
    for NULL) and the value in network byte order (uuid 16 bytes, date int32
    days since 2000-01-01, symbol UTF-8, five float8). Rows are laid out in a
    fixed-width structured array (symbols padded to the longest) and the
    padding and NULL payloads are dropped with one boolean mask.
    """
    encoded = [s.encode("utf-8") for s in symbols]
    width = max(len(b) for b in encoded)
    sym_bytes = np.zeros((len(encoded), width), dtype=np.uint8)
    for i, b in enumerate(encoded):
        sym_bytes[i, : len(b)] = np.frombuffer(b, dtype=np.uint8)
    sym_len = np.array([len(b) for b in encoded], dtype=np.int64)
    days = dates.astype("datetime64[D]").astype(np.int64) - _PG_EPOCH_DAYS
    value_fields = list(AUDIT_VALUE_FIELDS)
    dtype = np.dtype(
        [
            ("nf", ">i2"),
            ("l_run", ">i4"),
            ("run", "u1", (16,)),
            ("l_date", ">i4"),
            ("date", ">i4"),
            ("l_sym", ">i4"),
            ("sym", "u1", (width,)),
            *[item for name in value_fields for item in ((f"l_{name}", ">i4"), (f"v_{name}", ">f8"))],
        ]
    )
    layout = dtype.fields
    assert layout is not None
    sym_offset = layout["sym"][1]
    run_bytes = np.frombuffer(run_id.bytes, dtype=np.uint8)
    names = ", ".join(["run_id", "date", "symbol", *value_fields])
    header = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    with (
        conn.cursor() as cur,
        cur.copy(f"COPY ml_prediction_audit ({names}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.write(header)
        for lo in range(0, t_idx.size, _COPY_CHUNK_ROWS):
            hi = min(lo + _COPY_CHUNK_ROWS, t_idx.size)
            ti, si = t_idx[lo:hi], s_idx[lo:hi]
            n = hi - lo
            rec = np.empty(n, dtype=dtype)
            rec["nf"] = 3 + len(value_fields)
            rec["l_run"] = 16
            rec["run"] = run_bytes
            rec["l_date"] = 4
            rec["date"] = days[ti]
            lens = sym_len[si]
            rec["l_sym"] = lens
            rec["sym"] = sym_bytes[si]
            raw = rec.view(np.uint8).reshape(n, dtype.itemsize)
            keep = np.ones((n, dtype.itemsize), dtype=bool)
            keep[:, sym_offset : sym_offset + width] = np.arange(width)[None, :] < lens[:, None]
            for name in value_fields:
                values = columns.get(name)
                v_off = layout[f"v_{name}"][1]
                if values is None:
                    rec[f"l_{name}"] = -1
                    keep[:, v_off : v_off + 8] = False
                    continue
                chunk = values[lo:hi]
                null = np.isnan(chunk)
                rec[f"l_{name}"] = np.where(null, -1, 8)
                rec[f"v_{name}"] = chunk
                keep[:, v_off : v_off + 8] = ~null[:, None]
            copy.write(raw[keep].tobytes())
        copy.write(b"\xff\xff")


def _insert_audit_executemany(
    conn: Any,
    run_id: uuid.UUID,
    dates: np.ndarray,
    symbols: Sequence[str],
    t_idx: np.ndarray,
    s_idx: np.ndarray,
    columns: Mapping[str, np.ndarray | None],
) -> None:
    """INSERT through the DBAPI's executemany, in batches, in SQLAlchemy's SQLite storage formats.

    `sa.Uuid` is stored as 32 hex characters and `sa.Date` as 'YYYY-MM-DD'
    text on SQLite; NaN becomes None (NULL).
    """
    value_fields = list(AUDIT_VALUE_FIELDS)
    date_text = np.asarray([str(d) for d in dates.astype("datetime64[D]")], dtype=object)
    symbol_arr = np.asarray(list(symbols), dtype=object)
    placeholders = ", ".join("?" * (3 + len(value_fields)))
    sql = (
        f"INSERT INTO ml_prediction_audit (run_id, date, symbol, {', '.join(value_fields)}) "
        f"VALUES ({placeholders})"
    )
    cur = conn.cursor()
    try:
        for lo in range(0, t_idx.size, _SQLITE_BATCH_ROWS):
            hi = min(lo + _SQLITE_BATCH_ROWS, t_idx.size)
            cols: list[Iterable[Any]] = [
                repeat(run_id.hex),
                date_text[t_idx[lo:hi]],
                symbol_arr[s_idx[lo:hi]],
            ]
            for name in value_fields:
                values = columns.get(name)
                if values is None:
                    cols.append(repeat(None))
                    continue
                chunk = values[lo:hi]
                obj = chunk.astype(object)
                obj[np.isnan(chunk)] = None
                cols.append(obj)
            cur.executemany(sql, zip(*cols, strict=False))
    finally:
        cur.close()
