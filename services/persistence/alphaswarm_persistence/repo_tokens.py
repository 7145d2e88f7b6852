"""API tokens and the audit log of the catalog, and their RPCs.

Tokens are stored by sha256 hash only; the caller (the CLI) generates the
token, shows it once and sends its hash. `AccessStore.lookup_token` is the
persistence service's own token check (no RPC); the other services call
`AuthenticateApiToken`. The audit log records who submitted, cancelled or
deleted what; `count_active` counts a subject's pending or running tasks (the
gateway's cap on concurrent runs per token).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from sqlalchemy.exc import IntegrityError

from alphaswarm.persistence.v1 import persistence_service_pb2 as pb
from alphaswarm_common.auth import ROLES, Principal, TokenRecord, current_principal, hash_token
from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
from alphaswarm_common.protoconv import struct_from_dict, timestamp_from_datetime
from alphaswarm_persistence.models import ApiTokenRow, AuditLogRow, TaskRow
from alphaswarm_persistence.repository import (
    CatalogRepository,
    Page,
    _decode_token,
    _encode_token,
    _page_size,
    _parse_token_datetime,
    _parse_token_uuid,
    parse_uuid,
)

__all__ = ["AccessServicerMixin", "AccessStore"]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
ACTIVE_STATES = ("pending", "running")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _token_proto(row: ApiTokenRow) -> pb.ApiToken:
    msg = pb.ApiToken(name=row.name, role=row.role, created_by=row.created_by or "")
    for field in ("created_at", "revoked_at", "expires_at"):
        value = _utc(getattr(row, field))
        if value is not None:
            getattr(msg, field).CopyFrom(timestamp_from_datetime(value))
    return msg


def _audit_proto(row: AuditLogRow) -> pb.AuditEntry:
    msg = pb.AuditEntry(
        audit_id=str(row.audit_id),
        subject=row.subject,
        role=row.role,
        action=row.action,
        target_kind=row.target_kind or "",
        target_id=row.target_id or "",
        task_id=str(row.task_id) if row.task_id else "",
    )
    msg.at.CopyFrom(timestamp_from_datetime(_utc(row.at) or dt.datetime.now(dt.UTC)))
    if row.detail:
        msg.detail.CopyFrom(struct_from_dict(row.detail))
    return msg


def _audit_row(actor: Principal, action: str, name: str, detail: dict[str, Any] | None) -> AuditLogRow:
    return AuditLogRow(
        subject=actor.subject[:200],
        role=actor.role,
        action=action,
        target_kind="api_token",
        target_id=name,
        detail=detail,
        at=dt.datetime.now(dt.UTC),
    )


def _actor() -> Principal:
    return current_principal() or Principal("anonymous", "service", "none")


def _check_text(value: str, field: str, limit: int, *, required: bool = True) -> str | None:
    if not value:
        if required:
            raise InvalidArgument(f"{field} is required", field=field)
        return None
    if len(value) > limit:
        raise InvalidArgument(f"is longer than {limit} characters", field=field)
    return value


class AccessStore:
    def __init__(self, repository: CatalogRepository) -> None:
        self.db = repository.db

    # -- tokens ---------------------------------------------------------------------------------
    def create_token(self, request: pb.CreateApiTokenRequest, actor: Principal) -> pb.ApiToken:
        if not _NAME.match(request.name):
            raise InvalidArgument(
                "must be 1-100 characters of letters, digits and . _ @ : - (starting with a letter or digit)",
                field="name",
            )
        if request.role not in ROLES:
            raise InvalidArgument(f"must be one of {', '.join(ROLES)}", field="role")
        if not _HASH.match(request.token_hash):
            raise InvalidArgument(
                "must be the sha256 of the token, 64 lowercase hex digits", field="token_hash"
            )
        if request.expires_in_seconds < 0:
            raise InvalidArgument("must be 0 (no expiry) or positive", field="expires_in_seconds")
        now = dt.datetime.now(dt.UTC)
        expires = (
            now + dt.timedelta(seconds=request.expires_in_seconds) if request.expires_in_seconds else None
        )
        row = ApiTokenRow(
            name=request.name,
            role=request.role,
            token_hash=request.token_hash,
            created_by=_check_text(request.created_by or actor.subject, "created_by", 200, required=False),
            created_at=now,
            expires_at=expires,
        )
        try:
            with self.db.session(write=True) as s:
                s.add(row)
                s.add(_audit_row(actor, "token.create", request.name, {"role": request.role}))
                s.flush()
                return _token_proto(row)
        except IntegrityError:
            raise AlreadyExists(f"a token named {request.name!r} already exists", field="name") from None

    def revoke_token(self, name: str, actor: Principal) -> pb.ApiToken:
        with self.db.session(write=True) as s:
            row = s.scalars(sa.select(ApiTokenRow).where(ApiTokenRow.name == name)).one_or_none()
            if row is None:
                raise NotFound(f"no token named {name!r}", field="name")
            if row.revoked_at is None:
                row.revoked_at = dt.datetime.now(dt.UTC)
                s.add(_audit_row(actor, "token.revoke", name, None))
            s.flush()
            return _token_proto(row)

    def list_tokens(self, include_revoked: bool) -> list[pb.ApiToken]:
        stmt = sa.select(ApiTokenRow).order_by(ApiTokenRow.name)
        if not include_revoked:
            stmt = stmt.where(ApiTokenRow.revoked_at.is_(None))
        with self.db.session() as s:
            return [_token_proto(r) for r in s.scalars(stmt)]

    def ensure_token(self, name: str, role: str, token: str) -> None:
        """Register `token` under `name` (the bootstrap admin token of a deployment's secret).

        A token of that name is re-keyed to `token` unless it was revoked: revoking it sticks.
        """
        digest = hash_token(token)
        with self.db.session(write=True) as s:
            row = s.scalars(sa.select(ApiTokenRow).where(ApiTokenRow.name == name)).one_or_none()
            if row is None:
                s.add(ApiTokenRow(name=name, role=role, token_hash=digest, created_by="bootstrap"))
                s.add(
                    _audit_row(
                        Principal("bootstrap", "service", "local"), "token.create", name, {"role": role}
                    )
                )
            elif row.revoked_at is None and row.token_hash != digest:
                row.token_hash = digest
                row.role = role

    def find_token(self, token_hash: str) -> ApiTokenRow | None:
        if not _HASH.match(token_hash):
            raise InvalidArgument("must be 64 lowercase hex digits", field="token_hash")
        with self.db.session() as s:
            row = s.scalars(sa.select(ApiTokenRow).where(ApiTokenRow.token_hash == token_hash)).one_or_none()
            if row is not None:
                s.expunge(row)
            return row

    def lookup_token(self, token_hash: str) -> TokenRecord | None:
        """The token check of the persistence service itself."""
        row = self.find_token(token_hash)
        if row is None:
            return None
        expires = _utc(row.expires_at)
        return TokenRecord(
            name=row.name,
            role=row.role,
            token_hash=row.token_hash,
            revoked=row.revoked_at is not None,
            expires_at=expires.timestamp() if expires else None,
        )

    # -- audit log ------------------------------------------------------------------------------
    def append(self, entry: pb.AuditEntry) -> pb.AuditEntry:
        row = AuditLogRow(
            subject=_check_text(entry.subject, "entry.subject", 200),
            role=_check_text(entry.role, "entry.role", 20),
            action=_check_text(entry.action, "entry.action", 50),
            target_kind=_check_text(entry.target_kind, "entry.target_kind", 50, required=False),
            target_id=_check_text(entry.target_id, "entry.target_id", 100, required=False),
            task_id=parse_uuid(entry.task_id or None, "entry.task_id"),
            detail=json_format.MessageToDict(entry.detail) if entry.HasField("detail") else None,
            at=dt.datetime.now(dt.UTC),
        )
        with self.db.session(write=True) as s:
            s.add(row)
            s.flush()
            return _audit_proto(row)

    def list(self, *, subject: str, target_id: str, page_size: int, page_token: str) -> Page[pb.AuditEntry]:
        size = _page_size(page_size, 50, 500)
        filters = {"subject": subject or None, "target_id": target_id or None}
        cursor = _decode_token(page_token, "audit_log", filters, 2)
        model = AuditLogRow
        stmt = sa.select(model)
        if subject:
            stmt = stmt.where(model.subject == subject)
        if target_id:
            stmt = stmt.where(model.target_id == target_id)
        if cursor is not None:
            c_at, c_id = _parse_token_datetime(cursor[0]), _parse_token_uuid(cursor[1])
            stmt = stmt.where(sa.or_(model.at < c_at, sa.and_(model.at == c_at, model.audit_id < c_id)))
        stmt = stmt.order_by(model.at.desc(), model.audit_id.desc()).limit(size + 1)
        with self.db.session() as s:
            rows = list(s.scalars(stmt))
            items = [_audit_proto(r) for r in rows[:size]]
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            at = _utc(last.at)
            assert at is not None
            token = _encode_token("audit_log", [at.isoformat(), str(last.audit_id)], filters)
        return Page(items, token)

    def count_active(self, subject: str) -> int:
        if not subject:
            raise InvalidArgument("subject is required", field="subject")
        stmt = (
            sa.select(sa.func.count(sa.distinct(TaskRow.task_id)))
            .select_from(AuditLogRow)
            .join(TaskRow, TaskRow.task_id == AuditLogRow.task_id)
            .where(AuditLogRow.subject == subject, TaskRow.state.in_(ACTIVE_STATES))
        )
        with self.db.session() as s:
            return int(s.scalar(stmt) or 0)


class AccessServicerMixin:
    """The token and audit RPCs for a servicer holding `self.repository`."""

    repository: CatalogRepository

    def lookup_token(self, token_hash: str) -> TokenRecord | None:
        return AccessStore(self.repository).lookup_token(token_hash)

    def CreateApiToken(self, request: pb.CreateApiTokenRequest, context: Any) -> pb.CreateApiTokenResponse:
        return pb.CreateApiTokenResponse(token=AccessStore(self.repository).create_token(request, _actor()))

    def RevokeApiToken(self, request: pb.RevokeApiTokenRequest, context: Any) -> pb.RevokeApiTokenResponse:
        return pb.RevokeApiTokenResponse(
            token=AccessStore(self.repository).revoke_token(request.name, _actor())
        )

    def ListApiTokens(self, request: pb.ListApiTokensRequest, context: Any) -> pb.ListApiTokensResponse:
        return pb.ListApiTokensResponse(
            tokens=AccessStore(self.repository).list_tokens(request.include_revoked)
        )

    def AuthenticateApiToken(
        self, request: pb.AuthenticateApiTokenRequest, context: Any
    ) -> pb.AuthenticateApiTokenResponse:
        row = AccessStore(self.repository).find_token(request.token_hash)
        if row is None:
            return pb.AuthenticateApiTokenResponse(found=False)
        return pb.AuthenticateApiTokenResponse(found=True, token=_token_proto(row))

    def AppendAuditLog(self, request: pb.AppendAuditLogRequest, context: Any) -> pb.AppendAuditLogResponse:
        return pb.AppendAuditLogResponse(entry=AccessStore(self.repository).append(request.entry))

    def ListAuditLog(self, request: pb.ListAuditLogRequest, context: Any) -> pb.ListAuditLogResponse:
        page = AccessStore(self.repository).list(
            subject=request.subject,
            target_id=request.target_id,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditLogResponse(entries=page.items, next_page_token=page.next_page_token)

    def CountActiveTasks(
        self, request: pb.CountActiveTasksRequest, context: Any
    ) -> pb.CountActiveTasksResponse:
        return pb.CountActiveTasksResponse(count=AccessStore(self.repository).count_active(request.subject))
