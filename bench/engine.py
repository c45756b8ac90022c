"""The engine: `goodfellaz17 worker` processes on the simulated backend in
instant mode, draining orders that arrive all at once.

One run: start the workers on an empty queue and wait until each one's
LISTEN connection is up (start-up is not what is measured); insert all the
orders and their tasks in one transaction; poll `sum(orders.delivered)`
until every unit is delivered. The window runs on the database's clock from
just before the insert's commit to the poll that saw the last unit, so it
includes the NOTIFY wake-up and is at most one poll interval (10 ms) long.
The same run also gives the busy window (bench/window.py: from the first
completion to the last), the figure the same-run comparison with the other
queues uses.

Measured alongside: CPU seconds of the worker processes and of PostgreSQL
(all server processes except the benchmark's own connection), and each
worker's peak RSS (the kernel's VmHWM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.config import BenchConfig
from bench.pg import (
    BenchServer,
    Load,
    PostgresCpu,
    backend_pid,
    load_queued_orders,
    orders_for_tasks,
    peak_rss_bytes,
    process_cpu_seconds,
    reset_product,
)
from bench.procs import VENV_BIN, engine_env, start_workers, stop, wait_workers_ready
from bench.window import DrainProbe, watch_drain
from goodfellaz17.domain.plan import plan_task_sizes


class RunFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class ProfileSpec:
    path: Path
    fmt: str  # py-spy --format: flamegraph, raw, speedscope
    rate: int = 100
    idle: bool = True


def insert_orders(
    admin: psycopg.Connection[Any], orders: int, cfg: BenchConfig, prefix: str
) -> tuple[Load, Any]:
    """Queue `orders` orders in one transaction; return the load and the
    database clock just before its commit."""
    with admin.transaction():
        load = load_queued_orders(
            admin, orders, quantity=cfg.quantity, task_size=cfg.task_size, prefix=prefix
        )
        row = admin.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return load, row[0]


# The engine's progress: units delivered, kept per order by the accounting
# triggers in the same transaction as each completion (a few hundred rows).
DELIVERED = DrainProbe(
    finished="SELECT COALESCE(sum(delivered), 0), clock_timestamp() FROM orders",
    any_left="SELECT COALESCE(sum(delivered), 0) < %(total)s, clock_timestamp() FROM orders",
)


def verify_run(admin: psycopg.Connection[Any], load: Load) -> dict[str, Any]:
    """Everything delivered exactly once, every invariant holding."""
    # Each claim and each completion is one statement in its own transaction,
    # so its now() is shared by exactly the tasks it moved: counting distinct
    # timestamps counts the statements (and so the average batch really sent).
    row = admin.execute(
        """
        SELECT count(*) FILTER (WHERE status = 'COMPLETED'),
               count(*), COALESCE(sum(attempts), 0),
               count(DISTINCT (lease_owner, started_at)),
               count(DISTINCT (lease_owner, executed_at))
        FROM order_tasks
        """
    ).fetchone()
    assert row is not None
    completed, total, attempts, claims, completions = (int(v) for v in row)
    bad = admin.execute("SELECT count(*) FROM v_order_invariants WHERE NOT passed").fetchone()
    assert bad is not None
    if completed != load.tasks or int(bad[0]):
        raise RunFailed(
            f"{completed} of {load.tasks} tasks completed, {bad[0]} invariant violations"
        )
    return {
        "tasks_total": total,
        "attempts": attempts,
        "claim_statements": claims,
        "complete_statements": completions,
        "avg_claim_batch": total / max(claims, 1),
        "avg_complete_batch": total / max(completions, 1),
    }


@contextlib.contextmanager
def profiling(spec: ProfileSpec | None, pid: int, log_dir: Path) -> Iterator[None]:
    """py-spy attached to one worker for the duration of the block."""
    if spec is None:
        yield
        return
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(VENV_BIN / "py-spy"), "record",
        "--pid", str(pid),
        "--rate", str(spec.rate),
        "--format", spec.fmt,
        "--output", str(spec.path),
    ]  # fmt: skip
    if spec.idle:
        argv.append("--idle")
    log = (log_dir / f"py-spy-{spec.fmt}.log").open("wb")
    spy = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)  # py-spy attaches and starts sampling
        if spy.poll() is not None:
            raise RunFailed(f"py-spy exited at once ({spy.returncode}): see {log.name}")
        yield
    finally:
        if spy.poll() is None:
            os.kill(spy.pid, signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(spy.pid, signal.SIGKILL)
            spy.wait(timeout=10)
        log.close()


def run_engine(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    *,
    orders: int,
    processes: int,
    cpu: PostgresCpu,
    tag: str,
    profile: ProfileSpec | None = None,
    reset: bool = True,
) -> dict[str, Any]:
    if reset:
        reset_product(admin)
    env = engine_env(url, server.root / "worker-data", cfg.batch, cfg.engine_env)
    log_dir = cfg.out_dir / "logs"
    workers = start_workers(processes, env, log_dir, tag)
    try:
        wait_workers_ready(admin, workers)
        me = backend_pid(admin)
        with profiling(profile, workers[0].pid, log_dir):
            cpu_w0 = process_cpu_seconds(w.pid for w in workers)
            pg0 = cpu.snapshot()
            load, t0 = insert_orders(admin, orders, cfg, prefix=f"{tag}-")
            busy = watch_drain(
                admin,
                DELIVERED,
                total=load.units,
                items=load.tasks,
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
    checks = verify_run(admin, load)
    seconds = (busy.closed_at - t0).total_seconds()
    worker_cpu = cpu_w1 - cpu_w0
    pg_cpu = PostgresCpu.seconds_between(pg0, pg1, exclude=[me])
    return {
        "processes": processes,
        "orders": load.orders,
        "tasks": load.tasks,
        "units": load.units,
        "batch": cfg.batch,
        "seconds": seconds,
        "tasks_per_s": load.tasks / seconds,
        "units_per_s": load.units / seconds,
        "worker_cpu_s_per_1k": worker_cpu / load.tasks * 1000,
        "pg_cpu_s_per_1k": pg_cpu / load.tasks * 1000,
        "worker_cores": worker_cpu / seconds,
        "pg_cores": pg_cpu / seconds,
        "worker_peak_rss_mb": max(rss) / 2**20 if rss else 0.0,
        **busy.as_dict(),
        **checks,
    }


def engine_orders_for(cfg: BenchConfig, tasks: int) -> int:
    return orders_for_tasks(tasks, cfg.quantity, cfg.task_size)


# ---------------------------------------------------------------- open transaction


def dead_tuples(admin: psycopg.Connection[Any]) -> dict[str, int]:
    rows = admin.execute(
        "SELECT relname, n_dead_tup FROM pg_stat_user_tables "
        "WHERE relname IN ('orders', 'order_tasks')"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def run_open_txn_condition(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    *,
    held: bool,
) -> dict[str, Any]:
    """One worker for `open_txn_hold_seconds` on a queue kept topped up
    (chunks of `open_txn_run_tasks` tasks, never below one chunk waiting),
    its history never removed (completed rows stay, as in production).
    Throughput is sampled in `open_txn_windows` equal windows.

    With `held`, another session holds a REPEATABLE READ snapshot open the
    whole time (a SELECT, then idle in transaction): no row version that
    dies meanwhile can be removed, by vacuum or by index scans."""
    reset_product(admin)
    env = engine_env(url, server.root / "worker-data", cfg.batch, cfg.engine_env)
    tag = "optx-held" if held else "optx-clean"
    chunk = engine_orders_for(cfg, cfg.open_txn_run_tasks)
    sizes = plan_task_sizes(cfg.quantity, cfg.task_size)
    tasks_per_unit = len(sizes) / cfg.quantity
    workers = start_workers(1, env, cfg.out_dir / "logs", tag)
    holder: psycopg.Connection[Any] | None = None
    windows: list[dict[str, Any]] = []
    try:
        wait_workers_ready(admin, workers)
        queued = 0
        for i in range(2):
            queued += insert_orders(admin, chunk, cfg, prefix=f"{tag}-{i}-")[0].units
        chunks = 2
        # A queue in production has statistics. Without them the harness's own
        # inserts plan their foreign-key checks as sequential scans of orders,
        # which under the held snapshot read every dead version and take CPU
        # from the worker being measured (the engine's own statements do not
        # depend on statistics: migration 0007). Same for both conditions.
        admin.execute("ANALYZE orders, order_tasks")
        if held:
            holder = psycopg.connect(url)
            holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            holder.execute("SELECT count(*) FROM orders").fetchone()  # snapshot taken, then idle
        window_s = cfg.open_txn_hold_seconds / cfg.open_txn_windows
        last_reads = _reads(admin)
        mark = _delivered(admin)
        deadline = time.monotonic() + cfg.open_txn_hold_seconds
        next_mark = time.monotonic() + window_s
        while len(windows) < cfg.open_txn_windows:
            workers[0].check_alive()
            delivered, at = _delivered(admin)
            if queued - delivered < chunk * cfg.quantity:
                queued += insert_orders(admin, chunk, cfg, prefix=f"{tag}-{chunks}-")[0].units
                chunks += 1
            if time.monotonic() >= next_mark:
                units = delivered - mark[0]
                seconds = (at - mark[1]).total_seconds()
                reads = _reads(admin)
                windows.append(
                    {
                        "seconds": seconds,
                        "units": units,
                        "tasks_per_s": units * tasks_per_unit / seconds,
                        "reads": {k: v - last_reads.get(k, 0) for k, v in reads.items()},
                    }
                )
                last_reads = reads
                mark = (delivered, at)
                next_mark += window_s
            time.sleep(0.2)
        dead = dead_tuples(admin)
        hold_seconds = cfg.open_txn_hold_seconds - (deadline - time.monotonic())
    finally:
        if holder is not None:
            holder.rollback()
            holder.close()
        stop(workers)
    return {"held": held, "windows": windows, "hold_seconds": hold_seconds, "dead_tuples": dead}


def _reads(admin: psycopg.Connection[Any]) -> dict[str, int]:
    """Tuples read so far, per index and per table scanned sequentially: where
    the database spends its reads, window by window."""
    rows = admin.execute(
        "SELECT indexrelname, idx_tup_read FROM pg_stat_user_indexes "
        "WHERE relname IN ('orders', 'order_tasks', 'nodes') "
        "UNION ALL SELECT relname || ' (seq)', seq_tup_read FROM pg_stat_user_tables "
        "WHERE relname IN ('orders', 'order_tasks', 'nodes')"
    ).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def _delivered(admin: psycopg.Connection[Any]) -> tuple[int, Any]:
    row = admin.execute(
        "SELECT COALESCE(sum(delivered), 0), clock_timestamp() FROM orders"
    ).fetchone()
    assert row is not None
    return int(row[0]), row[1]
