"""The catalog's dataset fingerprint column and the filtered audit stream, on SQLite and PostgreSQL.

* `0011_backtest_fingerprint` backfills `mcp_backtest_results.dataset_fingerprint` from the
  rows' parameters (a 64-hex `dataset_fingerprint`; anything else stays NULL) and downgrades;
* a saved result carries its parameters' fingerprint in the column, and
  `list_backtest_results(dataset_fingerprint=)` returns exactly the rows of that dataset,
  page by page;
* `iter_prediction_audit(date=, symbol=)` returns the rows of that date or symbol, equal to
  the same cells of the whole audit.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database, create_engine
from alphaswarm_persistence.repository import (
    AlphaBacktestRunRecord,
    BacktestResultRecord,
    CatalogRepository,
    PredictionAuditBatch,
    TradeRecord,
)

pytestmark = pytest.mark.integration

FP_A = "a" * 64
FP_B = "0123456789abcdef" * 4


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    factory: Callable[[], str] = request.getfixturevalue("pg_database_factory")
    return factory()


def _insert_old_row(conn: sa.Connection, params: object) -> uuid.UUID:
    bid = uuid.uuid4()
    table = sa.table(
        "mcp_backtest_results",
        sa.column("backtest_id", sa.Uuid()),
        sa.column("symbol", sa.String()),
        sa.column("strategy_type", sa.String()),
        sa.column("backtest_date", sa.DateTime(timezone=True)),
        sa.column("start_date", sa.Date()),
        sa.column("end_date", sa.Date()),
        sa.column("parameters", sa.JSON(none_as_null=True)),
        sa.column("created_at", sa.DateTime(timezone=True)),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    conn.execute(
        table.insert().values(
            backtest_id=bid,
            symbol="AAPL",
            strategy_type="sma_cross",
            backtest_date=now,
            start_date=dt.date(2024, 1, 1),
            end_date=dt.date(2024, 12, 31),
            parameters=params,
            created_at=now,
            updated_at=now,
        )
    )
    return bid


def _column(url: str) -> dict[uuid.UUID, str | None]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT backtest_id, dataset_fingerprint FROM mcp_backtest_results"))
            return {uuid.UUID(str(b)): fp for b, fp in rows}
    finally:
        engine.dispose()


def test_the_migration_backfills_the_fingerprint_from_the_parameters(url: str) -> None:
    migrations.upgrade(url, "0010_trades_keyset_index")
    engine = create_engine(url)
    with engine.begin() as conn:
        with_fp = _insert_old_row(conn, {"strategy": {"type": "sma_cross"}, "dataset_fingerprint": FP_A})
        other_fp = _insert_old_row(conn, {"dataset_fingerprint": FP_B, "symbols": ["A", "B"]})
        not_hex = _insert_old_row(conn, {"dataset_fingerprint": "not-a-fingerprint"})
        without = _insert_old_row(conn, {"strategy": {"type": "sma_cross"}})
        no_params = _insert_old_row(conn, None)
    engine.dispose()
    migrations.upgrade(url)
    assert _column(url) == {with_fp: FP_A, other_fp: FP_B, not_hex: None, without: None, no_params: None}
    migrations.downgrade(url, "0010_trades_keyset_index")
    engine = create_engine(url)
    try:
        columns = {c["name"] for c in sa.inspect(engine).get_columns("mcp_backtest_results")}
    finally:
        engine.dispose()
    assert "dataset_fingerprint" not in columns
    migrations.upgrade(url)
    assert _column(url)[with_fp] == FP_A


def _result(fp: str | None, sharpe: float) -> BacktestResultRecord:
    params: dict[str, object] = {"strategy": {"type": "sma_cross"}, "capital_per_symbol": 1.0}
    if fp is not None:
        params["dataset_fingerprint"] = fp
    return BacktestResultRecord(
        symbol="AAPL",
        strategy_type="sma_cross",
        start_date=dt.date(2024, 1, 1),
        end_date=dt.date(2024, 12, 31),
        parameters=params,
        metrics={"sharpe": sharpe},
    )


def test_saved_results_are_listed_by_dataset(url: str) -> None:
    migrations.upgrade(url)
    db = Database(url)
    try:
        repo = CatalogRepository(db)
        ids = {FP_A: set(), FP_B: set(), None: set()}  # type: dict[str | None, set[str]]
        for i in range(23):
            fp = (FP_A, FP_B, None)[i % 3]
            bid, _ = repo.save_backtest_result(_result(fp, 0.1 * i))
            ids[fp].add(str(bid))
        column = _column(url)
        for fp, group in ids.items():
            assert {column[uuid.UUID(b)] for b in group} == {fp}
        for fp in (FP_A, FP_B):
            got: list[str] = []
            token = ""
            while True:
                page = repo.list_backtest_results(
                    dataset_fingerprint=fp, order_by="-sharpe", page_size=3, page_token=token
                )
                got += [str(r.backtest_id) for r in page.items]
                sharpes = [r.metrics["sharpe"] for r in page.items]
                assert sharpes == sorted(sharpes, reverse=True)
                token = page.next_page_token
                if not token:
                    break
            assert len(got) == len(set(got)) and set(got) == ids[fp]
        assert not repo.list_backtest_results(dataset_fingerprint="f" * 64).items
        # a page token of one dataset's listing is not one of another's
        first = repo.list_backtest_results(dataset_fingerprint=FP_A, page_size=2)
        with pytest.raises(Exception, match="page_token"):
            repo.list_backtest_results(
                dataset_fingerprint=FP_B, page_size=2, page_token=first.next_page_token
            )
    finally:
        db.dispose()


def test_the_audit_stream_filters_a_date_and_a_symbol(url: str) -> None:
    migrations.upgrade(url)
    db = Database(url)
    try:
        repo = CatalogRepository(db)
        run, _ = repo.create_alpha_backtest_run(
            AlphaBacktestRunRecord(run_name="audit-filters", state="succeeded", config={"x": 1})
        )
        rng = np.random.default_rng(5)
        dates = [str(d) for d in np.busday_offset(np.datetime64("2024-01-02"), np.arange(30), roll="forward")]
        symbols = [f"S{i:02d}" for i in range(12)]
        prediction = rng.normal(size=(30, 12))
        prediction[4, 3] = np.nan  # a cell without a row
        realized = rng.normal(size=(30, 12))
        repo.save_prediction_audit(
            run.run_id,
            PredictionAuditBatch(
                dates=dates, symbols=symbols, fields={"prediction": prediction, "realized_return": realized}
            ),
        )
        (whole,) = list(repo.iter_prediction_audit(run.run_id))
        w_dates, w_symbols, w_fields, w_total = whole
        assert w_symbols == symbols and w_dates == dates and w_total == 30 * 12 - 1

        blocks = list(repo.iter_prediction_audit(run.run_id, date=dates[4]))
        assert len(blocks) == 1
        d_dates, d_symbols, d_fields, d_total = blocks[0]
        assert d_dates == [dates[4]] and d_total == 11
        assert d_symbols == [s for s in symbols if s != "S03"]
        cols = [symbols.index(s) for s in d_symbols]
        for name in ("prediction", "realized_return"):
            np.testing.assert_array_equal(d_fields[name][0], w_fields[name][4, cols])

        s_blocks = list(repo.iter_prediction_audit(run.run_id, symbol="S07", rows_per_message=10))
        assert len(s_blocks) >= 2  # about 10 rows a message, a date never split
        s_dates = [d for b in s_blocks for d in b[0]]
        assert s_dates == dates and all(b[1] == ["S07"] for b in s_blocks)
        s_pred = np.concatenate([b[2]["prediction"][:, 0] for b in s_blocks])
        np.testing.assert_array_equal(s_pred, w_fields["prediction"][:, 7])
        assert s_blocks[0][3] == 30

        both = list(repo.iter_prediction_audit(run.run_id, date=dates[9], symbol="S01"))
        assert both[0][0] == [dates[9]] and both[0][1] == ["S01"] and both[0][3] == 1
        assert both[0][2]["prediction"][0, 0] == w_fields["prediction"][9, 1]

        none = list(repo.iter_prediction_audit(run.run_id, date="1999-01-04"))
        assert none[0][0] == [] and none[0][3] == 0
        with pytest.raises(Exception, match="date"):
            list(repo.iter_prediction_audit(run.run_id, date="not-a-date"))
    finally:
        db.dispose()


def test_the_json_backfill_reads_text_parameters() -> None:
    from importlib import util

    path = Path(__file__).resolve().parents[2] / "alembic" / "versions" / "0011_backtest_fingerprint.py"
    spec = util.spec_from_file_location("rev0011", path)
    assert spec is not None and spec.loader is not None
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module._fingerprint(json.dumps({"dataset_fingerprint": FP_A})) == FP_A
    assert module._fingerprint({"dataset_fingerprint": FP_A.upper()}) is None
    assert module._fingerprint("[1, 2]") is None and module._fingerprint("{") is None


def test_a_backtest_with_its_trades_reads_as_its_pages_do(url: str) -> None:
    """`get_backtest_result(include_trades=True)` (one joined query) returns the trades, with
    their details, exactly as the keyset pages of `list_backtest_trades` do."""
    migrations.upgrade(url)
    db = Database(url)
    try:
        repo = CatalogRepository(db)
        trades = [
            TradeRecord(
                trade_number=k + 1,
                direction="long" if k % 2 else "short",
                symbol=None if k % 7 == 0 else f"S{k % 5}",
                entry_date=dt.date(2024, 1, 2) + dt.timedelta(days=k),
                entry_price=100.0 + k,
                exit_date=None if k == 36 else dt.date(2024, 1, 5) + dt.timedelta(days=k),
                exit_price=None if k == 36 else 101.0 + k,
                pnl=float(k) - 18.0,
                mae=-0.01 * (k % 3),
                duration_bars=None if k % 4 == 0 else k % 9,
                exit_reason=None if k % 3 == 0 else "rebalance",
            )
            for k in reversed(range(37))  # saved out of order
        ]
        bid, _ = repo.save_backtest_result(_result(FP_A, 0.5), trades)
        _, whole = repo.get_backtest_result(bid, include_trades=True)
        paged = []
        token = ""
        while True:
            page, total = repo.list_backtest_trades(bid, page_size=10, page_token=token)
            paged += page.items
            token = page.next_page_token
            if not token:
                break
        assert total == 37 and [t.trade_number for t in whole] == list(range(1, 38))
        assert whole == paged
        assert whole[0].symbol is None and whole[1].symbol == "S1" and whole[36].exit_date is None
    finally:
        db.dispose()


def test_a_run_listing_in_summary_keeps_what_a_listing_shows(url: str) -> None:
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm_persistence.servicer import PersistenceServicer

    migrations.upgrade(url)
    db = Database(url)
    try:
        repo = CatalogRepository(db)
        config = {
            "model_cfg": {"type": "lightgbm", "params": {"num_leaves": 7}},
            "dataset_cfg": {
                "source": "synthetic",
                "segments": {
                    "train": {"start": "2020-01-01", "end": "2020-12-31"},
                    "test": {"start": "2021-01-04", "end": "2021-06-30"},
                },
            },
            "strategy_cfg": {"type": "long_short_topk"},
        }
        repo.create_alpha_backtest_run(
            AlphaBacktestRunRecord(run_name="summary", state="succeeded", config=config, model_name="m")
        )
        servicer = PersistenceServicer(repo)
        full = servicer.ListAlphaBacktestRuns(ppb.ListAlphaBacktestRunsRequest(), None).runs[0]
        brief = servicer.ListAlphaBacktestRuns(ppb.ListAlphaBacktestRunsRequest(summary=True), None).runs[0]
        assert full.config.strategy_cfg.type == "long_short_topk" and full.config.dataset_cfg.source
        assert brief.config.model_cfg.type == "lightgbm"
        assert (brief.config.dataset_cfg.segments.test.start, brief.config.dataset_cfg.segments.test.end) == (
            "2021-01-04",
            "2021-06-30",
        )
        assert not brief.config.strategy_cfg.type and not brief.config.dataset_cfg.source
        assert not brief.config.dataset_cfg.segments.train.start
        assert (brief.run_id, brief.run_name, brief.model_name) == (
            full.run_id,
            full.run_name,
            full.model_name,
        )
    finally:
        db.dispose()


def test_the_trials_of_a_dataset_read_as_the_listing_does(url: str) -> None:
    """`dataset_trials` (the leaderboard's one query) returns the completed backtests of the
    dataset with the parameters, metrics and conventions `list_backtest_results` gives."""
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm_common.errors import InvalidArgument
    from alphaswarm_persistence.servicer import PersistenceServicer

    migrations.upgrade(url)
    db = Database(url)
    try:
        repo = CatalogRepository(db)
        for i in range(9):
            result = _result((FP_A, FP_B)[i % 2], 0.25 * i - 1.0)
            result.metrics.update({"skewness": -0.1 * i, "n_periods": 252 + i, "max_drawdown": -0.05 * i})
            result.conventions = {"periods_per_year": 252, "rf": 0.0}
            if i == 4:
                result.status = "failed"
            repo.save_backtest_result(result)
        listed = []
        token = ""
        while True:
            page = repo.list_backtest_results(dataset_fingerprint=FP_A, status="completed", page_token=token)
            listed += page.items
            token = page.next_page_token
            if not token:
                break
        trials = repo.dataset_trials(FP_A)
        assert [t["backtest_id"] for t in trials] == sorted(r.backtest_id for r in listed)
        assert len(trials) == 4  # five on FP_A, one of them failed
        by_id = {r.backtest_id: r for r in listed}
        for t in trials:
            r = by_id[t["backtest_id"]]
            assert t["parameters"] == r.parameters
            assert t["metrics"] == r.metrics
            assert t["conventions"] == r.conventions
            assert (t["symbol"], t["strategy_type"], t["start_date"]) == (
                r.symbol,
                r.strategy_type,
                r.start_date,
            )
        reply = PersistenceServicer(repo).ListDatasetTrials(
            ppb.ListDatasetTrialsRequest(dataset_fingerprint=FP_A), None
        )
        assert list(reply.backtest_ids) == [str(t["backtest_id"]) for t in trials]
        assert [json.loads(m) for m in reply.metrics_json] == [t["metrics"] for t in trials]
        assert repo.dataset_trials("f" * 64) == []
        with pytest.raises(InvalidArgument, match="fingerprint"):
            repo.dataset_trials("not-hex")
    finally:
        db.dispose()
