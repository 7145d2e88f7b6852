"""Data sources over the real stack: a `dataset_cfg.source` outside the data roots is a 400 naming
the field whose body contains no path, over REST (jobs and alpha runs) and INVALID_ARGUMENT over the
backtester's gRPC API; a CSV under a root is backtested and readable back.

The session's stack has pytest's temporary folder as its only data root (`tests/e2e/conftest.py`);
the files "outside" live in a folder made next to it, outside every root."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from alphaswarm.backtester.v1 import backtester_service_pb2 as bpb
from alphaswarm.backtester.v1 import backtester_service_pb2_grpc as bpb_grpc
from alphaswarm.embedded import EmbeddedStack
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.grpc_client import call, remote_field
from alphaswarm_common.protoconv import config_to_proto
from tests.e2e.conftest import small_run, sse_events

pytestmark = pytest.mark.e2e

RULE = {"type": "sma_cross", "params": {"fast_period": 5, "slow_period": 20}}


def _csv(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=200)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, (200, 2)), axis=0))
    frame = pd.DataFrame(close, columns=["AAA", "BBB"])
    frame.insert(0, "date", dates.strftime("%Y-%m-%d"))
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def files(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    inside = tmp_path_factory.mktemp("data-root-files")
    outside = Path(tempfile.mkdtemp(prefix="alphaswarm-outside-"))
    assert not outside.is_relative_to(tmp_path_factory.getbasetemp())
    paths = {
        "inside": _csv(inside / "prices.csv", 1),
        "secret": _csv(outside / "secret.csv", 2),
        "missing": outside / "missing.csv",
        "link": inside / "link.csv",
        "outside": outside,
    }
    paths["link"].symlink_to(paths["secret"])
    yield paths
    shutil.rmtree(outside)


def _job(source: str) -> dict:
    return {"source": {"dataset_cfg": {"source": source}}, "strategy_cfg": RULE}


def _rejected(rest_url: str, path: str, doc: dict, field: str, *hidden: Path) -> dict:
    resp = httpx.post(rest_url + path, json=doc, timeout=60)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["details"].get("field") == field or field in err["message"], err
    for p in hidden:
        assert str(p) not in resp.text and p.name not in resp.text, resp.text
    assert "/" not in err["message"], err  # no path, absolute or relative
    return err


def test_sources_outside_the_roots_are_400_without_a_path(rest_url: str, files: dict[str, Path]) -> None:
    field = "source.dataset_cfg.source"
    answers = [
        _rejected(rest_url, "/backtests", _job("../../etc/x.csv"), field),
        _rejected(
            rest_url, "/backtests", _job(str(files["secret"])), field, files["secret"], files["outside"]
        ),
        _rejected(
            rest_url, "/backtests", _job(str(files["missing"])), field, files["missing"], files["outside"]
        ),
        _rejected(rest_url, "/backtests", _job(str(files["link"])), field, files["secret"], files["link"]),
        _rejected(rest_url, "/backtests", _job("/etc/passwd"), field),
    ]
    # Existing or not, traversal or symlink: one answer, so nothing is learnt about the file system.
    assert len({a["message"] for a in answers}) == 1
    portfolio = {
        "dataset_cfg": {"source": str(files["secret"])},
        "legs": [{"symbol": "AAA"}],
        "portfolio_name": "outside",
    }
    _rejected(rest_url, "/portfolio-backtests", portfolio, "dataset_cfg.source", files["secret"])


def test_an_alpha_run_on_a_source_outside_the_roots_is_400(rest_url: str, files: dict[str, Path]) -> None:
    doc = small_run(dataset_cfg={**small_run()["dataset_cfg"], "source": str(files["secret"])})
    before = httpx.get(f"{rest_url}/ml/alpha-backtest-runs", params={"page_size": 500}, timeout=30).json()
    _rejected(rest_url, "/ml/alpha-backtest-runs", doc, "dataset_cfg.source", files["secret"])
    after = httpx.get(f"{rest_url}/ml/alpha-backtest-runs", params={"page_size": 500}, timeout=30).json()
    assert len(after["items"]) == len(before["items"])  # nothing written


def test_the_backtester_refuses_it_too(
    backtester: bpb_grpc.BacktesterServiceStub, files: dict[str, Path]
) -> None:
    for source in (str(files["secret"]), "../../etc/x.csv", str(files["link"])):
        request = bpb.RunStrategyBacktestRequest(
            source=bpb.PriceSource(dataset_cfg=config_to_proto(DatasetConfig(source=source))),
            strategy_cfg=config_to_proto(StrategyConfig.model_validate(RULE)),
        )
        with pytest.raises(InvalidArgument) as err:
            call(backtester.RunStrategyBacktest, request, timeout=60, target="backtester")
        assert remote_field(err.value).endswith("dataset_cfg.source")
        assert str(files["outside"]) not in str(err.value) and "secret" not in str(err.value)


def test_a_csv_under_a_root_is_backtested(rest_url: str, files: dict[str, Path]) -> None:
    resp = httpx.post(rest_url + "/backtests", json=_job(str(files["inside"])), timeout=60)
    assert resp.status_code == 202, resp.text
    accepted = resp.json()
    end = sse_events(rest_url + accepted["stream_url"])[-1]
    assert end["stage"] == "completed", end["message"]
    task = httpx.get(f"{rest_url}/tasks/{accepted['task_id']}", timeout=30).json()
    stored = httpx.get(f"{rest_url}/backtests/{task['result']['backtest_id']}", timeout=30)
    assert stored.status_code == 200 and stored.json()["strategy_type"] == "sma_cross"
