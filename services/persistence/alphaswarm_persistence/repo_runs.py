"""Alpha-backtest runs and their tasks, deployments, and the prediction audit of a run (with its bulk writers)."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from alphaswarm_common.errors import Aborted, AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_persistence.models import (
    AUDIT_VALUE_FIELDS,
    AlphaBacktestRunRow,
    BacktestResultRow,
    DeploymentRow,
    PredictionAuditRow,
    TaskRow,
    utcnow,
)
from alphaswarm_persistence.repo_common import (
    RepositoryBase,
    _as_date,
    _check_aware,
    _check_json,
    _check_str,
    _column_length,
    _decode_token,
    _encode_token,
    _fingerprint,
    _page_size,
    _required_uuid,
    parse_uuid,
)
from alphaswarm_persistence.repo_records import (
    _AUDIT_FIELD_SET,
    _AUDIT_PAGE,
    _COPY_CHUNK_ROWS,
    _DEPLOYMENT_PAGE,
    _PG_EPOCH_DAYS,
    _RUN_IMMUTABLE_FIELDS,
    _RUN_PAGE,
    _SQLITE_BATCH_ROWS,
    DEPLOYMENT_STATES,
    RUN_STATES,
    RUN_UPDATABLE_FIELDS,
    TASK_KIND_ALPHA_BACKTEST,
    TERMINAL_RUN_STATES,
    AlphaBacktestRunRecord,
    DeploymentRecord,
    Page,
    PredictionAuditBatch,
    PredictionAuditRecord,
    TaskRecord,
)


class RunsMixin(RepositoryBase):
    """Runs, deployments and the prediction audit."""

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
            trace_id=row.trace_id,
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
            "trace_id": _check_trace_id(run.trace_id),
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
        self,
        run_id: uuid.UUID | str,
        changes: Mapping[str, Any],
        *,
        guard: Callable[[Session, uuid.UUID], None] | None = None,
    ) -> AlphaBacktestRunRecord:
        """Apply `changes` ({AlphaBacktestRun field name: value}) to a run and mirror state/stage/error to its task.

        `guard(session, task_id)` runs in the same transaction once the run row is locked (the
        fencing check of `repo_leases`); it refuses the update by raising."""
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
            if guard is not None:
                guard(s, row.task_id)
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
        if state:
            self._check_state(state, "state")
        model = AlphaBacktestRunRow
        stmt = sa.select(model)
        if state:
            stmt = stmt.where(model.state == state)
        return self._keyset_page(
            stmt,
            [(model.created_at, True, False), (model.run_id, True, False)],
            kind="runs",
            filters={"state": state or None},
            page_size=page_size,
            page_token=page_token,
            limits=_RUN_PAGE,
            records=lambda _s, rows: [self._run_record(r) for r in rows],
        )

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
        self,
        deployment: DeploymentRecord,
        *,
        request_id: str | None = None,
        expected_updated_at: dt.datetime | None = None,
    ) -> tuple[DeploymentRecord, bool]:
        """Create (no id) or update (existing id) a deployment; (deployment, created).

        `expected_updated_at` makes an update a compare-and-set: it is refused (`Aborted`,
        reason DEPLOYMENT_CHANGED) when the stored deployment was updated at another instant."""
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
            if expected_updated_at is not None and current.updated_at != expected_updated_at:
                raise Aborted(
                    f"deployment {did} was changed by another writer since it was read; read it again",
                    field="expected_updated_at",
                    reason="DEPLOYMENT_CHANGED",
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
        model = DeploymentRow
        return self._keyset_page(
            sa.select(model),
            [(model.created_at, True, False), (model.deployment_id, True, False)],
            kind="deployments",
            filters={},
            page_size=page_size,
            page_token=page_token,
            limits=_DEPLOYMENT_PAGE,
            records=lambda _s, rows: [self._deployment_record(r) for r in rows],
        )

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

    def iter_prediction_audit(
        self,
        run_id: uuid.UUID | str,
        *,
        rows_per_message: int = 0,
        date: dt.date | str | None = None,
        symbol: str | None = None,
    ) -> Iterator[tuple[list[str], list[str], dict[str, np.ndarray], int]]:
        """The audit of a run in date order as blocks `(dates, symbols, fields, total_rows)`:
        (dates x symbols) float64 matrices (NaN for NULL or absent cells) over every symbol of the
        audit, about `rows_per_message` rows per block, a date never split across blocks.

        `date` keeps the rows of that date (over the symbols audited on it), `symbol` those of that
        symbol (the blocks then carry it alone); `total_rows` counts the rows kept. Both are read
        through the (run_id, symbol, date) index."""
        rid = _required_uuid(run_id, "run_id")
        size = _page_size(rows_per_message, *_AUDIT_STREAM)
        day = _as_date(date, "date", required=False) if date else None
        model = PredictionAuditRow
        names = AUDIT_VALUE_FIELDS
        with self.db.session() as s:
            if s.get(AlphaBacktestRunRow, rid) is None:
                raise NotFound(f"run {rid} does not exist", field="run_id")
            where: list[Any] = [model.run_id == rid]
            if symbol:
                symbols = [symbol]
                where.append(model.symbol == symbol)
            else:
                symbols = _audit_symbols(s, rid)
            columns = (model.date, model.symbol, *(getattr(model, n) for n in names))
            if day is not None:
                # one seek per symbol of the (run_id, symbol, date) index instead of a scan of the run
                where.append(model.date == day)
                found: list[Any] = []
                for i in range(0, len(symbols), _SYMBOLS_PER_QUERY):
                    chunk = symbols[i : i + _SYMBOLS_PER_QUERY]
                    found.extend(s.execute(sa.select(*columns).where(*where, model.symbol.in_(chunk))))
                rows_iter: Iterable[Any] = sorted(found, key=lambda r: r[1])
                total = len(found)
                if not symbol:
                    symbols = sorted({r[1] for r in found})
            else:
                total = int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)
                rows_iter = s.execute(
                    sa.select(*columns)
                    .where(*where)
                    .order_by(model.date, model.symbol)
                    .execution_options(yield_per=50_000)
                )
            column = {sym: i for i, sym in enumerate(symbols)}
            block: list[Any] = []

            def pack(rows: list[Any]) -> tuple[list[str], list[str], dict[str, np.ndarray], int]:
                days = sorted({r[0] for r in rows})
                at = {d: i for i, d in enumerate(days)}
                t_idx = np.fromiter((at[r[0]] for r in rows), dtype=np.int64, count=len(rows))
                s_idx = np.fromiter((column[r[1]] for r in rows), dtype=np.int64, count=len(rows))
                values = np.array([r[2:] for r in rows], dtype=np.float64).reshape(len(rows), len(names))
                fields = {}
                for j, name in enumerate(names):
                    mat = np.full((len(days), len(symbols)), np.nan)
                    mat[t_idx, s_idx] = values[:, j]
                    fields[name] = mat
                return [d.isoformat() for d in days], symbols, fields, total

            for row in rows_iter:
                if len(block) >= size and row[0] != block[-1][0]:
                    yield pack(block)
                    block = []
                block.append(tuple(row))
            if block or not total:
                yield (
                    pack(block)
                    if block
                    else ([], symbols, {n: np.zeros((0, len(symbols))) for n in names}, 0)
                )


def _audit_symbols(s: Session, rid: uuid.UUID) -> list[str]:
    """The symbols of a run's audit, sorted: a loose scan of the (run_id, symbol, date) index (one
    seek per symbol, not a pass over every row of the run)."""
    model = PredictionAuditRow
    out: list[str] = []
    last: str | None = None
    while True:
        stmt = sa.select(sa.func.min(model.symbol)).where(model.run_id == rid)
        if last is not None:
            stmt = stmt.where(model.symbol > last)
        nxt = s.scalar(stmt)
        if nxt is None:
            return out
        out.append(nxt)
        last = nxt


_SYMBOLS_PER_QUERY = 500

_AUDIT_STREAM = (100_000, 1_000_000)
"""Rows per message of StreamPredictionAudit: (default, maximum)."""


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


def _check_trace_id(value: str | None) -> str | None:
    """A W3C trace id (32 lowercase hex digits, not all zero), or None."""
    if not value:
        return None
    if len(value) != 32 or value.strip("0123456789abcdef") or set(value) == {"0"}:
        raise InvalidArgument(
            f"must be 32 lowercase hex digits (a W3C trace id), got {value!r}", field="run.trace_id"
        )
    return value
