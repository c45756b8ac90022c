"""The physical limit: the queue cycle in pure SQL, driven by pgbench.

Two scripts, both on the product's schema with its accounting triggers:

- `product`: the engine's own `task_claim_batch` and `task_record_outcomes`
  (all successes, as in the instant benchmark),
  read from src/goodfellaz17/db/queries.sql at run time (so the limit
  follows the SQL as it is tuned). What is left between this and the
  engine is the engine's own overhead: Python, round trips, extra queries.
- `minimal`: bench/pgbench/minimal_cycle.sql, a bare SKIP LOCKED claim
  and a completion: the ceiling for this schema.

Each cycle is two statements and two commits (claim, then complete), as a
worker that must not lose a claim while executing it. pgbench runs a fixed
number of cycles per client (`-t`) on a queue loaded with at least that
many tasks, so no claim comes back short; the run is checked afterwards.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bench.config import BenchConfig
from bench.pg import (
    BenchServer,
    CpuSnapshot,
    Load,
    PostgresCpu,
    backend_pid,
    load_queued_orders,
    orders_for_tasks,
    reset_product,
    settle,
)
from goodfellaz17.db.queries import load_queries

MINIMAL_SCRIPT = Path(__file__).parent / "pgbench" / "minimal_cycle.sql"
_PARAM = re.compile(r"%\((\w+)\)s")
CLAIM_PARAMS = {"limit", "worker_id", "lease_seconds", "from_position", "node_offset"}
COMPLETE_PARAMS = {"done_ids", "done_tokens"}
# The failure half of task_record_outcomes is empty in this cycle.
COMPLETE_LITERALS = {
    "failed_ids": "'{}'",
    "failed_tokens": "'{}'",
    "errors": "'{}'",
    "permanent": "'{}'",
    "delays": "'{}'",
    "max_attempts": "5",
}
PGBENCH_VARS = {"worker_id": "pgbench", "lease_seconds": "300", "from_position": "-Infinity"}


class ScriptError(ValueError):
    pass


def to_pgbench(
    sql: str, known: set[str], query: str, literals: dict[str, str] | None = None
) -> str:
    """psycopg `%(name)s` parameters become pgbench `:name` variables, or the
    given SQL literals."""
    for name, literal in (literals or {}).items():
        sql = sql.replace(f"%({name})s", literal)
    unknown = sorted(set(_PARAM.findall(sql)) - known)
    if unknown:
        raise ScriptError(
            f"{query} has parameter(s) {', '.join(unknown)} that bench/queue_cycle.py "
            "does not know: give them a pgbench value there"
        )
    return _PARAM.sub(r":\1", sql).replace("%%", "%")


def product_script() -> str:
    q = load_queries()
    claim = to_pgbench(q["task_claim_batch"], CLAIM_PARAMS, "task_claim_batch")
    complete = to_pgbench(
        q["task_record_outcomes"], COMPLETE_PARAMS, "task_record_outcomes", COMPLETE_LITERALS
    )
    return (
        "-- Generated from src/goodfellaz17/db/queries.sql by bench/queue_cycle.py.\n"
        "\\set node_offset random(0, 65535)\n"
        f"WITH claimed AS (\n{claim}\n)\n"
        "SELECT COALESCE(array_agg(id), '{}') AS done_ids, "
        "COALESCE(array_agg(fencing_token), '{}') AS done_tokens\n"
        "FROM claimed\n"
        "\\gset\n"
        f"{complete};\n"
    )


def script_for(variant: str, out_dir: Path) -> Path:
    if variant == "minimal":
        return MINIMAL_SCRIPT
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "product_cycle.sql"
    path.write_text(product_script())
    return path


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)
_RETRIED = re.compile(r"^number of transactions retried: (\d+)", re.MULTILINE)
# With --verbose-errors pgbench prints each failed or retried command's error.
_ERROR = re.compile(r"(ERROR: .*)$", re.MULTILINE)


def parse_output(text: str) -> tuple[float, int]:
    tps = _TPS.search(text)
    if tps is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{text[-2000:]}")
    failed = _FAILED.search(text)
    return float(tps.group(1)), int(failed.group(1)) if failed else 0


def _run_watching(
    argv: list[str],
    cpu: PostgresCpu,
    before: CpuSnapshot,
    timeout: float,
    env: dict[str, str] | None = None,
) -> tuple[str, str, int, CpuSnapshot]:
    """Run pgbench, sampling the server's processes meanwhile so that its
    backends are known (and their CPU accounted for) after they exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, text=True, env=env)
        seen = before
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            snap = cpu.snapshot()
            merged = {**seen.live, **snap.live}
            seen = CpuSnapshot(at=snap.at, reaped=snap.reaped, live=merged)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"pgbench still running after {timeout:.0f}s")
            time.sleep(0.1)
        out.seek(0)
        err.seek(0)
        return out.read(), err.read(), proc.returncode, seen


