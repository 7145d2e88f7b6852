"""Models and deployments over REST: the models overview, deployments with history, and the
roll / promote / rollback / retire actions, on a model a real alpha-backtest run trained and deployed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import yaml

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.protoconv import struct_to_dict
from tests.e2e.conftest import small_run, sse_events

pytestmark = pytest.mark.e2e

MODEL = "e2e-browser-models"


def _run(rest_url: str, **overrides: Any) -> dict[str, Any]:
    body = yaml.safe_dump(small_run(**overrides)).encode()
    resp = httpx.post(rest_url + "/ml/alpha-backtest-runs", content=body, timeout=60)
    assert resp.status_code == 202, resp.text
    sse_events(rest_url + resp.json()["stream_url"])
    run = httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{resp.json()['run_id']}", timeout=30).json()
    assert run["status"] == "succeeded", run
    return run


@pytest.fixture(scope="module")
def runs(rest_url: str) -> list[dict[str, Any]]:
    """Two runs of one model: the second re-trains and rolls the first one's deployment."""
    model_cfg = {"type": "ridge", "params": {"alpha": 10.0}, "name": MODEL}
    first = _run(rest_url, run_name="browser-models-1", model_cfg=model_cfg)
    second = _run(
        rest_url,
        run_name="browser-models-2",
        model_cfg={**model_cfg, "params": {"alpha": 3.0}},
        deployment_id=first["links"]["deployment_id"],
    )
    return [first, second]


