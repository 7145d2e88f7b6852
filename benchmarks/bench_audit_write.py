"""Rows per second of SavePredictionAudit on SQLite and PostgreSQL.

Measures `CatalogRepository.save_prediction_audit` — the code behind the RPC,
without the gRPC hop — writing a (dates x symbols) batch of five float64
fields into a catalog migrated with the project's Alembic history:
PostgreSQL through binary COPY, SQLite through batched executemany. Each
repetition writes a new run (an insert into a table that already holds the
earlier repetitions' rows, with its three indexes), inside one transaction
that also deletes the run's previous rows. The time includes validation,
reshaping and the commit.

    .venv/bin/python benchmarks/bench_audit_write.py                    # 1,000,000 rows, both databases
    .venv/bin/python benchmarks/bench_audit_write.py --rows 200000 --repeat 5 --skip-postgresql
    .venv/bin/python benchmarks/bench_audit_write.py --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

PostgreSQL: `--pg-url` (or ALPHASWARM_BENCH_PG_URL) is an admin URL; the
benchmark creates a scratch database `alphaswarm_bench_<random>` and drops it
at the end. SQLite: a scratch file in a temporary folder (WAL,
synchronous=NORMAL, as the catalog configures it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from alphaswarm_persistence import migrations
from alphaswarm_persistence.db import Database
from alphaswarm_persistence.repository import AlphaBacktestRunRecord, CatalogRepository, PredictionAuditBatch

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FIELDS = ("prediction", "realized_return", "target_weight", "held_weight", "pnl_contribution")


def make_batch(rows: int, n_symbols: int, nan_share: float, seed: int) -> tuple[PredictionAuditBatch, int]:
    """A batch of about `rows` cells with a prediction; returns it and the exact number of rows it writes."""
    rng = np.random.default_rng(seed)
    n_dates = max(1, int(np.ceil(rows / n_symbols / (1.0 - nan_share))))
    dates = np.datetime64("2000-01-03") + np.arange(n_dates)
    symbols = [f"SYM{j:04d}" for j in range(n_symbols)]
    fields = {name: rng.normal(0.0, 0.02, size=(n_dates, n_symbols)) for name in FIELDS}
    prediction = fields["prediction"]
    flat = prediction.reshape(-1)
    if nan_share > 0:
        flat[rng.random(flat.size) < nan_share] = np.nan
    # Trim to exactly `rows` present predictions.
    present = np.flatnonzero(~np.isnan(flat))
    flat[present[rows:]] = np.nan
    written = int(min(rows, present.size))
    return PredictionAuditBatch(dates=dates, symbols=symbols, fields=fields), written


def time_backend(url: str, batch: PredictionAuditBatch, expected: int, repeat: int) -> list[float]:
    migrations.upgrade(url)
    db = Database(url)
    repo = CatalogRepository(db)
    seconds: list[float] = []
    try:
        for _ in range(repeat):
            run, _ = repo.create_alpha_backtest_run(AlphaBacktestRunRecord(run_name="bench"))
            start = time.perf_counter()
            written = repo.save_prediction_audit(str(run.run_id), batch)
            seconds.append(time.perf_counter() - start)
            if written != expected:
                raise RuntimeError(f"wrote {written} rows, expected {expected}")
    finally:
        db.dispose()
    return seconds


@contextmanager
def scratch_postgresql(admin_url: str) -> Iterator[str]:
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"alphaswarm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield (
            make_url(admin_url)
            .set(drivername="postgresql+psycopg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per save (default 1,000,000)")
    parser.add_argument(
        "--symbols", type=int, default=500, help="symbols (columns) of the batch (default 500)"
    )
    parser.add_argument(
        "--nan-share", type=float, default=0.05, help="share of cells without a prediction (default 0.05)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="saves per backend (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ALPHASWARM_BENCH_PG_URL", DEFAULT_PG_URL),
        help="PostgreSQL admin URL",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgresql", action="store_true")
    args = parser.parse_args(argv)

    print("$ " + " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]))
    batch, expected = make_batch(args.rows, args.symbols, args.nan_share, args.seed)
    n_dates = len(batch.dates)
    print(
        f"batch: {n_dates} dates x {args.symbols} symbols x {len(FIELDS)} fields, {expected:,} rows with a prediction\n"
    )

    results: list[tuple[str, list[float] | str]] = []
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="alphaswarm-bench-") as tmp:
            results.append(
                (
                    "sqlite",
                    time_backend(f"sqlite:///{Path(tmp) / 'catalog.db'}", batch, expected, args.repeat),
                )
            )
    if not args.skip_postgresql:
        try:
            with scratch_postgresql(args.pg_url) as url:
                results.append(("postgresql (COPY)", time_backend(url, batch, expected, args.repeat)))
        except psycopg.OperationalError as exc:
            results.append(("postgresql (COPY)", f"unavailable: {str(exc).splitlines()[0]}"))

    header = f"{'backend':<20} {'rows':>11} {'saves':>6} {'median s':>9} {'best s':>8} {'rows/s (median)':>16} {'rows/s (best)':>14}"
    print(header)
    print("-" * len(header))
    for name, outcome in results:
        if isinstance(outcome, str):
            print(f"{name:<20} {outcome}")
            continue
        median, best = statistics.median(outcome), min(outcome)
        print(
            f"{name:<20} {expected:>11,} {len(outcome):>6} {median:>9.3f} {best:>8.3f} "
            f"{expected / median:>16,.0f} {expected / best:>14,.0f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
