"""Benchmark: the trainer's research loop at scale — features, fit, prediction.

    python benchmarks/bench_training.py [--dates 5040] [--symbols 3000] [--model ridge] [--check auto|yes|no]

Data: the synthetic planted-alpha generator (`source: synthetic`, OHLCV), the
51-column feature set of `bench_features.py`, segments 60/20/20 % of the dates.
Reported, each in the same process one after the other: generating the panel,
the features through the process-wide feature cache (cold: computed, and
above `store.SPILL_BYTES` written to a file-backed float32 array), fitting
the model on the train segment (`training.train`, evaluation off; features
from the cache, read in blocks of dates; ridge and OLS from sufficient
statistics, and so are lasso and elastic net), and predicting the test window (`modeling.predict_window`, as
the registry serves it), with wall time and the process's peak resident
memory (`getrusage` `ru_maxrss`) after each step, and the CPU time of the
step (all threads; on a shared machine wall time follows the load, CPU time
much less).

`--check` then compares the streamed linear fit with the in-memory one
(`Pipeline.fit` on the whole float64 design matrix, what training did
before streaming): the largest absolute difference of their test-window
predictions. That fit needs about three float64 copies of the design matrix
(~11 GB at 5040 x 3000), so `auto` runs it only when that estimate is below
half of `MemAvailable`; its memory is not in the table (it runs last).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import SPECS

from alphaswarm_common.config import DatasetConfig, ModelConfig, Segments, SyntheticConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.features.cache import cached_features
from alphaswarm_common.modeling import design_matrix, predict_rows, predict_window
from alphaswarm_trainer.models import build_model
from alphaswarm_trainer.training import prepare, train


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=5040)
    parser.add_argument("--symbols", type=int, default=3000)
    parser.add_argument("--model", default="ridge")
    parser.add_argument("--check", choices=("auto", "yes", "no"), default="auto")
    parser.add_argument("--params", default="{}", help="model hyperparameters as JSON")
    args = parser.parse_args()

    synth = SyntheticConfig(n_dates=args.dates, n_symbols=args.symbols, ic=0.05, seed=0)
    probe = DatasetConfig(source="synthetic", synthetic=synth, features=SPECS)
    rows: list[tuple[str, float, float, float]] = []
    clock = [time.process_time()]

    def cpu() -> float:
        now = time.process_time()
        spent, clock[0] = now - clock[0], now
        return spent

    t = time.perf_counter()
    panel = load_panel(probe)
    rows.append(("generate panel", time.perf_counter() - t, cpu(), peak_mib()))
    d = panel.dates
    cut1, cut2 = d[int(len(d) * 0.6)], d[int(len(d) * 0.8)]

    def day(x: object) -> dt.date:
        return dt.date.fromisoformat(str(x)[:10])

    segments = Segments(
        train={"start": day(d[0]), "end": day(d[int(len(d) * 0.6) - 1])},
        valid={"start": day(cut1), "end": day(d[int(len(d) * 0.8) - 1])},
        test={"start": day(cut2), "end": day(d[-1])},
    )
    cfg = probe.model_copy(update={"segments": segments})

    t = time.perf_counter()
    fs = cached_features(panel, SPECS)
    where = "file-backed" if fs.on_disk else "in memory"
    rows.append(
        (
            f"features ({len(fs.names)} columns float32, cold, {where})",
            time.perf_counter() - t,
            cpu(),
            peak_mib(),
        )
    )
    n_feat = len(fs.names)
    del fs

    t = time.perf_counter()
    model_cfg = ModelConfig(type=args.model, params=json.loads(args.params), seed=0)
    result = train(cfg, model_cfg, evaluate=False, plots=False)
    rows.append(
        (
            f"train {args.model} ({result.n_train_rows:,} rows; features from the cache)",
            time.perf_counter() - t,
            cpu(),
            peak_mib(),
        )
    )

    t = time.perf_counter()
    cpu()
    window = predict_window(
        result.model, cfg, segments.test.start, segments.test.end, expected_features=result.feature_names
    )
    rows.append(
        (
            f"predict test window ({window.values.shape[0]} x {window.values.shape[1]})",
            time.perf_counter() - t,
            cpu(),
            peak_mib(),
        )
    )

    print(
        f"# command: python benchmarks/bench_training.py --dates {args.dates} --symbols {args.symbols} "
        f"--model {args.model} --check {args.check}"
        + (f" --params '{args.params}'" if args.params != "{}" else "")
    )
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print("| step | wall (s) | CPU (s) | peak RSS so far (MiB) |")
    print("|---|---|---|---|")
    for name, secs, spent, mib in rows:
        print(f"| {name} | {secs:.2f} | {spent:.2f} | {mib:,.0f} |")
    test_ic = result.metrics["test"].get("ic_spearman")
    print(f"\ntest Rank IC {test_ic:.4f} (planted {synth.ic})")

    if args.model in ("ridge", "linear", "lasso", "elastic_net") and args.check != "no":
        need = 3 * result.n_train_rows * n_feat * 8
        avail = _mem_available()
        if args.check == "auto" and need > avail // 2:
            print(
                f"in-memory reference fit skipped: needs ~{need / 2**30:.1f} GiB, "
                f"{avail / 2**30:.1f} GiB available (--check yes forces it)"
            )
        else:
            prep = prepare(cfg)
            x, y, _ = design_matrix(prep.features[prep.rows["train"]], prep.labels[prep.rows["train"]])
            ref = build_model(model_cfg)
            ref.fit(x, y)
            del x, y
            lo = len(d) - window.values.shape[0]
            expected = predict_rows(ref, prep.features[lo:])
            ok = np.isfinite(expected)
            diff = float(np.max(np.abs(expected[ok] - window.values[ok]))) if ok.any() else 0.0
            same_nan = bool(np.array_equal(ok, np.isfinite(window.values)))
            print(
                f"streamed vs in-memory fit: max |prediction difference| {diff:.2e} (same NaN cells: {same_nan})"
            )
    return 0


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
