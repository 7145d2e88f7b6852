"""Who may call what: roles, bearer tokens, JWTs, service identities, the gRPC interceptors.

Roles, weakest first: `viewer` (reads), `researcher` (submits runs and jobs),
`admin` (deletes, promotes/rolls back/retires deployments, manages tokens).
`service` is the identity of an internal caller (an mTLS peer whose
certificate names a known service, or the holder of the shared service
secret); it may call every internal method, including the catalog writes no
person may call. `public` marks the few methods anyone may call (health).

Every RPC of every service has a rule in `METHOD_ROLES`; a method without one
is denied. `AuthInterceptor` / `AioAuthInterceptor` enforce the table: no
credentials -> UNAUTHENTICATED, a role too weak -> PERMISSION_DENIED. The
caller's `Principal` is available to the handler through `current_principal()`.

Credentials on the wire: `authorization: Bearer <token>` metadata, where the
token is an API token (sha256-hashed in the catalog table `api_tokens`), a
JWT from the configured issuer, or the shared service secret.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from alphaswarm_common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from alphaswarm_common.grpc_handlers import rewrap

__all__ = [
    "ADMIN",
    "KNOWN_SERVICES",
    "METHOD_ROLES",
    "PUBLIC",
    "RESEARCHER",
    "ROLES",
    "SERVICE",
    "VIEWER",
    "AioAuthInterceptor",
    "AuthInterceptor",
    "Authenticator",
    "ClientCredentials",
    "JwtAuthenticator",
    "Principal",
    "ServerAuth",
    "TokenAuthenticator",
    "TokenRecord",
    "bearer_from_header",
    "current_principal",
    "hash_token",
    "is_loopback",
    "new_token",
    "role_allows",
]

log = logging.getLogger(__name__)

VIEWER = "viewer"
RESEARCHER = "researcher"
ADMIN = "admin"
SERVICE = "service"
PUBLIC = "public"
ROLES: tuple[str, ...] = (VIEWER, RESEARCHER, ADMIN)
_RANK = {VIEWER: 1, RESEARCHER: 2, ADMIN: 3}
KNOWN_SERVICES: frozenset[str] = frozenset({"trainer", "registry", "backtester", "persistence", "gateway"})
TOKEN_PREFIX = "asw_"


def role_allows(have: str, need: str) -> bool:
    """Whether a caller of role `have` may do what needs role `need`."""
    if need == PUBLIC or have == SERVICE:
        return True
    if need == SERVICE:
        return False
    return _RANK.get(have, 0) >= _RANK.get(need, 99)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: `subject` names it (token name, JWT subject, service name)."""

    subject: str
    role: str
    via: str  # token | jwt | mtls | service-token | none | anonymous


ANONYMOUS = Principal("anonymous", PUBLIC, "anonymous")
_CURRENT: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "alphaswarm_principal", default=None
)


def current_principal() -> Principal | None:
    """The caller of the RPC or request being handled (set by the interceptors and the REST guard)."""
    return _CURRENT.get()


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _CURRENT.set(principal)


# -- the method table ---------------------------------------------------------------------------
def _table(service: str, rules: Mapping[str, str]) -> dict[str, str]:
    return {f"/{service}/{method}": role for method, role in rules.items()}


