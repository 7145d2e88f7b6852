"""Authorization over every front: every REST route (from the app's routes) and every RPC of
every service (from the proto descriptors) with anonymous, viewer, researcher, admin, a revoked
token, an expired JWT and a JWT from another issuer, against a real embedded stack with
`ALPHASWARM_AUTH=tokens` and a gateway with `ALPHASWARM_AUTH=jwt`. A route or RPC without a
rule fails here (and the gateway refuses to start). Also: who did what lands in the audit log,
submission limits answer 429 with Retry-After, and tokens never reach logs or error bodies."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from google.protobuf import message_factory

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.auth import METHOD_ROLES, hash_token, new_token
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials
from tests.auth_helpers import Issuer, expected, service_methods
from tests.e2e.conftest import serving, small_run, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROLES = ("viewer", "researcher", "admin")
JOB = {
    "source": {
        "dataset_cfg": {"source": "sp500", "start_date": "2015-01-01", "end_date": "2016-12-31"},
        "symbols": ["AAPL"],
    },
    "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 5, "slow_period": 20}},
}


class Secured:
    def __init__(self, stack: EmbeddedStack, issuer: Issuer, other: Issuer) -> None:
        self.stack = stack
        self.issuer = issuer
        self.other = other
        self.persistence = ppb_grpc.PersistenceServiceStub(
            channel(stack.settings.persistence_addr or "", credentials=client_credentials(stack.settings))
        )
        self.tokens: dict[str, str] = {}
        self.names: dict[str, str] = {}
        for role in ROLES:
            self.tokens[role] = self.create(role)
        self.tokens["revoked"] = self.create("admin")
        self.persistence.RevokeApiToken(
            ppb.RevokeApiTokenRequest(name=self.names[self.tokens["revoked"]]), timeout=10
        )
        now = int(time.time())
        self.tokens["expired_jwt"] = issuer.token(role="admin", exp=now - 3600, iat=now - 7200)
        self.tokens["wrong_issuer"] = other.token(role="admin")
        self.jwts = {role: issuer.token(role=role, sub=f"jwt-{role}") for role in ROLES}

    def create(self, role: str) -> str:
        token = new_token()
        name = f"{role}-{uuid.uuid4().hex[:8]}"
        self.persistence.CreateApiToken(
            ppb.CreateApiTokenRequest(name=name, role=role, token_hash=hash_token(token)), timeout=10
        )
        self.names[token] = name
        return token

    def jwt_settings(self) -> Settings:
        return self.stack.settings.model_copy(
            update={
                "auth": "jwt",
                "jwt_issuer": self.issuer.issuer,
                "jwt_audience": "alphaswarm",
                "jwt_jwks_file": self.issuer.jwks_file,
                "grpc_port": 0,
            }
        )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured-home")
    keys = tmp_path_factory.mktemp("jwks")
    settings = Settings(
        home=home,
        auth="tokens",
        token_cache_seconds=0,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
    )
    with EmbeddedStack(settings) as stack:
        yield Secured(stack, Issuer(keys), Issuer(keys, issuer="https://evil.test", kid="evil"))


@pytest.fixture(scope="module")
def token_rest(secured: Secured) -> Iterator[tuple[Any, str]]:
    with serving(secured.stack.settings.model_copy(update={"grpc_port": 0}), secured.stack) as served:
        yield served


@pytest.fixture(scope="module")
def jwt_rest(secured: Secured) -> Iterator[tuple[Any, str]]:
    with serving(secured.jwt_settings(), secured.stack, serve_grpc=True) as served:
        yield served


@pytest.fixture(scope="module")
def real_ids(secured: Secured, token_rest: tuple[Any, str]) -> dict[str, str]:
    """Path parameters naming real resources (a finished run, its backtest MLflow run and an
    artifact of it, its model), so the matrix also reaches routes that read them."""
    _, url = token_rest
    headers = {"authorization": f"Bearer {secured.tokens['researcher']}"}
    body = yaml.safe_dump(small_run(run_name="auth-matrix")).encode()
    resp = httpx.post(url + "/ml/alpha-backtest-runs", content=body, headers=headers, timeout=60)
    assert resp.status_code == 202, resp.text
    sse_events(url + resp.json()["stream_url"], headers=headers)
    run = httpx.get(
        f"{url}/ml/alpha-backtest-runs/{resp.json()['run_id']}", headers=headers, timeout=30
    ).json()
    assert run["status"] == "succeeded", run
    return {
        "run_id": run["run_id"],
        "mlflow_run_id": run["links"]["mlflow_backtest_run_id"],
        "path": "series.parquet",
        "name": run["links"]["model_name"],
    }


def _concrete(path: str, values: dict[str, str]) -> str:
    """`path` with each `{param}` (or `{param:converter}`) replaced by its real value, else a new UUID."""
    return re.sub(r"\{([^}:]+)(:[^}]*)?\}", lambda m: values.get(m.group(1), str(uuid.uuid4())), path)


def _outcome_http(resp: httpx.Response) -> str:
    if resp.status_code == 401:
        assert resp.headers.get("www-authenticate", "").startswith("Bearer"), resp.headers
        assert resp.json()["error"]["code"] == "UNAUTHENTICATED"
        return "401"
    if resp.status_code == 403:
        assert resp.json()["error"]["code"] == "PERMISSION_DENIED"
        return "403"
    return "allowed"


def _rest_matrix(
    app: Any, url: str, credentials: dict[str, str | None], values: dict[str, str] | None = None
) -> list[str]:
    from alphaswarm_gateway.auth import route_rules

    rules = route_rules(app)
    assert rules, "no routes"
    mismatches = []
    for (method, path), need in sorted(rules.items()):
        concrete = _concrete(path, values or {})
        for who, token in credentials.items():
            headers = {"authorization": f"Bearer {token}"} if token else {}
            with httpx.Client(timeout=30) as client:
                resp = client.request(method, url + concrete, headers=headers, content=b"")
            got = _outcome_http(resp)
            want = expected(who, need)
            if got != want:
                mismatches.append(f"{method} {path} as {who}: {got} (HTTP {resp.status_code}), want {want}")
    return mismatches


def test_every_rest_route_with_every_credential_tokens_mode(secured: Secured, token_rest: tuple) -> None:
    app, url = token_rest
    creds: dict[str, str | None] = {"anonymous": None, **secured.tokens}
    assert _rest_matrix(app, url, creds) == []


def test_every_rest_route_with_real_ids(
    secured: Secured, token_rest: tuple, real_ids: dict[str, str]
) -> None:
    app, url = token_rest
    creds: dict[str, str | None] = {"anonymous": None, **secured.tokens}
    assert _rest_matrix(app, url, creds, real_ids) == []


@pytest.mark.parametrize(
    "path",
    [
        "/ml/alpha-backtest-runs/{run_id}/mlflow",
        "/ml/alpha-backtest-runs/{run_id}/artifacts/{mlflow_run_id}/{path}",
        "/models",
        "/models/{name}/versions",
    ],
)
def test_a_viewer_reads_mlflow_content_through_the_gateway(
    secured: Secured, token_rest: tuple, real_ids: dict[str, str], path: str
) -> None:
    _, url = token_rest
    concrete = url + _concrete(path, real_ids)
    assert httpx.get(concrete, timeout=60).status_code == 401
    viewer = {"authorization": f"Bearer {secured.tokens['viewer']}"}
    resp = httpx.get(concrete, headers=viewer, timeout=60)
    assert resp.status_code == 200, resp.text
    revoked = {"authorization": f"Bearer {secured.tokens['revoked']}"}
    assert httpx.get(concrete, headers=revoked, timeout=60).status_code == 401


def test_every_rest_route_with_every_credential_jwt_mode(secured: Secured, jwt_rest: tuple) -> None:
    app, url = jwt_rest
    creds: dict[str, str | None] = {
        "anonymous": None,
        **secured.jwts,
        "revoked": secured.tokens["revoked"],  # an API token means nothing to a JWT gateway
        "expired_jwt": secured.tokens["expired_jwt"],
        "wrong_issuer": secured.tokens["wrong_issuer"],
    }
    assert _rest_matrix(app, url, creds) == []


def _call(address: str, method: Any, token: str | None) -> str:
    request_cls = message_factory.GetMessageClass(method.input_type)
    response_cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{method.containing_service.full_name}/{method.name}"
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(address) as ch:
        try:
            if method.server_streaming:
                stream = ch.unary_stream(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request_cls(), metadata=metadata, timeout=30)
                next(iter(stream), None)
            else:
                ch.unary_unary(
                    path,
                    request_serializer=request_cls.SerializeToString,
                    response_deserializer=response_cls.FromString,
                )(request_cls(), metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                return "401"
            if code == grpc.StatusCode.PERMISSION_DENIED:
                return "403"
            assert code != grpc.StatusCode.UNAVAILABLE, (path, exc.details())
    return "allowed"


def _addresses(stack: EmbeddedStack) -> dict[str, str]:
    s = stack.settings
    return {
        "alphaswarm.gateway.v1.AlphaBacktestService": stack.gateway_addr or "",
        "alphaswarm.trainer.v1.TrainerService": s.trainer_addr or "",
        "alphaswarm.registry.v1.RegistryService": s.registry_addr or "",
        "alphaswarm.backtester.v1.BacktesterService": s.backtester_addr or "",
        "alphaswarm.persistence.v1.PersistenceService": s.persistence_addr or "",
    }


def test_every_rpc_of_every_service_with_every_credential(secured: Secured) -> None:
    addresses = _addresses(secured.stack)
    creds: dict[str, str | None] = {"anonymous": None, **secured.tokens}
    mismatches = []
    methods = service_methods()
    assert {m.containing_service.full_name for m in methods} == set(addresses)
    for method in methods:
        path = f"/{method.containing_service.full_name}/{method.name}"
        need = METHOD_ROLES.get(path)
        assert need is not None, f"{path} has no access rule"
        for who, token in creds.items():
            got = _call(addresses[method.containing_service.full_name], method, token)
            want = expected(who, need)
            if got != want:
                mismatches.append(f"{path} as {who}: {got}, want {want}")
    assert mismatches == []


def test_gateway_rpcs_with_jwts(secured: Secured, jwt_rest: tuple) -> None:
    app, _ = jwt_rest
    address = f"127.0.0.1:{app.state.grpc_port}"
    creds: dict[str, str | None] = {
        "anonymous": None,
        **secured.jwts,
        "expired_jwt": secured.tokens["expired_jwt"],
        "wrong_issuer": secured.tokens["wrong_issuer"],
    }
    mismatches = []
    for method in service_methods():
        if method.containing_service.name != "AlphaBacktestService":
            continue
        path = f"/{method.containing_service.full_name}/{method.name}"
        for who, token in creds.items():
            got = _call(address, method, token)
            if got != expected(who, METHOD_ROLES[path]):
                mismatches.append(f"{path} as {who}: {got}")
    assert mismatches == []


def _audit(secured: Secured, **filters: Any) -> list[Any]:
    return list(
        secured.persistence.ListAuditLog(
            ppb.ListAuditLogRequest(page_size=100, **filters), timeout=10
        ).entries
    )


def test_submissions_and_deletions_are_recorded_with_the_token_name(
    secured: Secured, token_rest: tuple
) -> None:
    _, url = token_rest
    researcher = secured.tokens["researcher"]
    name = secured.names[researcher]
    resp = _submit(url, yaml.safe_dump(JOB).encode(), researcher)
    assert resp.status_code == 202, resp.text
    task_id = resp.json()["task_id"]
    (entry,) = _audit(secured, target_id=task_id)
    assert (entry.subject, entry.role, entry.action, entry.target_kind, entry.task_id) == (
        name,
        "researcher",
        "submit",
        "backtest",
        task_id,
    )
    # Wait for the job's backtest, then delete it as admin.
    deadline = time.time() + 120
    task: dict = {}
    while time.time() < deadline:
        task = httpx.get(f"{url}/tasks/{task_id}", headers={"authorization": f"Bearer {researcher}"}).json()
        if task["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.2)
    assert task["status"] == "succeeded", task
    backtest_id = task["result"]["backtest_id"]
    denied = httpx.delete(f"{url}/backtests/{backtest_id}", headers={"authorization": f"Bearer {researcher}"})
    assert denied.status_code == 403
    admin = secured.tokens["admin"]
    gone = httpx.delete(f"{url}/backtests/{backtest_id}", headers={"authorization": f"Bearer {admin}"})
    assert gone.status_code == 204
    (deleted,) = _audit(secured, target_id=backtest_id)
    assert (deleted.subject, deleted.action, deleted.role) == (secured.names[admin], "delete", "admin")
    assert [e.action for e in _audit(secured, subject=secured.names[secured.tokens["revoked"]])] == []


def test_rate_limit_answers_429_with_retry_after_per_token(secured: Secured) -> None:
    limited = secured.stack.settings.model_copy(
        update={"grpc_port": 0, "submit_burst": 1, "submit_rate_per_minute": 1.0}
    )
    body = yaml.safe_dump(JOB).encode()
    with serving(limited, secured.stack) as (_, url):
        token, other = secured.create("researcher"), secured.create("researcher")
        assert _submit(url, body, token).status_code == 202
        second = _submit(url, body, token)
        assert second.status_code == 429
        assert int(second.headers["retry-after"]) >= 1
        assert second.json()["error"]["code"] == "RESOURCE_EXHAUSTED"
        assert _submit(url, body, other).status_code == 202  # another token, another bucket


def test_concurrency_cap_answers_429_while_the_tokens_tasks_run(secured: Secured) -> None:
    capped = secured.stack.settings.model_copy(update={"grpc_port": 0, "max_concurrent_runs_per_token": 1})
    with serving(capped, secured.stack) as (_, url):
        token = secured.create("researcher")
        # A pending task of this token that no worker will pick up.
        task = secured.persistence.CreateTask(
            ppb.CreateTaskRequest(task=resources_pb2.Task(kind="backtest")), timeout=10
        ).task
        entry = ppb.AuditEntry(
            subject=secured.names[token],
            role="researcher",
            action="submit",
            target_id=task.task_id,
            task_id=task.task_id,
        )
        secured.persistence.AppendAuditLog(ppb.AppendAuditLogRequest(entry=entry), timeout=10)
        resp = _submit(url, yaml.safe_dump(JOB).encode(), token)
        assert resp.status_code == 429, resp.text
        assert resp.json()["error"]["reason"] == "TOO_MANY_ACTIVE_RUNS"
        assert resp.headers["retry-after"]


def _submit(url: str, body: bytes, token: str) -> httpx.Response:
    return httpx.post(
        url + "/backtests", content=body, headers={"authorization": f"Bearer {token}"}, timeout=60
    )


def test_tokens_never_reach_logs_or_error_bodies(
    secured: Secured, token_rest: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = token_rest
    bogus = new_token()
    secrets = [bogus, secured.tokens["revoked"], secured.tokens["viewer"], secured.tokens["expired_jwt"]]
    bodies = []
    with caplog.at_level(logging.DEBUG):
        for token in secrets:
            for method, path in (("GET", "/backtests"), ("DELETE", f"/backtests/{uuid.uuid4()}")):
                resp = httpx.request(
                    method, url + path, headers={"authorization": f"Bearer {token}"}, timeout=30
                )
                assert resp.status_code in (200, 401, 403)
                bodies.append(resp.text + str(dict(resp.headers)))
        for token in secrets:
            _call(
                secured.stack.settings.persistence_addr or "", _method("PersistenceService", "GetTask"), token
            )
    text = caplog.text + "".join(bodies)
    for token in secrets:
        assert token not in text
        assert hash_token(token) not in text
    assert secured.stack.settings.service_token is not None
    assert secured.stack.settings.service_token.get_secret_value() not in text + repr(secured.stack.settings)


def _method(service: str, name: str) -> Any:
    return next(m for m in service_methods() if m.containing_service.name == service and m.name == name)


def test_secured_stack_stores_only_hashes(secured: Secured) -> None:
    import sqlite3

    db = Path(secured.stack.settings.catalog_url().removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, token_hash FROM api_tokens").fetchall()
    stored = {h for _, h in rows}
    for token in secured.tokens.values():
        assert token not in stored
    assert hash_token(secured.tokens["viewer"]) in stored


def test_only_the_submitter_or_an_admin_may_act_on_a_task(secured: Secured) -> None:
    import asyncio

    from alphaswarm_common.auth import Principal
    from alphaswarm_common.errors import PermissionDenied
    from alphaswarm_gateway.auth import ensure_owner, record_submission
    from alphaswarm_gateway.core import bootstrap

    async def scenario() -> None:
        gw = bootstrap(secured.stack.settings, tracker=secured.stack.tracker)
        await gw.start(workers=False)
        try:
            task_id = str(uuid.uuid4())
            owner = Principal("owner-" + task_id[:8], "researcher", "token")
            await record_submission(gw, owner, "backtest", task_id)
            assert await ensure_owner(gw, task_id, owner) is owner
            with pytest.raises(PermissionDenied):
                await ensure_owner(gw, task_id, Principal("someone-else", "researcher", "token"))
            admin = Principal("ops", "admin", "token")
            assert await ensure_owner(gw, task_id, admin) is admin
        finally:
            await gw.close()

    asyncio.run(scenario())
