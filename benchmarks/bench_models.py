"""Benchmark: every model of the factory on the shipped sp500 dataset, Qlib-style.

    python benchmarks/bench_models.py [--config configs/ml/alpha_backtest/ridge_alpha_backtest.yaml] [--models a,b]

Protocol (the segments, features, label, strategy and costs of the config):

- data: `dataset_cfg` of the config (sp500, 20 stocks, daily adjusted
  closes from 1999; train 2000-2015, valid 2016-2017, test 2018-2022, purged
  by `lag + h`; 18 features: ret/mom/vol/ma_ratio and their cross-sectional
  ranks; label: the next-bar return after a one-bar execution lag, demeaned
  per date);
- models: every entry of `alphaswarm_trainer.models.MODEL_TYPES` with its
  factory defaults and `seed` of the config (ridge takes the config's
  `alpha`); one fit on train (early stopping on valid where the model has
  it), no tuning;
- ML metrics: on the test segment, per METRICS.md: `IC` = mean per-date
  Pearson IC, `Rank IC` = mean per-date Spearman IC, `ICIR` = mean / std
  (ddof=1) of the Rank IC series (not annualised);
- trading metrics: the test predictions drive the config's strategy
  (`long_short_topk`, top 4 long / 4 short, gross 1) through
  `alphaswarm_backtester.engine.run_backtest` with the config's costs (fees
  0.001 + slippage 0.001 per unit traded) and rebalancing (every 5 bars),
  execution lag 1; annualised return, Sharpe and max drawdown follow
  empyrical's conventions (252 periods a year, rf 0).

Prints a markdown table (the one in docs/models.md) and the command; `fit + predict` is
wall time, `CPU` the process's CPU time over all its threads (on a shared machine the
wall time depends on the load, the CPU time much less).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import sklearn

from alphaswarm_backtester.engine import EngineConfig, run_backtest, weights_from_signal
from alphaswarm_common.config import ModelConfig
from alphaswarm_common.configio import read_config_file
from alphaswarm_common.data import load_panel
from alphaswarm_trainer.models import MODEL_TYPES
from alphaswarm_trainer.training import train

DEFAULT_CONFIG = "configs/ml/alpha_backtest/ridge_alpha_backtest.yaml"


def _fmt(value: float | int | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--models", default=",".join(MODEL_TYPES), help="comma-separated model types")
    args = parser.parse_args(argv)
    cfg = read_config_file(args.config)
    print(
        f"command: python benchmarks/bench_models.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"{platform.machine()}; config {args.config}"
    )
    dataset_cfg = cfg.dataset_cfg
    panel = load_panel(dataset_cfg)
    strategy = cfg.strategy
    bt = cfg.resolved_backtest_cfg
    engine = EngineConfig.from_backtest_config(bt, execution_lag=dataset_cfg.label.execution_lag)
    print()
    print(
        "| model | IC | ICIR | Rank IC | annualized return | Sharpe | max drawdown | fit + predict (s) | CPU (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        params = dict(cfg.model_cfg.params) if name == cfg.model_cfg.type else {}
        model_cfg = ModelConfig(type=name, params=params, seed=cfg.model_cfg.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(dataset_cfg, model_cfg, evaluate=False)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        ml = result.metrics["test"]
        rows = result.rows["test"]
        weights = weights_from_signal(
            result.predictions["test"], strategy.type, strategy.params, rebalance_every=bt.rebalance_every
        )
        out = run_backtest(
            weights, panel.close[rows], dates=panel.dates[rows], symbols=panel.symbols, config=engine
        )
        tm = out.metrics
        label = name + (f" ({', '.join(f'{k}={v}' for k, v in params.items())})" if params else "")
        print(
            f"| {label} | {_fmt(ml['ic_pearson'], '.4f')} | {_fmt(ml['icir'], '.4f')} | "
            f"{_fmt(ml['ic_spearman'], '.4f')} | {_fmt(tm.get('annualized_return'), '.2%')} | "
            f"{_fmt(tm.get('sharpe'), '.3f')} | {_fmt(tm.get('max_drawdown'), '.2%')} | {elapsed:.1f} | {cpu:.1f} |"
        )
    if "lightgbm" not in MODEL_TYPES:
        print("\n(lightgbm is not installed: `pip install 'alphaswarm[lightgbm]'` adds it to the table.)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
