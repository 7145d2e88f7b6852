"""The compose topology with several replicas of each service, as local processes.

`ReplicaTopology` is `Topology` (deploy/docker-compose.yml read and run as processes) where a
service may run as `n` replicas, named `<service>-1` ... `<service>-n`, each on its own port
and home folder, all over one PostgreSQL and one NATS. Clients find a service's replicas the way
they find the pods of a Kubernetes headless Service: one address naming every replica,
`ipv4:127.0.0.1:P1,127.0.0.1:P2,...` (a DNS name with several A records is not available on a
test machine; the client's round_robin policy over the resolved list is the same). Every
registry replica signs with one shared key, as the Kubernetes Secret gives them. Gateways each
serve REST on their own port and pull from the same JetStream work queue.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.integration.topology import COMPOSE, Topology, _http_ok, free_port

__all__ = ["ONE_EACH", "SCALED", "ReplicaTopology", "rpc_counts"]

SERVICES = ("persistence", "trainer", "registry", "backtester", "gateway")
ONE_EACH: dict[str, int] = dict.fromkeys(SERVICES, 1)
SCALED: dict[str, int] = {"persistence": 1, "trainer": 2, "registry": 2, "backtester": 3, "gateway": 2}


@dataclass
class ReplicaTopology(Topology):
    counts: dict[str, int] = field(default_factory=lambda: dict(SCALED))
    http_ports: dict[str, int] = field(default_factory=dict)

    def replicas(self, service: str) -> list[str]:
        return [f"{service}-{i}" for i in range(1, self.counts[service] + 1)]

    def address(self, service: str) -> str:
        """One address for every replica of `service`."""
        ports = [self.ports[r] for r in self.replicas(service)]
        if len(ports) == 1:
            return f"127.0.0.1:{ports[0]}"
        return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)

    def rest(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.http_ports[gateway]}"

    @property
    def rest_url(self) -> str:  # the first live gateway
        live = [g for g in self.replicas("gateway") if self.alive(g)]
        return self.rest(live[0] if live else self.replicas("gateway")[0])

    def start(self, timeout: float = 300.0) -> None:
        import psycopg

        from alphaswarm_common.tls import make_secrets

        compose = yaml.safe_load(COMPOSE.read_text())
        services: dict[str, Any] = compose["services"]
        secrets_dir = self.workdir / "secrets"
        make_secrets(secrets_dir)
        self.secret_files = {
            name: Path(re.sub(r"\$\{ALPHASWARM_SECRETS_DIR:-[^}]*\}", str(secrets_dir), spec["file"]))
            for name, spec in (compose.get("secrets") or {}).items()
        }
        suffix = uuid.uuid4().hex[:8]
        self.databases = {"alphaswarm": f"as_rep_{suffix}", "mlflow": f"as_rep_mlflow_{suffix}"}
        admin = self.pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in self.databases.values():
                conn.execute(f'CREATE DATABASE "{db}"')
        self.specs = dict(services)
        for service in SERVICES:
            for name in self.replicas(service):
                self.ports[name] = free_port()
                self.metrics_ports[name] = free_port()  # each replica process its own /metrics
                self.specs[name] = services[service]
            self.ports[service] = self.ports[f"{service}-1"]
        self.mlflow_port = free_port()
        self.http_port = free_port()  # unused: each gateway has its own (http_ports)
        key = self.workdir / "registry_signing_key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(64))
        persistence = self.address("persistence")
        for service in SERVICES:
            for name in self.replicas(service):
                env = {"ALPHASWARM_PERSISTENCE_ADDR": persistence}
                if service == "registry":
                    env["ALPHASWARM_REGISTRY_SIGNING_KEY_FILE"] = str(key)
                if service == "gateway":
                    self.http_ports[name] = free_port()
                    env["ALPHASWARM_HTTP_PORT"] = str(self.http_ports[name])
                    for upstream in ("trainer", "registry", "backtester"):
                        env[f"ALPHASWARM_{upstream.upper()}_ADDR"] = self.address(upstream)
                self.service_env[name] = {**env, **self.service_env.get(name, {})}

        self.launch("mlflow", timeout=timeout)
        migrate = services["migrate"]
        (self.workdir / "migrate").mkdir(exist_ok=True)
        with open(self.workdir / "migrate.log", "ab") as log:
            proc = subprocess.run(
                self._command(migrate),
                env=self._env("migrate", migrate),
                cwd=self.workdir / "migrate",
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"migrate exited {proc.returncode}:\n{self.log('migrate')}")
        # Start every replica of a tier at once (imports are slow on a loaded machine), then wait.
        for tier in (["persistence"], ["trainer", "registry", "backtester"], ["gateway"]):
            names = [n for s in tier for n in self.replicas(s)]
            for name in names:
                self.launch(name, wait=False)
            for name in names:
                self._wait_healthy(name, self.specs[name], timeout)

    def _wait_healthy(self, name: str, spec: dict[str, Any], timeout: float) -> None:
        if not name.startswith("gateway-"):
            super()._wait_healthy(name, spec, timeout)
            return
        deadline = time.time() + timeout
        while time.time() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            if _http_ok(f"{self.rest(name)}/readyz"):
                return
            time.sleep(0.3)
        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s:\n{self.log(name)}")

    def full_log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def rpc_counts(log: str, method: str) -> int:
    """RPCs matching `method` (a pattern, e.g. `BacktesterService/Run\\w+`) a service answered OK,
    from its access log."""
    return len(re.findall(rf"/[\w.]+\.{method} OK in ", log))


def claims(log: str) -> int:
    """Tasks a gateway claimed from the work queue, from its log."""
    return len(re.findall(r"task \S+ claimed by ", log))


# -- load -----------------------------------------------------------------------------------------

# Settings of every service under load: one token submits everything; leases noticed in seconds.
LOAD_ENV: dict[str, str] = {
    "ALPHASWARM_GATEWAY_LEASE_SECONDS": "4",
    "ALPHASWARM_GATEWAY_HEARTBEAT_SECONDS": "1",
    "ALPHASWARM_GATEWAY_REAPER_SECONDS": "1",
    "ALPHASWARM_GATEWAY_PENDING_GRACE_SECONDS": "20",
    "ALPHASWARM_GATEWAY_ACK_WAIT_SECONDS": "20",
    "ALPHASWARM_GATEWAY_WORKERS": "4",
    "ALPHASWARM_MAX_CONCURRENT_RUNS_PER_TOKEN": "1000",
    "ALPHASWARM_SUBMIT_BURST": "1000",
    "ALPHASWARM_SUBMIT_RATE_PER_MINUTE": "100000",
    "ALPHASWARM_DEADLINE_DEFAULT_SECONDS": "30",
}


def backtest_job(i: int) -> dict[str, Any]:
    """A rule backtest on four symbols of the shipped panel over eleven years; parameters vary with `i`."""
    symbols = ["AAPL", "MSFT", "JPM", "XOM", "KO", "CVX", "AMD", "BAC"]
    return {
        "source": {
            "dataset_cfg": {"source": "sp500", "start_date": "2008-01-01", "end_date": "2018-12-31"},
            "symbols": [symbols[(i + k) % len(symbols)] for k in range(4)],
        },
        "strategy_cfg": {
            "type": "sma_cross",
            "params": {"fast_period": 5 + i % 10, "slow_period": 30 + i % 20},
        },
    }


@dataclass
class Submitted:
    kind: str  # "run" or "job"
    accepted: dict[str, Any]
    gateway: str


def submit(topo: ReplicaTopology, kind: str, doc: dict[str, Any], gateway: str) -> Submitted:
    import json

    import httpx

    path = "/ml/alpha-backtest-runs" if kind == "run" else "/backtests"
    for attempt in range(5):
        try:
            resp = httpx.post(
                topo.rest(gateway) + path,
                content=json.dumps(doc),
                headers={**topo.auth_headers, "content-type": "application/json"},
                timeout=60,
            )
        except httpx.HTTPError:
            if attempt == 4:
                raise
            time.sleep(1)
            continue
        assert resp.status_code == 202, resp.text
        return Submitted(kind, dict(resp.json()), gateway)
    raise AssertionError("unreachable")


def task_state(topo: ReplicaTopology, task_id: str) -> str | None:
    import httpx

    try:
        resp = httpx.get(f"{topo.rest_url}/tasks/{task_id}", headers=topo.auth_headers, timeout=10)
    except httpx.HTTPError:
        return None
    return str(resp.json()["status"]) if resp.status_code == 200 else None


def wait_all(topo: ReplicaTopology, submitted: list[Submitted], timeout: float) -> dict[str, str]:
    """Task id -> terminal status of every submission (polled over REST on a live gateway)."""
    done: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(done) < len(submitted):
        for s in submitted:
            tid = s.accepted["task_id"]
            if tid in done:
                continue
            state = task_state(topo, tid)
            if state in ("succeeded", "failed", "cancelled"):
                done[tid] = state
        if len(done) < len(submitted):
            time.sleep(1.0)
    return done
