"""The missing-data policy (`dataset_cfg.missing`): pandas references, the loader's order, causality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from alphaswarm_common.config import DatasetConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import DataError, InvalidArgument

pytestmark = pytest.mark.unit

SEGMENTS = {"train": ["2020-01-01", "2020-06-30"], "test": ["2020-07-01", "2020-12-31"]}


def _gappy(t: int = 120, n: int = 6, seed: int = 0, ohlcv: bool = True) -> Panel:
    rng = np.random.default_rng(seed)
    close = 30.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
    close[rng.random((t, n)) < 0.15] = np.nan  # scattered gaps of all lengths
    close[:25, 1] = np.nan  # listed late
    close[90:, 2] = np.nan  # delisted
    close[40:47, 3] = np.nan  # a long halt
    fields: dict[str, Any] = {"close": close}
    if ohlcv:
        fields["open"] = close * 1.001
        fields["high"] = close * 1.01
        fields["low"] = close * 0.99
        fields["volume"] = np.where(np.isnan(close), np.nan, rng.lognormal(10, 1, (t, n)))
    dates = pd.bdate_range("2020-01-01", periods=t).to_numpy().astype("datetime64[D]")
    return Panel(dates=dates, symbols=tuple(f"S{i}" for i in range(n)), **fields)


def _cfg(source: Path, **kw: Any) -> DatasetConfig:
    return DatasetConfig.model_validate({"source": str(source), "segments": SEGMENTS, **kw})


def _write(panel: Panel, path: Path) -> Path:
    panel.to_frame().to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- Panel methods vs pandas


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_ffill_matches_pandas_and_fills_flat_bars(limit: int) -> None:
    panel = _gappy()
    filled = panel.ffill(limit)
    ref = panel.to_wide("close").ffill(limit=limit).to_numpy()
    np.testing.assert_array_equal(filled.close, ref)
    new = np.isnan(panel.close) & ~np.isnan(filled.close)
    assert new.any()
    for name in ("open", "high", "low"):
        np.testing.assert_array_equal(filled.field(name)[new], filled.close[new])
        old = ~np.isnan(panel.close)
        np.testing.assert_array_equal(filled.field(name)[old], panel.field(name)[old])
    assert (filled.field("volume")[new] == 0).all()
    assert panel.ffill(0) is panel


@pytest.mark.parametrize("m", [2, 10, 30])
def test_mask_history_matches_pandas(m: int) -> None:
    panel = _gappy()
    masked = panel.mask_history(m)
    wide = panel.to_wide("close")
    ref = wide.where(wide.notna().cumsum() >= m).to_numpy()
    np.testing.assert_array_equal(masked.close, ref)
    hidden = np.isnan(ref) & ~np.isnan(panel.close)
    for name in ("open", "high", "low", "volume"):
        assert np.isnan(masked.field(name)[hidden]).all()
    assert panel.mask_history(1) is panel
    with pytest.raises(InvalidArgument):
        panel.mask_history(-1)


def test_complete_symbols() -> None:
    panel = _gappy(seed=1)
    ref = [s for s in panel.symbols if panel.to_wide("close")[s].notna().all()]
    assert list(panel.complete_symbols()) == ref


# --------------------------------------------------------------------------- the loader


def test_loader_applies_the_policy_in_order(tmp_path: Path) -> None:
    panel = _gappy()
    path = _write(panel, tmp_path / "gappy.csv")
    start = panel.dates[60]
    cfg = _cfg(path, start_date=str(start), missing={"min_history": 20, "ffill_limit": 3})
    loaded = load_panel(cfg)
    # reference: history before start_date counts, fills may come from before start_date
    wide = panel.to_wide("close")
    ref = wide.where(wide.notna().cumsum() >= 20).ffill(limit=3).loc[pd.Timestamp(start) :]
    ref = ref.dropna(axis=1, how="all").dropna(axis=0, how="all")
    np.testing.assert_array_equal(loaded.close, ref.to_numpy())
    assert list(loaded.symbols) == list(ref.columns)
    assert load_panel(cfg) is loaded
    plain = load_panel(_cfg(path, start_date=str(start)))
    assert plain.fingerprint != loaded.fingerprint  # the policy is part of the cache key and the content


def test_drop_incomplete_symbols_uses_the_whole_range(tmp_path: Path) -> None:
    panel = _gappy(seed=2)
    path = _write(panel, tmp_path / "gappy.csv")
    loaded = load_panel(_cfg(path, missing={"ffill_limit": 10, "drop_incomplete_symbols": True}))
    filled = panel.ffill(10)
    assert loaded.symbols == filled.complete_symbols()
    assert "S2" not in loaded.symbols  # delisted at row 90: dropped on every date, also before (look-ahead)
    assert not np.isnan(loaded.close).any()
    with pytest.raises(DataError) as err:
        load_panel(_cfg(path, missing={"drop_incomplete_symbols": True}))
    assert err.value.field == "dataset_cfg.missing.drop_incomplete_symbols"


def test_named_symbol_fully_masked_is_an_error(tmp_path: Path) -> None:
    panel = _gappy()
    path = _write(panel, tmp_path / "gappy.csv")
    with pytest.raises(DataError) as err:
        load_panel(
            _cfg(path, symbols=["S0", "S1"], end_date=str(panel.dates[30]), missing={"min_history": 20})
        )
    assert err.value.field == "dataset_cfg.symbols"
    assert "min_history" in err.value.message


# --------------------------------------------------------------------------- causality


def _perturb_after(panel: Panel, t: int, seed: int) -> Panel:
    """Change every field after row t, list a new symbol and delist another after t."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name in panel.fields:
        arr = np.array(panel.field(name), copy=True)
        arr[t + 1 :] *= rng.uniform(0.5, 1.5, arr[t + 1 :].shape)
        out[name] = arr
    out["close"][t + 1 :, 0] = np.nan  # symbol 0 leaves the universe after t
    out["close"][t + 1 :, 1] = 50.0  # symbol 1 exists again
    out["close"][t + 1 :: 3, 4] = np.nan  # new gaps after t
    return Panel(dates=panel.dates, symbols=panel.symbols, **out)


@pytest.mark.parametrize("t", [10, 44, 89])
def test_causal_steps_never_read_the_future(t: int) -> None:
    panel = _gappy()
    for seed in range(3):
        other = _perturb_after(panel, t, seed)
        for policy in (
            lambda p: p.mask_history(15),
            lambda p: p.ffill(3),
            lambda p: p.mask_history(7).ffill(6),
        ):
            a, b = policy(panel), policy(other)
            for name in panel.fields:
                np.testing.assert_array_equal(a.field(name)[: t + 1], b.field(name)[: t + 1])


def test_drop_incomplete_is_the_documented_look_ahead(tmp_path: Path) -> None:
    panel = _gappy(seed=3)
    t = 60
    other = _perturb_after(panel, t, 0)
    kw = {"missing": {"ffill_limit": 10, "drop_incomplete_symbols": True}}
    a = load_panel(_cfg(_write(panel, tmp_path / "a.csv"), **kw))
    b = load_panel(_cfg(_write(other, tmp_path / "b.csv"), **kw))
    assert "S0" in a.symbols and "S0" not in b.symbols  # a delisting after t removes S0 before t too
