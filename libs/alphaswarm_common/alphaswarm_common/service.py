"""The process entry every service shares: settings, logging, serve, wait for a signal.

Each service's `server.py` provides `build(settings) -> [ServiceRegistration]`
and calls `run_service("trainer", build)` from its `main()`. The embedded
launcher calls the same `build` functions and `serve()` in one process.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from alphaswarm_common.auth import ServerAuth, TokenRecord, check_exposure, server_auth_from_settings
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_server import ServiceRegistration, run_until_signal, serve
from alphaswarm_common.settings import Settings

__all__ = ["configure_logging", "remote_token_lookup", "run_service", "server_security"]


def configure_logging(level: int = logging.INFO, *, fmt: str = "text", service: str | None = None) -> None:
    from alphaswarm_common.logging_json import configure

    configure(fmt, service=service, level=level)
    # SQLAlchemy 2.1 + MLflow emit a deprecation warning in every process; it is not ours to fix.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(mlflow|sqlalchemy|google)\..*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"mlflow\..*")
    for noisy in ("mlflow", "alembic", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from alphaswarm_common.tracking import quiet_mlflow

    quiet_mlflow()


def remote_token_lookup(settings: Settings) -> Callable[[str], TokenRecord | None]:
    """Token checks through the persistence service (`AuthenticateApiToken`, as role service)."""
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
    from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
    from alphaswarm_common.grpc_client import call, channel
    from alphaswarm_common.tls import client_credentials

    assert settings.persistence_addr
    stub = ppb_grpc.PersistenceServiceStub(
        channel(
            settings.persistence_addr,
            tuning=settings.grpc_tuning(),
            credentials=client_credentials(settings),
        )
    )

    def lookup(token_hash: str) -> TokenRecord | None:
        reply = call(
            stub.AuthenticateApiToken,
            ppb.AuthenticateApiTokenRequest(token_hash=token_hash),
            timeout=settings.deadline_default_seconds,
            target="persistence",
        )
        if not reply.found:
            return None
        t = reply.token
        return TokenRecord(
            name=t.name,
            role=t.role,
            token_hash=token_hash,
            revoked=t.HasField("revoked_at"),
            expires_at=float(t.expires_at.seconds) if t.HasField("expires_at") else None,
        )

    return lookup


def server_security(
    settings: Settings, registrations: Sequence[ServiceRegistration] = (), *, require_client_auth: bool = True
) -> tuple[ServerAuth, Any]:
    """The access policy and TLS credentials of a server built from `settings`.

    Tokens are checked by the servicer itself when it can (`lookup_token`, the persistence
    service), else through the persistence service.
    """
    from alphaswarm_common.tls import server_credentials

    lookup = next(
        (r.servicer.lookup_token for r in registrations if hasattr(r.servicer, "lookup_token")), None
    )
    if lookup is None and settings.auth == "tokens" and settings.persistence_addr:
        lookup = remote_token_lookup(settings)
    auth = server_auth_from_settings(settings, lookup)
    return auth, server_credentials(settings, require_client_auth=require_client_auth)


def run_service(
    name: str, build: Callable[[Settings], Sequence[ServiceRegistration]], settings: Settings | None = None
) -> None:
    settings = settings or Settings()
    from alphaswarm_common.observability import log_format, setup

    configure_logging(fmt=log_format(settings), service=name)
    setup(name, settings)
    logger = logging.getLogger(f"alphaswarm.{name}")
    try:
        exposure = check_exposure(settings, [settings.grpc_host])
    except InvalidArgument as exc:
        print(f"{name}: {exc.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    from alphaswarm_common.data import configure_data_roots

    configure_data_roots(settings.resolved_data_roots())
    registrations = build(settings)
    auth, credentials = server_security(settings, registrations)
    server, port = serve(
        registrations,
        host=settings.grpc_host,
        port=settings.grpc_port,
        max_workers=settings.grpc_max_workers,
        tuning=settings.grpc_tuning(),
        auth=auth,
        credentials=credentials,
    )
    transport = "mutual TLS" if credentials is not None else "plaintext"
    logger.info("%s listening on %s:%d (%s; %s)", name, settings.grpc_host, port, transport, exposure)
    print(f"{name} listening on {settings.grpc_host}:{port} ({transport}; {exposure})", flush=True)
    run_until_signal(server, grace=settings.grpc_shutdown_grace_seconds)
