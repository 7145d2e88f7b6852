"""Long gRPC calls between separate processes are not cut by keepalive.

The gateway reaches the trainer through `H2Tap`, a TCP proxy that watches the (TLS)
connection: it shows the keepalive PINGs that flow while a Train call is running (small
records both ways) and whether the trainer closes the connection during the call (it does,
after GOAWAY `too_many_pings`, when its minimum ping interval is longer than the client's
keepalive time).

* With the keepalive shortened through the environment (`ALPHASWARM_GRPC_KEEPALIVE_SECONDS`,
  `ALPHASWARM_GRPC_MIN_PING_SECONDS`), a Train call lasting several keepalive periods runs in
  seconds: keepalive pings flow during the call (from either end: a ping received resets the
  other end's timer) and the trainer never sends GOAWAY.
* With the product's defaults, a real `training` stage longer than five minutes (marked
  `slow`) completes: the same check at production scale.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import sse_events
from tests.faults.cluster import SECONDS_MODEL, NatsServer, fast_run
from tests.integration.h2tap import H2Tap
from tests.integration.topology import Topology, require_nats

pytestmark = [pytest.mark.integration]
NATS_URL = os.environ.get("ALPHASWARM_TEST_NATS_URL", "nats://127.0.0.1:4222")

KEEPALIVE = {"ALPHASWARM_GRPC_KEEPALIVE_SECONDS": "1", "ALPHASWARM_GRPC_MIN_PING_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def tapped(pg_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, H2Tap]]:
    # A NATS server of the module's own when one can be started: the job queue's durable
    # consumer is shared by every gateway on a server, so a shared one would hand this
    # gateway's jobs to others.
    nats = NatsServer() if shutil.which("nats-server") else None
    if nats is None:
        require_nats(NATS_URL)
    else:
        nats.start()
    topo = Topology(
        pg_admin_url=pg_admin_url,
        nats_url=nats.url if nats else NATS_URL,
        workdir=tmp_path_factory.mktemp("long-calls"),
    )
    tap = H2Tap(lambda: ("127.0.0.1", topo.ports["trainer"]))
    topo.service_env["gateway"] = {"ALPHASWARM_TRAINER_ADDR": tap.address}
    try:
        topo.start()
        yield topo, tap
    finally:
        topo.stop()
        tap.close()
        if nats is not None:
            nats.destroy()


def _run(topo: Topology, doc: dict[str, Any], timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    resp = httpx.post(
        f"{topo.rest_url}/ml/alpha-backtest-runs", json=doc, headers=topo.auth_headers, timeout=60
    )
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    events = sse_events(topo.rest_url + accepted["stream_url"], headers=topo.auth_headers, timeout=timeout)
    run = httpx.get(
        f"{topo.rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}", headers=topo.auth_headers, timeout=30
    ).json()
    return run, events


def _training_window(events: list[dict[str, Any]]) -> tuple[float, float]:
    """Epoch seconds of the start and end of the training stage, from its events."""
    ts = {
        (e["stage"], e["status"]): dt.datetime.fromisoformat(e["ts"]).timestamp()
        for e in events
        if e["stage"] == "training"
    }
    return ts[("training", "started")], ts[("training", "done")]


def test_call_over_several_keepalive_periods_is_not_cut(tapped: tuple[Topology, H2Tap]) -> None:
    topo, tap = tapped
    for name in ("trainer", "gateway"):
        topo.restart(name, env={**topo.service_env.get(name, {}), **KEEPALIVE})
    try:
        run, events = _run(topo, fast_run(run_name="keepalive", model_cfg=SECONDS_MODEL), timeout=300)
        assert run["status"] == "succeeded", (run["error"], topo.log("gateway")[-3000:])
        start, end = _training_window(events)
        # Either end may ping: a ping received also counts as activity for the other end's timer.
        pings = tap.client.small_reads(start, end) + tap.server.small_reads(start, end)
        periods = (end - start) / float(KEEPALIVE["ALPHASWARM_GRPC_KEEPALIVE_SECONDS"])
        assert periods >= 3, f"the training call lasted {end - start:.1f}s: too short to test keepalive"
        assert pings >= 2, (
            f"{pings} keepalive pings during a {end - start:.1f}s call with a 1s keepalive time: "
            "the keepalive settings are not applied"
        )
        assert tap.server.closed_between(start, end) == [], (
            f"the trainer closed the connection during the call ({start:.1f}..{end:.1f}): GOAWAY too_many_pings"
        )
    finally:
        for name in ("trainer", "gateway"):
            env = {k: v for k, v in topo.service_env.get(name, {}).items() if k not in KEEPALIVE}
            topo.restart(name, env=env)


@pytest.mark.slow
@pytest.mark.long_stage
@pytest.mark.timeout(1800)
def test_training_stage_longer_than_five_minutes(tapped: tuple[Topology, H2Tap]) -> None:
    """A network given more epochs than it can train, stopped by its time budget: the
    `training` stage lasts longer than five minutes whatever the machine's load."""
    topo, tap = tapped
    doc = fast_run(run_name="five-minutes")
    doc["model_cfg"] = {
        "type": "mlp",
        "name": "five-minutes",
        "params": {
            "hidden_layer_sizes": [32, 16],
            "max_iter": 10_000_000,
            "early_stopping": False,
            "tol": 0.0,
            "n_iter_no_change": 10_000_000,
        },
        "time_budget_seconds": STAGE_SECONDS,
    }
    run, events = _run(topo, doc, timeout=1500)
    assert run["status"] == "succeeded", (run["error"], topo.log("gateway")[-3000:])
    start, end = _training_window(events)
    print(f"training stage: {end - start:.0f}s")  # shown with -s / -rP
    assert end - start > 300, f"the training stage lasted {end - start:.0f}s"
    # A connection past its maximum age (`grpc_max_connection_age_seconds`, no grace limit) is
    # closed once its calls drain, which is the end of this call: only an earlier close cut it.
    cut = [t for t in tap.server.closed_between(start, end) if t < end - 5.0]
    assert cut == [], f"the trainer closed the connection during the call at {cut} ({start:.0f}..{end:.0f})"
    running = [e for e in events if e["stage"] == "training" and e["status"] == "running"]
    assert len(running) >= 10, "progress did not move within the five-minute stage"


STAGE_SECONDS = 310  # the fit's budget: with features and evaluation, the stage passes 300 s
