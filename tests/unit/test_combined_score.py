"""The combined score of METRICS.md: formula, defaults, renormalisation, weights validation, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import numpy as np
import pytest

from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.metrics import (
    DEFAULT_SCORE_SCALES,
    DEFAULT_SCORE_WEIGHTS,
    MetricSet,
    combined_score,
    ml_metrics,
    trading_metrics,
)

pytestmark = pytest.mark.unit

# METRICS.md, "Combined score": (weight, scale, centre) per component.
SPEC = {
    "sharpe": (0.45, 1.0, 0.0),
    "icir": (0.20, 0.5, 0.0),
    "ic_spearman": (0.15, 0.05, 0.0),
    "hit_rate": (0.10, 0.05, 0.5),
    "calmar": (0.10, 1.0, 0.0),
}
ML_KEYS = ("icir", "ic_spearman", "hit_rate")


def _reference(metrics: Mapping[str, float | None], weights: dict[str, float] | None = None) -> float | None:
    """The formula written out: sum w tanh((m - c) / s) / sum w over the present metrics."""
    w = {k: v[0] for k, v in SPEC.items()} | (weights or {})
    num = den = 0.0
    for k, (_, s, c) in SPEC.items():
        m = metrics.get(k)
        if m is None or w[k] == 0:
            continue
        num += w[k] * math.tanh((m - c) / s)
        den += w[k]
    return num / den if den else None


def _split(metrics: Mapping[str, float | None]) -> tuple[dict, dict]:
    ml = {k: v for k, v in metrics.items() if k in ML_KEYS}
    trading = {k: v for k, v in metrics.items() if k not in ML_KEYS}
    return ml, trading


def test_defaults_are_the_documented_table() -> None:
    assert dict(DEFAULT_SCORE_WEIGHTS) == {k: v[0] for k, v in SPEC.items()}
    assert dict(DEFAULT_SCORE_SCALES) == {k: v[1] for k, v in SPEC.items()}
    assert math.isclose(sum(DEFAULT_SCORE_WEIGHTS.values()), 1.0)


def test_score_matches_the_formula_on_random_metrics() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        metrics = {
            "sharpe": rng.normal(0.5, 1.5),
            "icir": rng.normal(0.2, 0.5),
            "ic_spearman": rng.normal(0.02, 0.05),
            "hit_rate": rng.uniform(0.3, 0.7),
            "calmar": rng.normal(0.5, 2.0),
        }
        res = combined_score(*_split(metrics))
        assert res.score == pytest.approx(_reference(metrics), rel=1e-12, abs=1e-15)
        assert sum(c["contribution"] for c in res.components.values()) == pytest.approx(res.score)
        assert sum(c["weight"] for c in res.components.values()) == pytest.approx(1.0)


def test_score_is_bounded_even_for_extreme_metrics() -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        metrics = {k: float(rng.choice([-1, 1]) * 10.0 ** rng.uniform(-3, 6)) for k in SPEC}
        res = combined_score(*_split(metrics))
        assert res.score is not None and -1.0 <= res.score <= 1.0
    top = combined_score({"icir": 1e9, "ic_spearman": 1e9, "hit_rate": 1.0}, {"sharpe": 1e9, "calmar": 1e9})
    assert top.score == pytest.approx(1.0)
    bottom = combined_score(
        {"icir": -1e9, "ic_spearman": -1e9, "hit_rate": 0.0}, {"sharpe": -1e9, "calmar": -1e9}
    )
    assert bottom.score == pytest.approx(-1.0)


def test_a_coin_flip_hit_rate_scores_zero() -> None:
    res = combined_score({"hit_rate": 0.5}, {})
    assert res.score == 0.0
    assert res.components["hit_rate"]["value"] == 0.5  # the reported metric, not hit_rate - 0.5


def test_missing_and_undefined_metrics_drop_out_and_the_rest_renormalise() -> None:
    ml = MetricSet(
        values={"icir": None, "ic_spearman": 0.03, "hit_rate": 0.55},
        reasons={"icir": "fewer than 2 dates with a defined IC"},
    )
    trading = {"sharpe": 1.2}  # calmar absent
    res = combined_score(ml, trading)
    assert res.score == pytest.approx(_reference({"ic_spearman": 0.03, "hit_rate": 0.55, "sharpe": 1.2}))
    assert set(res.components) == {"ic_spearman", "hit_rate", "sharpe"}
    assert res.dropped == {
        "icir": "metric undefined: fewer than 2 dates with a defined IC",
        "calmar": "metric absent",
    }
    total = 0.15 + 0.10 + 0.45
    assert res.components["sharpe"]["weight"] == pytest.approx(0.45 / total)
    assert res.weights_used == dict(DEFAULT_SCORE_WEIGHTS)


def test_non_finite_metrics_in_plain_mappings_drop_out() -> None:
    res = combined_score({"icir": float("nan"), "ic_spearman": float("inf")}, {"sharpe": 0.5})
    assert set(res.components) == {"sharpe"}
    assert res.dropped["icir"] == "metric is not finite"
    assert res.score == pytest.approx(math.tanh(0.5))


def test_all_missing_gives_no_score_with_a_reason() -> None:
    res = combined_score({}, {"sharpe": None})
    assert res.score is None and res.reason
    assert set(res.dropped) == set(SPEC)
    json.dumps(res.to_dict(), allow_nan=False)
    res = combined_score(None, None)
    assert res.score is None and res.dropped["sharpe"] == "metric set not given"


def test_custom_weights_replace_defaults_by_key() -> None:
    metrics = {"sharpe": 0.8, "icir": 0.4, "ic_spearman": 0.03, "hit_rate": 0.53, "calmar": 0.6}
    weights = {"sharpe": 1.0, "calmar": 0.0}
    res = combined_score(*_split(metrics), weights=weights)
    assert res.score == pytest.approx(_reference(metrics, weights))
    assert res.weights_used == {
        "sharpe": 1.0,
        "icir": 0.20,
        "ic_spearman": 0.15,
        "hit_rate": 0.10,
        "calmar": 0.0,
    }
    assert res.dropped == {"calmar": "weight 0"}
    only_ic = combined_score(*_split(metrics), weights={k: 0.0 for k in SPEC} | {"ic_spearman": 2.0})
    assert only_ic.score == pytest.approx(math.tanh(0.03 / 0.05))


def test_zero_weights_everywhere_gives_no_score() -> None:
    res = combined_score({"icir": 1.0}, {"sharpe": 1.0}, weights=dict.fromkeys(SPEC, 0.0))
    assert res.score is None and res.reason


@pytest.mark.parametrize(
    ("weights", "field"),
    [
        ({"sortino": 0.3}, "weights.sortino"),
        ({"sharpe": -0.1}, "weights.sharpe"),
        ({"icir": float("nan")}, "weights.icir"),
        ({"calmar": float("inf")}, "weights.calmar"),
        ({"hit_rate": "0.2"}, "weights.hit_rate"),
        ({"hit_rate": True}, "weights.hit_rate"),
    ],
)
def test_invalid_weights_are_rejected_naming_the_key(weights: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        combined_score({}, {}, weights=weights)
    assert err.value.field == field


def test_custom_scales_are_validated_and_used() -> None:
    res = combined_score({}, {"sharpe": 1.0}, scales={"sharpe": 2.0})
    assert res.score == pytest.approx(math.tanh(0.5))
    assert res.scales_used["sharpe"] == 2.0
    with pytest.raises(InvalidArgument) as err:
        combined_score({}, {}, scales={"sharpe": 0.0})
    assert err.value.field == "scales.sharpe"


def test_metric_sets_and_mappings_give_the_same_score() -> None:
    ml = {"icir": 0.3, "ic_spearman": 0.02, "hit_rate": 0.52}
    trading = {"sharpe": 1.1, "calmar": 0.7}
    a = combined_score(ml, trading)
    b = combined_score(MetricSet(values=ml), MetricSet(values=trading))
    assert a == b


def test_components_are_read_from_their_own_metric_set() -> None:
    res = combined_score({"sharpe": 5.0}, {"icir": 5.0})
    assert res.score is None
    assert res.dropped["sharpe"] == "metric absent" and res.dropped["icir"] == "metric absent"


def test_end_to_end_with_computed_metric_sets_is_strict_json() -> None:
    rng = np.random.default_rng(5)
    labels = rng.standard_normal((120, 20)) * 0.01
    preds = labels + rng.standard_normal(labels.shape) * 0.02
    r = rng.normal(0.0005, 0.01, 120)
    res = combined_score(ml_metrics(preds, labels), trading_metrics(r))
    assert res.score is not None and -1 <= res.score <= 1
    assert set(res.components) == set(SPEC)
    doc = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert set(doc) >= {"score", "components", "weights_used", "dropped"}
    assert set(doc["components"]["sharpe"]) == {"value", "scale", "weight", "contribution"}
