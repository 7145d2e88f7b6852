"""The registry over the embedded stack's real gRPC server: models registered by real
alpha-backtest runs, listing, aliases, promote / rollback / retire persisted in the
catalog, latest predictions checked against the model on features recomputed with
pandas from the raw CSV, and the refusal of tampered and untrusted models."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from google.protobuf import json_format
from mlflow import MlflowClient

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.embedded import EmbeddedStack
from alphaswarm.ml.alpha_backtest_experiment import AlphaBacktestExperiment
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.persistence.v1 import persistence_service_pb2_grpc as ppb_grpc
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm.registry.v1 import registry_service_pb2_grpc as pb_grpc
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.errors import AlphaSwarmError, FailedPrecondition, NotFound
from alphaswarm_common.grpc_client import call, channel, remote_field
from alphaswarm_common.model_artifacts import load_skops_model
from alphaswarm_common.protoconv import config_to_proto, matrix_from_proto
from alphaswarm_common.tracking import FEATURES_TAG, MODEL_SHA_TAG, PRODUCER, PRODUCER_TAG
from tests.e2e.conftest import small_run

pytestmark = pytest.mark.e2e

MODEL = "e2e-registry-ridge"
OUTSIDE = "e2e-registry-outside"


def rpc(method: Any, request: Any) -> Any:
    return call(method, request, timeout=60, target="registry")


@pytest.fixture(scope="module")
def runs(stack: EmbeddedStack) -> list[Any]:
    """Two real runs of the same registered model: version 1 (alpha 10) and version 2 (alpha 50)."""
    out = []
    for i, alpha in enumerate((10.0, 50.0)):
        doc = small_run(run_name=f"e2e-registry-{i}", model_cfg={"name": MODEL, "params": {"alpha": alpha}})
        r = AlphaBacktestExperiment.from_config(
            doc, settings=stack.settings, gateway_addr=stack.gateway_addr
        ).run()
        assert r.status == "succeeded", r.error
        out.append(r)
    assert [r.model_version for r in out] == ["1", "2"]
    return out


def _history(dep: resources_pb2.Deployment) -> list[dict[str, Any]]:
    return json_format.MessageToDict(dep.history) if dep.HasField("history") else []  # type: ignore[return-value]


def _deploy(registry: pb_grpc.RegistryServiceStub, version: str, **dataset: Any) -> resources_pb2.Deployment:
    cfg = DatasetConfig.model_validate({**small_run()["dataset_cfg"], **dataset})
    return rpc(
        registry.Deploy,
        pb.DeployRequest(
            model_name=MODEL,
            model_version=version,
            dataset_cfg=config_to_proto(cfg),
            strategy_cfg=config_to_proto(StrategyConfig.model_validate(small_run()["strategy_cfg"])),
        ),
    ).deployment


# --------------------------------------------------------------------------- listing and aliases


def test_versions_carry_provenance_and_the_runs_headline_metrics(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    versions = rpc(registry.ListModelVersions, pb.ListModelVersionsRequest(name=MODEL)).versions
    assert [v.version for v in versions] == ["2", "1"]
    client = MlflowClient(stack.settings.tracking_uri())
    for v, r in zip(versions, reversed(runs), strict=True):
        assert v.run_id == r.mlflow_train_run_id and v.status == "READY"
        run = client.get_run(r.mlflow_train_run_id)
        assert v.tags[PRODUCER_TAG] == PRODUCER
        assert v.tags[MODEL_SHA_TAG] == run.data.tags[MODEL_SHA_TAG]
        assert json.loads(v.tags[FEATURES_TAG]) == json.loads(run.data.tags[FEATURES_TAG])
        assert v.tags["alphaswarm.dataset_fingerprint"] == run.data.tags["alphaswarm.dataset_fingerprint"]
        for seg in ("valid", "test"):
            for metric in ("ic_spearman", "ic_pearson", "icir"):
                key = f"{seg}_{metric}"
                assert float(v.tags[f"alphaswarm.{key}"]) == pytest.approx(run.data.metrics[key], rel=1e-12)
    assert list(versions[0].aliases) == ["champion"]  # the newest registration took the champion alias

    page = rpc(registry.ListModelVersions, pb.ListModelVersionsRequest(name=MODEL, page_size=1))
    assert [v.version for v in page.versions] == ["2"] and page.next_page_token
    with pytest.raises(NotFound) as err:
        rpc(registry.ListModelVersions, pb.ListModelVersionsRequest(name="e2e-no-such-model"))
    assert remote_field(err.value) == "name"


def test_list_registered_models_pages_through_every_model(
    registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    models, token = [], ""
    while True:
        page = rpc(
            registry.ListRegisteredModels, pb.ListRegisteredModelsRequest(page_size=1, page_token=token)
        )
        models += list(page.models)
        token = page.next_page_token
        if not token:
            break
    names = [m.name for m in models]
    assert names == sorted(names) and len(names) == len(set(names))
    ours = {m.name: m for m in models}[MODEL]
    assert ours.latest_version == "2" and ours.aliases["champion"] == "2"


def test_champion_and_challenger_aliases(registry: pb_grpc.RegistryServiceStub, runs: list[Any]) -> None:
    out = rpc(registry.SetModelAlias, pb.SetModelAliasRequest(name=MODEL, alias="challenger", version="1"))
    assert out.version.version == "1" and list(out.version.aliases) == ["challenger"]
    versions = rpc(registry.ListModelVersions, pb.ListModelVersionsRequest(name=MODEL)).versions
    assert {v.version: list(v.aliases) for v in versions} == {"2": ["champion"], "1": ["challenger"]}
    with pytest.raises(NotFound) as err:
        rpc(registry.SetModelAlias, pb.SetModelAliasRequest(name=MODEL, alias="challenger", version="99"))
    assert remote_field(err.value) == "version"


# --------------------------------------------------------------------------- deployments


def test_promote_rollback_retire_are_persisted(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    rpc(registry.SetModelAlias, pb.SetModelAliasRequest(name=MODEL, alias="challenger", version="1"))
    dep = _deploy(registry, "1")
    did = dep.deployment_id

    promoted = rpc(
        registry.PromoteDeployment, pb.PromoteDeploymentRequest(deployment_id=did, model_alias="champion")
    )
    assert (promoted.deployment.model_version, promoted.previous_model_version) == ("2", "1")
    stored = rpc(registry.GetDeployment, pb.GetDeploymentRequest(deployment_id=did)).deployment
    assert stored.model_version == "2" and stored.model_alias == "champion"
    (entry,) = _history(stored)
    assert (entry["model_name"], entry["version"]) == (MODEL, "1") and entry["from"] <= entry["to"]
    pred = rpc(registry.Predict, pb.PredictRequest(deployment_id=did, latest=True))
    assert (pred.model_name, pred.model_version) == (MODEL, "2")

    back = rpc(registry.RollbackDeployment, pb.RollbackDeploymentRequest(deployment_id=did))
    assert (back.deployment.model_version, back.previous_model_version) == ("1", "2")
    assert back.deployment.model_alias == "challenger"
    assert [e["version"] for e in _history(back.deployment)] == ["1", "2"]

    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.PromoteDeployment, pb.PromoteDeploymentRequest(deployment_id=did, model_version="99"))
    assert (err.value.reason, remote_field(err.value)) == ("MODEL_VERSION_NOT_REGISTERED", "model_version")

    fresh = _deploy(registry, "2")
    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.RollbackDeployment, pb.RollbackDeploymentRequest(deployment_id=fresh.deployment_id))
    assert err.value.reason == "NO_PREVIOUS_VERSION"

    retired = rpc(registry.RetireDeployment, pb.RetireDeploymentRequest(deployment_id=did)).deployment
    assert retired.state == resources_pb2.DEPLOYMENT_STATE_RETIRED
    listed = rpc(registry.ListDeployments, pb.ListDeploymentsRequest(page_size=500)).deployments
    assert {d.deployment_id: d.state for d in listed}[did] == resources_pb2.DEPLOYMENT_STATE_RETIRED
    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.Predict, pb.PredictRequest(deployment_id=did, latest=True))
    assert err.value.reason == "DEPLOYMENT_RETIRED" and did in str(err.value)
    assert remote_field(err.value) == "deployment_id"
    with pytest.raises(FailedPrecondition):
        rpc(registry.PromoteDeployment, pb.PromoteDeploymentRequest(deployment_id=did, model_version="2"))


def _reference_features(names: list[str], end: str) -> pd.DataFrame:
    """The small run's features for the last date <= `end`, recomputed with pandas from the raw CSV."""
    raw = pd.read_csv(files("alphaswarm_common") / "data" / "sp500_dataset.csv.gz", index_col="Date")
    close = raw.loc["2009-01-01":end]
    base = {
        "ret_1": close / close.shift(1) - 1,
        "ret_5": close / close.shift(5) - 1,
        "ret_20": close / close.shift(20) - 1,
        "vol_20": np.log(close).diff().rolling(20).std(ddof=1),
        "ma_ratio_10": close / close.rolling(10).mean() - 1,
        "ma_ratio_50": close / close.rolling(50).mean() - 1,
    }
    last = {k: v.iloc[-1].astype(np.float32) for k, v in base.items()}
    for k in ("ret_1", "ret_5", "ret_20"):  # ranks of the stored float32 values, scaled to [0, 1]
        r = last[k].rank(method="average")
        last[f"{k}_csrank"] = ((r - 1) / (r.count() - 1)).astype(np.float32)
    frame = pd.DataFrame(last)[names]
    frame.attrs["date"] = close.index[-1]
    return frame


