"""Throughput of 1..N `goodfellaz17 worker` processes on one PostgreSQL.

The same latency-bound workload for each count (simulated backend, 50 ms per
delivery, 2 tasks at a time per worker by default), so the figures show how
delivery scales with processes until the CPU (or the database) is the limit.

    .venv/bin/python bench/scale_out.py [--workers 1 2 4 8] [--orders 10]
        [--latency-ms 50] [--concurrency 2]

Uses a temporary embedded PostgreSQL (removed afterwards). Prints figures;
asserts nothing. tests/e2e/test_scale_out.py runs a small version with
assertions in `make test`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.scaleout import TASKS_PER_ORDER, measure, worker_env

from goodfellaz17.db.migrate import apply_migrations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--orders", type=int, default=10, help=f"{TASKS_PER_ORDER} tasks each")
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

    with tempfile.TemporaryDirectory(prefix="gf-scale-") as tmp:
        work = Path(tmp)
        server = pgserver.get_server(work / "pgdata", cleanup_mode="stop")
        try:
            url = server.get_uri()
            apply_migrations(url)
            env = worker_env(
                url,
                work / "ledger.jsonl",
                sim_latency_ms=args.latency_ms,
                worker_concurrency=args.concurrency,
            )
            print(
                f"{os.cpu_count()} CPUs, {args.orders * TASKS_PER_ORDER} tasks per run, "
                f"{args.latency_ms:g} ms per delivery, concurrency {args.concurrency} per worker"
            )
            baseline = None
            with psycopg.connect(url, autocommit=True) as sql:
                for workers in args.workers:
                    logs = work / f"run{workers}"
                    logs.mkdir()
                    run = measure(sql, env, workers, args.orders, logs, timeout=600)
                    baseline = baseline or run.tasks_per_second
                    print(
                        f"  {workers:>3} worker(s): {run.tasks_per_second:8.1f} tasks/s "
                        f"({run.seconds:6.2f} s, x{run.tasks_per_second / baseline:.2f})"
                    )
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
