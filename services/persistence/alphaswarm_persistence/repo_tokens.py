"""API tokens and the audit log of the catalog (the RPCs are `servicer_tokens`).

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from alphaswarm_common.auth import ROLES, Principal, TokenRecord, hash_token
from alphaswarm_common.errors import AlreadyExists, InvalidArgument, NotFound
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

__all__ = ["ACTIVE_STATES", "AccessStore", "ApiTokenInfo", "AuditRecord"]

_HASH = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,99}$")
ACTIVE_STATES = ("pending", "running")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ApiTokenInfo:
    """A token as it may be shown: never its hash. Timestamps are UTC."""

    name: str
    role: str
    created_by: str = ""
    created_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One audit-log entry; `audit_id` and `at` are set by the store (empty / None on the way in)."""

    subject: str
    role: str
    action: str
    target_kind: str = ""
    target_id: str = ""
    task_id: str = ""
    detail: Mapping[str, Any] | None = None
    audit_id: str = ""
    at: dt.datetime | None = None


def token_info(row: ApiTokenRow) -> ApiTokenInfo:
    return ApiTokenInfo(
        name=row.name,
        role=row.role,
        created_by=row.created_by or "",
        created_at=_utc(row.created_at),
        revoked_at=_utc(row.revoked_at),
        expires_at=_utc(row.expires_at),
    )


def _audit_record(row: AuditLogRow) -> AuditRecord:
    return AuditRecord(
        audit_id=str(row.audit_id),
        subject=row.subject,
        role=row.role,
        action=row.action,
        target_kind=row.target_kind or "",
        target_id=row.target_id or "",
        task_id=str(row.task_id) if row.task_id else "",
        detail=row.detail or None,
        at=_utc(row.at) or dt.datetime.now(dt.UTC),
    )


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
    def create_token(
        self,
        *,
        name: str,
        role: str,
        token_hash: str,
        actor: Principal,
        expires_in_seconds: int = 0,
        created_by: str = "",
    ) -> ApiTokenInfo:
        if not _NAME.match(name):
            raise InvalidArgument(
                "must be 1-100 characters of letters, digits and . _ @ : - (starting with a letter or digit)",
                field="name",
            )
        if role not in ROLES:
            raise InvalidArgument(f"must be one of {', '.join(ROLES)}", field="role")
        if not _HASH.match(token_hash):
            raise InvalidArgument(
                "must be the sha256 of the token, 64 lowercase hex digits", field="token_hash"
            )
        if expires_in_seconds < 0:
            raise InvalidArgument("must be 0 (no expiry) or positive", field="expires_in_seconds")
        now = dt.datetime.now(dt.UTC)
        expires = now + dt.timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
        row = ApiTokenRow(
            name=name,
            role=role,
            token_hash=token_hash,
            created_by=_check_text(created_by or actor.subject, "created_by", 200, required=False),
            created_at=now,
            expires_at=expires,
        )
        try:
            with self.db.session(write=True) as s:
                s.add(row)
                s.add(_audit_row(actor, "token.create", name, {"role": role}))
                s.flush()
                return token_info(row)
        except IntegrityError:
            raise AlreadyExists(f"a token named {name!r} already exists", field="name") from None

    def revoke_token(self, name: str, actor: Principal) -> ApiTokenInfo:
        with self.db.session(write=True) as s:
            row = s.scalars(sa.select(ApiTokenRow).where(ApiTokenRow.name == name)).one_or_none()
            if row is None:
                raise NotFound(f"no token named {name!r}", field="name")
            if row.revoked_at is None:
                row.revoked_at = dt.datetime.now(dt.UTC)
                s.add(_audit_row(actor, "token.revoke", name, None))
            s.flush()
            return token_info(row)

    def list_tokens(self, include_revoked: bool) -> list[ApiTokenInfo]:
        stmt = sa.select(ApiTokenRow).order_by(ApiTokenRow.name)
        if not include_revoked:
            stmt = stmt.where(ApiTokenRow.revoked_at.is_(None))
        with self.db.session() as s:
            return [token_info(r) for r in s.scalars(stmt)]

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
    def append(self, entry: AuditRecord) -> AuditRecord:
        row = AuditLogRow(
            subject=_check_text(entry.subject, "entry.subject", 200),
            role=_check_text(entry.role, "entry.role", 20),
            action=_check_text(entry.action, "entry.action", 50),
            target_kind=_check_text(entry.target_kind, "entry.target_kind", 50, required=False),
            target_id=_check_text(entry.target_id, "entry.target_id", 100, required=False),
            task_id=parse_uuid(entry.task_id or None, "entry.task_id"),
            detail=dict(entry.detail) if entry.detail is not None else None,
            at=dt.datetime.now(dt.UTC),
        )
        with self.db.session(write=True) as s:
            s.add(row)
            s.flush()
            return _audit_record(row)

    def list(self, *, subject: str, target_id: str, page_size: int, page_token: str) -> Page[AuditRecord]:
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
            items = [_audit_record(r) for r in rows[:size]]
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
