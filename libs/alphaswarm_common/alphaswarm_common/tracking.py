"""The MLflow adapter: the one module that talks to MLflow.

Domain code never imports MLflow; services hold a `Tracker`. MLflow is
imported lazily (it costs over a second), so importing this module is free.
Registry reads return plain dataclasses (`RegisteredModelInfo`,
`ModelVersionInfo`), not MLflow entities, so callers do not depend on MLflow's
shapes.

Conventions:
* one parent run per alpha-backtest run, created by the gateway; the trainer
  and the backtester add child runs `train` and `backtest` to it (tag
  `mlflow.parentRunId`);
* metrics are logged in one `log_batch` call; params are strings;
* models are logged with `name=`, explicit `pip_requirements` (requirement
  inference costs seconds), skops serialization (`model_artifacts`: data, not
  a pickle), a signature inferred
  from a few feature rows and those rows as the input example;
* registered versions are addressed by aliases (`champion`, `challenger`),
  never stages.

Trust (why a registered version may be loaded)
----------------------------------------------
The trainer records on its run the sha256 of the logged artifact folder
(`alphaswarm.model_sha256`), `alphaswarm.producer`, the model URI and the
feature names, and returns the sha256 to its caller. These tags are lineage,
not trust: anyone who can write to the MLflow store can write them. Trust is
the registry's signed record in the catalog (`alphaswarm_registry.trust`);
this module only resolves, copies and hashes artifact folders for it and
never deserialises a model.

`artifact_sha256` ignores `__pycache__` and MLflow's `registered_model_meta`:
MLflow writes that file into the artifact folder of a local store whenever any
client downloads a `models:/` URI, so it is client-side bookkeeping, not the
model. For the same reason this module never resolves artifacts through
`models:/` URIs: it asks the store for the underlying location.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alphaswarm_common.errors import (
    AlphaSwarmError,
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from alphaswarm_common.settings import safe_url
from alphaswarm_common.telemetry import traced_methods

__all__ = [
    "DATASET_FINGERPRINT_TAG",
    "FEATURES_TAG",
    "HEADLINE_METRICS",
    "MODEL_SHA_TAG",
    "MODEL_URI_TAG",
    "PRODUCER",
    "PRODUCER_TAG",
    "ArtifactEntry",
    "ModelVersionInfo",
    "RegisteredModelInfo",
    "RunDetails",
    "RunInfo",
    "Tracker",
    "artifact_sha256",
    "headline_metric_tag",
    "validate_alias",
    "validate_model_name",
]

log = logging.getLogger(__name__)

# Writes of a model alias before a write that keeps losing to concurrent writers gives up.
_ALIAS_ATTEMPTS = 5


def _lost_alias_race(exc: Exception) -> bool:
    """Whether MLflow refused an alias write because another writer wrote the alias meanwhile."""
    text = str(exc)
    duplicate = "registered_model_alias" in text and (
        "duplicate key" in text or "UNIQUE constraint failed" in text or "UniqueViolation" in text
    )
    return duplicate or "expected to update" in text


MODEL_SHA_TAG = "alphaswarm.model_sha256"
PRODUCER_TAG = "alphaswarm.producer"
PRODUCER = "alphaswarm-trainer"
FEATURES_TAG = "alphaswarm.feature_names"
MODEL_URI_TAG = "alphaswarm.model_uri"
DATASET_FINGERPRINT_TAG = "alphaswarm.dataset_fingerprint"

#: Headline metrics copied from the training run onto a registered version, as run metric
#: names (`<segment>_<metric>`, how the trainer logs them); the version tag is
#: `alphaswarm.<segment>_<metric>` (`headline_metric_tag`).
HEADLINE_METRICS: tuple[str, ...] = tuple(
    f"{segment}_{metric}" for segment in ("valid", "test") for metric in ("ic_spearman", "ic_pearson", "icir")
)

#: Files of an artifact folder that are not part of the model (see the module docstring).
_UNHASHED_FILES = frozenset({"registered_model_meta"})
_ALIAS_RE = re.compile(r"^[\w\-]+$")
_VERSION_ALIAS_RE = re.compile(r"^[vV]\d+$")


def headline_metric_tag(metric: str) -> str:
    """The version tag of a headline metric (`valid_ic_spearman` -> `alphaswarm.valid_ic_spearman`)."""
    return f"alphaswarm.{metric}"


def artifact_sha256(path: str | Path) -> str:
    """sha256 over every file of a model folder (relative path + bytes, sorted).

    Ignores `__pycache__` folders and MLflow's `registered_model_meta` (written by
    MLflow clients into the folder; not part of the model).
    """
    root = Path(path)
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and "__pycache__" not in p.parts
        and p.relative_to(root).as_posix() not in _UNHASHED_FILES
    )
    for p in files:
        digest.update(p.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def validate_model_name(name: str, *, field: str = "name") -> str:
    """A registered-model name as MLflow accepts it: non-empty, no `/` or `:`."""
    if not name or not name.strip():
        raise InvalidArgument("a registered model name is required", field=field)
    if "/" in name or ":" in name:
        raise InvalidArgument(f"model name {name!r} must not contain '/' or ':'", field=field)
    return name


def validate_alias(alias: str, *, field: str = "alias") -> str:
    """An alias as MLflow accepts it: letters, digits, `_`, `-`; at most 255 characters;
    not `latest` and not a version reference such as `v3`."""
    if not alias:
        raise InvalidArgument("an alias is required", field=field)
    if not _ALIAS_RE.match(alias):
        raise InvalidArgument(f"alias {alias!r} may only contain letters, digits, '_' and '-'", field=field)
    if len(alias) > 255:
        raise InvalidArgument(f"alias is {len(alias)} characters long; at most 255", field=field)
    if alias.lower() == "latest" or _VERSION_ALIAS_RE.match(alias):
        raise InvalidArgument(
            f"alias {alias!r} is reserved by MLflow ('latest' and 'v<number>' address versions)", field=field
        )
    return alias


def _validate_version(version: str, *, field: str) -> str:
    if not version:
        raise InvalidArgument("a model version is required", field=field)
    if not version.isdigit() or int(version) < 1:
        raise InvalidArgument(f"model version {version!r} is not a positive integer", field=field)
    return str(int(version))


@dataclass(frozen=True)
class RunInfo:
    """What the registry needs of an MLflow run."""

    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class RunDetails:
    """An MLflow run as the gateway shows it: status, times, params, latest metrics and tags."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time_ms: int | None
    end_time_ms: int | None
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True)
class ArtifactEntry:
    """One artifact of a run: its path in the run, its size in bytes (None for a folder)."""

    path: str
    size: int | None
    is_dir: bool


