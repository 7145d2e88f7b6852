"""Metric math of AlphaSwarm: ML metrics, trading metrics and the combined score.

Pure NumPy/SciPy functions with no I/O; every definition is the one of
METRICS.md (the metrics contract), every convention is a parameter, and
every result is a `MetricSet` that records the conventions it used and
reports an undefined value as None with the reason, never NaN or inf.

- `ml_metrics`, `ic_series`: IC / RankIC / ICIR, MAE, RMSE, hit rate
  (`alphaswarm_common.metrics.ml`).
- `trading_metrics` and helpers (`BarStats`, `drawdown_series`, `max_drawdown_duration`,
  `infer_periods_per_year`, `probabilistic_sharpe_ratio`,
  `deflated_sharpe_ratio`, `expected_max_sharpe`)
  (`alphaswarm_common.metrics.trading`).
- `combined_score`, `ScoreResult`, `DEFAULT_SCORE_WEIGHTS`,
  `DEFAULT_SCORE_SCALES` (`alphaswarm_common.metrics.score`).
"""

from alphaswarm_common.metrics._types import MetricSet
from alphaswarm_common.metrics.ml import ICMethod, ic_series, ml_metrics
from alphaswarm_common.metrics.score import (
    DEFAULT_SCORE_SCALES,
    DEFAULT_SCORE_WEIGHTS,
    SCORE_CENTERS,
    SCORE_SOURCES,
    ScoreResult,
    combined_score,
)
from alphaswarm_common.metrics.trading import (
    BarStats,
    deflated_sharpe_ratio,
    drawdown_series,
    expected_max_sharpe,
    infer_periods_per_year,
    max_drawdown_duration,
    probabilistic_sharpe_ratio,
    trading_metrics,
)

__all__ = [
    "DEFAULT_SCORE_SCALES",
    "DEFAULT_SCORE_WEIGHTS",
    "HEADLINE_ML_METRICS",
    "HEADLINE_TRADING_METRICS",
    "SCORE_CENTERS",
    "SCORE_SOURCES",
    "BarStats",
    "ICMethod",
    "MetricSet",
    "ScoreResult",
    "combined_score",
    "deflated_sharpe_ratio",
    "drawdown_series",
    "expected_max_sharpe",
    "ic_series",
    "infer_periods_per_year",
    "max_drawdown_duration",
    "ml_metrics",
    "probabilistic_sharpe_ratio",
    "trading_metrics",
]

#: The ML and trading metrics every alpha-backtest run reports side by side (the seed page's vocabulary).
HEADLINE_ML_METRICS = ("ic_spearman", "ic_pearson", "icir", "mae", "rmse", "hit_rate")
HEADLINE_TRADING_METRICS = (
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "total_return",
    "turnover_adj_sharpe",
)
