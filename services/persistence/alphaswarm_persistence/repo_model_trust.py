"""The trust records of registered model versions (`model_artifact_trust`); the RPCs are
`servicer_model_trust`.

The registry writes one record when it registers a version (the artifact's
sha256 and its HMAC-SHA256 over the record, made with a key only the registry
holds) and reads it before every load. This store only keeps the record: it
holds no key and cannot tell a forged HMAC from a real one; the registry
does. A record is written once: recording the same record again returns the
stored one (a retried registration), a different record for a version that
has one is ALREADY_EXISTS, so a version's trust cannot be replaced through
this API.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_persistence.models import ModelArtifactTrustRow
from alphaswarm_persistence.repository import CatalogRepository

__all__ = ["ModelTrustStore", "TrustRecord"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,49}$")
_COMPARED = ("artifact_uri", "sha256", "hmac", "serialization_format")


def _text(value: str, field: str, limit: int, *, required: bool = True) -> str | None:
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return None
    if len(value) > limit:
        raise InvalidArgument(f"{field} is {len(value)} characters long; at most {limit}", field=field)
    return value


def _key(model_name: str, version: str, prefix: str) -> tuple[str, str]:
    name = _text(model_name, f"{prefix}model_name", 255)
    if not _VERSION.match(version or ""):
        raise InvalidArgument(f"version {version!r} is not a positive integer", field=f"{prefix}version")
    assert name is not None
    return name, version


@dataclass(frozen=True)
class TrustRecord:
    """A version's trust record; `registered_at` is set by the store (None on the way in)."""

    model_name: str
    version: str
    artifact_uri: str
    sha256: str
    hmac: str
    serialization_format: str
    registered_by: str = ""
    registered_at: dt.datetime | None = None


def _record(row: ModelArtifactTrustRow) -> TrustRecord:
    return TrustRecord(
        model_name=row.model_name,
        version=row.version,
        artifact_uri=row.artifact_uri,
        sha256=row.sha256,
        hmac=row.hmac,
        serialization_format=row.serialization_format,
        registered_by=row.registered_by or "",
        registered_at=row.registered_at,
    )


class ModelTrustStore:
    """Write-once trust records over the catalog's `Database`."""

    def __init__(self, repository: CatalogRepository) -> None:
        self.db = repository.db

    def record(self, msg: TrustRecord) -> TrustRecord:
        """Store `msg` (see the module docstring); the stored record."""
        name, version = _key(msg.model_name, msg.version, "record.")
        for field in ("sha256", "hmac"):
            if not _HEX64.match(getattr(msg, field)):
                raise InvalidArgument(
                    f"record.{field} must be 64 lowercase hexadecimal digits", field=f"record.{field}"
                )
        row = ModelArtifactTrustRow(
            model_name=name,
            version=version,
            artifact_uri=_text(msg.artifact_uri, "record.artifact_uri", 1000),
            sha256=msg.sha256,
            hmac=msg.hmac,
            serialization_format=_text(msg.serialization_format, "record.serialization_format", 20),
            registered_by=_text(msg.registered_by, "record.registered_by", 200, required=False),
        )
        existing = self._get(name, version)
        if existing is None:
            try:
                with self.db.session(write=True) as s:
                    s.add(row)
            except IntegrityError:  # written concurrently: compare with what won
                existing = self._get(name, version)
                if existing is None:  # pragma: no cover - the conflicting row vanished
                    raise
            else:
                stored = self._get(name, version)
                assert stored is not None
                return _record(stored)
        if any(getattr(existing, f) != getattr(row, f) for f in _COMPARED):
            raise AlreadyExists(
                f"model {name!r} version {version} already has a trust record; it is written once",
                field="record.version",
            )
        return _record(existing)

    def get(self, model_name: str, version: str) -> TrustRecord:
        """The record of (model_name, version); `NotFound` naming `version` when there is none."""
        name, version = _key(model_name, version, "")
        row = self._get(name, version)
        if row is None:
            raise NotFound(f"model {name!r} version {version} has no trust record", field="version")
        return _record(row)

    def _get(self, name: str, version: str) -> ModelArtifactTrustRow | None:
        with self.db.session() as s:
            row = s.get(ModelArtifactTrustRow, (name, version))
            if row is not None:
                s.expunge(row)
            return row
