"""Shared pieces of the catalog repository: validation and conversion helpers, page tokens,
keyset pagination, idempotent creates and batch saves (`RepositoryBase`, which every aggregate
mixin of `CatalogRepository` extends). See `alphaswarm_persistence.repository` for the behaviour.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import decimal
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import (
    BacktestResultRow,
    RequestKeyRow,
    utcnow,
)
from alphaswarm_persistence.repo_records import (
    _IN_CHUNK,
    _INT4_MAX,
    _RESERVED_PARAMETERS_KEY,
    Page,
    T,
)

# Conflicts are logged under the name callers import the repository by.
log = logging.getLogger("alphaswarm_persistence.repository")


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


# When a request happened and how long it took describe the attempt, not the request: a replay
# of the same save (a redelivered job) carries new values and must still match.
_VOLATILE_FIELDS = frozenset(
    {
        "created_at",
        "updated_at",
        "backtest_date",
        "optimization_date",
        "test_date",
        "execution_time_seconds",
        "trace_id",  # a retried request comes in a new trace: the same run
    }
)


def _log_conflict(kind: str, exc: BaseException | None) -> str:
    """Log a constraint violation (its text names tables, columns and values) under a new error id."""
    error_id = uuid.uuid4().hex[:12]
    log.info("%s conflicts with a stored row (error id %s): %s", kind, error_id, exc)
    return error_id


def _conflict(kind: str, exc: IntegrityError) -> AlreadyExists:
    """AlreadyExists for a violated constraint, without the database's text."""
    error_id = _log_conflict(kind, exc)
    return AlreadyExists(
        f"the {kind.replace('_', ' ')} conflicts with a stored row (error id {error_id})",
        details={"error_id": error_id},
    )


