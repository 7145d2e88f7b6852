"""The MLflow adapter: the one module that talks to MLflow.

Domain code never imports MLflow; services hold a `Tracker`. MLflow is
imported lazily (it costs over a second), so importing this module is free.

Conventions:
* one parent run per alpha-backtest run, created by the gateway; the trainer
  and the backtester add child runs `train` and `backtest` to it (tag
  `mlflow.parentRunId`);
* metrics are logged in one `log_batch` call; params are strings;
* models are logged with `name=`, explicit `pip_requirements` (requirement
  inference costs seconds) and cloudpickle serialization; the sha256 of the
  artifact folder is recorded on the registered version
  (`alphaswarm.model_sha256`) and verified before every load, so a model
  that was tampered with, or not logged by our trainer, is refused;
* registered versions are addressed by aliases (`champion`), never stages.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alphaswarm_common.errors import AlphaSwarmError, DependencyUnavailable, FailedPrecondition, NotFound

__all__ = [
    "FEATURES_TAG",
    "MODEL_SHA_TAG",
    "MODEL_URI_TAG",
    "PRODUCER",
    "PRODUCER_TAG",
    "Tracker",
    "artifact_sha256",
]

MODEL_SHA_TAG = "alphaswarm.model_sha256"
PRODUCER_TAG = "alphaswarm.producer"
PRODUCER = "alphaswarm-trainer"
FEATURES_TAG = "alphaswarm.feature_names"
MODEL_URI_TAG = "alphaswarm.model_uri"


def artifact_sha256(path: str | Path) -> str:
    """sha256 over every file of a model folder (relative path + bytes, sorted), ignoring caches."""
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        digest.update(str(p.relative_to(root)).encode())
        digest.update(b"\0")
        digest.update(p.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    reqs = []
    for dist in ("scikit-learn", "numpy", "cloudpickle"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except Exception:  # pragma: no cover - optional dists
            reqs.append(dist)
    return reqs


class Tracker:
    """A thin, thread-safe façade over the MLflow client for one tracking URI."""

    _init_lock = threading.Lock()

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._init_lock:
                if self._client is None:
                    import mlflow

                    if self.tracking_uri.startswith("sqlite:///"):
                        Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(
                            parents=True, exist_ok=True
                        )
                    mlflow.set_tracking_uri(self.tracking_uri)
                    mlflow.set_registry_uri(self.tracking_uri)
                    try:
                        self._client = mlflow.MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri)
                    except Exception as exc:  # pragma: no cover - depends on the server
                        raise DependencyUnavailable(f"MLflow at {self.tracking_uri}: {exc}") from exc
        return self._client

    def warm_up(self) -> None:
        """Open the store (creates the SQLite schema on first use) and import the flavour."""
        self.client.search_experiments(max_results=1)
        import mlflow.sklearn  # noqa: F401

    # -- experiments and runs -------------------------------------------------------------------
    def ensure_experiment(self, name: str) -> str:
        with self._lock:
            if name in self._experiments:
                return self._experiments[name]
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                location = None
                if self.artifact_root:
                    location = f"{self.artifact_root.rstrip('/')}/{name}"
                try:
                    exp_id = self.client.create_experiment(name, artifact_location=location)
                except Exception:
                    exp = self.client.get_experiment_by_name(name)  # created concurrently
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
            self._experiments[name] = exp_id
            return exp_id

    def create_run(
        self,
        experiment_id: str,
        run_name: str,
        *,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], *, step: int = 0) -> None:
        """Log every finite metric in one batch; undefined values are skipped (they are recorded as nulls elsewhere)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(str(k), float(v), now, step)
            for k, v in metrics.items()
            if v is not None and isinstance(v, int | float) and math.isfinite(float(v))
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def end_run(self, run_id: str, *, failed: bool = False) -> None:
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, doc: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, doc, artifact_file)

    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    # -- models ---------------------------------------------------------------------------------
    def log_sklearn_model(
        self, run_id: str, model: Any, *, name: str = "model", example_x: Any = None
    ) -> tuple[str, str]:
        """Log a fitted estimator under the run; return (model_uri, sha256 of the artifact).

        The signature is inferred from `example_x` (a few feature rows) and the
        model's predictions on them.
        """
        import mlflow
        import mlflow.sklearn

        _ = self.client  # sets the tracking URI
        signature = None
        if example_x is not None and len(example_x):
            from mlflow.models import infer_signature

            signature = infer_signature(example_x, model.predict(example_x))
        with mlflow.start_run(run_id=run_id, nested=True) as _run:
            info = mlflow.sklearn.log_model(
                model,
                name=name,
                pip_requirements=_pip_requirements(),
                serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
                signature=signature,
            )
        # `start_run(run_id=...)` resumed the run; leave it RUNNING for the caller to end.
        self.client.update_run(run_id, status="RUNNING")
        local = self._download(info.model_uri)
        return info.model_uri, artifact_sha256(local)

    def register_model(
        self, model_uri: str, name: str, *, alias: str, tags: Mapping[str, str], run_id: str | None = None
    ) -> str:
        """Create a registered-model version and point `alias` at it; return the version."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code) and "already exists" not in str(exc):
                raise
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = client.create_model_version(
            name=name, source=model_uri, run_id=run_id, tags=dict(tags), model_id=model_id
        )
        client.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)

    def get_model_version(self, name: str, version: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise NotFound(
                f"model {name!r} version {version} is not registered", field="model_version"
            ) from exc

    def load_verified_model(self, name: str, version: str) -> Any:
        """Load a registered version after checking its artifact's sha256 against the registered tag."""
        key = f"{name}/{version}"
        with self._lock:
            if key in self._models:
                return self._models[key]
        mv = self.get_model_version(name, version)
        expected = (mv.tags or {}).get(MODEL_SHA_TAG)
        if not expected or (mv.tags or {}).get(PRODUCER_TAG) != PRODUCER:
            raise FailedPrecondition(
                f"model {name!r} version {version} was not logged by the AlphaSwarm trainer "
                f"(no {MODEL_SHA_TAG} tag); refusing to load it",
                reason="MODEL_NOT_TRUSTED",
            )
        local = self._download(mv.source)
        actual = artifact_sha256(local)
        if actual != expected:
            raise FailedPrecondition(
                f"model {name!r} version {version}: artifact sha256 {actual[:12]}… does not match the "
                f"registered {expected[:12]}…; the artifact was modified after registration",
                reason="MODEL_TAMPERED",
            )
        import mlflow.sklearn

        try:
            model = mlflow.sklearn.load_model(local)
        except Exception as exc:
            raise FailedPrecondition(f"model {name!r} version {version} cannot be loaded: {exc}") from exc
        with self._lock:
            self._models[key] = model
        return model

    def _download(self, uri: str) -> str:
        import mlflow.artifacts

        try:
            return mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri)
        except AlphaSwarmError:
            raise
        except Exception as exc:
            raise NotFound(f"artifacts of {uri} cannot be read: {exc}") from exc


def quiet_mlflow() -> None:
    """Silence MLflow's per-call INFO chatter and its telemetry in a service process."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # We log cloudpickle deliberately and verify each artifact's sha256 before loading it.
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
