"""The backtest catalog on a real PostgreSQL and on SQLite, through a real gRPC server.

* every scenario of `tests/unit/test_persistence_catalog_queries.py` (best,
  compare, summary, optimizations, walk-forward windows, portfolios: round
  trips, idempotent saves, cascades, orders, pages stable while rows arrive,
  overflow and 0.0, errors naming their field) runs over gRPC on both
  databases, with the domain errors arriving as their status codes;
* the performance summary is the same, float for float, on both databases;
* the new columns are rounded exactly as PostgreSQL's own numeric casts round;
* concurrent saves of one batch with one request id store it once;
* the 0003 revision upgrades, downgrades and cascades on both databases.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import pytest
import sqlalchemy as sa

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.errors import InvalidArgument, NotFound
from alphaswarm_common.grpc_client import channel, error_from_rpc, remote_field
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.protoconv import metricset_to_proto
from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database, create_engine
from alphaswarm_persistence.models import Base
from alphaswarm_persistence.repository import (
    CatalogRepository,
    OptimizationResultRecord,
    PortfolioBacktestRecord,
    WalkForwardTestRecord,
)
from alphaswarm_persistence.servicer import PersistenceServicer, service_registration

pytestmark = pytest.mark.integration


def _load_scenarios() -> ModuleType:
    """The scenario module of the unit layer, loaded by path.

    The `tests` folder is not a package and the pytest config puts no root on
    `sys.path`, so `from tests.unit... import` does not resolve under
    `.venv/bin/pytest`; loading the file by path does, whatever the rootdir.
    """
    path = Path(__file__).resolve().parents[1] / "unit" / "test_persistence_catalog_queries.py"
    spec = importlib.util.spec_from_file_location("_catalog_scenarios", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations resolve through sys.modules
    spec.loader.exec_module(module)
    return module


_scenarios = _load_scenarios()
SCENARIOS: dict[str, Callable[[Any, Database], None]] = _scenarios.SCENARIOS
save_backtest = _scenarios.save_backtest
Call = Callable[[str, Any], Any]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pg_catalog_url(pg_database_factory: Callable[[], str]) -> str:
    url = pg_database_factory()
    migrations.upgrade(url)
    return url


@pytest.fixture
def pg_db(pg_catalog_url: str) -> Iterator[Database]:
    db = Database(pg_catalog_url)
    with db.session(write=True) as s:
        names = ", ".join(t.name for t in Base.metadata.sorted_tables)
        s.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    yield db
    db.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    migrations.upgrade(url)
    db = Database(url)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog(request: pytest.FixtureRequest) -> Database:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")  # type: ignore[no-any-return]


@pytest.fixture
def grpc_call(catalog: Database) -> Iterator[Call]:
    """Calls through a real gRPC server on loopback; failures come back as domain errors with their field."""
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


# ----------------------------------------------------------------------------- the scenarios over gRPC


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_over_grpc(name: str, grpc_call: Call, catalog: Database) -> None:
    SCENARIOS[name](grpc_call, catalog)


def test_status_codes_of_the_new_rpcs(grpc_call: Call) -> None:
    with pytest.raises(NotFound) as missing:
        grpc_call(
            "GetPortfolioBacktest", pb.GetPortfolioBacktestRequest(portfolio_backtest_id=str(uuid.uuid4()))
        )
    assert missing.value.grpc_status == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    with pytest.raises(InvalidArgument) as bad:
        grpc_call("GetBestBacktest", pb.GetBestBacktestRequest(metric="nope"))
    assert bad.value.grpc_status == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert bad.value.field == "metric"


# ----------------------------------------------------------------------------- the same answers on both databases


def _fill(db: Database, now: dt.datetime) -> None:
    """The same rows, with the same timestamps, in any catalog."""
    rng = np.random.default_rng(2025)
    svc = PersistenceServicer(CatalogRepository(db))

    def call(method: str, request: Any) -> Any:
        return getattr(svc, method)(request, None)

    for i in range(120):
        metrics = {
            "total_return": float(rng.normal(0.01, 0.3)),
            "sharpe": None if i % 9 == 0 else float(rng.normal(0.5, 1.5)),
            "max_drawdown": float(-rng.uniform(0, 0.6)),
            "win_rate": float(rng.uniform(0, 1)),
            "total_trades": float(rng.integers(0, 500)),
        }
        when = now - dt.timedelta(days=float(rng.uniform(0, 40)))
        save_backtest(
            call,
            symbol=str(
                rng.choice(["AAPL", "aapl", "MSFT", "Zed", "_x"])
            ),  # case and punctuation: collation-proof
            strategy_type=str(rng.choice(["alpha:topk", "Alpha:topk", "sma"])),
            metrics=metrics,
            when=when,
        )


def test_summary_is_identical_on_sqlite_and_postgresql(pg_db: Database, sqlite_db: Database) -> None:
    now = dt.datetime(2025, 3, 1, 12, tzinfo=dt.UTC)
    _fill(pg_db, now)
    _fill(sqlite_db, now)
    for days in (3, 30, 365):
        on_pg = CatalogRepository(pg_db).get_performance_summary(days, now=now)
        on_sqlite = CatalogRepository(sqlite_db).get_performance_summary(days, now=now)
        assert on_pg == on_sqlite  # dataclass equality: every float bit for bit, groups in the same order
        assert [g.key for g in on_pg.by_symbol] == sorted(g.key for g in on_pg.by_symbol)


def test_new_columns_round_as_postgresql_numeric_does(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    svc = PersistenceServicer(repo)
    parent = save_backtest(lambda m, r: getattr(svc, m)(r, None))
    edges: dict[str, Any] = {
        "objective_value": 123456.1234565,  # Numeric(12,6): half up
        "total_return": -0.00005,
        "sharpe_ratio": 9999.99994,
        "win_rate": 0.99995,
        "p_value": 0.0000005,
        "profit_factor": 1.23455,
    }
    (oid,), _ = repo.save_optimization_results(
        [OptimizationResultRecord(backtest_id=parent, parameter_set=0, **edges)]
    )
    (wid,), _ = repo.save_walk_forward_tests(
        [
            WalkForwardTestRecord(
                parent_backtest_id=parent,
                window_size_months=12,
                step_size_months=1,
                training_start=dt.date(2019, 1, 1),
                training_end=dt.date(2019, 12, 31),
                test_period_start=dt.date(2020, 1, 1),
                test_period_end=dt.date(2020, 1, 31),
                training_performance=-123.45675,
                degradation_factor=0.00005,
            )
        ]
    )
    pid, _ = repo.save_portfolio_backtest(
        PortfolioBacktestRecord(
            portfolio_name="edges",
            start_date=dt.date(2020, 1, 1),
            end_date=dt.date(2020, 2, 1),
            symbols=["A"],
            initial_capital=1234.565,
            correlation_threshold=0.12345,
            metrics={"turnover_rate": 2.00005, "concentration_index": -0.00005},
        )
    )
    with pg_db.session() as s:
        stored = s.execute(
            sa.text(
                "SELECT objective_value::text, total_return::text, sharpe_ratio::text, win_rate::text, "
                "p_value::text, profit_factor::text FROM mcp_optimization_results"
            )
        ).one()
        reference = s.execute(
            sa.text(
                "SELECT (123456.1234565)::numeric(12,6)::text, (-0.00005)::numeric(10,4)::text, "
                "(9999.99994)::numeric(8,4)::text, (0.99995)::numeric(5,4)::text, "
                "(0.0000005)::numeric(8,6)::text, (1.23455)::numeric(8,4)::text"
            )
        ).one()
        wf = s.execute(
            sa.text("SELECT training_performance::text, degradation_factor::text FROM mcp_walk_forward_tests")
        ).one()
        wf_ref = s.execute(
            sa.text("SELECT (-123.45675)::numeric(10,4)::text, (0.00005)::numeric(8,4)::text")
        ).one()
        pf = s.execute(
            sa.text(
                "SELECT initial_capital::text, correlation_threshold::text, turnover_rate::text, "
                "concentration_index::text FROM mcp_backtest_portfolios"
            )
        ).one()
        pf_ref = s.execute(
            sa.text(
                "SELECT (1234.565)::numeric(15,2)::text, (0.12345)::numeric(5,4)::text, "
                "(2.00005)::numeric(8,4)::text, (-0.00005)::numeric(8,4)::text"
            )
        ).one()
    assert tuple(stored) == tuple(reference)
    assert tuple(wf) == tuple(wf_ref)
    assert tuple(pf) == tuple(pf_ref)
    got = repo.get_optimization_result(oid)
    assert got.p_value == 0.000001 and got.null_reasons == {}
    assert repo.get_walk_forward_test(wid).degradation_factor == 0.0001
    assert repo.get_portfolio_backtest(pid).metrics["concentration_index"] == -0.0001


def test_concurrent_saves_of_one_batch_with_one_key_store_it_once(pg_db: Database) -> None:
    repo = CatalogRepository(pg_db)
    svc = PersistenceServicer(repo)
    parent = save_backtest(lambda m, r: getattr(svc, m)(r, None))
    request = pb.SaveOptimizationResultsRequest(
        results=[
            pb.OptimizationRecord(backtest_id=parent, parameter_set=k, sharpe_ratio=0.1 * k, rank=k + 1)
            for k in range(50)
        ],
        request_id="shared-batch",
    )
    barrier = threading.Barrier(6)
    outcomes: list[tuple[list[str], bool]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait(timeout=60)
            reply = svc.SaveOptimizationResults(request, None)
            outcomes.append((list(reply.optimization_ids), reply.created))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(created for _, created in outcomes) == 1
    assert len({tuple(ids) for ids, _ in outcomes}) == 1
    with pg_db.session() as s:
        assert s.scalar(sa.text("SELECT count(*) FROM mcp_optimization_results")) == 50


# ----------------------------------------------------------------------------- the 0003 revision


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fresh.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return factory()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_portfolio_details_revision_upgrades_downgrades_and_cascades(empty_url: str) -> None:
    migrations.upgrade(empty_url)
    assert "catalog_portfolio_details" in _tables(empty_url)
    migrations.downgrade(empty_url, "0002_alpha_backtest_catalog")
    assert "catalog_portfolio_details" not in _tables(empty_url)
    assert "mcp_backtest_portfolios" in _tables(empty_url)
    migrations.downgrade(empty_url, "base")
    assert "catalog_portfolio_details" not in _tables(empty_url)
    migrations.upgrade(empty_url)
    assert migrations.current_revision(empty_url) == migrations.head_revision()
    engine = create_engine(empty_url)
    try:
        (fk,) = sa.inspect(engine).get_foreign_keys("catalog_portfolio_details")
        assert fk["referred_table"] == "mcp_backtest_portfolios"
        assert fk["options"].get("ondelete", "").upper() == "CASCADE"
    finally:
        engine.dispose()
    db = Database(empty_url)
    try:
        repo = CatalogRepository(db)
        pid, _ = repo.save_portfolio_backtest(
            PortfolioBacktestRecord(
                portfolio_name="p",
                start_date=dt.date(2020, 1, 1),
                end_date=dt.date(2020, 2, 1),
                symbols=["A"],
                metrics={"calmar": 1.0},
                conventions={"periods_per_year": 252},
            )
        )
        with db.session(write=True) as s:
            assert s.scalar(sa.text("SELECT count(*) FROM catalog_portfolio_details")) == 1
            s.execute(sa.text("DELETE FROM mcp_backtest_portfolios"))
        with db.session() as s:
            assert s.scalar(sa.text("SELECT count(*) FROM catalog_portfolio_details")) == 0
        assert pid is not None
    finally:
        db.dispose()


def test_metricset_of_a_backtest_is_untouched_by_the_new_queries(catalog: Database) -> None:
    """Best and compare return the stored MetricSet: names as sent, reasons, conventions."""
    svc = PersistenceServicer(CatalogRepository(catalog))
    record = pb.BacktestRecord(
        symbol="M",
        strategy_type="t",
        start_date="2020-01-01",
        end_date="2020-02-01",
        metrics=metricset_to_proto(
            {"sharpe": 1.5, "profit_factor": None, "ic_spearman": 0.03},
            {"profit_factor": "no losing trades"},
            {"rf": 0},
        ),
    )
    first = svc.SaveBacktestResult(pb.SaveBacktestResultRequest(result=record), None).backtest_id
    second = svc.SaveBacktestResult(pb.SaveBacktestResultRequest(result=record), None).backtest_id
    best = svc.GetBestBacktest(pb.GetBestBacktestRequest(metric="sharpe"), None).result
    compared = svc.CompareBacktests(pb.CompareBacktestsRequest(backtest_ids=[first, second]), None)
    for result in (best, *compared.results):
        assert result.metrics.values["profit_factor"].reason == "no losing trades"
        assert result.metrics.values["ic_spearman"].value == 0.03
        assert result.metrics.conventions_json == '{"rf": 0}'
    ranks = {(c.metric, c.backtest_id): c.rank for c in compared.comparisons if c.HasField("rank")}
    assert ranks[("sharpe_ratio", first)] == ranks[("sharpe_ratio", second)] == 1  # a tie shares rank 1
