"""How long a /metrics scrape takes with a big order_tasks table.

Loads TASKS tasks (default 1,000,000) spread over orders of 400 tasks in a
mix of states (mostly COMPLETED, a backlog of PENDING, some retrying,
dead-lettered and executing), then times scrapes of /metrics through the app
(no worker), and the gauge statement alone, before and after VACUUM (a fresh
table has no visibility map yet, so index-only scans still visit the heap;
autovacuum sets it in production).

    .venv/bin/python bench/metrics_scrape.py [--tasks 1000000] [--scrapes 30]

Uses DATABASE_URL when set (a throw-away database!), else a temporary
embedded PostgreSQL that is removed afterwards. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from goodfellaz17.api.app import create_app
from goodfellaz17.db.migrate import apply_migrations
from goodfellaz17.settings import load_settings

KEY = "bench-read-key-0123456789"
TASKS_PER_ORDER = 400
CHUNK_ORDERS = 250  # 100,000 tasks per statement

LOAD_ORDERS = """
INSERT INTO orders (quantity, target, backend, task_count, created_at)
SELECT %(per_order)s * 400, 'bench-' || g, 'simulated', %(per_order)s,
       now() - make_interval(mins => g %% 600)
FROM generate_series(1, %(orders)s) g
"""

# Status by a hash of (order, seq): 70 % COMPLETED, 20 % PENDING, 4 % retrying,
# 5 % dead-lettered, 1 % EXECUTING (half of those claimed over 5 minutes ago).
LOAD_TASKS = """
WITH o AS (
    SELECT id, created_at, row_number() OVER (ORDER BY id) AS n
    FROM orders WHERE target LIKE 'bench-%%'
    ORDER BY id OFFSET %(offset)s LIMIT %(limit)s
), t AS (
    SELECT o.id AS order_id, o.created_at, s.seq,
           abs(hashtext(o.id::text || s.seq)) %% 100 AS bucket
    FROM o, generate_series(0, %(per_order)s - 1) s(seq)
)
INSERT INTO order_tasks (order_id, seq, quantity, status, attempts, retry_after, last_error,
                         executed_at, queue_position, lease_owner, lease_expires_at,
                         fencing_token, started_at, created_at)
SELECT order_id, seq, 400,
       CASE WHEN bucket < 70 THEN 'COMPLETED' WHEN bucket < 90 THEN 'PENDING'
            WHEN bucket < 94 THEN 'FAILED_RETRYING' WHEN bucket < 99 THEN 'FAILED_PERMANENT'
            ELSE 'EXECUTING' END,
       CASE WHEN bucket < 70 THEN 1 WHEN bucket < 90 THEN 0 ELSE 2 END,
       CASE WHEN bucket BETWEEN 90 AND 93 THEN now() + interval '1 minute' END,
       CASE WHEN bucket BETWEEN 90 AND 98 THEN 'bench failure' END,
       CASE WHEN bucket < 70 OR bucket BETWEEN 90 AND 98 THEN now() END,
       extract(epoch FROM created_at) + seq,
       CASE WHEN bucket >= 99 THEN 'bench-worker' END,
       CASE WHEN bucket >= 99 THEN now() + interval '5 minutes' END,
       CASE WHEN bucket >= 99 THEN nextval('order_tasks_fencing_token_seq') END,
       CASE WHEN bucket >= 99 THEN now() - make_interval(mins => seq %% 10) END,
       created_at
FROM t
"""


def load(url: str, tasks: int) -> None:
    orders = max(1, tasks // TASKS_PER_ORDER)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(LOAD_ORDERS, {"orders": orders, "per_order": TASKS_PER_ORDER})
        for offset in range(0, orders, CHUNK_ORDERS):
            conn.execute(
                LOAD_TASKS,
                {"offset": offset, "limit": CHUNK_ORDERS, "per_order": TASKS_PER_ORDER},
            )
        conn.execute("ANALYZE")
        count = conn.execute("SELECT count(*) FROM order_tasks").fetchone()
        print(f"loaded {count[0] if count else 0:,} tasks in {time.perf_counter() - started:.1f} s")


def time_statement(url: str, runs: int) -> list[float]:
    from goodfellaz17.db.queries import load_queries

    query = load_queries()["metrics_gauges"]
    timings = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(query, {"stale_after_seconds": 30.0}).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


async def time_scrapes(url: str, runs: int) -> tuple[list[float], str]:
    settings = load_settings(
        DATABASE_URL=url, api_keys=f"{KEY}:read", invariant_check_interval_seconds=0
    )
    app = create_app(settings, url, run_worker=False)
    timings = []
    body = ""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(runs):
                started = time.perf_counter()
                response = await client.get("/metrics", headers={"X-Api-Key": KEY})
                timings.append(time.perf_counter() - started)
                response.raise_for_status()
                body = response.text
    return timings, body


def report(name: str, timings: list[float]) -> None:
    ms = sorted(t * 1000 for t in timings)
    p95 = ms[max(0, int(len(ms) * 0.95) - 1)]
    print(
        f"{name:<34} n={len(ms):<3} p50={statistics.median(ms):7.1f} ms  "
        f"p95={p95:7.1f} ms  max={ms[-1]:7.1f} ms"
    )


def run(url: str, tasks: int, scrapes: int) -> None:
    apply_migrations(url)
    load(url, tasks)
    report("gauge statement (no VACUUM yet)", time_statement(url, scrapes))
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE order_tasks")
        print(f"VACUUM ANALYZE order_tasks: {time.perf_counter() - started:.1f} s")
    report("gauge statement (after VACUUM)", time_statement(url, scrapes))
    timings, body = asyncio.run(time_scrapes(url, scrapes))
    report("GET /metrics (after VACUUM)", timings)
    for line in body.splitlines():
        if line.startswith(("delivery_tasks_pending", "delivery_dead_letter_queue ")):
            print("  " + line)
        if line.startswith(("delivery_tasks_executing", "delivery_tasks_retrying")):
            print("  " + line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if url:
        run(url, args.tasks, args.scrapes)
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="gf-bench-metrics-") as tmp:
        server: Any = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            run(server.get_uri(), args.tasks, args.scrapes)
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
