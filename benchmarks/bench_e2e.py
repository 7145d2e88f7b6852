"""End-to-end timings of the alpha-backtest workflow.

    python benchmarks/bench_e2e.py [--repeats 3] [--config configs/ml/alpha_backtest/ridge_alpha_backtest.yaml]

1. cold embedded run: `alphaswarm run CONFIG --output json` in a fresh process with
   an empty store folder (imports, both SQLite schemas, five gRPC servers, the run);
2. warm-store run: the same command again on the same folder (stores exist);
3. REST round trip, services warm: `alphaswarm serve` once, then POST the config and
   read the SSE stream to the terminal event, repeated.

Wall time is the median of the repeats; peak memory is the largest resident set
of the child processes (`ru_maxrss`). The saga's own time is the run's
`duration_seconds`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_cli(config: str, home: Path) -> tuple[float, float, int]:
    """(wall seconds, saga seconds, peak RSS KiB) of one `alphaswarm run`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_"))}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "alphaswarm"), "run", config, "--output", "json", "--home", str(home)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"alphaswarm run failed:\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    return wall, float(doc["duration_seconds"]), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def _rest_round_trip(url: str, body: bytes) -> float:
    start = time.perf_counter()
    resp = httpx.post(
        f"{url}/ml/alpha-backtest-runs",
        content=body,
        headers={"content-type": "application/json"},
        timeout=120,
    )
    resp.raise_for_status()
    stream_url = url + resp.json()["stream_url"]
    last = None
    with httpx.stream("GET", stream_url, timeout=600) as s:
        for line in s.iter_lines():
            if line.startswith("data:"):
                last = json.loads(line[5:])
    elapsed = time.perf_counter() - start
    if not last or last["stage"] != "completed":
        raise SystemExit(f"REST run did not complete: {last}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="configs/ml/alpha_backtest/ridge_alpha_backtest.yaml")
    args = parser.parse_args()

    cold, warm, saga = [], [], []
    peak = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            home = Path(tmp) / f"cold-{i}"
            wall, inner, rss = _run_cli(args.config, home)
            cold.append(wall)
            saga.append(inner)
            peak = max(peak, rss)
            wall, inner, rss = _run_cli(args.config, home)
            warm.append(wall)
            peak = max(peak, rss)
            shutil.rmtree(home, ignore_errors=True)

        port, grpc_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHASWARM_", "MLFLOW_"))}
        server = subprocess.Popen(
            [
                str(BIN / "alphaswarm"),
                "serve",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--home",
                str(Path(tmp) / "serve"),
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            t0 = time.perf_counter()
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.perf_counter() - t0 > 120:
                    raise SystemExit("alphaswarm serve did not become ready")
                time.sleep(0.2)
            serve_ready = time.perf_counter() - t0
            body = (ROOT / args.config).read_bytes()
            _rest_round_trip(url, body)  # warm-up: first model registration, imports on first use
            rest = [_rest_round_trip(url, body) for _ in range(args.repeats)]
        finally:
            server.terminate()
            server.wait(30)

    med = statistics.median
    print(f"# command: python benchmarks/bench_e2e.py --repeats {args.repeats} --config {args.config}")
    print(f"# machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print("| measure | median | min | max |")
    print("|---|---|---|---|")
    for name, values in (
        ("cold embedded run, wall (s)", cold),
        ("warm-store embedded run, wall (s)", warm),
        ("saga inside the run (s)", saga),
        ("REST round trip, services warm (s)", rest),
    ):
        print(f"| {name} | {med(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    print(f"| `alphaswarm serve` ready (s) | {serve_ready:.2f} | | |")
    print(f"| peak RSS of a run (MiB) | {peak / 1024:.0f} | | |")


if __name__ == "__main__":
    main()
