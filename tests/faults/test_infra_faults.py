"""PostgreSQL and NATS stopped under a run and started again (same port, same data).

Contract:
* PostgreSQL stopped during `training` and back a few seconds later: the services reconnect
  (the catalog's and MLflow's connection pools drop the dead connections, MLflow's client
  retries), the run SUCCEEDS with one row of each kind.
* NATS down at submission: the gateway cannot queue the run, so it answers 503 and leaves
  nothing PENDING (the run, if its row was written, is FAILED at `accepted`); the same for a
  backtester job. Once NATS is back, runs are accepted and complete again.
* NATS stopped during `training` and back a few seconds later: the run SUCCEEDS and its
  stream is complete (events published while NATS was down are not lost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.cluster import FAST_BACKTEST_JOB, Cluster, fast_run

pytestmark = [pytest.mark.faults, pytest.mark.integration]

DOWN_FOR = 5.0
BOUND = 120.0


@pytest.mark.parametrize("infra", ["PostgreSQL", "NATS"])
def test_infrastructure_restarted_during_training(
    healthy: Cluster, record: Callable[..., None], infra: str
) -> None:
    server = healthy.pg if infra == "PostgreSQL" else healthy.nats
    accepted = healthy.start_run()
    watcher = healthy.watch(accepted)
    try:
        watcher.wait_for("training", "started")
        t0 = time.monotonic()
        server.stop()
        time.sleep(DOWN_FOR)
        server.start()
    finally:
        watcher.close()
    healthy.conclude(
        accepted,
        fault=f"{infra} stopped during training for {DOWN_FOR:.0f}s",
        record=record,
        since=t0,
        timeout=BOUND,
        status="succeeded",
    )


def test_nats_down_at_submission_answers_503_and_leaves_nothing_pending(
    healthy: Cluster, record: Callable[..., None]
) -> None:
    catalog = healthy.catalog()
    healthy.nats.stop()
    try:
        t0 = time.monotonic()
        resp = healthy.submit(fast_run(run_name="nats-down"))
        seconds = time.monotonic() - t0
        job = healthy.post("/backtests", json=FAST_BACKTEST_JOB, timeout=60)
        pending_runs = catalog.count_runs("pending")
        pending_tasks = catalog.count_tasks("pending")
    finally:
        healthy.nats.start()
    record(
        "NATS down at submission",
        f"run {resp.status_code}, job {job.status_code}; {pending_runs} runs and {pending_tasks} tasks PENDING",
        seconds,
        lost=pending_runs + pending_tasks,
    )
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] in ("UNAVAILABLE", "DEPENDENCY_UNAVAILABLE"), resp.text
    assert job.status_code == 503, job.text
    assert pending_runs == 0 and pending_tasks == 0
    assert healthy.wait_ready(), "the gateway is not ready after NATS came back"
    healthy.run_completes(record, "run submitted after NATS came back", timeout=BOUND)