@dataclass(frozen=True)
class ModelVersionInfo:
    """One version of a registered model."""

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str
    source: str
    tags: dict[str, str]
    status: str
    created_at_ms: int

    @property
    def feature_names(self) -> list[str] | None:
        """The feature names the model was trained on (the `alphaswarm.feature_names` tag)."""
        import json

        raw = self.tags.get(FEATURES_TAG)
        if not raw:
            return None
        try:
            names = json.loads(raw)
        except ValueError:
            return None
        return [str(n) for n in names] if isinstance(names, list) else None


@dataclass(frozen=True)
class RegisteredModelInfo:
    """A registered model with its aliases."""

    name: str
    description: str
    aliases: dict[str, str]
    latest_version: str
    tags: dict[str, str]
    created_at_ms: int
    updated_at_ms: int


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    reqs = []
    for dist in ("scikit-learn", "numpy", "skops"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except Exception:  # pragma: no cover - optional dists
            reqs.append(dist)
    return reqs


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


def _local_path(location: str) -> Path | None:
    """The filesystem path of a local artifact location (`/path` or `file:///path`), else None."""
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(location)
    return None


def _version_info(mv: Any, aliases: Sequence[str] | None = None) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=str(mv.name),
        version=str(mv.version),
        aliases=tuple(sorted(aliases if aliases is not None else (getattr(mv, "aliases", None) or ()))),
        run_id=str(mv.run_id or ""),
        source=str(mv.source or ""),
        tags=dict(mv.tags or {}),
        status=str(mv.status or ""),
        created_at_ms=int(mv.creation_timestamp or 0),
    )


def _token(paged: Any) -> str:
    token = getattr(paged, "token", None)
    if not token:
        return ""
    return token.decode() if isinstance(token, bytes) else str(token)


def _page_size(page_size: int, *, default: int = 50, maximum: int = 500) -> int:
    if page_size < 0:
        raise InvalidArgument(f"must not be negative (got {page_size})", field="page_size")
    return default if page_size == 0 else min(page_size, maximum)


