"""Start the docker-compose topology (deploy/docker-compose.yml) as local processes.

No container engine is needed: the compose file is read (commands, environment,
`depends_on` order, one-shot jobs, secrets), container hostnames and ports are
rewritten to loopback and free ports, PostgreSQL databases are created per test
session on the local server, the secrets (database password, admin token, mTLS
certificates) are made by `alphaswarm auth make-secrets` and each `/run/secrets/X`
is pointed at its file, and every service runs as its own OS process from this
virtualenv. What is tested is the compose topology itself, not a copy of it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
INFRA = {"postgres", "nats"}  # provided by the machine (started by scripts/ensure_services.sh)


def require_nats(url: str) -> None:
    """Skip (or fail under `CI=true`) when no NATS server answers at `url`."""
    import pytest

    host, port = url.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"NATS is required in CI and is not reachable at {url}")
        pytest.skip(f"NATS not reachable at {url}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _order(services: dict[str, Any]) -> list[str]:
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...] = ()) -> None:
        if name in done:
            return
        if name in path:
            raise ValueError(f"dependency cycle: {(*path, name)}")
        deps = services[name].get("depends_on") or {}
        for dep in deps if isinstance(deps, list) else deps.keys():
            visit(dep, (*path, name))
        done.append(name)

    for name in services:
        visit(name)
    return done


@dataclass
class Topology:
    pg_admin_url: str
    nats_url: str
    workdir: Path
    databases: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    http_port: int = 0
    mlflow_port: int = 0
    metrics_ports: dict[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    secret_files: dict[str, Path] = field(default_factory=dict)
    # Environment added to every service (settings shortened for tests), and per service.
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    specs: dict[str, Any] = field(default_factory=dict)

    # -- urls -----------------------------------------------------------------------------------
    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"

    def grpc_addr(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    @property
    def admin_token(self) -> str:
        return self.secret_files["admin_token"].read_text().strip()

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_token}"}

    def service_credentials(self, service: str = "gateway") -> Any:
        """mTLS as `service` (role service on every internal method)."""
        from alphaswarm_common.settings import Settings
        from alphaswarm_common.tls import client_credentials

        certs = self.workdir / "secrets" / "certs"
        return client_credentials(
            Settings(
                tls_ca=certs / "ca.pem", tls_cert=certs / f"{service}.pem", tls_key=certs / f"{service}.key"
            )
        )

    def user_credentials(self) -> Any:
        """A user of the gateway's gRPC API: verifies the server with the CA, sends the admin token."""
        from alphaswarm_common.settings import Settings
        from alphaswarm_common.tls import client_credentials

        return client_credentials(
            Settings(tls_ca=self.workdir / "secrets" / "certs" / "ca.pem"), bearer=self.admin_token
        )

    def cli(self, *args: str, service: str = "gateway") -> subprocess.CompletedProcess[str]:
        """`alphaswarm ARGS` inside a service's environment (`docker-compose run SERVICE alphaswarm ...`)."""
        compose = yaml.safe_load(COMPOSE.read_text())
        env = self._env(service, compose["services"][service])
        exe = Path(sys.executable).parent / "alphaswarm"
        return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True, timeout=120)

    def catalog_url(self) -> str:
        return self._pg_url(self.databases["alphaswarm"])

    def _pg_url(self, database: str) -> str:
        base = self.pg_admin_url.rsplit("/", 1)[0]
        return f"{base}/{database}"

    # -- rewriting ------------------------------------------------------------------------------
    def _rewrite(self, value: str) -> str:
        def pg(match: re.Match[str]) -> str:
            return self._pg_url(self.databases[match.group(1)])

        value = re.sub(r"postgresql\+psycopg://[^@/]+@postgres:5432/(\w+)", pg, value)
        value = value.replace("nats://nats:4222", self.nats_url)
        value = value.replace("http://mlflow:5000", self.mlflow_url)
        for svc, port in self.ports.items():
            value = value.replace(f"{svc}:50051", f"127.0.0.1:{port}")
        return value

    def _env(self, name: str, spec: dict[str, Any]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("ALPHASWARM_") and k != "MLFLOW_TRACKING_URI"
        }
        declared = {s if isinstance(s, str) else s["source"] for s in spec.get("secrets") or []}
        for key, raw in (spec.get("environment") or {}).items():
            value = self._rewrite(str(raw))
            if value.startswith("/run/secrets/"):
                secret = value.removeprefix("/run/secrets/")
                assert secret in declared, f"{name} reads secret {secret} without declaring it"
                value = str(self.secret_files[secret])
            env[key] = value
        if "ALPHASWARM_GRPC_HOST" in env:
            env["ALPHASWARM_GRPC_HOST"] = "127.0.0.1"
        if "ALPHASWARM_GRPC_PORT" in env:
            env["ALPHASWARM_GRPC_PORT"] = str(self.ports[name])
        if "ALPHASWARM_METRICS_PORT" in env:
            env["ALPHASWARM_METRICS_PORT"] = str(self.metrics_ports[name])
            env["ALPHASWARM_METRICS_HOST"] = "127.0.0.1"
        if "ALPHASWARM_HTTP_HOST" in env:
            env["ALPHASWARM_HTTP_HOST"] = "127.0.0.1"
            env["ALPHASWARM_HTTP_PORT"] = str(self.http_port)
        env["ALPHASWARM_HOME"] = str(self.workdir / name)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        env.update(self.service_env.get(name, {}))
        return env

    def _command(self, spec: dict[str, Any]) -> list[str]:
        bin_dir = Path(sys.executable).parent
        cmd = [str(c) for c in spec["command"]]
        exe = cmd[0]
        cmd[0] = (
            sys.executable if exe == "python" else str(bin_dir / exe) if (bin_dir / exe).exists() else exe
        )
        out = []
        for i, arg in enumerate(cmd):
            prev = cmd[i - 1] if i else ""
            if prev == "--host":
                arg = "127.0.0.1"
            elif prev == "--port" and spec["command"][0] == "mlflow":
                arg = str(self.mlflow_port)
            elif prev == "--artifacts-destination":
                arg = str(self.workdir / "mlartifacts")
            out.append(self._rewrite(arg))
        return out

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
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
        self.specs = services
        suffix = uuid.uuid4().hex[:8]
        self.databases = {"alphaswarm": f"as_it_{suffix}", "mlflow": f"as_it_mlflow_{suffix}"}
        admin = self.pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in self.databases.values():
                conn.execute(f'CREATE DATABASE "{db}"')
        self.ports = {
            name: free_port()
            for name, spec in services.items()
            if "ALPHASWARM_GRPC_PORT" in (spec.get("environment") or {})
        }
        self.metrics_ports = {
            name: free_port()
            for name, spec in services.items()
            if "ALPHASWARM_METRICS_PORT" in (spec.get("environment") or {})
        }
        self.http_port = free_port()
        self.mlflow_port = free_port()
        for name in _order(services):
            if name in INFRA:
                continue
            spec = services[name]
            if spec.get("restart") == "no":  # a one-shot job (migrations): run to completion
                (self.workdir / name).mkdir(exist_ok=True)
                with open(self.workdir / f"{name}.log", "ab") as log:
                    proc = subprocess.run(
                        self._command(spec),
                        env=self._env(name, spec),
                        cwd=self.workdir / name,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=timeout,
                    )
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
                continue
            self.launch(name, timeout=timeout)

    def launch(self, name: str, *, timeout: float = 180.0, wait: bool = True) -> None:
        """Start one long-running service of the compose file (again, on the same port) and wait
        until it answers its health check."""
        spec = self.specs[name]
        (self.workdir / name).mkdir(exist_ok=True)
        with open(self.workdir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            self.processes[name] = subprocess.Popen(
                self._command(spec),
                env=self._env(name, spec),
                cwd=self.workdir / name,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self._wait_healthy(name, spec, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` (kill -9 by default) to a service's process group and reap it."""
        proc = self.processes[name]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(timeout=30)

    def freeze(self, name: str) -> None:
        """Stop a service's processes (SIGSTOP): its sockets stay open, nothing answers."""
        os.killpg(self.processes[name].pid, signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGCONT)

    def alive(self, name: str) -> bool:
        return name in self.processes and self.processes[name].poll() is None

    def restart(self, name: str, *, env: dict[str, str] | None = None, timeout: float = 180.0) -> None:
        """kill -9 a service (when it runs) and start it again on the same port; `env` replaces
        its per-service environment overrides (None keeps them)."""
        if self.alive(name):
            self.kill(name)
        if env is not None:
            self.service_env[name] = dict(env)
        self.launch(name, timeout=timeout)

    def _wait_healthy(self, name: str, spec: dict[str, Any], timeout: float) -> None:
        from alphaswarm_common.healthcheck import check

        deadline = time.time() + timeout
        while time.time() < deadline:
            proc = self.processes[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            if name == "mlflow":
                ok = _http_ok(f"{self.mlflow_url}/health")
            elif name == "gateway":
                ok = _http_ok(f"{self.rest_url}/readyz")
            else:
                ok = check(self.grpc_addr(name), credentials=self.service_credentials("trainer"))
            if ok:
                return
            time.sleep(0.3)
        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s:\n{self.log(name)}")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        import psycopg

        for name in reversed(list(self.processes)):
            proc = self.processes[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)  # a frozen process cannot act on SIGTERM
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()
        admin = self.pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
        try:
            with psycopg.connect(admin, autocommit=True) as conn:
                for db in self.databases.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            shutil.rmtree(self.workdir / "mlartifacts", ignore_errors=True)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except Exception:
        return False
