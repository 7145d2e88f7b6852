"""StreamPredictionAudit: the whole audit of a run as packed blocks of whole dates, equal to
what was saved (NaN where a cell is absent or NULL), over the servicer and its repository."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.errors import NotFound
from alphaswarm_common.protoconv import array_from_proto, array_to_proto
from alphaswarm_persistence.servicer import PersistenceServicer
from tests.unit.test_persistence_repository import _create_run, db, repo, svc, template_db

pytestmark = pytest.mark.unit
__all__ = ["db", "repo", "svc", "template_db"]  # the fixtures this module borrows

FIELDS = ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")


def _stream(svc: PersistenceServicer, run_id: str, rows: int) -> list[pb.StreamPredictionAuditResponse]:
    return list(
        svc.StreamPredictionAudit(pb.StreamPredictionAuditRequest(run_id=run_id, rows_per_message=rows), None)
    )


def test_the_stream_returns_the_saved_matrices_in_blocks_of_whole_dates(svc: PersistenceServicer) -> None:
    run = _create_run(svc)
    rng = np.random.default_rng(4)
    dates = [f"2021-02-{d:02d}" for d in range(1, 21)]
    symbols = ["ZZ", "AA", "MM", "BB", "QQ", "CC", "DD"]
    values = {name: rng.normal(size=(len(dates), len(symbols))) for name in FIELDS}
    values["prediction"][rng.random((len(dates), len(symbols))) < 0.2] = np.nan  # absent cells
    values["held_weight"][rng.random((len(dates), len(symbols))) < 0.2] = np.nan  # NULL values
    values["prediction"][:, symbols.index("QQ")] = np.nan  # a symbol never predicted is not in the audit
    batch = resources_pb2.PredictionAuditBatch(dates=dates, symbols=symbols)
    for name, arr in values.items():
        batch.fields[name].CopyFrom(array_to_proto(arr))
    written = svc.SavePredictionAudit(pb.SavePredictionAuditRequest(run_id=run.run_id, batch=batch), None)

    messages = _stream(svc, run.run_id, rows=10)
    assert len(messages) > 2
    assert all(m.total_rows == written.rows_written for m in messages)
    got_dates = [d for m in messages for d in m.batch.dates]
    assert got_dates == dates and len(set(got_dates)) == len(dates)  # every date once, in order
    stored = sorted(s for s in symbols if s != "QQ")
    assert all(list(m.batch.symbols) == stored for m in messages)
    for name in FIELDS:
        got = np.vstack([array_from_proto(m.batch.fields[name], field=name) for m in messages])
        want = values[name][:, [symbols.index(s) for s in stored]].copy()
        present = ~np.isnan(values["prediction"][:, [symbols.index(s) for s in stored]])
        want[~present] = np.nan
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_an_unknown_run_is_not_found_and_an_empty_audit_is_one_empty_block(svc: PersistenceServicer) -> None:
    with pytest.raises(NotFound):
        _stream(svc, str(uuid.uuid4()), rows=0)
    run = _create_run(svc)
    messages = _stream(svc, run.run_id, rows=0)
    assert len(messages) == 1 and messages[0].total_rows == 0 and not messages[0].batch.dates