def cache_dir() -> Path:
    """Where AlphaSwarm keeps what it builds once per machine: `$XDG_CACHE_HOME/alphaswarm`
    (`~/.cache/alphaswarm`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alphaswarm"


def schema_template() -> Path | None:
    """An empty SQLite MLflow store at the installed MLflow's head schema, built once per MLflow version.

    MLflow creates a new SQLite store by running its whole migration history (seconds of CPU);
    a new store copies this file instead (`seed_sqlite_store`): the same tables, indexes and
    Alembic revision, made by the same MLflow call (`_initialize_tables`, what the store runs on
    an empty database) before anything is written into it (the default experiment, which names
    the store's own artifact folder, is created by the store itself on first open). None when
    the cache folder cannot be written (the store then migrates as MLflow does).
    """
    import mlflow

    path = cache_dir() / f"mlflow-{mlflow.__version__}-schema.db"
    if path.is_file():
        return path
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables

        path.parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.replace(tmp, path)  # atomic: a reader sees no template or a whole one
    except Exception as exc:  # read-only cache, an MLflow without that call: migrate in place
        log.info("no MLflow schema template (%s: %s)", type(exc).__name__, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None
    return path


def _forget_engine(uri: str) -> None:
    """Close and forget the engine MLflow's SQL store keeps per URI (a store file about to be replaced)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", {})
    engine = engines.pop(uri, None)
    if engine is not None:
        engine.dispose()


def seed_sqlite_store(db: Path) -> Path | None:
    """Start a new SQLite MLflow store as a copy of `schema_template()`; the template used, or None.

    Only a missing (or empty) file is seeded; the copy is put in place without overwriting
    (a store another process created meanwhile is kept).
    """
    if db.exists() and db.stat().st_size > 0:
        return None
    template = schema_template()
    if template is None:
        return None
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        if db.exists():  # empty: SQLite made it, nothing is in it
            os.replace(tmp, db)
        else:
            os.link(tmp, db)  # fails if another process created the store meanwhile
    except FileExistsError:
        return None
    except OSError as exc:  # a folder that refuses links: migrate in place
        log.info("MLflow store %s not seeded (%s)", db, exc)
        return None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return template


@traced_methods("mlflow")  # a span around every call to the tracking server (when tracing is on)
class Tracker:
    """A thin, thread-safe façade over the MLflow client for one tracking URI."""

    _init_lock = threading.Lock()
    _fluent_lock = threading.Lock()

    def __init__(self, tracking_uri: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        self._client: Any = None
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            with self._init_lock:
                if self._client is None:
                    try:
                        self._client = self._open()
                    except Exception as exc:  # pragma: no cover - depends on the server
                        raise DependencyUnavailable(
                            f"MLflow at {safe_url(self.tracking_uri)}: {type(exc).__name__}"
                        ) from exc
        return self._client

    def _open(self) -> Any:
        """The MLflow client; a new SQLite store starts as a copy of the schema template."""
        import mlflow

        uri = self.tracking_uri
        if not uri.startswith("sqlite:///"):
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            return mlflow.MlflowClient(uri, registry_uri=uri)
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        seeded = seed_sqlite_store(db)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if seeded is None:
            return mlflow.MlflowClient(uri, registry_uri=uri)
        try:
            client = mlflow.MlflowClient(uri, registry_uri=uri)
            client.search_experiments(max_results=1)  # MLflow checks the copy's schema revision
            return client
        except Exception:
            # A copy MLflow refuses (a template gone stale): drop both and migrate as MLflow does.
            log.warning("MLflow refused the schema template %s; migrating %s", seeded, db)
            seeded.unlink(missing_ok=True)
            _forget_engine(uri)  # its pooled connections hold the copy open
            db.unlink(missing_ok=True)
            return mlflow.MlflowClient(uri, registry_uri=uri)

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

    def find_run(self, experiment_id: str, tags: Mapping[str, str]) -> str | None:
        """The newest run of the experiment carrying every tag of `tags`, or None."""
        clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        found = self.client.search_runs(
            [experiment_id], filter_string=clauses, max_results=1, order_by=["attributes.start_time DESC"]
        )
        return found[0].info.run_id if found else None

    def end_unfinished_children(self, parent_run_id: str) -> list[str]:
        """End FAILED every child run of `parent_run_id` still RUNNING (its worker died or was
        cancelled mid-stage); the ids ended."""
        parent = self.client.get_run(parent_run_id)
        found = self.client.search_runs(
            [parent.info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        ended = []
        for child in found:
            self.client.set_terminated(child.info.run_id, status="FAILED")
            ended.append(child.info.run_id)
        return ended

    def drop_alias_of(self, name: str, alias: str, version: str) -> None:
        """Delete `alias` of model `name` when it points at `version` (a transient alias)."""
        if str(self.client.get_registered_model(name).aliases.get(alias)) == str(version):
            self.client.delete_registered_model_alias(name, alias)

    def set_model_version_tags(self, name: str, version: str, tags: Mapping[str, Any]) -> None:
        """Set tags on a registered model version."""
        for key, value in tags.items():
            self.client.set_model_version_tag(name, version, str(key), str(value))

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client.log_text(run_id, text, artifact_file)

    def log_dict(self, run_id: str, doc: Any, artifact_file: str) -> None:
        self.client.log_dict(run_id, doc, artifact_file)

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        """Upload `{artifact path: bytes}` into the run's artifacts, in one batch."""
        with tempfile.TemporaryDirectory(prefix="alphaswarm-artifacts-") as tmp:
            for name, data in files.items():
                path = Path(tmp, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            self.client.log_artifacts(run_id, tmp)

    def get_run(self, run_id: str) -> Any:
        """The raw MLflow run (prefer `run_info`, which does not leak MLflow types)."""
        return self.client.get_run(run_id)

    def run_info(self, run_id: str, *, field: str = "run_id") -> RunInfo:
        """Status, tags and latest metrics of a run; `NotFound` naming `field` when it does not exist."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            raise InvalidArgument("a run id is required", field=field)
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            raise NotFound(f"no MLflow run {run_id}: {exc.message}", field=field) from exc
        return RunInfo(
            run_id=run.info.run_id,
            status=str(run.info.status),
            tags=dict(run.data.tags),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
        )

    # -- logging models -------------------------------------------------------------------------
    def log_sklearn_model(
        self,
        run_id: str,
        model: Any,
        *,
        name: str = "model",
        example_x: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> tuple[str, str]:
        """Log a fitted estimator under the run; return (model_uri, sha256 of the artifact).

        With `example_x` (a few feature rows, as the model receives them: a
        float array `(n, n_features)`), the model is logged with a signature
        inferred from those rows and the model's predictions on them, and the
        rows as its input example. MLflow validates the serving form of the
        example by reloading the model and predicting on it; measured with
        MLflow 3.17 on a ridge pipeline and 5 rows this adds about 10 ms to a
        ~40 ms log (no first-call surcharge), so the validation is kept.
        `feature_names`, when given, are stored in the MLmodel metadata.
        The sha256 is computed on the stored artifact folder (see the module
        docstring); the trainer records it on its run.
        """
        import mlflow
        import mlflow.sklearn
        import numpy as np

        from alphaswarm_common.model_artifacts import SERIALIZATION_FORMAT, TRUSTED_TYPES

        _ = self.client  # sets the tracking URI
        signature = None
        example = None
        if example_x is not None and len(example_x):
            from mlflow.models import infer_signature

            example = np.asarray(example_x)[:5]
            signature = infer_signature(example, np.asarray(model.predict(example)))
        metadata = {"alphaswarm.feature_names": list(feature_names)} if feature_names is not None else None
        # The logged model is created here with the run's params, as `log_model` would: its own
        # creation resolves MLflow's run-context tags (git commit, notebook, user, source), which
        # costs a git subprocess and IPython probes per model and adds nothing the run lacks.
        run = self.client.get_run(run_id)
        logged = self.client.create_logged_model(
            run.info.experiment_id,
            name=name,
            source_run_id=run_id,
            params={key: str(value) for key, value in run.data.params.items()},
        )
        # MLflow's fluent API reads the process-wide tracking URI: set it to this tracker's for
        # the whole call, so trackers of different stores in one process do not mix.
        with Tracker._fluent_lock:
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            with mlflow.start_run(run_id=run_id, nested=True) as _run:
                info = mlflow.sklearn.log_model(
                    model,
                    name=name,
                    pip_requirements=_pip_requirements(),
                    serialization_format=SERIALIZATION_FORMAT,
                    skops_trusted_types=list(TRUSTED_TYPES),
                    signature=signature,
                    input_example=example,
                    metadata=metadata,
                    model_id=logged.model_id,
                )
        # `start_run(run_id=...)` resumed the run; leave it RUNNING for the caller to end.
        self.client.update_run(run_id, status="RUNNING")
        return info.model_uri, self.hash_artifact(info.model_uri)

    # -- registry: writes -----------------------------------------------------------------------
    def register_model(
        self,
        model_uri: str,
        name: str,
        *,
        alias: str | None,
        tags: Mapping[str, str],
        run_id: str | None = None,
    ) -> str:
        """Create a registered-model version and point `alias` at it (None: no alias); return the version."""
        from mlflow.exceptions import MlflowException

        validate_model_name(name)
        if alias is not None:
            validate_alias(alias)
        client = self.client
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in _error_code(exc) and "already exists" not in str(exc):
                raise
        model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
        mv = client.create_model_version(
            name=name, source=model_uri, run_id=run_id, tags=dict(tags), model_id=model_id
        )
        if alias is not None:
            client.set_registered_model_alias(name, alias, mv.version)
        return str(mv.version)

    def delete_model_version(self, name: str, version: str) -> None:
        """Remove a registered version (a registration that could not be completed)."""
        self.client.delete_model_version(name, version)

    def set_model_alias(self, name: str, alias: str, version: str) -> ModelVersionInfo:
        """Point `alias` at `version` (moving it if it pointed elsewhere); the version after the change.

        `NotFound` (field `name` / `version`) when the model or the version does not exist.
        """
        from mlflow.exceptions import MlflowException

        validate_model_name(name)
        validate_alias(alias)
        version = _validate_version(version, field="version")
        self.get_registered_model(name)
        self.describe_model_version(name, version, field="version")
        for attempt in range(_ALIAS_ATTEMPTS):
            try:
                self.client.set_registered_model_alias(name, alias, version)
                break
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" in _error_code(exc):
                    raise NotFound(
                        f"model {name!r} version {version} is not registered", field="version"
                    ) from exc
                # Two writers moving one alias at once (registrations in parallel, registry
                # replicas): MLflow's SQL store reports the write that lost the race as an update
                # that matched no row or as a duplicate alias key. The last write wins: write again.
                if not _lost_alias_race(exc) or attempt == _ALIAS_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return self.describe_model_version(name, version, field="version")

    # -- registry: reads ------------------------------------------------------------------------
    def get_model_version(self, name: str, version: str) -> Any:
        """The raw MLflow model version (prefer `describe_model_version`)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise NotFound(
                f"model {name!r} version {version} is not registered", field="model_version"
            ) from exc

    def describe_model_version(
        self, name: str, version: str, *, field: str = "model_version"
    ) -> ModelVersionInfo:
        """One version with its aliases and tags; `NotFound` naming `field` when it is not registered."""
        version = _validate_version(version, field=field)
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException as exc:
            raise NotFound(f"model {name!r} version {version} is not registered", field=field) from exc
        return _version_info(mv)

    def get_registered_model(self, name: str, *, field: str = "name") -> RegisteredModelInfo:
        """A registered model with its aliases; `NotFound` naming `field` when there is none."""
        from mlflow.exceptions import MlflowException

        validate_model_name(name, field=field)
        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as exc:
            raise NotFound(f"no registered model {name!r}", field=field) from exc
        return self._model_info(rm)

    def resolve_alias(self, name: str, alias: str, *, field: str = "model_alias") -> str:
        """The version `alias` points at; `NotFound` naming `field` when the alias is not set."""
        validate_alias(alias, field=field)
        aliases = self.get_registered_model(name, field="model_name").aliases
        if alias not in aliases:
            known = ", ".join(sorted(aliases)) or "none"
            raise NotFound(f"model {name!r} has no alias {alias!r} (aliases: {known})", field=field)
        return aliases[alias]

    def list_registered_models(
        self, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[RegisteredModelInfo], str]:
        """Registered models by name; `page_size` 0 means 50, at most 500. Returns (models, next token)."""
        from mlflow.exceptions import MlflowException

        size = _page_size(page_size)
        try:
            page = self.client.search_registered_models(
                max_results=size, order_by=["name ASC"], page_token=page_token or None
            )
        except MlflowException as exc:
            if page_token and "INVALID_PARAMETER_VALUE" in _error_code(exc):
                raise InvalidArgument(
                    f"not a page token of this list: {exc.message}", field="page_token"
                ) from exc
            raise
        except ValueError as exc:  # a token MLflow cannot even decode (not ASCII, not base64)
            if page_token:
                raise InvalidArgument("not a page token of this list", field="page_token") from exc
            raise
        return [self._model_info(rm) for rm in page], _token(page)

    def list_model_versions(
        self, name: str, page_size: int = 0, page_token: str = ""
    ) -> tuple[list[ModelVersionInfo], str]:
        """Versions of `name`, newest first, with their aliases and tags; `NotFound` for an unknown model.

        `page_size` 0 means 50, at most 500. Returns (versions, next token).
        """
        from mlflow.exceptions import MlflowException

        size = _page_size(page_size)
        model = self.get_registered_model(name)
        by_version: dict[str, list[str]] = {}
        for alias, version in model.aliases.items():
            by_version.setdefault(version, []).append(alias)
        if "'" not in name:
            flt = f"name = '{name}'"
        elif '"' not in name:
            flt = f'name = "{name}"'
        else:
            raise InvalidArgument(
                "model names containing both quote characters cannot be searched in MLflow", field="name"
            )
        try:
            page = self.client.search_model_versions(
                filter_string=flt,
                max_results=size,
                order_by=["version_number DESC"],
                page_token=page_token or None,
            )
        except MlflowException as exc:
            if page_token and "INVALID_PARAMETER_VALUE" in _error_code(exc):
                raise InvalidArgument(
                    f"not a page token of this list: {exc.message}", field="page_token"
                ) from exc
            raise
        except ValueError as exc:  # a token MLflow cannot even decode (not ASCII, not base64)
            if page_token:
                raise InvalidArgument("not a page token of this list", field="page_token") from exc
            raise
        return [_version_info(mv, by_version.get(str(mv.version), [])) for mv in page], _token(page)

    @staticmethod
    def _model_info(rm: Any) -> RegisteredModelInfo:
        versions = [int(v.version) for v in (rm.latest_versions or [])]
        return RegisteredModelInfo(
            name=str(rm.name),
            description=str(rm.description or ""),
            aliases={str(a): str(v) for a, v in (rm.aliases or {}).items()},
            latest_version=str(max(versions)) if versions else "",
            tags=dict(rm.tags or {}),
            created_at_ms=int(rm.creation_timestamp or 0),
            updated_at_ms=int(rm.last_updated_timestamp or 0),
        )

    # -- artifacts (copied and hashed, never deserialised here) ---------------------------------
    def hash_artifact(self, model_uri: str) -> str:
        """sha256 of the stored artifact folder of `model_uri` (in place when local, else downloaded)."""
        return self._hash_location(self._artifact_location(model_uri))

    def fetch_artifact(self, model_uri: str, dst: str) -> str:
        """Copy (local store) or download (remote store) the artifact folder of `model_uri` into `dst`."""
        return self._fetch(self._artifact_location(model_uri), dst)

    def _artifact_location(self, model_uri: str) -> str:
        """The storage location behind a model URI, resolved without MLflow's `models:/` download path."""
        from mlflow.exceptions import MlflowException

        try:
            if model_uri.startswith("models:/m-"):
                return str(self.client.get_logged_model(model_uri.removeprefix("models:/")).artifact_location)
            if model_uri.startswith("models:/"):
                rest = model_uri.removeprefix("models:/").strip("/")
                name, _, version = rest.rpartition("/")
                return str(self.client.get_model_version_download_uri(name, version))
            if model_uri.startswith("runs:/"):
                from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

                return str(RunsArtifactRepository.get_underlying_uri(model_uri))
        except MlflowException as exc:
            raise FailedPrecondition(
                f"the artifact location of {model_uri} cannot be resolved: {exc.message}",
                field="model_uri",
                reason="MODEL_ARTIFACT_MISSING",
            ) from exc
        return model_uri

    def _hash_location(self, location: str) -> str:
        """sha256 of an artifact folder: in place when local, else of a temporary download."""
        local = _local_path(location)
        if local is not None:
            if not local.is_dir() or not any(local.iterdir()):
                raise FailedPrecondition(f"no model artifacts at {location}", reason="MODEL_ARTIFACT_MISSING")
            return artifact_sha256(local)
        with tempfile.TemporaryDirectory(prefix="alphaswarm-model-") as tmp:
            return artifact_sha256(self._fetch(location, tmp))

    def _fetch(self, location: str, dst: str) -> str:
        """Copy (local store) or download (remote store) an artifact folder into `dst`."""
        import mlflow.artifacts

        local = _local_path(location)
        if local is not None:
            if not local.is_dir() or not any(local.iterdir()):
                raise FailedPrecondition(f"no model artifacts at {location}", reason="MODEL_ARTIFACT_MISSING")
            target = Path(dst) / "model"
            shutil.copytree(local, target, ignore=shutil.ignore_patterns("__pycache__"))
            return str(target)
        try:
            return str(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=dst, tracking_uri=self.tracking_uri
                )
            )
        except AlphaSwarmError:
            raise
        except Exception as exc:
            raise FailedPrecondition(
                f"model artifacts at {location} cannot be read: {exc}", reason="MODEL_ARTIFACT_MISSING"
            ) from exc

    # -- reading runs and their artifacts (the gateway's MLflow routes) -------------------------
    def run_details(self, run_id: str, *, field: str = "mlflow_run_id") -> RunDetails:
        """Status, times, params, latest metrics and tags of a run; `NotFound` naming `field`."""
        run = self._read(lambda: self.client.get_run(run_id), f"no MLflow run {run_id}", field)
        return RunDetails(
            run_id=str(run.info.run_id),
            run_name=str(run.info.run_name or ""),
            experiment_id=str(run.info.experiment_id),
            status=str(run.info.status),
            start_time_ms=int(run.info.start_time) if run.info.start_time else None,
            end_time_ms=int(run.info.end_time) if run.info.end_time else None,
            params=dict(run.data.params),
            metrics={k: float(v) for k, v in run.data.metrics.items()},
            tags=dict(run.data.tags),
        )

    def list_run_artifacts(self, run_id: str, *, max_entries: int = 1000) -> tuple[list[ArtifactEntry], bool]:
        """Every artifact of a run, folders walked breadth first; (entries, truncated at `max_entries`)."""
        out: list[ArtifactEntry] = []
        pending = [""]
        while pending:
            folder = pending.pop(0)
            for info in self._read(
                lambda f=folder: self.client.list_artifacts(run_id, f or None),  # type: ignore[misc]
                f"no MLflow run {run_id}",
                "mlflow_run_id",
            ):
                if len(out) >= max_entries:
                    return out, True
                size = None if info.is_dir or info.file_size is None else int(info.file_size)
                out.append(ArtifactEntry(path=str(info.path), size=size, is_dir=bool(info.is_dir)))
                if info.is_dir:
                    pending.append(str(info.path))
        return out, False

    def artifact_entry(self, run_id: str, path: str) -> ArtifactEntry:
        """The listing entry of one artifact path of a run; `NotFound` naming `path` when absent."""
        parent = path.rpartition("/")[0]
        for info in self._read(
            lambda: self.client.list_artifacts(run_id, parent or None),
            f"no MLflow run {run_id}",
            "mlflow_run_id",
        ):
            if str(info.path) == path:
                size = None if info.is_dir or info.file_size is None else int(info.file_size)
                return ArtifactEntry(path=path, size=size, is_dir=bool(info.is_dir))
        raise NotFound(f"run {run_id} has no artifact {path!r}", field="path")

    def download_run_artifact(self, run_id: str, path: str, dst: str) -> str:
        """Download one artifact of a run into the folder `dst`; the local path of the copy."""
        return str(
            self._read(
                lambda: self.client.download_artifacts(run_id, path, dst),
                f"run {run_id} has no artifact {path!r}",
                "path",
            )
        )

    def _read(self, call: Any, missing: str, field: str) -> Any:
        """Run an MLflow read: a missing resource is `NotFound` naming `field`; an unreachable
        store is `DependencyUnavailable`."""
        from mlflow.exceptions import MlflowException

        try:
            return call()
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in _error_code(exc) or "not found" in exc.message.lower():
                raise NotFound(f"{missing}: {exc.message}", field=field) from exc
            raise
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(missing, field=field) from exc
        except OSError as exc:
            raise DependencyUnavailable(
                f"MLflow at {safe_url(self.tracking_uri)}: {type(exc).__name__}"
            ) from exc


def quiet_mlflow() -> None:
    """Silence MLflow's per-call INFO chatter and its telemetry in a service process."""
    import logging

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
