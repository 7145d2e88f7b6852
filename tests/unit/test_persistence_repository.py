"""The catalog on SQLite: every operation of the repository and the servicer's proto conversions.

Each test gets its own copy of a catalog migrated once per module with the
project's Alembic history (no `create_all`: the migrations are the schema).
References are independent of the code under test: the request itself for
round trips, pandas for the (dates x symbols) -> rows reshaping, Python's
`decimal` for the rounding of Numeric columns, and `sorted()` for orders.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2, json_format

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.protoconv import (
    array_to_proto,
    metricset_from_proto,
    metricset_to_proto,
    struct_from_dict,
)
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import (
    AlphaBacktestRunRow,
    BacktestTradeRow,
    OptimizationResultRow,
    PredictionAuditRow,
    TaskRow,
    TradeDetailRow,
    UTCDateTime,
    WalkForwardTestRow,
)
from alphaswarm_persistence.repository import (
    METRIC_COLUMNS,
    BacktestResultRecord,
    CatalogRepository,
    PredictionAuditBatch,
)
from alphaswarm_persistence.servicer import PersistenceServicer

pytestmark = pytest.mark.unit

# The seed's Numeric(precision, scale) of each metric column (shared/seeds/003), written out independently.
SEED_METRIC_TYPES: dict[str, tuple[int, int] | None] = {
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
    "winning_trades": None,
    "losing_trades": None,
    "win_rate": (5, 4),
    "profit_factor": (8, 4),
    "average_win": (12, 4),
    "average_loss": (12, 4),
    "largest_win": (12, 4),
    "largest_loss": (12, 4),
    "final_portfolio_value": (15, 2),
    "peak_portfolio_value": (15, 2),
    "beta": (8, 4),
    "alpha": (8, 4),
}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "template.db"
    migrations.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(template_db: Path, tmp_path: Path) -> Any:
    path = tmp_path / "catalog.db"
    shutil.copy(template_db, path)
    database = Database(f"sqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def repo(db: Database) -> CatalogRepository:
    return CatalogRepository(db)


@pytest.fixture
def svc(repo: CatalogRepository) -> PersistenceServicer:
    return PersistenceServicer(repo)


def _config(run_name: str = "alpha-run", **extra: Any) -> config_pb2.AlphaBacktestConfig:
    doc = {
        "dataset_cfg": {
            "source": "sp500",
            "symbols": ["AAPL", "MSFT"],
            "segments": {
                "train": {"start": "2015-01-01", "end": "2018-12-31"},
                "test": {"start": "2019-02-01", "end": "2020-12-31"},
            },
            "features": [{"name": "mom", "windows": [20, 60], "cs_rank": True}],
            "label": {"horizon": 1, "execution_lag": 1},
        },
        "model_cfg": {"type": "ridge", "params": {"alpha": 0.5}, "seed": 0},
        "strategy_cfg": {"type": "long_short_topk", "params": {"top_k": 2}},
        "backtest_cfg": {"fees": 0.0, "initial_capital": 10000.0},
        "run_name": run_name,
        "train_first": True,
        "weights": {"sharpe": 0.5},
        **extra,
    }
    return json_format.ParseDict(doc, config_pb2.AlphaBacktestConfig())


def _create_run(
    svc: PersistenceServicer, request_id: str = "", **fields: Any
) -> resources_pb2.AlphaBacktestRun:
    run = resources_pb2.AlphaBacktestRun(config=_config(), **fields)
    return svc.CreateAlphaBacktestRun(
        pb.CreateAlphaBacktestRunRequest(run=run, request_id=request_id), None
    ).run


def _update(
    svc: PersistenceServicer, run: resources_pb2.AlphaBacktestRun, paths: list[str]
) -> resources_pb2.AlphaBacktestRun:
    request = pb.UpdateAlphaBacktestRunRequest(run=run, update_mask=field_mask_pb2.FieldMask(paths=paths))
    return svc.UpdateAlphaBacktestRun(request, None).run


def _raises(exc_type: type[Exception], field: str | None, fn: Any, *args: Any, **kwargs: Any) -> Any:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    assert getattr(info.value, "field", None) == field, info.value
    return info.value


def _count(db: Database, model: Any, *where: Any) -> int:
    with db.session() as s:
        return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


def _backtest(symbol: str = "PORTFOLIO", **fields: Any) -> pb.BacktestRecord:
    base: dict[str, Any] = {
        "symbol": symbol,
        "strategy_type": "alpha:long_short_topk",
        "start_date": "2020-01-01",
        "end_date": "2020-12-31",
        "initial_capital": 10000.0,
        "fees": 0.001,
        "slippage": 0.001,
    }
    base.update(fields)
    return pb.BacktestRecord(**base)


def _save_backtest(
    svc: PersistenceServicer, record: pb.BacktestRecord, trades: list[Any] | None = None, request_id: str = ""
) -> str:
    request = pb.SaveBacktestResultRequest(result=record, trades=trades or [], request_id=request_id)
    return svc.SaveBacktestResult(request, None).backtest_id


# ----------------------------------------------------------------------------- runs


def test_create_run_round_trips_every_field_and_creates_its_task(
    svc: PersistenceServicer, repo: CatalogRepository
) -> None:
    started = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    metrics = {"ml": {"ic_spearman": 0.031, "icir": None}, "trading": {"sharpe": 1.2}, "score": 0.4}
    run = resources_pb2.AlphaBacktestRun(
        run_name="my-run",
        state=resources_pb2.RUN_STATE_RUNNING,
        config=_config(deployment_id="d1"),
        model_name="ridge-alpha",
        model_version="7",
        mlflow_parent_run_id="a" * 32,
        mlflow_train_run_id="b" * 32,
        mlflow_backtest_run_id="c" * 32,
        combined_metrics=struct_from_dict(metrics),
        stage="training",
        error=resources_pb2.ErrorDetail(stage="training", code="INTERNAL", message="boom"),
        predictions_captured=True,
    )
    run.started_at.FromDatetime(started)
    created = svc.CreateAlphaBacktestRun(pb.CreateAlphaBacktestRunRequest(run=run), None)
    assert created.created
    out = created.run
    uuid.UUID(out.run_id)
    uuid.UUID(out.task_id)
    expected = resources_pb2.AlphaBacktestRun()
    expected.CopyFrom(run)
    for name in ("run_id", "task_id", "created_at"):
        getattr(out, name)  # server-assigned
    expected.run_id, expected.task_id = out.run_id, out.task_id
    expected.created_at.CopyFrom(out.created_at)
    assert out == expected
    assert abs(out.created_at.ToDatetime(tzinfo=dt.UTC) - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)

    fetched = svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=out.run_id), None).run
    by_task = svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(task_id=out.task_id), None).run
    assert fetched == out == by_task
    task = repo.get_task(out.task_id)
    assert (task.kind, task.state, task.stage) == ("alpha_backtest", "running", "training")
    assert task.created_at.tzinfo is not None and task.created_at.utcoffset() == dt.timedelta(0)


def test_run_name_defaults_to_the_config_run_name(svc: PersistenceServicer) -> None:
    run = _create_run(svc)
    assert run.run_name == "alpha-run"
    assert run.state == resources_pb2.RUN_STATE_PENDING


def test_create_run_is_idempotent_by_request_id(svc: PersistenceServicer, db: Database) -> None:
    request = pb.CreateAlphaBacktestRunRequest(
        run=resources_pb2.AlphaBacktestRun(config=_config()), request_id="req-1"
    )
    first = svc.CreateAlphaBacktestRun(request, None)
    second = svc.CreateAlphaBacktestRun(request, None)
    assert first.created and not second.created
    assert first.run == second.run
    assert _count(db, AlphaBacktestRunRow) == 1 and _count(db, TaskRow) == 1

    other = pb.CreateAlphaBacktestRunRequest(
        run=resources_pb2.AlphaBacktestRun(config=_config("other")), request_id="req-1"
    )
    err = _raises(AlreadyExists, "request_id", svc.CreateAlphaBacktestRun, other, None)
    assert err.reason == "REQUEST_ID_REUSED"
    # The same key may name entities of different kinds.
    assert svc.SaveBacktestResult(
        pb.SaveBacktestResultRequest(result=_backtest(), request_id="req-1"), None
    ).created


def test_create_run_with_caller_ids_and_links(svc: PersistenceServicer) -> None:
    run_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    out = _create_run(svc, run_id=run_id, task_id=task_id)
    assert (out.run_id, out.task_id) == (run_id, task_id)
    _raises(AlreadyExists, "run.run_id", _create_run, svc, run_id=run_id)
    _raises(AlreadyExists, "run.task_id", _create_run, svc, task_id=task_id)
    _raises(NotFound, "run.deployment_id", _create_run, svc, deployment_id=str(uuid.uuid4()))
    _raises(NotFound, "run.backtest_id", _create_run, svc, backtest_id=str(uuid.uuid4()))
    _raises(InvalidArgument, "run.run_id", _create_run, svc, run_id="not-a-uuid")
    _raises(InvalidArgument, "run.mlflow_parent_run_id", _create_run, svc, mlflow_parent_run_id="x" * 65)


def test_update_applies_only_masked_fields_and_mirrors_the_task(
    svc: PersistenceServicer, repo: CatalogRepository
) -> None:
    run = _create_run(svc, model_name="m", model_version="1")
    patch = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id,
        state=resources_pb2.RUN_STATE_RUNNING,
        stage="backtesting",
        model_name="ignored-not-in-mask",
        mlflow_parent_run_id="p" * 32,
    )
    out = _update(svc, patch, ["state", "stage", "mlflow_parent_run_id"])
    assert out.state == resources_pb2.RUN_STATE_RUNNING
    assert (out.stage, out.mlflow_parent_run_id, out.model_name) == ("backtesting", "p" * 32, "m")
    assert out.HasField("started_at") and not out.HasField("finished_at")
    task = repo.get_task(out.task_id)
    assert (task.state, task.stage, task.pct) == ("running", "backtesting", 0.0)

    failed = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id,
        state=resources_pb2.RUN_STATE_FAILED,
        error=resources_pb2.ErrorDetail(
            stage="backtesting", code="INVALID_ARGUMENT", message="bad", field="strategy_cfg.type"
        ),
    )
    out = _update(svc, failed, ["state", "error"])
    assert out.error == failed.error
    assert out.HasField("finished_at")
    expected_duration = (out.finished_at.ToDatetime() - out.started_at.ToDatetime()).total_seconds()
    assert out.duration_seconds == pytest.approx(expected_duration, abs=1e-6)
    task = repo.get_task(out.task_id)
    assert task.state == "failed"
    assert task.error == {
        "stage": "backtesting",
        "code": "INVALID_ARGUMENT",
        "message": "bad",
        "field": "strategy_cfg.type",
    }

    # A terminal state is final; other fields may still be filled in.
    again = resources_pb2.AlphaBacktestRun(run_id=run.run_id, state=resources_pb2.RUN_STATE_RUNNING)
    _raises(FailedPrecondition, "run.state", _update, svc, again, ["state"])
    out = _update(
        svc, resources_pb2.AlphaBacktestRun(run_id=run.run_id, model_version="2"), ["model_version"]
    )
    assert out.model_version == "2"
    # A masked field that is unset in the message is cleared.
    out = _update(svc, resources_pb2.AlphaBacktestRun(run_id=run.run_id), ["error", "mlflow_parent_run_id"])
    assert not out.HasField("error") and out.mlflow_parent_run_id == ""


def test_update_mask_errors(svc: PersistenceServicer) -> None:
    run = _create_run(svc)
    patch = resources_pb2.AlphaBacktestRun(run_id=run.run_id, stage="x")
    _raises(InvalidArgument, "update_mask", _update, svc, patch, ["stage", "no_such_field"])
    _raises(InvalidArgument, "update_mask", _update, svc, patch, ["config.run_name"])
    _raises(InvalidArgument, "update_mask", _update, svc, patch, ["task_id"])
    _raises(
        InvalidArgument, "update_mask", _update, svc, resources_pb2.AlphaBacktestRun(run_id=run.run_id), []
    )
    _raises(InvalidArgument, "run.state", _update, svc, patch, ["state"])  # RUN_STATE_UNSPECIFIED
    _raises(
        NotFound,
        "run.run_id",
        _update,
        svc,
        resources_pb2.AlphaBacktestRun(run_id=str(uuid.uuid4()), stage="x"),
        ["stage"],
    )
    _raises(
        InvalidArgument,
        "run.run_id",
        _update,
        svc,
        resources_pb2.AlphaBacktestRun(run_id="nope", stage="x"),
        ["stage"],
    )


def test_update_with_empty_mask_and_star(svc: PersistenceServicer) -> None:
    run = _create_run(svc, model_name="m", model_version="1", stage="accepted")
    out = _update(svc, resources_pb2.AlphaBacktestRun(run_id=run.run_id, stage="training"), [])
    assert (out.stage, out.model_name, out.run_name) == ("training", "m", run.run_name)
    full = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id, run_name="renamed", state=resources_pb2.RUN_STATE_PENDING
    )
    out = _update(svc, full, ["*"])
    assert (out.run_name, out.model_name, out.stage) == ("renamed", "", "")
    assert not out.HasField("config")


def test_get_run_errors(svc: PersistenceServicer) -> None:
    run = _create_run(svc)
    _raises(InvalidArgument, "run_id", svc.GetAlphaBacktestRun, pb.GetAlphaBacktestRunRequest(), None)
    _raises(
        InvalidArgument, "run_id", svc.GetAlphaBacktestRun, pb.GetAlphaBacktestRunRequest(run_id="12"), None
    )
    _raises(
        InvalidArgument, "task_id", svc.GetAlphaBacktestRun, pb.GetAlphaBacktestRunRequest(task_id="zz"), None
    )
    _raises(
        NotFound,
        "run_id",
        svc.GetAlphaBacktestRun,
        pb.GetAlphaBacktestRunRequest(run_id=str(uuid.uuid4())),
        None,
    )
    _raises(
        NotFound,
        "task_id",
        svc.GetAlphaBacktestRun,
        pb.GetAlphaBacktestRunRequest(task_id=str(uuid.uuid4())),
        None,
    )
    mismatch = pb.GetAlphaBacktestRunRequest(run_id=run.run_id, task_id=str(uuid.uuid4()))
    _raises(NotFound, "run_id", svc.GetAlphaBacktestRun, mismatch, None)


def _list_all_runs(svc: PersistenceServicer, page_size: int, **kw: Any) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = svc.ListAlphaBacktestRuns(
            pb.ListAlphaBacktestRunsRequest(page_size=page_size, page_token=token, **kw), None
        )
        ids += [r.run_id for r in page.runs]
        token = page.next_page_token
        if not token:
            return ids


def test_list_runs_newest_first_and_stable_while_inserting(svc: PersistenceServicer) -> None:
    runs = [_create_run(svc) for _ in range(23)]
    expected = [
        r.run_id for r in sorted(runs, key=lambda r: (r.created_at.ToDatetime(), r.run_id), reverse=True)
    ]
    assert _list_all_runs(svc, 5) == expected

    seen: list[str] = []
    page = svc.ListAlphaBacktestRuns(pb.ListAlphaBacktestRunsRequest(page_size=6), None)
    seen += [r.run_id for r in page.runs]
    while page.next_page_token:
        _create_run(svc)  # newer rows arrive while paging: they must not shift the pages
        page = svc.ListAlphaBacktestRuns(
            pb.ListAlphaBacktestRunsRequest(page_size=6, page_token=page.next_page_token), None
        )
        seen += [r.run_id for r in page.runs]
    assert seen == expected


def test_list_runs_breaks_created_at_ties_by_run_id(svc: PersistenceServicer, db: Database) -> None:
    runs = [_create_run(svc) for _ in range(10)]
    same = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    with db.session(write=True) as s:
        s.execute(sa.update(AlphaBacktestRunRow).values(created_at=same))
    assert _list_all_runs(svc, 3) == sorted((r.run_id for r in runs), reverse=True)


def test_list_runs_filters_and_page_errors(svc: PersistenceServicer) -> None:
    runs = [_create_run(svc) for _ in range(4)]
    _update(
        svc,
        resources_pb2.AlphaBacktestRun(run_id=runs[1].run_id, state=resources_pb2.RUN_STATE_RUNNING),
        ["state"],
    )
    running = _list_all_runs(svc, 2, state=resources_pb2.RUN_STATE_RUNNING)
    assert running == [runs[1].run_id]
    assert len(_list_all_runs(svc, 0)) == 4
    _raises(
        InvalidArgument,
        "page_size",
        svc.ListAlphaBacktestRuns,
        pb.ListAlphaBacktestRunsRequest(page_size=-1),
        None,
    )
    _raises(
        InvalidArgument,
        "page_token",
        svc.ListAlphaBacktestRuns,
        pb.ListAlphaBacktestRunsRequest(page_token="%%%"),
        None,
    )
    token = svc.ListAlphaBacktestRuns(pb.ListAlphaBacktestRunsRequest(page_size=1), None).next_page_token
    other_filter = pb.ListAlphaBacktestRunsRequest(
        page_size=1, page_token=token, state=resources_pb2.RUN_STATE_RUNNING
    )
    _raises(InvalidArgument, "page_token", svc.ListAlphaBacktestRuns, other_filter, None)


def test_page_size_default_and_maximum(repo: CatalogRepository) -> None:
    from alphaswarm_persistence.repository import AlphaBacktestRunRecord

    for _ in range(520):
        repo.create_alpha_backtest_run(AlphaBacktestRunRecord(run_name="r"))
    assert len(repo.list_alpha_backtest_runs().items) == 50
    assert len(repo.list_alpha_backtest_runs(page_size=10_000).items) == 500


# ----------------------------------------------------------------------------- deployments


def test_deployment_create_update_history_and_list(svc: PersistenceServicer, db: Database) -> None:
    dataset = _config().dataset_cfg
    deployment = resources_pb2.Deployment(
        model_name="ridge-alpha",
        model_version="1",
        model_alias="champion",
        model_uri="models:/ridge-alpha/1",
        dataset_cfg=dataset,
        strategy_cfg=config_pb2.StrategyConfig(type="long_only_topk"),
    )
    first = svc.SaveDeployment(pb.SaveDeploymentRequest(deployment=deployment), None)
    assert first.created
    out = first.deployment
    uuid.UUID(out.deployment_id)
    assert out.state == resources_pb2.DEPLOYMENT_STATE_ACTIVE
    assert out.dataset_cfg == dataset and out.strategy_cfg == deployment.strategy_cfg
    assert (out.model_name, out.model_version, out.model_alias, out.model_uri) == (
        "ridge-alpha",
        "1",
        "champion",
        "models:/ridge-alpha/1",
    )
    assert list(out.history.values) == []

    rolled = resources_pb2.Deployment()
    rolled.CopyFrom(out)
    rolled.model_version = "2"
    rolled.ClearField("history")
    second = svc.SaveDeployment(pb.SaveDeploymentRequest(deployment=rolled), None)
    assert not second.created
    history = json_format.MessageToDict(second.deployment.history)
    assert [h["version"] for h in history] == ["1"]
    assert dt.datetime.fromisoformat(history[0]["from"]) == out.created_at.ToDatetime(tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(history[0]["to"]) == second.deployment.updated_at.ToDatetime(
        tzinfo=dt.UTC
    )
    rolled.model_version = "3"
    rolled.state = resources_pb2.DEPLOYMENT_STATE_RETIRED
    third = svc.SaveDeployment(pb.SaveDeploymentRequest(deployment=rolled), None).deployment
    history = json_format.MessageToDict(third.history)
    assert [h["version"] for h in history] == ["1", "2"]
    assert history[1]["from"] == history[0]["to"]
    assert third.state == resources_pb2.DEPLOYMENT_STATE_RETIRED

    # An explicit history replaces the stored one.
    rolled.history.Clear()
    rolled.history.append({"version": "0", "from": "2020-01-01", "to": "2020-02-01"})
    fourth = svc.SaveDeployment(pb.SaveDeploymentRequest(deployment=rolled), None).deployment
    assert json_format.MessageToDict(fourth.history) == [
        {"version": "0", "from": "2020-01-01", "to": "2020-02-01"}
    ]
    assert (
        svc.GetDeployment(pb.GetDeploymentRequest(deployment_id=out.deployment_id), None).deployment == fourth
    )


def test_deployment_errors_and_idempotency(svc: PersistenceServicer, db: Database) -> None:
    unknown = resources_pb2.Deployment(deployment_id=str(uuid.uuid4()), model_name="m", model_version="1")
    _raises(
        NotFound,
        "deployment.deployment_id",
        svc.SaveDeployment,
        pb.SaveDeploymentRequest(deployment=unknown),
        None,
    )
    missing = resources_pb2.Deployment(model_name="m")
    _raises(
        InvalidArgument,
        "deployment.model_version",
        svc.SaveDeployment,
        pb.SaveDeploymentRequest(deployment=missing),
        None,
    )
    _raises(
        NotFound,
        "deployment_id",
        svc.GetDeployment,
        pb.GetDeploymentRequest(deployment_id=str(uuid.uuid4())),
        None,
    )
    _raises(
        InvalidArgument, "deployment_id", svc.GetDeployment, pb.GetDeploymentRequest(deployment_id="x"), None
    )

    request = pb.SaveDeploymentRequest(
        deployment=resources_pb2.Deployment(model_name="m", model_version="1"), request_id="dep-1"
    )
    a = svc.SaveDeployment(request, None)
    b = svc.SaveDeployment(request, None)
    assert a.created and not b.created and a.deployment == b.deployment
    listed = svc.ListDeployments(pb.ListDeploymentsRequest(), None)
    assert [d.deployment_id for d in listed.deployments] == [a.deployment.deployment_id]


def test_list_deployments_paginates_newest_first(svc: PersistenceServicer) -> None:
    made = [
        svc.SaveDeployment(
            pb.SaveDeploymentRequest(
                deployment=resources_pb2.Deployment(model_name="m", model_version=str(i))
            ),
            None,
        ).deployment
        for i in range(7)
    ]
    expected = [
        d.deployment_id
        for d in sorted(made, key=lambda d: (d.created_at.ToDatetime(), d.deployment_id), reverse=True)
    ]
    got: list[str] = []
    token = ""
    while True:
        page = svc.ListDeployments(pb.ListDeploymentsRequest(page_size=3, page_token=token), None)
        got += [d.deployment_id for d in page.deployments]
        token = page.next_page_token
        if not token:
            break
    assert got == expected


def test_deleting_a_deployment_unlinks_its_runs(svc: PersistenceServicer, db: Database) -> None:
    dep = svc.SaveDeployment(
        pb.SaveDeploymentRequest(deployment=resources_pb2.Deployment(model_name="m", model_version="1")), None
    )
    run = _create_run(svc, deployment_id=dep.deployment.deployment_id)
    assert run.deployment_id == dep.deployment.deployment_id
    with db.session(write=True) as s:
        s.execute(sa.text("DELETE FROM deployments"))
    assert (
        svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None).run.deployment_id
        == ""
    )


# ----------------------------------------------------------------------------- prediction audit


def _audit_batch(
    rng: np.random.Generator, dates: list[str], symbols: list[str], nan_share: float = 0.2
) -> dict[str, np.ndarray]:
    shape = (len(dates), len(symbols))
    fields = {}
    for name in ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution"):
        values = rng.normal(size=shape)
        values[rng.random(shape) < nan_share] = np.nan
        fields[name] = values
    return fields


def _expected_rows(dates: list[str], symbols: list[str], fields: dict[str, np.ndarray]) -> pd.DataFrame:
    """The reference reshaping: pandas stack, keep cells with a prediction, sort by (date, symbol)."""
    frames = {
        name: pd.DataFrame(
            values, index=pd.Index(dates, name="date"), columns=pd.Index(symbols, name="symbol")
        )
        for name, values in fields.items()
    }
    long = pd.concat({name: f.stack(future_stack=True) for name, f in frames.items()}, axis=1).reset_index()
    long = long[long["prediction"].notna()]
    return long.sort_values(["date", "symbol"], key=lambda s: s.map(lambda v: v.encode())).reset_index(
        drop=True
    )


def _read_audit(
    svc: PersistenceServicer, run_id: str, page_size: int, symbol: str = ""
) -> tuple[pd.DataFrame, list[int]]:
    rows: list[dict[str, Any]] = []
    totals: list[int] = []
    token = ""
    while True:
        page = svc.ListPredictionAudit(
            pb.ListPredictionAuditRequest(
                run_id=run_id, page_size=page_size, page_token=token, symbol=symbol
            ),
            None,
        )
        totals.append(page.total_size)
        for r in page.rows:
            row: dict[str, Any] = {"date": r.date, "symbol": r.symbol}
            for name in ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution"):
                row[name] = getattr(r, name) if r.HasField(name) else np.nan
            rows.append(row)
        token = page.next_page_token
        if not token:
            return pd.DataFrame(rows), totals


def test_prediction_audit_round_trip_matches_pandas_reshape(svc: PersistenceServicer, db: Database) -> None:
    rng = np.random.default_rng(7)
    dates = [str(d) for d in pd.bdate_range("2021-01-04", periods=40).date]
    symbols = [
        "MSFT",
        "AAPL",
        "brk",
        "BRK.B",
        "BRKA",
        "Z",
        "ÄBC",
        "aapl",
    ]  # code-point order differs from locale order
    fields = _audit_batch(rng, dates, symbols)
    run = _create_run(svc)
    batch = resources_pb2.PredictionAuditBatch(
        dates=dates, symbols=symbols, fields={k: array_to_proto(v) for k, v in fields.items()}
    )
    written = svc.SavePredictionAudit(
        pb.SavePredictionAuditRequest(run_id=run.run_id, batch=batch), None
    ).rows_written
    expected = _expected_rows(dates, symbols, fields)
    assert written == len(expected) == int((~np.isnan(fields["prediction"])).sum())

    got, totals = _read_audit(svc, run.run_id, page_size=37)
    assert set(totals) == {len(expected)}
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False)
    assert svc.GetAlphaBacktestRun(
        pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None
    ).run.predictions_captured

    only, totals = _read_audit(svc, run.run_id, page_size=5, symbol="BRK.B")
    ref = expected[expected["symbol"] == "BRK.B"].reset_index(drop=True)
    pd.testing.assert_frame_equal(only, ref[only.columns], check_dtype=False)
    assert set(totals) == {len(ref)}


def test_prediction_audit_replaces_rows_and_optional_fields(svc: PersistenceServicer, db: Database) -> None:
    run = _create_run(svc)
    other = _create_run(svc)
    dates, symbols = ["2022-01-03", "2022-01-04", "2022-01-05"], ["A", "B"]
    pred = np.array([[1.0, np.nan], [0.0, -2.0], [3.0, 4.0]], dtype="<f4")
    for target in (run, other):
        batch = resources_pb2.PredictionAuditBatch(
            dates=dates, symbols=symbols, fields={"prediction": array_to_proto(pred)}
        )
        assert (
            svc.SavePredictionAudit(
                pb.SavePredictionAuditRequest(run_id=target.run_id, batch=batch), None
            ).rows_written
            == 5
        )
    got, _ = _read_audit(svc, run.run_id, page_size=100)
    assert got["prediction"].tolist() == [1.0, 0.0, -2.0, 3.0, 4.0]  # 0.0 is a prediction, not a missing one
    assert got[["realized_return", "target_weight", "held_weight", "pnl_contribution"]].isna().all().all()

    smaller = resources_pb2.PredictionAuditBatch(
        dates=dates[:1], symbols=["C"], fields={"prediction": array_to_proto(np.array([[9.0]]))}
    )
    assert (
        svc.SavePredictionAudit(
            pb.SavePredictionAuditRequest(run_id=run.run_id, batch=smaller), None
        ).rows_written
        == 1
    )
    got, _ = _read_audit(svc, run.run_id, page_size=100)
    assert got[["date", "symbol", "prediction"]].values.tolist() == [["2022-01-03", "C", 9.0]]
    assert _count(db, PredictionAuditRow, PredictionAuditRow.run_id == uuid.UUID(other.run_id)) == 5

    all_nan = resources_pb2.PredictionAuditBatch(
        dates=dates[:1], symbols=["C"], fields={"prediction": array_to_proto(np.array([[np.nan]]))}
    )
    assert (
        svc.SavePredictionAudit(
            pb.SavePredictionAuditRequest(run_id=run.run_id, batch=all_nan), None
        ).rows_written
        == 0
    )
    assert not svc.GetAlphaBacktestRun(
        pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None
    ).run.predictions_captured


def test_prediction_audit_validation(svc: PersistenceServicer, repo: CatalogRepository) -> None:
    run = _create_run(svc)

    def save(dates: list[str], symbols: list[str], **fields: np.ndarray) -> int:
        return repo.save_prediction_audit(
            run.run_id, PredictionAuditBatch(dates=dates, symbols=symbols, fields=fields)
        )

    ok = np.zeros((2, 2))
    _raises(
        InvalidArgument,
        "batch.fields[prediction]",
        save,
        ["2020-01-01", "2020-01-02"],
        ["A", "B"],
        realized_return=ok,
    )
    _raises(InvalidArgument, "batch.fields[prediction]", save, ["2020-01-01"], ["A", "B"], prediction=ok)
    _raises(
        InvalidArgument,
        "batch.fields[held]",
        save,
        ["2020-01-01", "2020-01-02"],
        ["A", "B"],
        prediction=ok,
        held=ok,
    )
    inf = ok.copy()
    inf[1, 0] = np.inf
    err = _raises(
        InvalidArgument,
        "batch.fields[target_weight]",
        save,
        ["2020-01-01", "2020-01-02"],
        ["A", "B"],
        prediction=ok,
        target_weight=inf,
    )
    assert "2020-01-02" in err.message and "A" in err.message
    _raises(InvalidArgument, "batch.dates", save, ["2020-01-01", "2020-01-01"], ["A", "B"], prediction=ok)
    _raises(InvalidArgument, "batch.dates", save, ["2020-01-01", "20x"], ["A", "B"], prediction=ok)
    _raises(InvalidArgument, "batch.symbols", save, ["2020-01-01", "2020-01-02"], ["A", "A"], prediction=ok)
    _raises(
        InvalidArgument,
        "batch.symbols[1]",
        save,
        ["2020-01-01", "2020-01-02"],
        ["A", "B" * 33],
        prediction=ok,
    )
    _raises(
        NotFound,
        "run_id",
        repo.save_prediction_audit,
        str(uuid.uuid4()),
        PredictionAuditBatch(["2020-01-01"], ["A"], {"prediction": np.ones((1, 1))}),
    )
    bad_buffer = resources_pb2.PredictionAuditBatch(dates=["2020-01-01"], symbols=["A"])
    bad_buffer.fields["prediction"].CopyFrom(array_to_proto(np.ones((1, 1))))
    bad_buffer.fields["prediction"].data = b"\x00" * 3
    request = pb.SavePredictionAuditRequest(run_id=run.run_id, batch=bad_buffer)
    _raises(InvalidArgument, "batch.fields[prediction].data", svc.SavePredictionAudit, request, None)
    _raises(
        InvalidArgument, "run_id", svc.SavePredictionAudit, pb.SavePredictionAuditRequest(run_id="nope"), None
    )
    _raises(
        NotFound,
        "run_id",
        svc.ListPredictionAudit,
        pb.ListPredictionAuditRequest(run_id=str(uuid.uuid4())),
        None,
    )


def test_deleting_a_task_cascades_to_its_run_and_audit(svc: PersistenceServicer, db: Database) -> None:
    run = _create_run(svc)
    keep = _create_run(svc)
    batch = resources_pb2.PredictionAuditBatch(
        dates=["2020-01-01"], symbols=["A", "B"], fields={"prediction": array_to_proto(np.ones((1, 2)))}
    )
    for target in (run, keep):
        svc.SavePredictionAudit(pb.SavePredictionAuditRequest(run_id=target.run_id, batch=batch), None)
    with db.session(write=True) as s:
        s.execute(sa.delete(TaskRow).where(TaskRow.task_id == uuid.UUID(run.task_id)))
    assert _count(db, AlphaBacktestRunRow) == 1
    assert _count(db, PredictionAuditRow) == 2
    _raises(
        NotFound, "run_id", svc.GetAlphaBacktestRun, pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None
    )


# ----------------------------------------------------------------------------- backtest results


def _reference_fit(value: float, spec: tuple[int, int] | None) -> float | None:
    """What a Numeric(p, s) / Integer column holds for `value` (PostgreSQL semantics, via decimal)."""
    if spec is None:
        return float(round(value))
    precision, scale = spec
    q = decimal.Decimal(repr(value)).quantize(
        decimal.Decimal(1).scaleb(-scale), rounding=decimal.ROUND_HALF_UP
    )
    return None if abs(q) >= 10 ** (precision - scale) else float(q)


def test_every_metric_maps_to_its_seed_column(svc: PersistenceServicer, db: Database) -> None:
    rng = np.random.default_rng(3)
    names = list(METRIC_COLUMNS)
    values = {name: float(rng.uniform(-9, 9)) for name in names}
    for name in ("total_trades", "winning_trades", "losing_trades", "max_drawdown_duration"):
        values[name] = float(rng.integers(0, 500))
    values["win_rate"] = 0.123456
    bid = _save_backtest(svc, _backtest(metrics=metricset_to_proto(values)))
    with db.session() as s:
        row = s.execute(sa.text("SELECT * FROM mcp_backtest_results")).mappings().one()
    for name, column in METRIC_COLUMNS.items():
        assert row[column] == pytest.approx(
            _reference_fit(values[name], SEED_METRIC_TYPES[column]), abs=1e-12
        ), column
    got = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=bid), None).result
    stored, reasons, _ = metricset_from_proto(got.metrics)
    assert reasons == {}
    assert stored == pytest.approx(
        {n: _reference_fit(v, SEED_METRIC_TYPES[METRIC_COLUMNS[n]]) for n, v in values.items()}, abs=1e-12
    )
    assert got.notes == ""


def test_overflow_undefined_and_zero_metrics(svc: PersistenceServicer, db: Database) -> None:
    values = {
        "sharpe": 12345.6,  # Numeric(8,4) holds |x| < 10^4
        "sortino": 9999.99994,  # rounds to 9999.9999: fits
        "calmar": 9999.99995,  # rounds half up to 10000.0000: does not fit
        "max_drawdown": 0.0,
        "volatility": -0.0,
        "total_return": 1e-9,  # rounds to 0.0000, still a value
        "profit_factor": None,
        "beta": math.inf,
        "total_trades": 3e12,
        "final_value": 123456.785,  # half up at the second decimal
        "ic_spearman": 0.031,  # no column
        "turnover_adj_sharpe": None,
    }
    reasons = {"profit_factor": "no losing trades", "turnover_adj_sharpe": "zero variance"}
    conventions = {"periods_per_year": 252, "rf": 0.0}
    record = _backtest(
        metrics=metricset_to_proto(values, reasons, conventions),
        notes="user note",
        parameters=struct_from_dict({"top_k": 5}),
    )
    bid = _save_backtest(svc, record)
    result = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=bid), None).result
    stored, got_reasons, got_conventions = metricset_from_proto(result.metrics)
    assert stored["sortino"] == 9999.9999
    assert stored["final_value"] == 123456.79
    assert stored["max_drawdown"] == 0.0 and result.metrics.values["max_drawdown"].HasField("value")
    assert stored["volatility"] == 0.0 and stored["total_return"] == 0.0
    assert stored["ic_spearman"] == 0.031
    for name in ("sharpe", "calmar", "profit_factor", "beta", "total_trades", "turnover_adj_sharpe"):
        assert stored[name] is None, name
    assert got_reasons["sharpe"] == "12345.6 exceeds Numeric(8,4)"
    assert got_reasons["calmar"] == "9999.99995 exceeds Numeric(8,4)"
    assert got_reasons["profit_factor"] == "no losing trades"
    assert got_reasons["turnover_adj_sharpe"] == "zero variance"
    assert got_reasons["beta"] == "undefined"  # metricset_to_proto already sends inf as undefined
    assert got_reasons["total_trades"] == "3000000000000.0 exceeds Integer"
    assert got_conventions == conventions
    assert json_format.MessageToDict(result.parameters) == {"top_k": 5}
    notes = result.notes.splitlines()
    assert notes[0] == "user note"
    assert "sharpe_ratio: 12345.6 exceeds Numeric(8,4)" in notes
    assert "profit_factor: no losing trades" in notes
    assert {n.split(":")[0] for n in notes[1:]} == {
        "sharpe_ratio",
        "calmar_ratio",
        "profit_factor",
        "beta",
        "total_trades",
    }
    with db.session() as s:
        row = s.execute(
            sa.text("SELECT sharpe_ratio, max_drawdown, winning_trades FROM mcp_backtest_results")
        ).one()
    assert row.sharpe_ratio is None and row.max_drawdown == 0.0
    assert row.winning_trades is None  # not sent: NULL, not the seed's server default 0


def test_series_trades_and_parameters_round_trip(svc: PersistenceServicer, db: Database) -> None:
    rng = np.random.default_rng(11)
    dates = [str(d) for d in pd.bdate_range("2020-01-01", periods=30).date]
    equity = 10000 * np.cumprod(1 + rng.normal(0, 0.01, 30))
    equity[4] = np.nan
    drawdown = equity / np.fmax.accumulate(np.nan_to_num(equity)) - 1
    trades = [
        resources_pb2.Trade(
            trade_number=i + 1,
            symbol=sym,
            direction="long" if i % 2 == 0 else "short",
            entry_date=dates[i],
            entry_price=100.0 + i,
            exit_date=dates[i + 3] if i < 4 else "",
            exit_price=101.5 + i if i < 4 else 0.0,
            position_size=(-1) ** i * 10.0,
            pnl=12.3456,
            pnl_percent=0.0123,
            mae=-0.02,
            mfe=0.03,
            duration_bars=3,
            duration_days=5,
            exit_reason="signal" if i < 4 else "",
            fees_paid=0.1,
            slippage_cost=0.0,
        )
        for i, sym in enumerate(["AAPL", "MSFT", "AAPL", "GOOG", "MSFT"])
    ]
    record = _backtest(
        dates=dates,
        equity_curve=array_to_proto(equity),
        drawdown_series=array_to_proto(drawdown),
        backtest_date=None,
        execution_time_seconds=1.25,
        data_points=30,
        status="completed",
    )
    record.backtest_date.FromDatetime(dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.UTC))
    bid = _save_backtest(svc, record, trades)
    got = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=bid, include_trades=True), None)
    assert list(got.result.dates) == dates
    from alphaswarm_common.protoconv import array_from_proto

    np.testing.assert_array_equal(array_from_proto(got.result.equity_curve), equity)
    np.testing.assert_array_equal(array_from_proto(got.result.drawdown_series), drawdown)
    assert got.result.backtest_date == record.backtest_date
    assert (got.result.execution_time_seconds, got.result.data_points) == (1.25, 30)
    assert list(got.trades) == trades
    without = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=bid), None)
    assert len(without.trades) == 0
    with db.session() as s:
        doc = s.execute(sa.text("SELECT equity_curve FROM mcp_backtest_results")).scalar_one()
        open_trade = s.scalars(sa.select(BacktestTradeRow).where(BacktestTradeRow.trade_number == 5)).one()
    import json

    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert doc["dates"] == dates and doc["values"][4] is None
    assert open_trade.exit_date is None and open_trade.exit_price is None


def test_backtest_validation(svc: PersistenceServicer) -> None:
    trade = resources_pb2.Trade(trade_number=1, direction="long", entry_date="2020-01-02", entry_price=100.0)
    cases = [
        (_backtest(symbol="TOO-LONG-SYMBOL"), [], "result.symbol"),
        (_backtest(start_date="2020-12-31", end_date="2020-01-01"), [], "result.end_date"),
        (_backtest(start_date="31/12/2020"), [], "result.start_date"),
        (_backtest(dates=["2020-01-01"], equity_curve=array_to_proto(np.ones(2))), [], "result.equity_curve"),
        (_backtest(parameters=struct_from_dict({"_alphaswarm": 1})), [], "result.parameters"),
        (
            _backtest(),
            [
                resources_pb2.Trade(
                    trade_number=1, direction="sideways", entry_date="2020-01-02", entry_price=1.0
                )
            ],
            "trades[0].direction",
        ),
        (_backtest(), [trade, trade], "trades[1].trade_number"),
        (
            _backtest(),
            [resources_pb2.Trade(trade_number=1, direction="long", entry_date="2020-01-02", entry_price=1e9)],
            "trades[0].entry_price",
        ),
        (
            _backtest(),
            [
                resources_pb2.Trade(
                    trade_number=1,
                    direction="long",
                    entry_date="2020-01-05",
                    exit_date="2020-01-02",
                    entry_price=1.0,
                )
            ],
            "trades[0].exit_date",
        ),
        (_backtest(backtest_id="xyz"), [], "result.backtest_id"),
    ]
    for record, trades, field in cases:
        _raises(InvalidArgument, field, _save_backtest, svc, record, trades)
    ok = _save_backtest(
        svc,
        _backtest(),
        [
            resources_pb2.Trade(
                trade_number=1, direction="long", entry_date="2020-01-02", entry_price=1.0, pnl=1e9
            )
        ],
    )
    notes = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=ok), None).result.notes
    assert notes == "trade 1 pnl: 1000000000.0 exceeds Numeric(12,4)"


def test_save_backtest_is_idempotent_and_delete_cascades(svc: PersistenceServicer, db: Database) -> None:
    trades = [
        resources_pb2.Trade(
            trade_number=i, symbol="A", direction="long", entry_date="2020-01-02", entry_price=10.0
        )
        for i in (1, 2)
    ]
    request = pb.SaveBacktestResultRequest(result=_backtest(), trades=trades, request_id="bt-1")
    first = svc.SaveBacktestResult(request, None)
    second = svc.SaveBacktestResult(request, None)
    assert first.created and not second.created and first.backtest_id == second.backtest_id
    bid = uuid.UUID(first.backtest_id)
    with db.session(write=True) as s:
        s.add(
            OptimizationResultRow(
                backtest_id=bid,
                optimization_date=dt.datetime.now(dt.UTC),
                parameter_set=1,
                parameters={"k": 1},
            )
        )
        s.add(
            WalkForwardTestRow(
                parent_backtest_id=bid,
                test_date=dt.datetime.now(dt.UTC),
                window_size_months=12,
                step_size_months=3,
                training_start=dt.date(2019, 1, 1),
                training_end=dt.date(2019, 12, 31),
                test_period_start=dt.date(2020, 1, 1),
                test_period_end=dt.date(2020, 3, 31),
            )
        )
    with db.session() as s:
        flag = s.scalar(sa.select(OptimizationResultRow.is_statistically_significant))
    assert flag is False  # sa.false() server default reads back False on SQLite
    run = _create_run(svc, backtest_id=first.backtest_id)
    assert run.backtest_id == first.backtest_id
    assert _count(db, BacktestTradeRow) == 2 and _count(db, TradeDetailRow) == 2

    assert svc.DeleteBacktestResult(
        pb.DeleteBacktestResultRequest(backtest_id=first.backtest_id), None
    ).deleted
    for model in (BacktestTradeRow, TradeDetailRow, OptimizationResultRow, WalkForwardTestRow):
        assert _count(db, model) == 0, model
    assert (
        svc.GetAlphaBacktestRun(pb.GetAlphaBacktestRunRequest(run_id=run.run_id), None).run.backtest_id == ""
    )
    assert not svc.DeleteBacktestResult(
        pb.DeleteBacktestResultRequest(backtest_id=first.backtest_id), None
    ).deleted
    _raises(
        NotFound,
        "backtest_id",
        svc.GetBacktestResult,
        pb.GetBacktestResultRequest(backtest_id=first.backtest_id),
        None,
    )
    # The idempotency key went with the deleted result: the same request stores a new one.
    third = svc.SaveBacktestResult(request, None)
    assert third.created and third.backtest_id != first.backtest_id


def _list_backtests(svc: PersistenceServicer, page_size: int, **kw: Any) -> list[pb.BacktestRecord]:
    out: list[pb.BacktestRecord] = []
    token = ""
    while True:
        page = svc.ListBacktestResults(
            pb.ListBacktestResultsRequest(page_size=page_size, page_token=token, **kw), None
        )
        out += list(page.results)
        token = page.next_page_token
        if not token:
            return out


@pytest.mark.parametrize(
    "order_by",
    ["-sharpe", "sharpe", "sharpe_ratio", "-total_trades", "max_drawdown", "-backtest_date", "start_date"],
)
def test_list_backtests_orders_with_nulls_last(svc: PersistenceServicer, order_by: str) -> None:
    rng = np.random.default_rng(5)
    saved: dict[str, dict[str, Any]] = {}
    for i in range(17):
        sharpe = None if i % 4 == 0 else float(np.round(rng.choice([-1.5, 0.0, 0.7, 2.25]), 4))
        drawdown = None if i % 3 == 0 else float(np.round(-rng.random(), 4))
        trades = None if i % 5 == 0 else float(rng.integers(0, 4))
        values = {"sharpe": sharpe, "max_drawdown": drawdown, "total_trades": trades}
        when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=int(rng.integers(0, 5)))
        record = _backtest(metrics=metricset_to_proto(values), start_date=f"2020-01-{1 + i % 3:02d}")
        record.backtest_date.FromDatetime(when)
        bid = _save_backtest(svc, record)
        saved[bid] = {
            "sharpe_ratio": sharpe,
            "max_drawdown": drawdown,
            "total_trades": trades,
            "backtest_date": when,
            "start_date": record.start_date,
        }
    descending = order_by.startswith("-")
    column = {"sharpe": "sharpe_ratio"}.get(order_by.lstrip("-"), order_by.lstrip("-"))

    def key(item: tuple[str, dict[str, Any]]) -> tuple[Any, ...]:
        value = item[1][column]
        return (value is None, value if value is not None else 0)

    present = sorted(
        (x for x in saved.items() if x[1][column] is not None),
        key=lambda x: (x[1][column], x[0]),
        reverse=descending,
    )
    missing = sorted(
        (x for x in saved.items() if x[1][column] is None), key=lambda x: x[0], reverse=descending
    )
    expected = [bid for bid, _ in present + missing]
    got = [r.backtest_id for r in _list_backtests(svc, 4, order_by=order_by)]
    assert got == expected


def test_list_backtests_filters_pagination_and_errors(svc: PersistenceServicer) -> None:
    days = [dt.datetime(2024, 1, d, 23, 59, tzinfo=dt.UTC) for d in (1, 2, 3, 4)]
    ids: dict[tuple[str, str, str, int], str] = {}
    for sym in ("AAPL", "MSFT"):
        for strat in ("sma_cross", "alpha:x"):
            for status in ("completed", "failed"):
                for d, when in enumerate(days):
                    record = _backtest(symbol=sym, strategy_type=strat, status=status)
                    record.backtest_date.FromDatetime(when)
                    ids[(sym, strat, status, d)] = _save_backtest(svc, record)

    def ids_of(**kw: Any) -> set[str]:
        return {r.backtest_id for r in _list_backtests(svc, 3, **kw)}

    assert ids_of(symbol="AAPL") == {v for k, v in ids.items() if k[0] == "AAPL"}
    assert ids_of(strategy_type="alpha:x", status="failed") == {
        v for k, v in ids.items() if k[1] == "alpha:x" and k[2] == "failed"
    }
    assert ids_of(from_date="2024-01-02", to_date="2024-01-03") == {
        v for k, v in ids.items() if k[3] in (1, 2)
    }
    assert len(_list_backtests(svc, 0)) == len(ids)
    results = _list_backtests(svc, 5)
    assert all(not r.HasField("equity_curve") for r in results)
    assert [r.backtest_date.ToDatetime() for r in results] == sorted(
        (r.backtest_date.ToDatetime() for r in results), reverse=True
    )

    _raises(
        InvalidArgument,
        "order_by",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(order_by="-symbol"),
        None,
    )
    _raises(
        InvalidArgument,
        "order_by",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(order_by="sharpe; DROP TABLE x"),
        None,
    )
    _raises(
        InvalidArgument,
        "page_size",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(page_size=-5),
        None,
    )
    _raises(
        InvalidArgument,
        "from_date",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(from_date="2024-13-01"),
        None,
    )
    _raises(
        InvalidArgument,
        "to_date",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(from_date="2024-01-03", to_date="2024-01-01"),
        None,
    )
    token = svc.ListBacktestResults(
        pb.ListBacktestResultsRequest(page_size=2, order_by="sharpe"), None
    ).next_page_token
    _raises(
        InvalidArgument,
        "page_token",
        svc.ListBacktestResults,
        pb.ListBacktestResultsRequest(page_size=2, page_token=token),
        None,
    )


def test_list_backtests_stable_while_inserting(svc: PersistenceServicer) -> None:
    rng = np.random.default_rng(9)

    def save() -> str:
        return _save_backtest(
            svc, _backtest(metrics=metricset_to_proto({"sharpe": float(np.round(rng.normal(), 2))}))
        )

    before = [save() for _ in range(20)]
    seen: list[str] = []
    page = svc.ListBacktestResults(pb.ListBacktestResultsRequest(page_size=6, order_by="-sharpe"), None)
    seen += [r.backtest_id for r in page.results]
    while page.next_page_token:
        save()
        page = svc.ListBacktestResults(
            pb.ListBacktestResultsRequest(page_size=6, order_by="-sharpe", page_token=page.next_page_token),
            None,
        )
        seen += [r.backtest_id for r in page.results]
    assert len(seen) == len(set(seen))  # no row twice
    assert set(before) <= set(seen)  # no row of the first snapshot skipped


# ----------------------------------------------------------------------------- types


def test_timestamps_are_aware_utc_and_naive_ones_are_refused(db: Database) -> None:
    decorator = UTCDateTime()
    local = dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    bound = decorator.process_bind_param(local, db.engine.dialect)
    assert bound == dt.datetime(2024, 1, 1, 7, 0)  # SQLite keeps the UTC wall time
    assert decorator.process_result_value(bound, db.engine.dialect) == local
    with pytest.raises(ValueError, match="naive"):
        decorator.process_bind_param(dt.datetime(2024, 1, 1), db.engine.dialect)


def test_repository_stores_infinite_metrics_as_null_with_reason(repo: CatalogRepository) -> None:
    record = BacktestResultRecord(
        symbol="A",
        strategy_type="x",
        start_date=dt.date(2020, 1, 1),
        end_date=dt.date(2020, 2, 1),
        metrics={"profit_factor": math.inf, "sortino": -math.inf, "probabilistic_sharpe": math.nan},
    )
    bid, _ = repo.save_backtest_result(record)
    stored, _ = repo.get_backtest_result(bid)
    assert stored.metrics == {"profit_factor": None, "sortino": None, "probabilistic_sharpe": None}
    assert stored.metric_reasons == {
        "profit_factor": "inf is not finite",
        "sortino": "-inf is not finite",
        "probabilistic_sharpe": "nan is not finite",
    }
    assert stored.notes == "sortino_ratio: -inf is not finite\nprofit_factor: inf is not finite"


def test_backtest_record_repository_defaults(repo: CatalogRepository) -> None:
    bid, created = repo.save_backtest_result(
        BacktestResultRecord(
            symbol="A", strategy_type="x", start_date=dt.date(2020, 1, 1), end_date=dt.date(2020, 2, 1)
        )
    )
    record, trades = repo.get_backtest_result(bid)
    assert created and trades == []
    # None takes the seed's server defaults.
    assert (record.initial_capital, record.fees, record.slippage, record.status) == (
        10000.0,
        0.001,
        0.001,
        "completed",
    )
    assert record.metrics == {} and record.parameters is None and record.equity_curve is None


def test_concurrent_writers_on_sqlite_queue_instead_of_failing(repo: CatalogRepository, db: Database) -> None:
    """Threads share the SQLite file as the embedded gRPC server's workers do: BEGIN IMMEDIATE + busy timeout."""
    import threading

    from alphaswarm_persistence.repository import AlphaBacktestRunRecord

    barrier = threading.Barrier(6)
    outcomes: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            barrier.wait()
            for i in range(10):
                run, created = repo.create_alpha_backtest_run(
                    AlphaBacktestRunRecord(run_name=f"k{i}"), request_id=f"k{i}"
                )
                outcomes.append((str(run.run_id), created))
                repo.save_backtest_result(
                    BacktestResultRecord(
                        symbol=f"T{worker}",
                        strategy_type="x",
                        start_date=dt.date(2020, 1, 1),
                        end_date=dt.date(2020, 1, 2),
                    )
                )
                repo.list_alpha_backtest_runs(page_size=5)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(created for _, created in outcomes) == 10
    assert len({run_id for run_id, _ in outcomes}) == 10
    assert _count(db, AlphaBacktestRunRow) == 10
    assert len(repo.list_backtest_results(page_size=500).items) == 60


def test_wire_zero_initial_capital_takes_the_seed_default_but_zero_fees_stay(
    svc: PersistenceServicer,
) -> None:
    bid = _save_backtest(svc, _backtest(initial_capital=0.0, fees=0.0, slippage=0.0))
    result = svc.GetBacktestResult(pb.GetBacktestResultRequest(backtest_id=bid), None).result
    assert (result.initial_capital, result.fees, result.slippage) == (10000.0, 0.0, 0.0)
