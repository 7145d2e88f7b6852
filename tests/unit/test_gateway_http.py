"""The REST gateway's input limits and error hygiene, over a gateway whose upstreams are fakes.

* bodies above `ALPHASWARM_MAX_BODY_BYTES` answer 413 with the error body, decided from
  `Content-Length` before the body is read, or while a chunked body streams in;
* bodies are parsed off the event loop: `/healthz` answers while a 9 MB YAML body is parsed;
* invalid UTF-8, lone surrogates and integers beyond a proto int32 answer 4xx naming the field;
* `/openapi.json` resolves every `$ref`; `/docs` and `/redoc` load only local assets;
* a dependency that is down is 503 with `Retry-After`; a 500 carries no text of the failure,
  only a generic message and the request id, which every response echoes in `X-Request-ID`.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient

from alphaswarm_common.settings import Settings
from alphaswarm_gateway.errors import RETRY_AFTER_SECONDS
from alphaswarm_gateway.rest import create_app
from alphaswarm_gateway.routes import runs as runs_routes
from tests.uvicorn_server import serve_in_thread

pytestmark = pytest.mark.unit

LIMIT = 1024 * 1024  # 1 MiB in these tests (the default is 16 MiB)


class _Unavailable(grpc.aio.AioRpcError):
    def __init__(self, details: str) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details
        )


class _Internal(grpc.aio.AioRpcError):
    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.INTERNAL, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class _Stub:
    """A persistence stub whose every method fails the way its `failure` says."""

    def __init__(self) -> None:
        self.failure: grpc.aio.AioRpcError | None = None
        self.requests: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        async def method(request: Any, timeout: float) -> Any:
            self.requests.append(request)
            if self.failure is not None:
                raise self.failure
            raise AssertionError(f"unexpected call {name}")

        return method


class _Clients:
    def __init__(self) -> None:
        self.persistence = _Stub()
        self.backtester = _Stub()


class _Bus:
    async def publish(self, event: Any) -> None:
        import nats.errors

        raise nats.errors.NoServersError()


class FakeGateway:
    """What the REST layer asks of a gateway, with upstreams that fail on demand."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients = _Clients()
        self.bus = _Bus()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def readiness(self) -> dict[str, Any]:
        return {"persistence": "SERVING", "event_bus": "SERVING", "ready": True}

    async def list_runs(self, **_: Any) -> Any:
        raise RuntimeError(
            "(psycopg.errors.UndefinedColumn) column x does not exist [SQL: SELECT secret FROM t "
            "WHERE id = %(id)s] [parameters: {'id': 'hunter2'}] at /srv/app/db.py on db.internal:5432"
        )


def _settings() -> Settings:
    return Settings(max_body_bytes=LIMIT, grpc_port=0)


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway(_settings())


@pytest.fixture
def client(gateway: FakeGateway) -> Iterator[TestClient]:
    app = create_app(gateway.settings, gateway=gateway, serve_grpc=False)  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """The app under uvicorn on a real socket (chunked bodies, concurrent requests), default limit."""
    settings = Settings(grpc_port=0)
    assert settings.max_body_bytes == 16 * 1024 * 1024
    app = create_app(settings, gateway=FakeGateway(settings), serve_grpc=False)  # type: ignore[arg-type]
    with serve_in_thread(app) as url:
        yield url


def _error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "reason", "message", "details"}
    assert body["error"]["details"]["request_id"] == resp.headers["x-request-id"]
    return dict(body["error"])


# ----------------------------------------------------------------------------- body limit


def test_a_20mb_body_is_413_with_the_error_body(client: TestClient) -> None:
    resp = client.post("/backtests", content=b"x" * (20 * 1024 * 1024))
    assert resp.status_code == 413
    err = _error(resp)
    assert err["reason"] == "BODY_TOO_LARGE"
    assert err["details"]["limit_bytes"] == LIMIT
    assert err["details"]["field"] == "body"


def test_a_declared_length_above_the_limit_is_refused_before_the_body_is_sent(server_url: str) -> None:
    host, port = server_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /backtests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {20 * 1024 * 1024}\r\n\r\n".encode()
            + b"{"  # one byte of the twenty megabytes announced
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["reason"] == "BODY_TOO_LARGE"


