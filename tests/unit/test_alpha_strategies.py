"""Alpha strategies: predictions -> target weights.

References are written here independently: per-row loops over sorted
predictions, `scipy.stats.zscore` / `rankdata`, and Qlib's TopkDropout
algorithm transcribed with pandas as in `qlib.contrib.strategy.signal_strategy`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_backtester.engine import ALPHA_STRATEGIES, weights_from_signal
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit


def _signal(seed: int, n_bars: int = 30, n_syms: int = 20, nan_share: float = 0.15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(n_bars, n_syms))
    s[rng.random(s.shape) < nan_share] = np.nan
    return s


def test_registry_lists_the_strategies_and_is_read_only():
    assert set(ALPHA_STRATEGIES) == {
        "long_short_topk",
        "long_only_topk",
        "quantile",
        "signal_weighted",
        "threshold",
    }
    with pytest.raises(TypeError):
        ALPHA_STRATEGIES["x"] = ALPHA_STRATEGIES["quantile"]  # type: ignore[index]
    for name, strat in ALPHA_STRATEGIES.items():
        assert strat.name == name and strat.params.model_json_schema()["type"] == "object"


@pytest.mark.parametrize("seed", range(3))
def test_long_short_topk(seed):
    s = _signal(seed)
    s[4, 3:] = np.nan  # a date with 3 names only: one per side
    s[5, 1:] = np.nan  # a date with one name: no position
    w = weights_from_signal(s, "long_short_topk", {"top_k": 4, "gross_exposure": 2.0})
    for t in range(len(s)):
        valid = np.flatnonzero(~np.isnan(s[t]))
        k = min(4, valid.size // 2)
        order = valid[np.argsort(-s[t, valid])]
        expected = np.zeros(s.shape[1])
        if k:
            expected[order[:k]] = 1.0 / k
            expected[order[-k:]] = -1.0 / k
        np.testing.assert_allclose(w[t], expected, rtol=1e-15)
    assert np.abs(w[0]).sum() == pytest.approx(2.0) and w[0].sum() == pytest.approx(0.0, abs=1e-15)
    assert not np.isnan(w).any()


def test_ties_are_broken_by_symbol_order():
    s = np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])
    w = weights_from_signal(s, "long_short_topk", {"top_k": 2})
    np.testing.assert_allclose(w[0], [0.25, 0.25, 0.0, -0.25, -0.25])
    w = weights_from_signal(s, "long_only_topk", {"top_k": 2})
    np.testing.assert_allclose(w[0], [0.5, 0.5, 0.0, 0.0, 0.0])


def test_long_only_topk_and_quantile():
    s = _signal(3)
    w = weights_from_signal(s, "long_only_topk", {"top_k": 5})
    for t in range(len(s)):
        valid = np.flatnonzero(~np.isnan(s[t]))
        top = valid[np.argsort(-s[t, valid])][:5]
        expected = np.zeros(s.shape[1])
        expected[top] = 1.0 / top.size
        np.testing.assert_allclose(w[t], expected)
    q = weights_from_signal(s, "quantile", {"quantile": 0.25})
    for t in range(len(s)):
        valid = np.flatnonzero(~np.isnan(s[t]))
        k = int(np.floor(0.25 * valid.size))
        order = valid[np.argsort(-s[t, valid])]
        assert set(np.flatnonzero(q[t] > 0)) == set(order[:k])
        assert set(np.flatnonzero(q[t] < 0)) == set(order[-k:])
        np.testing.assert_allclose(q[t][q[t] != 0], np.sign(q[t][q[t] != 0]) * 0.5 / k)


def _qlib_topk_dropout(scores: pd.DataFrame, topk: int, n_drop: int) -> list[set[str]]:
    """Qlib TopkDropoutStrategy (method_sell="bottom", method_buy="top"), one step per date."""
    held: list[str] = []
    out = []
    for _, row in scores.iterrows():
        pred = row.dropna()
        last = row.reindex(held).sort_values(ascending=False, na_position="last").index
        pool = pred[~pred.index.isin(last)].sort_values(ascending=False).index
        today = list(pool[: max(0, n_drop + topk - len(last))])
        comb = row.reindex(last.union(pd.Index(today))).sort_values(ascending=False, na_position="last").index
        worst = comb[-n_drop:] if len(comb) else comb
        sell = last[last.isin(worst)]
        buy = today[: max(0, len(sell) + topk - len(last))]
        held = [n for n in last if n not in set(sell)] + buy
        out.append(set(held))
    return out


@pytest.mark.parametrize(("seed", "every"), [(0, 1), (1, 1), (2, 3)])
def test_topk_dropout_matches_qlib(seed, every):
    s = _signal(seed, n_bars=40, n_syms=15, nan_share=0.1)
    names = [f"n{i:02d}" for i in range(15)]
    w = weights_from_signal(s, "long_only_topk", {"top_k": 5, "n_drop": 2}, rebalance_every=every)
    decision_rows = pd.DataFrame(s, columns=names).iloc[::every]
    expected = _qlib_topk_dropout(decision_rows, topk=5, n_drop=2)
    for j, t in enumerate(range(0, 40, every)):
        held = {names[i] for i in np.flatnonzero(w[t])}
        assert held == expected[j], t
        np.testing.assert_allclose(w[t][w[t] > 0], 1.0 / len(held))
        # between decisions the target repeats
        np.testing.assert_array_equal(w[t : t + every], np.broadcast_to(w[t], w[t : t + every].shape))
    changes = [len(expected[j] - expected[j - 1]) for j in range(1, len(expected))]
    assert max(changes) <= 2 and sum(changes) > 0  # at most n_drop names replaced per step


def test_signal_weighted():
    s = _signal(4)
    for normalize in ("zscore", "demean", "rank"):
        w = weights_from_signal(s, "signal_weighted", {"normalize": normalize, "gross_exposure": 1.5})
        for t in range(len(s)):
            valid = ~np.isnan(s[t])
            if normalize == "rank":
                raw = stats.rankdata(s[t, valid])
                raw = raw - raw.mean()
            else:
                raw = stats.zscore(s[t, valid], ddof=1)
            expected = np.zeros(s.shape[1])
            expected[valid] = raw / np.abs(raw).sum() * 1.5
            np.testing.assert_allclose(w[t], expected, rtol=1e-12, atol=1e-15)
    clipped = weights_from_signal(s, "signal_weighted", {"clip": 0.5})
    z = stats.zscore(s[0, ~np.isnan(s[0])], ddof=1).clip(-0.5, 0.5)
    np.testing.assert_allclose(clipped[0][~np.isnan(s[0])], z / np.abs(z).sum(), rtol=1e-12)
    # average ranks for ties
    tie = weights_from_signal(np.array([[1.0, 2.0, 2.0, 3.0]]), "signal_weighted", {"normalize": "rank"})
    np.testing.assert_allclose(tie[0], [-0.5, 0.0, 0.0, 0.5])


def test_threshold_works_on_one_symbol():
    s = np.array([0.5, -0.5, 0.05, np.nan, -0.05, 2.0])
    w = weights_from_signal(s, "threshold", {"upper": 0.1, "lower": -0.1, "size": 0.8})
    np.testing.assert_allclose(w[:, 0], [0.8, -0.8, 0.0, 0.0, 0.0, 0.8])
    lo = weights_from_signal(s, "threshold", {"upper": 0.1, "lower": -0.1, "long_only": True})
    np.testing.assert_allclose(lo[:, 0], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    multi = np.array([[1.0, 2.0, -1.0, 0.0]])
    eq = weights_from_signal(multi, "threshold", {"sizing": "equal", "size": 1.5})
    np.testing.assert_allclose(eq[0], [0.5, 0.5, -0.5, 0.0])


@pytest.mark.parametrize(
    ("strategy", "params", "field"),
    [
        ("momentum", {}, "strategy_cfg.type"),
        ("long_short_topk", {"topk": 3}, "strategy_cfg.params.topk"),
        ("long_short_topk", {"top_k": 0}, "strategy_cfg.params.top_k"),
        ("long_short_topk", {"top_k": 25}, "strategy_cfg.params.top_k"),
        ("long_short_topk", {"top_k": "many"}, "strategy_cfg.params.top_k"),
        ("long_only_topk", {"top_k": 3, "n_drop": 4}, "strategy_cfg.params"),
        ("quantile", {"quantile": 0.7}, "strategy_cfg.params.quantile"),
        ("signal_weighted", {"normalize": "minmax"}, "strategy_cfg.params.normalize"),
        ("threshold", {"upper": -1.0, "lower": 1.0}, "strategy_cfg.params"),
        ("threshold", {"size": float("nan")}, "strategy_cfg.params.size"),
    ],
)
def test_invalid_strategy_or_params_name_the_field(strategy, params, field):
    with pytest.raises(InvalidArgument) as err:
        weights_from_signal(_signal(0), strategy, params)
    assert err.value.field == field


def test_params_from_json_numbers_and_bad_signals():
    # a protobuf Struct carries every number as a double
    w = weights_from_signal(_signal(5), "long_short_topk", {"top_k": 3.0})
    assert (w[0] > 0).sum() == 3
    with pytest.raises(InvalidArgument) as err:
        weights_from_signal(_signal(5), "long_short_topk", {"top_k": 3.5})
    assert err.value.field == "strategy_cfg.params.top_k"
    bad = _signal(5)
    bad[2, 2] = np.inf
    with pytest.raises(DataError) as err:
        weights_from_signal(bad, "quantile", {})
    assert err.value.field == "signal"
    with pytest.raises(InvalidArgument) as err:
        weights_from_signal(_signal(5), "quantile", {}, rebalance_every=0)
    assert err.value.field == "rebalance_every"
