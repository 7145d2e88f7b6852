"""Benchmark: what tracing and metrics add to a call, on and off.

    python benchmarks/bench_telemetry.py [--calls 3000] [--out benchmarks/results/telemetry.md]

A threaded gRPC server on loopback answering a tiny unary method (16 bytes each way), called
`--calls` times by one client, in four set-ups interleaved over `--rounds` rounds:

* bare: `grpc.server()` and `grpc.insecure_channel()` with no interceptor at all;
* off: the observing server interceptor (`telemetry.ServerObserver`: log fields, the RPC
  histogram) and the client interceptor (W3C headers), tracing off — the default;
* on: the same with tracing on (SDK tracer provider, parent-based always-on sampling, a batch
  span processor) exporting to an exporter that drops the spans (the cost of making spans, not
  of a collector's network);
* on, sampled out: tracing on with a sample ratio of 0 (spans are made non-recording).

Reported: the median and p95 wall latency of one call and the process's CPU time per call, in
microseconds, with the overhead against bare. Then the in-process costs of `telemetry.span()` around a block, `logging_json.bind`
and `telemetry.inject()`, off and on, in thread CPU nanoseconds (median of 7 runs of 20,000).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import opentelemetry.sdk
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from alphaswarm_common import logging_json, telemetry

METHOD = "/alphaswarm.bench.v1.BenchService/Echo"


class DropExporter(SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _server(observed: bool) -> tuple[grpc.Server, Any]:
    rpc = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    generic = grpc.method_handlers_generic_handler("alphaswarm.bench.v1.BenchService", {"Echo": rpc})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[telemetry.ServerObserver()] if observed else [],
    )
    server.add_generic_rpc_handlers((generic,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ch: Any = grpc.insecure_channel(f"127.0.0.1:{port}")
    if observed:
        ch = grpc.intercept_channel(ch, telemetry.client_interceptor())
    return server, ch


def _batch(ch: Any, calls: int) -> tuple[list[float], float]:
    """(wall latency of each call in µs, CPU time of the whole process per call in µs)."""
    echo = ch.unary_unary(METHOD)
    payload = b"x" * 16
    out = []
    cpu0 = time.process_time_ns()
    with logging_json.bind(run_id="bench-run", task_id="bench-task"):
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            with telemetry.span("caller"):
                echo(payload, timeout=10)
            out.append((time.perf_counter_ns() - t0) / 1000.0)
    return out, (time.process_time_ns() - cpu0) / calls / 1000.0


SETUPS = {
    "bare (no interceptor)": (False, None),
    "off (observer + W3C headers, tracing off)": (True, None),
    "on (spans made and batch-exported)": (True, 1.0),
    "on, sample ratio 0": (True, 0.0),
}


def _latencies(calls: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The set-ups interleaved round by round, so that load from elsewhere falls on each alike."""
    bare_server, bare_ch = _server(False)
    obs_server, obs_ch = _server(True)
    out: dict[str, list[float]] = {name: [] for name in SETUPS}
    cpu: dict[str, list[float]] = {name: [] for name in SETUPS}
    try:
        _batch(bare_ch, 200)
        _batch(obs_ch, 200)
        for _ in range(rounds):
            for name, (observed, ratio) in SETUPS.items():
                if ratio is None:
                    telemetry.shutdown_tracing()
                else:
                    telemetry.configure_tracing(
                        "bench", exporter=DropExporter(), batch=True, sample_ratio=ratio
                    )
                wall, per_call = _batch(obs_ch if observed else bare_ch, calls // rounds)
                out[name] += wall
                cpu[name].append(per_call)
    finally:
        telemetry.shutdown_tracing()
        for server, ch in ((bare_server, bare_ch), (obs_server, obs_ch)):
            ch.close()
            server.stop(0).wait()
    return out, cpu


def _p95(values: list[float]) -> float:
    return sorted(values)[int(0.95 * (len(values) - 1))]


def _per_op_ns(fn: Callable[[], None], n: int = 20_000, repeats: int = 7) -> float:
    """CPU time of this thread per operation (median of `repeats` runs): other work on a shared
    machine does not count, as it would in wall time."""
    runs = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(n):
            fn()
        runs.append((time.thread_time_ns() - t0) / n)
    return statistics.median(runs)


def _micro() -> dict[str, float]:
    def span_block() -> None:
        with telemetry.span("x"):
            pass

    def bind_block() -> None:
        with logging_json.bind(run_id="r", task_id="t"):
            pass

    def inject() -> None:
        telemetry.inject()

    def bound_inject() -> None:
        with logging_json.bind(run_id="r", task_id="t"):
            telemetry.inject()

    return {
        "span() around a block": _per_op_ns(span_block),
        "bind(run_id, task_id)": _per_op_ns(bind_block),
        "inject() (no fields bound)": _per_op_ns(inject),
        "bind + inject() (baggage)": _per_op_ns(bound_inject),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    latencies, cpu = _latencies(args.calls, args.rounds)
    rows = list(latencies.items())
    telemetry.shutdown_tracing()
    micro_off = _micro()
    # Each span handed straight to the dropping exporter: the cost of making it, no queue.
    telemetry.configure_tracing("bench", exporter=DropExporter(), batch=False)
    micro_on = _micro()
    telemetry.shutdown_tracing()

    bare = statistics.median(rows[0][1])
    lines = [
        f"# command: python benchmarks/bench_telemetry.py --calls {args.calls} --rounds {args.rounds}",
        f"# python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"opentelemetry-sdk {opentelemetry.sdk.version.__version__}, {platform.machine()}, "
        "2 cores shared with other work",
        "",
        f"One unary call over loopback (16 bytes each way), {args.calls} calls per set-up in"
        f" {args.rounds} interleaved rounds, one client; load average {os.getloadavg()[0]:.1f}",
        "",
        "| set-up | wall median (µs) | wall p95 (µs) | wall overhead (µs) | CPU per call (µs) | CPU overhead (µs) |",
        "|---|---|---|---|---|---|",
    ]
    bare_cpu = statistics.median(cpu[rows[0][0]])
    for name, values in rows:
        med = statistics.median(values)
        c = statistics.median(cpu[name])
        lines.append(
            f"| {name} | {med:.1f} | {_p95(values):.1f} | {med - bare:+.1f} | {c:.1f} | {c - bare_cpu:+.1f} |"
        )
    lines += [
        "",
        "CPU per call: the process's CPU time (client, server and gRPC threads) over a round divided by its",
        "calls, median of the rounds; it does not count time spent waiting for the shared cores.",
    ]
    lines += [
        "",
        "In-process costs (thread CPU ns per operation, median of 7 runs of 20,000)",
        "",
        "| operation | tracing off | tracing on |",
        "|---|---|---|",
    ]
    for key in micro_off:
        lines.append(f"| {key} | {micro_off[key]:.0f} | {micro_on[key]:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