def test_a_chunked_body_is_counted_while_it_streams(server_url: str) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(320):  # 320 x 64 KiB = 20 MiB, above the 16 MiB limit
            sent += 65536
            yield b"a" * 65536

    with httpx.Client(timeout=30) as http:
        try:
            resp = http.post(f"{server_url}/ml/alpha-backtest-runs", content=chunks())
        except httpx.TransportError:  # the server may close before the client stops writing
            pytest.fail("the server closed the connection without answering 413")
    assert resp.status_code == 413
    assert _error(resp)["reason"] == "BODY_TOO_LARGE"
    assert resp.request.headers.get("transfer-encoding") == "chunked"


def test_a_body_under_the_limit_reaches_the_route(client: TestClient) -> None:
    resp = client.post("/ml/alpha-backtest-runs", content=b"run_name: [unclosed")
    assert resp.status_code == 400
    assert _error(resp)["details"]["field"] == "body"


# ----------------------------------------------------------------------------- parsing off the loop


def test_healthz_answers_while_a_9mb_yaml_body_is_parsed(
    server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse_started = threading.Event()
    parse_finished = threading.Event()
    real_parse = runs_routes.parse_config_body

    def observed_parse(raw: bytes) -> Any:
        parse_started.set()
        try:
            return real_parse(raw)
        finally:
            parse_finished.set()

    monkeypatch.setattr(runs_routes, "parse_config_body", observed_parse)
    # ~9 MB of YAML: a run config whose model params carry a long block-style list.
    lines = ["run_name: big", "model_cfg:", "  type: ridge", "  params:", "    values:"]
    lines += [f"      - {{k: {i}, v: value-{i}}}" for i in range(300_000)]
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) > 9_000_000
    big: dict[str, Any] = {}

    def send_big() -> None:
        with httpx.Client(timeout=120) as http:
            big["response"] = http.post(
                f"{server_url}/ml/alpha-backtest-runs",
                content=body,
                headers={"content-type": "application/x-yaml"},
            )

    sender = threading.Thread(target=send_big)
    sender.start()
    assert parse_started.wait(60), "the big body never reached the parser"
    with httpx.Client(timeout=60) as http:
        health = http.get(f"{server_url}/healthz")
    answered_while_parsing = not parse_finished.is_set()
    sender.join(120)
    assert health.status_code == 200
    assert answered_while_parsing, "/healthz waited for the YAML parse: it runs on the event loop"
    assert big["response"].status_code == 422  # the document parsed; the config is incomplete


# ----------------------------------------------------------------------------- bad text and numbers


def test_invalid_utf8_is_400_naming_the_body(client: TestClient) -> None:
    for path in ("/ml/alpha-backtest-runs", "/backtests"):
        resp = client.post(
            path, content=b'{"run_name": "\xff\xfe"}', headers={"content-type": "application/json"}
        )
        assert resp.status_code == 400, path
        err = _error(resp)
        assert err["reason"] == "INVALID_ENCODING"
        assert err["details"]["field"] == "body"