def _fingerprint(*parts: Any) -> str:
    def canon(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: canon(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if f.name not in _VOLATILE_FIELDS
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


_SortKey = tuple[Any, bool, bool]
"""(column attribute, descending, nullable) of a keyset order; NULLs sort last in both directions."""


def _keyset_order(keys: Sequence[_SortKey]) -> list[Any]:
    out: list[Any] = []
    for column, descending, nullable in keys:
        if nullable:
            out.append(column.is_(None))  # false < true: values first, NULLs last
        out.append(column.desc() if descending else column.asc())
    return out


def _token_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _check_int(value: Any, field_name: str, *, minimum: int, required: bool = True) -> int | None:
    if value is None:
        if required:
            raise InvalidArgument("is required", field=field_name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidArgument(f"{value!r} is not an integer", field=field_name)
    number = int(value)
    if not minimum <= number <= _INT4_MAX:
        raise InvalidArgument(f"must be between {minimum} and {_INT4_MAX}, got {number}", field=field_name)
    return number


def _fit_fields(source: Any, model: Any, names: Sequence[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """{name: storable value} of numeric attributes of `source` and, for those that became NULL, why."""
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    for name in names:
        stored, why = _fit_column(getattr(source, name), getattr(model, name))
        values[name] = stored
        if why:
            reasons[name] = why
    return values, reasons


def _with_reserved(
    params: dict[str, Any] | None, reasons: Mapping[str, str], field_name: str, *, keep_absent: bool
) -> dict[str, Any] | None:
    """`params` with the reasons of NULL numbers under the reserved key (absent when there are none)."""
    if params is not None and _RESERVED_PARAMETERS_KEY in params:
        raise InvalidArgument(f"key {_RESERVED_PARAMETERS_KEY!r} is reserved", field=field_name)
    if not reasons:
        return params
    reserved: dict[str, Any] = {"null_reasons": dict(reasons)}
    if params is None and keep_absent:
        reserved["no_parameters"] = True
    return {**(params or {}), _RESERVED_PARAMETERS_KEY: reserved}


def _split_reserved(doc: Any) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """(the caller's JSON document, null reasons) of a stored JSON column that may carry the reserved key."""
    if not isinstance(doc, Mapping):
        return doc, {}
    params = dict(doc)
    reserved = params.pop(_RESERVED_PARAMETERS_KEY, None) or {}
    if reserved.get("no_parameters") and not params:
        return None, dict(reserved.get("null_reasons") or {})
    return params, dict(reserved.get("null_reasons") or {})


def _chunks(values: Sequence[T], size: int = _IN_CHUNK) -> Iterable[Sequence[T]]:
    for lo in range(0, len(values), size):
        yield values[lo : lo + size]


def _float(value: Any) -> float | None:
    """A Numeric column's value as float (SQLite hands back an integral value as int)."""
    return None if value is None else float(value)


class RepositoryBase:
    """What every aggregate of the catalog repository shares: the database, idempotent creates,
    keyset pagination and the batch save of rows that belong to a backtest result."""

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
                raise _conflict(kind, exc) from None
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
        _log_conflict(kind, last_error)
        raise AlreadyExists(f"request_id {request_id!r} kept conflicting", field="request_id")

    # ------------------------------------------------------------------ cursor values

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

    # ------------------------------------------------------------------ keyset pagination (shared)

    def _keyset_param(self, column: Any, raw: Any) -> Any:
        if isinstance(column.type, sa.Uuid):
            return _parse_token_uuid(raw)
        try:
            return self._cursor_param(column, raw)
        except (ValueError, TypeError, ArithmeticError):
            raise InvalidArgument("is not a page token of this list", field="page_token") from None

    def _keyset_after(self, keys: Sequence[_SortKey], cursor: Sequence[Any]) -> Any:
        """Rows strictly after `cursor` in the order of `keys` (NULLs last in both directions).

        A non-nullable leading key also gets its bound on its own (`key >= last`,
        implied by the disjunction): an index led by the filter columns and that
        key then starts the page's scan at the cursor instead of filtering the
        rows before it.
        """
        clauses: list[Any] = []
        prefix: list[Any] = []
        bound: Any = None
        for i, ((column, descending, nullable), raw) in enumerate(zip(keys, cursor, strict=True)):
            if raw is None:
                if not nullable:
                    raise InvalidArgument("is not a page token of this list", field="page_token")
                prefix.append(column.is_(None))  # nothing sorts after NULL in this column
                continue
            param = self._keyset_param(column, raw)
            after = column < param if descending else column > param
            if nullable:
                after = sa.or_(after, column.is_(None))
            elif i == 0:
                bound = column <= param if descending else column >= param
            clauses.append(sa.and_(*prefix, after))
            prefix.append(column == param)
        return sa.or_(*clauses) if bound is None else sa.and_(bound, sa.or_(*clauses))

    def _keyset_page(
        self,
        stmt: Any,
        keys: Sequence[_SortKey],
        *,
        kind: str,
        filters: Mapping[str, Any],
        page_size: int,
        page_token: str,
        limits: tuple[int, int],
        records: Callable[[Session, list[Any]], list[T]],
        check: Callable[[Session], None] | None = None,
    ) -> Page[T]:
        size = _page_size(page_size, *limits)
        cursor = _decode_token(page_token, kind, filters, len(keys))
        if cursor is not None:
            stmt = stmt.where(self._keyset_after(keys, cursor))
        stmt = stmt.order_by(*_keyset_order(keys)).limit(size + 1)
        with self.db.session() as s:
            if check is not None:
                check(s)
            rows = list(s.scalars(stmt))
            items = records(s, rows[:size])
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = _encode_token(kind, [_token_value(getattr(last, c.key)) for c, _, _ in keys], filters)
        return Page(items, token)

    def _children_page(
        self,
        parent_column: Any,
        parent_id: uuid.UUID | str | None,
        *,
        of_parent: Sequence[_SortKey],
        of_all: Sequence[_SortKey],
        kind: str,
        page_size: int,
        page_token: str,
        limits: tuple[int, int],
        record: Callable[[Any], T],
    ) -> Page[T]:
        """A keyset page of the rows that belong to a backtest result (`parent_column`).

        With a parent id: its rows in the order `of_parent` (NotFound naming the
        parent's field when the backtest does not exist); without: all rows in
        the order `of_all`. The parent's field is the column's name.
        """
        field_name = parent_column.key
        pid = parse_uuid(parent_id, field_name)
        stmt = sa.select(parent_column.class_)
        keys: Sequence[_SortKey]
        if pid is not None:
            stmt = stmt.where(parent_column == pid)
            keys = of_parent
        else:
            keys = of_all

        def check(s: Session) -> None:
            if pid is not None and s.get(BacktestResultRow, pid) is None:
                raise NotFound(f"backtest result {pid} does not exist", field=field_name)

        return self._keyset_page(
            stmt,
            keys,
            kind=kind,
            filters={field_name: str(pid) if pid else None},
            page_size=page_size,
            page_token=page_token,
            limits=limits,
            records=lambda _s, rows: [record(r) for r in rows],
            check=check,
        )

    @staticmethod
    def _check_parents(
        session: Session, column: Any, refs: Sequence[tuple[str, uuid.UUID]], what: str
    ) -> None:
        """NotFound naming the first reference whose row does not exist; the others are share-locked."""
        wanted = list(dict.fromkeys(ref for _, ref in refs))
        present: set[uuid.UUID] = set()
        for chunk in _chunks(wanted):
            stmt = sa.select(column).where(column.in_(chunk)).with_for_update(read=True)
            present.update(session.scalars(stmt))
        for field_name, ref in refs:
            if ref not in present:
                raise NotFound(f"{what} {ref} does not exist", field=field_name)

    @staticmethod
    def _existing_ids(session: Session, column: Any, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        found: set[uuid.UUID] = set()
        for chunk in _chunks(list(ids)):
            found.update(session.scalars(sa.select(column).where(column.in_(chunk))))
        return found

    def _save_batch(
        self,
        kind: str,
        rows: list[dict[str, Any]],
        given_ids: list[uuid.UUID | None],
        *,
        model: Any,
        id_column: Any,
        id_field: str,
        parent_column: str,
        parent_field: str,
        request_id: str | None,
        fingerprint: str,
    ) -> tuple[list[uuid.UUID], bool]:
        """Insert `rows` in one transaction, idempotent by request_id (see the module docstring).

        `given_ids[i]` is the caller's id of row i or None (assigned); `id_field`
        and `parent_field` are the request paths with an `{i}` placeholder.
        """
        seen: dict[uuid.UUID, int] = {}
        for i, gid in enumerate(given_ids):
            if gid is not None:
                if gid in seen:
                    raise InvalidArgument(f"{gid} appears twice", field=id_field.format(i=i))
                seen[gid] = i

        def ids_for(batch_id: uuid.UUID) -> list[uuid.UUID]:
            # Assigned ids derive from the batch id kept with the request key, so a replay can find them.
            return [gid or uuid.uuid5(batch_id, str(i)) for i, gid in enumerate(given_ids)]

        def create(s: Session, batch_id: uuid.UUID) -> tuple[list[uuid.UUID], bool]:
            ids = ids_for(batch_id)
            refs = [(parent_field.format(i=i), row[parent_column]) for i, row in enumerate(rows)]
            self._check_parents(s, BacktestResultRow.backtest_id, refs, "backtest result")
            taken = self._existing_ids(s, id_column, [gid for gid in given_ids if gid is not None])
            for i, gid in enumerate(given_ids):
                if gid is not None and gid in taken:
                    raise AlreadyExists(f"{gid} already exists", field=id_field.format(i=i))
            now = utcnow()
            s.execute(
                sa.insert(model),
                [
                    {**row, id_column.key: rid, "created_at": now, "updated_at": now}
                    for row, rid in zip(rows, ids, strict=True)
                ],
            )
            return ids, True

        def load(s: Session, batch_id: uuid.UUID) -> list[uuid.UUID] | None:
            ids = ids_for(batch_id)
            # Rows go away only with their parent backtest: while any is left, the save stands.
            return ids if self._existing_ids(s, id_column, ids) else None

        return self._idempotent(kind, request_id, fingerprint, None, create, load)
