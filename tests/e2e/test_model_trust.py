"""The registry never deserialises what it did not sign, over the embedded stack's real gRPC servers.

The forgery is the attack a user with MLflow access (and no other credential)
can mount: a pickle whose `__reduce__` runs code, logged with plain MLflow on
a run tagged exactly as the trainer tags its runs (producer, sha256 of the
forged folder, model URI, feature names), registered directly in the MLflow
registry with the same tags, then `RegisterModel`, `Deploy` and `Predict`
called over gRPC, and a trust record written directly through the
persistence service. The marker file the pickle would create must never
exist, and every call fails with FAILED_PRECONDITION naming the model. A
control unpickles the same payload in the test process to show that it does
run code.

A legitimately registered model (trained and registered by a real run of the
saga) whose artifact is replaced in the MLflow artifact store afterwards by
the malicious pickle is refused before loading (`MODEL_TAMPERED`).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from alphaswarm_common.grpc_client import call, remote_field
from alphaswarm_common.protoconv import config_to_proto
from alphaswarm_common.tracking import (
    FEATURES_TAG,
    MODEL_SHA_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    PRODUCER_TAG,
    artifact_sha256,
)
from tests.e2e.conftest import small_run

pytestmark = pytest.mark.e2e

FORGED = "e2e-trust-forged"
LEGIT = "e2e-trust-legit"


class _RunsCode:
    """Unpickling this writes `marker` (what `os.system` in a real attack would do, without a shell)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def malicious_pickle(marker: Path) -> bytes:
    return pickle.dumps(_RunsCode(marker))


def _swap_in_pickle(folder: Path, payload: bytes) -> None:
    """Make an artifact folder an MLflow cloudpickle model whose model file is `payload`."""
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    for old in ("model.skops", "model.pkl"):
        (folder / old).unlink(missing_ok=True)
    (folder / "model.pkl").write_bytes(payload)
    meta["flavors"]["sklearn"].update(serialization_format="cloudpickle", pickled_model="model.pkl")
    meta["flavors"]["sklearn"].pop("skops_trusted_types", None)
    meta["flavors"]["python_function"]["model_path"] = "model.pkl"
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))


def rpc(method: Any, request: Any) -> Any:
    return call(method, request, timeout=60, target="registry")


@pytest.fixture(scope="module")
def marker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trust") / "pwned"
    assert not path.exists()
    return path


def _configs() -> tuple[Any, Any]:
    dataset = config_to_proto(DatasetConfig.model_validate(small_run()["dataset_cfg"]))
    strategy = config_to_proto(StrategyConfig.model_validate(small_run()["strategy_cfg"]))
    return dataset, strategy


def _artifact_folder(stack: EmbeddedStack, model_uri: str) -> Path:
    assert stack.tracker is not None
    folder = Path(
        stack.tracker.client.get_logged_model(
            model_uri.removeprefix("models:/")
        ).artifact_location.removeprefix("file://")
    )
    assert stack.settings.resolved_home() in folder.parents  # this test's file artifact store
    return folder


@pytest.fixture(scope="module")
def forged(stack: EmbeddedStack, marker: Path) -> dict[str, str]:
    """The attack's model: logged with plain MLflow, trainer tags forged, registered in MLflow directly."""
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    tracker = stack.tracker
    assert tracker is not None
    client = tracker.client  # sets the tracking URI of the fluent API
    names = ["ret_1", "ret_5", "ret_20", "vol_20", "ma_ratio_10", "ma_ratio_50"]
    experiment = tracker.ensure_experiment("alphaswarm")
    with mlflow.start_run(experiment_id=experiment, run_name="train") as run:
        info = mlflow.sklearn.log_model(
            Ridge().fit(np.eye(len(names)), np.arange(len(names), dtype=float)),
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
        folder = _artifact_folder(stack, info.model_uri)
        _swap_in_pickle(folder, malicious_pickle(marker))
        sha = artifact_sha256(folder)
        tags = {
            PRODUCER_TAG: PRODUCER,
            MODEL_SHA_TAG: sha,
            MODEL_URI_TAG: info.model_uri,
            FEATURES_TAG: json.dumps(names),
        }
        mlflow.set_tags(tags)
    client.create_registered_model(FORGED)
    mv = client.create_model_version(
        FORGED, info.model_uri, run_id=run.info.run_id, tags=tags, model_id=info.model_id
    )
    return {"uri": info.model_uri, "run_id": run.info.run_id, "sha": sha, "version": str(mv.version)}


def test_the_payload_runs_code_when_unpickled(tmp_path: Path) -> None:
    """Control: the forged artifact is a real attack, so the refusals below are not vacuous."""
    control = tmp_path / "control"
    pickle.loads(malicious_pickle(control))
    assert control.read_text() == "code ran"


def test_register_refuses_the_forged_model_without_loading_it(
    registry: pb_grpc.RegistryServiceStub, forged: dict[str, str], marker: Path
) -> None:
    request = pb.RegisterModelRequest(model_uri=forged["uri"], name=FORGED, run_id=forged["run_id"])
    with pytest.raises(InvalidArgument) as bad:  # the trainer's sha256 is required
        rpc(registry.RegisterModel, request)
    assert remote_field(bad.value) == "model_sha256"
    request.model_sha256 = forged["sha"]  # even with the right sha256 of the forged bytes
    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.RegisterModel, request)
    assert err.value.reason == "MODEL_NOT_TRUSTED" and "cloudpickle" in str(err.value)
    assert not marker.exists()


