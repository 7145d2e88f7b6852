"""Benchmark: what authentication adds to a call.

    python benchmarks/bench_auth.py [--calls 2000]

A persistence service over a socket (SQLite catalog in a temporary folder);
`GetTask` of an unknown task (NOT_FOUND, so the handler does the same small
work every time) called `--calls` times by one client:

* no authentication (`auth=none`, plaintext);
* an API token checked on every call (`auth=tokens`, cache disabled: one
  indexed look-up of the token's sha256 per call);
* an API token cached (`token_cache_seconds=10`, the default);
* mutual TLS with a service certificate (`auth=tokens`, identity from the
  certificate, no token look-up).

Reported: the median and p95 latency of one call, in microseconds. The
persistence service checks its tokens itself; other services ask it over
gRPC (`AuthenticateApiToken`), one more hop on a cache miss. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.auth import ClientCredentials, new_token
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.grpc_server import serve
from alphaswarm_common.service import server_security
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials, make_certs


def start(settings: Settings) -> tuple[Any, str]:
    from alphaswarm_persistence import server as persistence_server

    regs = persistence_server.build(settings)
    auth, creds = server_security(settings, regs)
    server, port = serve(regs, auth=auth, credentials=creds)
    return server, f"127.0.0.1:{port}"


def measure(call: Callable[[], None], n: int) -> tuple[float, float]:
    for _ in range(50):
        call()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    times.sort()
    return statistics.median(times) * 1e6, times[int(0.95 * len(times))] * 1e6


def caller(address: str, credentials: ClientCredentials | None) -> Callable[[], None]:
    stub = ppb_grpc.PersistenceServiceStub(channel(address, credentials=credentials))
    request = ppb.GetTaskRequest(task_id="00000000-0000-0000-0000-000000000000")

    def call() -> None:
        try:
            stub.GetTask(request, timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        certs = root / "certs"
        make_certs(certs)
        token = new_token()
        cases: list[tuple[str, Settings, ClientCredentials | None]] = []
        cases.append(("none (plaintext)", Settings(home=root / "a"), None))
        for label, ttl in (("token, checked every call", 0.0), ("token, cached 10 s", 10.0)):
            cases.append(
                (
                    label,
                    Settings(home=root / "b", auth="tokens", token_cache_seconds=ttl),
                    ClientCredentials(bearer=token),
                )
            )
        tls = Settings(
            home=root / "c",
            auth="tokens",
            tls_ca=certs / "ca.pem",
            tls_cert=certs / "persistence.pem",
            tls_key=certs / "persistence.key",
        )
        gateway_tls = Settings(
            tls_ca=certs / "ca.pem", tls_cert=certs / "gateway.pem", tls_key=certs / "gateway.key"
        )
        cases.append(("mTLS service identity", tls, client_credentials(gateway_tls)))
        for label, settings, credentials in cases:
            server, address = start(settings)
            try:
                if settings.auth == "tokens" and not settings.tls_enabled():
                    from alphaswarm_persistence.db import Database
                    from alphaswarm_persistence.repo_tokens import AccessStore
                    from alphaswarm_persistence.repository import CatalogRepository

                    AccessStore(CatalogRepository(Database(settings.catalog_url()))).ensure_token(
                        "bench", "viewer", token
                    )
                rows.append((label, *measure(caller(address, credentials), args.calls)))
            finally:
                server.stop(0).wait()
    print(
        f"# bench_auth: {args.calls} GetTask calls per case; {platform.python_version()} {platform.machine()}"
    )
    print(f"{'case':<28} {'median us':>10} {'p95 us':>10}")
    for label, median, p95 in rows:
        print(f"{label:<28} {median:>10.0f} {p95:>10.0f}")


if __name__ == "__main__":
    main()
