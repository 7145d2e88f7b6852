"""Authentication and authorization building blocks: roles, the method and route tables, API
tokens, JWTs, the exposure check and the submission token bucket."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from alphaswarm_common.auth import (
    ADMIN,
    ANONYMOUS,
    METHOD_ROLES,
    PUBLIC,
    RESEARCHER,
    SERVICE,
    VIEWER,
    JwtAuthenticator,
    ServerAuth,
    TokenAuthenticator,
    TokenRecord,
    bearer_from_header,
    check_exposure,
    hash_token,
    new_token,
    role_allows,
)
from alphaswarm_common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from alphaswarm_common.settings import Settings, safe_url
from tests.auth_helpers import Issuer, every_rpc

pytestmark = pytest.mark.unit


def test_every_rpc_of_every_service_has_a_rule_and_no_rule_is_stale() -> None:
    rpcs = every_rpc()
    assert {m.split("/")[1] for m in rpcs} >= {
        "alphaswarm.gateway.v1.AlphaBacktestService",
        "alphaswarm.trainer.v1.TrainerService",
        "alphaswarm.registry.v1.RegistryService",
        "alphaswarm.backtester.v1.BacktesterService",
        "alphaswarm.persistence.v1.PersistenceService",
    }
    missing = [m for m in rpcs if m not in METHOD_ROLES]
    assert missing == []
    ours = {m for m in METHOD_ROLES if m.startswith("/alphaswarm.")}
    assert ours == set(rpcs)


def test_catalog_writes_are_for_services_and_administration_for_admins() -> None:
    p = "/alphaswarm.persistence.v1.PersistenceService/"
    for method in ("SaveBacktestResult", "CreateTask", "UpdateAlphaBacktestRun", "AuthenticateApiToken"):
        assert METHOD_ROLES[p + method] == SERVICE
    for method in ("DeleteBacktestResult", "CreateApiToken", "RevokeApiToken"):
        assert METHOD_ROLES[p + method] == ADMIN
    r = "/alphaswarm.registry.v1.RegistryService/"
    for method in ("PromoteDeployment", "RollbackDeployment", "RetireDeployment"):
        assert METHOD_ROLES[r + method] == ADMIN


@pytest.mark.parametrize(
    ("have", "need", "ok"),
    [
        (VIEWER, VIEWER, True),
        (VIEWER, RESEARCHER, False),
        (RESEARCHER, VIEWER, True),
        (RESEARCHER, ADMIN, False),
        (ADMIN, RESEARCHER, True),
        (ADMIN, SERVICE, False),
        (SERVICE, ADMIN, True),
        (SERVICE, SERVICE, True),
        ("unknown", VIEWER, False),
        (PUBLIC, VIEWER, False),
        (PUBLIC, PUBLIC, True),
    ],
)
def test_role_order(have: str, need: str, ok: bool) -> None:
    assert role_allows(have, need) is ok


def test_tokens_are_random_and_stored_as_sha256() -> None:
    a, b = new_token(), new_token()
    assert a != b and a.startswith("asw_") and len(a) > 40
    assert len(hash_token(a)) == 64 and hash_token(a) != hash_token(b)
    assert hash_token(a) == hash_token(a)


def test_bearer_header_parsing() -> None:
    assert bearer_from_header(None) is None
    assert bearer_from_header("Bearer abc") == "abc"
    assert bearer_from_header("bearer  abc ") == "abc"
    with pytest.raises(Unauthenticated):
        bearer_from_header("Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthenticated):
        bearer_from_header("Bearer ")


def _store(*records: TokenRecord) -> tuple[TokenAuthenticator, list[str]]:
    calls: list[str] = []
    by_hash = {r.token_hash: r for r in records}

    def lookup(digest: str) -> TokenRecord | None:
        calls.append(digest)
        return by_hash.get(digest)

    return TokenAuthenticator(lookup, cache_seconds=60), calls


def test_token_authenticator_accepts_valid_and_refuses_revoked_expired_unknown() -> None:
    good, revoked, expired = new_token(), new_token(), new_token()
    auth, calls = _store(
        TokenRecord("ci", RESEARCHER, hash_token(good)),
        TokenRecord("old", ADMIN, hash_token(revoked), revoked=True),
        TokenRecord("tmp", VIEWER, hash_token(expired), expires_at=time.time() - 1),
    )
    who = auth.authenticate(good)
    assert (who.subject, who.role, who.via) == ("ci", RESEARCHER, "token")
    auth.authenticate(good)
    assert calls.count(hash_token(good)) == 1  # cached
    for token in (revoked, expired, new_token()):
        with pytest.raises(Unauthenticated):
            auth.authenticate(token)
    assert good not in calls  # only hashes leave the authenticator


def test_server_auth_decides_by_table() -> None:
    token = new_token()
    auth = ServerAuth(
        mode="tokens",
        authenticator=_store(TokenRecord("v", VIEWER, hash_token(token)))[0],
        service_secret=b"s3cret",
    )
    get = "/alphaswarm.persistence.v1.PersistenceService/GetTask"
    save = "/alphaswarm.persistence.v1.PersistenceService/SaveBacktestResult"
    assert auth.authorize(get, token).subject == "v"
    with pytest.raises(PermissionDenied):
        auth.authorize(save, token)
    with pytest.raises(Unauthenticated):
        auth.authorize(get, None)
    assert auth.authorize(save, "s3cret").role == SERVICE
    assert auth.authorize(save, None, ["registry"]).role == SERVICE  # an mTLS service identity
    with pytest.raises(Unauthenticated):
        auth.authorize(get, None, ["intruder"])
    with pytest.raises(PermissionDenied, match="no access rule"):
        auth.authorize("/alphaswarm.trainer.v1.TrainerService/Unlisted", "s3cret")
    assert auth.authorize("/grpc.health.v1.Health/Check", None) is ANONYMOUS


def test_no_auth_mode_lets_everyone_through_the_table_only() -> None:
    auth = ServerAuth(mode="none")
    assert auth.authorize("/alphaswarm.persistence.v1.PersistenceService/CreateTask", None).role == SERVICE
    with pytest.raises(PermissionDenied):
        auth.authorize("/alphaswarm.persistence.v1.PersistenceService/Unlisted", None)


@pytest.fixture()
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


def _jwt(issuer: Issuer, **kw: object) -> JwtAuthenticator:
    args: dict = {"issuer": issuer.issuer, "audience": "alphaswarm", "jwks_file": issuer.jwks_file}
    args.update(kw)
    return JwtAuthenticator(**args)


def test_jwt_valid_token_maps_the_role_claim(issuer: Issuer) -> None:
    auth = _jwt(issuer)
    who = auth.authenticate(issuer.token(role="researcher", sub="bob"))
    assert (who.subject, who.role, who.via) == ("bob", RESEARCHER, "jwt")
    assert auth.authenticate(issuer.token(role=["viewer", "admin"])).role == ADMIN
    custom = _jwt(issuer, role_claim="groups")
    assert custom.authenticate(issuer.token(groups="admin")).role == ADMIN


def test_jwt_refusals(issuer: Issuer, tmp_path: Path) -> None:
    auth = _jwt(issuer)
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="expired"):
        auth.authenticate(issuer.token(exp=now - 3600, iat=now - 7200))
    with pytest.raises(Unauthenticated, match="another issuer"):
        auth.authenticate(issuer.token(iss="https://evil.test"))
    with pytest.raises(Unauthenticated, match="audience"):
        auth.authenticate(issuer.token(aud="someone-else"))
    other = Issuer(tmp_path / "..", issuer=issuer.issuer, kid="k1")  # same kid, another key
    with pytest.raises(Unauthenticated):
        auth.authenticate(other.token())
    with pytest.raises(Unauthenticated):
        auth.authenticate("not.a.jwt")
    with pytest.raises(PermissionDenied):
        auth.authenticate(issuer.token(role="superuser"))


def test_jwt_settings_are_required() -> None:
    with pytest.raises(InvalidArgument) as err:
        JwtAuthenticator(issuer="", audience=None, jwks_file=Path("x"))
    assert err.value.field == "jwt_issuer"
    with pytest.raises(InvalidArgument) as err:
        JwtAuthenticator(issuer="https://i", audience=None)
    assert err.value.field == "jwt_jwks_file"


@pytest.mark.parametrize(
    ("auth", "insecure", "hosts", "outcome"),
    [
        ("none", False, ["127.0.0.1"], "loopback only"),
        ("none", False, ["localhost", "::1"], "loopback only"),
        ("none", False, ["0.0.0.0"], "refuse"),
        ("none", False, ["127.0.0.1", "10.1.2.3"], "refuse"),
        ("none", True, ["0.0.0.0"], "NONE on 0.0.0.0"),
        ("tokens", False, ["0.0.0.0"], "authentication: tokens"),
    ],
)
def test_exposure(auth: str, insecure: bool, hosts: list[str], outcome: str) -> None:
    settings = Settings(auth=auth, insecure=insecure)
    if outcome == "refuse":
        with pytest.raises(InvalidArgument, match="--insecure") as err:
            check_exposure(settings, hosts)
        assert err.value.field == "auth"
    else:
        assert outcome in check_exposure(settings, hosts)


def test_route_table_covers_every_route_and_a_new_route_fails_the_start() -> None:
    from fastapi import APIRouter

    from alphaswarm_gateway import auth
    from alphaswarm_gateway.rest import create_app

    app = create_app(Settings())
    rules = auth.route_rules(app)
    schema_ops = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    assert schema_ops <= set(rules)
    assert rules[("DELETE", "/backtests/{backtest_id}")] == ADMIN
    assert rules[("POST", "/ml/alpha-backtest-runs")] == RESEARCHER
    assert rules[("GET", "/chat/stream/{task_id}")] == VIEWER

    extra = APIRouter()

    @extra.post("/danger", operation_id="unlisted_operation")
    async def danger() -> dict[str, str]:
        return {}

    app.include_router(extra)
    with pytest.raises(RuntimeError, match="unlisted_operation"):
        auth.route_rules(app)


def test_token_bucket_refuses_past_the_burst_and_refills() -> None:
    from alphaswarm_gateway.auth import _Buckets

    buckets = _Buckets(rate_per_minute=60.0, burst=3)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a")
    assert 0 < wait <= 1.0
    assert buckets.take("b") == 0.0  # per subject
    buckets._state["a"] = (0.0, time.monotonic() - 2.0)  # two seconds later: two refilled
    assert buckets.take("a") == 0.0


def test_database_password_comes_from_a_file_and_is_hidden(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss/word\n")
    settings = Settings(
        database_url="postgresql+psycopg://alphaswarm@db:5432/cat", database_password_file=secret
    )
    url = settings.catalog_url()
    assert url == "postgresql+psycopg://alphaswarm:p%40ss%2Fword@db:5432/cat"
    assert "p%40ss" not in safe_url(url) and "***" in safe_url(url)
    from sqlalchemy.engine import make_url

    assert make_url(url).password == "p@ss/word"


def test_jwks_from_a_url(issuer: Issuer) -> None:
    import http.server
    import threading

    body = issuer.jwks_file.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json"
        auth = JwtAuthenticator(issuer=issuer.issuer, audience="alphaswarm", jwks_url=url)
        assert auth.authenticate(issuer.token(role="admin", sub="carol")).subject == "carol"
        with pytest.raises(Unauthenticated):
            auth.authenticate(issuer.token(iss="https://evil.test"))
    finally:
        server.shutdown()