METHOD_ROLES: dict[str, str] = {
    **_table(
        "alphaswarm.gateway.v1.AlphaBacktestService",
        {
            "StartAlphaBacktestRun": RESEARCHER,
            "GetAlphaBacktestRun": VIEWER,
            "ListAlphaBacktestRuns": VIEWER,
            "WatchAlphaBacktestRun": VIEWER,
            "Cancel": RESEARCHER,
        },
    ),
    **_table(
        "alphaswarm.trainer.v1.TrainerService",
        {"Train": RESEARCHER, "TrainWithProgress": RESEARCHER, "ValidateTraining": VIEWER},
    ),
    **_table(
        "alphaswarm.registry.v1.RegistryService",
        {
            "RegisterModel": RESEARCHER,
            "Deploy": RESEARCHER,
            "GetDeployment": VIEWER,
            "ListDeployments": VIEWER,
            "Predict": RESEARCHER,
            "ListRegisteredModels": VIEWER,
            "ListModelVersions": VIEWER,
            "SetModelAlias": ADMIN,
            "PromoteDeployment": ADMIN,
            "RollbackDeployment": ADMIN,
            "RetireDeployment": ADMIN,
        },
    ),
    **_table(
        "alphaswarm.backtester.v1.BacktesterService",
        {
            "RunBacktest": RESEARCHER,
            "ValidateStrategy": VIEWER,
            "RunStrategyBacktest": RESEARCHER,
            "Optimize": RESEARCHER,
            "EvaluateParameterSets": RESEARCHER,
            "WalkForward": RESEARCHER,
            "MonteCarlo": RESEARCHER,
            "RunPortfolioBacktest": RESEARCHER,
        },
    ),
    **_table(
        "alphaswarm.persistence.v1.PersistenceService",
        {
            # Catalog writes come from the services only.
            "CreateAlphaBacktestRun": SERVICE,
            "UpdateAlphaBacktestRun": SERVICE,
            "SaveDeployment": SERVICE,
            "SavePredictionAudit": SERVICE,
            "SaveBacktestResult": SERVICE,
            "SaveOptimizationResults": SERVICE,
            "SaveWalkForwardTests": SERVICE,
            "SavePortfolioBacktest": SERVICE,
            "CreateTask": SERVICE,
            "UpdateTask": SERVICE,
            "AuthenticateApiToken": SERVICE,
            "AppendAuditLog": SERVICE,
            "CountActiveTasks": SERVICE,
            # The registry's signed model records: written and read by the registry only.
            "RecordModelArtifactTrust": SERVICE,
            "GetModelArtifactTrust": SERVICE,
            # Leases of the tasks the gateways run.
            "ClaimTask": SERVICE,
            "RenewTaskLease": SERVICE,
            "ReleaseTaskLease": SERVICE,
            "RecordStageOutput": SERVICE,
            "ReapTasks": SERVICE,
            "CancelTask": SERVICE,
            "DeleteUnclaimedTask": SERVICE,
            # Reads.
            "GetAlphaBacktestRun": VIEWER,
            "ListAlphaBacktestRuns": VIEWER,
            "GetDeployment": VIEWER,
            "ListDeployments": VIEWER,
            "ListPredictionAudit": VIEWER,
            "StreamPredictionAudit": VIEWER,
            "GetBacktestResult": VIEWER,
            "ListBacktestResults": VIEWER,
            "ListDatasetTrials": VIEWER,
            "GetBestBacktest": VIEWER,
            "CompareBacktests": VIEWER,
            "GetPerformanceSummary": VIEWER,
            "ListOptimizationResults": VIEWER,
            "GetOptimizationResult": VIEWER,
            "ListWalkForwardTests": VIEWER,
            "ListBacktestTrades": VIEWER,
            "GetWalkForwardTest": VIEWER,
            "GetPortfolioBacktest": VIEWER,
            "ListPortfolioBacktests": VIEWER,
            "GetTask": VIEWER,
            # Administration.
            "DeleteBacktestResult": ADMIN,
            "CreateApiToken": ADMIN,
            "RevokeApiToken": ADMIN,
            "ListApiTokens": ADMIN,
            "ListAuditLog": ADMIN,
        },
    ),
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    "/grpc.health.v1.Health/List": PUBLIC,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": VIEWER,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": VIEWER,
}


