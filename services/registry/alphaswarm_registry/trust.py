"""Model artifact trust: the registry signs what it registers and loads only what it signed.

MLflow tags are not trust: anyone who can write to the MLflow store can set
them. The registry is the only writer of trust, and the record lives in the
catalog, not in MLflow:

Registration (`ModelTrust.check_logged` then `ModelTrust.record`)
    The caller (the gateway, an authenticated internal service) passes the
    artifact's sha256 that the trainer returned in its `Train` response. The
    registry copies the logged artifact folder into a private temporary
    folder, hashes the copy and refuses (`MODEL_TAMPERED`) when it differs
    from the claimed sha256. It reads the copy's `MLmodel` with a safe YAML
    parser and refuses any format but skops (`MODEL_NOT_TRUSTED`), and any
    skops file holding a type outside `alphaswarm_common.model_artifacts.TRUSTED_TYPES`
    (read from the file's schema, nothing is built). Only then it creates the
    MLflow version and records, through the persistence service,
    (model name, version, artifact URI, sha256, HMAC-SHA256, format,
    registered_at, registered_by) in `model_artifact_trust`. The HMAC key is
    the registry's own (`load_signing_key`); neither MLflow, the trainer nor
    the catalog holds it.

Loading (`ModelTrust.load`: Deploy, Promote, Rollback, Predict)
    Before anything is deserialised: the version's record must exist
    (`MODEL_NOT_TRUSTED`: not registered through the registry, e.g. created
    directly in the MLflow registry), its HMAC must verify with the key
    (`MODEL_NOT_TRUSTED`: a record written by anyone else), the version's
    MLflow source must be the recorded artifact URI (`MODEL_NOT_TRUSTED`),
    and the bytes must hash to the recorded sha256 (`MODEL_TAMPERED`). The
    artifact is copied to a private folder, the copy is hashed and that same
    copy is loaded with skops and the fixed trusted-type list, so the bytes
    checked are the bytes loaded. Loaded models are cached per process by
    (name, version, sha256); a cached model is served only after the record
    is re-read, its HMAC re-checked and the stored artifact re-hashed, so an
    artifact swapped after deployment is refused on the next call.

A version without a record, or whose record does not verify, is refused
before any byte of it is deserialised: a pickle logged to MLflow with forged
tags never runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import call
from alphaswarm_common.model_artifacts import SERIALIZATION_FORMAT, check_loadable, load_skops_model
from alphaswarm_common.settings import Settings
from alphaswarm_common.tracking import ModelVersionInfo, Tracker, artifact_sha256

__all__ = [
    "MIN_KEY_BYTES",
    "ModelTrust",
    "PersistenceTrustStore",
    "TrustStore",
    "VerifiedModel",
    "load_signing_key",
    "sign_record",
]

MIN_KEY_BYTES = 32
"""The shortest signing key accepted (256 bits)."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CACHE_SIZE = 32
_DOMAIN = b"alphaswarm-model-artifact-v1"


def load_signing_key(settings: Settings) -> bytes:
    """The registry's HMAC key: `registry_signing_key`, else the key file (made when missing).

    The default key file (`<home>/registry/signing.key`) is created with 64
    random bytes (hex) and mode 0600 on first use; a configured key file
    must exist. Keys shorter than `MIN_KEY_BYTES` are refused.
    """
    if settings.registry_signing_key is not None:
        key = settings.registry_signing_key.get_secret_value().strip().encode()
        source = "ALPHASWARM_REGISTRY_SIGNING_KEY"
    else:
        path = settings.signing_key_file()
        source = "the registry signing key file"
        if settings.registry_signing_key_file is None and not path.exists():
            _create_key_file(path)
        try:
            key = path.read_bytes().strip()
        except OSError as exc:
            raise InvalidArgument(
                f"{source} cannot be read ({type(exc).__name__})", field="registry_signing_key_file"
            ) from exc
    if len(key) < MIN_KEY_BYTES:
        raise InvalidArgument(
            f"{source} holds {len(key)} bytes; at least {MIN_KEY_BYTES} are required",
            field="registry_signing_key",
        )
    return key


def _create_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made concurrently by another process
        return
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(64) + "\n")


def sign_record(
    key: bytes, *, model_name: str, version: str, artifact_uri: str, sha256: str, serialization_format: str
) -> str:
    """HMAC-SHA256 (hex) over the record's fields, length-prefixed so no two records share a message."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(_DOMAIN)
    for part in (model_name, version, artifact_uri, sha256, serialization_format):
        data = part.encode()
        mac.update(len(data).to_bytes(8, "big"))
        mac.update(data)
    return mac.hexdigest()


class TrustStore(Protocol):
    """Where trust records live (the persistence service; a fake in unit tests)."""

    def record(self, record: ppb.ModelArtifactTrust) -> ppb.ModelArtifactTrust: ...

    def get(self, model_name: str, version: str) -> ppb.ModelArtifactTrust: ...


class PersistenceTrustStore:
    """`TrustStore` over the persistence service's gRPC API (every call has a deadline)."""

    def __init__(self, stub: ppb_grpc.PersistenceServiceStub, *, deadline: float = 30.0) -> None:
        self.stub = stub
        self.deadline = deadline

    def record(self, record: ppb.ModelArtifactTrust) -> ppb.ModelArtifactTrust:
        out = call(
            self.stub.RecordModelArtifactTrust,
            ppb.RecordModelArtifactTrustRequest(record=record),
            timeout=self.deadline,
            target="persistence",
        )
        return out.record

    def get(self, model_name: str, version: str) -> ppb.ModelArtifactTrust:
        out = call(
            self.stub.GetModelArtifactTrust,
            ppb.GetModelArtifactTrustRequest(model_name=model_name, version=version),
            timeout=self.deadline,
            target="persistence",
        )
        return out.record


