"""The planted-alpha generator: determinism, the factor model, the planted IC and the loader path."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.signal import lfilter

from alphaswarm_common.config import DatasetConfig, FeatureSpec, SyntheticConfig
from alphaswarm_common.data import Panel, load_panel, synthetic_truth
from alphaswarm_common.data.synthetic import (
    MARKET_SHARE,
    SECTOR_SHARE,
    expected_rank_ic,
    generate_synthetic,
    planted_coefficient,
    return_correlation,
)
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.features import compute_features
from alphaswarm_common.labels import make_labels
from alphaswarm_common.metrics import ic_series

pytestmark = pytest.mark.unit

SEGMENTS = {"train": ["2010-01-01", "2011-12-31"], "test": ["2012-01-01", "2013-12-31"]}


def _cfg(**synthetic: Any) -> DatasetConfig:
    doc: dict[str, Any] = {"source": "synthetic", "segments": SEGMENTS, "synthetic": synthetic}
    return DatasetConfig.model_validate(doc)


# --------------------------------------------------------------------------- determinism and shape


def test_same_config_same_panel_and_seed_changes_it() -> None:
    cfg = SyntheticConfig(n_dates=300, n_symbols=40, seed=5)
    a, _ = generate_synthetic(cfg)
    b, _ = generate_synthetic(cfg)
    c, _ = generate_synthetic(cfg.model_copy(update={"seed": 6}))
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.close, b.close)
    assert a.fingerprint != c.fingerprint


def test_closes_do_not_depend_on_ohlcv_and_ohlcv_is_consistent() -> None:
    cfg = SyntheticConfig(n_dates=400, n_symbols=300, seed=1)  # two symbol blocks
    full, _ = generate_synthetic(cfg)
    bare, _ = generate_synthetic(cfg.model_copy(update={"ohlcv": False}))
    np.testing.assert_array_equal(full.close, bare.close)
    assert bare.fields == ("close",)
    assert full.fields == ("open", "high", "low", "close", "volume")
    low, high, opened, volume = (full.field(f) for f in ("low", "high", "open", "volume"))
    assert (low <= np.minimum(opened, full.close)).all()
    assert (high >= np.maximum(opened, full.close)).all()
    assert (volume >= 0).all() and np.array_equal(volume, np.round(volume))
    # a fresh Panel re-validates every field (finite, > 0, sorted unique dates)
    Panel(dates=full.dates, symbols=full.symbols, **{f: getattr(full, f) for f in full.fields})


def test_dates_symbols_and_any_size() -> None:
    panel, truth = generate_synthetic(
        SyntheticConfig(n_dates=50, n_symbols=1, start_date=dt.date(2021, 1, 1))
    )
    assert panel.shape == (50, 1)
    assert str(panel.dates[0]) == "2021-01-01"  # a Friday
    assert np.is_busday(panel.dates).all()
    assert panel.symbols == ("SYN0000",)
    assert truth.n_sectors == 1
    big, _ = generate_synthetic(SyntheticConfig(n_dates=60, n_symbols=12000, ohlcv=False))
    assert big.symbols[-1] == "SYN11999" and big.shape == (60, 12000)


def test_volatility_and_factor_structure() -> None:
    cfg = SyntheticConfig(n_dates=3000, n_symbols=60, ic=0.0, annual_volatility=0.3, seed=2)
    panel, truth = generate_synthetic(cfg)
    r = np.diff(np.log(panel.close), axis=0)
    vol = r.std(axis=0, ddof=1).mean() * math.sqrt(252)
    assert vol == pytest.approx(0.3, rel=0.04)
    corr = np.corrcoef(r.T)
    same = truth.sectors[:, None] == truth.sectors[None, :]
    off = ~np.eye(len(truth.sectors), dtype=bool)
    # common market: corr = MARKET_SHARE across sectors, MARKET + SECTOR within one
    assert corr[off & ~same].mean() == pytest.approx(MARKET_SHARE, abs=0.04)
    assert corr[off & same].mean() == pytest.approx(MARKET_SHARE + SECTOR_SHARE, abs=0.04)


# --------------------------------------------------------------------------- the planted relation


def test_return_correlation_matches_a_simulated_autoregression() -> None:
    assert return_correlation(0.2, 1, 1) == pytest.approx(0.2, abs=1e-12)  # h = 1: rho = c exactly
    rng = np.random.default_rng(0)
    n = rng.standard_normal(1_000_000)
    for c, lag, h in [(0.3, 1, 5), (-0.4, 2, 3), (0.5, 0, 4)]:
        phi = np.zeros(lag + h)
        phi[lag:] = c / h
        x = lfilter([1.0], np.concatenate(([1.0], -phi)), n)[1000:]
        label = np.convolve(x, np.ones(h), "valid")  # label[t] = x[t] + ... + x[t+h-1]
        s, fwd = x[: -(lag + h)], label[lag + 1 :][: x.size - lag - h]
        assert return_correlation(c, lag, h) == pytest.approx(np.corrcoef(s, fwd)[0, 1], abs=0.004)


def test_expected_rank_ic_is_morans_formula_without_sectors() -> None:
    for n, rho in [(2, 0.3), (10, 0.1), (50, -0.2), (500, 0.05)]:
        moran = 6 / (math.pi * (n + 1)) * (math.asin(rho) + (n - 2) * math.asin(rho / 2))
        assert expected_rank_ic(rho, [n], sector_share=0.0) == pytest.approx(moran, rel=1e-12)
    assert expected_rank_ic(0.05, [1]) == pytest.approx(6 / math.pi * math.asin(0.025))


def test_expected_rank_ic_with_sectors_matches_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    sectors = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    rho, draws = 0.6, 200_000
    s2, m2 = 0.5, 0.3  # a large sector share makes the sector term visible
    e2 = 1 - m2 - s2

    def component(z_sector: np.ndarray, z_idio: np.ndarray) -> np.ndarray:
        return math.sqrt(s2) * z_sector[:, sectors] + math.sqrt(e2) * z_idio

    zs, zi = rng.standard_normal((draws, 3)), rng.standard_normal((draws, sectors.size))
    ws, wi = rng.standard_normal((draws, 3)), rng.standard_normal((draws, sectors.size))
    x = component(zs, zi)
    y = rho * x + math.sqrt(1 - rho * rho) * component(ws, wi)  # corr rho in every component
    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    sample = (rx * ry).sum(axis=1) / np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    se = sample.std() / math.sqrt(draws)
    sizes = np.bincount(sectors).tolist()
    expected = expected_rank_ic(rho, sizes, sector_share=s2, market_share=m2)
    assert abs(sample.mean() - expected) < 4 * se
    # the sector structure matters at this precision: the iid (Moran) value is off
    assert abs(expected_rank_ic(rho, [12], sector_share=0.0) - sample.mean()) > 6 * se


@pytest.mark.parametrize(("lag", "horizon", "ic"), [(1, 1, 0.08), (0, 1, -0.12), (1, 5, 0.06)])
def test_planted_rank_ic_is_recovered_by_the_true_signal(lag: int, horizon: int, ic: float) -> None:
    cfg = SyntheticConfig(n_dates=2500, n_symbols=80, ic=ic, seed=11)
    panel, truth = generate_synthetic(cfg, execution_lag=lag, horizon=horizon)
    labels = make_labels(panel.close, horizon, lag)
    series = ic_series(truth.signal, labels)
    # non-overlapping labels: every h-th date, so the standard error holds
    sub = series[::horizon]
    sub = sub[~np.isnan(sub)]
    se = sub.std(ddof=1) / math.sqrt(sub.size)
    assert abs(np.nanmean(series) - ic) < 4 * se
    assert abs(sub.mean() - ic) < 4 * se
    # the per-date value is scipy's Spearman, and the signal is the panel's ret_1
    t = 700
    ok = ~np.isnan(labels[t])
    assert series[t] == pytest.approx(stats.spearmanr(truth.signal[t, ok], labels[t, ok])[0], abs=1e-12)
    ret_1 = compute_features(panel, [FeatureSpec(name="ret", windows=[1])], dtype=np.float64).values[..., 0]
    np.testing.assert_allclose(truth.signal[1:], ret_1[1:], rtol=1e-9, atol=1e-15)
    # the Pearson IC is about rho (log vs simple returns, O(1/N))
    pearson = np.nanmean(ic_series(truth.signal, labels, "pearson"))
    assert pearson == pytest.approx(truth.ic_pearson, abs=4 * se + 0.005)


def test_coefficient_solves_the_target_and_unreachable_ic_is_rejected() -> None:
    sizes = [10, 10, 10, 10, 10]
    c, rho = planted_coefficient(0.05, 1, 1, sizes)
    assert c == pytest.approx(rho) and expected_rank_ic(rho, sizes) == pytest.approx(0.05, abs=1e-12)
    assert planted_coefficient(0.0, 1, 5, sizes) == (0.0, 0.0)
    # a negative autoregression over h > 1 bars partly cancels itself: |ic| is bounded
    with pytest.raises(InvalidArgument) as err:
        planted_coefficient(-0.3, 1, 20, sizes)
    assert err.value.field == "dataset_cfg.synthetic.ic"
    with pytest.raises(InvalidArgument):
        load_panel(_cfg(n_dates=100, n_symbols=10, ic=1.0))


def test_pure_noise_has_no_predictability() -> None:
    panel, truth = generate_synthetic(SyntheticConfig(n_dates=1500, n_symbols=60, ic=0.0, seed=4))
    assert truth.coefficient == 0.0
    series = ic_series(truth.signal, make_labels(panel.close, 1, 1))
    valid = series[~np.isnan(series)]
    assert abs(valid.mean() / valid.std(ddof=1) * math.sqrt(valid.size)) < 3


# --------------------------------------------------------------------------- through the loader


def test_load_panel_generates_filters_and_caches() -> None:
    cfg = _cfg(n_dates=400, n_symbols=30, ic=0.05, seed=9)
    a = load_panel(cfg)
    assert load_panel(cfg) is a
    assert a.shape == (400, 30) and a.has("volume")
    direct, _ = generate_synthetic(cfg.synthetic, execution_lag=1, horizon=1)  # type: ignore[arg-type]
    assert a.fingerprint == direct.fingerprint
    other_label = cfg.model_copy(update={"label": cfg.label.model_copy(update={"horizon": 5})})
    assert load_panel(other_label).fingerprint != a.fingerprint  # the alpha is planted for the label
    sub = cfg.model_copy(update={"symbols": ["SYN0003", "SYN0001"], "start_date": a.dates[100].item()})
    panel = load_panel(sub)
    assert panel.symbols == ("SYN0003", "SYN0001") and panel.dates[0] == a.dates[100]
    truth = synthetic_truth(sub)
    assert truth.symbols == panel.symbols
    np.testing.assert_allclose(truth.signal, (a.close[1:] / a.close[:-1] - 1)[99:, [3, 1]], rtol=1e-9)


def test_defaults_and_wrong_source() -> None:
    panel = load_panel(DatasetConfig.model_validate({"source": "synthetic", "segments": SEGMENTS}))
    assert panel.shape == (2520, 50)
    with pytest.raises(InvalidArgument) as err:
        load_panel(DatasetConfig.model_validate({"source": "sp500", "segments": SEGMENTS, "synthetic": {}}))
    assert err.value.field == "dataset_cfg.synthetic"
    with pytest.raises(InvalidArgument):
        synthetic_truth(DatasetConfig.model_validate({"source": "sp500", "segments": SEGMENTS}))
