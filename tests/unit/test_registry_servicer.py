"""Every RPC of the registry servicer and its error cases, with a real `Tracker` on a
temporary SQLite MLflow store and an in-memory fake of the persistence service.

Models come from a fake trainer that follows the trainer's protocol (log the
model, record sha256 / producer / model URI / features on the run); headline
metrics are computed with scipy; predictions are compared with the fitted
estimator applied to features computed independently with pandas.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from google.protobuf import json_format, timestamp_pb2
from scipy import stats
from sklearn.linear_model import Ridge

from alphaswarm.common.v1 import resources_pb2
from alphaswarm.persistence.v1 import persistence_service_pb2 as ppb
from alphaswarm.registry.v1 import registry_service_pb2 as pb
from alphaswarm_common.config import DatasetConfig, StrategyConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import (
    AlphaSwarmError,
    AlreadyExists,
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from alphaswarm_common.features import compute_features
from alphaswarm_common.protoconv import config_to_proto, matrix_from_proto
from alphaswarm_common.tracking import (
    FEATURES_TAG,
    MODEL_SHA_TAG,
    MODEL_URI_TAG,
    PRODUCER,
    PRODUCER_TAG,
    Tracker,
    artifact_sha256,
    quiet_mlflow,
)
from alphaswarm_registry.servicer import RegistryServicer

pytestmark = pytest.mark.unit

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
FEATURES = [{"name": "ret", "windows": [1, 5]}, {"name": "ma_ratio", "windows": [10]}]
NAMES = ["ret_1", "ret_5", "ma_ratio_10"]
SEGMENTS = {
    "train": ["2020-01-01", "2020-04-30"],
    "valid": ["2020-05-11", "2020-06-30"],
    "test": ["2020-07-10", "2020-08-31"],
}
_names = itertools.count()
KEY = b"k" * 32


# --------------------------------------------------------------------------- fakes


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


class FakePersistence:
    """The deployment RPCs of PersistenceService, in memory, with the semantics the registry relies on:
    ids and timestamps assigned by the store, a request_id replays, a present history is stored as sent."""

    def __init__(self) -> None:
        self.rows: dict[str, resources_pb2.Deployment] = {}
        self.keys: dict[str, str] = {}
        self.trust: dict[tuple[str, str], ppb.ModelArtifactTrust] = {}
        self.trust_down = False
        self.saves = 0

    def SaveDeployment(self, request: ppb.SaveDeploymentRequest, timeout: float | None = None) -> Any:
        assert timeout is not None, "every call carries a deadline"
        if request.request_id and request.request_id in self.keys:
            return ppb.SaveDeploymentResponse(
                deployment=self.rows[self.keys[request.request_id]], created=False
            )
        self.saves += 1
        dep = resources_pb2.Deployment()
        dep.CopyFrom(request.deployment)
        assert dep.HasField("history"), "the registry always sends the whole history"
        created = not dep.deployment_id
        if created:
            dep.deployment_id = str(uuid.uuid4())
            dep.created_at.CopyFrom(_now())
            dep.state = dep.state or resources_pb2.DEPLOYMENT_STATE_ACTIVE
        else:
            if dep.deployment_id not in self.rows:
                raise NotFound(
                    f"deployment {dep.deployment_id} does not exist", field="deployment.deployment_id"
                )
            dep.created_at.CopyFrom(self.rows[dep.deployment_id].created_at)
            dep.state = dep.state or self.rows[dep.deployment_id].state
        dep.updated_at.CopyFrom(_now())
        self.rows[dep.deployment_id] = dep
        if request.request_id:
            self.keys[request.request_id] = dep.deployment_id
        return ppb.SaveDeploymentResponse(deployment=dep, created=created)

    def GetDeployment(self, request: ppb.GetDeploymentRequest, timeout: float | None = None) -> Any:
        if request.deployment_id not in self.rows:
            raise NotFound(f"deployment {request.deployment_id} does not exist", field="deployment_id")
        return ppb.GetDeploymentResponse(deployment=self.rows[request.deployment_id])

    def RecordModelArtifactTrust(
        self, request: ppb.RecordModelArtifactTrustRequest, timeout: float | None = None
    ) -> Any:
        assert timeout is not None, "every call carries a deadline"
        if self.trust_down:
            raise DependencyUnavailable("persistence is down")
        key = (request.record.model_name, request.record.version)
        if key in self.trust and self.trust[key] != request.record:
            raise AlreadyExists(f"{key} already has a trust record", field="record.version")
        self.trust.setdefault(key, request.record)
        return ppb.RecordModelArtifactTrustResponse(record=self.trust[key])

    def GetModelArtifactTrust(
        self, request: ppb.GetModelArtifactTrustRequest, timeout: float | None = None
    ) -> Any:
        assert timeout is not None, "every call carries a deadline"
        key = (request.model_name, request.version)
        if key not in self.trust:
            raise NotFound(f"{key} has no trust record", field="version")
        return ppb.GetModelArtifactTrustResponse(record=self.trust[key])

    def ListDeployments(self, request: ppb.ListDeploymentsRequest, timeout: float | None = None) -> Any:
        rows = sorted(self.rows.values(), key=lambda d: d.created_at.ToNanoseconds(), reverse=True)
        start = int(request.page_token or 0)
        size = request.page_size or 50
        token = str(start + size) if start + size < len(rows) else ""
        return ppb.ListDeploymentsResponse(deployments=rows[start : start + size], next_page_token=token)


# --------------------------------------------------------------------------- data and a fake trainer


def _closes(seed: int = 11, t: int = 190) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=t)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, len(SYMBOLS))), axis=0))
    return pd.DataFrame(close, index=dates, columns=SYMBOLS)


def _reference_features(close: pd.DataFrame) -> np.ndarray:
    cols = [close / close.shift(1) - 1, close / close.shift(5) - 1, close / close.rolling(10).mean() - 1]
    return np.stack([c.to_numpy() for c in cols], axis=2).astype(np.float32).astype(np.float64)


def _mean_ic(pred: np.ndarray, label: np.ndarray) -> tuple[float, float, float]:
    sp, pe = [], []
    for p, y in zip(pred, label, strict=True):
        ok = np.isfinite(p) & np.isfinite(y)
        if ok.sum() > 2:
            sp.append(stats.spearmanr(p[ok], y[ok]).statistic)
            pe.append(stats.pearsonr(p[ok], y[ok]).statistic)
    return float(np.mean(sp)), float(np.mean(pe)), float(np.mean(sp) / np.std(sp, ddof=1))


class Env:
    def __init__(self, folder: Path) -> None:
        quiet_mlflow()
        self.folder = folder
        self.tracker = Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "artifacts"))
        self.persistence = FakePersistence()
        self.servicer = RegistryServicer(self.tracker, self.persistence, signing_key=KEY, deadline=5.0)  # type: ignore[arg-type]
        self.close = _closes()
        long = self.close.stack().rename("close").reset_index()
        long.columns = ["date", "symbol", "close"]
        long["date"] = long["date"].dt.strftime("%Y-%m-%d")
        self.csv = folder / "panel.csv"
        long.to_csv(self.csv, index=False)
        self.cfg = DatasetConfig.model_validate(
            {"source": str(self.csv), "segments": SEGMENTS, "features": FEATURES}
        )
        self.experiment = self.tracker.ensure_experiment("unit-registry")
        self.models: dict[str, Any] = {}  # model_uri -> fitted estimator
        self.shas: dict[str, str] = {}  # model_uri -> the sha256 the trainer returns
        self.metrics: dict[str, dict[str, float]] = {}  # run_id -> metrics logged
        self._fits: dict[float, tuple[Any, list[str], str, np.ndarray, dict[str, float]]] = {}

    def train(self, alpha: float = 1.0) -> tuple[str, str]:
        """Fit and log like the trainer (a new run and a new logged model each time); (run_id, model_uri)."""
        if alpha not in self._fits:
            self._fits[alpha] = self._fit(alpha)
        model, names, fingerprint, example, metrics = self._fits[alpha]
        run_id = self.tracker.create_run(self.experiment, "train")
        self.tracker.log_metrics(run_id, metrics)
        uri, sha = self.tracker.log_sklearn_model(run_id, model, example_x=example, feature_names=names)
        self.tracker.set_tags(
            run_id,
            {
                MODEL_SHA_TAG: sha,
                PRODUCER_TAG: PRODUCER,
                MODEL_URI_TAG: uri,
                FEATURES_TAG: json.dumps(names),
                "alphaswarm.dataset_fingerprint": fingerprint,
            },
        )
        self.tracker.end_run(run_id)
        self.models[uri] = model
        self.shas[uri] = sha
        self.metrics[run_id] = metrics
        return run_id, uri

    def _fit(self, alpha: float) -> tuple[Any, list[str], str, np.ndarray, dict[str, float]]:
        cfg = self.cfg
        panel = load_panel(cfg)
        fs = compute_features(panel, cfg.features)
        close = panel.close
        label = np.full(close.shape, np.nan)
        label[:-2] = close[2:] / close[1:-1] - 1
        dates = panel.dates

        def rows(seg: str) -> np.ndarray:
            lo, hi = (np.datetime64(d, "D") for d in SEGMENTS[seg])
            return (dates >= lo) & (dates <= hi)

        x, y = (
            fs.values[rows("train")].reshape(-1, len(fs.names)).astype(np.float64),
            label[rows("train")].reshape(-1),
        )
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        model = Ridge(alpha=alpha).fit(x[ok], y[ok])
        metrics = {}
        for seg in ("valid", "test"):
            block = fs.values[rows(seg)].astype(np.float64)
            pred = np.where(np.isfinite(block).all(axis=2), 0.0, np.nan)
            good = np.isfinite(pred)
            pred[good] = model.predict(block[good])
            sp, pe, ir = _mean_ic(pred, label[rows(seg)])
            metrics.update({f"{seg}_ic_spearman": sp, f"{seg}_ic_pearson": pe, f"{seg}_icir": ir})
        return model, list(fs.names), panel.fingerprint, x[ok][:5], metrics

    def register(
        self, name: str, alpha: float = 1.0, alias: str = "", **tags: str
    ) -> pb.RegisterModelResponse:
        run_id, uri = self.train(alpha)
        req = pb.RegisterModelRequest(
            model_uri=uri, name=name, run_id=run_id, alias=alias, tags=tags, model_sha256=self.shas[uri]
        )
        return self.servicer.RegisterModel(req, None)

    def deploy(self, name: str, version: str, deployment_id: str = "", **kw: Any) -> pb.DeployResponse:
        return self.servicer.Deploy(
            pb.DeployRequest(
                deployment_id=deployment_id,
                model_name=name,
                model_version=version,
                dataset_cfg=config_to_proto(kw.get("cfg", self.cfg)),
                strategy_cfg=config_to_proto(StrategyConfig()),
            ),
            None,
        )

    def outside_version(self, name: str, **tags: str) -> str:
        """A plain scikit-learn model logged with MLflow directly and registered into the same store."""
        import mlflow
        import mlflow.sklearn

        model = Ridge().fit(np.arange(30.0).reshape(10, 3), np.arange(10.0))
        with mlflow.start_run(experiment_id=self.experiment) as run:
            info = mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn"])
        client = self.tracker.client
        if not client.search_registered_models(filter_string=f"name = '{name}'"):
            client.create_registered_model(name)
        mv = client.create_model_version(
            name, info.model_uri, run_id=run.info.run_id, tags=tags, model_id=info.model_id
        )
        return str(mv.version)

    def artifact_dir(self, name: str, version: str) -> Path:
        return Path(self.tracker.client.get_model_version_download_uri(name, version))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield Env(tmp_path_factory.mktemp("registry"))


@pytest.fixture(scope="module")
def one_run(env: Env) -> tuple[str, str]:
    return env.train()


@pytest.fixture(scope="module")
def shared(env: Env) -> tuple[str, resources_pb2.Deployment]:
    """A model with v1 (champion, deployed), v2 (challenger) and v3 (shadow) that no test alters;
    tests create their own deployments of it."""
    name = _name()
    env.register(name)
    env.register(name, alpha=4.0, alias="challenger")
    env.register(name, alpha=9.0, alias="shadow")
    return name, env.deploy(name, "1").deployment


def _name() -> str:
    return f"unit-model-{next(_names)}"


def _predict(env: Env, deployment_id: str, **kw: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    out = env.servicer.Predict(pb.PredictRequest(deployment_id=deployment_id, **kw), None)
    return matrix_from_proto(out.predictions)


def _history(dep: resources_pb2.Deployment) -> list[dict[str, Any]]:
    return json_format.MessageToDict(dep.history) if dep.HasField("history") else []  # type: ignore[return-value]


# --------------------------------------------------------------------------- RegisterModel


def test_register_copies_provenance_and_headline_metrics_from_the_run(env: Env) -> None:
    name = _name()
    run_id, uri = env.train()
    reg = env.servicer.RegisterModel(
        pb.RegisterModelRequest(
            model_uri=uri,
            name=name,
            run_id=run_id,
            model_sha256=env.shas[uri],
            tags={"alphaswarm.valid_ic_spearman": "0.99", MODEL_SHA_TAG: "forged", "team": "quant"},
        ),
        None,
    )
    assert (reg.name, reg.version, reg.alias) == (name, "1", "champion")
    mv = env.tracker.client.get_model_version(name, "1")
    run = env.tracker.client.get_run(run_id)
    for key in (MODEL_SHA_TAG, PRODUCER_TAG, MODEL_URI_TAG, FEATURES_TAG, "alphaswarm.dataset_fingerprint"):
        assert mv.tags[key] == run.data.tags[key]
    assert mv.tags[MODEL_SHA_TAG] == artifact_sha256(env.artifact_dir(name, "1"))
    assert json.loads(mv.tags[FEATURES_TAG]) == NAMES
    assert mv.tags["team"] == "quant"
    for metric, value in env.metrics[run_id].items():  # from the run, not the caller's 0.99
        assert float(mv.tags[f"alphaswarm.{metric}"]) == pytest.approx(value, rel=1e-12)
    assert mv.aliases == ["champion"]


def test_the_logged_model_has_a_signature_and_an_input_example(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    folder = env.artifact_dir(shared[0], "1")
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert inputs[0]["tensor-spec"]["shape"] == [-1, len(NAMES)]
    assert mlmodel["saved_input_example_info"]["artifact_path"] == "input_example.json"
    example = np.asarray(json.loads((folder / "input_example.json").read_text()))
    assert example.shape == (5, len(NAMES))
    assert mlmodel["metadata"]["alphaswarm.feature_names"] == NAMES


def test_register_refuses_a_run_not_from_our_trainer(env: Env) -> None:
    import mlflow
    import mlflow.sklearn

    with mlflow.start_run(experiment_id=env.experiment) as run:
        info = mlflow.sklearn.log_model(
            Ridge().fit(np.eye(3), np.arange(3.0)), name="model", pip_requirements=["scikit-learn"]
        )
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RegisterModel(
            pb.RegisterModelRequest(model_uri=info.model_uri, name=_name(), run_id=run.info.run_id), None
        )
    assert err.value.reason == "MODEL_NOT_TRUSTED"


def test_register_refuses_a_model_uri_the_run_did_not_log(env: Env) -> None:
    run_a, _ = env.train()
    _, uri_b = env.train(alpha=2.0)
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RegisterModel(pb.RegisterModelRequest(model_uri=uri_b, name=_name(), run_id=run_a), None)
    assert (err.value.reason, err.value.field) == ("MODEL_NOT_TRUSTED", "model_uri")


def test_register_refuses_an_artifact_changed_after_logging(env: Env) -> None:
    run_id, uri = env.train()
    folder = Path(env.tracker.client.get_logged_model(uri.removeprefix("models:/")).artifact_location)
    (folder / "requirements.txt").write_text("numpy\n")
    req = pb.RegisterModelRequest(model_uri=uri, name=_name(), run_id=run_id, model_sha256=env.shas[uri])
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RegisterModel(req, None)
    assert (err.value.reason, err.value.field) == ("MODEL_TAMPERED", "model_sha256")
    assert not env.tracker.client.search_registered_models(filter_string=f"name = '{req.name}'")


def test_register_refuses_a_failed_run(env: Env) -> None:
    run_id, uri = env.train()
    env.tracker.end_run(run_id, failed=True)
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RegisterModel(pb.RegisterModelRequest(model_uri=uri, name=_name(), run_id=run_id), None)
    assert (err.value.reason, err.value.field) == ("RUN_NOT_SUCCESSFUL", "run_id")


@pytest.mark.parametrize(
    ("patch", "exc_type", "field"),
    [
        ({"model_uri": ""}, InvalidArgument, "model_uri"),
        ({"name": ""}, InvalidArgument, "name"),
        ({"name": "a/b"}, InvalidArgument, "name"),
        ({"run_id": ""}, InvalidArgument, "run_id"),
        ({"alias": "v2"}, InvalidArgument, "alias"),
        ({"alias": "has space"}, InvalidArgument, "alias"),
        ({"run_id": "0" * 32}, NotFound, "run_id"),
        ({"model_sha256": ""}, InvalidArgument, "model_sha256"),
        ({"model_sha256": "ABC"}, InvalidArgument, "model_sha256"),
        ({"model_sha256": "0" * 64}, FailedPrecondition, "model_sha256"),
    ],
)
def test_register_input_errors_name_the_field(
    env: Env, one_run: tuple[str, str], patch: dict[str, str], exc_type: type[AlphaSwarmError], field: str
) -> None:
    run_id, uri = one_run
    req: dict[str, Any] = {
        "model_uri": uri,
        "name": _name(),
        "run_id": run_id,
        "model_sha256": env.shas[uri],
        **patch,
    }
    with pytest.raises(exc_type) as err:
        env.servicer.RegisterModel(pb.RegisterModelRequest(**req), None)
    assert err.value.field == field


# --------------------------------------------------------------------------- listing and aliases


def test_list_registered_models_pages_by_name_with_aliases(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    empty = f"list-{uuid.uuid4().hex[:8]}"
    for suffix in ("a", "b"):
        env.tracker.client.create_registered_model(f"{empty}-{suffix}")  # models without versions
    seen: list[pb.RegisteredModel] = []
    token = ""
    while True:
        page = env.servicer.ListRegisteredModels(
            pb.ListRegisteredModelsRequest(page_size=2, page_token=token), None
        )
        assert len(page.models) <= 2
        seen += list(page.models)
        token = page.next_page_token
        if not token:
            break
    names = [m.name for m in seen]
    assert names == sorted(names) and len(set(names)) == len(names) > 2
    assert set(names) == {m.name for m in env.tracker.client.search_registered_models(max_results=1000)}
    ours = {m.name: m for m in seen}[shared[0]]
    assert dict(ours.aliases) == {"champion": "1", "challenger": "2", "shadow": "3"}
    assert ours.latest_version == "3" and ours.created_at_ms > 0 and ours.updated_at_ms >= ours.created_at_ms
    bare = {m.name: m for m in seen}[f"{empty}-a"]
    assert (bare.latest_version, dict(bare.aliases)) == ("", {})
    with pytest.raises(InvalidArgument) as err:
        env.servicer.ListRegisteredModels(pb.ListRegisteredModelsRequest(page_size=-1), None)
    assert err.value.field == "page_size"
    with pytest.raises(InvalidArgument) as err2:
        env.servicer.ListRegisteredModels(pb.ListRegisteredModelsRequest(page_token="garbage!"), None)
    assert err2.value.field == "page_token"


def test_list_model_versions_newest_first_with_aliases_and_tags(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    name = shared[0]
    first = env.servicer.ListModelVersions(pb.ListModelVersionsRequest(name=name, page_size=2), None)
    assert [v.version for v in first.versions] == ["3", "2"] and first.next_page_token
    rest = env.servicer.ListModelVersions(
        pb.ListModelVersionsRequest(name=name, page_size=2, page_token=first.next_page_token), None
    )
    assert [v.version for v in rest.versions] == ["1"] and not rest.next_page_token
    by_version = {v.version: v for v in [*first.versions, *rest.versions]}
    assert list(by_version["3"].aliases) == ["shadow"]
    assert list(by_version["2"].aliases) == ["challenger"]
    assert list(by_version["1"].aliases) == ["champion"]
    for v in by_version.values():
        assert v.status == "READY" and v.run_id and v.source.startswith("models:/m-") and v.created_at_ms > 0
        assert v.tags[PRODUCER_TAG] == PRODUCER and "alphaswarm.test_icir" in v.tags
    assert len({v.tags[MODEL_SHA_TAG] for v in by_version.values()}) == 3


def test_list_model_versions_of_an_unknown_model_is_not_found(env: Env) -> None:
    with pytest.raises(NotFound) as err:
        env.servicer.ListModelVersions(pb.ListModelVersionsRequest(name="no-such-model"), None)
    assert err.value.field == "name"


def test_set_model_alias_points_and_moves_champion_and_challenger(env: Env) -> None:
    name = _name()
    env.register(name)
    env.register(name, alpha=5.0, alias="challenger")
    rm = env.tracker.get_registered_model(name)
    assert rm.aliases == {"champion": "1", "challenger": "2"}
    out = env.servicer.SetModelAlias(pb.SetModelAliasRequest(name=name, alias="champion", version="2"), None)
    assert out.version.version == "2" and sorted(out.version.aliases) == ["challenger", "champion"]
    out = env.servicer.SetModelAlias(pb.SetModelAliasRequest(name=name, alias="shadow-1", version="1"), None)
    assert list(out.version.aliases) == ["shadow-1"]
    assert env.tracker.get_registered_model(name).aliases == {
        "champion": "2",
        "challenger": "2",
        "shadow-1": "1",
    }


@pytest.mark.parametrize(
    ("patch", "exc_type", "field"),
    [
        ({"version": "9"}, NotFound, "version"),
        ({"name": "no-such-model"}, NotFound, "name"),
        ({"alias": "latest"}, InvalidArgument, "alias"),
        ({"alias": ""}, InvalidArgument, "alias"),
        ({"version": "x1"}, InvalidArgument, "version"),
    ],
)
def test_set_model_alias_errors(
    env: Env,
    shared: tuple[str, resources_pb2.Deployment],
    patch: dict[str, str],
    exc_type: type[AlphaSwarmError],
    field: str,
) -> None:
    name = shared[0]
    req = {"name": name, "alias": "challenger", "version": "1", **patch}
    with pytest.raises(exc_type) as err:
        env.servicer.SetModelAlias(pb.SetModelAliasRequest(**req), None)
    assert err.value.field == field


# --------------------------------------------------------------------------- deployments


def test_deploy_predicts_with_the_registered_model_and_lists(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    name = shared[0]
    dep = env.deploy(name, "1").deployment
    assert dep.state == resources_pb2.DEPLOYMENT_STATE_ACTIVE and dep.model_alias == "champion"
    assert _history(dep) == []
    values, dates, symbols = _predict(env, dep.deployment_id, start_date="2020-07-10", end_date="2020-08-31")
    feats = _reference_features(env.close)
    window = (env.close.index >= "2020-07-10") & (env.close.index <= "2020-08-31")
    model = env.models[env.tracker.client.get_model_version(name, "1").source]
    np.testing.assert_allclose(
        values, model.predict(feats[window].reshape(-1, 3)).reshape(values.shape), rtol=1e-10
    )
    assert list(dates) == list(env.close.index[window].to_numpy().astype("datetime64[D]"))
    assert symbols == SYMBOLS
    listed = env.servicer.ListDeployments(pb.ListDeploymentsRequest(page_size=500), None)
    assert dep.deployment_id in {d.deployment_id for d in listed.deployments}
    got = env.servicer.GetDeployment(
        pb.GetDeploymentRequest(deployment_id=dep.deployment_id), None
    ).deployment
    assert got == dep


def test_latest_prediction_is_the_last_date_only(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    name, dep = shared
    values, dates, _ = _predict(env, dep.deployment_id, latest=True, start_date="2020-01-01")
    full, full_dates, _ = _predict(env, dep.deployment_id)
    assert list(dates) == [full_dates[-1]] and dates[0] == np.datetime64(env.close.index[-1].date(), "D")
    np.testing.assert_array_equal(values[0], full[-1])
    model = env.models[env.tracker.client.get_model_version(name, "1").source]
    np.testing.assert_allclose(values[0], model.predict(_reference_features(env.close)[-1]), rtol=1e-10)


def test_deploy_refuses_unregistered_untrusted_and_mismatched_versions(env: Env) -> None:
    name = _name()
    env.register(name)
    with pytest.raises(FailedPrecondition) as err:
        env.deploy(name, "7")
    assert (err.value.reason, err.value.field) == ("MODEL_VERSION_NOT_REGISTERED", "model_version")
    outside = env.outside_version(name)
    with pytest.raises(FailedPrecondition) as err:
        env.deploy(name, outside)
    assert err.value.reason == "MODEL_NOT_TRUSTED"
    other = env.cfg.model_copy(update={"features": env.cfg.features[:1]})
    with pytest.raises(FailedPrecondition) as err:
        env.deploy(name, "1", cfg=DatasetConfig.model_validate(other.model_dump()))
    assert err.value.reason == "FEATURES_MISMATCH"


def test_a_version_with_tags_copied_from_a_trusted_one_is_still_refused(env: Env) -> None:
    name = _name()
    env.register(name)
    trusted = env.tracker.client.get_model_version(name, "1").tags
    impostor = env.outside_version(
        name, **{k: trusted[k] for k in (MODEL_SHA_TAG, PRODUCER_TAG, FEATURES_TAG)}
    )
    with pytest.raises(FailedPrecondition) as err:
        env.deploy(name, impostor)
    assert err.value.reason == "MODEL_NOT_TRUSTED"


def test_promote_rollback_and_history(env: Env, shared: tuple[str, resources_pb2.Deployment]) -> None:
    name = shared[0]
    dep = env.deploy(name, "1").deployment
    did = dep.deployment_id

    promoted = env.servicer.PromoteDeployment(
        pb.PromoteDeploymentRequest(deployment_id=did, model_alias="challenger"), None
    )
    assert promoted.previous_model_version == "1"
    d = promoted.deployment
    assert (d.model_version, d.model_alias, d.model_uri) == ("2", "challenger", f"models:/{name}/2")
    (entry,) = _history(d)
    assert entry["model_name"] == name and entry["version"] == "1"
    assert entry["from"] == dep.created_at.ToDatetime(tzinfo=dt.UTC).isoformat()
    assert dt.datetime.fromisoformat(entry["to"]) >= dt.datetime.fromisoformat(entry["from"])

    d = env.servicer.PromoteDeployment(
        pb.PromoteDeploymentRequest(deployment_id=did, model_version="3"), None
    ).deployment
    assert d.model_version == "3" and [e["version"] for e in _history(d)] == ["1", "2"]
    assert _history(d)[1]["from"] == _history(d)[0]["to"]

    same = env.servicer.PromoteDeployment(
        pb.PromoteDeploymentRequest(deployment_id=did, model_version="3"), None
    )
    assert same.deployment == d  # already served: nothing recorded

    back = env.servicer.RollbackDeployment(pb.RollbackDeploymentRequest(deployment_id=did), None)
    assert (back.deployment.model_version, back.previous_model_version) == ("2", "3")
    assert [e["version"] for e in _history(back.deployment)] == ["1", "2", "3"]
    again = env.servicer.RollbackDeployment(pb.RollbackDeploymentRequest(deployment_id=did), None)
    assert again.deployment.model_version == "3"  # like `kubectl rollout undo`
    values, _, _ = _predict(env, did, latest=True)
    model = env.models[env.tracker.client.get_model_version(name, "3").source]
    np.testing.assert_allclose(values[0], model.predict(_reference_features(env.close)[-1]), rtol=1e-10)


def test_deploy_onto_a_deployment_rolls_it(env: Env, shared: tuple[str, resources_pb2.Deployment]) -> None:
    name = shared[0]
    dep = env.deploy(name, "1").deployment
    out = env.deploy(name, "2", deployment_id=dep.deployment_id)
    assert out.rolled and out.previous_model_version == "1" and out.deployment.model_version == "2"
    assert [e["version"] for e in _history(out.deployment)] == ["1"]
    again = env.deploy(name, "2", deployment_id=dep.deployment_id)
    assert not again.rolled and [e["version"] for e in _history(again.deployment)] == ["1"]


@pytest.mark.parametrize(
    ("request_", "exc_type", "reason", "field"),
    [
        ({"model_version": "8"}, FailedPrecondition, "MODEL_VERSION_NOT_REGISTERED", "model_version"),
        ({"model_alias": "nobody"}, FailedPrecondition, "MODEL_ALIAS_NOT_FOUND", "model_alias"),
        (
            {"model_alias": "champion", "model_version": "2"},
            InvalidArgument,
            "INVALID_ARGUMENT",
            "model_version",
        ),
        ({}, InvalidArgument, "INVALID_ARGUMENT", "model_version"),
        ({"model_version": "2", "deployment_id": ""}, InvalidArgument, "INVALID_ARGUMENT", "deployment_id"),
    ],
)
def test_promote_errors(
    env: Env,
    shared: tuple[str, resources_pb2.Deployment],
    request_: dict[str, str],
    exc_type: type[AlphaSwarmError],
    reason: str,
    field: str,
) -> None:
    dep = shared[1]
    saves = env.persistence.saves
    with pytest.raises(exc_type) as err:
        env.servicer.PromoteDeployment(
            pb.PromoteDeploymentRequest(**{"deployment_id": dep.deployment_id, **request_}), None
        )
    assert (err.value.reason, err.value.field) == (reason, field)
    assert env.persistence.saves == saves  # nothing written


def test_promote_to_an_untrusted_version_is_refused(env: Env) -> None:
    name = _name()
    env.register(name)
    dep = env.deploy(name, "1").deployment
    outside = env.outside_version(name)
    env.servicer.SetModelAlias(pb.SetModelAliasRequest(name=name, alias="challenger", version=outside), None)
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.PromoteDeployment(
            pb.PromoteDeploymentRequest(deployment_id=dep.deployment_id, model_alias="challenger"), None
        )
    assert err.value.reason == "MODEL_NOT_TRUSTED" and dep.deployment_id in str(err.value)


def test_rollback_without_history_is_a_failed_precondition(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    dep = env.deploy(shared[0], "1").deployment
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RollbackDeployment(pb.RollbackDeploymentRequest(deployment_id=dep.deployment_id), None)
    assert (err.value.reason, err.value.field) == ("NO_PREVIOUS_VERSION", "deployment_id")


def test_retired_deployment_refuses_predict_and_changes(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    name = shared[0]
    did = env.deploy(name, "1").deployment.deployment_id
    env.servicer.PromoteDeployment(pb.PromoteDeploymentRequest(deployment_id=did, model_version="2"), None)
    out = env.servicer.RetireDeployment(pb.RetireDeploymentRequest(deployment_id=did), None).deployment
    assert out.state == resources_pb2.DEPLOYMENT_STATE_RETIRED and [e["version"] for e in _history(out)] == [
        "1"
    ]
    again = env.servicer.RetireDeployment(pb.RetireDeploymentRequest(deployment_id=did), None).deployment
    assert again == out
    with pytest.raises(FailedPrecondition) as err:
        _predict(env, did, latest=True)
    assert (err.value.reason, err.value.field) == ("DEPLOYMENT_RETIRED", "deployment_id") and did in str(
        err.value
    )
    calls = [
        lambda: env.servicer.PromoteDeployment(
            pb.PromoteDeploymentRequest(deployment_id=did, model_version="1"), None
        ),
        lambda: env.servicer.RollbackDeployment(pb.RollbackDeploymentRequest(deployment_id=did), None),
        lambda: env.deploy(name, "1", deployment_id=did),
    ]
    for rpc in calls:
        with pytest.raises(FailedPrecondition) as err:
            rpc()
        assert err.value.reason == "DEPLOYMENT_RETIRED"


def test_unknown_deployment_is_not_found(env: Env) -> None:
    missing = str(uuid.uuid4())
    calls = [
        lambda: env.servicer.Predict(pb.PredictRequest(deployment_id=missing), None),
        lambda: env.servicer.PromoteDeployment(
            pb.PromoteDeploymentRequest(deployment_id=missing, model_version="1"), None
        ),
        lambda: env.servicer.RollbackDeployment(pb.RollbackDeploymentRequest(deployment_id=missing), None),
        lambda: env.servicer.RetireDeployment(pb.RetireDeploymentRequest(deployment_id=missing), None),
        lambda: env.servicer.GetDeployment(pb.GetDeploymentRequest(deployment_id=missing), None),
    ]
    for rpc in calls:
        with pytest.raises(NotFound):
            rpc()


# --------------------------------------------------------------------------- trust at serving time


def test_tampering_after_the_first_load_is_caught_on_the_next_predict(env: Env) -> None:
    name = _name()
    env.register(name)
    did = env.deploy(name, "1").deployment.deployment_id
    before, _, _ = _predict(env, did, latest=True)  # loads and caches the model
    trust = env.servicer.registry.trust
    assert trust.load(env.tracker.describe_model_version(name, "1")).cached
    pkl = env.artifact_dir(name, "1") / "model.skops"
    original = pkl.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0x01
    pkl.write_bytes(bytes(tampered))
    try:
        with pytest.raises(FailedPrecondition) as err:
            _predict(env, did, latest=True)
        assert err.value.reason == "MODEL_TAMPERED" and did in str(err.value)
    finally:
        pkl.write_bytes(original)
    after, _, _ = _predict(env, did, latest=True)
    np.testing.assert_array_equal(before, after)


def test_mlflow_bookkeeping_files_do_not_count_as_tampering(env: Env) -> None:
    import mlflow.artifacts

    name = _name()
    env.register(name)
    did = env.deploy(name, "1").deployment.deployment_id
    # Any MLflow client downloading models:/name/version writes registered_model_meta into a local store.
    mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{name}/1", tracking_uri=env.tracker.tracking_uri
    )
    assert (env.artifact_dir(name, "1") / "registered_model_meta").exists()
    _predict(env, did, latest=True)


def test_a_deployment_of_a_version_not_from_our_trainer_cannot_predict(env: Env) -> None:
    name = _name()
    env.register(name)
    outside = env.outside_version(name)
    # A deployment row written by another writer (the registry itself refuses to create it).
    row = env.deploy(name, "1").deployment
    row.model_version = outside
    env.persistence.rows[row.deployment_id] = row
    with pytest.raises(FailedPrecondition) as err:
        _predict(env, row.deployment_id, latest=True)
    assert err.value.reason == "MODEL_NOT_TRUSTED" and row.deployment_id in str(err.value)


def test_trust_is_the_signed_catalog_record_not_the_mlflow_tags(env: Env) -> None:
    name = _name()
    env.register(name)
    did = env.deploy(name, "1").deployment.deployment_id
    # MLflow tags are lineage: anyone with MLflow access can write them, so they do not decide.
    env.tracker.client.delete_model_version_tag(name, "1", PRODUCER_TAG)
    env.tracker.client.set_model_version_tag(name, "1", MODEL_SHA_TAG, "0" * 64)
    _predict(env, did, latest=True)
    record = env.persistence.trust[(name, "1")]
    assert record.sha256 == env.shas[record.artifact_uri] and record.serialization_format == "skops"
    forged = ppb.ModelArtifactTrust()
    forged.CopyFrom(record)
    forged.hmac = "0" * 64
    env.persistence.trust[(name, "1")] = forged
    try:
        with pytest.raises(FailedPrecondition) as err:
            _predict(env, did, latest=True)
        assert err.value.reason == "MODEL_NOT_TRUSTED" and "did not sign" in str(err.value)
    finally:
        env.persistence.trust[(name, "1")] = record
    other_key = RegistryServicer(env.tracker, env.persistence, signing_key=b"x" * 32, deadline=5.0)  # type: ignore[arg-type]
    with pytest.raises(FailedPrecondition) as err:
        other_key.Predict(pb.PredictRequest(deployment_id=did, latest=True), None)
    assert err.value.reason == "MODEL_NOT_TRUSTED"


def test_a_registration_whose_record_cannot_be_written_leaves_nothing(env: Env) -> None:
    name = _name()
    env.register(name)
    env.persistence.trust_down = True
    try:
        with pytest.raises(DependencyUnavailable):
            env.register(name, alpha=3.0)
    finally:
        env.persistence.trust_down = False
    versions = env.tracker.client.search_model_versions(filter_string=f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert env.tracker.get_registered_model(name).aliases == {"champion": "1"}
    retried = env.register(
        name, alpha=3.0
    ).version  # a retry registers and signs it (MLflow does not reuse "2")
    assert env.tracker.get_registered_model(name).aliases == {"champion": retried}
    assert (name, retried) in env.persistence.trust and (name, "2") not in env.persistence.trust


def test_a_pickled_model_is_never_registered(env: Env) -> None:
    """A run tagged exactly like the trainer's, with the right sha256, but a cloudpickle artifact."""
    import mlflow
    import mlflow.sklearn

    name = _name()
    run_id = env.tracker.create_run(env.experiment, "train")
    with mlflow.start_run(run_id=run_id):
        info = mlflow.sklearn.log_model(
            Ridge().fit(np.eye(3), np.arange(3.0)),
            name="model",
            pip_requirements=["scikit-learn"],
            serialization_format="cloudpickle",
        )
    sha = env.tracker.hash_artifact(info.model_uri)
    env.tracker.set_tags(
        run_id,
        {
            MODEL_SHA_TAG: sha,
            PRODUCER_TAG: PRODUCER,
            MODEL_URI_TAG: info.model_uri,
            FEATURES_TAG: json.dumps(NAMES),
        },
    )
    req = pb.RegisterModelRequest(model_uri=info.model_uri, name=name, run_id=run_id, model_sha256=sha)
    with pytest.raises(FailedPrecondition) as err:
        env.servicer.RegisterModel(req, None)
    assert err.value.reason == "MODEL_NOT_TRUSTED" and "cloudpickle" in str(err.value)
    assert not any(n == name for n, _ in env.persistence.trust)
    assert not env.tracker.client.search_registered_models(filter_string=f"name = '{name}'")


