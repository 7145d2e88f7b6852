"""The catalog on a real PostgreSQL (and the same scenarios on SQLite), directly and over gRPC.

* every RPC of PersistenceService round-trips, called on the servicer and
  through a real gRPC server (`alphaswarm_common.grpc_server.serve`) with
  domain errors arriving as their status codes;
* 200k prediction-audit rows go through binary COPY;
* numeric edges are stored exactly as PostgreSQL's numeric rounding says;
* NULLs sort last in both directions and keyset pages stay stable while rows arrive;
* concurrent saves from 4 processes x 25 lose nothing, and racing creates
  with shared request ids create each run once;
* deletes cascade as declared.
"""

from __future__ import annotations

import datetime as dt
import decimal
import multiprocessing as mp
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2, json_format

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import channel, error_from_rpc, remote_field
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    metricset_from_proto,
    metricset_to_proto,
)
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.models import Base
from alphaswarm_persistence.repository import CatalogRepository, PredictionAuditBatch
from alphaswarm_persistence.servicer import PersistenceServicer, service_registration

pytestmark = pytest.mark.integration

Call = Callable[[str, Any], Any]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pg_catalog_url(pg_database_factory: Callable[[], str]) -> str:
    url = pg_database_factory()
    migrations.upgrade(url)
    return url


def _truncate(db: Database) -> None:
    with db.session(write=True) as s:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        s.execute(sa.text(f"TRUNCATE {names} CASCADE"))


@pytest.fixture
def pg_db(pg_catalog_url: str) -> Iterator[Database]:
    db = Database(pg_catalog_url)
    _truncate(db)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.db'}"
        migrations.upgrade(url)
        db = Database(url)
        yield db
        db.dispose()
    else:
        yield request.getfixturevalue("pg_db")


def _direct(svc: PersistenceServicer) -> Call:
    return lambda method, request: getattr(svc, method)(request, None)


@pytest.fixture
def grpc_call(catalog: Database) -> Iterator[Call]:
    """Calls through a real gRPC server on loopback; failures come back as domain errors."""
    server, port = serve([service_registration(PersistenceServicer(CatalogRepository(catalog)))], port=0)
    chan = channel(f"127.0.0.1:{port}")
    stub = pb_grpc.PersistenceServiceStub(chan)

    def call(method: str, request: Any) -> Any:
        try:
            return getattr(stub, method)(request, timeout=60)
        except grpc.RpcError as exc:
            err = error_from_rpc(exc)
            err.field = remote_field(err)
            err.grpc_status = exc.code()  # type: ignore[attr-defined]
            raise err from exc

    yield call
    chan.close()
    server.stop(0).wait()


