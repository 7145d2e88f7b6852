"""File-backed feature arrays for panels larger than memory should hold.

`compute_features` writes a large result (more than `SPILL_BYTES`, or when
asked with `spill=True`) into an anonymous temporary file mapped into the
process (`disk_array`) instead of an in-memory array. The array is an
ordinary read-only `numpy.ndarray` `(T, N, F)` whose buffer is the mapping,
so every reader of `FeatureSet.values` works unchanged; the bytes live in the
file (and the kernel's page cache), not in the process's resident memory.

Resident memory: pages of a mapping count in the process's RSS once touched.
The writers and the streaming readers (`FeatureSet.rows`, `iter_rows`) drop
the pages they are done with (`release`, `madvise(MADV_DONTNEED)`), which on
a shared file mapping only unmaps them: written data stays in the file. A
reader that indexes `values` directly (a whole segment at once) maps what it
reads, as an in-memory array would hold it.

The file is created with `tempfile.TemporaryFile` in `feature_dir()`
(`ALPHASWARM_FEATURE_DIR`, else the system temporary directory): it has no
name, and the kernel frees it when the array (its last reference) is
garbage-collected.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any

import numpy as np

__all__ = [
    "SPILL_BYTES",
    "disk_array",
    "feature_dir",
    "is_disk_backed",
    "read_rows",
    "release",
    "release_columns",
    "write_cells",
    "write_rows",
]


def _spill_bytes() -> int:
    raw = os.environ.get("ALPHASWARM_FEATURE_SPILL_BYTES")
    return int(raw) if raw else 1 << 30


SPILL_BYTES = _spill_bytes()
"""Results larger than this (bytes of float values) are written to a file-backed array
(`ALPHASWARM_FEATURE_SPILL_BYTES`, default 1 GiB)."""


def feature_dir() -> str:
    """Directory of the temporary feature files (`ALPHASWARM_FEATURE_DIR`, else the system temp dir)."""
    return os.environ.get("ALPHASWARM_FEATURE_DIR") or tempfile.gettempdir()


def disk_array(shape: tuple[int, ...], dtype: np.dtype[Any]) -> np.ndarray:
    """A writable, zero-filled C-ordered array backed by an anonymous temporary file."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.zeros(shape, dtype=dtype)
    fh = tempfile.TemporaryFile(dir=feature_dir(), prefix="alphaswarm-features-")  # noqa: SIM115 (the mapping owns it)
    try:
        fh.truncate(nbytes)
        mapping = _FileMapping(
            fh.fileno(), nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
        )
    except BaseException:
        fh.close()
        raise
    mapping.file = fh  # read by `read_rows`; closed (and the file freed) with the mapping
    # the array keeps the mapping alive
    return np.ndarray(shape, dtype=dtype, buffer=mapping)


class _FileMapping(mmap.mmap):
    """A shared mapping that holds its (unnamed) file open, for `pread`s that fault no pages in."""

    file: Any


def _mapping(values: np.ndarray) -> mmap.mmap | None:
    base: Any = values
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
        if isinstance(base, memoryview):
            base = base.obj
    return base if isinstance(base, mmap.mmap) else None


def is_disk_backed(values: np.ndarray) -> bool:
    """True when `values` (or the array it views) is a `disk_array`."""
    return _mapping(values) is not None


