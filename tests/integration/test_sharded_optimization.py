"""A large optimization split into chunks over two backtester processes behind one gateway.

The topology of deploy/docker-compose.yml as processes, plus a second backtester;
the gateway's backtester target names both (`ipv4:` with two addresses, balanced
round robin). An optimization over more sets than `optimize_chunk_sets` is
evaluated chunk by chunk by both backtesters (counted from their logs), merged,
and stored: its ranks, p-values and best set equal the one-process search (the
backtester's own `Optimize`, unsplit), and its catalog rows are one per set.
A gateway killed while chunks are in flight loses nothing: the next attempt
restores the recorded chunks, and no row is duplicated.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest
import yaml
from google.protobuf import struct_pb2

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm_common.config import BacktestConfig, DatasetConfig
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.protoconv import config_to_proto
from tests.e2e.conftest import sse_events
from tests.integration.topology import Topology, free_port, require_nats

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")
SOURCE = {
    "dataset_cfg": {"source": "sp500", "start_date": "2012-01-01", "end_date": "2018-12-31"},
    "symbols": ["AAPL"],
}
GRID = {"fast_period": [3, 5, 8, 10, 13, 20], "slow_period": [15, 20, 30, 45, 60, 90]}  # 36 sets
CHUNK = 4
BACKTESTERS = ("backtester", "backtester2")
EVALUATED = re.compile(r"evaluated parameter sets \[(\d+), (\d+)\)")


@pytest.fixture(scope="module")
def topology(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    require_nats(NATS_URL)
    topo = Topology(
        pg_admin_url=pg_admin_url,
        nats_url=NATS_URL,
        workdir=tmp_path_factory.mktemp("sharded"),
        extra_env={
            "ALPHASWARM_OPTIMIZE_CHUNK_SETS": str(CHUNK),
            "ALPHASWARM_OPTIMIZE_CHUNK_CONCURRENCY": "2",
            "ALPHASWARM_GATEWAY_LEASE_SECONDS": "4",
            "ALPHASWARM_GATEWAY_HEARTBEAT_SECONDS": "1",
            "ALPHASWARM_GATEWAY_REAPER_SECONDS": "1",
            "ALPHASWARM_GATEWAY_ACK_WAIT_SECONDS": "5",
        },
    )
    try:
        topo.start()
        topo.specs["backtester2"] = topo.specs["backtester"]
        topo.ports["backtester2"] = free_port()
        topo.metrics_ports["backtester2"] = free_port()  # each replica has its own metrics port
        topo.launch("backtester2")
        both = ",".join(topo.grpc_addr(name) for name in BACKTESTERS)
        # A multi-address target has no host name of its own: the peers' certificates are checked
        # against a name every service certificate carries.
        topo.restart(
            "gateway",
            env={"ALPHASWARM_BACKTESTER_ADDR": f"ipv4:{both}", "ALPHASWARM_TLS_SERVER_NAME": "localhost"},
        )
        yield topo
    finally:
        topo.stop()


def _chunks_served(topo: Topology) -> dict[str, list[tuple[int, int]]]:
    out = {}
    for name in BACKTESTERS:
        text = (topo.workdir / f"{name}.log").read_text(errors="replace")
        out[name] = [(int(a), int(b)) for a, b in EVALUATED.findall(text)]
    return out


def _submit(topo: Topology, doc: dict) -> dict:
    resp = httpx.post(
        f"{topo.rest_url}/optimizations",
        content=yaml.safe_dump(doc).encode(),
        headers={"content-type": "application/yaml", **topo.auth_headers},
        timeout=60,
    )
    assert resp.status_code == 202, resp.text
    return resp.json()


def _result(topo: Topology, accepted: dict) -> dict:
    events = sse_events(topo.rest_url + accepted["stream_url"], headers=topo.auth_headers)
    assert events[-1]["stage"] == "completed", events[-1]
    task = httpx.get(f"{topo.rest_url}/tasks/{accepted['task_id']}", headers=topo.auth_headers, timeout=30)
    return dict(task.json()["result"])


def _one_process(topo: Topology, seed_doc: dict) -> bpb.OptimizeResponse:
    grid = struct_pb2.Struct()
    grid.update(seed_doc["grid"])
    request = bpb.OptimizeRequest(
        source=bpb.PriceSource(
            dataset_cfg=config_to_proto(DatasetConfig(**SOURCE["dataset_cfg"])), symbols=SOURCE["symbols"]
        ),
        strategy_type="sma_cross",
        grid=grid,
        method="grid",
        objective=seed_doc["objective"],
        backtest_cfg=config_to_proto(BacktestConfig(**seed_doc.get("backtest_cfg", {}))),
        persist=False,
    )
    with channel(topo.grpc_addr("backtester"), credentials=topo.service_credentials("gateway")) as ch:
        return bpb_grpc.BacktesterServiceStub(ch).Optimize(request, timeout=300)


def _rows(topo: Topology, backtest_id: str) -> list[tuple]:
    url = topo.catalog_url().replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT parameter_set, rank, p_value, objective_value FROM mcp_optimization_results "
            "WHERE backtest_id = %s ORDER BY parameter_set",
            (backtest_id,),
        ).fetchall()


def _check_against_one_process(topo: Topology, doc: dict, result: dict) -> None:
    ref = _one_process(topo, doc)
    ranked = [t for t in ref.trials if not t.HasField("skipped")]
    assert result["n_trials"] == len(ref.trials)
    assert result["best_params"] == {k: v for k, v in ref.best.params.items()}
    assert result["best_objective"] == ref.best.objective_value  # bit for bit
    assert result["p_value"] == ref.p_value
    rows = _rows(topo, result["backtest_id"])
    assert len(rows) == len(ranked), "one row per evaluated set, none duplicated"
    by_set = {t.parameter_set: t for t in ranked}
    for parameter_set, rank, _p, _obj in rows:
        t = by_set[parameter_set]
        assert rank == (t.rank if t.HasField("rank") else None)


def test_chunks_run_on_every_backtester_and_merge_to_the_one_process_result(topology: Topology) -> None:
    before = _chunks_served(topology)
    doc = {"source": SOURCE, "strategy_type": "sma_cross", "objective": "sharpe", "grid": GRID}
    result = _result(topology, _submit(topology, doc))
    after = _chunks_served(topology)
    served = {name: after[name][len(before[name]) :] for name in BACKTESTERS}
    assert all(served[name] for name in BACKTESTERS), f"every backtester serves chunks: {served}"
    chunks = sorted(c for name in BACKTESTERS for c in served[name])
    assert chunks == [(lo, min(lo + CHUNK, 36)) for lo in range(0, 36, CHUNK)], "each chunk evaluated once"
    _check_against_one_process(topology, doc, result)


def test_a_gateway_killed_mid_chunks_loses_nothing_and_duplicates_no_row(topology: Topology) -> None:
    grid = {**GRID, "fast_period": [*GRID["fast_period"], 25, 30]}  # 48 sets, 12 chunks
    doc = {"source": SOURCE, "strategy_type": "sma_cross", "objective": "sortino", "grid": grid}
    before = sum(len(v) for v in _chunks_served(topology).values())
    accepted = _submit(topology, doc)
    deadline = time.time() + 120
    log = topology.workdir / "gateway.log"
    recorded_before = log.read_text(errors="replace").count("evaluated by")
    while (
        time.time() < deadline and log.read_text(errors="replace").count("evaluated by") < recorded_before + 2
    ):
        time.sleep(0.02)
    topology.kill("gateway")  # two chunks or more are recorded; others are in flight
    topology.launch("gateway")
    result = _result(topology, accepted)
    restored = re.findall(r"optimization: (\d+) chunk\(s\) restored", log.read_text(errors="replace"))
    assert restored and int(restored[-1]) >= 2, "the next attempt restores the recorded chunks"
    evaluated = sum(len(v) for v in _chunks_served(topology).values()) - before
    # Recorded chunks are restored, not evaluated again: at most the ones in flight at the kill repeat.
    assert 12 <= evaluated <= 12 + 2 * 2
    _check_against_one_process(topology, doc, result)


def test_a_backtester_killed_mid_chunks_leaves_the_job_to_the_other_one(topology: Topology) -> None:
    """Outside the batch kernel (a minimum fee: run_backtest per set) chunks take long enough to
    kill a replica while some are in flight; the survivor evaluates the rest."""
    grid = {"fast_period": [3, 5, 8, 10, 13, 20, 25, 30], "slow_period": [15, 20, 30, 45, 60, 90]}  # 48 sets
    doc = {
        "source": SOURCE,
        "strategy_type": "sma_cross",
        "objective": "calmar",
        "grid": grid,
        "backtest_cfg": {"min_fee": 1.0},
    }
    log = topology.workdir / "gateway.log"
    recorded_before = log.read_text(errors="replace").count("evaluated by")
    served_before = len(_chunks_served(topology)["backtester2"])
    accepted = _submit(topology, doc)
    deadline = time.time() + 120
    while time.time() < deadline and (
        log.read_text(errors="replace").count("evaluated by") < recorded_before + 2
        or len(_chunks_served(topology)["backtester2"]) <= served_before
    ):
        time.sleep(0.02)
    topology.kill("backtester2")
    try:
        result = _result(topology, accepted)
        _check_against_one_process(topology, doc, result)
    finally:
        topology.launch("backtester2")