def test_latest_prediction_is_the_model_on_data_through_the_last_date(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    import mlflow.artifacts

    r = runs[1]
    latest = rpc(registry.Predict, pb.PredictRequest(deployment_id=r.deployment_id, latest=True))
    values, dates, symbols = matrix_from_proto(latest.predictions)
    assert values.shape == (1, 20) and str(dates[0]) == "2019-06-28"  # the dataset's end_date

    window = rpc(
        registry.Predict,
        pb.PredictRequest(deployment_id=r.deployment_id, start_date="2019-06-01", end_date="2019-06-28"),
    )
    w_values, w_dates, _ = matrix_from_proto(window.predictions)
    assert w_dates[-1] == dates[0]
    np.testing.assert_array_equal(values[0], w_values[-1])

    client = MlflowClient(stack.settings.tracking_uri())
    names = json.loads(client.get_model_version(MODEL, r.model_version).tags[FEATURES_TAG])
    feats = _reference_features(names, "2019-06-28").loc[symbols]
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=client.get_model_version_download_uri(MODEL, r.model_version)
    )
    model = load_skops_model(folder, label="the registered model")
    np.testing.assert_allclose(values[0], model.predict(feats.to_numpy(np.float64)), rtol=1e-5, atol=1e-9)

    # A deployment whose data ends at t serves at t exactly what the full window predicted for t.
    t = str(w_dates[-6])
    live = _deploy(registry, r.model_version, end_date=t)
    at_t = rpc(registry.Predict, pb.PredictRequest(deployment_id=live.deployment_id, latest=True))
    t_values, t_dates, _ = matrix_from_proto(at_t.predictions)
    assert str(t_dates[0]) == t
    np.testing.assert_array_equal(t_values[0], w_values[-6])


