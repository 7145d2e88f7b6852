"""Process settings (`ALPHASWARM_*` environment variables).

Built once in a process entry point (`main()`, `create_app()`, the embedded
launcher) and passed down; no other code reads `os.environ`.

Embedded default: every store lives under `home` (`./.alphaswarm/`): the SQLite
catalog, the MLflow SQLite store and its artifacts; no event bus server (the
gateway's in-process bus). Distributed: point `database_url` at PostgreSQL,
`nats_url` at NATS with JetStream, `MLFLOW_TRACKING_URI` at an MLflow server,
and give each service the addresses of the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from alphaswarm_common.grpc_tuning import GrpcTuning

__all__ = ["Settings", "safe_url"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALPHASWARM_", extra="ignore", frozen=True)

    home: Path = Field(default=Path(".alphaswarm"), description="Folder of the embedded stores.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the catalog; SQLite under home when unset."
    )
    database_password_file: Path | None = Field(
        default=None, description="File holding the catalog database password (kept out of the URL)."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ALPHASWARM_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI; a SQLite store under home when unset.",
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Artifact root for new experiments (file stores)."
    )
    nats_url: str | None = Field(default=None, description="NATS server URL; the in-process bus when unset.")
    ml_prediction_audit_enabled: bool = Field(
        default=False, description="Write MLPredictionAudit rows when a run captures predictions."
    )
    migrate_on_start: bool = Field(
        default=True, description="The persistence service upgrades the catalog schema when it starts."
    )
    chart_worker: bool = Field(
        default=False,
        description=(
            "The embedded stack draws its charts (evaluation plots, equity.png, tearsheets) in a spawned"
            " worker process that imports matplotlib on another core while the services start;"
            " `alphaswarm run` turns it on (one cold run on two cores), long-lived processes draw in place."
        ),
    )

    # Trust (docs/security.md): the registry's signing key and the folders data files may come from.
    registry_signing_key: SecretStr | None = Field(
        default=None, description="HMAC key (at least 32 characters) the registry signs model artifacts with."
    )
    registry_signing_key_file: Path | None = Field(
        default=None,
        description="File holding the registry's HMAC key; <home>/registry/signing.key (made, mode 0600) when unset.",
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders a dataset_cfg.source path may point into (JSON list or os.pathsep-separated); "
        "./data of the working directory when empty.",
    )

    # Addresses of the services (host:port). Unset in embedded mode, where the launcher fills them in.
    trainer_addr: str | None = None
    registry_addr: str | None = None
    backtester_addr: str | None = None
    persistence_addr: str | None = None
    gateway_addr: str | None = None

    # This process's own listening sockets.
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="A plaintext port serving only grpc.health.v1 (Kubernetes gRPC probes); off when unset.",
    )
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)

    # gRPC behaviour.
    grpc_max_message_mb: int = Field(
        default=512, ge=4, description="Limit of the RPCs that carry packed arrays (predictions, prices)."
    )
    grpc_control_message_mb: int = Field(default=32, ge=1, description="Limit of every other RPC.")
    grpc_keepalive_seconds: float = Field(
        default=30.0, gt=0, description="Clients ping an idle connection this often (long calls stay up)."
    )
    grpc_keepalive_timeout_seconds: float = Field(default=20.0, gt=0)
    grpc_min_ping_seconds: float = Field(
        default=10.0, gt=0, description="Servers accept pings this often; at most grpc_keepalive_seconds."
    )
    grpc_retry_attempts: int = Field(default=4, ge=2, le=5, description="Attempts of a call on UNAVAILABLE.")
    grpc_max_connection_age_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Servers close older connections (calls in flight finish); clients re-resolve and balance anew.",
    )
    grpc_max_workers: int = Field(default=8, ge=1)
    grpc_shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    # Deadlines of the saga's calls, in seconds.
    deadline_default_seconds: float = Field(default=30.0, gt=0)
    deadline_train_seconds: float = Field(default=1800.0, gt=0)
    deadline_predict_seconds: float = Field(default=600.0, gt=0)
    deadline_backtest_seconds: float = Field(default=900.0, gt=0)

    # An optimization over more parameter sets than this is split into chunks evaluated by
    # every backtester replica (EvaluateParameterSets), then merged; 0 never splits.
    optimize_chunk_sets: int = Field(
        default=500, ge=0, description="Sets per optimization chunk (0: no split)."
    )
    optimize_chunk_concurrency: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Chunks of one split job its own worker evaluates at once while it waits for them.",
    )
    # A walk-forward test with at least this many windows runs each window's in-sample search as a
    # chunk on the work queue, then merged; 0 never splits.
    walk_forward_split_windows: int = Field(
        default=2, ge=0, description="Windows from which a walk-forward test is split by window (0: never)."
    )

    # The REST gateway refuses larger request bodies with 413 before reading them.
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Request body limit (bytes).")
    # The largest MLflow artifact file the gateway streams to a user (413 above it).
    artifact_download_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Largest artifact file the gateway serves (bytes)."
    )

    # Gateway workers running sagas concurrently in this process.
    gateway_workers: int = Field(default=2, ge=1)

    # Leases, heartbeats and the reaper (docs/architecture.md, "Run lifecycle").
    run_deadline_seconds: float = Field(
        default=7200.0, gt=0, description="Overall deadline of an alpha-backtest run from its first start."
    )
    gateway_lease_seconds: float = Field(
        default=30.0, gt=0, description="A worker's lease on the task it runs; renewed by heartbeats."
    )
    gateway_heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker renews its lease (less than the lease)."
    )
    gateway_reaper_seconds: float = Field(
        default=15.0, gt=0, description="How often each gateway looks for tasks whose lease expired."
    )
    gateway_pending_grace_seconds: float = Field(
        default=300.0, gt=0, description="An accepted task no worker claimed is queued again after this."
    )
    gateway_max_attempts: int = Field(
        default=3, ge=1, description="Attempts (claims) of a task before it is failed."
    )
    gateway_outbox_seconds: float = Field(
        default=600.0, gt=0, description="How long a state change is retried while the catalog is down."
    )
    gateway_ack_wait_seconds: float = Field(
        default=60.0, gt=0, description="JetStream ack wait of a job (extended by in-progress heartbeats)."
    )
    gateway_max_deliver: int = Field(
        default=5, ge=1, description="Deliveries of a job before it goes to the dead-letter subject."
    )

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        if self.gateway_heartbeat_seconds >= self.gateway_lease_seconds:
            raise ValueError(
                "gateway_heartbeat_seconds must be shorter than gateway_lease_seconds "
                "(a lease must be renewed before it expires)"
            )
        return self

    @model_validator(mode="after")
    def _grpc_ends_agree(self) -> Settings:
        self.grpc_tuning()  # raises ValueError naming the setting when the two ends would disagree
        return self

    # Observability (docs/observability.md).
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="Port of /metrics (Prometheus); closed when unset."
    )
    metrics_host: str | None = Field(
        default=None, description="Host /metrics binds; the gRPC (or HTTP, gateway) host when unset."
    )
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ALPHASWARM_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/HTTP collector (http://host:4318) traces are exported to; tracing is off when unset.",
    )
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1, description="Share of new traces recorded.")
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto", description="Log lines as JSON or text; auto: JSON for services, text for the CLI."
    )

    # Authentication and authorization (docs/security.md).
    auth: Literal["none", "tokens", "jwt"] = Field(
        default="none",
        description="How callers prove who they are: none (loopback only), tokens (catalog api_tokens), jwt.",
    )
    insecure: bool = Field(
        default=False, description="Allow auth=none on a non-loopback address (explicit opt-out)."
    )
    token: SecretStr | None = Field(
        default=None, description="Bearer token this process sends as a client (CLI, SDK)."
    )
    service_token_file: Path | None = Field(
        default=None, description="File holding the shared secret internal callers present as role service."
    )
    service_token: SecretStr | None = Field(
        default=None, description="The shared service secret itself (the embedded launcher sets it)."
    )
    bootstrap_admin_token_file: Path | None = Field(
        default=None,
        description="File holding an admin token the persistence service registers (as bootstrap-admin) at start.",
    )
    jwt_issuer: str | None = Field(default=None, description="Expected `iss` of JWT bearer tokens.")
    jwt_audience: str | None = Field(default=None, description="Expected `aud` of JWT bearer tokens.")
    jwt_jwks_file: Path | None = Field(default=None, description="JWKS document (JSON) on disk.")
    jwt_jwks_url: str | None = Field(default=None, description="JWKS URL of the issuer.")
    jwt_role_claim: str = Field(default="role", description="Claim holding viewer/researcher/admin.")
    jwt_subject_claim: str = Field(default="sub", description="Claim naming the caller.")
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    tls_ca: Path | None = Field(default=None, description="CA certificate (PEM) of the service identities.")
    tls_cert: Path | None = Field(default=None, description="This process's certificate (PEM).")
    tls_key: Path | None = Field(default=None, description="This process's private key (PEM).")
    tls_server_name: str | None = Field(
        default=None, description="Name expected in the peers' certificates instead of the dialled host."
    )
    token_cache_seconds: float = Field(
        default=10.0, ge=0, le=300, description="How long a verified token is trusted before re-checking."
    )
    # Abuse limits (per token subject).
    submit_rate_per_minute: float = Field(
        default=60.0, gt=0, description="Sustained submissions per minute and token (token bucket)."
    )
    submit_burst: int = Field(default=20, ge=1, description="Submissions a token may make at once.")
    max_concurrent_runs_per_token: int = Field(
        default=8, ge=1, description="Runs and jobs a token may have pending or running at once."
    )

    def tls_enabled(self) -> bool:
        return bool(self.tls_ca and self.tls_cert and self.tls_key)

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p for p in text.split(os.pathsep) if p.strip()]
        return value

    def resolved_data_roots(self) -> list[Path]:
        """The data roots, absolute and with symlinks resolved (`./data` when none is configured)."""
        return [p.expanduser().resolve() for p in (self.data_roots or [Path("data")])]

    def signing_key_file(self) -> Path:
        return self.registry_signing_key_file or self.resolved_home() / "registry" / "signing.key"

    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    def catalog_url(self) -> str:
        """The catalog URL, with the password of `database_password_file` when one is given.

        Never log it: `safe_url()` renders it with the password hidden.
        """
        if self.database_url:
            if self.database_password_file is None:
                return self.database_url
            return _with_password(self.database_url, self.database_password_file.read_text().strip())
        return f"sqlite:///{self.resolved_home() / 'catalog.db'}"

    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.resolved_home() / 'mlflow.db'}"

    def artifact_root(self) -> str | None:
        if self.mlflow_artifact_root:
            return self.mlflow_artifact_root
        if self.mlflow_tracking_uri and self.mlflow_tracking_uri.startswith(("http://", "https://")):
            return None  # the server decides
        return (self.resolved_home() / "mlartifacts").as_uri()

    @property
    def grpc_max_message_bytes(self) -> int:
        return self.grpc_max_message_mb * 1024 * 1024

    def grpc_tuning(self) -> GrpcTuning:
        """Keepalive, message limits and retries, the same on both ends of every call."""
        return GrpcTuning.from_settings(self)


def _with_password(url: str, password: str) -> str:
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    user = (parts.username or "") if "@" in parts.netloc else ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def safe_url(url: str) -> str:
    """`url` with any password replaced by ***, for logs and messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
