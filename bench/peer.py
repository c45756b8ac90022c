"""The peer: Procrastinate draining the same number of no-op jobs on the
same server, measured exactly like the engine.

Its workers start on an empty queue and are ready once their LISTEN
connection is up; the jobs are then deferred in one transaction through
Procrastinate's own `procrastinate_defer_jobs_v1` (what `batch_defer`
calls), and `procrastinate_jobs` is polled until every job has succeeded.
Window (from the commit, and the busy window), CPU and RSS as for the engine.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import sys
from typing import Any

import psycopg

from bench.config import BenchConfig
from bench.pg import (
    PEER_DB,
    BenchServer,
    PostgresCpu,
    backend_pid,
    peak_rss_bytes,
    process_cpu_seconds,
    settle,
)
from bench.procrastinate_worker import QUEUE, TASK_NAME, build_app
from bench.procs import Child, clean_env, start, stop, wait_until
from bench.window import DrainProbe, watch_drain

_DEFER = """
SELECT cardinality(procrastinate_defer_jobs_v1(ARRAY(
    SELECT ROW(%(queue)s, %(task)s, 0, NULL, NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1
    FROM generate_series(1, %(jobs)s))))
"""


def create_peer_database(server: BenchServer) -> str:
    url = server.recreate_database(PEER_DB)

    async def apply() -> None:
        app = build_app(url, pool_size=2)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    asyncio.run(apply())
    return url


def reset_peer(admin: psycopg.Connection[Any]) -> None:
    admin.execute(
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers, "
        "procrastinate_periodic_defers CASCADE"
    )
    settle(admin, ("procrastinate_jobs", "procrastinate_events", "procrastinate_workers"))


def listeners(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND query ILIKE 'LISTEN%%' AND state = 'idle'",
        (PEER_DB,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def run_peer(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    cpu: PostgresCpu,
    tag: str,
) -> dict[str, Any]:
    jobs = cfg.peer_job_count
    reset_peer(admin)
    argv = [
        sys.executable, "-m", "bench.procrastinate_worker", url,
        "--concurrency", str(cfg.peer_concurrency),
        "--delete-jobs", cfg.peer_delete_jobs,
    ]  # fmt: skip
    workers: list[Child] = [
        start(f"{tag}-procrastinate-{i}", argv, clean_env({}), cfg.out_dir / "logs")
        for i in range(cfg.peer_processes)
    ]
    try:
        wait_until(
            lambda: listeners(admin) >= len(workers),
            timeout=90,
            what="Procrastinate workers to listen",
            children=workers,
        )
        me = backend_pid(admin)
        cpu_w0 = process_cpu_seconds(w.pid for w in workers)
        pg0 = cpu.snapshot()
        with admin.transaction():
            row = admin.execute(
                _DEFER, {"queue": QUEUE, "task": TASK_NAME, "jobs": jobs}
            ).fetchone()
            if row is None or int(row[0]) != jobs:
                raise RuntimeError(f"deferred {row} jobs, expected {jobs}")
            stamp = admin.execute("SELECT clock_timestamp()").fetchone()
        assert stamp is not None
        t0 = stamp[0]
        busy = watch_drain(
            admin,
            drain_probe(cfg.peer_delete_jobs),
            total=jobs,
            items=jobs,
            cpu=cpu,
            worker_pids=[w.pid for w in workers],
            children=workers,
            timeout=cfg.run_timeout,
        )
        pg1 = cpu.snapshot()
        cpu_w1 = process_cpu_seconds(w.pid for w in workers)
        rss = [peak_rss_bytes(w.pid) for w in workers]
    finally:
        stop(workers)
    _check_succeeded(admin, jobs)
    seconds = (busy.closed_at - t0).total_seconds()
    return {
        "version": importlib.metadata.version("procrastinate"),
        "processes": cfg.peer_processes,
        "concurrency": cfg.peer_concurrency,
        "delete_jobs": cfg.peer_delete_jobs,
        "jobs": jobs,
        "seconds": seconds,
        "jobs_per_s": jobs / seconds,
        "worker_cpu_s_per_1k": (cpu_w1 - cpu_w0) / jobs * 1000,
        "pg_cpu_s_per_1k": PostgresCpu.seconds_between(pg0, pg1, exclude=[me]) / jobs * 1000,
        "worker_peak_rss_mb": max(rss) / 2**20 if rss else 0.0,
        **busy.as_dict(),
    }


_ANY_LEFT = (
    "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing')), "
    "clock_timestamp()"
)


def drain_probe(delete_jobs: str) -> DrainProbe:
    """Finished jobs keep their row and status by default (delete_jobs=never);
    otherwise they are counted by the rows gone. Jobs still to do are found
    through Procrastinate's partial index of open jobs."""
    if delete_jobs == "never":
        finished = (
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), clock_timestamp() "
            "FROM procrastinate_jobs"
        )
    else:
        finished = "SELECT %(total)s - count(*), clock_timestamp() FROM procrastinate_jobs"
    return DrainProbe(finished=finished, any_left=_ANY_LEFT)


def _check_succeeded(admin: psycopg.Connection[Any], jobs: int) -> None:
    left = admin.execute(
        "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
    ).fetchone()
    assert left is not None
    if int(left[0]):
        raise RuntimeError(f"{left[0]} of {jobs} Procrastinate jobs did not succeed")