@dataclass(frozen=True)
class PgbenchRun:
    cycles: int  # transactions (script runs) over all clients
    failed: int
    retried: int  # cycles run again after a serialization failure or deadlock
    errors: tuple[str, ...]  # the distinct errors behind failures and retries
    seconds: float  # pgbench's own busy time: cycles / tps
    wall_seconds: float
    pg_cpu_s: float  # the server's CPU meanwhile, the caller's connection left out


def run_pgbench(
    server: BenchServer,
    cpu: PostgresCpu,
    admin: psycopg.Connection[Any],
    dbname: str,
    script: Path,
    *,
    clients: int,
    cycles: int,
    defines: dict[str, str],
    timeout: float,
    env: dict[str, str] | None = None,
    max_tries: int = 1,
) -> PgbenchRun:
    """pgbench running `script` `cycles` times per client (`-M prepared`),
    with the server's CPU measured meanwhile (`admin`'s backend left out).
    With `max_tries` > 1 a cycle that hits a serialization failure or a
    deadlock runs again from its start (pgbench's own retry), up to that
    many times; the retries are counted."""
    argv = [
        str(server.bin_dir / "pgbench"),
        "-h", server.socket_dir,
        "-U", "postgres",
        "-n",  # no vacuum of pgbench's own tables: there are none
        "-M", "prepared",
        "-f", str(script),
        "-c", str(clients),
        "-j", str(min(clients, 2)),
        "-t", str(cycles),
        "--max-tries", str(max_tries),
        "--verbose-errors",
    ]  # fmt: skip
    for name, value in defines.items():
        argv += ["-D", f"{name}={value}"]
    argv.append(dbname)
    me = backend_pid(admin)
    before = cpu.snapshot()
    started = time.monotonic()
    stdout, stderr, code, seen = _run_watching(argv, cpu, before, timeout, env)
    wall = time.monotonic() - started
    after = cpu.snapshot_after_exits(before, seen)
    if code != 0:
        raise RuntimeError(f"pgbench failed ({code}):\n{stderr[-2000:]}")
    tps, failed = parse_output(stdout)
    retried = _RETRIED.search(stdout)
    return PgbenchRun(
        cycles=clients * cycles,
        failed=failed,
        retried=int(retried.group(1)) if retried else 0,
        errors=tuple(sorted(set(_ERROR.findall(stderr))))[:5],
        seconds=clients * cycles / tps,
        wall_seconds=wall,
        pg_cpu_s=PostgresCpu.seconds_between(before, after, exclude=[me]),
    )


def run_once(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    dbname: str,
    variant: str,
    clients: int,
    cpu: PostgresCpu,
    *,
    tasks: int | None = None,
    queue: str = "small",
    batch: int | None = None,
) -> dict[str, Any]:
    """One pgbench run on a queue of about `tasks` tasks (default: the
    configured size) claiming `batch` per statement (default: the configured
    batch); `queue` labels the size in the results."""
    batch = batch or cfg.batch
    cycles = max(1, (tasks or cfg.pgbench_task_count) // (batch * clients))
    needed = cycles * clients * batch
    reset_product(admin)
    load: Load = load_queued_orders(
        admin,
        orders_for_tasks(needed, cfg.quantity, cfg.task_size),
        quantity=cfg.quantity,
        task_size=cfg.task_size,
    )
    settle(admin, ("orders", "order_tasks"))
    run = run_pgbench(
        server,
        cpu,
        admin,
        dbname,
        script_for(variant, cfg.out_dir),
        clients=clients,
        cycles=cycles,
        defines={"limit": str(batch), **PGBENCH_VARS},
        timeout=cfg.run_timeout,
    )
    row = admin.execute(
        "SELECT count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FROM order_tasks"
    ).fetchone()
    assert row is not None
    completed = int(row[0])
    if run.failed or completed != needed:
        raise RuntimeError(
            f"pgbench {variant} c={clients}: {run.failed} failed cycles, {completed} tasks "
            f"completed of {needed} expected (of {load.tasks} queued); {run.errors}"
        )
    return {
        "variant": variant,
        "queue": queue,
        "clients": clients,
        "batch": batch,
        "cycles": run.cycles,
        "tasks": completed,
        "seconds": run.seconds,
        "wall_seconds": run.wall_seconds,
        "tasks_per_s": completed / run.seconds,
        "pg_cpu_s_per_1k": run.pg_cpu_s / completed * 1000,
        "pg_cores": run.pg_cpu_s / run.wall_seconds,
    }