def test_a_version_without_feature_names_cannot_serve(env: Env) -> None:
    name = _name()
    env.register(name)
    did = env.deploy(name, "1").deployment.deployment_id
    env.tracker.client.delete_model_version_tag(name, "1", FEATURES_TAG)
    with pytest.raises(FailedPrecondition) as err:
        _predict(env, did, latest=True)
    assert err.value.reason == "MODEL_FEATURES_UNKNOWN"


def test_a_deployment_whose_features_changed_cannot_serve(
    env: Env, shared: tuple[str, resources_pb2.Deployment]
) -> None:
    row = env.deploy(shared[0], "1").deployment
    cfg = env.cfg.model_copy(update={"features": [env.cfg.features[1], env.cfg.features[0]]})
    row.dataset_cfg.CopyFrom(config_to_proto(DatasetConfig.model_validate(cfg.model_dump())))
    env.persistence.rows[row.deployment_id] = row
    with pytest.raises(FailedPrecondition) as err:
        _predict(env, row.deployment_id, latest=True)
    assert err.value.reason == "FEATURES_MISMATCH"


def test_a_deleted_artifact_is_reported(env: Env) -> None:
    name = _name()
    env.register(name)
    did = env.deploy(name, "1").deployment.deployment_id
    folder = env.artifact_dir(name, "1")
    moved = folder.with_name("moved-away")
    folder.rename(moved)
    try:
        with pytest.raises(FailedPrecondition) as err:
            _predict(env, did, latest=True)
        assert err.value.reason == "MODEL_ARTIFACT_MISSING"
    finally:
        moved.rename(folder)


