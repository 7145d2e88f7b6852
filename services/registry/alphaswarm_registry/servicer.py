"""gRPC adapter of the registry: registered models (MLflow registry), deployments
(`DeployedModelAlpha`, stored through the persistence service) and serving.

Each method parses its request, makes one call to `alphaswarm_registry.core.Registry`
and converts the result; domain errors propagate and the shared interceptor
(`alphaswarm_common.grpc_server`) turns them into status codes with
`ErrorInfo.reason` and the offending field. Trust, history and serving rules
are documented in `core`, `deployments` and `serving`.

Model trust (signed records, verification before any load) is `trust`.
Error reasons (all FAILED_PRECONDITION): `MODEL_NOT_TRUSTED`, `MODEL_TAMPERED`,
`MODEL_ARTIFACT_MISSING`, `MODEL_LOAD_FAILED`, `MODEL_VERSION_NOT_REGISTERED`,
`MODEL_ALIAS_NOT_FOUND`, `RUN_NOT_SUCCESSFUL`, `DEPLOYMENT_RETIRED`,
`NO_PREVIOUS_VERSION`, `MODEL_FEATURES_UNKNOWN`, `FEATURES_MISMATCH`,
`DEPLOYMENT_DATA_UNUSABLE`, `MODEL_PREDICT_FAILED`, `NO_PREDICTIONS`,
`DEPLOYMENT_NOT_ACTIVE`, `MODEL_NOT_READY`.
An unknown model, version or deployment addressed by the request is NOT_FOUND;
pagination follows AIP-158 (`page_size` 0 = 50, capped at 500, negative is
INVALID_ARGUMENT).
"""

from __future__ import annotations

from typing import Any

from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.auth import current_principal
from alphaswarm_common.protoconv import dates_from_strings, matrix_to_proto
from alphaswarm_common.tracking import ModelVersionInfo, RegisteredModelInfo, Tracker
from alphaswarm_registry.core import PersistenceDeploymentStore, Registry
from alphaswarm_registry.deployments import DEFAULT_ALIAS
from alphaswarm_registry.trust import ModelTrust, PersistenceTrustStore