# --------------------------------------------------------------------------- trust


def _reason(exc: AlphaSwarmError) -> str:
    return str(exc.reason)


def test_a_tampered_artifact_fails_predict(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    r = runs[0]
    dep = _deploy(registry, r.model_version)
    before = rpc(
        registry.Predict, pb.PredictRequest(deployment_id=dep.deployment_id, latest=True)
    )  # cached now
    import mlflow.artifacts

    location = MlflowClient(stack.settings.tracking_uri()).get_model_version_download_uri(
        MODEL, r.model_version
    )
    folder = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=location)
    )  # a local store: the folder itself
    assert stack.settings.resolved_home() in folder.parents  # the file artifact store of this test's home
    pkl = folder / "model.skops"
    original = pkl.read_bytes()
    changed = bytearray(original)
    changed[len(changed) // 2] ^= 0x01
    pkl.write_bytes(bytes(changed))
    try:
        with pytest.raises(FailedPrecondition) as err:
            rpc(registry.Predict, pb.PredictRequest(deployment_id=dep.deployment_id, latest=True))
        assert _reason(err.value) == "MODEL_TAMPERED" and dep.deployment_id in str(err.value)
        with pytest.raises(FailedPrecondition) as err:  # nor can it be deployed again
            _deploy(registry, r.model_version)
        assert _reason(err.value) == "MODEL_TAMPERED"
    finally:
        pkl.write_bytes(original)
    after = rpc(registry.Predict, pb.PredictRequest(deployment_id=dep.deployment_id, latest=True))
    assert after.predictions == before.predictions


def test_a_model_not_from_our_trainer_is_refused(
    stack: EmbeddedStack, registry: pb_grpc.RegistryServiceStub, runs: list[Any]
) -> None:
    import mlflow
    import mlflow.sklearn
    from sklearn.linear_model import Ridge

    uri = stack.settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    names = json.loads(client.get_model_version(MODEL, "1").tags[FEATURES_TAG])
    rng = np.random.default_rng(0)
    plain = Ridge().fit(rng.normal(size=(50, len(names))), rng.normal(size=50))
    experiment = client.get_experiment_by_name("alphaswarm")
    assert experiment is not None
    with mlflow.start_run(experiment_id=experiment.experiment_id, run_name="outside") as run:
        info = mlflow.sklearn.log_model(plain, name="model", pip_requirements=["scikit-learn"])

    with pytest.raises(FailedPrecondition) as err:
        rpc(
            registry.RegisterModel,
            pb.RegisterModelRequest(model_uri=info.model_uri, name=OUTSIDE, run_id=run.info.run_id),
        )
    assert _reason(err.value) == "MODEL_NOT_TRUSTED"

    # Registered into the same store with MLflow directly, even with the trust tags of a real version.
    trusted = client.get_model_version(MODEL, "1").tags
    client.create_registered_model(OUTSIDE)
    mv = client.create_model_version(
        OUTSIDE,
        info.model_uri,
        run_id=run.info.run_id,
        model_id=info.model_id,
        tags={k: trusted[k] for k in (MODEL_SHA_TAG, PRODUCER_TAG, FEATURES_TAG)},
    )
    dataset = config_to_proto(DatasetConfig.model_validate(small_run()["dataset_cfg"]))
    strategy = config_to_proto(StrategyConfig.model_validate(small_run()["strategy_cfg"]))
    with pytest.raises(FailedPrecondition) as err:
        rpc(
            registry.Deploy,
            pb.DeployRequest(
                model_name=OUTSIDE, model_version=str(mv.version), dataset_cfg=dataset, strategy_cfg=strategy
            ),
        )
    assert _reason(err.value) == "MODEL_NOT_TRUSTED"

    # A deployment row pointing at it, written to the catalog by another writer: Predict refuses it.
    assert stack.settings.persistence_addr
    persistence = ppb_grpc.PersistenceServiceStub(channel(stack.settings.persistence_addr))
    row = resources_pb2.Deployment(
        model_name=OUTSIDE,
        model_version=str(mv.version),
        model_uri=f"models:/{OUTSIDE}/{mv.version}",
        state=resources_pb2.DEPLOYMENT_STATE_ACTIVE,
        dataset_cfg=dataset,
        strategy_cfg=strategy,
    )
    saved = persistence.SaveDeployment(ppb.SaveDeploymentRequest(deployment=row), timeout=30).deployment
    with pytest.raises(FailedPrecondition) as err:
        rpc(registry.Predict, pb.PredictRequest(deployment_id=saved.deployment_id, latest=True))
    assert _reason(err.value) == "MODEL_NOT_TRUSTED" and saved.deployment_id in str(err.value)
