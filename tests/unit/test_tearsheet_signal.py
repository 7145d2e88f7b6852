"""The tearsheet's one-sort signal diagnostics equal the per-date references: scipy's Spearman and Pearson
per date, and `ic_series` / `ic_decay` value for value, on data with missing values and ties."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from alphaswarm_common.evaluation import forward_returns, ic_decay, qcut_buckets
from alphaswarm_common.metrics import ic_series
from alphaswarm_common.reporting import alpha_diagnostics
from alphaswarm_common.reporting.html import thin
from alphaswarm_common.reporting.signal import signal_ics

pytestmark = pytest.mark.unit


def _tied_market(t: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
    close = np.round(close, 1)  # rounded prices: tied forward returns
    close[rng.random((t, n)) < 0.08] = np.nan
    close[:, 3] = 20.0  # a constant symbol: a zero return on every date
    signal = np.round(rng.normal(0, 1, (t, n)), 1)  # one decimal: many ties per date
    signal[rng.random((t, n)) < 0.1] = np.nan
    signal[7] = 1.5  # a constant date: skipped
    signal[9, 2:] = np.nan  # two symbols only
    signal[11, 1:] = np.nan  # one symbol: skipped
    signal[13] = np.nan  # nothing
    return close, signal


@pytest.mark.parametrize(("t", "n", "lag", "seed"), [(90, 40, 1, 0), (60, 13, 0, 1), (70, 257, 2, 2)])
def test_rank_ic_per_date_equals_scipy_spearmanr_with_nans_and_ties(
    t: int, n: int, lag: int, seed: int
) -> None:
    close, signal = _tied_market(t, n, seed)
    found = signal_ics(signal, close, execution_lag=lag, horizons=(1, 5, 10, 20), quantiles=10)
    ic, rank = found.ic, found.rank_ic
    assert set(rank) == {1, 5, 10, 20}
    for h, series in rank.items():
        fwd = forward_returns(close, h, lag)
        # Value for value the per-date reference the trainer uses (same ranks, same sums).
        np.testing.assert_array_equal(series, ic_series(signal, fwd, "spearman"))
        checked = tied = 0
        for d in range(t):
            ok = np.isfinite(signal[d]) & np.isfinite(fwd[d])
            x, y = signal[d, ok], fwd[d, ok]
            if ok.sum() < 2 or x.min() == x.max() or y.min() == y.max():
                assert np.isnan(series[d]), (h, d)
                continue
            assert series[d] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12), (h, d)
            tied += int(np.unique(x).size < x.size)
            checked += 1
        assert checked > t // 2 and tied > t // 4  # most dates compared, many of them with tied signals
    fwd1 = forward_returns(close, 1, lag)
    np.testing.assert_array_equal(ic, ic_series(signal, fwd1, "pearson"))
    for d in (0, 20, 40):
        ok = np.isfinite(signal[d]) & np.isfinite(fwd1[d])
        assert ic[d] == pytest.approx(stats.pearsonr(signal[d, ok], fwd1[d, ok])[0], abs=1e-12)
    for d in (7, 11, 13):
        assert np.isnan(rank[1][d]) and np.isnan(ic[d])
    # The deciles from the same sort are `qcut_buckets`' (pandas.qcut's) buckets, skipped dates included.
    both = np.isfinite(signal) & np.isfinite(fwd1)
    reference, skipped = qcut_buckets(signal, 10, mask=both)
    assert found.buckets is not None and skipped.any()
    np.testing.assert_array_equal(found.buckets, np.where(np.isnan(reference), -1, reference - 1))


def test_chunked_and_threaded_passes_give_the_same_series(monkeypatch: pytest.MonkeyPatch) -> None:
    close, signal = _tied_market(120, 50, 4)
    whole = signal_ics(signal, close, execution_lag=1, horizons=(1, 5), quantiles=5, n_threads=1)
    import alphaswarm_common.metrics.ml as ml

    monkeypatch.setattr(ml, "_CHUNK_CELLS", 50 * 7)  # chunks of 7 rows
    monkeypatch.setattr(ml, "_PARALLEL_MIN_CELLS", 1)
    chunked = signal_ics(signal, close, execution_lag=1, horizons=(1, 5), quantiles=5, n_threads=3)
    np.testing.assert_array_equal(whole.ic, chunked.ic)
    np.testing.assert_array_equal(whole.buckets, chunked.buckets)
    for h in (1, 5):
        np.testing.assert_array_equal(whole.rank_ic[h], chunked.rank_ic[h])


def test_the_decay_is_the_trainers_ic_decay() -> None:
    close, signal = _tied_market(100, 30, 5)
    diag = alpha_diagnostics(signal, close, execution_lag=1, fees=0.001, slippage=0.0)
    for h, (value, _) in ic_decay(signal, close, execution_lag=1).items():
        assert diag.decay[h] == value, h


def test_charts_keep_every_extreme_of_a_long_series() -> None:
    rng = np.random.default_rng(0)
    equity = 100 * np.cumprod(1 + rng.normal(0, 0.01, 5040))
    drawdown = equity / np.maximum.accumulate(equity) - 1
    drawdown[100:140] = np.nan
    idx = thin(equity.size, equity, drawdown, buckets=300)
    assert idx.size <= 4 * 300 + 2 and idx[0] == 0 and idx[-1] == equity.size - 1
    assert (np.diff(idx) > 0).all()
    assert equity[idx].max() == equity.max() and equity[idx].min() == equity.min()
    assert np.nanmin(drawdown[idx]) == np.nanmin(drawdown)
    np.testing.assert_array_equal(thin(500, equity[:500], buckets=300), np.arange(500))


def test_buy_and_hold_in_blocks_of_rows_carries_closes_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    import pandas as pd

    from alphaswarm_common.reporting import buy_and_hold_equity
    from alphaswarm_common.reporting import data as reporting_data

    rng = np.random.default_rng(9)
    close = 30 * np.exp(np.cumsum(rng.normal(0, 0.02, (50, 6)), axis=0))
    close[rng.random(close.shape) < 0.2] = np.nan
    close[5:30, 1] = np.nan  # a gap across several blocks
    close[0] = np.where(np.isnan(close[0]), 30.0, close[0])
    close[0, 4] = np.nan  # not priced on the first date: not held
    whole = buy_and_hold_equity(close, 1000.0)
    monkeypatch.setattr(reporting_data, "_BLOCK_CELLS", 7)  # blocks of one row
    np.testing.assert_array_equal(buy_and_hold_equity(close, 1000.0), whole)
    monkeypatch.setattr(reporting_data, "_BLOCK_CELLS", 5 * 4)  # blocks of four rows
    np.testing.assert_array_equal(buy_and_hold_equity(close, 1000.0), whole)
    frame = pd.DataFrame(close).drop(columns=[4]).ffill()
    np.testing.assert_allclose(whole, 1000.0 * (frame / frame.iloc[0]).mean(axis=1).to_numpy(), rtol=1e-12)


def test_decile_returns_in_blocks_of_rows_equal_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from alphaswarm_common.reporting import data as reporting_data

    close, signal = _tied_market(80, 40, 6)
    fwd1 = forward_returns(close, 1, 1)
    members = signal_ics(signal, close, execution_lag=1, horizons=(1,), quantiles=10).buckets
    whole = reporting_data._decile_returns(signal, fwd1, 0.002)  # qcut_buckets' members, one block
    assert np.isfinite(whole[0]).all()
    for cells in (40, 40 * 3, 40 * 7):  # blocks of 1, 3 and 7 rows
        monkeypatch.setattr(reporting_data, "_BLOCK_CELLS", cells)
        for got in (
            reporting_data._decile_returns(signal, fwd1, 0.002, members),
            reporting_data._decile_returns(signal, lambda a, c: fwd1[a:c], 0.002, members),
        ):
            for left, right in zip(got, whole, strict=True):
                np.testing.assert_array_equal(left, right)
