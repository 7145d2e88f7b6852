"""Oversized bodies while a run is in flight, and twenty concurrent runs with faults interleaved.

Contract:
* a 20 MB JSON body and a 9 MB YAML body (over `ALPHASWARM_MAX_BODY_BYTES`, 8 MiB in the
  suite) are answered 413 without being parsed; `/healthz` keeps answering while they are
  received; the run in flight is not disturbed (it SUCCEEDS in one attempt: one MLflow parent
  run carries its id).
* twenty runs submitted at once, with the backtester killed -9 (and restarted) and the
  gateway killed -9 (and replaced) while they run: every run SUCCEEDS (cut calls are run
  again, the runs of the dead gateway are resumed), each with a complete stream and no
  duplicate or orphan rows; nothing is left PENDING or RUNNING.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import yaml

from tests.faults.cluster import SECONDS_MODEL, Cluster, assert_stream_complete, fast_run

pytestmark = [pytest.mark.faults, pytest.mark.integration]

BOUND = 120.0


class HealthProbe:
    """GET /healthz in a loop on a thread; the answers it got."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.answers.append(httpx.get(self.url, timeout=5).status_code)
            except httpx.HTTPError as exc:
                self.answers.append(type(exc).__name__)
            self._stop.wait(0.2)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_oversized_bodies_during_a_run(healthy: Cluster, record: Callable[..., None]) -> None:
    accepted = healthy.start_run(fast_run(run_name="in-flight", model_cfg=SECONDS_MODEL))
    watcher = healthy.watch(accepted)
    try:
        watcher.wait_for("training", "started")
    finally:
        watcher.close()
    big_json = ('{"run_name": "' + "x" * (20 * 1024 * 1024) + '"}').encode()
    doc = fast_run(run_name="yaml-bomb")
    doc["notes"] = ["y" * 1000] * (9 * 1024)  # about 9 MB of YAML
    big_yaml = yaml.safe_dump(doc).encode()
    assert len(big_yaml) > 9_000_000
    url = "/ml/alpha-backtest-runs"
    with HealthProbe(f"{healthy.rest_url}/healthz") as probe:
        t0 = time.monotonic()
        as_json = healthy.post(
            url, content=big_json, headers={"content-type": "application/json"}, timeout=60
        )
        as_yaml = healthy.post(
            url, content=big_yaml, headers={"content-type": "application/x-yaml"}, timeout=60
        )
        time.sleep(0.5)
    seconds = time.monotonic() - t0
    bad_health = [a for a in probe.answers if a != 200]
    run = healthy.get_json(f"/ml/alpha-backtest-runs/{accepted['run_id']}")
    record(
        "20 MB JSON and 9 MB YAML bodies during a run",
        f"{as_json.status_code} / {as_yaml.status_code}; /healthz {len(probe.answers) - len(bad_health)}"
        f"/{len(probe.answers)} ok",
        seconds,
    )
    assert as_json.status_code == 413, as_json.text[:500]
    assert as_yaml.status_code == 413, as_yaml.text[:500]
    assert probe.answers and not bad_health, probe.answers
    assert run is not None
    run = healthy.conclude(
        accepted,
        fault="run in flight while oversized bodies were posted",
        record=record,
        since=time.monotonic(),
        timeout=BOUND,
        status="succeeded",
    )
    mlflow = healthy.mlflow()
    experiment = mlflow.client.get_run(run["links"]["mlflow_parent_run_id"]).info.experiment_id
    attempts = mlflow.client.search_runs(
        [experiment], filter_string=f"tags.`alphaswarm.run_id` = '{run['run_id']}'"
    )
    assert len(attempts) == 1, f"{len(attempts)} attempts of the run in flight"


N_RUNS = 20


def test_twenty_concurrent_runs_with_faults(healthy: Cluster, record: Callable[..., None]) -> None:
    def submit(i: int) -> dict[str, Any]:
        return healthy.start_run(fast_run(run_name=f"concurrent-{i}"))

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = list(pool.map(submit, range(N_RUNS)))
    # Faults while the runs are being worked through.
    time.sleep(2)
    healthy.kill("backtester")
    time.sleep(2)
    healthy.restart("backtester")
    time.sleep(2)
    healthy.kill("gateway")
    healthy.restart("gateway")

    runs: list[dict[str, Any]] = []
    deadline = t0 + 4 * BOUND
    fault = f"{N_RUNS} concurrent runs; kill -9 backtester, then gateway"
    for acc in accepted:
        try:
            run, _ = healthy.wait_run(acc["run_id"], timeout=max(1.0, deadline - time.monotonic()))
        except AssertionError:
            record(fault, f"{len(runs)} of {N_RUNS} terminal after {4 * BOUND:.0f}s", None)
            raise
        runs.append(run)
    seconds = time.monotonic() - t0
    lost = dup = 0
    problems: list[str] = []
    catalog, mlflow = healthy.catalog(), healthy.mlflow()
    for acc, run in zip(accepted, runs, strict=True):
        n_lost, n_dup = healthy.tally(run)
        lost, dup = lost + n_lost, dup + n_dup
        error = run.get("error") or {}
        if run["status"] != "succeeded":
            problems.append(f"{run['run_id']}: {run['status']} {error}")
        try:
            assert_stream_complete(healthy.stream(acc), run["status"])
        except AssertionError as exc:
            problems.append(f"{run['run_id']}: {exc}")
        problems += catalog.problems(run) + mlflow.problems(run)
    counts = {s: sum(r["status"] == s for r in runs) for s in ("succeeded", "failed", "cancelled")}
    record(
        fault,
        ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + (f"; {len(problems)} problems" if problems else ""),
        seconds,
        lost,
        dup,
    )
    assert not problems, "\n".join(problems)
    assert catalog.count_runs("pending") == 0 and catalog.count_runs("running") == 0
    assert catalog.count_tasks("pending") == 0 and catalog.count_tasks("running") == 0