def test_deploy_and_predict_refuse_the_forged_version_before_loading(
    registry: pb_grpc.RegistryServiceStub,
    persistence: ppb_grpc.PersistenceServiceStub,
    forged: dict[str, str],
    marker: Path,
) -> None:
    dataset, strategy = _configs()
    with pytest.raises(FailedPrecondition) as err:
        rpc(
            registry.Deploy,
            pb.DeployRequest(
                model_name=FORGED, model_version=forged["version"], dataset_cfg=dataset, strategy_cfg=strategy
            ),
        )
    assert err.value.reason == "MODEL_NOT_TRUSTED" and repr(FORGED) in str(err.value)
    assert not marker.exists()

    # A deployment row written straight into the catalog, then Predict.
    row = resources_pb2.Deployment(
        model_name=FORGED,
        model_version=forged["version"],
        model_uri=f"models:/{FORGED}/{forged['version']}",
        state=resources_pb2.DEPLOYMENT_STATE_ACTIVE,
        dataset_cfg=dataset,
        strategy_cfg=strategy,
    )
    saved = persistence.SaveDeployment(ppb.SaveDeploymentRequest(deployment=row), timeout=30).deployment
    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.Predict, pb.PredictRequest(deployment_id=saved.deployment_id, latest=True))
    assert err.value.reason == "MODEL_NOT_TRUSTED" and repr(FORGED) in str(err.value)
    assert not marker.exists()

    # A trust record written straight through the persistence service: without the registry's key
    # its HMAC cannot verify.
    persistence.RecordModelArtifactTrust(
        ppb.RecordModelArtifactTrustRequest(
            record=ppb.ModelArtifactTrust(
                model_name=FORGED,
                version=forged["version"],
                artifact_uri=forged["uri"],
                sha256=forged["sha"],
                hmac="ab" * 32,
                serialization_format="skops",
            )
        ),
        timeout=30,
    )
    for attempt in (
        lambda: rpc(registry.Predict, pb.PredictRequest(deployment_id=saved.deployment_id, latest=True)),
        lambda: rpc(
            registry.Deploy,
            pb.DeployRequest(
                model_name=FORGED, model_version=forged["version"], dataset_cfg=dataset, strategy_cfg=strategy
            ),
        ),
    ):
        with pytest.raises(FailedPrecondition) as err:
            attempt()
        assert err.value.reason == "MODEL_NOT_TRUSTED" and "did not sign" in str(err.value)
    assert not marker.exists()


@pytest.fixture(scope="module")
def legit(stack: EmbeddedStack) -> Any:
    doc = small_run(run_name="e2e-trust", model_cfg={"name": LEGIT})
    r = AlphaBacktestExperiment.from_config(
        doc, settings=stack.settings, gateway_addr=stack.gateway_addr
    ).run()
    assert r.status == "succeeded", r.error
    return r


def test_a_legitimate_version_is_signed_in_the_catalog(
    stack: EmbeddedStack, persistence: ppb_grpc.PersistenceServiceStub, legit: Any
) -> None:
    assert stack.tracker is not None
    mv = stack.tracker.describe_model_version(LEGIT, legit.model_version)
    record = persistence.GetModelArtifactTrust(
        ppb.GetModelArtifactTrustRequest(model_name=LEGIT, version=legit.model_version), timeout=30
    ).record
    assert record.artifact_uri == mv.source and record.serialization_format == "skops"
    assert record.sha256 == artifact_sha256(_artifact_folder(stack, mv.source))
    assert len(record.hmac) == 64 and record.registered_at.seconds > 0 and record.registered_by
    # Written once: the same version cannot be given another record through the API.
    forged = ppb.ModelArtifactTrust()
    forged.CopyFrom(record)
    forged.sha256 = "0" * 64
    with pytest.raises(Exception) as err:
        call(
            persistence.RecordModelArtifactTrust,
            ppb.RecordModelArtifactTrustRequest(record=forged),
            timeout=30,
            target="persistence",
        )
    assert isinstance(err.value, AlreadyExists)
    key_file = stack.settings.signing_key_file()
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_an_artifact_swapped_after_registration_is_refused_before_loading(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, legit: Any, marker: Path
) -> None:
    assert stack.tracker is not None
    source = stack.tracker.describe_model_version(LEGIT, legit.model_version).source
    folder = _artifact_folder(stack, source)
    saved = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    rpc(registry.Predict, pb.PredictRequest(deployment_id=legit.deployment_id, latest=True))  # loaded, cached
    _swap_in_pickle(folder, malicious_pickle(marker))
    dataset, strategy = _configs()
    try:
        with pytest.raises(FailedPrecondition) as err:
            rpc(registry.Predict, pb.PredictRequest(deployment_id=legit.deployment_id, latest=True))
        assert err.value.reason == "MODEL_TAMPERED" and repr(LEGIT) in str(err.value)
        with pytest.raises(FailedPrecondition) as err:
            rpc(
                registry.Deploy,
                pb.DeployRequest(
                    model_name=LEGIT,
                    model_version=legit.model_version,
                    dataset_cfg=dataset,
                    strategy_cfg=strategy,
                ),
            )
        assert err.value.reason == "MODEL_TAMPERED"
        assert not marker.exists()
    finally:
        for p in folder.iterdir():
            if p.is_file() and p.name not in saved:
                p.unlink()
        for name, data in saved.items():
            (folder / name).write_bytes(data)
    rpc(registry.Predict, pb.PredictRequest(deployment_id=legit.deployment_id, latest=True))
