"""The trust-record RPCs (`RecordModelArtifactTrust`, `GetModelArtifactTrust`) over
`repo_model_trust.ModelTrustStore` (the rules of the records are there)."""

from __future__ import annotations

from typing import Any

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.protoconv import timestamp_from_datetime
from alphaswarm_persistence.repo_model_trust import ModelTrustStore, TrustRecord
from alphaswarm_persistence.repository import CatalogRepository

__all__ = ["ModelTrustServicerMixin", "trust_from_proto", "trust_to_proto"]


def trust_from_proto(msg: pb.ModelArtifactTrust) -> TrustRecord:
    return TrustRecord(
        model_name=msg.model_name,
        version=msg.version,
        artifact_uri=msg.artifact_uri,
        sha256=msg.sha256,
        hmac=msg.hmac,
        serialization_format=msg.serialization_format,
        registered_by=msg.registered_by,
    )


def trust_to_proto(record: TrustRecord) -> pb.ModelArtifactTrust:
    msg = pb.ModelArtifactTrust(
        model_name=record.model_name,
        version=record.version,
        artifact_uri=record.artifact_uri,
        sha256=record.sha256,
        hmac=record.hmac,
        serialization_format=record.serialization_format,
        registered_by=record.registered_by,
    )
    if record.registered_at is not None:
        msg.registered_at.CopyFrom(timestamp_from_datetime(record.registered_at))
    return msg


class ModelTrustServicerMixin:
    """The trust-record RPCs for a servicer holding `self.repository`."""

    repository: CatalogRepository

    def RecordModelArtifactTrust(
        self, request: pb.RecordModelArtifactTrustRequest, context: Any
    ) -> pb.RecordModelArtifactTrustResponse:
        stored = ModelTrustStore(self.repository).record(trust_from_proto(request.record))
        return pb.RecordModelArtifactTrustResponse(record=trust_to_proto(stored))

    def GetModelArtifactTrust(
        self, request: pb.GetModelArtifactTrustRequest, context: Any
    ) -> pb.GetModelArtifactTrustResponse:
        record = ModelTrustStore(self.repository).get(request.model_name, request.version)
        return pb.GetModelArtifactTrustResponse(record=trust_to_proto(record))
