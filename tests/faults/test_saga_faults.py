"""What the saga does with jobs it cannot run, calls past their deadline and cancellation.

Contract:
* a message on the work queue that no worker can run (not JSON) is moved to the dead-letter
  subject `alphaswarm.dlq.<kind>` instead of being redelivered forever or dropped; one that
  names a run whose stored config cannot be read ends that run FAILED with a terminal event;
  the queue keeps serving the runs behind them.
* a call past its deadline (`ALPHASWARM_DEADLINE_TRAIN_SECONDS` shortened) ends the run FAILED
  with code DEADLINE_EXCEEDED at `training`, and the service that was still computing saves
  nothing afterwards: no `train` run FINISHED under the run's MLflow parent, no model version.
* `POST /ml/alpha-backtest-runs/{id}:cancel` during `training` ends the run CANCELLED, its
  stream with a `cancelled` terminal event, its MLflow parent KILLED, and nothing of the
  cancelled run is registered afterwards; `POST /tasks/{id}:cancel` does the same for a
  backtester job (no result saved after the cancel).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from tests.faults.cluster import (
    BUDGETED_MODEL,
    FAST_BACKTEST_JOB,
    SECONDS_MODEL,
    Cluster,
    NatsTap,
    assert_stream_complete,
    fast_run,
    wait_idle,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BOUND = 120.0


def test_unreadable_message_goes_to_the_dead_letter_subject(
    healthy: Cluster, record: Callable[..., None]
) -> None:
    marker = uuid.uuid4().hex.encode()
    poison = b"\xff this is not a job " + marker
    with NatsTap(healthy.nats.url, "alphaswarm.dlq.>") as tap:
        t0 = time.monotonic()
        tap.publish("alphaswarm.jobs.alpha_backtest", poison)
        got = tap.wait(lambda s, d: s == "alphaswarm.dlq.alpha_backtest" and marker in d, BOUND)
    seconds = time.monotonic() - t0
    record(
        "poison message (not JSON) on alphaswarm.jobs.alpha_backtest",
        "on alphaswarm.dlq.alpha_backtest" if got else f"not on the DLQ after {BOUND:.0f}s",
        seconds if got else None,
    )
    assert got is not None, (
        f"the poison message never reached alphaswarm.dlq.alpha_backtest\n{healthy.log('gateway')}"
    )
    healthy.run_completes(record, "run submitted after a poison message")  # the queue is not blocked


def test_message_naming_an_unreadable_run_fails_that_run(
    healthy: Cluster, record: Callable[..., None]
) -> None:
    catalog = healthy.catalog()
    run_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    # A run row whose stored config this version cannot read.
    catalog.execute(
        "INSERT INTO tasks (task_id, kind, state, stage, pct, created_at, updated_at) "
        "VALUES (%s, 'alpha_backtest', 'pending', 'accepted', 0, now(), now())",
        task_id,
    )
    catalog.execute(
        "INSERT INTO ml_alpha_backtest_runs (run_id, task_id, run_name, state, stage, config, "
        "predictions_captured, created_at, updated_at) VALUES "
        "(%s, %s, 'poison', 'pending', 'accepted', %s, false, now(), now())",
        run_id,
        task_id,
        json.dumps({"dataset_cfg": 7, "model_cfg": "ridge"}),
    )
    with NatsTap(healthy.nats.url, "alphaswarm.dlq.>") as tap:
        t0 = time.monotonic()
        tap.publish(
            "alphaswarm.jobs.alpha_backtest", json.dumps({"run_id": run_id, "task_id": task_id}).encode()
        )
        deadline = time.monotonic() + BOUND
        state = "pending"
        while time.monotonic() < deadline:
            state = catalog.scalar("SELECT state FROM ml_alpha_backtest_runs WHERE run_id = %s", run_id)
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        dead = [s for s, d in tap.messages if run_id.encode() in d]
    record(
        "message naming a run whose config cannot be read",
        f"run {state}" + ("; on the DLQ" if dead else ""),
        seconds if state == "failed" else None,
    )
    assert state == "failed", f"the run is {state}\n{healthy.log('gateway')}"
    assert_stream_complete(healthy.stream({"stream_url": f"/chat/stream/{task_id}"}), "failed")


def test_call_past_its_deadline_fails_and_saves_nothing_afterwards(
    healthy: Cluster, record: Callable[..., None]
) -> None:
    healthy.restart("gateway", env={"ALPHASWARM_DEADLINE_TRAIN_SECONDS": "2"})
    accepted = healthy.start_run(fast_run(run_name="deadline", model_cfg=BUDGETED_MODEL))
    t0 = time.monotonic()
    run = healthy.conclude(
        accepted,
        fault="train call past a 2 s deadline",
        record=record,
        since=t0,
        timeout=BOUND,
        status="failed",
        code="DEADLINE_EXCEEDED",
        stage="training",
    )
    wait_idle(healthy, "trainer")  # whatever the trainer was still doing is over
    mlflow = healthy.mlflow()
    children = mlflow.children_of(run["links"]["mlflow_parent_run_id"])
    assert not [c.info.run_id for c in children if c.info.status == "FINISHED"], (
        "the trainer saved a finished train run after its caller's deadline"
    )
    assert not mlflow.versions_of(run["run_id"], "faults-ridge")
    assert not mlflow.running(run["task_id"])


def test_cancel_a_run_during_training(healthy: Cluster, record: Callable[..., None]) -> None:
    accepted = healthy.start_run(fast_run(run_name="cancel", model_cfg=SECONDS_MODEL))
    watcher = healthy.watch(accepted)
    try:
        watcher.wait_for("training", "started")
        t0 = time.monotonic()
        resp = healthy.post(f"/ml/alpha-backtest-runs/{accepted['run_id']}:cancel", timeout=30)
    finally:
        watcher.close()
    if resp.status_code not in (200, 202):
        record("cancel during training", f"cancel answered {resp.status_code}", None)
    assert resp.status_code in (200, 202), resp.text
    run = healthy.conclude(
        accepted,
        fault="cancel during training",
        record=record,
        since=t0,
        timeout=BOUND,
        status="cancelled",
    )
    wait_idle(healthy, "trainer")
    assert not healthy.mlflow().versions_of(run["run_id"], "faults-ridge")
    assert healthy.get_json(f"/ml/alpha-backtest-runs/{run['run_id']}")["status"] == "cancelled"  # type: ignore[index]


def test_cancel_a_backtester_job(healthy: Cluster, record: Callable[..., None]) -> None:
    resp = healthy.post("/backtests", json=FAST_BACKTEST_JOB, timeout=60)
    assert resp.status_code == 202, resp.text
    task = resp.json()
    healthy.topo.freeze("backtester")  # the job's call waits on it
    watcher = healthy.watch(task)
    try:
        watcher.wait_for("backtest", "started")
        t0 = time.monotonic()
        cancel = healthy.post(f"/tasks/{task['task_id']}:cancel", timeout=30)
    finally:
        watcher.close()
        healthy.topo.thaw("backtester")
    fault = "cancel a backtester job in flight"
    if cancel.status_code not in (200, 202):
        record(fault, f"cancel answered {cancel.status_code}", None)
    assert cancel.status_code in (200, 202), cancel.text

    def saved() -> int:
        wait_idle(healthy, "backtester")  # whatever the backtester was still doing is over
        return healthy.catalog().saved_by_job(task["task_id"])

    healthy.conclude_task(
        task, fault=fault, record=record, since=t0, timeout=BOUND, status="cancelled", duplicated=saved
    )
    assert saved() == 0, "the cancelled job saved its backtest"
