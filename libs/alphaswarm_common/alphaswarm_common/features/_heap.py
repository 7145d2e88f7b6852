"""Keep freed heap pages while the features are computed (glibc), then give them back.

Each block of symbols makes NumPy temporaries of a few to tens of MB. glibc serves
allocations that large with fresh `mmap`s (or trims them off the heap when freed), so every
block faults its temporaries' pages in again: about a million page faults and a third of the
CPU time of a 5040 x 3000 panel, all of it system time. While `retained_heap()` is held the
mmap and trim thresholds are raised so freed temporaries are reused by the next block; on exit
they are set back to glibc's static defaults and `malloc_trim(0)` returns the free pages to the
system. Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HELD_BYTES = 1 << 30  # allocations below this come from the heap, and it keeps what is freed
_DEFAULT_BYTES = 128 * 1024  # glibc's static defaults for both thresholds

_lock = threading.Lock()
_holders = 0


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


@contextmanager
def retained_heap() -> Iterator[None]:
    """Raise glibc's mmap and trim thresholds while held (nested and concurrent holders share it)."""
    global _holders
    if _LIBC is None:
        yield
        return
    with _lock:
        _holders += 1
        if _holders == 1:
            _LIBC.mallopt(_M_MMAP_THRESHOLD, _HELD_BYTES)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _HELD_BYTES)
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_BYTES)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_BYTES)
                _LIBC.malloc_trim(0)
