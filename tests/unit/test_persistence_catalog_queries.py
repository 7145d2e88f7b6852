"""The backtest catalog on SQLite: best / compare / summary queries, optimizations, walk-forward, portfolios.

Each scenario is a function of `(call, db)` — `call(method, request)` invokes
one RPC — so that `tests/integration/test_catalog_postgres.py` runs the very
same scenarios through a real gRPC server on SQLite and PostgreSQL. Here they
run on the servicer directly, on a copy of a catalog migrated once per module
with the project's Alembic history.

References are independent of the code under test: the requests themselves
for round trips, Python's `decimal` for the rounding of Numeric columns,
pandas (`sort_values`, `rank(method="min")`, `groupby().agg`) for best,
compare and the summary, and `sorted()` for list orders.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from google.protobuf import json_format

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    metricset_from_proto,
    metricset_to_proto,
    struct_from_dict,
)
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import (
    BacktestPortfolioRow,
    OptimizationResultRow,
    PortfolioDetailRow,
    WalkForwardTestRow,
)
from alphaswarm_persistence.repository import CatalogRepository
from alphaswarm_persistence.servicer import PersistenceServicer

pytestmark = pytest.mark.unit

Call = Callable[[str, Any], Any]

# The seed's Numeric(precision, scale) of each column (shared/seeds/003), written out independently; None = Integer.
OPTIMIZATION_TYPES: dict[str, tuple[int, int] | None] = {
    "objective_value": (12, 6),
    "total_return": (10, 4),
    "sharpe_ratio": (8, 4),
    "max_drawdown": (8, 4),
    "win_rate": (5, 4),
    "profit_factor": (8, 4),
    "total_trades": None,
    "rank": None,
    "p_value": (8, 6),
}
WALK_FORWARD_TYPES: dict[str, tuple[int, int] | None] = {
    "training_performance": (10, 4),
    "out_of_sample_return": (10, 4),
    "out_of_sample_sharpe": (8, 4),
    "out_of_sample_drawdown": (8, 4),
    "out_of_sample_trades": None,
    "performance_ratio": (8, 4),
    "degradation_factor": (8, 4),
}
PORTFOLIO_METRIC_TYPES: dict[str, tuple[str, tuple[int, int]]] = {
    "total_return": ("total_return", (10, 4)),
    "annualized_return": ("annualized_return", (10, 4)),
    "sharpe": ("sharpe_ratio", (8, 4)),
    "sortino": ("sortino_ratio", (8, 4)),
    "max_drawdown": ("max_drawdown", (8, 4)),
    "volatility": ("volatility", (8, 4)),
    "diversification_ratio": ("diversification_ratio", (8, 4)),
    "concentration_index": ("concentration_index", (8, 4)),
    "turnover_rate": ("turnover_rate", (8, 4)),
}
BACKTEST_TYPES: dict[str, tuple[int, int] | None] = {
    "total_return": (10, 4),
    "annualized_return": (10, 4),
    "sharpe_ratio": (8, 4),
    "sortino_ratio": (8, 4),
    "calmar_ratio": (8, 4),
    "max_drawdown": (8, 4),
    "max_drawdown_duration": None,
    "volatility": (8, 4),
    "downside_volatility": (8, 4),
    "total_trades": None,
    "losing_trades": None,
    "win_rate": (5, 4),
    "profit_factor": (8, 4),
}
_MAX_PAGES = 200  # a cursor that does not advance fails instead of looping forever
LOWER_IS_BETTER = {"volatility", "downside_volatility", "max_drawdown_duration", "losing_trades"}


# ----------------------------------------------------------------------------- references and helpers


def fit(value: float | None, spec: tuple[int, int] | None) -> float | int | None:
    """What a Numeric(p, s) / Integer column holds for `value` (PostgreSQL semantics, via decimal)."""
    if value is None or not math.isfinite(value):
        return None
    if spec is None:
        return round(value) if abs(round(value)) <= 2**31 - 1 else None
    precision, scale = spec
    q = decimal.Decimal(repr(float(value))).quantize(
        decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP
    )
    return None if abs(q) >= 10 ** (precision - scale) else float(q)


def raises(exc_type: type[Exception], field: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    with pytest.raises(exc_type) as info:
        fn(*args)
    assert getattr(info.value, "field", None) == field, info.value
    return info.value


def count(db: Database, model: Any, *where: Any) -> int:
    with db.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


def ts(value: dt.datetime) -> Any:
    from google.protobuf import timestamp_pb2

    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def save_backtest(
    call: Call,
    *,
    symbol: str = "CAT",
    strategy_type: str = "sma_cross",
    metrics: dict[str, float | None] | None = None,
    when: dt.datetime | None = None,
    status: str = "completed",
) -> str:
    record = pb.BacktestRecord(
        symbol=symbol,
        strategy_type=strategy_type,
        start_date="2020-01-01",
        end_date="2020-12-31",
        status=status,
        metrics=metricset_to_proto(metrics or {}),
    )
    if when is not None:
        record.backtest_date.CopyFrom(ts(when))
    return str(call("SaveBacktestResult", pb.SaveBacktestResultRequest(result=record)).backtest_id)


def list_all(call: Call, method: str, request: Any, field: str) -> list[Any]:
    out: list[Any] = []
    for _ in range(_MAX_PAGES):
        page = call(method, request)
        out += list(getattr(page, field))
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token
    raise AssertionError(f"{method} did not reach its last page in {_MAX_PAGES} pages")


def page_while_inserting(
    call: Call, method: str, request: Any, field: str, insert: Callable[[], None]
) -> list[Any]:
    """All pages, inserting new rows before asking for each next page."""
    out: list[Any] = []
    for _ in range(_MAX_PAGES):
        page = call(method, request)
        out += list(getattr(page, field))
        if not page.next_page_token:
            return out
        insert()
        request.page_token = page.next_page_token
    raise AssertionError(f"{method} did not reach its last page in {_MAX_PAGES} pages")


# ----------------------------------------------------------------------------- optimizations


def _optimization_values(rng: np.random.Generator, k: int) -> dict[str, Any]:
    values: dict[str, Any] = {
        "objective_value": float(rng.normal(0, 2)),
        "total_return": float(rng.normal(0, 0.3)),
        "sharpe_ratio": None if k % 4 == 1 else float(rng.normal(0, 1.5)),
        "max_drawdown": float(-rng.uniform(0, 0.6)),
        "win_rate": float(rng.uniform(0, 1)),
        "profit_factor": float(rng.uniform(0.2, 4)),
        "total_trades": int(rng.integers(0, 300)),
        "rank": None if k % 3 == 2 else int(rng.integers(1, 8)),  # ties and NULLs
        "p_value": float(rng.uniform(0, 1)),
    }
    return values


def _optimization_message(backtest_id: str, k: int, values: dict[str, Any], **extra: Any) -> Any:
    fields = {name: v for name, v in values.items() if v is not None}
    p_value = values.get("p_value")
    return pb.OptimizationRecord(
        backtest_id=backtest_id,
        parameter_set=k,
        parameters=struct_from_dict({"fast": k, "slow": 2 * k + 10, "kind": "sma"}),
        objective_function="sharpe",
        is_statistically_significant=p_value is not None and p_value < 0.05,
        **fields,
        **extra,
    )


def _check_optimization(got: Any, sent: Any, values: dict[str, Any]) -> None:
    for name, spec in OPTIMIZATION_TYPES.items():
        expected = fit(values.get(name), spec)
        assert opt(got, name) == (None if expected is None else pytest.approx(expected, abs=1e-12)), name
    assert json_format.MessageToDict(got.parameters) == json_format.MessageToDict(sent.parameters)
    assert (got.backtest_id, got.parameter_set, got.objective_function) == (
        sent.backtest_id,
        sent.parameter_set,
        sent.objective_function,
    )
    assert got.is_statistically_significant == sent.is_statistically_significant
    assert got.optimization_date == sent.optimization_date and got.HasField("created_at")


def scenario_optimizations(call: Call, db: Database) -> None:
    rng = np.random.default_rng(21)
    parent = save_backtest(call, symbol="OPT")
    other = save_backtest(call, symbol="OPT2")
    when = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    values = [_optimization_values(rng, k) for k in range(23)]
    values[0].update(objective_value=0.0, total_return=0.0, sharpe_ratio=-0.0, p_value=0.0)
    values[1].update(sharpe_ratio=12345.6, win_rate=10.0, profit_factor=math.inf, objective_value=1e7)
    values[2].update(max_drawdown=math.nan, total_return=9999.99995)  # 9999.99995 -> 10000.0000 fits (10,4)
    sent = [_optimization_message(parent, k, v, optimization_date=ts(when)) for k, v in enumerate(values)]
    request = pb.SaveOptimizationResultsRequest(results=sent, request_id="opt-1")
    saved = call("SaveOptimizationResults", request)
    ids = list(saved.optimization_ids)
    assert saved.created and len(set(ids)) == len(sent)
    replay = call("SaveOptimizationResults", request)
    assert not replay.created and list(replay.optimization_ids) == ids
    changed = pb.SaveOptimizationResultsRequest(results=sent[:3], request_id="opt-1")
    raises(AlreadyExists, "request_id", call, "SaveOptimizationResults", changed)
    assert count(db, OptimizationResultRow) == len(sent)

    for oid, msg, v in zip(ids, sent, values, strict=True):
        got = call("GetOptimizationResult", pb.GetOptimizationResultRequest(optimization_id=oid)).result
        assert got.optimization_id == oid
        _check_optimization(got, msg, v)
    zero = call("GetOptimizationResult", pb.GetOptimizationResultRequest(optimization_id=ids[0])).result
    for name in ("objective_value", "total_return", "sharpe_ratio", "p_value"):
        assert zero.HasField(name) and getattr(zero, name) == 0.0, name  # 0.0 is a value, not NULL
    with db.session() as s:
        edge = s.get(OptimizationResultRow, uuid.UUID(ids[1]))
        plain = s.get(OptimizationResultRow, uuid.UUID(ids[3]))
        assert edge is not None and plain is not None
        assert edge.sharpe_ratio is None and edge.win_rate is None and edge.profit_factor is None
        assert edge.parameters["_alphaswarm"]["null_reasons"] == {
            "objective_value": "10000000.0 exceeds Numeric(12,6)",
            "sharpe_ratio": "12345.6 exceeds Numeric(8,4)",
            "win_rate": "10.0 exceeds Numeric(5,4)",
            "profit_factor": "inf is not finite",
        }
        assert "_alphaswarm" not in plain.parameters
    repo = CatalogRepository(db)
    assert repo.get_optimization_result(ids[2]).null_reasons == {"max_drawdown": "NaN is not a number"}
    assert repo.get_optimization_result(ids[3]).null_reasons == {}

    # A second optimization of another backtest, a day later.
    later = [
        _optimization_message(
            other, k, _optimization_values(rng, k), optimization_date=ts(when + dt.timedelta(1))
        )
        for k in range(5)
    ]
    other_ids = list(
        call("SaveOptimizationResults", pb.SaveOptimizationResultsRequest(results=later)).optimization_ids
    )

    # By rank (NULLs last), then parameter_set (one optimization_date here), paginated.
    listed = list_all(
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(backtest_id=parent, page_size=4),
        "results",
    )
    expected = sorted(
        range(len(sent)),
        key=lambda k: (values[k]["rank"] is None, values[k]["rank"] or 0, k),
    )
    assert [r.optimization_id for r in listed] == [ids[k] for k in expected]
    everything = list_all(
        call, "ListOptimizationResults", pb.ListOptimizationResultsRequest(page_size=7), "results"
    )
    assert [r.optimization_id for r in everything] == other_ids + ids  # newest optimization first

    # Stable pages while new parameter sets of the same backtest arrive anywhere in the order.
    def insert() -> None:
        extra = [
            _optimization_message(parent, 100 + int(rng.integers(0, 10_000)), _optimization_values(rng, j))
            for j in range(3)
        ]
        call("SaveOptimizationResults", pb.SaveOptimizationResultsRequest(results=extra))

    seen = page_while_inserting(
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(backtest_id=parent, page_size=5),
        "results",
        insert,
    )
    seen_ids = [r.optimization_id for r in seen]
    assert len(seen_ids) == len(set(seen_ids))
    assert [i for i in seen_ids if i in set(ids)] == [ids[k] for k in expected]

    # Errors name the field; a failed batch writes nothing.
    before = count(db, OptimizationResultRow)
    missing = str(uuid.uuid4())
    batch = [_optimization_message(parent, 500, values[3]), _optimization_message(missing, 501, values[3])]
    raises(
        NotFound,
        "results[1].backtest_id",
        call,
        "SaveOptimizationResults",
        pb.SaveOptimizationResultsRequest(results=batch),
    )
    bad_cases: list[tuple[list[Any], str]] = [
        ([], "results"),
        ([_optimization_message("nope", 1, values[3])], "results[0].backtest_id"),
        ([_optimization_message(parent, -1, values[3])], "results[0].parameter_set"),
        (
            [
                pb.OptimizationRecord(
                    backtest_id=parent, parameter_set=1, parameters=struct_from_dict({"_alphaswarm": 1})
                )
            ],
            "results[0].parameters",
        ),
        (
            [_optimization_message(parent, 7, values[3]), _optimization_message(parent, 7, values[4])],
            "results[1].parameter_set",
        ),
        (
            [pb.OptimizationRecord(backtest_id=parent, parameter_set=1, objective_function="x" * 51)],
            "results[0].objective_function",
        ),
    ]
    for rows, field in bad_cases:
        raises(
            InvalidArgument,
            field,
            call,
            "SaveOptimizationResults",
            pb.SaveOptimizationResultsRequest(results=rows),
        )
    twice = str(uuid.uuid4())
    raises(
        InvalidArgument,
        "results[1].optimization_id",
        call,
        "SaveOptimizationResults",
        pb.SaveOptimizationResultsRequest(
            results=[
                _optimization_message(parent, 600, values[3], optimization_id=twice),
                _optimization_message(parent, 601, values[3], optimization_id=twice),
            ]
        ),
    )
    raises(
        AlreadyExists,
        "results[0].optimization_id",
        call,
        "SaveOptimizationResults",
        pb.SaveOptimizationResultsRequest(
            results=[_optimization_message(parent, 602, values[3], optimization_id=ids[0])]
        ),
    )
    assert count(db, OptimizationResultRow) == before
    chosen = str(uuid.uuid4())
    kept = call(
        "SaveOptimizationResults",
        pb.SaveOptimizationResultsRequest(
            results=[_optimization_message(parent, 603, values[3], optimization_id=chosen)]
        ),
    )
    assert list(kept.optimization_ids) == [chosen]
    raises(
        NotFound,
        "optimization_id",
        call,
        "GetOptimizationResult",
        pb.GetOptimizationResultRequest(optimization_id=missing),
    )
    raises(
        InvalidArgument,
        "optimization_id",
        call,
        "GetOptimizationResult",
        pb.GetOptimizationResultRequest(optimization_id="x"),
    )
    raises(
        NotFound,
        "backtest_id",
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(backtest_id=missing),
    )
    token = call(
        "ListOptimizationResults", pb.ListOptimizationResultsRequest(backtest_id=parent, page_size=2)
    ).next_page_token
    raises(
        InvalidArgument,
        "page_token",
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(page_size=2, page_token=token),
    )
    raises(
        InvalidArgument,
        "page_size",
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(page_size=-1),
    )

    # Deleting the backtest deletes its optimization rows (ON DELETE CASCADE), not the other backtest's.
    assert call("DeleteBacktestResult", pb.DeleteBacktestResultRequest(backtest_id=parent)).deleted
    assert count(db, OptimizationResultRow, OptimizationResultRow.backtest_id == uuid.UUID(parent)) == 0
    assert count(db, OptimizationResultRow) == len(other_ids)
    raises(
        NotFound,
        "optimization_id",
        call,
        "GetOptimizationResult",
        pb.GetOptimizationResultRequest(optimization_id=ids[0]),
    )
    raises(
        NotFound,
        "backtest_id",
        call,
        "ListOptimizationResults",
        pb.ListOptimizationResultsRequest(backtest_id=parent),
    )
    # The request key of the deleted rows is stale: the replay saves again, and the parent is gone.
    raises(NotFound, "results[0].backtest_id", call, "SaveOptimizationResults", request)


# ----------------------------------------------------------------------------- walk-forward tests


def _window(parent: str, k: int, rng: np.random.Generator, **extra: Any) -> tuple[Any, dict[str, Any]]:
    train_start = dt.date(2015, 1, 1) + dt.timedelta(days=91 * k)
    train_end = train_start + dt.timedelta(days=364)
    test_start = train_end + dt.timedelta(days=1)
    test_end = test_start + dt.timedelta(days=90)
    values: dict[str, Any] = {
        "training_performance": float(rng.normal(1, 0.5)),
        "out_of_sample_return": float(rng.normal(0, 0.1)),
        "out_of_sample_sharpe": None if k % 5 == 3 else float(rng.normal(0.5, 1)),
        "out_of_sample_drawdown": float(-rng.uniform(0, 0.3)),
        "out_of_sample_trades": int(rng.integers(0, 40)),
        "performance_ratio": float(rng.normal(0.7, 0.3)),
        "degradation_factor": float(rng.normal(0.3, 0.3)),
    }
    values.update({k_: v for k_, v in extra.items() if k_ in WALK_FORWARD_TYPES})
    fields = {name: v for name, v in values.items() if v is not None}
    profitable = None if k % 7 == 6 else bool((values["out_of_sample_return"] or 0) > 0)
    msg = pb.WalkForwardRecord(
        parent_backtest_id=parent,
        window_size_months=12,
        step_size_months=3,
        training_start=train_start.isoformat(),
        training_end=train_end.isoformat(),
        test_period_start=test_start.isoformat(),
        test_period_end=test_end.isoformat(),
        is_statistically_significant=bool(k % 3 == 0),
        **fields,
        **{k_: v for k_, v in extra.items() if k_ not in WALK_FORWARD_TYPES},
    )
    if profitable is not None:
        msg.is_profitable = profitable
    if k % 4 != 2 and "optimal_parameters" not in extra:
        msg.optimal_parameters.CopyFrom(struct_from_dict({"fast": 5 + k, "slow": 50}))
    return msg, values


def scenario_walk_forward(call: Call, db: Database) -> None:
    rng = np.random.default_rng(34)
    parent = save_backtest(call, symbol="WF")
    first = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    built = [_window(parent, k, rng, test_date=ts(first)) for k in range(14)]
    built[0][1].update(out_of_sample_return=0.0, degradation_factor=0.0)
    built[0][0].out_of_sample_return = 0.0
    built[0][0].degradation_factor = 0.0
    built[1][1].update(out_of_sample_sharpe=1e4, performance_ratio=-math.inf)  # 10000.0000: not Numeric(8,4)
    built[1][0].out_of_sample_sharpe = 1e4
    built[1][0].performance_ratio = -math.inf
    built[2][1].update(training_performance=math.nan)  # window 2 has no optimal_parameters
    built[2][0].training_performance = math.nan
    order = rng.permutation(len(built))  # the request is not in test-period order
    sent = [built[k][0] for k in order]
    values = [built[k][1] for k in order]
    request = pb.SaveWalkForwardTestsRequest(windows=sent, request_id="wf-1")
    saved = call("SaveWalkForwardTests", request)
    ids = list(saved.walk_forward_ids)
    assert saved.created and len(set(ids)) == len(sent)
    replay = call("SaveWalkForwardTests", request)
    assert not replay.created and list(replay.walk_forward_ids) == ids

    for wid, msg, v in zip(ids, sent, values, strict=True):
        got = call("GetWalkForwardTest", pb.GetWalkForwardTestRequest(walk_forward_id=wid)).window
        for name, spec in WALK_FORWARD_TYPES.items():
            want = fit(v[name], spec)
            assert opt(got, name) == (None if want is None else pytest.approx(want, abs=1e-12)), name
        for name in (
            "parent_backtest_id",
            "window_size_months",
            "step_size_months",
            "training_start",
            "training_end",
            "test_period_start",
            "test_period_end",
            "is_statistically_significant",
            "test_date",
        ):
            assert getattr(got, name) == getattr(msg, name), name
        assert opt(got, "is_profitable") == opt(msg, "is_profitable")
        assert got.HasField("optimal_parameters") == msg.HasField("optimal_parameters")
        assert json_format.MessageToDict(got.optimal_parameters) == json_format.MessageToDict(
            msg.optimal_parameters
        )
    by_start = {msg.test_period_start: wid for wid, msg in zip(ids, sent, strict=True)}
    edge_zero = call(
        "GetWalkForwardTest",
        pb.GetWalkForwardTestRequest(walk_forward_id=by_start[built[0][0].test_period_start]),
    ).window
    assert edge_zero.HasField("out_of_sample_return") and edge_zero.out_of_sample_return == 0.0
    assert edge_zero.HasField("degradation_factor") and edge_zero.degradation_factor == 0.0
    repo = CatalogRepository(db)
    assert repo.get_walk_forward_test(by_start[built[1][0].test_period_start]).null_reasons == {
        "out_of_sample_sharpe": "10000.0 exceeds Numeric(8,4)",
        "performance_ratio": "-inf is not finite",
    }
    no_params = repo.get_walk_forward_test(by_start[built[2][0].test_period_start])
    assert no_params.optimal_parameters is None  # absent stays absent although the reason is kept in it
    assert no_params.null_reasons == {"training_performance": "NaN is not a number"}
    with db.session() as s:
        row = s.get(WalkForwardTestRow, uuid.UUID(by_start[built[1][0].test_period_start]))
        assert row is not None and row.out_of_sample_sharpe is None
        stored_params: Any = row.optimal_parameters
        assert set(stored_params["_alphaswarm"]["null_reasons"]) == {
            "out_of_sample_sharpe",
            "performance_ratio",
        }

    # A re-run of four windows a day later: by test period, then the newest run first.
    rerun = [_window(parent, k, rng, test_date=ts(first + dt.timedelta(days=1)))[0] for k in (3, 4, 5, 6)]
    rerun_ids = list(
        call("SaveWalkForwardTests", pb.SaveWalkForwardTestsRequest(windows=rerun)).walk_forward_ids
    )
    rows = [(m.test_period_start, first, wid) for m, wid in zip(sent, ids, strict=True)]
    rows += [
        (m.test_period_start, first + dt.timedelta(days=1), wid)
        for m, wid in zip(rerun, rerun_ids, strict=True)
    ]
    expected = [wid for _, _, wid in sorted(rows, key=lambda r: (r[0], -r[1].timestamp(), r[2]))]
    listed = list_all(
        call,
        "ListWalkForwardTests",
        pb.ListWalkForwardTestsRequest(parent_backtest_id=parent, page_size=3),
        "windows",
    )
    assert [w.walk_forward_id for w in listed] == expected
    everything = list_all(
        call, "ListWalkForwardTests", pb.ListWalkForwardTestsRequest(page_size=5), "windows"
    )
    expected_all = [wid for _, _, wid in sorted(rows, key=lambda r: (-r[1].timestamp(), r[0], r[2]))]
    assert [w.walk_forward_id for w in everything] == expected_all

    def insert() -> None:
        extra = [_window(parent, int(rng.integers(0, 30)), rng)[0]]
        call("SaveWalkForwardTests", pb.SaveWalkForwardTestsRequest(windows=extra))

    seen = page_while_inserting(
        call,
        "ListWalkForwardTests",
        pb.ListWalkForwardTestsRequest(parent_backtest_id=parent, page_size=4),
        "windows",
        insert,
    )
    seen_ids = [w.walk_forward_id for w in seen]
    assert len(seen_ids) == len(set(seen_ids))
    assert [i for i in seen_ids if i in set(expected)] == expected

    # Errors.
    before = count(db, WalkForwardTestRow)
    missing = str(uuid.uuid4())
    ok = _window(parent, 1, rng)[0]
    raises(
        NotFound,
        "windows[1].parent_backtest_id",
        call,
        "SaveWalkForwardTests",
        pb.SaveWalkForwardTestsRequest(windows=[ok, _window(missing, 2, rng)[0]]),
    )
    overlap = _window(parent, 1, rng)[0]
    overlap.test_period_start = overlap.training_end
    backwards = _window(parent, 1, rng)[0]
    backwards.training_end = "2010-01-01"
    inverted_test = _window(parent, 1, rng)[0]
    inverted_test.test_period_end = "2000-01-01"
    bad_date = _window(parent, 1, rng)[0]
    bad_date.training_start = "2015-02-30"
    negative = _window(parent, 1, rng)[0]
    negative.window_size_months = -1
    reserved = _window(parent, 1, rng, optimal_parameters=struct_from_dict({"_alphaswarm": {}}))[0]
    for windows, field in [
        ([], "windows"),
        ([ok, overlap], "windows[1].test_period_start"),
        ([backwards], "windows[0].training_end"),
        ([inverted_test], "windows[0].test_period_end"),
        ([bad_date], "windows[0].training_start"),
        ([negative], "windows[0].window_size_months"),
        ([reserved], "windows[0].optimal_parameters"),
        ([_window("zzz", 1, rng)[0]], "windows[0].parent_backtest_id"),
    ]:
        raises(
            InvalidArgument,
            field,
            call,
            "SaveWalkForwardTests",
            pb.SaveWalkForwardTestsRequest(windows=windows),
        )
    assert count(db, WalkForwardTestRow) == before
    raises(
        NotFound,
        "walk_forward_id",
        call,
        "GetWalkForwardTest",
        pb.GetWalkForwardTestRequest(walk_forward_id=missing),
    )
    raises(
        NotFound,
        "parent_backtest_id",
        call,
        "ListWalkForwardTests",
        pb.ListWalkForwardTestsRequest(parent_backtest_id=missing),
    )

    assert call("DeleteBacktestResult", pb.DeleteBacktestResultRequest(backtest_id=parent)).deleted
    assert count(db, WalkForwardTestRow) == 0
    raises(
        NotFound,
        "walk_forward_id",
        call,
        "GetWalkForwardTest",
        pb.GetWalkForwardTestRequest(walk_forward_id=ids[0]),
    )


# ----------------------------------------------------------------------------- portfolio backtests


def _portfolio(name: str, rng: np.random.Generator, **extra: Any) -> Any:
    symbols = ["AAPL", "MSFT", "GOOG", "BRK.B"]
    dates = [str(d) for d in pd.bdate_range("2021-01-04", periods=40).date]
    equity = 100_000 * np.cumprod(1 + rng.normal(0, 0.01, 40))
    equity[7] = np.nan
    weights = rng.dirichlet(np.ones(4), size=40)
    weights[3, 1] = np.nan
    base: dict[str, Any] = {
        "portfolio_name": name,
        "start_date": dates[0],
        "end_date": dates[-1],
        "symbols": symbols,
        "weights": struct_from_dict({"AAPL": 0.4, "MSFT": 0.3, "GOOG": 0.2, "BRK.B": 0.1}),
        "rebalance_frequency": "monthly",
        "dates": dates,
        "equity_curve": array_to_proto(equity),
        "weights_history": array_to_proto(weights),
        "metrics": metricset_to_proto(
            {"sharpe": float(np.round(rng.normal(1, 0.5), 3)), "total_return": float(rng.normal(0.1, 0.05))}
        ),
    }
    base.update(extra)
    return pb.PortfolioRecord(**base)


def scenario_portfolios(call: Call, db: Database) -> None:
    rng = np.random.default_rng(55)
    components = [save_backtest(call, symbol=s) for s in ("AAPL", "MSFT")]
    metrics = {
        "total_return": 0.1234567,
        "annualized_return": 0.05,
        "sharpe": 1.23456,
        "sortino": 1e5,  # does not fit Numeric(8,4)
        "max_drawdown": 0.0,
        "volatility": None,
        "diversification_ratio": 1.5,
        "concentration_index": 0.25,
        "turnover_rate": 12.34565,  # half up at the fourth decimal
        "calmar": 2.5,  # no column
        "probabilistic_sharpe": None,  # no column, undefined
    }
    reasons = {"volatility": "zero variance", "probabilistic_sharpe": "too few returns"}
    conventions = {"periods_per_year": 252, "rf": 0.0}
    full = _portfolio(
        "momentum-4",
        rng,
        description="Four large caps, monthly rebalanced",
        initial_capital=250_000.0,
        max_positions=3,
        position_sizing_method="inverse_volatility",
        portfolio_stop_loss=0.0,
        max_sector_allocation=0.35,
        correlation_threshold=0.70005,
        metrics=metricset_to_proto(metrics, reasons, conventions),
        component_backtest_ids=components,
        status="completed",
        notes="user note",
    )
    full.backtest_date.CopyFrom(ts(dt.datetime(2024, 7, 1, 9, 30, tzinfo=dt.UTC)))
    request = pb.SavePortfolioBacktestRequest(portfolio=full, request_id="pf-1")
    saved = call("SavePortfolioBacktest", request)
    assert saved.created
    replay = call("SavePortfolioBacktest", request)
    assert not replay.created and replay.portfolio_backtest_id == saved.portfolio_backtest_id
    raises(
        AlreadyExists,
        "request_id",
        call,
        "SavePortfolioBacktest",
        pb.SavePortfolioBacktestRequest(portfolio=_portfolio("other", rng), request_id="pf-1"),
    )
    got = call(
        "GetPortfolioBacktest",
        pb.GetPortfolioBacktestRequest(portfolio_backtest_id=saved.portfolio_backtest_id),
    ).portfolio
    for name in (
        "portfolio_name",
        "description",
        "backtest_date",
        "start_date",
        "end_date",
        "symbols",
        "rebalance_frequency",
        "initial_capital",
        "position_sizing_method",
        "component_backtest_ids",
        "dates",
        "status",
    ):
        assert getattr(got, name) == getattr(full, name), name
    assert got.max_positions == 3 and got.HasField("portfolio_stop_loss") and got.portfolio_stop_loss == 0.0
    assert got.max_sector_allocation == 0.35 and got.correlation_threshold == 0.7001
    assert json_format.MessageToDict(got.weights) == json_format.MessageToDict(full.weights)
    np.testing.assert_array_equal(array_from_proto(got.equity_curve), array_from_proto(full.equity_curve))
    np.testing.assert_array_equal(
        array_from_proto(got.weights_history), array_from_proto(full.weights_history)
    )
    stored, got_reasons, got_conventions = metricset_from_proto(got.metrics)
    expected_metrics: dict[str, float | None] = {
        name: fit(metrics[name], spec) for name, (_, spec) in PORTFOLIO_METRIC_TYPES.items()
    }
    expected_metrics.update(calmar=2.5, probabilistic_sharpe=None)
    assert stored == pytest.approx(expected_metrics, abs=1e-12)
    assert stored["max_drawdown"] == 0.0 and got.metrics.values["max_drawdown"].HasField("value")
    assert stored["turnover_rate"] == 12.3457
    assert got_reasons == {
        "sortino": "100000.0 exceeds Numeric(8,4)",
        "volatility": "zero variance",
        "probabilistic_sharpe": "too few returns",
    }
    assert got_conventions == conventions
    assert got.notes.splitlines() == [
        "user note",
        "sortino_ratio: 100000.0 exceeds Numeric(8,4)",
        "volatility: zero variance",
    ]
    pid = uuid.UUID(saved.portfolio_backtest_id)
    with db.session() as s:
        row = s.get(BacktestPortfolioRow, pid)
        detail = s.get(PortfolioDetailRow, pid)
        assert row is not None and detail is not None
        assert row.sortino_ratio is None and row.max_drawdown == 0.0 and row.portfolio_stop_loss == 0.0
        assert row.symbols == list(full.symbols) and row.component_backtest_ids == components
        equity_doc: Any = row.portfolio_equity_curve
        weights_doc: Any = row.portfolio_weights_history
        assert set(equity_doc) == {"dates", "values"} and equity_doc["values"][7] is None
        assert weights_doc["dates"] == list(full.dates) and weights_doc["symbols"] == list(full.symbols)
        assert weights_doc["values"][3][1] is None and len(weights_doc["values"][0]) == 4
        assert detail.extra_metrics == {"calmar": 2.5, "probabilistic_sharpe": None}
        assert detail.conventions == conventions
    json.dumps(equity_doc)  # valid JSON: no NaN

    # The smallest record: the seed defaults, nothing else.
    minimal = pb.PortfolioRecord(
        portfolio_name="bare", start_date="2021-01-01", end_date="2021-02-01", symbols=["SPY"]
    )
    bare_id = call(
        "SavePortfolioBacktest", pb.SavePortfolioBacktestRequest(portfolio=minimal)
    ).portfolio_backtest_id
    bare = call(
        "GetPortfolioBacktest", pb.GetPortfolioBacktestRequest(portfolio_backtest_id=bare_id)
    ).portfolio
    assert bare.initial_capital == 100_000.0 and bare.status == "completed" and bare.notes == ""
    for name in ("max_positions", "portfolio_stop_loss", "weights", "equity_curve", "weights_history"):
        assert not bare.HasField(name), name
    assert dict(bare.metrics.values) == {} and count(db, PortfolioDetailRow) == 1

    # Newest first, filter by name, stable pages while rows arrive.
    start = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
    named: list[tuple[dt.datetime, str]] = []
    for _ in range(11):
        when = start + dt.timedelta(hours=int(rng.integers(0, 6)))  # ties on backtest_date
        msg = _portfolio("grid", rng)
        msg.backtest_date.CopyFrom(ts(when))
        named.append(
            (
                when,
                call(
                    "SavePortfolioBacktest", pb.SavePortfolioBacktestRequest(portfolio=msg)
                ).portfolio_backtest_id,
            )
        )
    expected = [pid_ for _, pid_ in sorted(named, key=lambda x: (x[0], x[1]), reverse=True)]
    grid = list_all(
        call,
        "ListPortfolioBacktests",
        pb.ListPortfolioBacktestsRequest(portfolio_name="grid", page_size=4),
        "portfolios",
    )
    assert [p.portfolio_backtest_id for p in grid] == expected
    assert all(not p.HasField("equity_curve") and not p.HasField("weights_history") for p in grid)
    assert all(p.metrics.values["sharpe"].HasField("value") for p in grid)
    everything = list_all(
        call, "ListPortfolioBacktests", pb.ListPortfolioBacktestsRequest(page_size=5), "portfolios"
    )
    assert {p.portfolio_backtest_id for p in everything} == {*expected, saved.portfolio_backtest_id, bare_id}
    listed_full = next(p for p in everything if p.portfolio_backtest_id == saved.portfolio_backtest_id)
    assert metricset_from_proto(listed_full.metrics)[1] == got_reasons  # the side table is read by lists too

    def insert() -> None:
        msg = _portfolio("grid", rng)
        msg.backtest_date.CopyFrom(ts(start + dt.timedelta(hours=int(rng.integers(0, 6)))))
        call("SavePortfolioBacktest", pb.SavePortfolioBacktestRequest(portfolio=msg))

    seen = page_while_inserting(
        call,
        "ListPortfolioBacktests",
        pb.ListPortfolioBacktestsRequest(portfolio_name="grid", page_size=3),
        "portfolios",
        insert,
    )
    seen_ids = [p.portfolio_backtest_id for p in seen]
    assert len(seen_ids) == len(set(seen_ids))
    assert [i for i in seen_ids if i in set(expected)] == expected

    # Errors name the field; nothing is written.
    before = count(db, BacktestPortfolioRow)
    cases: list[tuple[Any, str]] = [
        (_portfolio("", rng), "portfolio.portfolio_name"),
        (_portfolio("x", rng, symbols=[]), "portfolio.symbols"),
        (_portfolio("x", rng, symbols=["A", "B", "A", "C"]), "portfolio.symbols[2]"),
        (_portfolio("x", rng, weights=struct_from_dict({"TSLA": 1.0})), "portfolio.weights[TSLA]"),
        (_portfolio("x", rng, weights=struct_from_dict({"AAPL": "lots"})), "portfolio.weights[AAPL]"),
        (_portfolio("x", rng, rebalance_frequency="hourly"), "portfolio.rebalance_frequency"),
        (_portfolio("x", rng, position_sizing_method="kelly"), "portfolio.position_sizing_method"),
        (_portfolio("x", rng, max_positions=0), "portfolio.max_positions"),
        (_portfolio("x", rng, weights_history=array_to_proto(np.ones((40, 3)))), "portfolio.weights_history"),
        (_portfolio("x", rng, equity_curve=array_to_proto(np.ones(39))), "portfolio.equity_curve"),
        (_portfolio("x", rng, start_date="2022-01-01"), "portfolio.end_date"),
        (_portfolio("x", rng, component_backtest_ids=["nope"]), "portfolio.component_backtest_ids[0]"),
        (_portfolio("x", rng, status="weird"), "portfolio.status"),
        (_portfolio("x", rng, portfolio_backtest_id="1234"), "portfolio.portfolio_backtest_id"),
    ]
    for msg, field in cases:
        raises(
            InvalidArgument,
            field,
            call,
            "SavePortfolioBacktest",
            pb.SavePortfolioBacktestRequest(portfolio=msg),
        )
    assert count(db, BacktestPortfolioRow) == before
    raises(
        NotFound,
        "portfolio_backtest_id",
        call,
        "GetPortfolioBacktest",
        pb.GetPortfolioBacktestRequest(portfolio_backtest_id=str(uuid.uuid4())),
    )


# ----------------------------------------------------------------------------- best and compare


def _seed_ranked_backtests(call: Call, rng: np.random.Generator, n: int = 36) -> pd.DataFrame:
    """Backtests with ties, NULLs and failures; the frame holds what the columns store (by the reference fit)."""
    rows: list[dict[str, Any]] = []
    base = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    for i in range(n):
        sent: dict[str, float | None] = {
            "sharpe": None if i % 7 == 3 else float(rng.choice([-1.0, 0.0, 0.5, 2.0, 2.0])),
            "max_drawdown": None if i % 9 == 4 else float(-rng.choice([0.0, 0.1, 0.25, 0.4])),
            "volatility": float(rng.choice([0.1, 0.15, 0.2])),
            "downside_volatility": None if i % 5 == 0 else float(rng.uniform(0.05, 0.2)),
            "total_return": float(rng.normal(0.05, 0.2)),
            "annualized_return": float(rng.normal(0.05, 0.1)),
            "sortino": 1e6 if i == 5 else float(rng.normal(1, 1)),  # overflow -> NULL
            "calmar": float(rng.normal(1, 1)),
            "win_rate": float(rng.choice([0.4, 0.5, 0.6])),
            "profit_factor": None if i % 4 == 0 else float(rng.uniform(0.5, 3)),
            "total_trades": None if i % 11 == 7 else float(rng.integers(0, 12)),
            "losing_trades": float(rng.integers(0, 6)),
            "max_drawdown_duration": float(rng.integers(0, 50)),
        }
        when = base + dt.timedelta(hours=int(rng.integers(0, 8)))  # ties on backtest_date too
        symbol = str(rng.choice(["AAA", "BBB"]))
        strategy = str(rng.choice(["s1", "s2"]))
        status = "failed" if i % 10 == 9 else "completed"
        bid = save_backtest(
            call, symbol=symbol, strategy_type=strategy, metrics=sent, when=when, status=status
        )
        names = {"sharpe": "sharpe_ratio", "sortino": "sortino_ratio", "calmar": "calmar_ratio"}
        row: dict[str, Any] = {
            "backtest_id": bid,
            "symbol": symbol,
            "strategy_type": strategy,
            "status": status,
            "backtest_date": when,
        }
        for name, value in sent.items():
            column = names.get(name, name)
            row[column] = fit(value, BACKTEST_TYPES[column])
        rows.append(row)
    frame = pd.DataFrame(rows)
    for column in BACKTEST_TYPES:
        frame[column] = frame[column].astype("float64")  # None -> NaN
    return frame


def scenario_best_and_compare(call: Call, db: Database) -> None:
    rng = np.random.default_rng(77)
    frame = _seed_ranked_backtests(call, rng)
    frame["uuid"] = frame["backtest_id"].map(uuid.UUID)

    def expected_best(column: str, min_trades: int, **filters: str) -> str | None:
        df = frame[(frame["status"] == "completed") & frame[column].notna()]
        if min_trades:
            df = df[df["total_trades"] >= min_trades]
        for key, value in filters.items():
            df = df[df[key] == value]
        if df.empty:
            return None
        higher = column not in LOWER_IS_BETTER
        df = df.assign(_date=df["backtest_date"], _id=df["uuid"].map(lambda u: u.bytes))
        ordered = df.sort_values([column, "_date", "_id"], ascending=[not higher, False, False])
        return str(ordered["backtest_id"].iloc[0])

    for column in (
        "sharpe_ratio",
        "max_drawdown",
        "volatility",
        "downside_volatility",
        "total_return",
        "max_drawdown_duration",
        "sortino_ratio",
        "losing_trades",
    ):
        for min_trades in (0, 3, 9, 12):
            for filters in ({}, {"symbol": "AAA"}, {"strategy_type": "s2"}):
                want = expected_best(column, min_trades, **filters)
                request = pb.GetBestBacktestRequest(metric=column, min_trades=min_trades, **filters)
                if want is None:
                    raises(NotFound, "metric", call, "GetBestBacktest", request)
                    continue
                got = call("GetBestBacktest", request).result
                assert got.backtest_id == want, (column, min_trades, filters)
                assert not got.HasField("equity_curve")
    # MetricSet names work too; max_drawdown's best is the smallest loss (the largest value, <= 0).
    best_dd = call("GetBestBacktest", pb.GetBestBacktestRequest(metric="max_drawdown")).result
    assert metricset_from_proto(best_dd.metrics)[0]["max_drawdown"] == 0.0
    assert call(
        "GetBestBacktest", pb.GetBestBacktestRequest(metric="sharpe")
    ).result.backtest_id == expected_best("sharpe_ratio", 0)
    raises(
        NotFound,
        "metric",
        call,
        "GetBestBacktest",
        pb.GetBestBacktestRequest(metric="sharpe", min_trades=10**6),
    )
    for bad in ("", "symbol", "sharpe; DROP TABLE x", "ic_spearman"):
        raises(InvalidArgument, "metric", call, "GetBestBacktest", pb.GetBestBacktestRequest(metric=bad))
    raises(
        InvalidArgument,
        "min_trades",
        call,
        "GetBestBacktest",
        pb.GetBestBacktestRequest(metric="sharpe_ratio", min_trades=-1),
    )

    # Compare: request order, metric-major, ranks as pandas' rank(method="min") in each direction.
    picked = list(frame.sample(n=14, random_state=3).index)
    ids = [frame.loc[i, "backtest_id"] for i in picked]
    reply = call("CompareBacktests", pb.CompareBacktestsRequest(backtest_ids=ids))
    assert [r.backtest_id for r in reply.results] == ids
    default = [
        "total_return",
        "annualized_return",
        "sharpe_ratio",
        "sortino_ratio",
        "calmar_ratio",
        "max_drawdown",
        "volatility",
        "win_rate",
        "profit_factor",
        "total_trades",
    ]
    assert [(c.metric, c.backtest_id) for c in reply.comparisons] == [(m, b) for m in default for b in ids]
    sub = frame.loc[picked]
    for c in reply.comparisons:
        higher = c.metric not in LOWER_IS_BETTER
        assert c.higher_is_better == higher
        ranks = sub[c.metric].rank(method="min", ascending=not higher)
        position = ids.index(c.backtest_id)
        value = sub[c.metric].iloc[position]
        if np.isnan(value):
            assert not c.HasField("value") and not c.HasField("rank")
        else:
            assert c.value == pytest.approx(value, abs=1e-12)
            assert c.rank == int(ranks.iloc[position]), c.metric
    named = call(
        "CompareBacktests",
        pb.CompareBacktestsRequest(
            backtest_ids=ids[:3], metrics=["sharpe", "max_drawdown_duration", "losing_trades", "beta"]
        ),
    )
    assert list(dict.fromkeys(c.metric for c in named.comparisons)) == [
        "sharpe_ratio",
        "max_drawdown_duration",
        "losing_trades",
        "beta",
    ]
    assert [c.higher_is_better for c in named.comparisons[3::3]] == [False, False, True]
    assert all(not c.HasField("rank") for c in named.comparisons if c.metric == "beta")  # never sent: NULL

    missing = str(uuid.uuid4())
    for bad_request, exc, field in [
        (pb.CompareBacktestsRequest(backtest_ids=ids[:1]), InvalidArgument, "backtest_ids"),
        (
            pb.CompareBacktestsRequest(backtest_ids=[str(uuid.uuid4()) for _ in range(51)]),
            InvalidArgument,
            "backtest_ids",
        ),
        (pb.CompareBacktestsRequest(backtest_ids=[ids[0], ids[0]]), InvalidArgument, "backtest_ids[1]"),
        (pb.CompareBacktestsRequest(backtest_ids=["bad", ids[0]]), InvalidArgument, "backtest_ids[0]"),
        (pb.CompareBacktestsRequest(backtest_ids=[ids[0], ids[1], missing]), NotFound, "backtest_ids[2]"),
        (
            pb.CompareBacktestsRequest(backtest_ids=ids[:2], metrics=["sharpe", "nope"]),
            InvalidArgument,
            "metrics[1]",
        ),
        (
            pb.CompareBacktestsRequest(backtest_ids=ids[:2], metrics=["sharpe", "sharpe_ratio"]),
            InvalidArgument,
            "metrics[1]",
        ),
    ]:
        err = raises(exc, field, call, "CompareBacktests", bad_request)
        if exc is NotFound:
            assert missing in str(err)


# ----------------------------------------------------------------------------- performance summary


def scenario_summary(call: Call, db: Database) -> None:
    rng = np.random.default_rng(99)
    now = dt.datetime.now(dt.UTC)
    rows: list[dict[str, Any]] = []
    while len(rows) < 70:
        age = float(rng.uniform(1.5, 60))
        if any(abs(age - b) < 0.1 for b in (7, 30, 45)):
            continue  # keep clear of the window edges: the server's clock runs on
        sent: dict[str, float | None] = {
            "total_return": float(rng.normal(0.02, 0.2)),
            "sharpe": None if rng.random() < 0.2 else float(rng.normal(0.8, 1)),
            "max_drawdown": float(-rng.uniform(0, 0.5)),
            "win_rate": None if rng.random() < 0.15 else float(rng.uniform(0.3, 0.7)),
            "total_trades": None if rng.random() < 0.1 else float(rng.integers(0, 200)),
        }
        if len(rows) == 3:
            sent["sharpe"] = 1e5  # does not fit: NULL, left out of the mean
        if len(rows) == 4:
            sent.update(total_return=0.0, sharpe=0.0, max_drawdown=0.0, win_rate=0.0, total_trades=0.0)
        symbol = str(rng.choice(["AAA", "BBB", "CCC", "DDD"]))
        strategy = str(rng.choice(["alpha:topk", "sma_cross", "rsi"]))
        when = now - dt.timedelta(days=age)
        save_backtest(call, symbol=symbol, strategy_type=strategy, metrics=sent, when=when)
        rows.append(
            {
                "symbol": symbol,
                "strategy_type": strategy,
                "age": age,
                "total_return": fit(sent["total_return"], (10, 4)),
                "sharpe_ratio": fit(sent["sharpe"], (8, 4)),
                "max_drawdown": fit(sent["max_drawdown"], (8, 4)),
                "win_rate": fit(sent["win_rate"], (5, 4)),
                "total_trades": fit(sent["total_trades"], None),
            }
        )
    frame = pd.DataFrame(rows)
    for column in ("total_return", "sharpe_ratio", "max_drawdown", "win_rate", "total_trades"):
        frame[column] = frame[column].astype("float64")

    def reference(df: pd.DataFrame) -> pd.DataFrame:
        return df.agg(
            count=("symbol", "size"),
            avg_total_return=("total_return", "mean"),
            avg_sharpe_ratio=("sharpe_ratio", "mean"),
            best_sharpe_ratio=("sharpe_ratio", "max"),
            avg_max_drawdown=("max_drawdown", "mean"),
            avg_win_rate=("win_rate", "mean"),
            total_trades=("total_trades", "sum"),
        )

    def check(group: Any, expected: pd.Series) -> None:
        assert group.count == int(expected["count"])
        assert group.total_trades == int(expected["total_trades"])
        for name in (
            "avg_total_return",
            "avg_sharpe_ratio",
            "best_sharpe_ratio",
            "avg_max_drawdown",
            "avg_win_rate",
        ):
            want = expected[name]
            if pd.isna(want):
                assert not group.HasField(name), name
            else:
                assert getattr(group, name) == pytest.approx(float(want), rel=1e-12, abs=1e-15), name

    for days in (0, 7, 30, 45, 100_000):
        reply = call("GetPerformanceSummary", pb.GetPerformanceSummaryRequest(days=days))
        window = days or 30
        assert reply.days == window
        inside = frame[frame["age"] <= window]
        overall = reference(inside.assign(_all=0).groupby("_all")).iloc[0]
        assert reply.overall.key == ""
        check(reply.overall, overall)
        for groups, key in ((reply.by_symbol, "symbol"), (reply.by_strategy, "strategy_type")):
            expected = reference(inside.groupby(key)).sort_index()
            assert [g.key for g in groups] == list(expected.index)
            for g in groups:
                check(g, expected.loc[g.key])
    empty = call("GetPerformanceSummary", pb.GetPerformanceSummaryRequest(days=1))
    assert empty.overall.count == 0 and empty.overall.total_trades == 0
    assert not empty.overall.HasField("avg_sharpe_ratio") and list(empty.by_symbol) == []
    raises(InvalidArgument, "days", call, "GetPerformanceSummary", pb.GetPerformanceSummaryRequest(days=-3))


SCENARIOS: dict[str, Callable[[Call, Database], None]] = {
    "optimizations": scenario_optimizations,
    "walk_forward": scenario_walk_forward,
    "portfolios": scenario_portfolios,
    "best_and_compare": scenario_best_and_compare,
    "summary": scenario_summary,
}


# ----------------------------------------------------------------------------- fixtures and tests


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "catalog.db"
    shutil.copy(template_db, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def call(db: Database) -> Call:
    svc = PersistenceServicer(CatalogRepository(db))
    return lambda method, request: getattr(svc, method)(request, None)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_on_sqlite(name: str, call: Call, db: Database) -> None:
    SCENARIOS[name](call, db)


def test_summary_window_uses_the_given_now_and_is_rolling(db: Database) -> None:
    repo = CatalogRepository(db)
    call_ = PersistenceServicer(repo)
    now = dt.datetime(2024, 9, 30, 12, 0, tzinfo=dt.UTC)
    inside = now - dt.timedelta(days=7) + dt.timedelta(seconds=1)
    outside = now - dt.timedelta(days=7) - dt.timedelta(seconds=1)
    future = now + dt.timedelta(minutes=5)  # a writer's clock ahead of ours still counts
    for when, sharpe in ((inside, 1.0), (outside, 5.0), (future, 2.0)):
        save_backtest(
            lambda m, r: getattr(call_, m)(r, None),
            metrics={"sharpe": sharpe, "total_trades": 3.0},
            when=when,
        )
    summary = repo.get_performance_summary(7, now=now)
    assert summary.since == now - dt.timedelta(days=7)
    assert (summary.overall.count, summary.overall.best_sharpe_ratio, summary.overall.total_trades) == (
        2,
        2.0,
        6,
    )
    assert summary.overall.avg_sharpe_ratio == 1.5
    assert repo.get_performance_summary(10**6, now=now).overall.count == 3  # before year 1: everything
    with pytest.raises(InvalidArgument):
        repo.get_performance_summary(7, now=dt.datetime(2024, 1, 1))  # naive


def test_exact_means_survive_values_that_floats_cannot_hold(db: Database) -> None:
    """0.1 + 0.2 in floats is not 0.3: the summary's means come from exact sums in units of the scale."""
    repo = CatalogRepository(db)
    svc = PersistenceServicer(repo)
    now = dt.datetime.now(dt.UTC)
    values = [0.1, 0.2, 0.3, 0.1001, 0.0003]
    for v in values:
        save_backtest(lambda m, r: getattr(svc, m)(r, None), metrics={"total_return": v}, when=now)
    got = repo.get_performance_summary(1, now=now + dt.timedelta(seconds=1)).overall.avg_total_return
    exact = sum(decimal.Decimal(repr(v)) for v in values) / len(values)
    assert got == float(exact)


def test_batch_save_ids_are_derived_from_the_request_key_and_replayed(db: Database) -> None:
    repo = CatalogRepository(db)
    svc = PersistenceServicer(repo)
    parent = save_backtest(lambda m, r: getattr(svc, m)(r, None))
    from alphaswarm_persistence.repository import OptimizationResultRecord

    rows = [
        OptimizationResultRecord(backtest_id=parent, parameter_set=k, sharpe_ratio=0.1 * k) for k in range(4)
    ]
    ids, created = repo.save_optimization_results(rows, request_id="k")
    again, created_again = repo.save_optimization_results(rows, request_id="k")
    assert created and not created_again and again == ids
    without_key, _ = repo.save_optimization_results(rows)
    assert set(without_key).isdisjoint(ids)
    assert [r.parameters for r in repo.list_optimization_results(backtest_id=parent).items] == [{}] * 8
