"""Big jobs split into chunks on the work queue, over 2 gateways and 2 backtesters as processes.

The compose topology as processes (`ReplicaTopology`) with two gateways and two backtesters over
one PostgreSQL and a NATS JetStream of the test's own; each gateway's backtester target names
both backtesters (`ipv4:` with two addresses, balanced round robin). Checked:

* an optimization over more sets than `optimize_chunk_sets` becomes one `evaluation_chunk` task
  per chunk on the work queue; chunks are taken by both gateways and evaluated by both
  backtesters, each chunk once; the merged result (ranks, Deflated-Sharpe p-values, best set)
  equals the backtester's own unsplit `Optimize`, with one catalog row per set;
* a walk-forward test becomes one chunk task per window (the window's in-sample search), taken
  by both gateways and both backtesters; the merged test equals the one-process `WalkForward`
  (windows, optima, out-of-sample metrics, performance ratios, degradation);
* the gateway holding the job is killed -9 while chunks are in flight: the other gateway takes
  the job over (lease expiry, redelivery, the reaper), finds the same chunk tasks (one per chunk
  key), evaluates only the unfinished ones and completes with the one-process result, no row
  duplicated.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from google.protobuf import struct_pb2

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm_common.config import BacktestConfig, DatasetConfig
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.protoconv import config_to_proto, metricset_from_proto, struct_to_dict
from tests.e2e.conftest import sse_events
from tests.faults.cluster import NatsServer
from tests.integration.replicas import LOAD_ENV, ReplicaTopology

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCE: dict[str, Any] = {
    "dataset_cfg": {"source": "sp500", "start_date": "2012-01-01", "end_date": "2018-12-31"},
    "symbols": ["AAPL"],
}
GRID = {"fast_period": [3, 5, 8, 10, 13, 20], "slow_period": [15, 20, 30, 45, 60, 90]}  # 36 sets
CHUNK = 3
COUNTS = {"persistence": 1, "trainer": 1, "registry": 1, "backtester": 2, "gateway": 2}
EVALUATED = re.compile(r"evaluated parameter sets \[(\d+), (\d+)\)")
HEADLINE = ("sharpe", "sortino", "calmar", "max_drawdown", "total_return", "total_trades", "win_rate")


@pytest.fixture(scope="module")
def topology(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaTopology]:
    nats = NatsServer()  # its own: the work queue must not be shared with other tests
    nats.start()
    topo = ReplicaTopology(
        pg_admin_url=pg_admin_url,
        nats_url=nats.url,
        workdir=tmp_path_factory.mktemp("sharded"),
        extra_env={
            **LOAD_ENV,
            "ALPHASWARM_OPTIMIZE_CHUNK_SETS": str(CHUNK),
            "ALPHASWARM_OPTIMIZE_CHUNK_CONCURRENCY": "1",
            "ALPHASWARM_WALK_FORWARD_SPLIT_WINDOWS": "2",
            "ALPHASWARM_GATEWAY_PENDING_GRACE_SECONDS": "5",
            "ALPHASWARM_GATEWAY_ACK_WAIT_SECONDS": "5",
        },
        counts=dict(COUNTS),
    )
    try:
        topo.start()
        yield topo
    finally:
        try:
            topo.stop()
        finally:
            nats.destroy()


def _pg(topo: ReplicaTopology) -> str:
    return topo.catalog_url().replace("postgresql+psycopg://", "postgresql://")


def _query(topo: ReplicaTopology, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(_pg(topo)) as conn:
        return conn.execute(sql, args).fetchall()


def _chunk_tasks(topo: ReplicaTopology, parent: str) -> list[tuple[Any, ...]]:
    """(chunk key, state, evaluating gateway, serving backtester) of a job's chunk tasks."""
    return _query(
        topo,
        "SELECT request->>'chunk', state, result->>'evaluated_by', result->>'served_by' FROM tasks "
        "WHERE kind = 'evaluation_chunk' AND request->>'parent_task_id' = %s ORDER BY request->>'chunk'",
        parent,
    )


def _evaluations(topo: ReplicaTopology) -> int:
    return sum(len(EVALUATED.findall(topo.full_log(b))) for b in topo.replicas("backtester"))


def _submit(topo: ReplicaTopology, path: str, doc: dict[str, Any], gateway: str) -> dict[str, Any]:
    resp = httpx.post(
        f"{topo.rest(gateway)}{path}",
        content=yaml.safe_dump(doc).encode(),
        headers={"content-type": "application/yaml", **topo.auth_headers},
        timeout=60,
    )
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def _result(topo: ReplicaTopology, accepted: dict[str, Any]) -> dict[str, Any]:
    events = sse_events(topo.rest_url + accepted["stream_url"], headers=topo.auth_headers)
    assert events[-1]["stage"] == "completed", (events[-1].get("message"), events[-1].get("data"))
    task = httpx.get(f"{topo.rest_url}/tasks/{accepted['task_id']}", headers=topo.auth_headers, timeout=30)
    return dict(task.json()["result"])