# -- tokens -------------------------------------------------------------------------------------
def new_token() -> str:
    """A fresh API token: 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token (sha256, hex): the catalog never holds the token itself."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_from_header(value: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None when absent."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'", reason="BAD_AUTH_SCHEME")
    return token.strip()


@dataclass(frozen=True)
class TokenRecord:
    """What the catalog knows of a token (never the token itself)."""

    name: str
    role: str
    token_hash: str
    revoked: bool = False
    expires_at: float | None = None  # epoch seconds


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal: ...


class TokenAuthenticator:
    """API tokens looked up by hash (`lookup(hash) -> TokenRecord | None`); known tokens are cached
    for `cache_seconds` (a revocation takes effect within that time)."""

    def __init__(self, lookup: Callable[[str], TokenRecord | None], *, cache_seconds: float = 10.0) -> None:
        self._lookup = lookup
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, TokenRecord | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal:
        digest = hash_token(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            record = hit[1]
        else:
            record = self._lookup(digest)
            if self._ttl > 0 and record is not None:  # a token created a moment ago works at once
                with self._lock:
                    if len(self._cache) > 10_000:
                        self._cache.clear()
                    self._cache[digest] = (now + self._ttl, record)
        if record is None or not hmac.compare_digest(record.token_hash, digest):
            raise Unauthenticated("unknown or revoked token", reason="INVALID_TOKEN")
        if record.revoked:
            raise Unauthenticated("unknown or revoked token", reason="INVALID_TOKEN")
        if record.expires_at is not None and record.expires_at <= time.time():
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED")
        return Principal(record.name, record.role, "token")


class JwtAuthenticator:
    """JWT bearer tokens signed by a key of the issuer's JWKS (file or URL); the role is a claim."""

    ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA")

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | None,
        jwks_file: Path | None = None,
        jwks_url: str | None = None,
        role_claim: str = "role",
        subject_claim: str = "sub",
        leeway: int = 30,
    ) -> None:
        import jwt

        if not issuer:
            raise InvalidArgument("ALPHASWARM_JWT_ISSUER is required with auth=jwt", field="jwt_issuer")
        if not jwks_file and not jwks_url:
            raise InvalidArgument(
                "ALPHASWARM_JWT_JWKS_FILE or ALPHASWARM_JWT_JWKS_URL is required with auth=jwt",
                field="jwt_jwks_file",
            )
        self.issuer = issuer
        self.audience = audience
        self.role_claim = role_claim
        self.subject_claim = subject_claim
        self.leeway = leeway
        self._jwks: Any = jwt.PyJWKSet.from_json(Path(jwks_file).read_text()) if jwks_file else None
        self._client: Any = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url and not jwks_file else None

    def _key(self, token: str) -> Any:
        import jwt

        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if not keys:
            raise Unauthenticated("the token is signed by an unknown key", reason="INVALID_TOKEN")
        return keys[0].key

    def authenticate(self, token: str) -> Principal:
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._key(token),
                algorithms=list(self.ALGORITHMS),
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("the token is from another issuer", reason="INVALID_ISSUER") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is for another audience", reason="INVALID_AUDIENCE") from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise Unauthenticated(f"invalid token: {type(exc).__name__}", reason="INVALID_TOKEN") from None
        role = _strongest_role(claims.get(self.role_claim))
        subject = str(claims.get(self.subject_claim) or "")
        if not subject:
            raise Unauthenticated(f"the token has no {self.subject_claim} claim", reason="INVALID_TOKEN")
        if role is None:
            raise PermissionDenied(
                f"the token's {self.role_claim} claim names none of {', '.join(ROLES)}", reason="NO_ROLE"
            )
        return Principal(subject, role, "jwt")


def _strongest_role(value: Any) -> str | None:
    values = value if isinstance(value, list | tuple) else str(value or "").replace(",", " ").split()
    known = [v for v in values if v in _RANK]
    return max(known, key=_RANK.__getitem__) if known else None


def load_service_secret(settings: Any) -> bytes | None:
    """The shared service secret of `settings` (file or value), or None."""
    if settings.service_token is not None:
        return settings.service_token.get_secret_value().encode()
    if settings.service_token_file is not None:
        value = Path(settings.service_token_file).read_text().strip()
        if not value:
            raise InvalidArgument("the service token file is empty", field="service_token_file")
        return value.encode()
    return None


