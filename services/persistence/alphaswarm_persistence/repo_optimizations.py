"""Optimization results: the parameter sets of an optimization, children of a backtest result."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_persistence.models import (
    OptimizationResultRow,
    utcnow,
)
from alphaswarm_persistence.repo_common import (
    RepositoryBase,
    _check_aware,
    _check_int,
    _check_json,
    _check_str,
    _fingerprint,
    _fit_fields,
    _float,
    _required_uuid,
    _split_reserved,
    _with_reserved,
    parse_uuid,
)
from alphaswarm_persistence.repo_records import (
    _OPTIMIZATION_NUMBERS,
    _OPTIMIZATION_PAGE,
    OptimizationResultRecord,
    Page,
)


class OptimizationsMixin(RepositoryBase):
    """Optimization results."""

    # ------------------------------------------------------------------ optimization results

    @staticmethod
    def _optimization_values(
        record: OptimizationResultRecord, i: int, now: dt.datetime
    ) -> tuple[uuid.UUID | None, dict[str, Any]]:
        model = OptimizationResultRow
        path = f"results[{i}]"
        numbers, reasons = _fit_fields(record, model, _OPTIMIZATION_NUMBERS)
        params = _check_json(record.parameters, f"{path}.parameters")
        values: dict[str, Any] = {
            "backtest_id": _required_uuid(record.backtest_id, f"{path}.backtest_id"),
            "optimization_date": _check_aware(record.optimization_date, f"{path}.optimization_date") or now,
            "parameter_set": _check_int(record.parameter_set, f"{path}.parameter_set", minimum=0),
            "parameters": _with_reserved(params, reasons, f"{path}.parameters", keep_absent=False) or {},
            "objective_function": _check_str(
                record.objective_function, model.objective_function, f"{path}.objective_function"
            ),
            "is_statistically_significant": bool(record.is_statistically_significant),
            **numbers,
        }
        return parse_uuid(record.optimization_id, f"{path}.optimization_id"), values

    def save_optimization_results(
        self, results: Sequence[OptimizationResultRecord], *, request_id: str | None = None
    ) -> tuple[list[uuid.UUID], bool]:
        """Store every parameter set of an optimization in one transaction; (ids in request order, created)."""
        if not results:
            raise InvalidArgument("needs at least one row", field="results")
        now = utcnow()
        given: list[uuid.UUID | None] = []
        rows: list[dict[str, Any]] = []
        keys: dict[tuple[Any, ...], int] = {}
        for i, record in enumerate(results):
            gid, values = self._optimization_values(record, i, now)
            key = (values["backtest_id"], values["objective_function"], values["parameter_set"])
            if key in keys:
                raise InvalidArgument(
                    f"parameter set {key[2]} of backtest {key[0]} ({key[1] or 'no objective'}) "
                    f"is also results[{keys[key]}]",
                    field=f"results[{i}].parameter_set",
                )
            keys[key] = i
            given.append(gid)
            rows.append(values)
        return self._save_batch(
            "optimization_results",
            rows,
            given,
            model=OptimizationResultRow,
            id_column=OptimizationResultRow.optimization_id,
            id_field="results[{i}].optimization_id",
            parent_column="backtest_id",
            parent_field="results[{i}].backtest_id",
            request_id=request_id,
            fingerprint=_fingerprint("optimization_results", list(results)),
        )

    @staticmethod
    def _optimization_record(row: OptimizationResultRow) -> OptimizationResultRecord:
        params, reasons = _split_reserved(row.parameters)
        return OptimizationResultRecord(
            optimization_id=row.optimization_id,
            backtest_id=row.backtest_id,
            optimization_date=row.optimization_date,
            parameter_set=row.parameter_set,
            parameters=params if params is not None else {},
            objective_function=row.objective_function,
            objective_value=_float(row.objective_value),
            total_return=_float(row.total_return),
            sharpe_ratio=_float(row.sharpe_ratio),
            max_drawdown=_float(row.max_drawdown),
            win_rate=_float(row.win_rate),
            profit_factor=_float(row.profit_factor),
            total_trades=row.total_trades,
            rank=row.rank,
            is_statistically_significant=bool(row.is_statistically_significant),
            p_value=_float(row.p_value),
            null_reasons=reasons,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_optimization_result(self, optimization_id: uuid.UUID | str) -> OptimizationResultRecord:
        """One optimization row."""
        oid = _required_uuid(optimization_id, "optimization_id")
        with self.db.session() as s:
            row = s.get(OptimizationResultRow, oid)
            if row is None:
                raise NotFound(f"optimization result {oid} does not exist", field="optimization_id")
            return self._optimization_record(row)

    def list_optimization_results(
        self, *, backtest_id: uuid.UUID | str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[OptimizationResultRecord]:
        """Optimization rows, keyset-paginated.

        Of one backtest (NotFound when it does not exist): by `rank` (NULLs
        last), then newest `optimization_date` first, `parameter_set`,
        `optimization_id`. Of all backtests: newest `optimization_date` first,
        then `parameter_set`, `optimization_id`.
        """
        model = OptimizationResultRow
        return self._children_page(
            model.backtest_id,
            backtest_id,
            of_parent=[
                (model.rank, False, True),
                (model.optimization_date, True, False),
                (model.parameter_set, False, False),
                (model.optimization_id, False, False),
            ],
            of_all=[
                (model.optimization_date, True, False),
                (model.parameter_set, False, False),
                (model.optimization_id, False, False),
            ],
            kind="optimizations",
            page_size=page_size,
            page_token=page_token,
            limits=_OPTIMIZATION_PAGE,
            record=self._optimization_record,
        )
