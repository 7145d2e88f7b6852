"""Benchmark: the trainer's research loop at scale — features, fit, prediction.

    python benchmarks/bench_training.py [--dates 5040] [--symbols 3000] [--model ridge]

Data: the synthetic planted-alpha generator (`source: synthetic`, OHLCV), the
51-column feature set of `bench_features.py`, segments 60/20/20 % of the dates.
Reported, each in the same process one after the other: generating the panel,
`compute_features` (cold, then served from the feature cache), fitting the
model on the train segment (`training.train`, evaluation off), and predicting
the test window (`modeling.predict_window`, as the registry serves it), with
wall time and the process's peak resident memory after each step. Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_features import SPECS

from alphaswarm_common.config import DatasetConfig, ModelConfig, Segments, SyntheticConfig
from alphaswarm_common.data import load_panel
from alphaswarm_common.features import compute_features
from alphaswarm_common.modeling import predict_window
from alphaswarm_trainer.training import train


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=5040)
    parser.add_argument("--symbols", type=int, default=3000)
    parser.add_argument("--model", default="ridge")
    args = parser.parse_args()

    synth = SyntheticConfig(n_dates=args.dates, n_symbols=args.symbols, ic=0.05, seed=0)
    probe = DatasetConfig(source="synthetic", synthetic=synth, features=SPECS)
    rows: list[tuple[str, float, float]] = []

    t = time.perf_counter()
    panel = load_panel(probe)
    rows.append(("generate panel", time.perf_counter() - t, peak_mib()))
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
    fs = compute_features(panel, SPECS)
    rows.append((f"compute_features ({len(fs.names)} columns, cold)", time.perf_counter() - t, peak_mib()))
    del fs

    t = time.perf_counter()
    result = train(cfg, ModelConfig(type=args.model, seed=0), evaluate=False, plots=False)
    rows.append(
        (
            f"train {args.model} ({result.n_train_rows:,} rows; features from the cache)",
            time.perf_counter() - t,
            peak_mib(),
        )
    )

    t = time.perf_counter()
    window = predict_window(
        result.model, cfg, segments.test.start, segments.test.end, expected_features=result.feature_names
    )
    rows.append(
        (
            f"predict test window ({window.values.shape[0]} x {window.values.shape[1]})",
            time.perf_counter() - t,
            peak_mib(),
        )
    )

    print(
        f"# command: python benchmarks/bench_training.py --dates {args.dates} --symbols {args.symbols} "
        f"--model {args.model}"
    )
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print("| step | wall (s) | peak RSS so far (MiB) |")
    print("|---|---|---|")
    for name, secs, mib in rows:
        print(f"| {name} | {secs:.2f} | {mib:,.0f} |")
    test_ic = result.metrics["test"].get("ic_spearman")
    print(f"\ntest Rank IC {test_ic:.4f} (planted {synth.ic})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