# -- server side --------------------------------------------------------------------------------
class ServerAuth:
    """The access policy of one server: how callers are authenticated, and the method table."""

    def __init__(
        self,
        *,
        mode: str,
        authenticator: Authenticator | None = None,
        service_secret: bytes | None = None,
        table: Mapping[str, str] = METHOD_ROLES,
        known_services: Iterable[str] = KNOWN_SERVICES,
    ) -> None:
        if mode not in ("none", "tokens", "jwt"):
            raise InvalidArgument(f"auth must be none, tokens or jwt; got {mode!r}", field="auth")
        if mode != "none" and authenticator is None:
            raise InvalidArgument(f"auth={mode} needs an authenticator", field="auth")
        self.mode = mode
        self.authenticator = authenticator
        self.service_secret = service_secret
        self.table = dict(table)
        self.known_services = frozenset(known_services)

    @property
    def enforcing(self) -> bool:
        return self.mode != "none"

    def principal(self, bearer: str | None, peer_identities: Sequence[str] = ()) -> Principal:
        """The caller: a known service by mTLS identity or service secret, else by its bearer token."""
        for name in peer_identities:
            if name in self.known_services:
                return Principal(name, SERVICE, "mtls")
        if bearer and self.service_secret and hmac.compare_digest(bearer.encode(), self.service_secret):
            return Principal("service", SERVICE, "service-token")
        if not self.enforcing:
            return Principal("anonymous", SERVICE, "none")
        if not bearer:
            return ANONYMOUS
        assert self.authenticator is not None
        return self.authenticator.authenticate(bearer)

    def authorize(self, method: str, bearer: str | None, peer_identities: Sequence[str] = ()) -> Principal:
        """The principal allowed to call `method`; Unauthenticated / PermissionDenied otherwise."""
        need = self.table.get(method)
        if need is None:
            raise PermissionDenied(f"{method} has no access rule", reason="NO_ACCESS_RULE")
        if need == PUBLIC:  # health: no credentials needed, none checked
            return ANONYMOUS
        who = self.principal(bearer, peer_identities)
        if who is ANONYMOUS:
            raise Unauthenticated("authentication required: send 'authorization: Bearer <token>'")
        if not role_allows(who.role, need):
            raise PermissionDenied(f"role {who.role} may not call {method.rsplit('/', 1)[-1]} (needs {need})")
        return who


def _metadata_bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return bearer_from_header(value.decode() if isinstance(value, bytes) else str(value))
    return None


