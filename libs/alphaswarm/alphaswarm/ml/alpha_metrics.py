"""Combined ML + trading metrics of an alpha (docs/metrics.md).

`combined_score(ml_metrics, trading_metrics, weights=None)` scores an alpha in
[-1, 1]: the default weights give Sharpe 0.45 and reward IC, ICIR and hit rate,
so a high-IC model that fails to translate into PnL is penalised. Pass
`weights={...}` to weigh the components per strategy.
"""

from alphaswarm_common.metrics import (
    DEFAULT_SCORE_SCALES,
    DEFAULT_SCORE_WEIGHTS,
    HEADLINE_ML_METRICS,
    HEADLINE_TRADING_METRICS,
    MetricSet,
    ScoreResult,
    combined_score,
    ml_metrics,
    trading_metrics,
)

ML_METRICS = HEADLINE_ML_METRICS
TRADING_METRICS = HEADLINE_TRADING_METRICS

__all__ = [
    "DEFAULT_SCORE_SCALES",
    "DEFAULT_SCORE_WEIGHTS",
    "ML_METRICS",
    "TRADING_METRICS",
    "MetricSet",
    "ScoreResult",
    "combined_score",
    "ml_metrics",
    "trading_metrics",
]
