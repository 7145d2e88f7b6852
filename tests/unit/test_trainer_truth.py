"""Truth tests: on the planted-alpha generator, Ridge recovers the planted IC within its sampling error
and its predictions make money in a long-short backtest; on pure noise nothing is significant."""

from __future__ import annotations

import math

import empyrical
import pytest

from alphaswarm_backtester.engine import EngineConfig, run_backtest, weights_from_signal
from alphaswarm_common.config import DatasetConfig, ModelConfig
from alphaswarm_common.data import load_panel
from alphaswarm_trainer.training import train

pytestmark = pytest.mark.unit


def _dataset(ic: float, seed: int) -> DatasetConfig:
    return DatasetConfig.model_validate(
        {
            "source": "synthetic",
            "synthetic": {"n_dates": 1300, "n_symbols": 200, "ic": ic, "seed": seed, "ohlcv": False},
            "segments": {
                "train": ["2010-01-01", "2012-12-31"],
                "valid": ["2013-01-01", "2013-06-30"],
                "test": ["2013-07-01", "2014-12-31"],
            },
            "features": [{"name": "ret", "windows": [1, 5, 20]}, {"name": "vol", "windows": [20]}],
            "label": {"horizon": 1, "execution_lag": 1},
        }
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_ridge_recovers_the_planted_ic_and_trades_it(seed: int) -> None:
    planted = 0.1
    cfg = _dataset(planted, seed)
    result = train(cfg, ModelConfig(type="ridge", params={"alpha": 1.0}), evaluate=False)
    test = result.metrics["test"]
    n_dates = int(test["n_dates"])  # type: ignore[arg-type]
    rank_ic = float(test["ic_spearman"])  # type: ignore[arg-type]
    icir = float(test["icir"])  # type: ignore[arg-type]
    se = abs(rank_ic / icir) / math.sqrt(n_dates)  # std(RankIC_t) / sqrt(n_dates)
    assert n_dates > 300
    assert abs(rank_ic - planted) < 4 * se, (rank_ic, planted, se)

    # long-short top/bottom 10 of the test predictions through the backtest engine, no costs:
    # the signal, not the cost model, is under test
    panel = load_panel(cfg)
    rows = result.rows["test"]
    weights = weights_from_signal(result.predictions["test"], "long_short_topk", {"top_k": 10})
    out = run_backtest(
        weights,
        panel.close[rows],
        dates=panel.dates[rows],
        symbols=panel.symbols,
        config=EngineConfig(fees=0.0, slippage=0.0, execution_lag=1),
    )
    sharpe = out.metrics["sharpe"]
    assert sharpe is not None and sharpe > 0.5
    assert sharpe == pytest.approx(empyrical.sharpe_ratio(out.returns), rel=1e-9)


def test_pure_noise_stays_insignificant() -> None:
    cfg = _dataset(0.0, 5)
    result = train(cfg, ModelConfig(type="ridge", params={"alpha": 1.0}), evaluate=False)
    t_stat = result.metrics["test"]["ic_tstat"]
    assert t_stat is not None and abs(t_stat) < 3
