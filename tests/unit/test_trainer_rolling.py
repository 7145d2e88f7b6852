"""Rolling retraining: the purge before every block, the windows, stitched predictions equal to
independent refits, and the `rolling` metric set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from alphaswarm_common.config import DatasetConfig, ModelConfig, RollingConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.features import compute_features
from alphaswarm_common.labels import make_labels
from alphaswarm_common.metrics import ml_metrics
from alphaswarm_trainer.training import train

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_openmp_thread() -> Iterator[None]:
    """HistGradientBoosting's OpenMP threads spin on a busy CI box; results do not depend on the count."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _dataset(horizon: int = 1, lag: int = 1, embargo: int = 0, valid: bool = True) -> DatasetConfig:
    segments: dict[str, Any] = {"train": ["2010-01-01", "2010-12-31"], "test": ["2011-07-01", "2012-03-31"]}
    if valid:
        segments["valid"] = ["2011-01-01", "2011-06-30"]
    return DatasetConfig.model_validate(
        {
            "source": "synthetic",
            "synthetic": {"n_dates": 600, "n_symbols": 20, "ic": 0.08, "seed": 17},
            "segments": segments,
            "features": [{"name": "ret", "windows": [1, 5]}, {"name": "ma_ratio", "windows": [10]}],
            "label": {"horizon": horizon, "execution_lag": lag, "transform": "demean"},
            "embargo": embargo,
        }
    )


@pytest.mark.parametrize(
    ("horizon", "lag", "embargo", "window", "step"),
    [(1, 1, 0, None, 40), (5, 1, 2, 120, 25), (3, 0, 0, 60, 63)],
)
def test_blocks_are_purged_and_match_independent_refits(
    horizon: int, lag: int, embargo: int, window: int | None, step: int
) -> None:
    cfg = _dataset(horizon, lag, embargo)
    model_cfg = ModelConfig(
        type="ridge", params={"alpha": 2.0}, rolling=RollingConfig(step=step, window=window)
    )
    result = train(cfg, model_cfg, evaluate=False)
    rolling = result.rolling
    assert rolling is not None

    panel = load_panel(cfg)
    feats = compute_features(panel, cfg.features).values
    labels = make_labels(panel.close, horizon, lag, "demean")
    first_train = int(result.rows["train"][0])
    eval_rows = np.concatenate([result.rows["valid"], result.rows["test"]])
    np.testing.assert_array_equal(rolling.rows, eval_rows)
    purge = lag + horizon + embargo
    covered = np.zeros(eval_rows.size, dtype=bool)
    for block in rolling.blocks:
        # blocks start every `step` bars from the first evaluated row (a block may begin in the
        # purge gap between valid and test: its first predicted row is then the first test row)
        b0 = eval_rows[0] + ((block.predict_start - eval_rows[0]) // step) * step
        assert block.predict_end <= b0 + step
        assert block.train_end == b0 - purge
        # the last training label is realised strictly before the block's first decision
        assert block.train_end - 1 + lag + horizon < b0
        expected_start = first_train if window is None else max(first_train, block.train_end - window)
        assert block.train_start == expected_start
        # an independent refit on exactly those rows predicts the block
        x = feats[block.train_start : block.train_end].reshape(-1, feats.shape[2]).astype(np.float64)
        y = labels[block.train_start : block.train_end].ravel()
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        ref = make_pipeline(StandardScaler(), Ridge(alpha=2.0)).fit(x[ok], y[ok])
        assert block.n_train_rows == int(ok.sum())
        in_block = (eval_rows >= block.predict_start) & (eval_rows < block.predict_end)
        block_feats = feats[eval_rows[in_block]]
        good = np.isfinite(block_feats).all(axis=2)
        expected = np.full(good.shape, np.nan)
        expected[good] = ref.predict(block_feats[good].astype(np.float64))
        np.testing.assert_allclose(rolling.predictions[in_block], expected, rtol=1e-10, atol=1e-14)
        covered |= in_block
    assert covered.all()
    # the rolling metric set is ml_metrics of the stitched predictions; the deployable model stays
    # the fit on train (the last refit has seen valid and test: backtesting it there would leak)
    assert result.metrics["rolling"].to_dict() == ml_metrics(rolling.predictions, labels[eval_rows]).to_dict()
    assert result.model is not rolling.model
    assert str(result.trained_through) == str(panel.dates[result.rows["train"][-1]])
    # valid / test metrics stay those of the fit on train
    assert (
        result.metrics["test"].to_dict()
        == ml_metrics(result.predictions["test"], labels[result.rows["test"]]).to_dict()
    )


def test_without_valid_the_blocks_cover_test_only() -> None:
    cfg = _dataset(valid=False)
    result = train(cfg, ModelConfig(type="ridge", rolling=RollingConfig(step=50)), evaluate=False)
    assert result.rolling is not None
    np.testing.assert_array_equal(result.rolling.rows, result.rows["test"])
    assert result.rolling.blocks[0].predict_start == result.rows["test"][0]


def test_rolling_refits_reuse_the_early_stopped_capacity() -> None:
    cfg = _dataset()
    model_cfg = ModelConfig(
        type="hist_gradient_boosting",
        params={"max_iter": 30, "learning_rate": 0.2},
        rolling=RollingConfig(step=120),
    )
    result = train(cfg, model_cfg, evaluate=False)
    n_iter = result.params["fit.n_iter"]
    assert result.params["fit.early_stopping"] == "valid"
    last_refit = result.rolling.model  # type: ignore[union-attr]
    assert (
        last_refit.named_steps["model"].n_iter_ == n_iter
    )  # refits: max_iter pinned to the early-stopped n_iter
    assert last_refit.named_steps["model"].early_stopping is False
    assert result.model.named_steps["model"].n_iter_ == n_iter  # the deployable model: the early-stopped fit
    assert result.params["rolling.n_fits"] == len(result.rolling.blocks)  # type: ignore[union-attr]
