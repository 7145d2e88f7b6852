"""Benchmark: `compute_features` against the same features written with plain pandas rolling operations.

    python benchmarks/bench_features.py [--dates 5040] [--symbols 3000] [--pandas-symbols 300] [--seed 0]

Data: the synthetic generator (`source: synthetic`, OHLCV, T x N bars).
Feature set `SPECS`: 26 families, 34 base columns and 17 cross-sectional
rank columns = 51 columns, float32 output (what training uses).

Reported, in one process, one after the other (same machine load):

- ours: wall time of `compute_features(panel, SPECS)` (and its CPU time,
  user + system over all threads: on a shared machine the comparable figure)
  and its peak traced
  memory (tracemalloc, to which NumPy reports its buffers; measured in a
  separate call so the timing carries no tracing overhead), against the
  bytes of the output;
- pandas: the same columns with `DataFrame.rolling(...)` (mean, std, sum,
  max, min, rank, corr, `apply` for arg-max/min positions), `shift`, `diff`,
  and `DataFrame.rank(axis=1)` for the cross-sectional ranks, float64. The
  time-series part runs on the first `--pandas-symbols` symbols and is
  extrapolated linearly to N (rolling operations cost the same per column);
  the cross-sectional ranks run at full size. The table says which numbers
  are extrapolated. `--pandas-symbols 0` runs pandas at full size (the
  `rolling.apply` columns then take hours);
- agreement: the largest absolute difference between the two on the
  subset, per column family (float32 vs float64; pandas' rolling variance
  uses a different summation, so a few 1e-6 are expected on price levels).

Nothing is asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pandas as pd

from alphaswarm_common.config import FeatureSpec, SyntheticConfig
from alphaswarm_common.data import Panel, generate_synthetic
from alphaswarm_common.features import compute_features

W = 20
SPECS = [
    FeatureSpec(name="ret", windows=[1, 5, 20, 60], cs_rank=True),
    FeatureSpec(name="mom", windows=[20, 60, 120], cs_rank=True),
    FeatureSpec(name="vol", windows=[20, 60], cs_rank=True),
    FeatureSpec(name="ma_ratio", windows=[5, 20, 60], cs_rank=True),
    FeatureSpec(name="std", windows=[W], cs_rank=True),
    FeatureSpec(name="beta", windows=[W], cs_rank=True),
    FeatureSpec(name="rsqr", windows=[W]),
    FeatureSpec(name="resi", windows=[W]),
    FeatureSpec(name="max", windows=[W]),
    FeatureSpec(name="min", windows=[W]),
    FeatureSpec(name="rsv", windows=[W], cs_rank=True),
    FeatureSpec(name="imax", windows=[W]),
    FeatureSpec(name="imin", windows=[W]),
    FeatureSpec(name="cntp", windows=[W]),
    FeatureSpec(name="cntn", windows=[W]),
    FeatureSpec(name="sump", windows=[W]),
    FeatureSpec(name="rank", windows=[W]),
    FeatureSpec(name="vma", windows=[W], cs_rank=True),
    FeatureSpec(name="vstd", windows=[W]),
    FeatureSpec(name="corr", windows=[W]),
    FeatureSpec(name="kmid", cs_rank=True),
    FeatureSpec(name="klen"),
    FeatureSpec(name="kup"),
    FeatureSpec(name="klow"),
    FeatureSpec(name="ksft"),
    FeatureSpec(name="wvma", windows=[W]),
]


# --------------------------------------------------------------------------- the pandas version


def pandas_base(panel: Panel, cols: slice) -> dict[str, pd.DataFrame]:
    """Every base column of `SPECS` with plain pandas (float64), on the symbols `cols`."""
    c = pd.DataFrame(panel.close[:, cols])
    o = pd.DataFrame(panel.field("open")[:, cols])
    h = pd.DataFrame(panel.field("high")[:, cols])
    lo = pd.DataFrame(panel.field("low")[:, cols])
    v = pd.DataFrame(panel.field("volume")[:, cols])
    out: dict[str, pd.DataFrame] = {}
    logret = np.log(c).diff()
    for w in (1, 5, 20, 60):
        out[f"ret_{w}"] = c / c.shift(w) - 1
    for w in (20, 60, 120):
        out[f"mom_{w}"] = np.log(c / c.shift(w))
    for w in (20, 60):
        out[f"vol_{w}"] = logret.rolling(w).std()
    for w in (5, 20, 60):
        out[f"ma_ratio_{w}"] = c / c.rolling(w).mean() - 1
    r = c.rolling(W)
    out[f"std_{W}"] = r.std() / c
    idx = pd.Series(np.arange(len(c), dtype=np.float64))
    mean_t = idx.rolling(W).mean()
    var_t = (W * W - 1) / 12.0
    slope = (c.mul(idx, axis=0).rolling(W).mean() - r.mean().mul(mean_t, axis=0)) / var_t
    out[f"beta_{W}"] = slope / c
    var_x = r.var(ddof=0)
    out[f"rsqr_{W}"] = (slope * slope * var_t / var_x).where(var_x > 0)
    fitted = r.mean() + slope * (W - 1) / 2.0
    out[f"resi_{W}"] = (c - fitted) / c
    hi, lw = h.rolling(W).max(), lo.rolling(W).min()
    out[f"max_{W}"] = hi / c
    out[f"min_{W}"] = lw / c
    out[f"rsv_{W}"] = ((c - lw) / (hi - lw)).where(hi > lw)
    out[f"imax_{W}"] = (h.rolling(W).apply(np.argmax, raw=True) + 1) / W
    out[f"imin_{W}"] = (lo.rolling(W).apply(np.argmin, raw=True) + 1) / W
    ch = c.diff()
    out[f"cntp_{W}"] = (ch > 0).astype(float).where(ch.notna()).rolling(W).mean()
    out[f"cntn_{W}"] = (ch < 0).astype(float).where(ch.notna()).rolling(W).mean()
    out[f"sump_{W}"] = ch.clip(lower=0).rolling(W).sum() / ch.abs().rolling(W).sum()
    out[f"rank_{W}"] = c.rolling(W).rank(pct=True)
    out[f"vma_{W}"] = (v.rolling(W).mean() / v).where(v > 0)
    out[f"vstd_{W}"] = (v.rolling(W).std() / v).where(v > 0)
    out[f"corr_{W}"] = c.rolling(W).corr(np.log1p(v))
    out["kmid"] = (c - o) / o
    out["klen"] = (h - lo) / o
    out["kup"] = (h - np.maximum(o, c)) / o
    out["klow"] = (np.minimum(o, c) - lo) / o
    out["ksft"] = (2 * c - h - lo) / o
    wv = (c / c.shift(1) - 1).abs() * v
    out[f"wvma_{W}"] = wv.rolling(W).std() / wv.rolling(W).mean()
    return out


def pandas_cs_rank(frame: pd.DataFrame) -> pd.DataFrame:
    n = frame.notna().sum(axis=1)
    return frame.rank(axis=1).sub(1).div((n - 1).where(n > 1), axis=0).where(frame.notna())


# --------------------------------------------------------------------------- measuring


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def peak_traced(fn: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=5040)
    parser.add_argument("--symbols", type=int, default=3000)
    parser.add_argument("--pandas-symbols", type=int, default=300, help="0 = full size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(
        f"command: python benchmarks/bench_features.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pandas {pd.__version__}, "
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"
    )
    t_gen, made = timed(
        lambda: generate_synthetic(
            SyntheticConfig(n_dates=args.dates, n_symbols=args.symbols, seed=args.seed)
        )
    )
    panel = made[0]
    t, n = panel.shape
    print(f"synthetic panel {t} x {n} with OHLCV generated in {t_gen:.1f} s")

    peak = peak_traced(lambda: compute_features(panel, SPECS))
    before = resource.getrusage(resource.RUSAGE_SELF)
    load = os.getloadavg()[0]
    t_ours, fs = timed(lambda: compute_features(panel, SPECS))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_ours = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sys_ours = after.ru_stime - before.ru_stime
    values = fs.values
    names = list(fs.names)
    n_cols = len(names)
    n_rank = sum(name.endswith("_csrank") for name in names)
    out_bytes = values.nbytes

    sub = n if args.pandas_symbols <= 0 else min(n, args.pandas_symbols)
    t_pd_ts, base = timed(lambda: pandas_base(panel, slice(0, sub)))
    scale = n / sub
    ranked = [name.removesuffix("_csrank") for name in names if name.endswith("_csrank")]
    full = pd.DataFrame(values[:, :, names.index(ranked[0])].astype(np.float64))

    def ranks() -> None:
        for _ in ranked:
            pandas_cs_rank(full)

    t_pd_cs, _ = timed(ranks)
    t_pandas = t_pd_ts * scale + t_pd_cs

    worst: dict[str, float] = {}
    for name, frame in base.items():
        ours = values[:, :sub, names.index(name)].astype(np.float64)
        ref = frame.to_numpy(dtype=np.float64)
        both = np.isfinite(ours) & np.isfinite(ref)
        scale_ref = np.maximum(1.0, np.abs(ref[both]))
        worst[name] = (
            float(np.max(np.abs(ours[both] - ref[both]) / scale_ref)) if both.any() else float("nan")
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    print()
    print(
        "| T x N | columns (base + cs ranks) | ours (s) | ours peak traced | output | pandas (s) | pandas / ours |"
    )
    print("|---|---|---|---|---|---|---|")
    extrap = "" if sub == n else f" (time-series part on {sub} symbols x {scale:.0f}, extrapolated)"
    print(
        f"| {t} x {n} | {n_cols} ({n_cols - n_rank} + {n_rank}) | {t_ours:.1f} | {peak / 1e9:.2f} GB | "
        f"{out_bytes / 1e9:.2f} GB float32 | {t_pandas:.1f}{extrap} | {t_pandas / t_ours:.1f}x |"
    )
    print()
    print(
        f"ours: {t_ours:.1f} s wall, {cpu_ours:.1f} s CPU (user + system, all threads; system {sys_ours:.1f} s), "
        f"load average {load:.1f} at the start"
    )
    print(
        f"pandas detail: time-series columns {t_pd_ts:.1f} s on {sub} symbols; "
        f"{len(ranked)} cross-sectional ranks {t_pd_cs:.1f} s at full size. Process peak RSS {rss:.1f} GB."
    )
    bad = {k: v for k, v in worst.items() if v > 1e-5}
    print(
        f"agreement on the pandas subset: max relative difference {max(worst.values()):.2e} over "
        f"{len(worst)} base columns" + (f"; above 1e-5: {bad}" if bad else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
