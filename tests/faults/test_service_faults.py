"""kill -9 of each service while a run's call to it is in flight.

To hit the call and not the gap between two calls, the service is frozen (SIGSTOP) before the
saga reaches it, so the call waits on an open socket; once the stage's `started` event is out
the process is killed with -9 and started again on the same port a few seconds later.

Contract:
* trainer, registry, backtester, persistence: the call in flight is lost with its process
  (UNAVAILABLE, a transient error); the saga runs the stage again with backoff and, the
  service being back within seconds, the run SUCCEEDS with exactly one model version, one
  deployment and one backtest row, and no MLflow run left RUNNING (a `train` run the killed
  trainer had opened is ended by the saga's compensation).
* gateway: the run's lease expires and a new gateway resumes it from the last completed stage;
  the run SUCCEEDS with exactly one model version, one deployment and one backtest, and its
  stream continues the same seqs to `completed`.
* a backtester job whose backtester dies is run again once it is back, and one whose gateway
  dies is resumed by the next gateway: both SUCCEED with one saved backtest.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.faults.cluster import FAST_BACKTEST_JOB, Cluster

pytestmark = [pytest.mark.faults, pytest.mark.integration]

RESTART_AFTER = 3.0  # seconds a killed service stays down
BOUND = 90.0  # seconds a run may take to reach its terminal state after a fault


# (service, the event after which it is frozen (None: at once), the event after which it is
# killed (None: a second after freezing), the stage whose call is cut)
CUTS = [
    ("trainer", None, ("training", "started"), "training"),
    ("registry", ("training", "started"), ("registering", "started"), "registering"),
    ("backtester", ("predicting", "started"), ("backtesting", "started"), "backtesting"),
    # The saga's own write entering `backtesting` waits on the frozen persistence service.
    ("persistence", ("predicting", "done"), None, "the step after predicting"),
]


@pytest.mark.parametrize(("service", "freeze_after", "kill_after", "stage"), CUTS, ids=[c[0] for c in CUTS])
def test_kill_service_mid_call_and_restart_completes_run(
    healthy: Cluster,
    record: Callable[..., None],
    service: str,
    freeze_after: tuple[str, str] | None,
    kill_after: tuple[str, str] | None,
    stage: str,
) -> None:
    accepted = healthy.start_run()
    watcher = healthy.watch(accepted)
    try:
        if freeze_after is not None:
            watcher.wait_for(*freeze_after)
        healthy.topo.freeze(service)
        if kill_after is not None:
            watcher.wait_for(*kill_after)
        time.sleep(0.5 if kill_after else 1.0)  # the call waits on the frozen service's socket
        t0 = time.monotonic()
        healthy.kill(service)
        time.sleep(RESTART_AFTER)
        healthy.restart(service)
    finally:
        watcher.close()
    healthy.conclude(
        accepted,
        fault=f"kill -9 {service} during {stage}, restarted after {RESTART_AFTER:.0f}s",
        record=record,
        since=t0,
        timeout=BOUND,
        status="succeeded",
    )


def test_kill_gateway_mid_run_resumes_on_a_new_gateway(healthy: Cluster, record: Callable[..., None]) -> None:
    accepted = healthy.start_run()
    watcher = healthy.watch(accepted)
    try:
        # After registering and deploying: a run started again from scratch would make a second
        # model version and deployment, which the checks below catch.
        watcher.wait_for("predicting", "started")
        t0 = time.monotonic()
        healthy.kill("gateway")
        healthy.restart("gateway")
    finally:
        watcher.close()
    run = healthy.conclude(
        accepted,
        fault="kill -9 gateway during predicting, new gateway started",
        record=record,
        since=t0,
        timeout=BOUND,
        status="succeeded",
    )
    parents = healthy.mlflow().client.search_runs(
        [healthy.mlflow().client.get_run(run["links"]["mlflow_parent_run_id"]).info.experiment_id],
        filter_string=f"tags.`alphaswarm.run_id` = '{run['run_id']}'",
    )
    assert all(p.info.status != "RUNNING" for p in parents)


def _submit_job(cluster: Cluster, doc: dict) -> dict:
    resp = cluster.post("/backtests", json=doc, timeout=60)
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def test_kill_backtester_during_a_job_and_restart_completes_it(
    healthy: Cluster, record: Callable[..., None]
) -> None:
    task = _submit_job(healthy, FAST_BACKTEST_JOB)
    healthy.topo.freeze("backtester")  # accepted: the job's RunStrategyBacktest will wait on it
    watcher = healthy.watch(task)
    try:
        watcher.wait_for("backtest", "started")
        time.sleep(0.5)
        t0 = time.monotonic()
        healthy.kill("backtester")
        time.sleep(RESTART_AFTER)
        healthy.restart("backtester")
    finally:
        watcher.close()
    done = healthy.conclude_task(
        task,
        fault="kill -9 backtester during a backtest job",
        record=record,
        since=t0,
        timeout=BOUND,
        status="succeeded",
    )
    assert (done.get("result") or {}).get("backtest_id")


def test_kill_gateway_during_a_job_resumes_it(healthy: Cluster, record: Callable[..., None]) -> None:
    task = _submit_job(healthy, FAST_BACKTEST_JOB)
    healthy.topo.freeze("backtester")
    watcher = healthy.watch(task)
    try:
        watcher.wait_for("backtest", "started")
        t0 = time.monotonic()
        healthy.kill("gateway")
        healthy.topo.thaw("backtester")
        healthy.restart("gateway")
    finally:
        watcher.close()
    saved = healthy.catalog().saved_by_job
    done = healthy.conclude_task(
        task,
        fault="kill -9 gateway during a backtest job, new gateway started",
        record=record,
        since=t0,
        timeout=BOUND,
        status="succeeded",
        duplicated=lambda: max(0, saved(task["task_id"]) - 1),
    )
    assert (done.get("result") or {}).get("backtest_id") and saved(task["task_id"]) == 1
