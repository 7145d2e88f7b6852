"""The run page's statistics agree with the reference libraries (SciPy, empyrical, pandas) on
data they never saw, and the downsampling keeps the extremes a chart must show."""

from __future__ import annotations

import empyrical
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_gateway.browser import analytics as an

pytestmark = pytest.mark.unit


@pytest.fixture
def panel() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    t, n = 60, 25
    pred = rng.normal(size=(t, n))
    label = 0.3 * pred + rng.normal(size=(t, n)) * 0.02
    label = np.round(label, 3)  # ties in the labels
    pred[rng.random((t, n)) < 0.1] = np.nan  # missing predictions
    label[rng.random((t, n)) < 0.05] = np.nan
    pred[3, :] = 1.0  # a constant date: skipped
    label[7, 1:] = np.nan  # a date with at most one pair: skipped
    return pred, label


def test_ic_and_rank_ic_per_date_match_scipy(panel: tuple[np.ndarray, np.ndarray]) -> None:
    pred, label = panel
    ic, rank_ic = an.cross_sectional_ic(pred, label)
    for t in range(pred.shape[0]):
        ok = np.isfinite(pred[t]) & np.isfinite(label[t])
        if ok.sum() < 2 or np.ptp(pred[t][ok]) == 0 or np.ptp(label[t][ok]) == 0:
            assert np.isnan(ic[t]) and np.isnan(rank_ic[t]), t
            continue
        assert ic[t] == pytest.approx(stats.pearsonr(pred[t][ok], label[t][ok])[0], abs=1e-12)
        assert rank_ic[t] == pytest.approx(stats.spearmanr(pred[t][ok], label[t][ok])[0], abs=1e-12)
    assert np.isnan(ic[3]) and np.isnan(ic[7])


def test_rolling_sharpe_matches_empyrical() -> None:
    rng = np.random.default_rng(3)
    r = rng.normal(0.0005, 0.01, 300)
    ours = an.rolling_sharpe(r, 63, 252.0)
    ref = np.asarray(empyrical.roll_sharpe_ratio(pd.Series(r), window=63))
    np.testing.assert_allclose(ours[62:], ref[-len(ours[62:]) :], rtol=1e-10)
    assert np.isnan(ours[:62]).all()


def test_monthly_returns_match_empyrical() -> None:
    rng = np.random.default_rng(5)
    idx = pd.bdate_range("2020-01-01", periods=400)
    r = pd.Series(rng.normal(0, 0.01, len(idx)), index=idx)
    ours = an.monthly_returns([d.strftime("%Y-%m-%d") for d in idx], r.to_numpy())
    ref = empyrical.aggregate_returns(r, "monthly")
    assert [(m["year"], m["month"]) for m in ours] == list(ref.index)
    np.testing.assert_allclose([m["ret"] for m in ours], ref.to_numpy(), rtol=1e-12)


def test_forward_returns_compound_one_bar_returns() -> None:
    r = np.array([[0.1, 0.0], [0.2, np.nan], [-0.1, 0.05], [0.0, 0.01]])
    fwd = an.forward_returns(r, 2)
    assert fwd[0, 0] == pytest.approx(1.1 * 1.2 - 1)
    assert np.isnan(fwd[0, 1]) and np.isnan(fwd[1, 1])
    assert fwd[2, 1] == pytest.approx(1.05 * 1.01 - 1)
    assert np.isnan(fwd[3]).all()


def test_decile_returns_gross_and_net_of_costs() -> None:
    rng = np.random.default_rng(8)
    t, n = 40, 50
    pred = rng.normal(size=(t, n))
    label = 0.01 * pred + rng.normal(size=(t, n)) * 0.001
    gross, net, turnover = an.decile_returns(pred, label, cost_rate=0.002)
    # Gross: the mean over dates of each decile's mean label, deciles by prediction rank.
    expected = np.zeros(10)
    for d in range(10):
        per_date = []
        for row in range(t):
            order = np.argsort(pred[row], kind="stable")
            members = order[d * 5 : (d + 1) * 5]
            per_date.append(label[row, members].mean())
        expected[d] = np.mean(per_date)
    np.testing.assert_allclose(gross, expected, rtol=1e-10)
    assert all(g > nt for g, nt in zip(gross, net, strict=True))
    np.testing.assert_allclose(np.array(gross) - np.array(net), 0.002 * np.array(turnover), rtol=1e-10)
    assert gross[9] > gross[0]  # the predictions carry signal


def test_buy_and_hold_never_rebalances() -> None:
    r = np.array([[0.10, -0.5], [0.10, 1.0]])
    growth = an.buy_and_hold(r)
    # Half in each: 0.5 * 1.21 + 0.5 * (0.5 * 2.0) = 1.105 (a daily-rebalanced mix would give 0.88)
    assert growth[-1] == pytest.approx(0.5 * 1.21 + 0.5 * 1.0)


def test_minmax_downsampling_keeps_the_extremes() -> None:
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=50_000))
    idx = an.minmax_indices(y, 600)
    assert len(idx) <= 600 + 2
    assert idx[0] == 0 and idx[-1] == len(y) - 1
    assert np.argmin(y) in idx and np.argmax(y) in idx
    assert (np.diff(idx) > 0).all()
    short = an.minmax_indices(y[:100], 600)
    assert list(short) == list(range(100))


def test_exposure_and_top_weights() -> None:
    held = np.array([[0.5, -0.5, 0.0, np.nan], [0.4, -0.2, 0.1, 0.0]])
    ex = an.exposure(held)
    np.testing.assert_allclose(ex["gross"], [1.0, 0.7])
    np.testing.assert_allclose(ex["net"], [0.0, 0.3])
    np.testing.assert_allclose(ex["n_positions"], [2, 3])
    top = an.top_weights(held, ["A", "B", "C", "D"], 2)
    assert [s for s, _ in top] == ["A", "B"]
