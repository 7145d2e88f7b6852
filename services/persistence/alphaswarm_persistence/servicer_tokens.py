"""The token and audit-log RPCs over `repo_tokens.AccessStore` (the rules are there).

`AccessRpc` answers with protos for the servicer and for the CLI's local token
commands; `AccessServicerMixin` adds the RPC methods to a servicer holding
`self.repository`.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.auth import Principal, TokenRecord, current_principal
from alphaswarm_common.protoconv import struct_from_dict, timestamp_from_datetime
from alphaswarm_persistence.repo_tokens import AccessStore, ApiTokenInfo, AuditRecord, token_info
from alphaswarm_persistence.repository import CatalogRepository

__all__ = ["AccessRpc", "AccessServicerMixin", "audit_to_proto", "token_to_proto"]


def token_to_proto(token: ApiTokenInfo) -> pb.ApiToken:
    msg = pb.ApiToken(name=token.name, role=token.role, created_by=token.created_by)
    for field in ("created_at", "revoked_at", "expires_at"):
        value = getattr(token, field)
        if value is not None:
            getattr(msg, field).CopyFrom(timestamp_from_datetime(value))
    return msg


def audit_from_proto(entry: pb.AuditEntry) -> AuditRecord:
    return AuditRecord(
        subject=entry.subject,
        role=entry.role,
        action=entry.action,
        target_kind=entry.target_kind,
        target_id=entry.target_id,
        task_id=entry.task_id,
        detail=json_format.MessageToDict(entry.detail) if entry.HasField("detail") else None,
    )


def audit_to_proto(record: AuditRecord) -> pb.AuditEntry:
    msg = pb.AuditEntry(
        audit_id=record.audit_id,
        subject=record.subject,
        role=record.role,
        action=record.action,
        target_kind=record.target_kind,
        target_id=record.target_id,
        task_id=record.task_id,
    )
    if record.at is not None:
        msg.at.CopyFrom(timestamp_from_datetime(record.at))
    if record.detail:
        msg.detail.CopyFrom(struct_from_dict(dict(record.detail)))
    return msg


def _actor() -> Principal:
    return current_principal() or Principal("anonymous", "service", "none")


class AccessRpc:
    """Token requests answered with protos, over an `AccessStore`."""

    def __init__(self, store: AccessStore) -> None:
        self.store = store

    def create(self, request: pb.CreateApiTokenRequest, actor: Principal) -> pb.ApiToken:
        return token_to_proto(
            self.store.create_token(
                name=request.name,
                role=request.role,
                token_hash=request.token_hash,
                actor=actor,
                expires_in_seconds=request.expires_in_seconds,
                created_by=request.created_by,
            )
        )

    def revoke(self, name: str, actor: Principal) -> pb.ApiToken:
        return token_to_proto(self.store.revoke_token(name, actor))

    def list(self, include_revoked: bool) -> list[pb.ApiToken]:
        return [token_to_proto(t) for t in self.store.list_tokens(include_revoked)]


class AccessServicerMixin:
    """The token and audit RPCs for a servicer holding `self.repository`."""

    repository: CatalogRepository

    def _access(self) -> AccessRpc:
        return AccessRpc(AccessStore(self.repository))

    def lookup_token(self, token_hash: str) -> TokenRecord | None:
        return AccessStore(self.repository).lookup_token(token_hash)

    def CreateApiToken(self, request: pb.CreateApiTokenRequest, context: Any) -> pb.CreateApiTokenResponse:
        return pb.CreateApiTokenResponse(token=self._access().create(request, _actor()))

    def RevokeApiToken(self, request: pb.RevokeApiTokenRequest, context: Any) -> pb.RevokeApiTokenResponse:
        return pb.RevokeApiTokenResponse(token=self._access().revoke(request.name, _actor()))

    def ListApiTokens(self, request: pb.ListApiTokensRequest, context: Any) -> pb.ListApiTokensResponse:
        return pb.ListApiTokensResponse(tokens=self._access().list(request.include_revoked))

    def AuthenticateApiToken(
        self, request: pb.AuthenticateApiTokenRequest, context: Any
    ) -> pb.AuthenticateApiTokenResponse:
        row = AccessStore(self.repository).find_token(request.token_hash)
        if row is None:
            return pb.AuthenticateApiTokenResponse(found=False)
        return pb.AuthenticateApiTokenResponse(found=True, token=token_to_proto(token_info(row)))

    def AppendAuditLog(self, request: pb.AppendAuditLogRequest, context: Any) -> pb.AppendAuditLogResponse:
        entry = AccessStore(self.repository).append(audit_from_proto(request.entry))
        return pb.AppendAuditLogResponse(entry=audit_to_proto(entry))

    def ListAuditLog(self, request: pb.ListAuditLogRequest, context: Any) -> pb.ListAuditLogResponse:
        page = AccessStore(self.repository).list(
            subject=request.subject,
            target_id=request.target_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditLogResponse(
            entries=[audit_to_proto(e) for e in page.items], next_page_token=page.next_page_token
        )

    def CountActiveTasks(
        self, request: pb.CountActiveTasksRequest, context: Any
    ) -> pb.CountActiveTasksResponse:
        return pb.CountActiveTasksResponse(count=AccessStore(self.repository).count_active(request.subject))
