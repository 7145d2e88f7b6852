"""The compiled feature loops give the bits of the NumPy steps they replace: the block prefix sums of
the window kernels, the cross-sectional ranks (ties, NaN, -0.0, lone values), the staged copy into the
output; and `compute_features` with them equals the NumPy rank path and the float64 result rounded."""

from __future__ import annotations

import numpy as np
import pytest

from alphaswarm_common.config import FeatureSpec
from alphaswarm_common.data import Panel
from alphaswarm_common.features import _compiled, _kernels, compute_features, cs_rank, store

pytestmark = pytest.mark.unit


def _numpy_window_sums(z: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The whole-matrix NumPy formulation of the block prefix sums (the reference)."""
    t_rows, n = z.shape
    nb = -(-t_rows // w)
    upto = np.empty((nb, w, n), dtype=np.float64)
    flat_upto = upto.reshape(nb * w, n)
    flat_upto[:t_rows] = z
    flat_upto[t_rows:] = 0.0
    for p in range(1, w):
        upto[:, p] += upto[:, p - 1]
    buf = np.empty((nb * w + 1, n), dtype=np.float64)
    buf[0] = 0.0
    np.subtract(upto[:, -1:, :], upto, out=buf[1:].reshape(nb, w, n))
    return flat_upto[w - 1 : t_rows], buf[: t_rows - w + 1]


@pytest.mark.parametrize("w", [1, 2, 7, 20, 64, 65])
def test_window_sums_are_the_numpy_prefix_sums_bit_for_bit(w: int) -> None:
    rng = np.random.default_rng(w)
    z = rng.normal(100.0, 30.0, (65, 9))
    z[:, 3] = -0.0
    z[10:20, 4] = 1e-300
    upto, buf = _compiled.window_sums(z, w)
    head, tail = _numpy_window_sums(z, w)
    t_rows = z.shape[0]
    for got, expected in ((upto[w - 1 : t_rows], head), (buf[: t_rows - w + 1], tail)):
        assert got.shape == expected.shape
        assert np.array_equal(got.view(np.uint64), expected.view(np.uint64))


def _ranked(x: np.ndarray) -> np.ndarray:
    """The compiled ranks of every row of `x` (float32, rows x symbols), through a `(1, N, rows)` output."""
    rows, n = x.shape
    values = np.full((1, n, 2 * rows), 7.0, dtype=np.float32)
    values[0, :, :rows] = x.T
    _compiled.rank_rows(values, values.view(np.uint32), 0, 1, np.arange(rows, dtype=np.intp), rows)
    return np.asarray(values[0, :, rows:].T)


def test_compiled_ranks_equal_cs_rank_with_ties_nan_and_signed_zeros() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 301)).astype(np.float32)
    x[0, :80] = np.round(x[0, :80], 1)  # many tie groups
    x[1] = 3.0  # one tie group over the whole row
    x[2] = np.nan  # nothing to rank
    x[3] = np.nan
    x[3, 17] = -1.0  # a lone value: 0.5
    x[4, ::2] = -0.0  # -0.0 ties with 0.0
    x[4, 1::2] = 0.0
    x[4, 5] = -1e-30
    x[5, rng.random(301) < 0.3] = np.nan
    x[5, :40] = np.round(x[5, :40])
    x[6, :3] = [np.inf, -np.inf, np.nan]  # non-finite cells are missing
    x[7, :2] = [np.finfo(np.float32).max, -np.finfo(np.float32).max]
    x[8, :50] = np.finfo(np.float32).tiny * rng.integers(-3, 4, 50)  # subnormal-adjacent ties
    x[9, :2] = [1.0, 1.0]
    x[9, 2:] = np.nan  # two tied values: both 0.5
    expected = cs_rank(x).astype(np.float32)
    got = _ranked(x)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert got[3, 17] == 0.5 and np.isnan(got[3, :17]).all()
    assert (got[1] == np.float32(0.5)).all() and (got[9, :2] == 0.5).all()
    assert np.unique(got[4, :301:2]).size == 1


def test_compiled_ranks_on_random_rows_with_ties() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        x = rng.integers(-20, 20, (40, 97)).astype(np.float32) / 4
        x[rng.random(x.shape) < 0.2] = np.nan
        expected = cs_rank(x).astype(np.float32)
        assert np.array_equal(_ranked(x).view(np.uint32), expected.view(np.uint32))


def test_staged_copies_write_the_transposed_block_with_nan_for_non_finite() -> None:
    rng = np.random.default_rng(2)
    part = rng.normal(size=(3, 11, 5)).astype(np.float32)
    part[0, 2, 1] = np.inf
    part[2, 5, 4] = -np.inf
    values = np.zeros((11, 8, 4), dtype=np.float32)
    _compiled.scatter_columns(part, values, 2, 1)
    expected = part.transpose(1, 2, 0).copy()
    expected[~np.isfinite(expected)] = np.nan
    np.testing.assert_array_equal(values[:, 2:7, 1:4], expected)
    assert (values[:, :2] == 0).all() and (values[:, 7:] == 0).all() and (values[:, :, 0] == 0).all()
    rows = np.zeros((4, 5, 3), dtype=np.float32)
    _compiled.pack_rows(part, 6, 10, rows)
    np.testing.assert_array_equal(rows, expected[6:10])


def test_cells_and_rows_written_to_a_spilled_array_read_back() -> None:
    values = store.disk_array((6, 5, 3), np.dtype(np.float32))
    cells = np.arange(4 * 2 * 3, dtype=np.float32).reshape(4, 2, 3)
    store.write_cells(values, 1, 2, cells)
    np.testing.assert_array_equal(values[1:5, 2:4], cells)
    assert (values[0] == 0).all() and (values[5] == 0).all() and (values[:, :2] == 0).all()
    rows = np.full((2, 5, 3), 9.0, dtype=np.float32)
    store.write_rows(values, 4, rows)
    np.testing.assert_array_equal(store.read_rows(values, 4, 6), rows)
    with pytest.raises(ValueError, match="do not fit"):
        store.write_rows(values, 5, rows)
    memory = np.zeros((6, 5, 3), dtype=np.float32)
    store.write_cells(memory, 1, 2, cells)
    np.testing.assert_array_equal(memory[1:5, 2:4], cells)


def _tied_panel(t: int = 160, n: int = 37) -> Panel:
    rng = np.random.default_rng(9)
    close = np.round(40.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, (t, n)), axis=0)), 1)  # ties
    close[:, 5] = close[:, 6]  # identical symbols
    close[30:60, 7] = close[30, 7]  # a flat stretch
    open_ = np.round(close * np.exp(rng.normal(0.0, 0.01, (t, n))), 1)
    high = np.maximum(open_, close) + 0.1
    low = np.minimum(open_, close) - 0.1
    volume = np.round(rng.lognormal(10.0, 1.0, (t, n)), -3)
    for arr in (close, open_, high, low, volume):
        arr[:25, 1] = np.nan
        arr[90:95, 2] = np.nan
        arr[120:, 3] = np.nan
    return Panel(
        dates=np.datetime64("2021-01-01") + np.arange(t),
        symbols=tuple(f"S{i}" for i in range(n)),
        close=close,
        open=open_,
        high=high,
        low=low,
        volume=volume,
    )


SPECS = [
    FeatureSpec(name="ret", windows=[1, 5], cs_rank=True),
    FeatureSpec(name="vol", windows=[10], cs_rank=True),
    FeatureSpec(name="rsv", windows=[10], cs_rank=True),
    FeatureSpec(name="cntp", windows=[5], cs_rank=True),
    FeatureSpec(name="corr", windows=[10]),
    FeatureSpec(name="kmid", cs_rank=True),
]


@pytest.mark.parametrize("spill", [False, True])
def test_rank_columns_equal_cs_rank_of_the_stored_columns(spill: bool) -> None:
    """The compiled rank pass (in memory, or read and written back through the file when spilled)
    gives `cs_rank` of the stored float32 base columns, bit for bit, ties and NaN included."""
    fs = compute_features(_tied_panel(), SPECS, spill=spill, block_symbols=8, threads=2)
    assert fs.on_disk == spill
    values = np.asarray(fs.values)
    n_rank = sum(name.endswith("_csrank") for name in fs.names)
    assert n_rank == 6
    for name in fs.names[-n_rank:]:
        base = values[:, :, fs.index(name.removesuffix("_csrank"))]
        expected = cs_rank(base).astype(np.float32)
        got = values[:, :, fs.index(name)]
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32)), name
    ties = values[:, :, fs.index("ret_1_csrank")]
    assert np.isnan(ties).any() and (ties == 0.5).any()


def test_float32_features_are_the_rounded_float64_features_on_a_tied_panel() -> None:
    panel = _tied_panel()
    single = np.asarray(compute_features(panel, SPECS, spill=True).values)
    double = np.asarray(compute_features(panel, SPECS, dtype=np.float64).values)
    n_base = 7
    rounded = double[:, :, :n_base].astype(np.float32)
    assert np.array_equal(single[:, :, :n_base].view(np.uint32), rounded.view(np.uint32))


def test_warm_up_compiles_every_kernel() -> None:
    done = _compiled.warm_up()
    assert done["runs"] >= 6
    for kernel in (_compiled.window_sums, _compiled.scatter_columns, _compiled.pack_rows, _compiled.ts_rank):
        assert len(kernel.signatures) >= 1
    assert len(_compiled.rank_rows.signatures) >= 1 and len(_compiled.rolling_extreme.signatures) >= 1


def _numpy_ts_rank(x: np.ndarray, w: int) -> np.ndarray:
    """`w` whole-matrix comparisons (the reference of the compiled loop)."""
    t_rows = x.shape[0]
    out = np.full(x.shape, np.nan, dtype=np.float64)
    if t_rows < w:
        return out
    cur = x[w - 1 :]
    below = np.zeros(cur.shape, dtype=np.float64)
    equal = np.zeros(cur.shape, dtype=np.float64)
    for k in range(1, w):
        prev = x[w - 1 - k : t_rows - k]
        below += prev < cur
        equal += prev == cur
    out[w - 1 :] = (below + 1.0 + equal * 0.5) / w
    out[~_kernels.valid_windows(np.isnan(x), w)] = np.nan
    return out


def _series_with_ties(t: int = 90, n: int = 11) -> np.ndarray:
    rng = np.random.default_rng(6)
    x = np.round(rng.normal(0.0, 1.0, (t, n)), 1)  # many ties
    x[:, 0] = 2.0  # constant
    x[::3, 1] = -0.0
    x[1::3, 1] = 0.0
    x[40:45, 2] = np.nan
    x[:15, 3] = np.nan
    x[80:, 4] = np.nan
    return x


@pytest.mark.parametrize("w", [1, 2, 5, 20, 64, 90, 91])
def test_compiled_window_scans_equal_the_numpy_kernels(w: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _series_with_ties()
    scanned = {kind: _kernels.rolling_extreme(x, w, kind, with_position=True) for kind in ("max", "min")}
    ranks = _kernels.ts_rank(x, w)
    monkeypatch.setattr(_kernels, "_SCAN_WINDOW", 0)  # the sparse-table doubling steps
    for kind in ("max", "min"):
        doubled = _kernels.rolling_extreme(x, w, kind, with_position=True)
        # equal values and NaN cells; the sign of a zero extreme over -0.0 and 0.0 is not specified
        # (NumPy's maximum returns either one, depending on its SIMD path)
        assert np.array_equal(scanned[kind][0], doubled[0], equal_nan=True), kind
        nonzero = scanned[kind][0] != 0
        assert np.array_equal(scanned[kind][0][nonzero].view(np.uint64), doubled[0][nonzero].view(np.uint64))
        assert np.array_equal(scanned[kind][1], doubled[1]), kind
        assert _kernels.rolling_extreme(x, w, kind)[1] is None
    assert np.array_equal(ranks.view(np.uint64), _numpy_ts_rank(x, w).view(np.uint64))
    if w <= x.shape[0]:
        assert np.isfinite(ranks).any() and (scanned["max"][1] == 0).any()
