"""StreamPredictionAudit over a real gRPC server, on SQLite and PostgreSQL: the streamed blocks
rebuild the saved audit exactly (bit-exact doubles, NULL as NaN), whole dates per message, and an
unknown run is NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as pb_grpc
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.protoconv import array_from_proto
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.repository import AlphaBacktestRunRecord, CatalogRepository, PredictionAuditBatch
from alphaswarm_persistence.servicer import PersistenceServicer, service_registration
from tests.integration.test_persistence_postgres import catalog, pg_catalog_url, pg_db

pytestmark = pytest.mark.integration
__all__ = ["catalog", "pg_catalog_url", "pg_db"]  # the fixtures this module borrows

FIELDS = ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")


@pytest.fixture
def stub(catalog: Database) -> Iterator[pb_grpc.PersistenceServiceStub]:
    server, port = serve([service_registration(PersistenceServicer(CatalogRepository(catalog)))], port=0)
    chan = channel(f"127.0.0.1:{port}")
    yield pb_grpc.PersistenceServiceStub(chan)
    chan.close()
    server.stop(0).wait()


def test_the_audit_streams_back_exactly(catalog: Database, stub: pb_grpc.PersistenceServiceStub) -> None:
    repo = CatalogRepository(catalog)
    run, _ = repo.create_alpha_backtest_run(AlphaBacktestRunRecord(run_name="stream"))
    rng = np.random.default_rng(12)
    n_dates, n_symbols = 300, 40
    dates = np.datetime64("2010-01-04") + np.arange(n_dates)
    symbols = [f"SYM{j:02d}" for j in range(n_symbols)]
    fields = {name: rng.normal(size=(n_dates, n_symbols)) for name in FIELDS}
    fields["prediction"][rng.random((n_dates, n_symbols)) < 0.1] = np.nan
    fields["held_weight"][rng.random((n_dates, n_symbols)) < 0.3] = np.nan
    written = repo.save_prediction_audit(
        run.run_id, PredictionAuditBatch(dates=dates, symbols=symbols, fields=fields)
    )

    messages = list(
        stub.StreamPredictionAudit(
            pb.StreamPredictionAuditRequest(run_id=str(run.run_id), rows_per_message=1000), timeout=60
        )
    )
    assert len(messages) >= written // 1000 - 1 and all(m.total_rows == written for m in messages)
    got_dates = [d for m in messages for d in m.batch.dates]
    assert got_dates == [str(d) for d in dates]
    assert list(messages[0].batch.symbols) == symbols
    present = ~np.isnan(fields["prediction"])
    for name in FIELDS:
        got = np.vstack([array_from_proto(m.batch.fields[name], field=name) for m in messages])
        want = np.where(present, fields[name], np.nan)
        np.testing.assert_array_equal(got, want, err_msg=name)

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamPredictionAudit(pb.StreamPredictionAuditRequest(run_id=str(run.task_id)), timeout=30))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
