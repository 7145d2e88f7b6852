"""Features written to a file-backed float32 array (`spill=True`) are bit-identical to the in-memory
result; reading them back in blocks of dates gives the same rows; a block boundary at date t does not
let data after t into any value at or before t (features and the design rows built from them)."""

from __future__ import annotations

import numpy as np
import pytest

from alphaswarm_common.config import FeatureSpec
from alphaswarm_common.data import Panel
from alphaswarm_common.features import FEATURE_FAMILIES, compute_features, store
from alphaswarm_common.labels import make_labels
from alphaswarm_common.modeling import design_matrix
from alphaswarm_trainer import streaming

pytestmark = pytest.mark.unit

SPECS = [
    FeatureSpec(
        name=name, windows=[] if name.startswith("k") else [2, 9], cs_rank=name in ("ret", "vol", "kmid")
    )
    for name in FEATURE_FAMILIES
]


def _panel(seed: int = 5, t: int = 150, n: int = 23) -> Panel:
    rng = np.random.default_rng(seed)
    close = 40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0))
    open_ = close * np.exp(rng.normal(0.0, 0.01, (t, n)))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.02, (t, n)))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.02, (t, n)))
    volume = rng.lognormal(10.0, 1.0, (t, n))
    for arr in (close, open_, high, low, volume):
        arr[:20, 1] = np.nan
        arr[70:74, 2] = np.nan
    return Panel(
        dates=np.datetime64("2020-01-01") + np.arange(t),
        symbols=tuple(f"S{i}" for i in range(n)),
        close=close,
        open=open_,
        high=high,
        low=low,
        volume=volume,
    )


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


@pytest.mark.parametrize("block_symbols", [None, 1, 5])
def test_spilled_features_are_bit_identical_to_the_in_memory_ones(block_symbols: int | None) -> None:
    panel = _panel()
    memory = compute_features(panel, SPECS, spill=False)
    disk = compute_features(panel, SPECS, spill=True, block_symbols=block_symbols)
    assert not memory.on_disk and disk.on_disk
    assert disk.values.dtype == np.float32 and not disk.values.flags.writeable
    assert disk.names == memory.names
    np.testing.assert_array_equal(disk.values, memory.values)
    # blocks of dates read back the same bits, as in-memory copies
    for lo in range(0, len(panel.dates), 17):
        block = disk.rows(lo, lo + 17)
        assert not store.is_disk_backed(block)
        np.testing.assert_array_equal(block, memory.values[lo : lo + 17])


def test_spill_threshold_decides_where_values_live(monkeypatch: pytest.MonkeyPatch) -> None:
    panel = _panel(t=60, n=5)
    monkeypatch.setattr(store, "SPILL_BYTES", 0)
    assert compute_features(panel, SPECS[:2]).on_disk
    monkeypatch.setattr(store, "SPILL_BYTES", 1 << 40)
    assert not compute_features(panel, SPECS[:2]).on_disk


@pytest.mark.parametrize("t", [0, 48, 99])
def test_a_block_boundary_lets_no_future_data_in(t: int) -> None:
    """Blocks of dates end exactly at t: every feature and design row at or before t is unchanged
    when every bar after t is perturbed; labels at or before t are the only values that read the
    future (by definition), and the purge of `segment_rows` keeps them out of earlier segments."""
    panel = _panel()
    later = _perturb_after(panel, t, seed=t)
    before = compute_features(panel, SPECS, spill=True, block_symbols=4)
    after = compute_features(later, SPECS, spill=True, block_symbols=4)
    np.testing.assert_array_equal(after.values[: t + 1], before.values[: t + 1])
    assert not np.array_equal(after.values[t + 1 :], before.values[t + 1 :], equal_nan=True)

    # read in blocks of dates whose boundary falls right after t: the rows through t are the same bits
    step = t + 1
    for lo in range(0, t + 1, step):
        np.testing.assert_array_equal(after.rows(lo, lo + step)[: t + 1 - lo], before.values[lo : t + 1])

    # design rows through t, built block by block, are those of the unperturbed panel when their labels
    # (which read bars t+2 and later by construction) are held fixed
    labels = make_labels(panel.close, 1, 1)
    rows = np.arange(0, t + 1)
    x_before, y_before = streaming.gather(before.values, labels, rows, dates_per_block=7)
    x_after, y_after = streaming.gather(after.values, labels, rows, dates_per_block=7)
    np.testing.assert_array_equal(x_after, x_before)
    np.testing.assert_array_equal(y_after, y_before)
    whole_x, _, _ = design_matrix(before.values[rows], labels[rows])
    np.testing.assert_array_equal(x_before, whole_x)


@pytest.mark.parametrize("spill", [False, True])
def test_thread_count_does_not_change_the_result(spill: bool) -> None:
    panel = _panel(n=31)
    one = compute_features(panel, SPECS, threads=1, block_symbols=4, spill=spill)
    many = compute_features(panel, SPECS, threads=3, block_symbols=4, spill=spill)
    np.testing.assert_array_equal(many.values, one.values)