def _source(source: dict[str, Any] = SOURCE) -> bpb.PriceSource:
    return bpb.PriceSource(
        dataset_cfg=config_to_proto(DatasetConfig(**source["dataset_cfg"])), symbols=source["symbols"]
    )


def _backtester(topo: ReplicaTopology) -> Any:
    return channel(topo.grpc_addr("backtester-1"), credentials=topo.service_credentials("gateway"))


def _one_process_optimize(topo: ReplicaTopology, doc: dict[str, Any]) -> bpb.OptimizeResponse:
    grid = struct_pb2.Struct()
    grid.update(doc["grid"])
    request = bpb.OptimizeRequest(
        source=_source(doc["source"]),
        strategy_type="sma_cross",
        grid=grid,
        method="grid",
        objective=doc["objective"],
        backtest_cfg=config_to_proto(BacktestConfig(**doc.get("backtest_cfg", {}))),
        persist=False,
    )
    with _backtester(topo) as ch:
        return bpb_grpc.BacktesterServiceStub(ch).Optimize(request, timeout=300)


def _check_optimization(topo: ReplicaTopology, doc: dict[str, Any], result: dict[str, Any]) -> None:
    ref = _one_process_optimize(topo, doc)
    ranked = [t for t in ref.trials if not t.HasField("skipped")]
    assert result["n_trials"] == len(ref.trials)
    assert result["best_params"] == dict(ref.best.params.items())
    best = ref.best.objective_value if ref.best.HasField("objective_value") else None
    assert best is not None and result["best_objective"] == best  # bit for bit
    assert result["p_value"] == (ref.p_value if ref.HasField("p_value") else None)
    rows = _query(
        topo,
        "SELECT parameter_set, rank FROM mcp_optimization_results WHERE backtest_id = %s ORDER BY parameter_set",
        result["backtest_id"],
    )
    assert len(rows) == len(ranked), "one row per evaluated set, none duplicated"
    by_set = {t.parameter_set: t for t in ranked}
    for parameter_set, rank in rows:
        t = by_set[parameter_set]
        assert rank == (t.rank if t.HasField("rank") else None)


def _shared(topo: ReplicaTopology, chunks: list[tuple[Any, ...]]) -> None:
    """Both gateways took chunks and both backtesters evaluated them."""
    gateways = {row[2].split(":")[1] for row in chunks}  # host:pid:suffix -> pid
    pids = {str(topo.processes[g].pid) for g in topo.replicas("gateway")}
    assert gateways <= pids and len(gateways) == 2, f"chunks taken by both gateways: {chunks}"
    assert len({row[3] for row in chunks}) == 2, f"chunks evaluated by both backtesters: {chunks}"


def test_optimization_chunks_are_taken_by_every_gateway_and_backtester(topology: ReplicaTopology) -> None:
    doc = {"source": SOURCE, "strategy_type": "sma_cross", "objective": "sharpe", "grid": GRID}
    before = _evaluations(topology)
    accepted = _submit(topology, "/optimizations", doc, topology.replicas("gateway")[0])
    result = _result(topology, accepted)
    chunks = _chunk_tasks(topology, accepted["task_id"])
    expected = sorted(f"chunk:{lo}-{min(lo + CHUNK, 36)}" for lo in range(0, 36, CHUNK))
    assert [row[0] for row in chunks] == expected and {row[1] for row in chunks} == {"succeeded"}
    assert _evaluations(topology) - before == len(expected), "each chunk evaluated once"
    _shared(topology, chunks)
    _check_optimization(topology, doc, result)