def _get(rest_url: str, path: str) -> Any:
    resp = httpx.get(rest_url + path, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _post(rest_url: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(rest_url + path, json=body or {}, timeout=60)


def test_models_overview_has_versions_aliases_headline_metrics_and_runs(
    rest_url: str, runs: list[dict[str, Any]]
) -> None:
    doc = _get(rest_url, "/catalog-views/models")
    model = next(m for m in doc["items"] if m["name"] == MODEL)
    versions = {v["version"]: v for v in model["versions"]}
    assert set(versions) >= {"1", "2"}
    raw = {v["version"]: v for v in _get(rest_url, f"/models/{MODEL}/versions")["items"]}
    fingerprint = load_panel(DatasetConfig.model_validate(small_run()["dataset_cfg"])).fingerprint
    for run in runs:
        v = versions[run["links"]["model_version"]]
        assert v["n_runs"] == 1
        assert v["latest_run"]["run_id"] == run["run_id"]
        assert v["latest_run"]["sharpe"] == run["combined_metrics"]["trading"]["sharpe"]
        assert v["latest_run"]["score"] == run["combined_metrics"]["score"]
        assert v["dataset_fingerprint"] == fingerprint
        for name, value in v["headline"].items():
            tag = raw[v["version"]]["tags"].get(f"alphaswarm.{name}")
            assert value == (float(tag) if tag is not None else None)
    assert model["aliases"] == {a: v for v, mv in raw.items() for a in mv["aliases"]}
    assert {a for v in model["versions"] for a in v["aliases"]} == set(model["aliases"])


def test_deployment_history_and_actions(rest_url: str, runs: list[dict[str, Any]], persistence: Any) -> None:
    dep_id = runs[0]["links"]["deployment_id"]
    assert runs[1]["links"]["deployment_id"] == dep_id
    listed = _get(rest_url, "/deployments?page_size=500")
    dep = next(d for d in listed["items"] if d["deployment_id"] == dep_id)
    assert dep["model_version"] == runs[1]["links"]["model_version"]
    assert [h["version"] for h in dep["history"]] == [runs[0]["links"]["model_version"]]
    # no authentication configured: the caller may do everything
    assert dep["actions"] == {"roll": True, "promote": True, "rollback": True, "retire": True}

    rolled = _post(rest_url, f"/deployments/{dep_id}:rollback")
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["deployment"]["model_version"] == runs[0]["links"]["model_version"]
    assert rolled.json()["previous_model_version"] == runs[1]["links"]["model_version"]

    promoted = _post(
        rest_url, f"/deployments/{dep_id}:promote", {"model_version": runs[1]["links"]["model_version"]}
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["deployment"]["model_version"] == runs[1]["links"]["model_version"]

    roll = _post(
        rest_url, f"/deployments/{dep_id}:roll", {"model_version": runs[0]["links"]["model_version"]}
    )
    assert roll.status_code == 200, roll.text
    assert roll.json()["changed"] is True
    assert roll.json()["deployment"]["model_version"] == runs[0]["links"]["model_version"]
    got = _get(rest_url, f"/deployments/{dep_id}")
    assert len(got["history"]) == 4

    retired = _post(rest_url, f"/deployments/{dep_id}:retire")
    assert retired.status_code == 200, retired.text
    assert retired.json()["deployment"]["state"] == "retired"
    assert not any(retired.json()["deployment"]["actions"].values())
    again = _post(rest_url, f"/deployments/{dep_id}:rollback")
    assert again.status_code == 409, again.text

    # every action is in the audit log, oldest first, with the versions it moved between
    v0, v1 = runs[0]["links"]["model_version"], runs[1]["links"]["model_version"]
    entries = persistence.ListAuditLog(
        ppb.ListAuditLogRequest(target_id=dep_id, page_size=100), timeout=10
    ).entries
    logged = sorted(
        ((e.at.ToDatetime(), e.action, e.target_kind, struct_to_dict(e.detail)) for e in entries),
        key=lambda e: e[0],
    )
    assert [e[1:] for e in logged] == [
        ("rollback", "deployment", {"from": v1, "to": v0}),
        ("promote", "deployment", {"from": v0, "to": v1}),
        ("roll", "deployment", {"from": v1, "to": v0}),
        ("retire", "deployment", {"version": v0}),
    ]


def test_alias_and_bad_action_bodies(rest_url: str, runs: list[dict[str, Any]]) -> None:
    resp = httpx.put(f"{rest_url}/models/{MODEL}/aliases/challenger", json={"version": "1"}, timeout=30)
    assert resp.status_code == 200, resp.text
    assert "challenger" in resp.json()["aliases"]
    model = next(m for m in _get(rest_url, "/catalog-views/models")["items"] if m["name"] == MODEL)
    assert model["aliases"]["challenger"] == "1"
    dep_id = runs[0]["links"]["deployment_id"]
    bad = _post(rest_url, f"/deployments/{dep_id}:promote", {})
    assert bad.status_code == 400 and bad.json()["error"]["details"]["field"] == "model_version"
    extra = _post(rest_url, f"/deployments/{dep_id}:roll", {"model_version": "1", "nope": 1})
    assert extra.status_code == 422
    unknown = _post(rest_url, "/deployments/00000000-0000-0000-0000-000000000000:rollback")
    assert unknown.status_code == 404


def test_alpha_runs_rank_on_the_leaderboard_of_their_dataset(
    rest_url: str, runs: list[dict[str, Any]]
) -> None:
    fingerprint = load_panel(DatasetConfig.model_validate(small_run()["dataset_cfg"])).fingerprint
    for run in runs:
        stored = _get(rest_url, f"/backtests/{run['links']['backtest_id']}")
        assert stored["parameters"]["dataset_fingerprint"] == fingerprint
    board = _get(rest_url, f"/catalog-views/leaderboard/{fingerprint}?limit=100000")
    entries = {e["backtest_id"]: e for e in board["entries"]}
    for run in runs:
        entry = entries[run["links"]["backtest_id"]]
        assert entry["kind"] == "alpha" and entry["run_id"] == run["run_id"]
        assert entry["label"].startswith(f"{MODEL} v{run['links']['model_version']}")
        assert entry["sharpe"] == pytest.approx(run["combined_metrics"]["trading"]["sharpe"], abs=1e-4)
