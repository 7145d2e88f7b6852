"""Serving (`alphaswarm_registry.serving`) and deployment history (`alphaswarm_registry.deployments`).

Predictions are checked against scikit-learn applied to features computed
independently with pandas from the raw CSV; causality by perturbing the data
after a date; every loud failure by its reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pytest
from google.protobuf import json_format
from sklearn.linear_model import Ridge

from alphaswarm.common.v1 import config_pb2, resources_pb2
from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.errors import DataError, FailedPrecondition, InvalidArgument
from alphaswarm_registry.deployments import (
    alias_for,
    history_of,
    new_deployment,
    previous_entry,
    retired,
    switched,
)
from alphaswarm_registry.serving import check_features, predict_deployment

pytestmark = pytest.mark.unit

FEATURES = [{"name": "ret", "windows": [1, 5]}, {"name": "ma_ratio", "windows": [10]}]
NAMES = ["ret_1", "ret_5", "ma_ratio_10"]
SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]


def _closes(seed: int = 3, t: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2020-01-01", periods=t)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, len(SYMBOLS))), axis=0))
    return pd.DataFrame(close, index=dates, columns=SYMBOLS)


def _write(close: pd.DataFrame, path: Path) -> Path:
    long = close.stack().rename("close").reset_index()
    long.columns = ["date", "symbol", "close"]
    long["date"] = long["date"].dt.strftime("%Y-%m-%d")
    long.to_csv(path, index=False)
    return path


def _cfg(path: Path, **kw: Any) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "source": str(path),
            "segments": {"train": ["2020-01-01", "2020-03-31"], "test": ["2020-04-15", "2020-08-31"]},
            "features": FEATURES,
            **kw,
        }
    )


def _reference_features(close: pd.DataFrame) -> np.ndarray:
    """(T, N, F) features with plain pandas, rounded through float32 as the feature store keeps them."""
    cols = [close / close.shift(1) - 1, close / close.shift(5) - 1, close / close.rolling(10).mean() - 1]
    return np.stack([c.to_numpy() for c in cols], axis=2).astype(np.float32).astype(np.float64)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("serving")
    close = _closes()
    path = _write(close, folder / "panel.csv")
    feats = _reference_features(close)
    label = (close.shift(-2) / close.shift(-1) - 1).to_numpy()
    rows = slice(10, 70)
    x, y = feats[rows].reshape(-1, 3), label[rows].reshape(-1)
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    model = Ridge(alpha=1e-3).fit(x[ok], y[ok])
    return {"close": close, "path": path, "folder": folder, "features": feats, "model": model}


# --------------------------------------------------------------------------- predictions


def test_window_predictions_are_the_model_on_independently_computed_features(data: dict[str, Any]) -> None:
    cfg = _cfg(data["path"])
    w = predict_deployment(data["model"], cfg, NAMES, start=dt.date(2020, 1, 1), end=dt.date(2020, 3, 31))
    close = data["close"]
    in_window = (close.index >= "2020-01-01") & (close.index <= "2020-03-31")
    assert list(w.dates) == list(close.index[in_window].to_numpy().astype("datetime64[D]"))
    assert w.symbols == SYMBOLS
    assert w.feature_names == NAMES
    assert w.fingerprint == load_panel(cfg).fingerprint
    feats = data["features"][in_window]
    expected = np.full(feats.shape[:2], np.nan)
    ok = np.isfinite(feats).all(axis=2)
    expected[ok] = data["model"].predict(feats[ok])
    np.testing.assert_array_equal(np.isnan(w.values), ~ok)  # NaN exactly during the 10-bar warm-up
    np.testing.assert_allclose(w.values[ok], expected[ok], rtol=1e-12, atol=1e-15)


def test_latest_is_the_last_date_and_equals_the_windows_row(data: dict[str, Any]) -> None:
    cfg = _cfg(data["path"])
    latest = predict_deployment(data["model"], cfg, NAMES, latest=True, start=dt.date(2020, 1, 1))
    full = predict_deployment(data["model"], cfg, NAMES)
    assert latest.values.shape == (1, len(SYMBOLS))
    assert latest.dates[0] == np.datetime64(data["close"].index[-1].date(), "D")
    np.testing.assert_array_equal(latest.values[0], full.values[-1])


def test_the_prediction_at_t_uses_data_through_t_only(data: dict[str, Any]) -> None:
    close = data["close"]
    t = close.index[100]
    perturbed = close.copy()
    perturbed.loc[perturbed.index > t] *= np.exp(np.random.default_rng(9).normal(0, 0.3, (59, len(SYMBOLS))))
    other = _write(perturbed, data["folder"] / "perturbed.csv")
    base = predict_deployment(data["model"], _cfg(data["path"]), NAMES)
    moved = predict_deployment(data["model"], _cfg(other), NAMES)
    np.testing.assert_array_equal(base.values[:101], moved.values[:101])
    assert not np.allclose(base.values[101:], moved.values[101:])
    # A live deployment whose data ends at t serves at t what the full window predicted for t.
    live = predict_deployment(data["model"], _cfg(data["path"], end_date=t.date()), NAMES, latest=True)
    assert live.dates[0] == np.datetime64(t.date(), "D")
    np.testing.assert_array_equal(live.values[0], base.values[100])


# --------------------------------------------------------------------------- loud failures


def _reason(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.reason)


@pytest.mark.parametrize(
    ("expected", "reason"),
    [
        (None, "MODEL_FEATURES_UNKNOWN"),
        ([], "MODEL_FEATURES_UNKNOWN"),
        (["ret_1", "ma_ratio_10", "ret_5"], "FEATURES_MISMATCH"),  # same names, other order
        (["ret_1", "ret_5"], "FEATURES_MISMATCH"),
    ],
)
def test_features_the_model_was_not_trained_on_are_refused(
    data: dict[str, Any], expected: list[str] | None, reason: str
) -> None:
    with pytest.raises(FailedPrecondition) as err:
        predict_deployment(data["model"], _cfg(data["path"]), expected)
    assert _reason(err) == reason


def test_an_estimator_with_another_input_width_is_refused(data: dict[str, Any]) -> None:
    narrow = Ridge().fit(np.zeros((5, 2)) + np.arange(10).reshape(5, 2), np.arange(5.0))
    with pytest.raises(FailedPrecondition) as err:
        check_features(_cfg(data["path"]), NAMES, model=narrow)
    assert _reason(err) == "FEATURES_MISMATCH"


class _Raises:
    def predict(self, x: np.ndarray) -> np.ndarray:
        raise ValueError("broken estimator")


class _WrongShape:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x) + 1)


class _NaN:
    def predict(self, x: np.ndarray) -> np.ndarray:
        out = x[:, 0].copy()
        out[3] = np.nan
        return out


class _Column:
    def predict(self, x: np.ndarray) -> np.ndarray:
        return x[:, :1] * 2.0


@pytest.mark.parametrize("model", [_Raises(), _WrongShape(), _NaN()])
def test_a_model_that_cannot_predict_fails_loudly(data: dict[str, Any], model: Any) -> None:
    with pytest.raises(FailedPrecondition) as err:
        predict_deployment(model, _cfg(data["path"]), NAMES)
    assert _reason(err) == "MODEL_PREDICT_FAILED"


def test_a_single_column_output_is_accepted(data: dict[str, Any]) -> None:
    w = predict_deployment(_Column(), _cfg(data["path"]), NAMES, latest=True)
    np.testing.assert_allclose(w.values[0], data["features"][-1, :, 0] * 2.0)


def test_a_window_inside_the_look_back_has_no_prediction(data: dict[str, Any]) -> None:
    first = data["close"].index
    with pytest.raises(FailedPrecondition) as err:
        predict_deployment(
            data["model"], _cfg(data["path"]), NAMES, start=first[0].date(), end=first[5].date()
        )
    assert _reason(err) == "NO_PREDICTIONS"


def test_window_errors_name_the_request_field(data: dict[str, Any]) -> None:
    cfg = _cfg(data["path"])
    with pytest.raises(InvalidArgument) as err:
        predict_deployment(data["model"], cfg, NAMES, start=dt.date(2020, 5, 1), end=dt.date(2020, 4, 1))
    assert err.value.field == "end_date"
    with pytest.raises(DataError) as err2:
        predict_deployment(data["model"], cfg, NAMES, start=dt.date(2031, 1, 1))
    assert err2.value.field == "start_date"


def test_unusable_deployment_data_is_a_failed_precondition(data: dict[str, Any]) -> None:
    with pytest.raises(FailedPrecondition) as err:
        predict_deployment(data["model"], _cfg(data["folder"] / "gone.csv"), NAMES)
    assert _reason(err) == "DEPLOYMENT_DATA_UNUSABLE"
    vma = _cfg(data["path"], features=[{"name": "vma", "windows": [5]}])
    with pytest.raises(FailedPrecondition) as err2:
        predict_deployment(_Column(), vma, ["vma_5"])  # the panel has no volume
    assert _reason(err2) == "DEPLOYMENT_DATA_UNUSABLE"


# --------------------------------------------------------------------------- history


def _dep() -> resources_pb2.Deployment:
    dep = new_deployment(
        model_name="m",
        model_version="1",
        model_alias="champion",
        dataset_cfg=config_pb2.DatasetConfig(source="sp500"),
        strategy_cfg=config_pb2.StrategyConfig(type="long_short_topk"),
    )
    dep.deployment_id = "d-1"
    dep.created_at.FromDatetime(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    return dep


def _roundtrip(dep: resources_pb2.Deployment) -> resources_pb2.Deployment:
    return resources_pb2.Deployment.FromString(dep.SerializeToString())


def test_a_version_change_appends_one_entry_with_its_tenure() -> None:
    t1 = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    t2 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    d1 = _roundtrip(switched(_dep(), model_name="m", model_version="2", model_alias="", now=t1))
    assert (d1.model_version, d1.model_uri, d1.model_alias) == ("2", "models:/m/2", "")
    assert history_of(d1) == [
        {"model_name": "m", "version": "1", "from": "2024-01-02T03:04:05+00:00", "to": t1.isoformat()}
    ]
    d2 = _roundtrip(switched(d1, model_name="m", model_version="3", model_alias="champion", now=t2))
    assert history_of(d2)[-1] == {
        "model_name": "m",
        "version": "2",
        "from": t1.isoformat(),
        "to": t2.isoformat(),
    }
    same = switched(d2, model_name="m", model_version="3", model_alias="challenger", now=t2)
    assert history_of(same) == history_of(d2) and same.model_alias == "challenger"
    assert d2.HasField("history") and _roundtrip(_dep()).HasField("history")  # the store keeps it as sent


def test_previous_entry_and_rollback_swap() -> None:
    assert previous_entry(_dep()) is None
    now = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    d1 = switched(_dep(), model_name="m", model_version="2", model_alias="", now=now)
    prev = previous_entry(d1)
    assert prev is not None and (prev["model_name"], prev["version"]) == ("m", "1")
    back = switched(d1, model_name=prev["model_name"], model_version=prev["version"], model_alias="", now=now)
    again = previous_entry(back)
    assert again is not None and again["version"] == "2"  # a second rollback returns to 2
    # Entries written by other writers lack model_name: the deployment's model is meant.
    foreign = _dep()
    json_format.ParseDict(cast(Any, [{"version": "7", "from": "a", "to": "b"}]), foreign.history)
    entry = previous_entry(foreign)
    assert entry is not None and (entry["model_name"], entry["version"]) == ("m", "7")


def test_alias_for_prefers_the_asked_alias_then_champion() -> None:
    aliases = {"champion": "3", "challenger": "3", "blue": "3", "old": "1"}
    assert alias_for("3", aliases, "challenger") == "challenger"
    assert alias_for("3", aliases, "old") == "champion"
    assert alias_for("3", {"zeta": "3", "alpha": "3"}) == "alpha"
    assert alias_for("2", aliases) == ""


def test_retired_keeps_the_history() -> None:
    d1 = switched(_dep(), model_name="m", model_version="2", model_alias="", now=dt.datetime.now(dt.UTC))
    r = _roundtrip(retired(d1))
    assert r.state == resources_pb2.DEPLOYMENT_STATE_RETIRED
    assert history_of(r) == history_of(d1)
