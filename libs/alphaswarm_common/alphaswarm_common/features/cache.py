"""An in-process cache of `compute_features` results, bounded by bytes (least recently used first out).

Training, validation and serving (`modeling.predict_window`, the registry's
`Predict`) all turn a panel into features; on the same data they get the
same `FeatureSet` object back instead of recomputing it.

- Key: `(panel.fingerprint, the canonical feature specs, dtype)`. The
  fingerprint is the SHA-256 of the panel's content (see `Panel`), so a
  changed file, filter, missing-data policy or generator setting is a
  different key, and two configs that yield the same bars share an entry.
  Specs are canonicalised through `FeatureSpec` (a mapping and the model
  spelling the same spec are one key); their order matters (it fixes the
  column order). `block_symbols` changes speed, never values, and is not
  part of the key.
- Bound: the sum of `values.nbytes` of the entries stays at or below
  `max_bytes` (default `DEFAULT_MAX_BYTES`: a quarter of the machine's
  physical memory, between 1 and 16 GiB, e.g. 5.9 GB on a 23 GB machine, so
  that 51 float32 features of 5040 x 3000 bars, 3.1 GB, fit); inserting
  evicts the least recently used entries. A result larger than the bound is returned but not
  kept. `max_bytes=0` disables caching.
- Sharing is safe: a `FeatureSet`'s values are read-only.
- Concurrency: one lock per key in flight, so threads asking for the same
  features wait for one computation instead of running it twice; different
  keys compute in parallel. Errors are not cached.

Pure (stdlib threading + the features module); nothing is written to disk.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alphaswarm_common.config import FeatureSpec
from alphaswarm_common.data.panel import Panel
from alphaswarm_common.features import FeatureSet, compute_features

__all__ = ["DEFAULT_MAX_BYTES", "FEATURE_CACHE", "CacheStats", "FeatureCache", "cached_features"]


def _default_max_bytes() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        physical = 8 << 30
    return int(min(16 << 30, max(1 << 30, physical // 4)))


DEFAULT_MAX_BYTES = _default_max_bytes()

ComputeFn = Callable[..., FeatureSet]
Key = tuple[str, str, str]


@dataclass(frozen=True)
class CacheStats:
    """Counters of a `FeatureCache` since its creation (or `clear(reset_stats=True)`)."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


def spec_key(specs: Sequence[FeatureSpec | Mapping[str, Any]]) -> str | None:
    """The canonical JSON of `specs`, or None when a spec does not validate (the computation will say why)."""
    try:
        canon = [
            (s if isinstance(s, FeatureSpec) else FeatureSpec.model_validate(s)).model_dump(mode="json")
            for s in specs
        ]
    except Exception:
        return None
    return json.dumps(canon, sort_keys=True, separators=(",", ":"))


class FeatureCache:
    """A thread-safe LRU of `FeatureSet`s bounded by the bytes of their values (see the module docstring)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, *, compute: ComputeFn = compute_features) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max_bytes = int(max_bytes)
        self._compute = compute
        self._items: OrderedDict[Key, FeatureSet] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict[Key, threading.Lock] = {}
        self._hits = self._misses = self._evictions = 0

    # ------------------------------------------------------------------ public

    def get(
        self,
        panel: Panel,
        specs: Sequence[FeatureSpec | Mapping[str, Any]],
        *,
        dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32,
        field: str = "dataset_cfg.features",
        block_symbols: int | None = None,
    ) -> FeatureSet:
        """`compute_features(panel, specs, dtype=dtype, ...)`, from the cache when it holds the result."""
        skey = spec_key(specs)
        if skey is None or self._max_bytes == 0:
            return self._compute(panel, specs, dtype=dtype, field=field, block_symbols=block_symbols)
        key: Key = (panel.fingerprint, skey, np.dtype(dtype).str)
        found = self._lookup(key)
        if found is not None:
            return found
        with self._lock:
            gate = self._inflight.setdefault(key, threading.Lock())
        with gate:
            found = self._lookup(key, count_miss=True)
            if found is not None:
                return found
            try:
                fs = self._compute(panel, specs, dtype=dtype, field=field, block_symbols=block_symbols)
                self._store(key, fs)
            finally:
                with self._lock:
                    self._inflight.pop(key, None)
        return fs

    def clear(self, *, reset_stats: bool = False) -> None:
        """Drop every entry (and the counters when `reset_stats`)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0
            if reset_stats:
                self._hits = self._misses = self._evictions = 0

    def resize(self, max_bytes: int) -> None:
        """Change the bound, evicting least recently used entries to fit."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        with self._lock:
            self._max_bytes = int(max_bytes)
            self._evict_locked(0)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._evictions, len(self._items), self._bytes, self._max_bytes
            )

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    # ------------------------------------------------------------------ internals

    def _lookup(self, key: Key, *, count_miss: bool = False) -> FeatureSet | None:
        with self._lock:
            fs = self._items.get(key)
            if fs is not None:
                self._items.move_to_end(key)
                self._hits += 1
            elif count_miss:
                self._misses += 1
            return fs

    def _store(self, key: Key, fs: FeatureSet) -> None:
        size = int(fs.values.nbytes)
        with self._lock:
            if size > self._max_bytes or key in self._items:
                return
            self._evict_locked(size)
            self._items[key] = fs
            self._bytes += size

    def _evict_locked(self, incoming: int) -> None:
        while self._items and self._bytes + incoming > self._max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= int(old.values.nbytes)
            self._evictions += 1


FEATURE_CACHE = FeatureCache()
"""The process-wide cache used by training and serving."""


def cached_features(
    panel: Panel,
    specs: Sequence[FeatureSpec | Mapping[str, Any]],
    *,
    dtype: type[np.floating[Any]] | np.dtype[Any] = np.float32,
    field: str = "dataset_cfg.features",
) -> FeatureSet:
    """`compute_features(panel, specs, dtype=dtype)` through the process-wide `FEATURE_CACHE`."""
    return FEATURE_CACHE.get(panel, specs, dtype=dtype, field=field)
