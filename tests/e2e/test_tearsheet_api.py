"""`GET /backtests/{id}/tearsheet.html` over a real socket with token authentication: 401 without a
token, the page for a viewer with the catalog's and the run's numbers, the comparisons the backtester
logged on the MLflow `backtest` run, and the tearsheet itself among that run's artifacts."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from alphaswarm.embedded import EmbeddedStack
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.auth import hash_token, new_token
from alphaswarm_common.grpc_client import channel
from alphaswarm_common.reporting import COMPARISONS_ARTIFACT, TEARSHEET_ARTIFACT, format_metric
from alphaswarm_common.settings import Settings
from alphaswarm_common.tls import client_credentials
from tests.e2e.conftest import serving, small_run, sse_events

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStack, dict[str, str], str]]:
    settings = Settings(
        home=tmp_path_factory.mktemp("tearsheet-home"),
        auth="tokens",
        token_cache_seconds=0,
        database_url=None,
        mlflow_tracking_uri=None,
        nats_url=None,
        gateway_addr=None,
    )
    with EmbeddedStack(settings) as stack:
        stub = ppb_grpc.PersistenceServiceStub(
            channel(stack.settings.persistence_addr or "", credentials=client_credentials(stack.settings))
        )
        tokens = {}
        for role in ("viewer", "researcher"):
            tokens[role] = new_token()
            stub.CreateApiToken(
                ppb.CreateApiTokenRequest(
                    name=f"{role}-{uuid.uuid4().hex[:8]}", role=role, token_hash=hash_token(tokens[role])
                ),
                timeout=10,
            )
        with serving(stack.settings.model_copy(update={"grpc_port": 0}), stack) as (_, url):
            yield stack, tokens, url


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def finished(secured: tuple[EmbeddedStack, dict[str, str], str]) -> dict[str, Any]:
    _, tokens, url = secured
    body = yaml.safe_dump(small_run(run_name="tearsheet-e2e", backtest_cfg={"benchmark": "AAPL"})).encode()
    resp = httpx.post(
        url + "/ml/alpha-backtest-runs", content=body, headers=_auth(tokens["researcher"]), timeout=60
    )
    assert resp.status_code == 202, resp.text
    sse_events(url + resp.json()["stream_url"], headers=_auth(tokens["viewer"]))
    run = httpx.get(
        f"{url}/ml/alpha-backtest-runs/{resp.json()['run_id']}", headers=_auth(tokens["viewer"]), timeout=30
    ).json()
    assert run["status"] == "succeeded", run
    return run  # type: ignore[no-any-return]


def test_the_tearsheet_needs_a_token_and_shows_the_apis_numbers(
    secured: tuple[EmbeddedStack, dict[str, str], str], finished: dict[str, Any]
) -> None:
    stack, tokens, url = secured
    backtest_id = finished["links"]["backtest_id"]
    page_url = f"{url}/backtests/{backtest_id}/tearsheet.html"

    anonymous = httpx.get(page_url, timeout=60)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert "<html" not in anonymous.text

    resp = httpx.get(page_url, headers=_auth(tokens["viewer"]), timeout=120)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in resp.headers["content-security-policy"]
    assert "content-disposition" not in resp.headers
    page = resp.text

    catalog = httpx.get(f"{url}/backtests/{backtest_id}", headers=_auth(tokens["viewer"]), timeout=60).json()
    shown = dict(re.findall(r'data-metric="trading\.([a-z_]+)" data-value="([^"]*)"', page))
    assert set(shown) == set(catalog["metrics"])
    for name, value in catalog["metrics"].items():
        assert shown[name] == ("" if value is None else repr(float(value))), name
    ml_shown = dict(re.findall(r'data-metric="ml\.([a-z_]+)" data-value="([^"]*)"', page))
    for name, value in finished["combined_metrics"]["ml"].items():
        assert ml_shown[name] == ("" if value is None else repr(float(value))), name
    assert ml_shown["score"] == repr(float(finished["combined_metrics"]["score"]))
    assert format_metric("sharpe", catalog["metrics"]["sharpe"]) in page
    # The comparisons logged on the MLflow backtest run are on the page: every chart drew.
    charts = re.findall(r'data-chart="([a-z_]+)"', page)
    assert charts == ["equity", "drawdown", "rolling_sharpe", "monthly_returns", "ic", "ic_decay", "deciles"]
    assert re.search(r"<th>benchmark</th><td>AAPL</td>", page)
    assert re.search(r"(beat|trailed) buy-and-hold of the universe by [0-9.]+ percentage points", page)
    assert "2017-01-03" in page and "long_short_topk" in page and "fees 10.0 bp" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert finished["run_id"] in page and finished["links"]["mlflow_backtest_run_id"] in page

    saved = httpx.get(page_url, params={"download": "true"}, headers=_auth(tokens["viewer"]), timeout=120)
    assert saved.status_code == 200
    assert saved.headers["content-disposition"] == f'attachment; filename="tearsheet-{backtest_id}.html"'

    # The backtester logged the tearsheet and its comparisons on the MLflow backtest run.
    files = {
        a.path
        for a in stack.tracker.client.list_artifacts(finished["links"]["mlflow_backtest_run_id"], "tearsheet")
    }
    assert {TEARSHEET_ARTIFACT, COMPARISONS_ARTIFACT} <= files


def test_unknown_and_malformed_ids(secured: tuple[EmbeddedStack, dict[str, str], str]) -> None:
    _, tokens, url = secured
    missing = httpx.get(
        f"{url}/backtests/{uuid.uuid4()}/tearsheet.html", headers=_auth(tokens["viewer"]), timeout=60
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    bad = httpx.get(f"{url}/backtests/not-a-uuid/tearsheet.html", headers=_auth(tokens["viewer"]), timeout=60)
    assert bad.status_code == 422 and "backtest_id" in bad.text


def test_a_rule_backtest_has_a_tearsheet_from_the_catalog(
    secured: tuple[EmbeddedStack, dict[str, str], str],
) -> None:
    _, tokens, url = secured
    job = {
        "source": {
            "dataset_cfg": {"source": "sp500", "start_date": "2012-01-01", "end_date": "2018-12-31"},
            "symbols": ["AAPL", "MSFT"],
        },
        "strategy_cfg": {"type": "sma_cross", "params": {"fast_period": 10, "slow_period": 30}},
    }
    accepted = httpx.post(
        url + "/backtests",
        content=yaml.safe_dump(job).encode(),
        headers=_auth(tokens["researcher"]),
        timeout=60,
    )
    assert accepted.status_code == 202, accepted.text
    sse_events(url + accepted.json()["stream_url"], headers=_auth(tokens["viewer"]))
    task = httpx.get(
        f"{url}/tasks/{accepted.json()['task_id']}", headers=_auth(tokens["viewer"]), timeout=30
    ).json()
    backtest_id = task["result"]["backtest_id"]
    resp = httpx.get(
        f"{url}/backtests/{backtest_id}/tearsheet.html", headers=_auth(tokens["viewer"]), timeout=120
    )
    assert resp.status_code == 200, resp.text
    page = resp.text
    catalog = httpx.get(f"{url}/backtests/{backtest_id}", headers=_auth(tokens["viewer"]), timeout=60).json()
    shown = dict(re.findall(r'data-metric="trading\.([a-z_]+)" data-value="([^"]*)"', page))
    assert shown == {k: ("" if v is None else repr(float(v))) for k, v in catalog["metrics"].items()}
    assert re.findall(r'data-chart="([a-z_]+)"', page) == [
        "equity",
        "drawdown",
        "rolling_sharpe",
        "monthly_returns",
    ]
    assert (
        "rule strategy" in page and "2 symbols: AAPL, MSFT" in page and "&quot;fast_period&quot;: 10" in page
    )
    trades = httpx.get(
        f"{url}/backtests/{backtest_id}/trades", headers=_auth(tokens["viewer"]), timeout=60
    ).json()
    assert f"<th>trades</th><td>{trades['total_size']} (" in page
