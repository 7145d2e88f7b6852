"""The retained heap around feature computation: shared by nested and concurrent holders, released after."""

from __future__ import annotations

import threading

import numpy as np

from alphaswarm_common.features import _heap


def test_retained_heap_is_shared_and_released() -> None:
    seen: list[int] = []

    def hold() -> None:
        with _heap.retained_heap():
            seen.append(_heap._holders)
            np.ones(4_000_000).sum()  # a temporary above glibc's default mmap threshold

    threads = [threading.Thread(target=hold) for _ in range(4)]
    with _heap.retained_heap():
        with _heap.retained_heap():
            assert _heap._holders == 2
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert _heap._holders == 1
    assert _heap._holders == 0
    assert len(seen) == 4 and all(n >= 1 for n in seen)


def test_retained_heap_releases_on_error() -> None:
    try:
        with _heap.retained_heap():
            raise ValueError("boom")
    except ValueError:
        pass
    assert _heap._holders == 0
