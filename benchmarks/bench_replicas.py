"""Throughput of one replica of each service against the scaled topology.

    python benchmarks/bench_replicas.py [--runs 30] [--jobs 200] [--out benchmarks/results/replicas.md]

Each topology is the compose topology run as processes over the local PostgreSQL
(`ALPHASWARM_TEST_PG_URL`, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres)
and a NATS JetStream server of the benchmark's own (tests/integration/replicas.py):

* one each: 1 gateway, 1 backtester, 1 trainer, 1 registry, 1 persistence;
* scaled: 2 gateways, 3 backtesters, 2 trainers, 2 registries, 1 persistence.

For each, after one warm-up job: `--jobs` backtest jobs submitted at once (through the gateways in
turn) and timed until the last is terminal, then `--runs` alpha-backtest runs the same way.
Throughput is tasks per minute of wall time; the shares are the RPCs each replica answered
(access logs). The load average at the start of each phase is printed: the machine may be shared.
The CPU seconds each service used during a phase (all its replicas; for mlflow the server's main
process only, its workers are not counted) show where the work went; PostgreSQL and NATS are not
counted.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.faults.cluster import NatsServer, cpu_seconds, fast_run  # noqa: E402
from tests.integration.replicas import (  # noqa: E402
    LOAD_ENV,
    ONE_EACH,
    SCALED,
    ReplicaTopology,
    Submitted,
    backtest_job,
    claims,
    rpc_counts,
    submit,
    wait_all,
)

PG_URL = os.environ.get("ALPHASWARM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


SERVICES = ("gateway", "backtester", "trainer", "registry", "persistence", "mlflow")


def _cpu(topo: ReplicaTopology) -> dict[str, float]:
    """CPU seconds used so far by each service (all its replicas)."""
    out = dict.fromkeys(SERVICES, 0.0)
    for name, proc in topo.processes.items():
        service = name.rsplit("-", 1)[0] if name != "mlflow" else name
        if service in out and proc.poll() is None:
            out[service] += cpu_seconds(proc.pid)
    return out


def _phase(topo: ReplicaTopology, kind: str, make: Callable[[int], dict[str, Any]], n: int) -> dict[str, Any]:
    gateways = topo.replicas("gateway")
    load = os.getloadavg()[0]
    cpu_before = _cpu(topo)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        submitted: list[Submitted] = list(
            pool.map(lambda i: submit(topo, kind, make(i), gateways[i % len(gateways)]), range(n))
        )
    done = wait_all(topo, submitted, timeout=7200)
    wall = time.perf_counter() - start
    ok = sum(1 for s in done.values() if s == "succeeded")
    cpu_after = _cpu(topo)
    cpu = {k: cpu_after[k] - cpu_before[k] for k in SERVICES}
    return {
        "kind": kind,
        "n": n,
        "ok": ok,
        "wall": wall,
        "per_min": 60.0 * ok / wall,
        "load": load,
        "cpu": cpu,
    }


def _shares(topo: ReplicaTopology) -> str:
    parts = []
    for service, method in (
        ("backtester", r"BacktesterService/Run\w+"),
        ("trainer", r"TrainerService/Train\w*"),
        ("registry", "RegistryService/Predict"),
    ):
        counts = [rpc_counts(topo.full_log(r), method) for r in topo.replicas(service)]
        parts.append(f"{service} {'/'.join(map(str, counts))}")
    parts.append(
        "gateway claims " + "/".join(str(claims(topo.full_log(g))) for g in topo.replicas("gateway"))
    )
    return "; ".join(parts)


def measure(name: str, counts: dict[str, int], runs: int, jobs: int) -> tuple[list[dict[str, Any]], str]:
    nats = NatsServer()
    nats.start()
    workdir = Path(tempfile.mkdtemp(prefix=f"alphaswarm-bench-{name}-"))
    topo = ReplicaTopology(
        pg_admin_url=PG_URL, nats_url=nats.url, workdir=workdir, extra_env=dict(LOAD_ENV), counts=dict(counts)
    )
    try:
        t0 = time.perf_counter()
        topo.start()
        print(f"{name}: started in {time.perf_counter() - t0:.0f} s", flush=True)
        _phase(topo, "job", backtest_job, 1)  # warm-up: imports, data caches, connections
        rows = []
        if jobs:
            rows.append(_phase(topo, "job", backtest_job, jobs))
            print(f"{name}: {rows[-1]}", flush=True)
        if runs:
            rows.append(_phase(topo, "run", lambda i: fast_run(run_name=f"bench-{i}"), runs))
            print(f"{name}: {rows[-1]}", flush=True)
        return rows, _shares(topo)
    finally:
        try:
            topo.stop()
        finally:
            nats.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args()
    results = {}
    for name, counts in (("one each", ONE_EACH), ("scaled", SCALED)):
        results[name] = measure(name, counts, args.runs, args.jobs)
    command = f"python benchmarks/bench_replicas.py --runs {args.runs} --jobs {args.jobs}"
    lines = [
        f"# command: {command}",
        f"# machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "| topology | work | completed | wall (s) | per minute | load avg at start | CPU s: "
        + " / ".join(SERVICES)
        + " |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (rows, _) in results.items():
        for r in rows:
            work = f"{r['n']} backtest jobs" if r["kind"] == "job" else f"{r['n']} alpha runs"
            lines.append(
                f"| {name} | {work} | {r['ok']} | {r['wall']:.1f} | {r['per_min']:.1f} | {r['load']:.1f} | "
                + " / ".join(f"{r['cpu'][k]:.0f}" for k in SERVICES)
                + " |"
            )
    base = {r["kind"]: r["per_min"] for r in results["one each"][0]}
    for r in results["scaled"][0]:
        if base.get(r["kind"]):
            lines.append(f"\nscaled / one each, {r['kind']}s: {r['per_min'] / base[r['kind']]:.2f}x")
    for name, (_, shares) in results.items():
        lines.append(f"\nshares ({name}): {shares}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