__all__ = ["DEFAULT_ALIAS", "SERVICE_NAME", "RegistryServicer", "model_to_proto", "version_to_proto"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name


def model_to_proto(m: RegisteredModelInfo) -> pb.RegisteredModel:
    return pb.RegisteredModel(
        name=m.name,
        description=m.description,
        aliases=m.aliases,
        latest_version=m.latest_version,
        tags=m.tags,
        created_at_ms=m.created_at_ms,
        updated_at_ms=m.updated_at_ms,
    )


def version_to_proto(v: ModelVersionInfo) -> pb.ModelVersion:
    return pb.ModelVersion(
        name=v.name,
        version=v.version,
        aliases=list(v.aliases),
        run_id=v.run_id,
        source=v.source,
        tags=v.tags,
        status=v.status,
        created_at_ms=v.created_at_ms,
    )


def caller_of(context: Any) -> str:
    """Who is calling: the authenticated principal (`subject (role via ...)`), else the transport peer."""
    principal = current_principal()
    if principal is not None:
        return f"{principal.subject} ({principal.role} via {principal.via})"
    try:
        return str(context.peer() or "") if context is not None else ""
    except Exception:  # a context without transport details (in-process calls)
        return ""


def _date(value: str, field: str) -> Any:
    return dates_from_strings([value], field=field)[0].item() if value else None


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(
        self,
        tracker: Tracker,
        persistence: ppb_grpc.PersistenceServiceStub,
        *,
        signing_key: bytes,
        deadline: float = 30.0,
        registry: Registry | None = None,
    ) -> None:
        self.tracker = tracker
        self.persistence = persistence
        self.deadline = deadline
        self.registry = registry or Registry(
            tracker,
            PersistenceDeploymentStore(persistence, deadline=deadline),
            ModelTrust(tracker, PersistenceTrustStore(persistence, deadline=deadline), signing_key),
        )

    # -- models ---------------------------------------------------------------------------------
    def RegisterModel(self, request: pb.RegisterModelRequest, context: Any) -> pb.RegisterModelResponse:
        name, version, alias = self.registry.register_model(
            model_uri=request.model_uri,
            name=request.name,
            run_id=request.run_id,
            model_sha256=request.model_sha256,
            alias=request.alias,
            tags=dict(request.tags),
            registered_by=caller_of(context),
        )
        return pb.RegisterModelResponse(name=name, version=version, alias=alias)

    def ListRegisteredModels(
        self, request: pb.ListRegisteredModelsRequest, context: Any
    ) -> pb.ListRegisteredModelsResponse:
        models, token = self.registry.list_models(request.page_size, request.page_token)
        return pb.ListRegisteredModelsResponse(
            models=[model_to_proto(m) for m in models], next_page_token=token
        )

    def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Any
    ) -> pb.ListModelVersionsResponse:
        versions, token = self.registry.list_versions(request.name, request.page_size, request.page_token)
        return pb.ListModelVersionsResponse(
            versions=[version_to_proto(v) for v in versions], next_page_token=token
        )

    def SetModelAlias(self, request: pb.SetModelAliasRequest, context: Any) -> pb.SetModelAliasResponse:
        version = self.registry.set_alias(request.name, request.alias, request.version)
        return pb.SetModelAliasResponse(version=version_to_proto(version))

    # -- deployments ----------------------------------------------------------------------------
    def Deploy(self, request: pb.DeployRequest, context: Any) -> pb.DeployResponse:
        out = self.registry.deploy(
            model_name=request.model_name,
            model_version=request.model_version,
            dataset_cfg=request.dataset_cfg,
            strategy_cfg=request.strategy_cfg,
            deployment_id=request.deployment_id,
            model_alias=request.model_alias,
            request_id=request.request_id,
        )
        return pb.DeployResponse(
            deployment=out.deployment, rolled=out.rolled, previous_model_version=out.previous_model_version
        )

    def GetDeployment(self, request: pb.GetDeploymentRequest, context: Any) -> pb.GetDeploymentResponse:
        return pb.GetDeploymentResponse(deployment=self.registry.get(request.deployment_id))

    def ListDeployments(self, request: pb.ListDeploymentsRequest, context: Any) -> pb.ListDeploymentsResponse:
        deployments, token = self.registry.list(request.page_size, request.page_token)
        return pb.ListDeploymentsResponse(deployments=deployments, next_page_token=token)

    def PromoteDeployment(
        self, request: pb.PromoteDeploymentRequest, context: Any
    ) -> pb.PromoteDeploymentResponse:
        out = self.registry.promote(
            request.deployment_id, model_version=request.model_version, model_alias=request.model_alias
        )
        return pb.PromoteDeploymentResponse(
            deployment=out.deployment, previous_model_version=out.previous_model_version
        )

    def RollbackDeployment(
        self, request: pb.RollbackDeploymentRequest, context: Any
    ) -> pb.RollbackDeploymentResponse:
        out = self.registry.rollback(request.deployment_id)
        return pb.RollbackDeploymentResponse(
            deployment=out.deployment, previous_model_version=out.previous_model_version
        )

    def RetireDeployment(
        self, request: pb.RetireDeploymentRequest, context: Any
    ) -> pb.RetireDeploymentResponse:
        return pb.RetireDeploymentResponse(deployment=self.registry.retire(request.deployment_id))

    # -- serving --------------------------------------------------------------------------------
    def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        start = None if request.latest else _date(request.start_date, "start_date")
        end = None if request.latest else _date(request.end_date, "end_date")
        out = self.registry.predict(request.deployment_id, start=start, end=end, latest=request.latest)
        w = out.window
        return pb.PredictResponse(
            predictions=matrix_to_proto(w.values, w.dates, w.symbols),
            model_name=out.deployment.model_name,
            model_version=out.deployment.model_version,
            dataset_fingerprint=w.fingerprint,
        )
