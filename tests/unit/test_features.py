"""Features: every family against a plain per-symbol pandas computation, causality, ranks, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from alphaswarm_common.config import FeatureSpec
from alphaswarm_common.data import Panel
from alphaswarm_common.errors import DataError, InvalidArgument
from alphaswarm_common.features import (
    FEATURE_FAMILIES,
    FeatureSet,
    compute_features,
    cs_rank,
    feature_names,
)

pytestmark = pytest.mark.unit

WINDOWED = [name for name in FEATURE_FAMILIES if not name.startswith("k")]
WINDOWLESS = ["kmid", "klen", "kup", "klow", "ksft"]
MIN_WINDOW_2 = {"vol", "std", "beta", "rsqr", "resi", "vstd", "wvma", "corr"}


def _random_panel(seed: int = 7, t: int = 240, n: int = 7, gaps: bool = True) -> Panel:
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.01, (t, n)))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.02, (t, n)))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.02, (t, n)))
    volume = rng.lognormal(10.0, 1.0, (t, n))
    if gaps:
        for arr in (close, open_, high, low, volume):
            arr[:30, 1] = np.nan  # listed late
            arr[100:103, 2] = np.nan  # halted
            arr[200:, 3] = np.nan  # delisted
        close[150, 4] = np.nan  # one missing close only
    dates = np.datetime64("2020-01-01") + np.arange(t)
    return Panel(
        dates=dates,
        symbols=tuple(f"S{i}" for i in range(n)),
        close=close,
        open=open_,
        high=high,
        low=low,
        volume=volume,
    )


# --------------------------------------------------------------------------- references


def _polyfit_apply(kind: str, w: int) -> Any:
    x = np.arange(w, dtype=float)

    def fit(a: np.ndarray) -> float:
        slope, intercept = np.polyfit(x, a, 1)
        if kind == "slope":
            return slope
        if kind == "resid":
            return a[-1] - (slope * (w - 1) + intercept)
        return np.corrcoef(x, a)[0, 1] ** 2  # R^2 of a simple regression = squared Pearson r

    return fit


def _reference(name: str, w: int | None, panel: Panel) -> np.ndarray:
    """The family computed symbol by symbol with pandas / numpy / scipy, straight from its definition."""
    out = np.full(panel.shape, np.nan)
    for i in range(panel.n_symbols):
        c = pd.Series(panel.close[:, i])
        o = pd.Series(panel.field("open")[:, i])
        h = pd.Series(panel.field("high")[:, i])
        lo = pd.Series(panel.field("low")[:, i])
        v = pd.Series(panel.field("volume")[:, i])
        d = c.diff()
        dv = v.diff()
        ww = w if w is not None else 1  # window-free families never roll

        def roll(s: pd.Series, ww: int = ww) -> Any:
            return s.rolling(ww)

        if name == "ret":
            r = c / c.shift(w) - 1
        elif name == "mom":
            r = np.log(c / c.shift(w))
        elif name == "vol":
            r = roll(np.log(c / c.shift(1))).std(ddof=1)
        elif name == "ma_ratio":
            r = c / roll(c).mean() - 1
        elif name == "std":
            r = roll(c).std(ddof=1) / c
        elif name == "beta":
            r = roll(c).apply(_polyfit_apply("slope", ww), raw=True) / c
        elif name == "rsqr":
            r = roll(c).apply(_polyfit_apply("rsqr", ww), raw=True)
        elif name == "resi":
            r = roll(c).apply(_polyfit_apply("resid", ww), raw=True) / c
        elif name == "max":
            r = roll(h).max() / c
        elif name == "min":
            r = roll(lo).min() / c
        elif name == "rsv":
            r = (c - roll(lo).min()) / (roll(h).max() - roll(lo).min())
        elif name in ("imax", "imin", "imxd"):
            imax = roll(h).apply(lambda a: np.argmax(a) + 1, raw=True) / ww
            imin = roll(lo).apply(lambda a: np.argmin(a) + 1, raw=True) / ww
            r = {"imax": imax, "imin": imin, "imxd": imax - imin}[name]
        elif name in ("cntp", "cntn", "cntd"):
            up = (d > 0).astype(float).where(d.notna())
            down = (d < 0).astype(float).where(d.notna())
            r = {
                "cntp": roll(up).mean(),
                "cntn": roll(down).mean(),
                "cntd": roll(up).mean() - roll(down).mean(),
            }[name]
        elif name in ("sump", "sumn", "sumd", "vsump", "vsumn", "vsumd"):
            x = dv if name.startswith("v") else d
            total = roll(x.abs()).sum()
            r = {
                "p": roll(x.clip(lower=0)).sum() / total,
                "n": roll((-x).clip(lower=0)).sum() / total,
                "d": roll(x).sum() / total,
            }[name[-1]]
        elif name == "rank":
            r = roll(c).rank(pct=True)
        elif name == "vma":
            r = roll(v).mean() / v
        elif name == "vstd":
            r = roll(v).std(ddof=1) / v
        elif name == "wvma":
            a = (c / c.shift(1) - 1).abs() * v
            r = roll(a).std(ddof=1) / roll(a).mean()
        elif name == "corr":
            r = roll(c).corr(np.log1p(v))
        elif name == "kmid":
            r = (c - o) / o
        elif name == "klen":
            r = (h - lo) / o
        elif name == "kup":
            r = (h - np.maximum(o, c)) / o
        elif name == "klow":
            r = (np.minimum(o, c) - lo) / o
        elif name == "ksft":
            r = (2 * c - h - lo) / o
        else:  # pragma: no cover - every family must have a reference
            raise AssertionError(f"no reference for {name}")
        out[:, i] = r.to_numpy(dtype=float)
    return out


def _close_enough(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected), err_msg=f"{what}: NaN pattern")
    np.testing.assert_allclose(actual, expected, rtol=1e-7, atol=1e-10, err_msg=what)


# --------------------------------------------------------------------------- values


def test_every_family_has_a_reference_and_a_description() -> None:
    assert set(WINDOWED) | set(WINDOWLESS) == set(FEATURE_FAMILIES)
    assert all(isinstance(d, str) and len(d) > 10 for d in FEATURE_FAMILIES.values())


@pytest.mark.parametrize("name", WINDOWED)
def test_windowed_family_matches_pandas(name: str) -> None:
    panel = _random_panel()
    windows = [2, 5, 20] if name in MIN_WINDOW_2 else [1, 5, 20]
    fs = compute_features(panel, [FeatureSpec(name=name, windows=windows)], dtype=np.float64, block_symbols=3)
    assert fs.names == [f"{name}_{w}" for w in windows]
    for w in windows:
        _close_enough(fs.column(f"{name}_{w}"), _reference(name, w, panel), f"{name}_{w}")


@pytest.mark.parametrize("name", WINDOWLESS)
def test_bar_family_matches_pandas(name: str) -> None:
    panel = _random_panel()
    fs = compute_features(panel, [FeatureSpec(name=name)], dtype=np.float64)
    assert fs.names == [name]
    _close_enough(fs.column(name), _reference(name, None, panel), name)


def test_max_min_use_close_without_high_low_and_ties_go_to_the_oldest_bar() -> None:
    full = _random_panel(gaps=False)
    # whole-unit prices: many ties inside every window
    close_only = Panel(dates=full.dates, symbols=full.symbols, close=np.round(full.close))
    specs = [FeatureSpec(name=n, windows=[10]) for n in ("max", "min", "imax", "imin", "rank")]
    fs = compute_features(close_only, specs, dtype=np.float64)
    c = pd.DataFrame(close_only.close)
    np.testing.assert_allclose(fs.column("max_10"), (c.rolling(10).max() / c).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fs.column("min_10"), (c.rolling(10).min() / c).to_numpy(), rtol=1e-12)
    imax = c.rolling(10).apply(lambda a: np.argmax(a) + 1, raw=True) / 10
    imin = c.rolling(10).apply(lambda a: np.argmin(a) + 1, raw=True) / 10
    np.testing.assert_allclose(fs.column("imax_10"), imax.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fs.column("imin_10"), imin.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fs.column("rank_10"), c.rolling(10).rank(pct=True).to_numpy(), rtol=1e-12)


def test_flat_windows_are_exact_or_undefined() -> None:
    rng = np.random.default_rng(3)
    t, n = 120, 4
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0))
    close[40:80, :] = close[40, :]  # 40 identical closes
    volume = rng.lognormal(8.0, 0.5, (t, n))
    volume[50:75, 1] = 1234.0
    panel = Panel(
        dates=np.datetime64("2021-01-01") + np.arange(t),
        symbols=("A", "B", "C", "D"),
        close=close,
        volume=volume,
    )
    specs = [
        FeatureSpec(name=f, windows=[10])
        for f in ("std", "vol", "beta", "resi", "rsqr", "rsv", "sump", "corr", "vstd", "cntp")
    ]
    fs = compute_features(panel, specs, dtype=np.float64)
    flat = slice(51, 80)  # windows of 10 closes (11 for returns) inside the flat stretch
    for name in ("std_10", "vol_10", "beta_10", "resi_10", "cntp_10"):
        assert (fs.column(name)[flat] == 0.0).all(), name
    for name in ("rsqr_10", "rsv_10", "sump_10", "corr_10"):
        assert np.isnan(fs.column(name)[flat]).all(), name
    assert (fs.column("vstd_10")[60:75, 1] == 0.0).all()
    # outside the flat stretch they agree with pandas
    c = pd.DataFrame(close)
    np.testing.assert_allclose(fs.column("std_10")[90:], (c.rolling(10).std() / c).to_numpy()[90:], rtol=1e-7)


def test_precise_variance_on_high_price_levels() -> None:
    # a price near 1e4 moving by cents: E[x^2] - E[x]^2 would lose ~8 digits, the block-centred form keeps them
    rng = np.random.default_rng(11)
    t = 300
    close = 10_000.0 + np.cumsum(rng.normal(0.0, 0.01, (t, 2)), axis=0)
    panel = Panel(dates=np.datetime64("2021-01-01") + np.arange(t), symbols=("A", "B"), close=close)
    fs = compute_features(panel, [FeatureSpec(name="std", windows=[5, 60])], dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(close, 60, axis=0)
    exact = windows.std(axis=-1, ddof=1) / close[59:]
    np.testing.assert_allclose(fs.column("std_60")[59:], exact, rtol=1e-8)


def test_float32_output_is_the_rounded_float64_result() -> None:
    panel = _random_panel()
    specs = [
        FeatureSpec(name="ret", windows=[5]),
        FeatureSpec(name="corr", windows=[10]),
        FeatureSpec(name="kmid"),
    ]
    f32 = compute_features(panel, specs)
    f64 = compute_features(panel, specs, dtype=np.float64)
    assert f32.values.dtype == np.float32 and f64.values.dtype == np.float64
    np.testing.assert_array_equal(f32.values, f64.values.astype(np.float32))
    assert not f32.values.flags.writeable
    assert f32.values.flags.c_contiguous and f32.values.shape == (*panel.shape, 3)


def test_block_size_does_not_change_the_result() -> None:
    panel = _random_panel()
    specs = [
        FeatureSpec(name=n, windows=[3, 17], cs_rank=True) for n in ("vol", "rsqr", "imax", "corr", "sump")
    ]
    reference = compute_features(panel, specs).values
    for block in (1, 2, 5, 100):
        np.testing.assert_array_equal(compute_features(panel, specs, block_symbols=block).values, reference)


def test_short_panel_gives_nan_not_errors() -> None:
    panel = _random_panel(t=8, gaps=False)
    fs = compute_features(
        panel, [FeatureSpec(name="vol", windows=[20]), FeatureSpec(name="ret", windows=[3])]
    )
    assert np.isnan(fs.column("vol_20")).all()
    assert np.isnan(fs.column("ret_3")[:3]).all() and not np.isnan(fs.column("ret_3")[3:]).any()


def test_feature_set_accessors() -> None:
    panel = _random_panel()
    fs = compute_features(panel, [FeatureSpec(name="ret", windows=[1, 5], cs_rank=True)])
    assert isinstance(fs, FeatureSet)
    assert fs.symbols == panel.symbols and (fs.dates == panel.dates).all()
    assert fs.index("ret_5_csrank") == 3
    with pytest.raises(InvalidArgument):
        fs.index("nope")


# --------------------------------------------------------------------------- causality


def _perturb_after(panel: Panel, t: int, seed: int) -> Panel:
    rng = np.random.default_rng(seed)
    fields = {}
    for name in panel.fields:
        arr = np.array(panel.field(name))
        tail = arr[t + 1 :]
        tail *= np.exp(rng.normal(0.0, 0.3, tail.shape))
        tail[rng.random(tail.shape) < 0.05] = np.nan
        fields[name] = arr
    fields["high"] = np.fmax(fields["high"], np.fmax(fields["open"], fields["close"]))
    return Panel(dates=panel.dates, symbols=panel.symbols, **fields)


@pytest.mark.parametrize("name", list(FEATURE_FAMILIES))
def test_features_are_causal(name: str) -> None:
    panel = _random_panel(t=160)
    windows = [] if name in WINDOWLESS else ([2, 7, 30] if name in MIN_WINDOW_2 else [1, 7, 30])
    specs = [FeatureSpec(name=name, windows=windows, cs_rank=True)]
    before = compute_features(panel, specs, block_symbols=3).values
    for k, t in enumerate((0, 37, 64, 101)):
        after = compute_features(_perturb_after(panel, t, seed=k), specs, block_symbols=3).values
        np.testing.assert_array_equal(after[: t + 1], before[: t + 1], err_msg=f"{name}: rows <= {t} changed")
        assert not np.array_equal(after[t + 1 :], before[t + 1 :], equal_nan=True)


# --------------------------------------------------------------------------- ranks


def _scipy_pct_rank(row: np.ndarray) -> np.ndarray:
    out = np.full(row.shape, np.nan)
    ok = np.isfinite(row)
    k = ok.sum()
    if k == 1:
        out[ok] = 0.5
    elif k > 1:
        out[ok] = (stats.rankdata(row[ok], method="average") - 1) / (k - 1)
    return out


def test_cs_rank_matches_scipy_rankdata() -> None:
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=(60, 25)), 1)  # many ties
    x[rng.random(x.shape) < 0.2] = np.nan
    x[3] = np.nan
    x[4, 1:] = np.nan
    x[5] = 2.0
    x[6, 2] = np.inf
    for arr in (x, x.astype(np.float32)):
        ranked = cs_rank(arr)
        expected = np.array([_scipy_pct_rank(row) for row in arr])
        np.testing.assert_allclose(ranked, expected, rtol=0, atol=1e-12)
    assert np.nanmin(cs_rank(x)) == 0.0 and np.nanmax(cs_rank(x)) == 1.0


def test_cs_rank_columns_rank_the_stored_feature() -> None:
    panel = _random_panel(n=9)
    specs = [
        FeatureSpec(name="cntp", windows=[5], cs_rank=True),
        FeatureSpec(name="mom", windows=[3], cs_rank=True),
        FeatureSpec(name="kmid"),
    ]
    fs = compute_features(panel, specs)
    assert fs.names == ["cntp_5", "mom_3", "kmid", "cntp_5_csrank", "mom_3_csrank"]
    assert feature_names(specs) == fs.names
    for base in ("cntp_5", "mom_3"):
        stored = fs.column(base)
        expected = np.array([_scipy_pct_rank(row) for row in stored.astype(np.float64)])
        np.testing.assert_allclose(
            fs.column(f"{base}_csrank"), expected.astype(np.float32), rtol=0, atol=1e-7
        )


# --------------------------------------------------------------------------- errors


def test_unknown_family_lists_the_known_ones() -> None:
    panel = _random_panel()
    with pytest.raises(InvalidArgument) as err:
        compute_features(panel, [FeatureSpec(name="ret", windows=[1]), FeatureSpec(name="nope", windows=[3])])
    assert err.value.field == "dataset_cfg.features[1].name"
    assert "nope" in err.value.message and "ma_ratio" in err.value.message and "vsumd" in err.value.message
    assert not isinstance(err.value, DataError)


@pytest.mark.parametrize(
    ("name", "windows", "absent"), [("vma", [5], "volume"), ("corr", [5], "volume"), ("kmid", [], "open")]
)
def test_family_needing_absent_data_is_a_data_error(name: str, windows: list[int], absent: str) -> None:
    full = _random_panel()
    panel = Panel(dates=full.dates, symbols=full.symbols, close=full.close)
    with pytest.raises(DataError) as err:
        compute_features(
            panel, [FeatureSpec(name="ret", windows=[1]), FeatureSpec(name=name, windows=windows)]
        )
    assert err.value.field == "dataset_cfg.features[1].name"
    assert absent in err.value.message and "absent" in err.value.message


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"name": "ret"}, "dataset_cfg.features[0].windows", "at least one window"),
        ({"name": "vol", "windows": [1, 5]}, "dataset_cfg.features[0].windows", ">= 2"),
        ({"name": "kmid", "windows": [3]}, "dataset_cfg.features[0].windows", "no window"),
    ],
)
def test_bad_windows(spec: dict, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        compute_features(_random_panel(), [spec])
    assert err.value.field == field and words in err.value.message


def test_duplicate_columns_are_rejected() -> None:
    with pytest.raises(InvalidArgument) as err:
        feature_names([{"name": "ret", "windows": [5]}, {"name": "ret", "windows": [1, 5]}])
    assert err.value.field == "dataset_cfg.features[1]" and "ret_5" in err.value.message
    with pytest.raises(InvalidArgument):
        feature_names([])