def _raises(exc_type: type[Exception], field: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    with pytest.raises(exc_type) as info:
        fn(*args)
    assert getattr(info.value, "field", None) == field, info.value
    return info.value


# ----------------------------------------------------------------------------- the scenario of every RPC


def _config() -> config_pb2.AlphaBacktestConfig:
    return json_format.ParseDict(
        {
            "dataset_cfg": {
                "symbols": ["AAPL", "MSFT", "GOOG"],
                "segments": {
                    "train": {"start": "2015-01-01", "end": "2018-12-31"},
                    "test": {"start": "2019-02-01", "end": "2020-12-31"},
                },
            },
            "model_cfg": {"type": "ridge", "params": {"alpha": 1.0}},
            "run_name": "scenario",
            "capture_predictions": True,
            "backtest_cfg": {"fees": 0.0},
        },
        config_pb2.AlphaBacktestConfig(),
    )


def _exercise_every_rpc(call: Call) -> None:
    # --- deployments
    dep_request = pb.SaveDeploymentRequest(
        deployment=resources_pb2.Deployment(
            model_name="ridge-alpha",
            model_version="1",
            model_alias="champion",
            dataset_cfg=_config().dataset_cfg,
        ),
        request_id="dep-req",
    )
    dep = call("SaveDeployment", dep_request)
    assert dep.created and not call("SaveDeployment", dep_request).created
    deployment = dep.deployment
    rolled = resources_pb2.Deployment()
    rolled.CopyFrom(deployment)
    rolled.model_version = "2"
    rolled.ClearField("history")
    rolled_out = call("SaveDeployment", pb.SaveDeploymentRequest(deployment=rolled)).deployment
    assert [h["version"] for h in json_format.MessageToDict(rolled_out.history)] == ["1"]
    assert (
        call("GetDeployment", pb.GetDeploymentRequest(deployment_id=deployment.deployment_id)).deployment
        == rolled_out
    )
    assert [d.deployment_id for d in call("ListDeployments", pb.ListDeploymentsRequest()).deployments] == [
        deployment.deployment_id
    ]

    # --- runs
    run_request = pb.CreateAlphaBacktestRunRequest(
        run=resources_pb2.AlphaBacktestRun(config=_config(), deployment_id=deployment.deployment_id),
        request_id="run-req",
    )
    created = call("CreateAlphaBacktestRun", run_request)
    assert created.created and created.run.config == _config()
    replay = call("CreateAlphaBacktestRun", run_request)
    assert not replay.created and replay.run == created.run
    run = created.run
    patch = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id, state=resources_pb2.RUN_STATE_RUNNING, stage="training"
    )
    updated = call(
        "UpdateAlphaBacktestRun",
        pb.UpdateAlphaBacktestRunRequest(
            run=patch, update_mask=field_mask_pb2.FieldMask(paths=["state", "stage"])
        ),
    ).run
    assert updated.state == resources_pb2.RUN_STATE_RUNNING and updated.HasField("started_at")
    assert call("GetAlphaBacktestRun", pb.GetAlphaBacktestRunRequest(task_id=run.task_id)).run == updated

    # --- prediction audit
    rng = np.random.default_rng(1)
    dates = [str(np.datetime64("2019-02-01") + i) for i in range(60)]
    symbols = ["AAPL", "MSFT", "GOOG", "BRK.B"]
    pred = rng.normal(size=(60, 4))
    pred[rng.random(pred.shape) < 0.1] = np.nan
    realized = rng.normal(size=(60, 4))
    realized[3, :] = np.nan
    batch = resources_pb2.PredictionAuditBatch(
        dates=dates,
        symbols=symbols,
        fields={"prediction": array_to_proto(pred), "realized_return": array_to_proto(realized)},
    )
    written = call(
        "SavePredictionAudit", pb.SavePredictionAuditRequest(run_id=run.run_id, batch=batch)
    ).rows_written
    assert written == int((~np.isnan(pred)).sum())
    rows: list[resources_pb2.PredictionAuditRow] = []
    token = ""
    while True:
        page = call(
            "ListPredictionAudit",
            pb.ListPredictionAuditRequest(run_id=run.run_id, page_size=17, page_token=token),
        )
        assert page.total_size == written
        rows += page.rows
        token = page.next_page_token
        if not token:
            break
    order = sorted(range(4), key=lambda j: symbols[j].encode())
    expected = [
        (dates[t], symbols[j], pred[t, j], realized[t, j])
        for t in range(60)
        for j in order
        if not np.isnan(pred[t, j])
    ]
    got = [
        (r.date, r.symbol, r.prediction, r.realized_return if r.HasField("realized_return") else np.nan)
        for r in rows
    ]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g[:3] == e[:3] and (g[3] == e[3] or (np.isnan(g[3]) and np.isnan(e[3])))

    # --- backtest results
    metrics = metricset_to_proto(
        {"sharpe": 1.23456, "max_drawdown": 0.0, "profit_factor": None, "calmar": 1e6, "ic_spearman": 0.04},
        {"profit_factor": "no losing trades"},
        {"periods_per_year": 252},
    )
    record = pb.BacktestRecord(
        symbol="PORTFOLIO",
        strategy_type="alpha:long_short_topk",
        start_date=dates[0],
        end_date=dates[-1],
        initial_capital=10000,
        fees=0.001,
        slippage=0.0005,
        metrics=metrics,
        dates=dates,
        equity_curve=array_to_proto(np.linspace(10000, 11000, 60)),
        drawdown_series=array_to_proto(np.zeros(60)),
    )
    trades = [
        resources_pb2.Trade(
            trade_number=1,
            symbol="AAPL",
            direction="long",
            entry_date=dates[1],
            entry_price=150.25,
            exit_date=dates[9],
            exit_price=155.5,
            pnl=52.5,
            duration_bars=8,
            exit_reason="signal",
        ),
        resources_pb2.Trade(
            trade_number=2,
            symbol="MSFT",
            direction="short",
            entry_date=dates[2],
            entry_price=250.0,
            position_size=-4.0,
            pnl=-3.25,
            duration_bars=58,
            exit_reason="end_of_data",
            exit_date=dates[-1],
            exit_price=250.8125,
        ),
    ]
    save_request = pb.SaveBacktestResultRequest(result=record, trades=trades, request_id="bt-req")
    saved = call("SaveBacktestResult", save_request)
    assert saved.created and not call("SaveBacktestResult", save_request).created
    got_result = call(
        "GetBacktestResult", pb.GetBacktestResultRequest(backtest_id=saved.backtest_id, include_trades=True)
    )
    assert list(got_result.trades) == trades
    values, reasons, conventions = metricset_from_proto(got_result.result.metrics)
    assert values == {
        "sharpe": 1.2346,
        "max_drawdown": 0.0,
        "profit_factor": None,
        "calmar": None,
        "ic_spearman": 0.04,
    }
    assert reasons == {"profit_factor": "no losing trades", "calmar": "1000000.0 exceeds Numeric(8,4)"}
    assert conventions == {"periods_per_year": 252}
    np.testing.assert_array_equal(
        array_from_proto(got_result.result.equity_curve), np.linspace(10000, 11000, 60)
    )
    listed = call(
        "ListBacktestResults", pb.ListBacktestResultsRequest(order_by="-sharpe", symbol="PORTFOLIO")
    )
    assert [r.backtest_id for r in listed.results] == [saved.backtest_id]

    # the run links everything
    finished = resources_pb2.AlphaBacktestRun(
        run_id=run.run_id,
        state=resources_pb2.RUN_STATE_SUCCEEDED,
        backtest_id=saved.backtest_id,
        stage="completed",
    )
    done = call(
        "UpdateAlphaBacktestRun",
        pb.UpdateAlphaBacktestRunRequest(
            run=finished, update_mask=field_mask_pb2.FieldMask(paths=["state", "backtest_id", "stage"])
        ),
    ).run
    assert done.backtest_id == saved.backtest_id and done.predictions_captured and done.duration_seconds >= 0
    listed_runs = call(
        "ListAlphaBacktestRuns", pb.ListAlphaBacktestRunsRequest(state=resources_pb2.RUN_STATE_SUCCEEDED)
    )
    assert [r.run_id for r in listed_runs.runs] == [run.run_id]

    assert call("DeleteBacktestResult", pb.DeleteBacktestResultRequest(backtest_id=saved.backtest_id)).deleted
    assert call("GetAlphaBacktestRun", pb.GetAlphaBacktestRunRequest(run_id=run.run_id)).run.backtest_id == ""

    # --- errors keep their class and field across the wire
    _raises(
        NotFound,
        "run_id",
        call,
        "GetAlphaBacktestRun",
        pb.GetAlphaBacktestRunRequest(run_id=str(uuid.uuid4())),
    )
    _raises(
        InvalidArgument, "run_id", call, "GetAlphaBacktestRun", pb.GetAlphaBacktestRunRequest(run_id="nope")
    )
    _raises(
        InvalidArgument,
        "page_size",
        call,
        "ListAlphaBacktestRuns",
        pb.ListAlphaBacktestRunsRequest(page_size=-1),
    )
    _raises(
        InvalidArgument,
        "order_by",
        call,
        "ListBacktestResults",
        pb.ListBacktestResultsRequest(order_by="nope"),
    )
    bad_mask = pb.UpdateAlphaBacktestRunRequest(
        run=finished, update_mask=field_mask_pb2.FieldMask(paths=["bogus"])
    )
    _raises(InvalidArgument, "update_mask", call, "UpdateAlphaBacktestRun", bad_mask)
    reopen = pb.UpdateAlphaBacktestRunRequest(
        run=resources_pb2.AlphaBacktestRun(run_id=run.run_id, state=resources_pb2.RUN_STATE_RUNNING),
        update_mask=field_mask_pb2.FieldMask(paths=["state"]),
    )
    _raises(FailedPrecondition, "run.state", call, "UpdateAlphaBacktestRun", reopen)
    reused = pb.CreateAlphaBacktestRunRequest(
        run=resources_pb2.AlphaBacktestRun(run_name="other"), request_id="run-req"
    )
    _raises(AlreadyExists, "request_id", call, "CreateAlphaBacktestRun", reused)
    unknown_dep = pb.SaveDeploymentRequest(
        deployment=resources_pb2.Deployment(
            deployment_id=str(uuid.uuid4()), model_name="m", model_version="1"
        )
    )
    _raises(NotFound, "deployment.deployment_id", call, "SaveDeployment", unknown_dep)


