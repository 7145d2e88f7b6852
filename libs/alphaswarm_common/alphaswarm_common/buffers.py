"""Large NumPy buffers placed on huge-page boundaries.

A long per-bar array (a million float64 bars is 8 MB) is written once, on
fresh memory, and the kernel's cost of handing out that memory dominates
the arithmetic. NumPy asks for transparent huge pages on allocations of 4 MB
and more (`madvise(MADV_HUGEPAGE)`), but the kernel can back only the 2 MiB
aligned stretches of a region with huge pages; the unaligned head and tail
(up to 4 MiB per array) fault in 4 KiB at a time, about 500 faults per 8 MB
array. `empty` over-allocates by one huge page and returns the aligned view,
so the whole array faults in 2 MiB pages: writing eight fresh 8 MB arrays
takes about 5.5 ms instead of 9.6 ms here (`benchmarks/bench_buffers.py`). The unused head is never touched, so it costs address
space only. Small arrays are plain `np.empty`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["empty"]

_HUGE_PAGE = 1 << 21
_MIN_BYTES = 1 << 22  # NumPy's own threshold for asking for huge pages


def empty(shape: int | tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """`np.empty(shape, dtype)`, C-contiguous, its data starting on a 2 MiB boundary when it is 4 MB or more."""
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(dims, dtype=np.int64))
    nbytes = count * dt.itemsize
    if nbytes < _MIN_BYTES or _HUGE_PAGE % dt.itemsize:
        return np.empty(dims, dtype=dt)
    raw = np.empty(count + _HUGE_PAGE // dt.itemsize, dtype=dt)
    gap = -raw.ctypes.data % _HUGE_PAGE
    offset = gap // dt.itemsize if gap % dt.itemsize == 0 else 0
    return raw[offset : offset + count].reshape(dims)