def test_a_lone_surrogate_is_4xx_never_500(client: TestClient) -> None:
    doc = b'{"source": {"dataset_cfg": {"source": "sp500"}}, "strategy_cfg": {"type": "\\ud800"}}'
    resp = client.post("/backtests", content=doc, headers={"content-type": "application/json"})
    assert resp.status_code == 400
    err = _error(resp)
    assert err["reason"] == "INVALID_TEXT"
    assert err["details"]["field"] == "strategy_cfg.type"
    yaml_doc = b'strategy_cfg: {type: "\\ud800"}'
    resp = client.post("/backtests", content=yaml_doc, headers={"content-type": "application/x-yaml"})
    assert resp.status_code == 400
    assert _error(resp)["details"]["field"] == "body"
    resp = client.post(
        "/backtests/compare",
        content=b'{"backtest_ids": ["00000000-0000-0000-0000-000000000001",'
        b' "00000000-0000-0000-0000-000000000002"], "metrics": ["\\ud800"]}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 422
    assert _error(resp)["details"]["field"] == "metrics.0"


@pytest.mark.parametrize(
    "body", [b'{"n_simulations": ' + b"1" * 5000 + b"}", b"n_simulations: " + b"1" * 5000]
)
def test_an_integer_of_thousands_of_digits_is_400(client: TestClient, body: bytes) -> None:
    resp = client.post("/monte-carlo", content=body)
    assert resp.status_code == 400
    err = _error(resp)
    assert err["details"]["field"] == "body"
    assert "more than 4300 digits" in err["message"]


def test_a_yaml_alias_bomb_is_400_before_it_is_walked(client: TestClient) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")  # 9**9 values in all
    resp = client.post("/backtests", content="\n".join(levels).encode())
    assert resp.status_code == 400
    err = _error(resp)
    assert err["reason"] == "DOCUMENT_TOO_COMPLEX"
    assert err["details"]["field"] == "body"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/backtests/best?metric=sharpe_ratio&min_trades=31246074238", "min_trades"),
        ("/backtests?page_size=99999999999999", "page_size"),
        ("/backtests/summary?days=31246074238", "days"),
        ("/backtests/00000000-0000-0000-0000-000000000001/trades?page_size=31246074238", "page_size"),
        ("/ml/alpha-backtest-runs?page_size=31246074238", "page_size"),
    ],
)
def test_query_integers_beyond_int32_are_422_naming_the_field(
    client: TestClient, url: str, field: str
) -> None:
    resp = client.get(url)
    assert resp.status_code == 422
    assert _error(resp)["details"]["field"] == field


@pytest.mark.parametrize(
    ("path", "doc", "field"),
    [
        (
            "/optimizations",
            {"source": {"dataset_cfg": {}}, "strategy_type": "sma_cross", "grid": {"a": [1]}, "seed": 2**40},
            "seed",
        ),
        (
            "/walk-forward-tests",
            {
                "source": {"dataset_cfg": {}},
                "strategy_type": "sma_cross",
                "grid": {"a": [1]},
                "in_sample_bars": 31246074238,
            },
            "in_sample_bars",
        ),
        ("/monte-carlo", {"returns": [0.01, -0.01], "block_length": 2**31}, "block_length"),
        (
            "/backtests",
            {
                "source": {"dataset_cfg": {"label": {"horizon": 31246074238}}},
                "strategy_cfg": {"type": "sma_cross"},
            },
            "source.dataset_cfg.label.horizon",
        ),
        (
            "/portfolio-backtests",
            {
                "dataset_cfg": {"source": "synthetic", "synthetic": {"seed": -(2**40)}},
                "legs": [{"symbol": "AAA"}],
                "portfolio_name": "p",
            },
            "dataset_cfg.synthetic.seed",
        ),
    ],
)
def test_job_integers_beyond_int32_are_422_naming_the_field(
    client: TestClient, path: str, doc: dict[str, Any], field: str
) -> None:
    resp = client.post(path, json=doc)
    assert resp.status_code == 422, resp.text
    assert _error(resp)["details"]["field"] == field


def test_run_config_integers_beyond_int32_are_422_naming_the_field(client: TestClient) -> None:
    segments = {"train": ["2010-01-01", "2015-12-31"], "test": ["2017-01-03", "2018-12-31"]}
    doc = {
        "dataset_cfg": {"segments": segments, "label": {"horizon": 31246074238}},
        "model_cfg": {"type": "ridge"},
        "strategy_cfg": {"type": "long_short_topk"},
    }
    resp = client.post("/ml/alpha-backtest-runs", json=doc)
    assert resp.status_code == 422, resp.text
    assert _error(resp)["details"]["field"] == "dataset_cfg.label.horizon"


# ----------------------------------------------------------------------------- OpenAPI and docs


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
        node = node[part]
    return node