def peer_identities(context: Any) -> list[str]:
    """The CN and DNS SANs of a verified client certificate (empty without mTLS)."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # pragma: no cover - contexts without an auth context
        return []
    names = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _wrap_sync(handler: Any, check: Callable[[Any, Any], Principal]) -> Any:
    def unary(behavior: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Any:
            token = _CURRENT.set(check(request, context))
            try:
                return behavior(request, context)
            finally:
                _CURRENT.reset(token)

        return wrapper

    def streaming(behavior: Any) -> Any:
        def wrapper(request: Any, context: Any) -> Any:
            _CURRENT.set(check(request, context))
            yield from behavior(request, context)

        return wrapper

    return rewrap(handler, unary, streaming)


class AuthInterceptor(grpc.ServerInterceptor):
    """Enforce `ServerAuth` on a threaded server (the error interceptor turns denials into statuses)."""

    def __init__(self, auth: ServerAuth) -> None:
        self.auth = auth

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata

        def check(_request: Any, context: Any) -> Principal:
            return self.auth.authorize(method, _metadata_bearer(metadata), peer_identities(context))

        return _wrap_sync(handler, check)


class AioAuthInterceptor(grpc.aio.ServerInterceptor):
    """Enforce `ServerAuth` on an asyncio server; token look-ups run off the event loop."""

    def __init__(self, auth: ServerAuth) -> None:
        self.auth = auth

    async def intercept_service(self, continuation, handler_call_details):  # type: ignore[no-untyped-def]
        import asyncio

        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata

        async def check(context: Any) -> Principal:
            bearer = _metadata_bearer(metadata)
            peers = peer_identities(context)
            if bearer and self.auth.enforcing:
                return await asyncio.to_thread(self.auth.authorize, method, bearer, peers)
            return self.auth.authorize(method, bearer, peers)

        def unary(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                token = _CURRENT.set(await check(context))
                try:
                    return await behavior(request, context)
                finally:
                    _CURRENT.reset(token)

            return wrapper

        def streaming(behavior: Any) -> Any:
            async def wrapper(request: Any, context: Any) -> Any:
                _CURRENT.set(await check(context))
                async for item in behavior(request, context):
                    yield item

            return wrapper

        return rewrap(handler, unary, streaming)


# -- client side --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClientCredentials:
    """How this process calls a service: TLS material (mTLS) and/or a bearer token."""

    tls: grpc.ChannelCredentials | None = None
    bearer: str | None = None
    server_name: str | None = None

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.bearer}"),) if self.bearer else ()


def _with_metadata(details: Any, extra: tuple[tuple[str, str], ...]) -> Any:
    metadata = [*(details.metadata or ()), *extra]
    return details._replace(metadata=metadata)


class _BearerClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, extra: tuple[tuple[str, str], ...]) -> None:
        self.extra = extra

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(client_call_details, self.extra), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(client_call_details, self.extra), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(client_call_details, self.extra), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(_with_metadata(client_call_details, self.extra), request_iterator)


def bearer_interceptor(credentials: ClientCredentials) -> _BearerClientInterceptor:
    return _BearerClientInterceptor(credentials.metadata())


def aio_bearer_interceptors(credentials: ClientCredentials) -> list[Any]:
    extra = credentials.metadata()

    class _Unary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
            return await continuation(_with_metadata(client_call_details, extra), request)

    class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
            return await continuation(_with_metadata(client_call_details, extra), request)

    return [_Unary(), _UnaryStream()]


def is_loopback(host: str) -> bool:
    """Whether `host` binds only the loopback interface."""
    import ipaddress

    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- from settings ------------------------------------------------------------------------------
def authenticator_from_settings(
    settings: Any, lookup: Callable[[str], TokenRecord | None] | None
) -> Authenticator | None:
    """The authenticator of `settings.auth` (token look-ups through `lookup`)."""
    if settings.auth == "jwt":
        return JwtAuthenticator(
            issuer=settings.jwt_issuer or "",
            audience=settings.jwt_audience,
            jwks_file=settings.jwt_jwks_file,
            jwks_url=settings.jwt_jwks_url,
            role_claim=settings.jwt_role_claim,
            subject_claim=settings.jwt_subject_claim,
            leeway=settings.jwt_leeway_seconds,
        )
    if settings.auth == "tokens":
        if lookup is None:
            raise InvalidArgument(
                "auth=tokens needs the persistence service (ALPHASWARM_PERSISTENCE_ADDR) to check tokens",
                field="persistence_addr",
            )
        return TokenAuthenticator(lookup, cache_seconds=settings.token_cache_seconds)
    return None


def server_auth_from_settings(
    settings: Any, lookup: Callable[[str], TokenRecord | None] | None = None
) -> ServerAuth:
    return ServerAuth(
        mode=settings.auth,
        authenticator=authenticator_from_settings(settings, lookup),
        service_secret=load_service_secret(settings),
    )


def check_exposure(settings: Any, hosts: Iterable[str]) -> str:
    """Refuse auth=none on a non-loopback address unless `insecure`; the line to log at start."""
    exposed = sorted({h for h in hosts if not is_loopback(h)})
    if settings.auth != "none":
        return f"authentication: {settings.auth}"
    if exposed and not settings.insecure:
        raise InvalidArgument(
            f"refusing to listen on {', '.join(exposed)} without authentication: set ALPHASWARM_AUTH=tokens "
            "or jwt (docs/security.md), or pass --insecure / ALPHASWARM_INSECURE=true to accept anyone",
            field="auth",
        )
    if exposed:
        return f"authentication: NONE on {', '.join(exposed)} (--insecure): anyone who can connect has full access"
    return "authentication: none (loopback only): every local caller has full access"
