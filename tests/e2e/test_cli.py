"""The README's command as a newcomer runs it: `alphaswarm run CONFIG`, table and JSON,
a second run reusing the same stores, and clear exit codes for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import small_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).parent / "alphaswarm")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_"))}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, env=_env(), cwd=cwd, timeout=600)


def test_run_prints_json_and_a_second_run_reuses_the_stores(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(small_run(run_name="cli-e2e")))
    first = _run("run", str(config), "--output", "json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["status"] == "succeeded"
    assert {"ml", "trading", "score"} <= set(doc["combined_metrics"])
    for key in (
        "task_id",
        "mlflow_parent_run_id",
        "model_name",
        "model_version",
        "deployment_id",
        "backtest_id",
    ):
        assert doc[key], key
    assert (tmp_path / ".alphaswarm" / "catalog.db").exists() and (
        tmp_path / ".alphaswarm" / "mlflow.db"
    ).exists()

    second = _run("run", str(config), cwd=tmp_path)  # the table output, same stores
    assert second.returncode == 0, second.stderr
    assert "combined metrics" in second.stdout and "score" in second.stdout
    assert f"{doc['model_name']} v{int(doc['model_version']) + 1}" in second.stdout
    listed = json.loads(_run("runs", "list", cwd=tmp_path).stdout)
    assert len(listed["items"]) == 2


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(small_run(backtest_cfg={"fees": -1})))
    proc = _run("run", str(config), cwd=tmp_path)
    assert proc.returncode == 2
    assert "backtest_cfg.fees" in proc.stderr
    assert not (tmp_path / ".alphaswarm").exists()  # rejected before anything started

    config.write_text("dataset_cfg: [unclosed")
    proc = _run("run", str(config), cwd=tmp_path)
    assert proc.returncode == 2 and "YAML" in proc.stderr


def test_shipped_config_validates() -> None:
    from alphaswarm.ml.alpha_backtest_experiment import load_config

    cfg = load_config(ROOT / "configs/ml/alpha_backtest/ridge_alpha_backtest.yaml")
    assert cfg.model_cfg.type == "ridge" and cfg.train_first
