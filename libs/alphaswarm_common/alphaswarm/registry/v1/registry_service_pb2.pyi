from alphaswarm.common.v1 import arrays_pb2 as _arrays_pb2
from alphaswarm.common.v1 import resources_pb2 as _resources_pb2
from alphaswarm.common.v1 import config_pb2 as _config_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisteredModel(_message.Message):
    __slots__ = ("name", "description", "aliases", "latest_version", "tags", "created_at_ms", "updated_at_ms")
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    aliases: _containers.ScalarMap[str, str]
    latest_version: str
    tags: _containers.ScalarMap[str, str]
    created_at_ms: int
    updated_at_ms: int
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., aliases: _Optional[_Mapping[str, str]] = ..., latest_version: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., created_at_ms: _Optional[int] = ..., updated_at_ms: _Optional[int] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "aliases", "run_id", "source", "tags", "status", "created_at_ms")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    run_id: str
    source: str
    tags: _containers.ScalarMap[str, str]
    status: str
    created_at_ms: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., run_id: _Optional[str] = ..., source: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., status: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class ListRegisteredModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRegisteredModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[RegisteredModel]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[RegisteredModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions", "next_page_token")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    next_page_token: str
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SetModelAliasRequest(_message.Message):
    __slots__ = ("name", "alias", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    alias: str
    version: str
    def __init__(self, name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SetModelAliasResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: ModelVersion
    def __init__(self, version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class PromoteDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id", "model_version", "model_alias")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIAS_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    model_version: str
    model_alias: str
    def __init__(self, deployment_id: _Optional[str] = ..., model_version: _Optional[str] = ..., model_alias: _Optional[str] = ...) -> None: ...

class PromoteDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "previous_model_version")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    previous_model_version: str
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., previous_model_version: _Optional[str] = ...) -> None: ...

class RollbackDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class RollbackDeploymentResponse(_message.Message):
    __slots__ = ("deployment", "previous_model_version")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    previous_model_version: str
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., previous_model_version: _Optional[str] = ...) -> None: ...

class RetireDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class RetireDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ...) -> None: ...

class RegisterModelRequest(_message.Message):
    __slots__ = ("model_uri", "name", "alias", "tags", "run_id", "model_sha256")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_URI_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    model_uri: str
    name: str
    alias: str
    tags: _containers.ScalarMap[str, str]
    run_id: str
    model_sha256: str
    def __init__(self, model_uri: _Optional[str] = ..., name: _Optional[str] = ..., alias: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., run_id: _Optional[str] = ..., model_sha256: _Optional[str] = ...) -> None: ...

class RegisterModelResponse(_message.Message):
    __slots__ = ("name", "version", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    alias: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("deployment_id", "model_name", "model_version", "model_alias", "dataset_cfg", "strategy_cfg", "request_id")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ALIAS_FIELD_NUMBER: _ClassVar[int]
    DATASET_CFG_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_CFG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    model_name: str
    model_version: str
    model_alias: str
    dataset_cfg: _config_pb2.DatasetConfig
    strategy_cfg: _config_pb2.StrategyConfig
    request_id: str
    def __init__(self, deployment_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., model_alias: _Optional[str] = ..., dataset_cfg: _Optional[_Union[_config_pb2.DatasetConfig, _Mapping]] = ..., strategy_cfg: _Optional[_Union[_config_pb2.StrategyConfig, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class DeployResponse(_message.Message):
    __slots__ = ("deployment", "rolled", "previous_model_version")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    ROLLED_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    rolled: bool
    previous_model_version: str
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ..., rolled: _Optional[bool] = ..., previous_model_version: _Optional[str] = ...) -> None: ...

class GetDeploymentRequest(_message.Message):
    __slots__ = ("deployment_id",)
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    def __init__(self, deployment_id: _Optional[str] = ...) -> None: ...

class GetDeploymentResponse(_message.Message):
    __slots__ = ("deployment",)
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    deployment: _resources_pb2.Deployment
    def __init__(self, deployment: _Optional[_Union[_resources_pb2.Deployment, _Mapping]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments", "next_page_token")
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[_resources_pb2.Deployment]
    next_page_token: str
    def __init__(self, deployments: _Optional[_Iterable[_Union[_resources_pb2.Deployment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("deployment_id", "start_date", "end_date", "latest")
    DEPLOYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    deployment_id: str
    start_date: str
    end_date: str
    latest: bool
    def __init__(self, deployment_id: _Optional[str] = ..., start_date: _Optional[str] = ..., end_date: _Optional[str] = ..., latest: _Optional[bool] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("predictions", "model_name", "model_version", "dataset_fingerprint")
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATASET_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    predictions: _arrays_pb2.Matrix
    model_name: str
    model_version: str
    dataset_fingerprint: str
    def __init__(self, predictions: _Optional[_Union[_arrays_pb2.Matrix, _Mapping]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., dataset_fingerprint: _Optional[str] = ...) -> None: ...