def test_every_ref_of_the_openapi_document_resolves(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert len(refs) > 50
    for ref in refs:
        _resolve(doc, ref)
    assert "Segments" in doc["components"]["schemas"]
    backtests = doc["paths"]["/backtests"]["post"]["responses"]
    assert {"413", "500", "503"} <= set(backtests)
    assert "Retry-After" in backtests["503"]["headers"]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_load_only_local_assets(client: TestClient, page: str) -> None:
    resp = client.get(page)
    assert resp.status_code == 200
    parser = _Links()
    parser.feed(resp.text)
    assert parser.urls, "the page links no assets"
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, url
    scripts = re.findall(r"url:\s*'([^']+)'|spec-url=\"([^\"]+)\"", resp.text)
    assert [u for pair in scripts for u in pair if u] == ["/openapi.json"]
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", resp.text), "the page names another host"


# ----------------------------------------------------------------------------- errors


def test_a_500_carries_a_generic_message_and_the_request_id(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="alphaswarm_gateway.errors"):
        resp = client.get("/ml/alpha-backtest-runs", headers={"X-Request-ID": "trace-42"})
    assert resp.status_code == 500
    assert resp.headers["x-request-id"] == "trace-42"
    err = _error(resp)
    assert err["code"] == "INTERNAL"
    for leaked in ("SELECT", "hunter2", "/srv/app", "db.internal", "5432", "psycopg", "RuntimeError"):
        assert leaked not in resp.text
    assert "trace-42" in caplog.text and "SELECT secret" in caplog.text


def test_a_request_id_is_generated_when_none_or_a_bad_one_is_sent(client: TestClient) -> None:
    first = client.get("/healthz")
    second = client.get("/healthz", headers={"X-Request-ID": "bad id\twith spaces"})
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["x-request-id"])
    assert re.fullmatch(r"[0-9a-f]{32}", second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def test_an_upstream_that_is_down_is_503_with_retry_after(client: TestClient, gateway: FakeGateway) -> None:
    gateway.clients.persistence.failure = _Unavailable(
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:50051: Connection refused"
    )
    resp = client.get("/backtests")
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    err = _error(resp)
    assert err["code"] == "UNAVAILABLE"
    assert err["details"]["dependency"] == "persistence"
    assert "10.1.2.3" not in resp.text and "50051" not in resp.text


def test_an_upstream_internal_error_is_500_without_its_text(client: TestClient, gateway: FakeGateway) -> None:
    gateway.clients.persistence.failure = _Internal("OperationalError: SELECT * FROM mcp_backtest_results")
    resp = client.get("/backtests/summary")
    assert resp.status_code == 500
    assert "SELECT" not in resp.text and "OperationalError" not in resp.text
    assert _error(resp)["code"] == "INTERNAL"


def test_the_event_bus_down_is_503(client: TestClient, gateway: FakeGateway) -> None:
    from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb

    async def create_task(request: Any, timeout: float) -> Any:
        return ppb.CreateTaskResponse(task=request.task, created=True)

    async def validate(request: Any, timeout: float) -> Any:
        from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb

        return bpb.ValidateStrategyResponse(kind="rule")

    withdrawn: list[Any] = []

    async def delete_unclaimed(request: Any, timeout: float) -> Any:
        withdrawn.append(request.task_id)
        return ppb.DeleteUnclaimedTaskResponse(deleted=True)

    gateway.clients.persistence.CreateTask = create_task  # type: ignore[attr-defined]
    gateway.clients.persistence.DeleteUnclaimedTask = delete_unclaimed  # type: ignore[attr-defined]
    gateway.clients.backtester.ValidateStrategy = validate  # type: ignore[attr-defined]
    resp = client.post("/monte-carlo", json={"returns": [0.01, -0.02, 0.03]})
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == str(RETRY_AFTER_SECONDS)
    assert _error(resp)["details"]["dependency"] == "event bus"
    # The accepted task is not left pending: it is withdrawn in the same request.
    assert len(withdrawn) == 1


def test_unknown_routes_and_methods_use_the_error_body(client: TestClient) -> None:
    assert _error(client.get("/no-such-thing"))["code"] == "NOT_FOUND"
    resp = client.put("/healthz")
    assert resp.status_code == 405
    _error(resp)
