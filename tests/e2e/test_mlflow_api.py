"""MLflow content through the gateway, over a real socket: a finished run's MLflow runs with
their metrics and artifacts, artifact downloads checked against MLflow's own bytes, the
confinement of downloads to the run's MLflow runs and artifact folder, and the registered
models and versions read through the registry."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from alphaswarm.embedded import EmbeddedStack
from tests.e2e.conftest import serving, small_run, sse_events

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def finished(rest_url: str) -> dict[str, Any]:
    """A finished alpha-backtest run started over REST: its accepted envelope and run resource."""
    body = yaml.safe_dump(small_run(run_name="mlflow-api-e2e")).encode()
    resp = httpx.post(f"{rest_url}/ml/alpha-backtest-runs", content=body, timeout=60)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    sse_events(rest_url + accepted["stream_url"])
    run = httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{accepted['run_id']}", timeout=30).json()
    assert run["status"] == "succeeded", run
    return run


@pytest.fixture(scope="module")
def links(rest_url: str, finished: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{finished['run_id']}/mlflow", timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def _artifact_url(rest_url: str, run_id: str, mlflow_run_id: str, path: str) -> str:
    return f"{rest_url}/ml/alpha-backtest-runs/{run_id}/artifacts/{mlflow_run_id}/{path}"


def test_links_name_the_three_mlflow_runs_with_metrics_params_and_artifacts(
    stack: EmbeddedStack, finished: dict[str, Any], links: dict[str, Any]
) -> None:
    client = stack.tracker.client
    run_links = finished["links"]
    assert links["run_id"] == finished["run_id"]
    for role in ("parent", "train", "backtest"):
        view = links[role]
        assert view["role"] == role
        assert view["run_id"] == run_links[f"mlflow_{role}_run_id"], (role, run_links)
        assert view["status"] == "FINISHED"
        truth = client.get_run(view["run_id"])
        assert view["metrics"] == pytest.approx(dict(truth.data.metrics))
        assert view["params"] == dict(truth.data.params)
        assert view["tags"] == dict(truth.data.tags)
        assert view["metrics"], role
    # The children point at the parent, as MLflow records it.
    assert links["train"]["tags"]["mlflow.parentRunId"] == links["parent"]["run_id"]
    assert links["backtest"]["tags"]["mlflow.parentRunId"] == links["parent"]["run_id"]
    # Artifacts as MLflow lists them, folders walked.
    backtest_files = {a["path"]: a for a in links["backtest"]["artifacts"]}
    for name in ("series.parquet", "equity.png"):
        assert backtest_files[name]["is_dir"] is False
        assert backtest_files[name]["size"] > 0
    train = {a["path"]: a for a in links["train"]["artifacts"]}
    assert "features.json" in train
    for entry in links["train"]["artifacts"]:
        assert (entry["size"] is None) == entry["is_dir"]
    assert links["train"]["artifacts_truncated"] is False


def test_artifacts_download_with_mlflows_bytes(
    stack: EmbeddedStack, rest_url: str, finished: dict[str, Any], links: dict[str, Any], tmp_path: Path
) -> None:
    client = stack.tracker.client
    for role, path, media in (
        ("backtest", "series.parquet", "application/octet-stream"),
        ("backtest", "equity.png", "image/png"),
        ("train", "features.json", "application/json"),
    ):
        mlflow_id = links[role]["run_id"]
        resp = httpx.get(_artifact_url(rest_url, finished["run_id"], mlflow_id, path), timeout=60)
        assert resp.status_code == 200, resp.text
        truth = Path(client.download_artifacts(mlflow_id, path, str(tmp_path / role))).read_bytes()
        assert resp.content == truth
        assert resp.headers["content-type"].startswith(media)
        assert resp.headers["x-content-type-options"] == "nosniff"
        assert resp.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in resp.headers["content-security-policy"]
        assert int(resp.headers["content-length"]) == len(truth)
    series = pd.read_parquet(
        io.BytesIO(
            httpx.get(
                _artifact_url(rest_url, finished["run_id"], links["backtest"]["run_id"], "series.parquet"),
                timeout=60,
            ).content
        )
    )
    assert {"date", "equity", "drawdown", "returns"} <= set(series.columns)
    assert len(series) > 0 and any(c.startswith("weight:") for c in series.columns)
    assert series["equity"].notna().all()


def test_a_plot_in_a_folder_downloads_as_png_and_the_folder_is_400(
    stack: EmbeddedStack, rest_url: str, finished: dict[str, Any], links: dict[str, Any], tmp_path: Path
) -> None:
    train = links["train"]
    listed = {a["path"]: a for a in train["artifacts"]}
    assert listed["plots"]["is_dir"] is True
    plots = sorted(p for p in listed if p.startswith("plots/") and p.endswith(".png"))
    assert plots, listed
    resp = httpx.get(_artifact_url(rest_url, finished["run_id"], train["run_id"], plots[0]), timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    assert resp.content.startswith(b"\x89PNG") and len(resp.content) == listed[plots[0]]["size"]
    local = stack.tracker.client.download_artifacts(train["run_id"], plots[0], str(tmp_path))
    assert resp.content == Path(local).read_bytes()
    folder = httpx.get(_artifact_url(rest_url, finished["run_id"], train["run_id"], "plots"), timeout=60)
    assert folder.status_code == 400, folder.text
    assert folder.json()["error"]["details"]["field"] == "path"


def test_another_mlflow_run_is_404(
    stack: EmbeddedStack, rest_url: str, finished: dict[str, Any], links: dict[str, Any]
) -> None:
    tracker = stack.tracker
    experiment = tracker.ensure_experiment("mlflow-api-elsewhere")
    other = tracker.create_run(experiment, "not-this-runs")
    tracker.log_text(other, "secret", "notes.txt")
    tracker.end_run(other)
    resp = httpx.get(_artifact_url(rest_url, finished["run_id"], other, "notes.txt"), timeout=30)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["details"]["field"] == "mlflow_run_id"
    assert "secret" not in resp.text


@pytest.mark.parametrize(
    "path",
    [
        "%2E%2E/%2E%2E/etc/passwd",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "sub/%2E%2E/%2E%2E/x.json",
        "C:%5Cwindows%5Cwin.ini",
    ],
)
def test_path_traversal_is_400_naming_path(
    rest_url: str, finished: dict[str, Any], links: dict[str, Any], path: str
) -> None:
    resp = httpx.get(
        _artifact_url(rest_url, finished["run_id"], links["backtest"]["run_id"], path), timeout=30
    )
    assert resp.status_code == 400, (path, resp.text)
    assert resp.json()["error"]["details"]["field"] == "path"


def test_missing_artifact_and_unknown_run_are_404(
    rest_url: str, finished: dict[str, Any], links: dict[str, Any]
) -> None:
    missing = httpx.get(
        _artifact_url(rest_url, finished["run_id"], links["backtest"]["run_id"], "no-such.json"), timeout=30
    )
    assert missing.status_code == 404, missing.text
    assert missing.json()["error"]["details"]["field"] == "path"
    unknown = "00000000-0000-4000-8000-000000000000"
    assert httpx.get(f"{rest_url}/ml/alpha-backtest-runs/{unknown}/mlflow", timeout=30).status_code == 404
    resp = httpx.get(
        _artifact_url(rest_url, unknown, links["backtest"]["run_id"], "series.parquet"), timeout=30
    )
    assert resp.status_code == 404


def test_an_artifact_above_the_size_cap_is_413(
    stack: EmbeddedStack, finished: dict[str, Any], links: dict[str, Any]
) -> None:
    small_cap = stack.settings.model_copy(update={"grpc_port": 0, "artifact_download_max_bytes": 16})
    with serving(small_cap, stack) as (_, url):
        resp = httpx.get(
            _artifact_url(url, finished["run_id"], links["backtest"]["run_id"], "series.parquet"),
            timeout=30,
        )
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert error["reason"] == "ARTIFACT_TOO_LARGE" and error["details"]["field"] == "path"


def test_registered_models_and_versions_are_listed_and_paginated(
    stack: EmbeddedStack, rest_url: str, finished: dict[str, Any]
) -> None:
    name, version = finished["links"]["model_name"], finished["links"]["model_version"]
    seen: list[str] = []
    token = None
    while True:
        page = httpx.get(
            f"{rest_url}/models",
            params={"page_size": 1, **({"page_token": token} if token else {})},
            timeout=30,
        ).json()
        assert len(page["items"]) <= 1
        seen += [m["name"] for m in page["items"]]
        token = page["next_page_token"]
        if not token:
            break
    assert name in seen and seen == sorted(seen)
    truth, _ = stack.tracker.list_registered_models(page_size=500)
    assert seen == [m.name for m in truth]
    versions = httpx.get(f"{rest_url}/models/{name}/versions", timeout=30).json()
    by_version = {v["version"]: v for v in versions["items"]}
    assert version in by_version
    assert by_version[version]["run_id"] == finished["links"]["mlflow_train_run_id"]
    numbers = [int(v["version"]) for v in versions["items"]]
    assert numbers == sorted(numbers, reverse=True)
    missing = httpx.get(f"{rest_url}/models/no-such-model-xyz/versions", timeout=30)
    assert missing.status_code == 404, missing.text
    bad = httpx.get(f"{rest_url}/models", params={"page_size": 0}, timeout=30)
    assert bad.status_code == 422
    for url in (f"{rest_url}/models", f"{rest_url}/models/{name}/versions"):
        for token in ("not-a-token", "é-token"):
            resp = httpx.get(url, params={"page_token": token}, timeout=30)
            assert resp.status_code == 400, (url, token, resp.text)
            assert resp.json()["error"]["details"]["field"] == "page_token"