@dataclass(frozen=True)
class VerifiedModel:
    """A loaded model whose artifact matched the registry's signed record at load time."""

    model: Any
    version: ModelVersionInfo
    sha256: str
    cached: bool = False


def _not_trusted(label: str, why: str) -> FailedPrecondition:
    return FailedPrecondition(f"{label} {why}; refusing to load it", reason="MODEL_NOT_TRUSTED")


class ModelTrust:
    """Signs registered artifacts and verifies them before any load (see the module docstring)."""

    def __init__(self, tracker: Tracker, store: TrustStore, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise InvalidArgument(f"the signing key must have at least {MIN_KEY_BYTES} bytes", field="key")
        self.tracker = tracker
        self.store = store
        self._key = key
        self._models: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    # -- registration ---------------------------------------------------------------------------
    def check_logged(self, model_uri: str, claimed_sha256: str) -> None:
        """Check a logged model before it is registered: its bytes hash to `claimed_sha256` and it is
        a skops model of trusted types. Nothing is deserialised."""
        if not _SHA256.match(claimed_sha256):
            raise InvalidArgument(
                "model_sha256 (the sha256 the trainer returned for the model) must be 64 lowercase "
                "hexadecimal digits",
                field="model_sha256",
            )
        label = f"the model at {model_uri}"
        with tempfile.TemporaryDirectory(prefix="alphaswarm-register-") as tmp:
            local = self.tracker.fetch_artifact(model_uri, tmp)
            actual = artifact_sha256(local)
            if not hmac.compare_digest(actual, claimed_sha256):
                raise FailedPrecondition(
                    f"{label} has sha256 {actual[:12]}…, not the {claimed_sha256[:12]}… its trainer "
                    "reported; the artifact was modified after it was logged",
                    field="model_sha256",
                    reason="MODEL_TAMPERED",
                )
            check_loadable(local, label=label, field="model_uri")

    def record(
        self, *, model_name: str, version: str, model_uri: str, sha256: str, registered_by: str
    ) -> ppb.ModelArtifactTrust:
        """Sign and store the trust record of a version just registered from `model_uri`."""
        return self.store.record(
            ppb.ModelArtifactTrust(
                model_name=model_name,
                version=version,
                artifact_uri=model_uri,
                sha256=sha256,
                hmac=sign_record(
                    self._key,
                    model_name=model_name,
                    version=version,
                    artifact_uri=model_uri,
                    sha256=sha256,
                    serialization_format=SERIALIZATION_FORMAT,
                ),
                serialization_format=SERIALIZATION_FORMAT,
                registered_by=registered_by[:200],
            )
        )

    # -- loading --------------------------------------------------------------------------------
    def verified_record(self, info: ModelVersionInfo) -> ppb.ModelArtifactTrust:
        """The version's trust record after checking its HMAC and source; `MODEL_NOT_TRUSTED` otherwise."""
        label = f"model {info.name!r} version {info.version}"
        try:
            rec = self.store.get(info.name, info.version)
        except NotFound as exc:
            raise _not_trusted(
                label, "was not registered through the AlphaSwarm registry (no trust record in the catalog)"
            ) from exc
        expected = sign_record(
            self._key,
            model_name=info.name,
            version=info.version,
            artifact_uri=rec.artifact_uri,
            sha256=rec.sha256,
            serialization_format=rec.serialization_format,
        )
        if (rec.model_name, rec.version) != (info.name, info.version) or not hmac.compare_digest(
            expected, rec.hmac
        ):
            raise _not_trusted(label, "has a trust record the registry did not sign")
        if rec.serialization_format != SERIALIZATION_FORMAT:
            raise _not_trusted(label, f"is serialised as {rec.serialization_format!r}")
        if info.source != rec.artifact_uri:
            raise _not_trusted(label, "points at another artifact than the one the registry signed")
        if info.status and info.status != "READY":
            raise FailedPrecondition(f"{label} is {info.status}, not READY", reason="MODEL_NOT_READY")
        return rec

    def load(self, info: ModelVersionInfo) -> VerifiedModel:
        """The model of a registered version, verified against its signed record before loading."""
        rec = self.verified_record(info)
        label = f"model {info.name!r} version {info.version}"
        key = (info.name, info.version, rec.sha256)
        with self._lock:
            cached = self._models.get(key)
            if cached is not None:
                self._models.move_to_end(key)
        if cached is not None:
            self._check_sha(label, self.tracker.hash_artifact(rec.artifact_uri), rec.sha256)
            return VerifiedModel(cached, info, rec.sha256, cached=True)
        with tempfile.TemporaryDirectory(prefix="alphaswarm-model-") as tmp:
            local = self.tracker.fetch_artifact(rec.artifact_uri, tmp)
            self._check_sha(label, artifact_sha256(local), rec.sha256)
            model = load_skops_model(local, label=label)
        if not callable(getattr(model, "predict", None)):
            raise FailedPrecondition(f"{label} has no predict method", reason="MODEL_LOAD_FAILED")
        with self._lock:
            self._models[key] = model
            while len(self._models) > _CACHE_SIZE:
                self._models.popitem(last=False)
        return VerifiedModel(model, info, rec.sha256)

    @staticmethod
    def _check_sha(label: str, actual: str, expected: str) -> None:
        if not hmac.compare_digest(actual, expected):
            raise FailedPrecondition(
                f"{label}: artifact sha256 {actual[:12]}… does not match the registered {expected[:12]}…; "
                "the artifact was modified after registration",
                reason="MODEL_TAMPERED",
            )
