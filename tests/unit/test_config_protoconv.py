"""Config validation names the field; configs, matrices and metric sets survive the wire."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import json_format

from alphaswarm.common.v1 import arrays_pb2, config_pb2
from alphaswarm_common.config import AlphaBacktestConfig
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.protoconv import (
    array_from_proto,
    array_to_proto,
    config_from_proto,
    config_to_proto,
    matrix_from_proto,
    matrix_to_proto,
    metricset_from_proto,
    metricset_to_proto,
)

pytestmark = pytest.mark.unit

BASE = {
    "dataset_cfg": {"segments": {"train": ["2000-01-01", "2010-12-31"], "test": ["2012-01-01", "2014-12-31"]}}
}


def test_round_trip_keeps_explicit_zero_and_false() -> None:
    cfg = AlphaBacktestConfig.model_validate(
        {
            **BASE,
            "backtest_cfg": {"fees": 0.0, "slippage": 0.0, "execution_lag": 0, "rf": 0.0},
            "dataset_cfg": {**BASE["dataset_cfg"], "label": {"execution_lag": 0}, "embargo": 0},
            "train_first": False,
            "deployment_id": "d",
            "capture_predictions": False,
            "strategy_cfg": {"type": "long_only_topk", "params": {"top_k": 3, "n_drop": 1}},
            "weights": {"sharpe": 0.0, "icir": 1.0},
        }
    )
    back = config_from_proto(config_to_proto(cfg), AlphaBacktestConfig)
    assert back == cfg
    assert back.backtest_cfg.fees == 0.0 and back.backtest_cfg.execution_lag == 0
    assert back.train_first is False


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {
                "dataset_cfg": {
                    "segments": {"train": ["2010-01-01", "2000-01-01"], "test": ["2012-01-01", "2014-12-31"]}
                }
            },
            "dataset_cfg.segments.train",
        ),
        ({"backtest_cfg": {"fees": -0.1}}, "backtest_cfg.fees"),
        ({"backtest_cfg": {"nonsense": 1}}, "backtest_cfg.nonsense"),
        ({"dataset_cfg": {"segments": {"train": ["2000-01-01", "2010-12-31"]}}}, "dataset_cfg.segments.test"),
        (
            {
                "dataset_cfg": {
                    "features": [{"name": "ret", "windows": [0]}],
                    "segments": BASE["dataset_cfg"]["segments"],
                }
            },
            "dataset_cfg.features[0].windows",
        ),
    ],
)
def test_invalid_config_names_the_field(patch: dict, field: str) -> None:
    from pydantic import ValidationError

    from alphaswarm_common.protoconv import validation_error

    with pytest.raises(ValidationError) as info:
        AlphaBacktestConfig.model_validate({**BASE, **patch})
    err = validation_error(info.value)
    assert isinstance(err, InvalidArgument)
    assert err.field == field


def test_invalid_config_over_the_wire_names_the_field() -> None:
    doc = {
        "dataset_cfg": {
            "segments": {
                "train": {"start": "2010-01-01", "end": "2000-01-01"},
                "test": {"start": "2012-01-01", "end": "2014-12-31"},
            }
        },
        "backtest_cfg": {"fees": -1.0},
    }
    msg = json_format.ParseDict(doc, config_pb2.AlphaBacktestConfig())
    with pytest.raises(InvalidArgument) as err:
        config_from_proto(msg, AlphaBacktestConfig, prefix="config")
    assert err.value.field == "config.dataset_cfg.segments.train"
    fields = {v["field"] for v in err.value.details["violations"]}
    assert "config.backtest_cfg.fees" in fields


def test_reuse_without_deployment_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="deployment_id"):
        AlphaBacktestConfig.model_validate({**BASE, "train_first": False})


def test_lag_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="execution_lag"):
        AlphaBacktestConfig.model_validate({**BASE, "backtest_cfg": {"execution_lag": 2}})


@pytest.mark.parametrize("dtype", ["<f8", "<f4", "<i8", ">f8"])
def test_arrays_round_trip(dtype: str) -> None:
    arr = (np.random.default_rng(0).normal(size=(7, 3)) * 100).astype(dtype)
    back = array_from_proto(array_to_proto(arr))
    np.testing.assert_array_equal(back, arr)


def test_corrupt_array_is_invalid_argument() -> None:
    msg = array_to_proto(np.zeros((3, 2)))
    msg.data = msg.data[:-1]
    with pytest.raises(InvalidArgument) as err:
        array_from_proto(msg, field="signal.values")
    assert err.value.field == "signal.values.data"


def test_matrix_round_trip_with_nan() -> None:
    values = np.array([[1.0, np.nan], [np.nan, 2.5]])
    dates = np.array(["2020-01-02", "2020-01-03"], dtype="datetime64[D]")
    v, d, s = matrix_from_proto(matrix_to_proto(values, dates, ["A", "B"]))
    np.testing.assert_array_equal(v, values)
    np.testing.assert_array_equal(d, dates)
    assert s == ["A", "B"]
    bad = arrays_pb2.Matrix(dates=["2020-01-02"], symbols=["A", "B"], values=array_to_proto(np.zeros((2, 2))))
    with pytest.raises(InvalidArgument):
        matrix_from_proto(bad)


def test_metricset_keeps_nulls_with_reasons_and_real_zero() -> None:
    msg = metricset_to_proto(
        {"sharpe": 0.0, "calmar": None, "x": float("inf")},
        {"calmar": "no drawdown"},
        {"periods_per_year": 252},
    )
    values, reasons, conv = metricset_from_proto(msg)
    assert values == {"sharpe": 0.0, "calmar": None, "x": None}
    assert reasons["calmar"] == "no drawdown" and "x" in reasons
    assert conv == {"periods_per_year": 252}
