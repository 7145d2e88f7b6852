"""`alphaswarm_common.buffers.empty`: NumPy's empty, placed on a huge-page boundary when large."""

from __future__ import annotations

import numpy as np
import pytest

from alphaswarm_common.buffers import empty

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [(1_000_000, np.float64), ((600_000, 2), np.float64), (700_000, "datetime64[ns]"), (5_000_000, np.int8)],
)
def test_large_buffers_start_on_a_2_mib_boundary(shape, dtype):
    out = empty(shape, dtype)
    assert out.shape == ((shape,) if isinstance(shape, int) else shape)
    assert out.dtype == np.dtype(dtype)
    assert out.flags.c_contiguous and out.flags.writeable
    assert out.ctypes.data % (1 << 21) == 0
    out[...] = np.zeros((), dtype=dtype)  # every element is addressable
    assert (out == np.zeros((), dtype=dtype)).all()


def test_small_buffers_are_plain_arrays():
    out = empty(1000)
    assert out.base is None and out.shape == (1000,) and out.dtype == np.float64


def test_buffers_do_not_overlap():
    a, b = empty(1_000_000), empty(1_000_000)
    a.fill(1.0)
    b.fill(2.0)
    assert (a == 1.0).all() and (b == 2.0).all()
    assert not np.shares_memory(a, b)