def test_predict_window_errors_name_the_field(env: Env, shared: tuple[str, resources_pb2.Deployment]) -> None:
    did = shared[1].deployment_id
    with pytest.raises(InvalidArgument) as err:
        _predict(env, did, start_date="2020-13-01")
    assert err.value.field == "start_date"
    with pytest.raises(InvalidArgument) as err:
        _predict(env, did, start_date="2020-06-01", end_date="2020-05-01")
    assert err.value.field == "end_date"
    with pytest.raises(InvalidArgument) as err:
        _predict(env, did, start_date="2030-01-01")
    assert err.value.field == "start_date"


def test_artifact_sha256_is_an_ordered_hash_of_the_model_files(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_bytes(b"bee")
    (tmp_path / "sub" / "a.bin").write_bytes(b"\x00\x01")
    digest = hashlib.sha256()
    for rel, data in (("b.txt", b"bee"), ("sub/a.bin", b"\x00\x01")):
        digest.update(rel.encode() + b"\0" + data + b"\0")
    assert artifact_sha256(tmp_path) == digest.hexdigest()
    (tmp_path / "registered_model_meta").write_text("model_name: x\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "m.pyc").write_bytes(b"junk")
    assert artifact_sha256(tmp_path) == digest.hexdigest()
    (tmp_path / "b.txt").write_bytes(b"bed")
    assert artifact_sha256(tmp_path) != digest.hexdigest()