def test_every_rpc_on_the_servicer(catalog: Database) -> None:
    _exercise_every_rpc(_direct(PersistenceServicer(CatalogRepository(catalog))))


def test_every_rpc_over_grpc(grpc_call: Call) -> None:
    _exercise_every_rpc(grpc_call)


def test_grpc_status_codes(grpc_call: Call) -> None:
    with pytest.raises(NotFound) as info:
        grpc_call("GetBacktestResult", pb.GetBacktestResultRequest(backtest_id=str(uuid.uuid4())))
    assert info.value.grpc_status == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as info2:
        grpc_call("SavePredictionAudit", pb.SavePredictionAuditRequest(run_id="x"))
    assert info2.value.grpc_status == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert info2.value.field == "run_id"


# ----------------------------------------------------------------------------- PostgreSQL specifics


def _new_run(repo: CatalogRepository) -> str:
    from alphaswarm_persistence.repository import AlphaBacktestRunRecord

    run, _ = repo.create_alpha_backtest_run(AlphaBacktestRunRecord(run_name="bulk"))
    return str(run.run_id)


def test_audit_bulk_copy_of_200k_rows(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    run_id = _new_run(repo)
    rng = np.random.default_rng(2024)
    n_dates, n_symbols = 1000, 210
    dates = np.datetime64("2000-01-03") + np.arange(n_dates)
    symbols = [f"S{j:03d}{'X' * (j % 7)}" for j in range(n_symbols)]  # symbols of different lengths
    fields = {
        name: rng.normal(size=(n_dates, n_symbols))
        for name in ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")
    }
    fields["prediction"][rng.random((n_dates, n_symbols)) < 0.05] = np.nan
    fields["held_weight"][rng.random((n_dates, n_symbols)) < 0.3] = np.nan
    del fields["pnl_contribution"]  # an absent field is NULL everywhere
    present = ~np.isnan(fields["prediction"])
    written = repo.save_prediction_audit(
        run_id, PredictionAuditBatch(dates=dates, symbols=symbols, fields=fields)
    )
    assert written == int(present.sum()) > 190_000

    with pg_db.session() as s:
        counts = s.execute(
            sa.text(
                "SELECT count(*), count(prediction), count(realized_return), count(held_weight), count(pnl_contribution), "
                "sum(prediction), min(date), max(date) FROM ml_prediction_audit WHERE run_id = :r"
            ),
            {"r": uuid.UUID(run_id)},
        ).one()
        sample = s.execute(
            sa.text(
                "SELECT date, symbol, prediction, held_weight FROM ml_prediction_audit WHERE run_id = :r "
                "ORDER BY random() LIMIT 500"
            ),
            {"r": uuid.UUID(run_id)},
        ).all()
    assert counts[0] == counts[1] == counts[2] == written
    assert counts[3] == int((present & ~np.isnan(fields["held_weight"])).sum())
    assert counts[4] == 0
    assert counts[5] == pytest.approx(np.nansum(fields["prediction"]), rel=1e-9)
    assert (counts[6], counts[7]) == (
        dt.date(2000, 1, 3),
        dt.date(2000, 1, 3) + dt.timedelta(days=n_dates - 1),
    )
    index = {s: j for j, s in enumerate(symbols)}
    for date, symbol, prediction, held in sample:
        t, j = (np.datetime64(date) - dates[0]).astype(int), index[symbol]
        assert prediction == fields["prediction"][t, j]  # binary COPY: bit-exact doubles
        expected_held = fields["held_weight"][t, j]
        assert (held is None and np.isnan(expected_held)) or held == expected_held

    # A second save replaces the rows in one transaction.
    small = {"prediction": np.ones((2, 2))}
    assert repo.save_prediction_audit(run_id, PredictionAuditBatch(dates[:2], ["A", "B"], small)) == 4
    assert repo.list_prediction_audit(run_id).total_size == 4


def test_numeric_edges_are_stored_as_postgresql_rounds(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    from alphaswarm_persistence.repository import BacktestResultRecord

    values = {
        "sharpe": 9999.99994,
        "sortino": -9999.99995,
        "calmar": 0.00005,
        "beta": -0.00005,
        "final_value": 9999999999999.99,
        "peak_value": 123.455,
        "win_rate": 9.99995,
        "max_drawdown": -0.0,
    }
    bid, _ = repo.save_backtest_result(
        BacktestResultRecord(
            symbol="X",
            strategy_type="t",
            start_date=dt.date(2020, 1, 1),
            end_date=dt.date(2020, 1, 2),
            metrics=values,
        )
    )
    with pg_db.session() as s:
        row = s.execute(
            sa.text(
                "SELECT sharpe_ratio::text, sortino_ratio::text, calmar_ratio::text, beta::text, final_portfolio_value::text, "
                "peak_portfolio_value::text, win_rate::text, max_drawdown::text, notes FROM mcp_backtest_results"
            )
        ).one()
        # PostgreSQL's own rounding of the same decimal literals is the reference.
        reference = s.execute(
            sa.text(
                "SELECT (9999.99994)::numeric(8,4)::text, (0.00005)::numeric(8,4)::text, (-0.00005)::numeric(8,4)::text, "
                "(123.455)::numeric(15,2)::text, (9999999999999.99)::numeric(15,2)::text"
            )
        ).one()
    assert row[0] == reference[0] and row[2] == reference[1] and row[3] == reference[2]
    assert row[5] == reference[3] and row[4] == reference[4]
    assert row[1] is None and row[6] is None  # -10000.0000 and 10.0000 do not fit Numeric(8,4) / Numeric(5,4)
    assert decimal.Decimal(row[7]) == 0
    assert row[8].splitlines() == [
        "sortino_ratio: -9999.99995 exceeds Numeric(8,4)",
        "win_rate: 9.99995 exceeds Numeric(5,4)",
    ]
    stored, _ = repo.get_backtest_result(bid)
    assert stored.metrics["calmar"] == 0.0001 and stored.metrics["max_drawdown"] == 0.0


def test_nulls_last_and_stable_pages_on_postgresql(pg_db: Database) -> None:
    svc = PersistenceServicer(CatalogRepository(pg_db))
    rng = np.random.default_rng(8)
    sharpe: dict[str, float | None] = {}
    for i in range(40):
        value = None if i % 5 == 0 else float(rng.choice([-1.0, 0.0, 0.5, 2.0]))
        bid = svc.SaveBacktestResult(
            pb.SaveBacktestResultRequest(
                result=pb.BacktestRecord(
                    symbol="A",
                    strategy_type="s",
                    start_date="2020-01-01",
                    end_date="2020-02-01",
                    metrics=metricset_to_proto({"sharpe": value}),
                )
            ),
            None,
        ).backtest_id
        sharpe[bid] = value
    for order_by, descending in (("-sharpe", True), ("sharpe", False)):
        seen: list[str] = []
        token = ""
        while True:
            page = svc.ListBacktestResults(
                pb.ListBacktestResultsRequest(order_by=order_by, page_size=7, page_token=token), None
            )
            seen += [r.backtest_id for r in page.results]
            token = page.next_page_token
            # New rows with values anywhere in the order arrive between pages.
            svc.SaveBacktestResult(
                pb.SaveBacktestResultRequest(
                    result=pb.BacktestRecord(
                        symbol="B",
                        strategy_type="s",
                        start_date="2020-01-01",
                        end_date="2020-02-01",
                        metrics=metricset_to_proto({"sharpe": float(rng.choice([-1.0, 0.5]))}),
                    )
                ),
                None,
            )
            if not token:
                break
        original = [b for b in seen if b in sharpe]
        present = sorted(
            (b for b in sharpe if sharpe[b] is not None), key=lambda b: (sharpe[b], b), reverse=descending
        )
        missing = sorted((b for b in sharpe if sharpe[b] is None), reverse=descending)
        assert original == present + missing
        assert len(seen) == len(set(seen))


def test_runs_pages_stay_stable_while_inserting_on_postgresql(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    ids = [_new_run(repo) for _ in range(30)]
    seen: list[str] = []
    page = repo.list_alpha_backtest_runs(page_size=4)
    seen += [str(r.run_id) for r in page.items]
    while page.next_page_token:
        _new_run(repo)
        page = repo.list_alpha_backtest_runs(page_size=4, page_token=page.next_page_token)
        seen += [str(r.run_id) for r in page.items]
    assert sorted(seen) == sorted(ids)


def test_cascades_on_postgresql(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    svc = PersistenceServicer(repo)
    run_id = _new_run(repo)
    repo.save_prediction_audit(
        run_id, PredictionAuditBatch(["2020-01-01"], ["A", "B"], {"prediction": np.ones((1, 2))})
    )
    trade = resources_pb2.Trade(
        trade_number=1, symbol="A", direction="long", entry_date="2020-01-02", entry_price=1.0
    )
    bid = svc.SaveBacktestResult(
        pb.SaveBacktestResultRequest(
            result=pb.BacktestRecord(
                symbol="A", strategy_type="s", start_date="2020-01-01", end_date="2020-02-01"
            ),
            trades=[trade],
        ),
        None,
    ).backtest_id
    repo.update_alpha_backtest_run(run_id, {"backtest_id": bid})
    assert svc.DeleteBacktestResult(pb.DeleteBacktestResultRequest(backtest_id=bid), None).deleted
    with pg_db.session(write=True) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM mcp_backtest_trades")) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM catalog_trade_details")) == 0
        assert s.scalar(sa.text("SELECT backtest_id FROM ml_alpha_backtest_runs")) is None
        s.execute(sa.text("DELETE FROM tasks"))
    with pg_db.session() as s:
        assert s.scalar(sa.text("SELECT count(*) FROM ml_alpha_backtest_runs")) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM ml_prediction_audit")) == 0


# ----------------------------------------------------------------------------- concurrency


def _save_worker(url: str, worker: int, n: int, barrier: Any, results: Any) -> None:
    """One process: n backtest saves with its own keys and n run creates with keys shared by every worker."""
    db = Database(url)
    svc = PersistenceServicer(CatalogRepository(db))
    barrier.wait(timeout=120)
    saved: list[str] = []
    runs: dict[str, str] = {}
    created = 0
    for i in range(n):
        trades = [
            resources_pb2.Trade(
                trade_number=k + 1,
                symbol=f"S{k}",
                direction="long",
                entry_date="2020-01-02",
                entry_price=10.0 + k,
            )
            for k in range(3)
        ]
        record = pb.BacktestRecord(
            symbol=f"W{worker}",
            strategy_type="concurrency",
            start_date="2020-01-01",
            end_date="2020-06-30",
            metrics=metricset_to_proto({"sharpe": worker + i / 100}),
        )
        response = svc.SaveBacktestResult(
            pb.SaveBacktestResultRequest(result=record, trades=trades, request_id=f"w{worker}-{i}"), None
        )
        saved.append(response.backtest_id)
        shared = pb.CreateAlphaBacktestRunRequest(
            run=resources_pb2.AlphaBacktestRun(run_name=f"shared-{i}"), request_id=f"shared-{i}"
        )
        run = svc.CreateAlphaBacktestRun(shared, None)
        runs[f"shared-{i}"] = run.run.run_id
        created += int(run.created)
    db.dispose()
    results.put((worker, saved, runs, created))


def test_concurrent_saves_from_four_processes_lose_nothing(pg_db: Database, pg_catalog_url: str) -> None:
    workers, per_worker = 4, 25
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_save_worker, args=(pg_catalog_url, w, per_worker, barrier, results))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in range(workers)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    saved = [bid for _, ids, _, _ in outcomes for bid in ids]
    assert len(saved) == len(set(saved)) == workers * per_worker
    # Shared keys: every worker got the same run per key, and each was created exactly once.
    for key in (f"shared-{i}" for i in range(per_worker)):
        assert len({runs[key] for _, _, runs, _ in outcomes}) == 1
    assert sum(created for *_, created in outcomes) == per_worker
    with pg_db.session() as s:
        assert s.scalar(sa.text("SELECT count(*) FROM mcp_backtest_results")) == workers * per_worker
        assert s.scalar(sa.text("SELECT count(*) FROM mcp_backtest_trades")) == workers * per_worker * 3
        assert s.scalar(sa.text("SELECT count(*) FROM ml_alpha_backtest_runs")) == per_worker
        assert s.scalar(sa.text("SELECT count(*) FROM tasks")) == per_worker
        assert (
            s.scalar(sa.text("SELECT count(*) FROM catalog_request_keys"))
            == workers * per_worker + per_worker
        )


# ----------------------------------------------------------------------------- trades paged in SQL


def test_trades_are_paged_in_sql_by_trade_number(grpc_call: Call) -> None:
    dates = [str(np.datetime64("2021-01-04") + i) for i in range(40)]
    record = pb.BacktestRecord(
        symbol="PORTFOLIO",
        strategy_type="sma_cross",
        start_date=dates[0],
        end_date=dates[-1],
        initial_capital=10_000,
        dates=dates,
        equity_curve=array_to_proto(np.linspace(10_000, 10_500, 40)),
    )
    trades = [
        resources_pb2.Trade(
            trade_number=n,
            symbol=("AAPL", "MSFT")[n % 2],
            direction=("long", "short")[n % 2],
            entry_date=dates[n],
            entry_price=100.0 + n,
            exit_date=dates[n + 1] if n < 25 else "",
            exit_price=101.0 + n if n < 25 else 0.0,
            pnl=float(n) - 12.5,
            duration_bars=1,
            exit_reason="signal" if n < 25 else "end_of_data",
        )
        for n in range(1, 26)
    ]
    saved = grpc_call(
        "SaveBacktestResult", pb.SaveBacktestResultRequest(result=record, trades=list(reversed(trades)))
    )
    other = grpc_call("SaveBacktestResult", pb.SaveBacktestResultRequest(result=record))

    got: list[resources_pb2.Trade] = []
    token, pages = "", 0
    while True:
        page = grpc_call(
            "ListBacktestTrades",
            pb.ListBacktestTradesRequest(backtest_id=saved.backtest_id, page_size=7, page_token=token),
        )
        pages += 1
        assert page.total_size == 25 and len(page.trades) <= 7
        got += page.trades
        token = page.next_page_token
        if not token:
            break
    assert pages == 4 and got == trades  # every field, in trade-number order
    everything = grpc_call("ListBacktestTrades", pb.ListBacktestTradesRequest(backtest_id=saved.backtest_id))
    assert list(everything.trades) == trades and everything.next_page_token == ""

    first = grpc_call(
        "ListBacktestTrades", pb.ListBacktestTradesRequest(backtest_id=saved.backtest_id, page_size=7)
    )
    _raises(
        InvalidArgument,
        "page_token",
        grpc_call,
        "ListBacktestTrades",
        pb.ListBacktestTradesRequest(backtest_id=other.backtest_id, page_token=first.next_page_token),
    )
    _raises(
        InvalidArgument,
        "page_token",
        grpc_call,
        "ListBacktestTrades",
        pb.ListBacktestTradesRequest(backtest_id=saved.backtest_id, page_token="not-a-token"),
    )
    _raises(
        InvalidArgument,
        "page_size",
        grpc_call,
        "ListBacktestTrades",
        pb.ListBacktestTradesRequest(backtest_id=saved.backtest_id, page_size=-1),
    )
    _raises(
        NotFound,
        "backtest_id",
        grpc_call,
        "ListBacktestTrades",
        pb.ListBacktestTradesRequest(backtest_id=str(uuid.uuid4())),
    )
    empty = grpc_call("ListBacktestTrades", pb.ListBacktestTradesRequest(backtest_id=other.backtest_id))
    assert list(empty.trades) == [] and empty.total_size == 0 and empty.next_page_token == ""
