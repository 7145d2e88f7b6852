"""The registry's service layer: registered models (MLflow, through `Tracker`),
deployments (through the persistence service) and serving.

The gRPC servicer parses requests, calls one method here and converts the
result; everything that decides lives here or in the pure modules
`deployments` (history, states) and `serving` (features -> predictions).

Trust (`alphaswarm_registry.trust`): a version is registered only from a
finished-or-running training run of our trainer, for the model URI that run
logged, and only after the artifact's bytes hash to the sha256 the caller
passes (`model_sha256`, from the trainer's `Train` response) and hold a
skops model of trusted types; the registry then signs the version (sha256 +
HMAC with its own key) in the catalog. The version's lineage tags (sha256,
producer, model URI, feature names, dataset fingerprint) and headline
metrics (`valid_` / `test_` `ic_spearman`, `ic_pearson`, `icir`, read from
the run's metrics) are copied from the run; caller tags under those keys are
ignored, other caller tags are kept. Deploy, promote and rollback load the
version through `ModelTrust.load` (signed record, then bytes, then skops)
before changing anything, and check that the deployment's feature spec
yields exactly the features the version was trained on; Predict verifies
again on every call, so a model tampered with after deployment is refused
(`MODEL_TAMPERED`), as is a version the registry did not sign
(`MODEL_NOT_TRUSTED`). There is no fallback signal (`serving`).

Concurrency: a change of one deployment (deploy onto it, promote, rollback,
retire) reads it, decides and writes it back with a compare-and-set on its
`updated_at` (`SaveDeployment.expected_updated_at`): when another registry
replica changed it in between, the write is refused (`DEPLOYMENT_CHANGED`)
and the change is decided again on a fresh read, so replicas lose no history
entry. Within one process a lock per deployment keeps its own threads from
contending.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.errors import Aborted, AlphaSwarmError, FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.features import feature_names
from alphaswarm_common.grpc_client import call
from alphaswarm_common.modeling import WindowPredictions
from alphaswarm_common.protoconv import config_from_proto
from alphaswarm_common.tracking import (
    DATASET_FINGERPRINT_TAG,
    FEATURES_TAG,
    HEADLINE_METRICS,
    MODEL_SHA_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    PRODUCER_TAG,
    ModelVersionInfo,
    RegisteredModelInfo,
    Tracker,
    headline_metric_tag,
    validate_alias,
    validate_model_name,
)
from alphaswarm_registry.deployments import (
    DEFAULT_ALIAS,
    alias_for,
    new_deployment,
    previous_entry,
    retired,
    switched,
)
from alphaswarm_registry.serving import check_features, predict_deployment
from alphaswarm_registry.trust import ModelTrust, VerifiedModel

R = TypeVar("R")
# Reads and writes of one deployment before a change contended by other replicas gives up.
_CAS_ATTEMPTS = 8

__all__ = [
    "COPIED_RUN_TAGS",
    "DeployOutcome",
    "DeploymentStore",
    "PersistenceDeploymentStore",
    "Prediction",
    "Registry",
    "VersionChange",
]

#: Run tags copied onto a registered version (the trust and lineage record of the trainer).
COPIED_RUN_TAGS: tuple[str, ...] = (
    MODEL_SHA_TAG,
    PRODUCER_TAG,
    MODEL_URI_TAG,
    FEATURES_TAG,
    DATASET_FINGERPRINT_TAG,
)
_RESERVED_TAGS = frozenset(COPIED_RUN_TAGS) | {headline_metric_tag(m) for m in HEADLINE_METRICS}
_REFUSED_RUN_STATES = frozenset({"FAILED", "KILLED"})
_ACTIVE = resources_pb2.DEPLOYMENT_STATE_ACTIVE
_RETIRED = resources_pb2.DEPLOYMENT_STATE_RETIRED


class DeploymentStore(Protocol):
    """Where deployments live (the persistence service; a fake in unit tests)."""

    def get(self, deployment_id: str) -> resources_pb2.Deployment: ...

    def save(
        self,
        deployment: resources_pb2.Deployment,
        *,
        request_id: str = "",
        expected_updated_at: Any = None,
    ) -> resources_pb2.Deployment: ...

    def list(self, page_size: int, page_token: str) -> tuple[list[resources_pb2.Deployment], str]: ...


class PersistenceDeploymentStore:
    """`DeploymentStore` over the persistence service's gRPC API (every call has a deadline)."""

    def __init__(self, stub: ppb_grpc.PersistenceServiceStub, *, deadline: float = 30.0) -> None:
        self.stub = stub
        self.deadline = deadline

    def get(self, deployment_id: str) -> resources_pb2.Deployment:
        out = call(
            self.stub.GetDeployment,
            ppb.GetDeploymentRequest(deployment_id=deployment_id),
            timeout=self.deadline,
            target="persistence",
        )
        return out.deployment

    def save(
        self,
        deployment: resources_pb2.Deployment,
        *,
        request_id: str = "",
        expected_updated_at: Any = None,
    ) -> resources_pb2.Deployment:
        out = call(
            self.stub.SaveDeployment,
            ppb.SaveDeploymentRequest(
                deployment=deployment, request_id=request_id, expected_updated_at=expected_updated_at
            ),
            timeout=self.deadline,
            target="persistence",
        )
        return out.deployment

    def list(self, page_size: int, page_token: str) -> tuple[list[resources_pb2.Deployment], str]:
        out = call(
            self.stub.ListDeployments,
            ppb.ListDeploymentsRequest(page_size=page_size, page_token=page_token),
            timeout=self.deadline,
            target="persistence",
        )
        return list(out.deployments), out.next_page_token


