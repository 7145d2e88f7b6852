"""REST + SSE over a real socket: the seed page's curl, the stream, reads, errors, OpenAPI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import STAGES, small_run, sse_events

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def accepted(rest_url: str) -> dict:
    # Exactly the seed page's call: a YAML document sent with a JSON content type.
    body = yaml.safe_dump(small_run(run_name="rest-e2e", capture_predictions=True)).encode()
    resp = httpx.post(
        f"{rest_url}/ml/alpha-backtest-runs",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 202, resp.text
    doc = resp.json()
    assert set(doc) == {"task_id", "run_id", "status", "stream_url"}
    assert doc["status"] == "pending" and doc["stream_url"] == f"/chat/stream/{doc['task_id']}"
    return doc


def test_stream_relays_every_stage_until_the_terminal_event(rest_url: str, accepted: dict) -> None:
    events = sse_events(rest_url + accepted["stream_url"])
    stages = []
    for e in events:
        if not stages or stages[-1] != e["stage"]:
            stages.append(e["stage"])
    assert stages == STAGES
    assert events[-1]["data"]["run_id"] == accepted["run_id"]
    # A client that connects late still sees everything from the first event.
    late = sse_events(rest_url + accepted["stream_url"])
    assert [e["seq"] for e in late] == [e["seq"] for e in events]
    # Last-Event-ID resumes after the given event.
    resumed = sse_events(rest_url + accepted["stream_url"], headers={"Last-Event-ID": "3"})
    assert [e["seq"] for e in resumed] == [e["seq"] for e in events if e["seq"] > 3]


def test_run_resource_has_status_config_links_and_metrics(rest_url: str, accepted: dict) -> None:
    sse_events(rest_url + accepted["stream_url"])
    doc = httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}", timeout=30).json()
    assert doc["status"] == "succeeded"
    assert doc["config"]["run_name"] == "rest-e2e"
    assert all(
        doc["links"][k]
        for k in ("model_name", "model_version", "deployment_id", "mlflow_parent_run_id", "backtest_id")
    )
    cm = doc["combined_metrics"]
    assert {"ml", "trading", "score"} <= set(cm)
    assert -1 <= cm["score"] <= 1


def test_predictions_are_paginated_and_filterable(rest_url: str, accepted: dict) -> None:
    sse_events(rest_url + accepted["stream_url"])
    base = f"{rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}/predictions"
    first = httpx.get(base, params={"page_size": 100}, timeout=30).json()
    assert first["captured"] is True and len(first["items"]) == 100 and first["next_page_token"]
    seen, token = [], None
    while True:
        page = httpx.get(
            base, params={"page_size": 700, **({"page_token": token} if token else {})}, timeout=30
        ).json()
        seen += [(r["date"], r["symbol"]) for r in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert len(seen) == len(set(seen)) == first["total_size"]
    aapl = httpx.get(base, params={"symbol": "AAPL", "page_size": 10_000}, timeout=30).json()
    assert {r["symbol"] for r in aapl["items"]} == {"AAPL"}
    assert aapl["total_size"] == first["total_size"] // 20


def test_predictions_without_capture_say_why(rest_url: str) -> None:
    resp = httpx.post(
        f"{rest_url}/ml/alpha-backtest-runs", json=small_run(run_name="rest-nocapture"), timeout=60
    )
    run_id = resp.json()["run_id"]
    doc = httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{run_id}/predictions", timeout=30).json()
    assert doc["items"] == [] and doc["captured"] is False and "capture_predictions" in doc["reason"]


def test_list_is_newest_first_and_paginated(rest_url: str, accepted: dict) -> None:
    page = httpx.get(f"{rest_url}/ml/alpha-backtest-runs", params={"page_size": 1}, timeout=30).json()
    assert len(page["items"]) == 1 and page["next_page_token"]
    everything, token = [], None
    while True:
        p = httpx.get(
            f"{rest_url}/ml/alpha-backtest-runs",
            params={"page_size": 2, **({"page_token": token} if token else {})},
            timeout=30,
        ).json()
        everything += p["items"]
        token = p["next_page_token"]
        if not token:
            break
    created = [r["created_at"] for r in everything]
    assert created == sorted(created, reverse=True)
    assert accepted["run_id"] in {r["run_id"] for r in everything}
    assert len({r["run_id"] for r in everything}) == len(everything)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"dataset_cfg: [unclosed", 400, "body"),
        (b"", 400, "body"),
        (b"- just\n- a list\n", 400, "body"),
        (json.dumps({"model_cfg": {"type": "ridge"}}).encode(), 422, "dataset_cfg"),
        (yaml.safe_dump(small_run(backtest_cfg={"fees": -1})).encode(), 422, "backtest_cfg.fees"),
        (yaml.safe_dump(small_run(model_cfg={"type": "nope"})).encode(), 400, "model_cfg.type"),
        (
            yaml.safe_dump(
                small_run(
                    dataset_cfg={
                        **small_run()["dataset_cfg"],
                        "segments": {
                            "train": ["2015-01-01", "2010-01-01"],
                            "test": ["2017-01-01", "2018-01-01"],
                        },
                    }
                )
            ).encode(),
            422,
            "dataset_cfg.segments.train",
        ),
    ],
)
def test_bad_input_is_4xx_naming_the_field(rest_url: str, body: bytes, status: int, field: str) -> None:
    before = httpx.get(f"{rest_url}/ml/alpha-backtest-runs", params={"page_size": 500}, timeout=30).json()
    resp = httpx.post(
        f"{rest_url}/ml/alpha-backtest-runs",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == "INVALID_ARGUMENT"
    assert err["details"]["field"] == field or field in err["message"]
    after = httpx.get(f"{rest_url}/ml/alpha-backtest-runs", params={"page_size": 500}, timeout=30).json()
    assert len(after["items"]) == len(before["items"])  # nothing half-written


def test_unknown_ids_are_404(rest_url: str) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for path in (
        f"/ml/alpha-backtest-runs/{missing}",
        f"/ml/alpha-backtest-runs/{missing}/predictions",
        f"/chat/stream/{missing}",
    ):
        resp = httpx.get(rest_url + path, timeout=30)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "NOT_FOUND"
    resp = httpx.post(
        f"{rest_url}/ml/alpha-backtest-runs",
        json=small_run(train_first=False, deployment_id=missing),
        timeout=30,
    )
    assert resp.status_code == 404


def test_health_readiness_and_openapi(rest_url: str) -> None:
    assert httpx.get(f"{rest_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{rest_url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    spec = httpx.get(f"{rest_url}/openapi.json", timeout=10).json()
    assert {
        "/ml/alpha-backtest-runs",
        "/ml/alpha-backtest-runs/{run_id}",
        "/ml/alpha-backtest-runs/{run_id}/predictions",
        "/chat/stream/{task_id}",
        "/healthz",
        "/readyz",
    } <= set(spec["paths"])
    assert "AlphaBacktestConfig" in spec["components"]["schemas"]
    assert httpx.get(f"{rest_url}/docs", timeout=10).status_code == 200


def test_the_shipped_config_is_accepted_as_the_seed_page_sends_it(rest_url: str) -> None:
    """`curl -d @file` strips CR and LF from the body; the shipped config must survive that."""
    raw = (ROOT / "configs/ml/alpha_backtest/ridge_alpha_backtest.yaml").read_bytes()
    as_curl_sends_it = raw.replace(b"\r", b"").replace(b"\n", b"")
    resp = httpx.post(
        f"{rest_url}/ml/alpha-backtest-runs",
        content=as_curl_sends_it,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == 202, resp.text
    events = sse_events(rest_url + resp.json()["stream_url"])
    assert events[-1]["stage"] == "completed", events[-1]


def test_block_yaml_squashed_onto_one_line_gets_a_hint(rest_url: str) -> None:
    squashed = yaml.safe_dump(small_run()).replace("\n", " ").encode()
    resp = httpx.post(f"{rest_url}/ml/alpha-backtest-runs", content=squashed, timeout=30)
    assert resp.status_code == 400
    assert "--data-binary" in resp.json()["error"]["message"]
