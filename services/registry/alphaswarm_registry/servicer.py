"""gRPC adapter of the registry: registered models (MLflow registry), deployments
(`DeployedModelAlpha`, stored through the persistence service) and serving.

Trust: a version is registered only from a training run of our trainer; the
artifact's sha256 and the feature names are copied from that run's tags (not
from the caller) onto the version, and verified before every load.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import struct_pb2

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.errors import FailedPrecondition, InvalidArgument, NotFound
from alphaswarm_common.grpc_client import call
from alphaswarm_common.modeling import predict_window
from alphaswarm_common.protoconv import config_from_proto, dates_from_strings, matrix_to_proto
from alphaswarm_common.tracking import FEATURES_TAG, MODEL_SHA_TAG, PRODUCER, PRODUCER_TAG, Tracker

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name
DEFAULT_ALIAS = "champion"


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(
        self, tracker: Tracker, persistence: ppb_grpc.PersistenceServiceStub, *, deadline: float = 30.0
    ) -> None:
        self.tracker = tracker
        self.persistence = persistence
        self.deadline = deadline

    # -- models ---------------------------------------------------------------------------------
    def RegisterModel(self, request: pb.RegisterModelRequest, context: Any) -> pb.RegisterModelResponse:
        if not request.model_uri:
            raise InvalidArgument("model_uri is required", field="model_uri")
        if not request.name:
            raise InvalidArgument("name is required", field="name")
        if not request.run_id:
            raise InvalidArgument("run_id of the training run is required", field="run_id")
        try:
            run = self.tracker.get_run(request.run_id)
        except Exception as exc:
            raise NotFound(f"no MLflow run {request.run_id}: {exc}", field="run_id") from exc
        run_tags = run.data.tags
        if run_tags.get(PRODUCER_TAG) != PRODUCER or MODEL_SHA_TAG not in run_tags:
            raise FailedPrecondition(
                f"run {request.run_id} was not produced by the AlphaSwarm trainer; refusing to register its model",
                reason="MODEL_NOT_TRUSTED",
            )
        tags = dict(request.tags)
        for key in (MODEL_SHA_TAG, PRODUCER_TAG, FEATURES_TAG, "alphaswarm.dataset_fingerprint"):
            if key in run_tags:
                tags[key] = run_tags[key]
        alias = request.alias or DEFAULT_ALIAS
        version = self.tracker.register_model(
            request.model_uri, request.name, alias=alias, tags=tags, run_id=request.run_id
        )
        return pb.RegisterModelResponse(name=request.name, version=version, alias=alias)

    # -- deployments ----------------------------------------------------------------------------
    def Deploy(self, request: pb.DeployRequest, context: Any) -> pb.DeployResponse:
        if not request.model_name:
            raise InvalidArgument("model_name is required", field="model_name")
        if not request.model_version:
            raise InvalidArgument("model_version is required", field="model_version")
        config_from_proto(request.dataset_cfg, DatasetConfig, prefix="dataset_cfg")
        config_from_proto(request.strategy_cfg, StrategyConfig, prefix="strategy_cfg")
        try:
            mv = self.tracker.get_model_version(request.model_name, request.model_version)
        except NotFound as exc:
            raise FailedPrecondition(
                f"model {request.model_name!r} version {request.model_version} is not registered; register it first",
                field="model_version",
            ) from exc
        now = dt.datetime.now(dt.UTC)
        previous = ""
        if request.deployment_id:
            existing = self._get(request.deployment_id)
            dep = resources_pb2.Deployment()
            dep.CopyFrom(existing)
            previous = existing.model_version
            if previous != request.model_version or existing.model_name != request.model_name:
                entry = struct_pb2.Struct()
                entry.update(
                    {
                        "model_name": existing.model_name,
                        "version": previous,
                        "from": existing.updated_at.ToDatetime(tzinfo=dt.UTC).isoformat(),
                        "to": now.isoformat(),
                    }
                )
                dep.history.values.add().struct_value.CopyFrom(entry)
        else:
            dep = resources_pb2.Deployment(state=resources_pb2.DEPLOYMENT_STATE_ACTIVE)
        dep.model_name = request.model_name
        dep.model_version = request.model_version
        dep.model_alias = request.model_alias or DEFAULT_ALIAS
        dep.model_uri = f"models:/{request.model_name}/{request.model_version}"
        dep.dataset_cfg.CopyFrom(request.dataset_cfg)
        dep.strategy_cfg.CopyFrom(request.strategy_cfg)
        dep.state = resources_pb2.DEPLOYMENT_STATE_ACTIVE
        del mv
        saved = call(
            self.persistence.SaveDeployment,
            ppb.SaveDeploymentRequest(deployment=dep, request_id=request.request_id),
            timeout=self.deadline,
            target="persistence",
        )
        rolled = bool(request.deployment_id) and previous != request.model_version
        return pb.DeployResponse(deployment=saved.deployment, rolled=rolled, previous_model_version=previous)

    def GetDeployment(self, request: pb.GetDeploymentRequest, context: Any) -> pb.GetDeploymentResponse:
        return pb.GetDeploymentResponse(deployment=self._get(request.deployment_id))

    def ListDeployments(self, request: pb.ListDeploymentsRequest, context: Any) -> pb.ListDeploymentsResponse:
        out = call(
            self.persistence.ListDeployments,
            ppb.ListDeploymentsRequest(page_size=request.page_size, page_token=request.page_token),
            timeout=self.deadline,
            target="persistence",
        )
        return pb.ListDeploymentsResponse(deployments=out.deployments, next_page_token=out.next_page_token)

    # -- serving --------------------------------------------------------------------------------
    def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        dep = self._get(request.deployment_id)
        if dep.state != resources_pb2.DEPLOYMENT_STATE_ACTIVE:
            raise FailedPrecondition(f"deployment {dep.deployment_id} is retired", field="deployment_id")
        start = (
            dates_from_strings([request.start_date], field="start_date")[0] if request.start_date else None
        )
        end = dates_from_strings([request.end_date], field="end_date")[0] if request.end_date else None
        if start is not None and end is not None and end < start:
            raise InvalidArgument(f"end_date {end} is before start_date {start}", field="end_date")
        model = self.tracker.load_verified_model(dep.model_name, dep.model_version)
        mv = self.tracker.get_model_version(dep.model_name, dep.model_version)
        expected = json.loads(mv.tags[FEATURES_TAG]) if FEATURES_TAG in (mv.tags or {}) else None
        dataset_cfg = config_from_proto(dep.dataset_cfg, DatasetConfig, prefix="deployment.dataset_cfg")
        window = predict_window(model, dataset_cfg, start, end, expected_features=expected)
        return pb.PredictResponse(
            predictions=matrix_to_proto(window.values, window.dates, window.symbols),
            model_name=dep.model_name,
            model_version=dep.model_version,
            dataset_fingerprint=window.fingerprint,
        )

    def _get(self, deployment_id: str) -> resources_pb2.Deployment:
        if not deployment_id:
            raise InvalidArgument("deployment_id is required", field="deployment_id")
        out = call(
            self.persistence.GetDeployment,
            ppb.GetDeploymentRequest(deployment_id=deployment_id),
            timeout=self.deadline,
            target="persistence",
        )
        return out.deployment