@dataclass(frozen=True)
class DeployOutcome:
    deployment: resources_pb2.Deployment
    rolled: bool
    previous_model_version: str


@dataclass(frozen=True)
class VersionChange:
    deployment: resources_pb2.Deployment
    previous_model_version: str


@dataclass(frozen=True)
class Prediction:
    window: WindowPredictions
    deployment: resources_pb2.Deployment


def _with_context(exc: AlphaSwarmError, prefix: str, **details: Any) -> AlphaSwarmError:
    """The same error (class, reason, field) with `prefix` in front of its message."""
    out = type(exc)(
        f"{prefix}: {exc.message}", field=exc.field, reason=exc.reason, details={**exc.details, **details}
    )
    out.__cause__ = exc
    return out


class Registry:
    """Registered models, deployments and serving (see the module docstring)."""

    def __init__(
        self, tracker: Tracker, store: DeploymentStore, trust: ModelTrust, *, lock_stripes: int = 64
    ) -> None:
        self.tracker = tracker
        self.store = store
        self.trust = trust
        self._locks = [threading.Lock() for _ in range(lock_stripes)]

    def _lock(self, deployment_id: str) -> threading.Lock:
        return self._locks[zlib.crc32(deployment_id.encode()) % len(self._locks)]

    # -- registered models ----------------------------------------------------------------------
    def register_model(
        self,
        *,
        model_uri: str,
        name: str,
        run_id: str,
        model_sha256: str = "",
        alias: str = "",
        tags: Mapping[str, str] | None = None,
        registered_by: str = "",
    ) -> tuple[str, str, str]:
        """Register and sign the model a trainer run logged as a new version of `name`; (name, version, alias).

        `model_sha256` is the artifact's sha256 as the trainer returned it; the
        artifact must still hash to it (see `trust`).
        """
        if not model_uri:
            raise InvalidArgument("model_uri is required", field="model_uri")
        validate_model_name(name, field="name")
        if not run_id:
            raise InvalidArgument("run_id of the training run is required", field="run_id")
        alias = validate_alias(alias or DEFAULT_ALIAS, field="alias")
        run = self.tracker.run_info(run_id, field="run_id")
        if run.status in _REFUSED_RUN_STATES:
            raise FailedPrecondition(
                f"training run {run_id} is {run.status}; only a successful training can be registered",
                field="run_id",
                reason="RUN_NOT_SUCCESSFUL",
            )
        rt = run.tags
        if rt.get(PRODUCER_TAG) != PRODUCER or not rt.get(MODEL_SHA_TAG) or not rt.get(FEATURES_TAG):
            raise FailedPrecondition(
                f"run {run_id} was not produced by the AlphaSwarm trainer (no {PRODUCER_TAG}, {MODEL_SHA_TAG} "
                f"and {FEATURES_TAG} tags); refusing to register its model",
                field="run_id",
                reason="MODEL_NOT_TRUSTED",
            )
        logged = rt.get(MODEL_URI_TAG)
        if logged and logged != model_uri:
            raise FailedPrecondition(
                f"run {run_id} logged {logged}, not {model_uri}; only the model a training run logged can be "
                "registered from it",
                field="model_uri",
                reason="MODEL_NOT_TRUSTED",
            )
        self.trust.check_logged(model_uri, model_sha256)
        version_tags = {k: v for k, v in (tags or {}).items() if k not in _RESERVED_TAGS}
        version_tags.update({k: rt[k] for k in COPIED_RUN_TAGS if k in rt})
        version_tags.setdefault(MODEL_URI_TAG, model_uri)
        version_tags.update(
            {headline_metric_tag(m): repr(run.metrics[m]) for m in HEADLINE_METRICS if m in run.metrics}
        )
        version_tags[MODEL_SHA_TAG] = model_sha256
        # The alias moves only once the version is signed: a registration that fails half-way leaves
        # no version behind and every alias where it was.
        version = self.tracker.register_model(model_uri, name, alias=None, tags=version_tags, run_id=run_id)
        try:
            self.trust.record(
                model_name=name,
                version=version,
                model_uri=model_uri,
                sha256=model_sha256,
                registered_by=registered_by,
            )
        except BaseException:
            self.tracker.delete_model_version(name, version)
            raise
        self.tracker.set_model_alias(name, alias, version)
        return name, version, alias

    def list_models(self, page_size: int, page_token: str) -> tuple[list[RegisteredModelInfo], str]:
        return self.tracker.list_registered_models(page_size, page_token)

    def list_versions(self, name: str, page_size: int, page_token: str) -> tuple[list[ModelVersionInfo], str]:
        return self.tracker.list_model_versions(name, page_size, page_token)

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersionInfo:
        return self.tracker.set_model_alias(name, alias, version)

    # -- deployments ----------------------------------------------------------------------------
    def _verified(self, name: str, version: str, *, field: str) -> VerifiedModel:
        try:
            info = self.tracker.describe_model_version(name, version)
        except NotFound as exc:
            raise FailedPrecondition(
                f"model {name!r} version {version} is not registered; register it first",
                field=field,
                reason="MODEL_VERSION_NOT_REGISTERED",
            ) from exc
        return self.trust.load(info)

    def _alias(self, name: str, version: str, preferred: str = "") -> str:
        return alias_for(
            version, self.tracker.get_registered_model(name, field="model_name").aliases, preferred
        )

    def get(self, deployment_id: str) -> resources_pb2.Deployment:
        if not deployment_id:
            raise InvalidArgument("deployment_id is required", field="deployment_id")
        return self.store.get(deployment_id)

    def list(self, page_size: int, page_token: str) -> tuple[list[resources_pb2.Deployment], str]:
        return self.store.list(page_size, page_token)

    @staticmethod
    def _require_active(dep: resources_pb2.Deployment, action: str) -> None:
        if dep.state == _RETIRED:
            raise FailedPrecondition(
                f"deployment {dep.deployment_id} is retired; it cannot {action}",
                field="deployment_id",
                reason="DEPLOYMENT_RETIRED",
            )
        if dep.state != _ACTIVE:
            raise FailedPrecondition(
                f"deployment {dep.deployment_id} is not active (state {resources_pb2.DeploymentState.Name(dep.state)}); "
                f"it cannot {action}",
                field="deployment_id",
                reason="DEPLOYMENT_NOT_ACTIVE",
            )

    def deploy(
        self,
        *,
        model_name: str,
        model_version: str,
        dataset_cfg: config_pb2.DatasetConfig,
        strategy_cfg: config_pb2.StrategyConfig,
        deployment_id: str = "",
        model_alias: str = "",
        request_id: str = "",
    ) -> DeployOutcome:
        """Create a deployment of a verified version, or roll an active one to it."""
        validate_model_name(model_name, field="model_name")
        if not model_version:
            raise InvalidArgument("model_version is required", field="model_version")
        cfg = config_from_proto(dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        config_from_proto(strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        if model_alias:
            validate_alias(model_alias, field="model_alias")
        feature_names(cfg.features, field="dataset_cfg.features")
        verified = self._verified(model_name, model_version, field="model_version")
        version = verified.version.version
        check_features(
            cfg, verified.version.feature_names, model=verified.model, field="dataset_cfg.features"
        )
        alias = self._alias(model_name, version, model_alias)
        if not deployment_id:
            dep = new_deployment(
                model_name=model_name,
                model_version=version,
                model_alias=alias,
                dataset_cfg=dataset_cfg,
                strategy_cfg=strategy_cfg,
            )
            return DeployOutcome(self.store.save(dep, request_id=request_id), False, "")

        def roll(existing: resources_pb2.Deployment) -> DeployOutcome:
            self._require_active(existing, "be rolled to another version")
            previous = existing.model_version
            rolled = (existing.model_name, previous) != (model_name, version)
            dep = switched(
                existing,
                model_name=model_name,
                model_version=version,
                model_alias=alias,
                now=dt.datetime.now(dt.UTC),
            )
            dep.dataset_cfg.CopyFrom(dataset_cfg)
            dep.strategy_cfg.CopyFrom(strategy_cfg)
            saved = self.store.save(dep, request_id=request_id, expected_updated_at=existing.updated_at)
            return DeployOutcome(saved, rolled, previous)

        return self._update(deployment_id, roll)

    def promote(self, deployment_id: str, *, model_version: str = "", model_alias: str = "") -> VersionChange:
        """Serve another version of the deployment's model: `model_version`, or the one `model_alias` points at."""
        if not deployment_id:
            raise InvalidArgument("deployment_id is required", field="deployment_id")
        if not model_version and not model_alias:
            raise InvalidArgument("give model_version or model_alias", field="model_version")

        def promote(dep: resources_pb2.Deployment) -> VersionChange:
            self._require_active(dep, "be promoted")
            target = model_version
            if model_alias:
                validate_alias(model_alias, field="model_alias")
                try:
                    target = self.tracker.resolve_alias(dep.model_name, model_alias, field="model_alias")
                except NotFound as exc:
                    raise FailedPrecondition(
                        f"{exc.message}; set it with SetModelAlias first",
                        field="model_alias",
                        reason="MODEL_ALIAS_NOT_FOUND",
                    ) from exc
                if model_version and model_version != target:
                    raise InvalidArgument(
                        f"alias {model_alias!r} points at version {target}, not {model_version}; give one of them",
                        field="model_version",
                    )
            return self._change_version(dep, dep.model_name, target, preferred_alias=model_alias)

        return self._update(deployment_id, promote)

    def rollback(self, deployment_id: str) -> VersionChange:
        """Serve the version served before the last change (see `deployments`)."""
        if not deployment_id:
            raise InvalidArgument("deployment_id is required", field="deployment_id")

        def rollback(dep: resources_pb2.Deployment) -> VersionChange:
            self._require_active(dep, "be rolled back")
            prev = previous_entry(dep)
            if prev is None:
                raise FailedPrecondition(
                    f"deployment {deployment_id} has served only {dep.model_name} v{dep.model_version}; "
                    "there is no previous version to roll back to",
                    field="deployment_id",
                    reason="NO_PREVIOUS_VERSION",
                )
            return self._change_version(
                dep, prev["model_name"], prev["version"], preferred_alias=dep.model_alias
            )

        return self._update(deployment_id, rollback)

    def _change_version(
        self, dep: resources_pb2.Deployment, name: str, version: str, *, preferred_alias: str
    ) -> VersionChange:
        try:
            verified = self._verified(name, version, field="model_version")
            cfg = config_from_proto(dep.dataset_cfg, DatasetConfig, prefix="deployment.dataset_cfg")
            check_features(cfg, verified.version.feature_names, model=verified.model)
        except AlphaSwarmError as exc:
            raise _with_context(
                exc, f"deployment {dep.deployment_id}", deployment_id=dep.deployment_id
            ) from exc
        version = verified.version.version
        previous = dep.model_version
        alias = self._alias(name, version, preferred_alias)
        if (dep.model_name, dep.model_version, dep.model_alias) == (name, version, alias):
            return VersionChange(dep, previous)  # already serving it: nothing to record
        changed = switched(
            dep, model_name=name, model_version=version, model_alias=alias, now=dt.datetime.now(dt.UTC)
        )
        return VersionChange(self.store.save(changed, expected_updated_at=dep.updated_at), previous)

    def retire(self, deployment_id: str) -> resources_pb2.Deployment:
        """Stop serving; the deployment and its history are kept. Retiring a retired deployment is a no-op."""
        if not deployment_id:
            raise InvalidArgument("deployment_id is required", field="deployment_id")

        def retire(dep: resources_pb2.Deployment) -> resources_pb2.Deployment:
            if dep.state == _RETIRED:
                return dep
            return self.store.save(retired(dep), expected_updated_at=dep.updated_at)

        return self._update(deployment_id, retire)

    def _update(self, deployment_id: str, decide: Callable[[resources_pb2.Deployment], R]) -> R:
        """Read the deployment, decide and write (a compare-and-set); decide again on a fresh
        read when another replica changed it in between."""
        for attempt in range(_CAS_ATTEMPTS):
            with self._lock(deployment_id):
                try:
                    return decide(self.store.get(deployment_id))
                except Aborted as exc:
                    if exc.reason != "DEPLOYMENT_CHANGED" or attempt == _CAS_ATTEMPTS - 1:
                        raise
            time.sleep(random.uniform(0.0, 0.05 * (attempt + 1)))
        raise AssertionError("unreachable")

    # -- serving --------------------------------------------------------------------------------
    def predict(
        self,
        deployment_id: str,
        *,
        start: dt.date | None = None,
        end: dt.date | None = None,
        latest: bool = False,
    ) -> Prediction:
        """The deployment's predictions over [start, end], or for its latest date; no fallback."""
        dep = self.get(deployment_id)
        self._require_active(dep, "serve predictions")
        prefix = f"deployment {dep.deployment_id} ({dep.model_name} v{dep.model_version})"
        try:
            verified = self._verified(dep.model_name, dep.model_version, field="deployment_id")
            try:
                cfg = config_from_proto(dep.dataset_cfg, DatasetConfig, prefix="deployment.dataset_cfg")
            except InvalidArgument as exc:
                raise FailedPrecondition(
                    f"its stored dataset config is not valid: {exc}", reason="DEPLOYMENT_DATA_UNUSABLE"
                ) from exc
            window = predict_deployment(
                verified.model, cfg, verified.version.feature_names, start=start, end=end, latest=latest
            )
        except FailedPrecondition as exc:
            raise _with_context(exc, prefix, deployment_id=dep.deployment_id) from exc
        return Prediction(window, dep)