def release(values: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Drop the pages of rows `start:stop` (first axis) of a `disk_array` from resident memory.

    The data stays in the file; a later read maps it again. No-op for an
    in-memory array. `values` must be the whole array `disk_array` returned.
    """
    mapping = _mapping(values)
    if mapping is None or values.size == 0:
        return
    row = values.nbytes // values.shape[0]
    stop = values.shape[0] if stop is None else stop
    lo = (start * row) // mmap.PAGESIZE * mmap.PAGESIZE
    hi = min(len(mapping), -(-(stop * row) // mmap.PAGESIZE) * mmap.PAGESIZE)
    if hi > lo:
        mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def release_columns(values: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of `values[:, start:stop]` (second axis) of a `disk_array` from resident memory.

    One range per row of the first axis (pages shared with neighbouring
    columns are dropped too: harmless, they are mapped again when touched).
    """
    mapping = _mapping(values)
    if mapping is None or values.size == 0:
        return
    row = values.nbytes // values.shape[0]
    cell = row // values.shape[1]
    page = mmap.PAGESIZE
    for t in range(values.shape[0]):
        lo = (t * row + start * cell) // page * page
        hi = min(len(mapping), -(-(t * row + stop * cell) // page) * page)
        if hi > lo:
            mapping.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def read_rows(values: np.ndarray, start: int, stop: int) -> np.ndarray:
    """An in-memory copy of `values[start:stop]` (first axis) of a `disk_array`, read with `preadv`
    from the file (no page of the mapping is touched, so nothing stays resident); a view of an
    in-memory array. `values` must be the whole array `disk_array` returned."""
    mapping = _mapping(values)
    if mapping is None or not isinstance(mapping, _FileMapping):
        return values[start:stop]
    stop = min(stop, values.shape[0])
    start = min(start, stop)
    out = np.empty((stop - start, *values.shape[1:]), dtype=values.dtype)
    row = values.nbytes // values.shape[0] if values.shape[0] else 0
    view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    done, offset, fd = 0, start * row, mapping.file.fileno()
    while done < view.nbytes:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"short read of the feature file at byte {offset + done}")
        done += got
    return out


def write_rows(values: np.ndarray, start: int, rows: np.ndarray) -> None:
    """`values[start:start + len(rows)] = rows`: written to the file with `pwritev` for a `disk_array`
    (no page of the mapping is touched; the mapping sees the new bytes, they share the page cache),
    assigned for an in-memory array. `values` must be the whole array `disk_array` returned."""
    mapping = _mapping(values)
    stop = start + rows.shape[0]
    if mapping is None or not isinstance(mapping, _FileMapping):
        values[start:stop] = rows
        return
    if rows.shape[1:] != values.shape[1:] or rows.dtype != values.dtype or stop > values.shape[0]:
        raise ValueError(f"rows {rows.shape} {rows.dtype} do not fit rows {start}:{stop} of {values.shape}")
    row = values.nbytes // values.shape[0] if values.shape[0] else 0
    view = memoryview(np.ascontiguousarray(rows).reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    done, offset, fd = 0, start * row, mapping.file.fileno()
    while done < view.nbytes:
        put = os.pwritev(fd, [view[done:]], offset + done)
        if put <= 0:
            raise OSError(f"short write of the feature file at byte {offset + done}")
        done += put


def write_cells(values: np.ndarray, start: int, col: int, cells: np.ndarray) -> None:
    """`values[start + r, col:col + n] = cells[r]` for every `r`, with one `pwrite` per row of the
    first axis for a `disk_array` (no page of the mapping is touched), assigned in memory otherwise.
    `cells` is `(rows, n, *values.shape[2:])`; `values` must be the whole array `disk_array` returned."""
    mapping = _mapping(values)
    rows, n = cells.shape[:2]
    if mapping is None or not isinstance(mapping, _FileMapping):
        values[start : start + rows, col : col + n] = cells
        return
    if cells.shape[2:] != values.shape[2:] or cells.dtype != values.dtype or start + rows > values.shape[0]:
        raise ValueError(f"cells {cells.shape} {cells.dtype} do not fit rows from {start} of {values.shape}")
    row = values.nbytes // values.shape[0]
    cell = row // values.shape[1]
    flat = np.ascontiguousarray(cells).reshape(rows, -1).view(np.uint8)
    fd = mapping.file.fileno()
    for r in range(rows):
        view = memoryview(flat[r])  # type: ignore[arg-type]
        done, offset = 0, (start + r) * row + col * cell
        while done < view.nbytes:
            put = os.pwrite(fd, view[done:], offset + done)
            if put <= 0:
                raise OSError(f"short write of the feature file at byte {offset + done}")
            done += put
