"""Walk-forward tests: the windows of a walk-forward test, children of a backtest result."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_persistence.models import (
    WalkForwardTestRow,
    utcnow,
)
from alphaswarm_persistence.repo_common import (
    RepositoryBase,
    _check_aware,
    _check_int,
    _check_json,
    _fingerprint,
    _fit_fields,
    _float,
    _required_uuid,
    _split_reserved,
    _with_reserved,
    parse_date,
    parse_uuid,
)
from alphaswarm_persistence.repo_records import (
    _WALK_FORWARD_NUMBERS,
    _WALK_FORWARD_PAGE,
    Page,
    WalkForwardTestRecord,
)


class WalkForwardMixin(RepositoryBase):
    """Walk-forward windows."""

    # ------------------------------------------------------------------ walk-forward tests

    @staticmethod
    def _walk_forward_values(
        record: WalkForwardTestRecord, i: int, now: dt.datetime
    ) -> tuple[uuid.UUID | None, dict[str, Any]]:
        model = WalkForwardTestRow
        path = f"windows[{i}]"
        dates = {
            name: parse_date(getattr(record, name), f"{path}.{name}")
            for name in ("training_start", "training_end", "test_period_start", "test_period_end")
        }
        if dates["training_end"] < dates["training_start"]:
            raise InvalidArgument(
                f"training_end {dates['training_end']} is before training_start {dates['training_start']}",
                field=f"{path}.training_end",
            )
        if dates["test_period_end"] < dates["test_period_start"]:
            raise InvalidArgument(
                f"test_period_end {dates['test_period_end']} is before test_period_start "
                f"{dates['test_period_start']}",
                field=f"{path}.test_period_end",
            )
        if dates["test_period_start"] <= dates["training_end"]:
            raise InvalidArgument(
                f"test_period_start {dates['test_period_start']} must come after training_end "
                f"{dates['training_end']} (out-of-sample data may not overlap the training window)",
                field=f"{path}.test_period_start",
            )
        numbers, reasons = _fit_fields(record, model, _WALK_FORWARD_NUMBERS)
        params = _check_json(record.optimal_parameters, f"{path}.optimal_parameters")
        values: dict[str, Any] = {
            "parent_backtest_id": _required_uuid(record.parent_backtest_id, f"{path}.parent_backtest_id"),
            "test_date": _check_aware(record.test_date, f"{path}.test_date") or now,
            "window_size_months": _check_int(
                record.window_size_months, f"{path}.window_size_months", minimum=0
            ),
            "step_size_months": _check_int(record.step_size_months, f"{path}.step_size_months", minimum=0),
            **dates,
            "optimal_parameters": _with_reserved(
                params, reasons, f"{path}.optimal_parameters", keep_absent=True
            ),
            "is_profitable": None if record.is_profitable is None else bool(record.is_profitable),
            "is_statistically_significant": bool(record.is_statistically_significant),
            **numbers,
        }
        return parse_uuid(record.walk_forward_id, f"{path}.walk_forward_id"), values

    def save_walk_forward_tests(
        self, windows: Sequence[WalkForwardTestRecord], *, request_id: str | None = None
    ) -> tuple[list[uuid.UUID], bool]:
        """Store the windows of a walk-forward test in one transaction; (ids in request order, created)."""
        if not windows:
            raise InvalidArgument("needs at least one window", field="windows")
        now = utcnow()
        given: list[uuid.UUID | None] = []
        rows: list[dict[str, Any]] = []
        for i, record in enumerate(windows):
            gid, values = self._walk_forward_values(record, i, now)
            given.append(gid)
            rows.append(values)
        return self._save_batch(
            "walk_forward_tests",
            rows,
            given,
            model=WalkForwardTestRow,
            id_column=WalkForwardTestRow.walk_forward_id,
            id_field="windows[{i}].walk_forward_id",
            parent_column="parent_backtest_id",
            parent_field="windows[{i}].parent_backtest_id",
            request_id=request_id,
            fingerprint=_fingerprint("walk_forward_tests", list(windows)),
        )

    @staticmethod
    def _walk_forward_record(row: WalkForwardTestRow) -> WalkForwardTestRecord:
        params, reasons = _split_reserved(row.optimal_parameters)
        return WalkForwardTestRecord(
            walk_forward_id=row.walk_forward_id,
            parent_backtest_id=row.parent_backtest_id,
            test_date=row.test_date,
            window_size_months=row.window_size_months,
            step_size_months=row.step_size_months,
            training_start=row.training_start,
            training_end=row.training_end,
            test_period_start=row.test_period_start,
            test_period_end=row.test_period_end,
            optimal_parameters=params,
            training_performance=_float(row.training_performance),
            out_of_sample_return=_float(row.out_of_sample_return),
            out_of_sample_sharpe=_float(row.out_of_sample_sharpe),
            out_of_sample_drawdown=_float(row.out_of_sample_drawdown),
            out_of_sample_trades=row.out_of_sample_trades,
            performance_ratio=_float(row.performance_ratio),
            degradation_factor=_float(row.degradation_factor),
            is_profitable=row.is_profitable,
            is_statistically_significant=bool(row.is_statistically_significant),
            null_reasons=reasons,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )

    def get_walk_forward_test(self, walk_forward_id: uuid.UUID | str) -> WalkForwardTestRecord:
        """One walk-forward window."""
        wid = _required_uuid(walk_forward_id, "walk_forward_id")
        with self.db.session() as s:
            row = s.get(WalkForwardTestRow, wid)
            if row is None:
                raise NotFound(f"walk-forward test {wid} does not exist", field="walk_forward_id")
            return self._walk_forward_record(row)

    def list_walk_forward_tests(
        self, *, parent_backtest_id: uuid.UUID | str | None = None, page_size: int = 0, page_token: str = ""
    ) -> Page[WalkForwardTestRecord]:
        """Walk-forward windows, keyset-paginated.

        Of one parent backtest (NotFound when it does not exist): by
        `test_period_start`, then newest `test_date` first, `walk_forward_id`.
        Of all parents: newest `test_date` first, then `test_period_start`,
        `walk_forward_id`.
        """
        model = WalkForwardTestRow
        return self._children_page(
            model.parent_backtest_id,
            parent_backtest_id,
            of_parent=[
                (model.test_period_start, False, False),
                (model.test_date, True, False),
                (model.walk_forward_id, False, False),
            ],
            of_all=[
                (model.test_date, True, False),
                (model.test_period_start, False, False),
                (model.walk_forward_id, False, False),
            ],
            kind="walk_forward",
            page_size=page_size,
            page_token=page_token,
            limits=_WALK_FORWARD_PAGE,
            record=self._walk_forward_record,
        )
