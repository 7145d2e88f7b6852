"""Every model of the zoo is logged as skops and loads back, with the fixed trusted-type list, to
bit-identical predictions; pickles, unknown types and a model file outside the folder are refused
without being built, whatever the artifact's own MLmodel declares."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import skops.io
import yaml

from alphaswarm_common.config import ModelConfig
from alphaswarm_common.errors import FailedPrecondition
from alphaswarm_common.model_artifacts import TRUSTED_TYPES, check_loadable, load_skops_model
from alphaswarm_common.tracking import Tracker, quiet_mlflow
from alphaswarm_trainer.models import MODEL_TYPES, build_model, fit_model

pytestmark = pytest.mark.unit


class Gadget:
    """A type no trusted list names."""

    def __init__(self) -> None:
        self.value = 1

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x))


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    quiet_mlflow()
    folder = tmp_path_factory.mktemp("artifacts")
    return Tracker(f"sqlite:///{folder}/mlflow.db", artifact_root=str(folder / "store"))


def _logged(tracker: Tracker, model: object, x: np.ndarray, dst: Path) -> Path:
    run_id = tracker.create_run(tracker.ensure_experiment("unit-artifacts"), "train")
    uri, sha = tracker.log_sklearn_model(run_id, model, example_x=x[:5])
    tracker.end_run(run_id)
    folder = Path(tracker.fetch_artifact(uri, str(dst)))
    assert tracker.hash_artifact(uri) == sha
    return folder


@pytest.mark.parametrize("model_type", sorted(MODEL_TYPES))
def test_every_model_type_round_trips_through_skops(
    tracker: Tracker, model_type: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(400, 4)), rng.normal(size=400)
    small = {"n_estimators": 5} if model_type in ("random_forest", "extra_trees", "lightgbm") else {}
    cfg = ModelConfig(type=model_type, params=small)
    model = build_model(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_model(model, cfg, x[:300], y[:300], x[300:], y[300:])
    folder = _logged(tracker, model, x, tmp_path)
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    assert meta["flavors"]["sklearn"]["serialization_format"] == "skops"
    loaded = load_skops_model(folder, label="m")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.fixture(scope="module")
def ridge_folder(tracker: Tracker, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sklearn.linear_model import Ridge

    x = np.random.default_rng(0).normal(size=(20, 3))
    return _logged(tracker, Ridge().fit(x, x.sum(axis=1)), x, tmp_path_factory.mktemp("ridge"))


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_an_unknown_type_is_refused_even_when_the_mlmodel_trusts_it(
    ridge_folder: Path, tmp_path: Path
) -> None:
    folder = _copy(ridge_folder, tmp_path)
    skops.io.dump(Gadget(), folder / "model.skops")
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    meta["flavors"]["sklearn"]["skops_trusted_types"] = [f"{__name__}.Gadget"]
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(FailedPrecondition) as err:
        load_skops_model(folder, label="the model")
    assert err.value.reason == "MODEL_NOT_TRUSTED" and "Gadget" in err.value.message
    assert f"{__name__}.Gadget" not in TRUSTED_TYPES


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"serialization_format": "cloudpickle"}, "cloudpickle"),
        ({"serialization_format": None}, "pickle"),
        ({"pickled_model": "../../outside.skops"}, "outside its artifact folder"),
    ],
)
def test_other_formats_and_escaping_paths_are_refused(
    ridge_folder: Path, tmp_path: Path, change: dict[str, object], needle: str
) -> None:
    folder = _copy(ridge_folder, tmp_path)
    meta = yaml.safe_load((folder / "MLmodel").read_text())
    meta["flavors"]["sklearn"].update(change)
    (folder / "MLmodel").write_text(yaml.safe_dump(meta))
    with pytest.raises(FailedPrecondition) as err:
        check_loadable(folder, label="the model", field="model_uri")
    assert err.value.reason == "MODEL_NOT_TRUSTED" and needle in err.value.message
    assert err.value.field in ("model_uri", None)


def test_a_folder_without_mlmodel_or_with_garbage_is_refused(ridge_folder: Path, tmp_path: Path) -> None:
    folder = _copy(ridge_folder, tmp_path)
    (folder / "model.skops").write_bytes(b"not a zip")
    with pytest.raises(FailedPrecondition) as err:
        check_loadable(folder, label="the model")
    assert err.value.reason == "MODEL_NOT_TRUSTED"
    (folder / "MLmodel").unlink()
    with pytest.raises(FailedPrecondition) as err:
        check_loadable(folder, label="the model")
    assert err.value.reason == "MODEL_NOT_TRUSTED" and "MLmodel" in err.value.message
