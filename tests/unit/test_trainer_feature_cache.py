"""The in-process feature cache: keys, byte-bounded LRU, concurrency, and its use by training and serving."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from alphaswarm_common.config import DatasetConfig, FeatureSpec, ModelConfig
from alphaswarm_common.data import Panel, load_panel
from alphaswarm_common.errors import InvalidArgument
from alphaswarm_common.features import FeatureSet, compute_features
from alphaswarm_common.features.cache import FEATURE_CACHE, FeatureCache
from alphaswarm_common.modeling import predict_rows, predict_window
from alphaswarm_trainer.training import train

pytestmark = pytest.mark.unit

SPECS = [FeatureSpec(name="ret", windows=[1, 5], cs_rank=True), FeatureSpec(name="vol", windows=[10])]


def _panel(seed: int = 0, t: int = 80, n: int = 7) -> Panel:
    rng = np.random.default_rng(seed)
    close = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, (t, n)), axis=0))
    dates = np.busday_offset(np.datetime64("2021-01-04"), np.arange(t)).astype("datetime64[D]")
    return Panel(dates=dates, symbols=tuple(f"S{i}" for i in range(n)), close=close)


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, panel: Panel, specs: Any, **kw: Any) -> FeatureSet:
        with self.lock:
            self.calls += 1
        time.sleep(0.02)
        return compute_features(panel, specs, **kw)


def test_hits_return_the_same_object_and_keys_separate_inputs() -> None:
    compute = Counting()
    cache = FeatureCache(compute=compute)
    panel = _panel()
    a = cache.get(panel, SPECS)
    assert cache.get(panel, SPECS) is a
    assert cache.get(panel, [s.model_dump() for s in SPECS]) is a  # mappings canonicalise to the same key
    same_content = Panel(dates=panel.dates, symbols=panel.symbols, close=np.array(panel.close))
    assert cache.get(same_content, SPECS) is a  # keyed by content, not identity
    assert compute.calls == 1
    b = cache.get(panel, SPECS, dtype=np.float64)
    c = cache.get(panel, SPECS[::-1])
    d = cache.get(_panel(seed=1), SPECS)
    assert compute.calls == 4 and len({id(x) for x in (a, b, c, d)}) == 4
    np.testing.assert_array_equal(a.values, compute_features(panel, SPECS).values)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (3, 4, 4)


def test_lru_by_bytes() -> None:
    compute = Counting()
    panel = _panel()
    size = compute_features(panel, SPECS).values.nbytes
    cache = FeatureCache(max_bytes=2 * size, compute=compute)
    p0, p1, p2 = _panel(0), _panel(1), _panel(2)
    cache.get(p0, SPECS)
    cache.get(p1, SPECS)
    cache.get(p0, SPECS)  # p0 is now the most recent
    cache.get(p2, SPECS)  # evicts p1
    assert compute.calls == 3 and cache.stats().evictions == 1 and cache.stats().bytes == 2 * size
    cache.get(p0, SPECS)
    assert compute.calls == 3
    cache.get(p1, SPECS)
    assert compute.calls == 4
    cache.resize(size)
    assert len(cache) == 1
    tiny = FeatureCache(max_bytes=size - 1, compute=compute)
    tiny.get(p0, SPECS)
    tiny.get(p0, SPECS)
    assert len(tiny) == 0 and compute.calls == 6  # larger than the bound: returned, not kept
    off = FeatureCache(max_bytes=0, compute=compute)
    off.get(p0, SPECS)
    off.get(p0, SPECS)
    assert compute.calls == 8


def test_concurrent_requests_compute_once() -> None:
    compute = Counting()
    cache = FeatureCache(compute=compute)
    panel = _panel()
    results: list[FeatureSet] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(panel, SPECS))) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert compute.calls == 1 and all(r is results[0] for r in results)


def test_errors_are_not_cached() -> None:
    compute = Counting()
    cache = FeatureCache(compute=compute)
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            cache.get(_panel(), [FeatureSpec(name="nope", windows=[3])])
        with pytest.raises(Exception):
            cache.get(_panel(), [{"name": "ret", "windows": [0]}])
    assert compute.calls == 4 and len(cache) == 0


SYN = {
    "source": "synthetic",
    "synthetic": {"n_dates": 400, "n_symbols": 20, "ic": 0.05, "seed": 21},
    "segments": {"train": ["2010-01-01", "2010-10-31"], "test": ["2010-11-01", "2011-07-31"]},
    "features": [{"name": "ret", "windows": [1, 5]}, {"name": "ma_ratio", "windows": [10]}],
}


def test_training_twice_and_serving_reuse_the_features() -> None:
    cfg = DatasetConfig.model_validate(SYN)
    first = train(cfg, ModelConfig(type="ridge"), evaluate=False)
    before = FEATURE_CACHE.stats()
    second = train(cfg, ModelConfig(type="ridge", params={"alpha": 3.0}), evaluate=False)
    window = predict_window(second.model, cfg, "2010-11-01", None, expected_features=second.feature_names)
    after = FEATURE_CACHE.stats()
    assert after.misses == before.misses and after.hits == before.hits + 2
    assert first.feature_names == second.feature_names
    panel = load_panel(cfg)
    fs = compute_features(panel, cfg.features)
    lo = int(np.searchsorted(panel.dates, np.datetime64("2010-11-01")))
    np.testing.assert_array_equal(window.values, predict_rows(second.model, fs.values[lo:]))
