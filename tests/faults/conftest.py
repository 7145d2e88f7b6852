"""Fixtures of the fault-injection suite: one cluster for the session (a PostgreSQL cluster and a
NATS server of its own, an MLflow server and the five services as separate processes), healed
after every test, and the outcome table each scenario adds a row to.

The lease, heartbeat and reaper intervals and the body limit are shortened through the
environment of every service (`FAULT_ENV`), so a fault is noticed and repaired in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.cluster import Cluster, postgres_bin

# Settings of every service in the suite (names of alphaswarm_common.settings.Settings).
FAULT_ENV: dict[str, str] = {
    "ALPHASWARM_GATEWAY_LEASE_SECONDS": "4",  # a worker's lease on its task; another may take over after it
    "ALPHASWARM_GATEWAY_HEARTBEAT_SECONDS": "1",  # how often a worker renews its lease
    "ALPHASWARM_GATEWAY_REAPER_SECONDS": "1",  # how often expired leases are looked for
    "ALPHASWARM_GATEWAY_PENDING_GRACE_SECONDS": "10",  # an accepted task no worker claimed is queued again
    # The same intervals under the names the task of resumable sagas was first written against.
    "ALPHASWARM_LEASE_SECONDS": "4",
    "ALPHASWARM_HEARTBEAT_SECONDS": "1",
    "ALPHASWARM_REAPER_SECONDS": "1",
    "ALPHASWARM_MAX_BODY_BYTES": str(8 * 1024 * 1024),
    "ALPHASWARM_GATEWAY_WORKERS": "4",
    # The suite submits as one token: twenty runs at once must not hit the per-token limits.
    "ALPHASWARM_MAX_CONCURRENT_RUNS_PER_TOKEN": "64",
    "ALPHASWARM_SUBMIT_BURST": "64",
    "ALPHASWARM_SUBMIT_RATE_PER_MINUTE": "600",
    "ALPHASWARM_DEADLINE_DEFAULT_SECONDS": "10",
}

REPORT_ENV = "ALPHASWARM_FAULTS_REPORT"


def _required(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if postgres_bin() is None:
        _required("the fault suite needs the PostgreSQL server binaries (initdb, pg_ctl)")
    if shutil.which("nats-server") is None:
        _required("the fault suite needs nats-server on PATH")
    c = Cluster(tmp_path_factory.mktemp("faults"), FAULT_ENV)
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture
def healthy(cluster: Cluster) -> Iterator[Cluster]:
    """The cluster, every part of it up before the test and brought back after it."""
    cluster.heal()
    yield cluster
    cluster.heal()


_ROWS: list[dict[str, Any]] = []


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Add the scenario's row to the outcome table: fault, outcome, seconds to the terminal state,
    catalog rows lost and duplicated."""

    def add(fault: str, outcome: str, seconds: float | None, lost: int = 0, duplicated: int = 0) -> None:
        row = {
            "test": request.node.nodeid,
            "fault": fault,
            "outcome": outcome,
            "seconds_to_terminal": None if seconds is None else round(seconds, 1),
            "rows_lost": lost,
            "rows_duplicated": duplicated,
        }
        _ROWS.append(row)
        path = os.environ.get(REPORT_ENV)
        if path:
            with Path(path).open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    return add


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    terminalreporter.section("fault outcomes")
    terminalreporter.write_line("| fault | outcome | s to terminal | rows lost | rows duplicated |")
    terminalreporter.write_line("|---|---|---|---|---|")
    for r in _ROWS:
        secs = "-" if r["seconds_to_terminal"] is None else f"{r['seconds_to_terminal']:.1f}"
        terminalreporter.write_line(
            f"| {r['fault']} | {r['outcome']} | {secs} | {r['rows_lost']} | {r['rows_duplicated']} |"
        )
