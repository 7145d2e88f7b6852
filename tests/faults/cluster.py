"""The fault-injection harness: a PostgreSQL cluster and a NATS server of the suite's own
(stopped and restarted mid-test on the same port and data directory), the compose
topology's services as separate processes over them (killed with -9, frozen, restarted on
the same port), and the checks every scenario ends with.

Checks (`Cluster.verify_run`):
* the run reaches a terminal state within a bound (`wait_run`, polling GET over REST);
* its progress stream is complete: seqs 1..n with no gap, the last event terminal and in
  agreement with the run row (`read_stream`, `assert_stream_complete`);
* the catalog holds no duplicate or orphan rows: at most one backtest row names the run (the
  one it links when it succeeded, none otherwise), no trade without its backtest, audit rows
  only for a succeeded run, at most one deployment of the run's model version
  (`CatalogProbe`);
* MLflow has at most one model version tagged with the run, and no run left RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.conftest import small_run
from tests.integration.topology import Topology, free_port

TERMINAL = {"succeeded", "failed", "cancelled"}
TERMINAL_EVENT_STAGES = {"completed", "failed", "cancelled"}
SERVICES = ("persistence", "trainer", "registry", "backtester", "gateway")

# A run small enough for the suite: the e2e run cut to ridge on eight symbols, three years of training.
FAST_RUN: dict[str, Any] = small_run(
    run_name="faults",
    train_first=True,
    capture_predictions=True,
    dataset_cfg={
        "symbols": ["AAPL", "AMD", "BAC", "CVX", "JPM", "KO", "MSFT", "XOM"],
        "start_date": "2014-01-01",
        "segments": {
            "train": ["2014-06-01", "2017-06-30"],
            "valid": ["2017-07-03", "2017-12-29"],
            "test": ["2018-01-02", "2018-12-31"],
        },
        "features": [
            {"name": "ret", "windows": [1, 5, 20], "cs_rank": True},
            {"name": "vol", "windows": [20]},
        ],
    },
    model_cfg={"name": "faults-ridge"},
    strategy_cfg={"params": {"top_k": 2}},
)

# A model whose training lasts seconds on FAST_RUN's data (a stage long enough to act during).
# A training that lasts its budget whatever the feature cache or the load: past any short deadline.
BUDGETED_MODEL: dict[str, Any] = {
    "type": "mlp",
    "params": {
        "hidden_layer_sizes": [16],
        "max_iter": 10_000_000,
        "early_stopping": False,
        "tol": 0.0,
        "n_iter_no_change": 10_000_000,
    },
    "time_budget_seconds": 20,
}

SECONDS_MODEL: dict[str, Any] = {
    "type": "random_forest",
    # every row and every feature for each tree (not the factory's faster defaults): seconds of work
    "params": {
        "n_estimators": 60,
        "min_samples_leaf": 1,
        "n_jobs": 1,
        "max_samples": None,
        "max_features": 1.0,
    },
}


def fast_run(**overrides: Any) -> dict[str, Any]:
    """FAST_RUN with `overrides` (a mapping is merged into the section it names)."""
    merged = {
        k: {**FAST_RUN[k], **v} if isinstance(v, dict) and isinstance(FAST_RUN.get(k), dict) else v
        for k, v in overrides.items()
    }
    return small_run(**{**FAST_RUN, **merged})


FAST_BACKTEST_JOB: dict[str, Any] = {
    "source": {
        "dataset_cfg": {"source": "sp500", "start_date": "2015-01-01", "end_date": "2018-12-31"},
        "symbols": ["AAPL"],
    },
    "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 10, "slow_period": 50}},
}


def _wait(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- infra


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run a PostgreSQL binary as the `postgres` user when this process is root (initdb refuses root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--", *cmd] if runuser else ["su", "postgres", "-c", " ".join(cmd)]


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class PgCluster:
    """A PostgreSQL cluster in a temporary folder, on a free port, for this test session only."""

    bindir: Path
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="alphaswarm-faults-pg-")))
    port: int = field(default_factory=free_port)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def admin_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.root.chmod(0o700)
        subprocess.run(
            _as_postgres(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N"]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    opts,
                    "-l",
                    str(self.root / "postgres.log"),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        _wait(lambda: _port_open(self.port), 30, "PostgreSQL accepting connections")

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and shuts down cleanly; `immediate` is a crash."""
        subprocess.run(
            _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class NatsServer:
    """`nats-server -js` on a free port with its own store folder."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="alphaswarm-faults-nats-")))
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("nats-server")
        assert exe, "nats-server is not on PATH"
        with open(self.root / "nats.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    exe,
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-m",
                    str(self.monitor_port),
                    "-sd",
                    str(self.root / "store"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            try:
                url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
                with urllib.request.urlopen(url, timeout=1) as resp:
                    return bool(resp.status == 200)
            except Exception:
                return False

        _wait(ready, 30, "NATS JetStream ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self) -> None:
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- REST


def read_stream(
    rest_url: str, stream_url: str, *, timeout: float = 60.0, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every event of a task's SSE stream, stopping at the stream's end or after `timeout` seconds
    (a stream that never sends its terminal event is returned as it is, to be judged)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    data: list[str] = []
    with (
        contextlib.suppress(httpx.HTTPError),
        httpx.stream(
            "GET", rest_url + stream_url, headers=headers, timeout=httpx.Timeout(10.0, read=5.0)
        ) as resp,
    ):
        if resp.status_code != 200:
            return events
        for line in resp.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append(json.loads("\n".join(data)))
                data = []
            if time.monotonic() > deadline:
                break
    return events


class StreamWatcher:
    """Follows a task's SSE stream on a thread (reconnecting with Last-Event-ID when the
    gateway goes away) so a test can act when a given stage starts."""

    def __init__(
        self, rest_url: Callable[[], str], stream_url: str, headers: dict[str, str] | None = None
    ) -> None:
        self._rest_url = rest_url
        self._headers = headers or {}
        self.stream_url = stream_url
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            last = self.events[-1]["seq"] if self.events else 0
            data: list[str] = []
            try:
                with httpx.stream(
                    "GET",
                    self._rest_url() + self.stream_url,
                    headers={**self._headers, "last-event-id": str(last)},
                    timeout=httpx.Timeout(5.0, read=2.0),
                ) as resp:
                    if resp.status_code != 200:
                        raise httpx.HTTPError(str(resp.status_code))
                    for line in resp.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].strip())
                        elif line == "" and data:
                            event = json.loads("\n".join(data))
                            data = []
                            self.events.append(event)
                            if event["stage"] in TERMINAL_EVENT_STAGES:
                                return
                        if self._stop.is_set():
                            return
            except (httpx.HTTPError, OSError, ValueError):
                pass
            self._stop.wait(0.3)

    def wait_for(self, stage: str, status: str = "started", timeout: float = 120.0) -> dict[str, Any]:
        """The first event of `stage` with `status` (fails if the run ends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event["stage"] == stage and event["status"] == status:
                    return event
                if event["stage"] in TERMINAL_EVENT_STAGES:
                    raise AssertionError(f"the run ended before {stage}/{status}: {event}")
            time.sleep(0.05)
        raise TimeoutError(f"no {stage}/{status} event within {timeout:.0f}s; saw {self.events}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def assert_stream_complete(events: list[dict[str, Any]], status: str) -> None:
    """Seqs 1..n with no gap or repeat, one terminal event, last, that agrees with `status`."""
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), f"stream seqs are not 1..n: {seqs}"
    assert events, "the stream is empty"
    terminal = [e for e in events if e["stage"] in TERMINAL_EVENT_STAGES]
    assert len(terminal) == 1 and terminal[0] is events[-1], (
        f"the stream must end with exactly one terminal event: {[(e['seq'], e['stage']) for e in events]}"
    )
    expected = {"succeeded": "completed", "failed": "failed", "cancelled": "cancelled"}[status]
    last = events[-1]
    assert last["stage"] == expected or (status == "cancelled" and last["status"] == "cancelled"), (
        f"the run is {status} but its stream ends with {last['stage']}/{last['status']}"
    )


# ---------------------------------------------------------------------------------------------- cluster


@dataclass
class RunOutcome:
    run: dict[str, Any]
    seconds_to_terminal: float
    events: list[dict[str, Any]]


class Cluster:
    """PostgreSQL + NATS + MLflow server + the five services, each its own process."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        bindir = postgres_bin()
        assert bindir is not None, "PostgreSQL binaries (initdb, pg_ctl) are not installed"
        self.pg = PgCluster(bindir)
        self.nats = NatsServer()
        self.workdir = workdir
        self.base_env = dict(env)
        self.topology: Topology | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.pg.init()
        self.pg.start()
        self.nats.start()
        self.topology = Topology(
            pg_admin_url=self.pg.admin_url,
            nats_url=self.nats.url,
            workdir=self.workdir,
            extra_env=dict(self.base_env),
        )
        self.topology.start()

    def close(self) -> None:
        try:
            if self.topology is not None:
                with contextlib.suppress(Exception):
                    self.topology.stop()
        finally:
            self.nats.destroy()
            self.pg.destroy()

    @property
    def topo(self) -> Topology:
        assert self.topology is not None
        return self.topology

    @property
    def rest_url(self) -> str:
        return self.topo.rest_url

    def heal(self) -> None:
        """Bring everything back as the suite started it: infrastructure up, every service alive
        (thawed, restarted when dead) with the base environment."""
        if not _port_open(self.pg.port):
            self.pg.start()
        if self.nats.proc is None or self.nats.proc.poll() is not None:
            self.nats.start()
        topo = self.topo
        for name in ("mlflow", *SERVICES):
            if topo.alive(name):
                with contextlib.suppress(ProcessLookupError):
                    topo.thaw(name)
            if not topo.alive(name) or topo.service_env.get(name):
                topo.restart(name, env={})
        self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until the gateway's `/readyz` answers 200 (every upstream service and the event
        bus answer it); False when it did not within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.get("/readyz", timeout=5).status_code == 200:
                    return True
            time.sleep(0.5)
        return False

    def kill(self, name: str) -> None:
        self.topo.kill(name)

    def restart(self, name: str, *, env: dict[str, str] | None = None) -> None:
        self.topo.restart(name, env=env)

    def log(self, name: str) -> str:
        return self.topo.log(name)

    # -- REST -----------------------------------------------------------------------------------
    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        """GET on the gateway as its admin (the bootstrap token)."""
        return httpx.get(self.rest_url + path, headers=self.topo.auth_headers, **kwargs)

    def post(self, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        """POST on the gateway as its admin."""
        return httpx.post(
            self.rest_url + path, headers={**self.topo.auth_headers, **(headers or {})}, **kwargs
        )

    def submit(self, doc: dict[str, Any], *, key: str | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        if key:
            headers["idempotency-key"] = key
        return self.post("/ml/alpha-backtest-runs", content=json.dumps(doc), headers=headers, timeout=60)

    def start_run(self, doc: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = self.submit(doc or fast_run())
        assert resp.status_code == 202, resp.text
        return dict(resp.json())

    def watch(self, accepted: dict[str, Any]) -> StreamWatcher:
        return StreamWatcher(lambda: self.rest_url, accepted["stream_url"], self.topo.auth_headers)

    def get_json(self, path: str) -> dict[str, Any] | None:
        """GET a resource; None while the gateway (or what it reads) does not answer."""
        try:
            resp = self.get(path, timeout=10)
        except httpx.HTTPError:
            return None
        return dict(resp.json()) if resp.status_code == 200 else None

    def wait_run(
        self, run_id: str, *, timeout: float, since: float | None = None
    ) -> tuple[dict[str, Any], float]:
        """The run once terminal and the seconds it took from `since` (default: now)."""
        return self._wait_terminal(f"/ml/alpha-backtest-runs/{run_id}", timeout, since)

    def wait_task(
        self, task_id: str, *, timeout: float, since: float | None = None
    ) -> tuple[dict[str, Any], float]:
        """The task (a backtester job) once terminal and the seconds it took from `since`."""
        return self._wait_terminal(f"/tasks/{task_id}", timeout, since)

    def _wait_terminal(self, path: str, timeout: float, since: float | None) -> tuple[dict[str, Any], float]:
        start = since if since is not None else time.monotonic()
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            got = self.get_json(path)
            if got is not None:
                last = got
                if got["status"] in TERMINAL:
                    return got, time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(
            f"{path} is not terminal after {timeout:.0f}s (last seen: "
            f"{None if last is None else (last['status'], last.get('stage'))})\n"
            f"gateway log:\n{self.log('gateway')}"
        )

    def conclude_task(
        self,
        task: dict[str, Any],
        *,
        fault: str,
        record: Callable[..., None],
        since: float,
        timeout: float,
        status: str,
        duplicated: Callable[[], int] = lambda: 0,
    ) -> dict[str, Any]:
        """`conclude` for a backtester job: terminal within `timeout`, its row in the outcome
        table, the expected `status`, a complete stream."""
        try:
            done, seconds = self.wait_task(task["task_id"], timeout=timeout, since=since)
        except AssertionError:
            record(fault, f"not terminal after {timeout:.0f}s", None)
            raise
        error = done.get("error") or {}
        record(fault, done["status"] + (f" ({error.get('code')})" if error else ""), seconds, 0, duplicated())
        assert done["status"] == status, f"{fault}: {done}"
        assert_stream_complete(self.stream(task), status)
        return done

    def run_completes(self, record: Callable[..., None], fault: str, *, timeout: float = 120.0) -> None:
        """A fresh run submitted now succeeds (the cluster serves again after a fault)."""
        self.conclude(
            self.start_run(fast_run(run_name="after-fault")),
            fault=fault,
            record=record,
            since=time.monotonic(),
            timeout=timeout,
            status="succeeded",
        )

    def stream(self, accepted: dict[str, Any], *, timeout: float = 30.0) -> list[dict[str, Any]]:
        return read_stream(
            self.rest_url, accepted["stream_url"], timeout=timeout, headers=self.topo.auth_headers
        )

    # -- catalog and MLflow ---------------------------------------------------------------------
    def catalog(self) -> CatalogProbe:
        return CatalogProbe(self.topo.catalog_url())

    def mlflow(self) -> MlflowProbe:
        return MlflowProbe(self.topo.mlflow_url)

    def tally(self, run: dict[str, Any]) -> tuple[int, int]:
        """(rows lost, rows duplicated or orphaned) of a terminal run: a succeeded run's backtest
        and audit rows that are missing; backtest rows, model versions and deployments beyond
        what the run links."""
        catalog, lost, extra = self.catalog(), 0, 0
        backtests = catalog.backtests_of(run["run_id"])
        if run["status"] == "succeeded":
            lost += 0 if backtests else 1
            extra += max(0, len(backtests) - 1)
            window = (run.get("combined_metrics") or {}).get("window")
            if window and run.get("predictions_captured"):
                want = window["n_dates"] * len(window["symbols"])
                got = catalog.scalar(
                    "SELECT count(*) FROM ml_prediction_audit WHERE run_id = %s", run["run_id"]
                )
                lost += max(0, want - got)
                extra += max(0, got - want)
        else:
            extra += len(backtests)
            extra += catalog.scalar(
                "SELECT count(*) FROM ml_prediction_audit WHERE run_id = %s", run["run_id"]
            )
        links = run.get("links") or {}
        with contextlib.suppress(Exception):
            versions = self.mlflow().versions_of(
                run["run_id"], links.get("model_name") or FAST_RUN["model_cfg"]["name"]
            )
            extra += max(0, len(versions) - 1)
        return lost, extra

    def conclude(
        self,
        accepted: dict[str, Any],
        *,
        fault: str,
        record: Callable[..., None],
        since: float,
        timeout: float,
        status: str,
        code: str | None = None,
        stage: str | None = None,
    ) -> dict[str, Any]:
        """Wait for the run's terminal state, add its row to the outcome table, then check it:
        the expected `status` (and error `code` / `stage`), a complete stream, no duplicate,
        orphan or RUNNING leftovers. Returns the run."""
        try:
            run, seconds = self.wait_run(accepted["run_id"], timeout=timeout, since=since)
        except AssertionError:
            record(fault, f"not terminal after {timeout:.0f}s", None)
            raise
        lost, extra = self.tally(run)
        error = run.get("error") or {}
        outcome = run["status"] + (f" ({error.get('code')} at {error.get('stage')})" if error else "")
        events = self.stream(accepted)
        try:
            assert_stream_complete(events, run["status"])
        except AssertionError:
            outcome += "; stream incomplete"
            record(fault, outcome, seconds, lost, extra)
            raise
        record(fault, outcome, seconds, lost, extra)
        assert run["status"] == status, f"{fault}: expected {status}, got {outcome}\n{self.log('gateway')}"
        if code is not None:
            assert error.get("code") == code, f"{fault}: expected error code {code}, got {error}"
        if stage is not None:
            assert error.get("stage") == stage, f"{fault}: expected the failure at {stage}, got {error}"
        problems = self.catalog().problems(run) + self.mlflow().problems(run)
        assert not problems, f"{fault}:\n" + "\n".join(problems)
        return run


@contextlib.contextmanager
def _pg(url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=10) as conn:
        yield conn


class CatalogProbe:
    """Reads the catalog straight from PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url

    def scalar(self, sql: str, *params: Any) -> Any:
        with _pg(self.url) as conn:
            row = conn.execute(sql, params).fetchone()
            return row[0] if row else None

    def execute(self, sql: str, *params: Any) -> None:
        with _pg(self.url) as conn:
            conn.execute(sql, params)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with _pg(self.url) as conn:
            return list(conn.execute(sql, params).fetchall())

    def backtests_of(self, run_id: str) -> list[str]:
        """Backtest rows an alpha-backtest run saved (their notes name the run)."""
        return [
            str(r[0])
            for r in self.rows(
                "SELECT backtest_id FROM mcp_backtest_results WHERE notes LIKE %s",
                f"alpha-backtest run {run_id}:%",
            )
        ]

    def problems(self, run: dict[str, Any]) -> list[str]:
        run_id = run["run_id"]
        out: list[str] = []
        n_runs = self.scalar("SELECT count(*) FROM ml_alpha_backtest_runs WHERE task_id = %s", run["task_id"])
        if n_runs != 1:
            out.append(f"{n_runs} run rows for task {run['task_id']}")
        state = self.scalar("SELECT state FROM ml_alpha_backtest_runs WHERE run_id = %s", run_id)
        if state != run["status"]:
            out.append(f"the catalog says {state}, the API {run['status']}")
        task_state = self.scalar("SELECT state FROM tasks WHERE task_id = %s", run["task_id"])
        if task_state not in TERMINAL:
            out.append(f"task row {run['task_id']} is {task_state}")
        backtests = self.backtests_of(run_id)
        linked = (run.get("links") or {}).get("backtest_id")
        if run["status"] == "succeeded":
            if backtests != [linked]:
                out.append(f"backtest rows of the run {backtests}, linked {linked}")
        elif backtests:
            out.append(f"a {run['status']} run left backtest rows {backtests} (orphans)")
        orphan_trades = self.scalar(
            "SELECT count(*) FROM mcp_backtest_trades t LEFT JOIN mcp_backtest_results r "
            "ON r.backtest_id = t.backtest_id WHERE r.backtest_id IS NULL"
        )
        if orphan_trades:
            out.append(f"{orphan_trades} trades without their backtest")
        audit = self.scalar("SELECT count(*) FROM ml_prediction_audit WHERE run_id = %s", run_id)
        if run["status"] != "succeeded" and audit:
            out.append(f"a {run['status']} run left {audit} prediction audit rows")
        if run["status"] == "succeeded" and run.get("combined_metrics"):
            window = run["combined_metrics"]["window"]
            if run.get("predictions_captured") and audit != window["n_dates"] * len(window["symbols"]):
                out.append(f"{audit} audit rows for a {window['n_dates']}x{len(window['symbols'])} window")
        links = run.get("links") or {}
        if links.get("model_name") and links.get("model_version"):
            n_dep = self.scalar(
                "SELECT count(*) FROM deployments WHERE model_name = %s AND model_version = %s",
                links["model_name"],
                str(links["model_version"]),
            )
            if n_dep > 1:
                out.append(f"{n_dep} deployments of {links['model_name']} v{links['model_version']}")
        return out

    def saved_by_job(self, task_id: str) -> int:
        """Results a backtester job saved (their idempotency keys are named after its task)."""
        return int(
            self.scalar("SELECT count(*) FROM catalog_request_keys WHERE request_id LIKE %s", f"{task_id}:%")
        )

    def count_runs(self, state: str | None = None) -> int:
        if state is None:
            return int(self.scalar("SELECT count(*) FROM ml_alpha_backtest_runs"))
        return int(self.scalar("SELECT count(*) FROM ml_alpha_backtest_runs WHERE state = %s", state))

    def count_tasks(self, state: str) -> int:
        return int(self.scalar("SELECT count(*) FROM tasks WHERE state = %s", state))


class MlflowProbe:
    def __init__(self, url: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=url, registry_uri=url)

    def running(self, task_id: str | None = None) -> list[str]:
        """MLflow runs left RUNNING: those of one task (its parent runs, one per attempt, and
        their children) or, without `task_id`, any in every experiment."""
        ids = [e.experiment_id for e in self.client.search_experiments()]
        if not ids:
            return []
        found = "attributes.status = 'RUNNING'"
        runs: list[Any] = []
        if task_id is None:
            runs += self.client.search_runs(ids, filter_string=found, max_results=1000)
        else:
            mine = self.client.search_runs(
                ids, filter_string=f"tags.`alphaswarm.task_id` = '{task_id}'", max_results=1000
            )
            runs = [r for r in mine if r.info.status == "RUNNING"]
            for parent in mine:
                runs += self.client.search_runs(
                    ids,
                    filter_string=f"{found} and tags.mlflow.parentRunId = '{parent.info.run_id}'",
                    max_results=1000,
                )
        return sorted({f"{r.info.run_id} ({r.info.run_name})" for r in runs})

    def versions_of(self, run_id: str, model_name: str) -> list[str]:
        versions = self.client.search_model_versions(f"name = '{model_name}'")
        return [v.version for v in versions if (v.tags or {}).get("alphaswarm.run_id") == run_id]

    def children_of(self, parent_run_id: str) -> list[Any]:
        parent = self.client.get_run(parent_run_id)
        return list(
            self.client.search_runs(
                [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
            )
        )

    def problems(self, run: dict[str, Any], model_name: str = FAST_RUN["model_cfg"]["name"]) -> list[str]:
        out: list[str] = []
        running = self.running(run["task_id"])
        if running:
            out.append(f"MLflow runs left RUNNING: {running}")
        links = run.get("links") or {}
        name = links.get("model_name") or model_name
        with contextlib.suppress(Exception):  # no registered model of that name yet
            versions = self.versions_of(run["run_id"], name)
            if len(versions) > 1:
                out.append(f"{len(versions)} model versions for one run: {versions}")
            if run["status"] == "succeeded" and versions != [str(links.get("model_version"))]:
                out.append(f"model versions {versions}, the run links {links.get('model_version')}")
        parent = links.get("mlflow_parent_run_id")
        if parent:
            status = self.client.get_run(parent).info.status
            want = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}[run["status"]]
            if status != want and not (run["status"] == "cancelled" and status == "FAILED"):
                out.append(f"MLflow parent run {parent} is {status} for a {run['status']} run")
        return out


# ---------------------------------------------------------------------------------------------- NATS


class NatsTap:
    """A plain nats-py subscriber to `subject` on its own thread, and a publisher."""

    def __init__(self, url: str, subject: str) -> None:
        import asyncio

        self.url = url
        self.subject = subject
        self.messages: list[tuple[str, bytes]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: Any = None
        self._nc: Any = None
        self._thread = threading.Thread(
            target=lambda: self._loop.run_until_complete(self._main()), daemon=True
        )

    async def _main(self) -> None:
        import asyncio

        import nats

        self._nc = await nats.connect(self.url)
        self._stop = asyncio.Event()

        async def on_msg(msg: Any) -> None:
            self.messages.append((msg.subject, bytes(msg.data)))

        await self._nc.subscribe(self.subject, cb=on_msg)
        await self._nc.flush()
        self._ready.set()
        await self._stop.wait()
        await self._nc.close()

    def publish(self, subject: str, data: bytes) -> None:
        """Publish on JetStream (the work queue's stream takes it) and wait for the ack."""
        import asyncio

        async def pub() -> None:
            await self._nc.jetstream().publish(subject, data)

        asyncio.run_coroutine_threadsafe(pub(), self._loop).result(timeout=10)

    def wait(self, predicate: Callable[[str, bytes], bool], timeout: float) -> tuple[str, bytes] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for subject, data in list(self.messages):
                if predicate(subject, data):
                    return subject, data
            time.sleep(0.2)
        return None

    def __enter__(self) -> NatsTap:
        self._thread.start()
        assert self._ready.wait(10), "could not subscribe to NATS"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / ticks


def wait_idle(cluster: Cluster, name: str, *, timeout: float = 120.0, quiet: float = 2.0) -> None:
    """Wait until a service has used no CPU for `quiet` seconds (what it was computing is done)."""
    pid = cluster.topo.processes[name].pid
    deadline = time.monotonic() + timeout
    last, since = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last > 0.05:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise TimeoutError(f"{name} still busy after {timeout:.0f}s")