def test_walk_forward_windows_are_chunks_merged_into_the_one_process_test(topology: ReplicaTopology) -> None:
    doc = {
        "source": SOURCE,
        "strategy_type": "sma_cross",
        "objective": "sharpe",
        "grid": GRID,
        "in_sample_bars": 252,
        "out_of_sample_bars": 126,
    }
    accepted = _submit(topology, "/walk-forward-tests", doc, topology.replicas("gateway")[1])
    result = _result(topology, accepted)
    grid = struct_pb2.Struct()
    grid.update(GRID)
    request = bpb.WalkForwardRequest(
        source=_source(),
        strategy_type="sma_cross",
        grid=grid,
        objective="sharpe",
        in_sample_bars=252,
        out_of_sample_bars=126,
        backtest_cfg=config_to_proto(BacktestConfig()),
        persist=False,
    )
    with _backtester(topology) as ch:
        ref = bpb_grpc.BacktesterServiceStub(ch).WalkForward(request, timeout=600)
    chunks = _chunk_tasks(topology, accepted["task_id"])
    assert len(ref.windows) > 4
    assert sorted(row[0] for row in chunks) == sorted(f"window:{i}" for i in range(len(ref.windows)))
    assert {row[1] for row in chunks} == {"succeeded"}
    _shared(topology, chunks)
    assert result["n_windows"] == len(ref.windows)
    values, _, _ = metricset_from_proto(ref.out_of_sample_metrics)
    assert result["out_of_sample"] == {k: values.get(k) for k in HEADLINE if k in values}  # bit for bit
    rows = _query(
        topology,
        "SELECT optimal_parameters, performance_ratio, degradation_factor FROM mcp_walk_forward_tests "
        "WHERE parent_backtest_id = %s ORDER BY test_period_start",
        result["parent_backtest_id"],
    )
    assert len(rows) == len(ref.windows), "one row per window, none duplicated"
    for (params, ratio, degradation), window in zip(rows, ref.windows, strict=True):
        assert params == (struct_to_dict(window.best_params) if window.HasField("best_params") else None)
        for stored, exact, name in (
            (ratio, window.performance_ratio, "performance_ratio"),
            (degradation, window.degradation_factor, "degradation_factor"),
        ):
            if not window.HasField(name):
                assert stored is None
            else:  # stored as numeric(8, 4)
                assert abs(float(stored) - exact) <= 5e-5


def test_killing_the_gateway_holding_the_job_loses_and_duplicates_nothing(topology: ReplicaTopology) -> None:
    grid = {
        "fast_period": [3, 5, 8, 10, 13, 16, 20, 25, 30, 35, 40, 45],
        "slow_period": [50, 60, 70, 80, 90, 100, 120, 150, 180, 200],
    }  # 120 sets, 40 chunks
    source = {
        "dataset_cfg": {"source": "sp500", "start_date": "2004-01-01", "end_date": "2018-12-31"},
        "symbols": ["AAPL", "MSFT", "JPM", "XOM", "KO", "CVX", "AMD", "BAC"],
    }
    doc = {
        "source": source,
        "strategy_type": "sma_cross",
        "objective": "sortino",
        "grid": grid,
        "backtest_cfg": {"min_fee": 1.0},  # run_backtest per set: chunks long enough to be caught in flight
    }
    n_chunks = 120 // CHUNK
    before = _evaluations(topology)
    accepted = _submit(topology, "/optimizations", doc, topology.replicas("gateway")[0])
    parent = accepted["task_id"]
    deadline = time.time() + 300
    holder, succeeded = "", 0
    while time.time() < deadline:
        states = [row[1] for row in _chunk_tasks(topology, parent)]
        owner = _query(topology, "SELECT lease_owner FROM tasks WHERE task_id = %s", parent)[0][0] or ""
        succeeded = states.count("succeeded")
        if succeeded >= 2 and owner:
            holder = next(
                g for g in topology.replicas("gateway") if f":{topology.processes[g].pid}:" in owner
            )
            break
        time.sleep(0.02)
    assert holder, "the job's chunks never got under way"
    topology.kill(holder)  # the job's worker, the chunks it was evaluating and any it had yet to create
    pid = f":{topology.processes[holder].pid}:"
    in_flight = [
        row
        for row in _query(
            topology,
            "SELECT lease_owner FROM tasks WHERE kind = 'evaluation_chunk' AND state = 'running' "
            "AND request->>'parent_task_id' = %s",
            parent,
        )
        if pid in (row[0] or "")
    ]
    try:
        assert succeeded < n_chunks, "the job finished before the kill; make the chunks longer"
        result = _result(topology, accepted)
        chunks = _chunk_tasks(topology, parent)
        assert len(chunks) == n_chunks, "one chunk task per chunk key, none created twice"
        assert {row[1] for row in chunks} == {"succeeded"}
        (attempts,) = _query(topology, "SELECT attempts FROM tasks WHERE task_id = %s", parent)[0]
        assert attempts >= 2, "the job was taken over by another attempt"
        # Recorded chunks are not evaluated again: only the chunks the killed gateway had in flight repeat.
        evaluated = _evaluations(topology) - before
        assert n_chunks <= evaluated <= n_chunks + len(in_flight), (evaluated, in_flight)
        _check_optimization(topology, doc, result)
    finally:
        topology.launch(holder)
