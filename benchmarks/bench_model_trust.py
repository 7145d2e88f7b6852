"""Benchmark: the registry's verified model load (`alphaswarm_registry.trust.ModelTrust.load`).

    python benchmarks/bench_model_trust.py [--rows 5000] [--trees 200]

For a ridge pipeline and a random-forest pipeline (`--trees` trees, fitted
on `--rows` random rows of 12 features), logged to a temporary SQLite MLflow
store as the trainer logs them (skops) and signed as the registry signs
them: the median wall time of a first load (signed record checked, artifact
copied to a private folder, hashed, built by skops) and of a cached load
(record checked, stored artifact re-hashed in place). The trust store is in
memory here, so the persistence round trip of a real registry is not
included. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np

from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm_common.config import ModelConfig
from alphaswarm_common.tracking import Tracker, quiet_mlflow
from alphaswarm_registry.trust import ModelTrust
from alphaswarm_trainer.models import build_model, fit_model


class MemoryTrustStore:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], ppb.ModelArtifactTrust] = {}

    def record(self, record: ppb.ModelArtifactTrust) -> ppb.ModelArtifactTrust:
        self.rows[(record.model_name, record.version)] = record
        return record

    def get(self, model_name: str, version: str) -> ppb.ModelArtifactTrust:
        return self.rows[(model_name, version)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--trees", type=int, default=200)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    quiet_mlflow()
    tmp = tempfile.mkdtemp(prefix="bench-trust-")
    tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", artifact_root=f"{tmp}/artifacts")
    trust = ModelTrust(tracker, MemoryTrustStore(), b"k" * 32)
    experiment = tracker.ensure_experiment("bench-trust")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(args.rows, 12)), rng.normal(size=args.rows)
    for model_type, params in (("ridge", {}), ("random_forest", {"n_estimators": args.trees})):
        cfg = ModelConfig(type=model_type, params=params)
        model = build_model(cfg)
        fit_model(model, cfg, x, y)
        run_id = tracker.create_run(experiment, "train")
        uri, sha = tracker.log_sklearn_model(run_id, model, example_x=x[:5])
        tracker.end_run(run_id)
        name = f"bench-{model_type}"
        trust.check_logged(uri, sha)
        version = tracker.register_model(uri, name, alias=None, tags={}, run_id=run_id)
        trust.record(model_name=name, version=version, model_uri=uri, sha256=sha, registered_by="bench")
        info = tracker.describe_model_version(name, version)
        first, cached = [], []
        for _ in range(5):
            trust._models.clear()
            t0 = time.perf_counter()
            trust.load(info)
            first.append(time.perf_counter() - t0)
        for _ in range(20):
            t0 = time.perf_counter()
            trust.load(info)
            cached.append(time.perf_counter() - t0)
        print(
            f"{model_type}: first load median {np.median(first) * 1e3:.1f} ms, "
            f"cached load median {np.median(cached) * 1e3:.2f} ms"
        )


if __name__ == "__main__":
    main()
