"""A bounded crash-chaos soak (not a test): the server and three worker
processes on one PostgreSQL, orders submitted continuously, a random worker
SIGKILLed at a random moment every few seconds and restarted. At the end it
lets the backlog settle and prints one line of JSON on stdout:

    kills             SIGKILLs done
    units_ordered     sum of the orders' quantities
    delivered         sum of orders.delivered
    dead_lettered     sum of orders.failed_permanent_plays
    lost              units counted as delivered without an accepted delivery
                      of the completing claim in the simulated backend's ledger
                      (must be 0)
    double_counted    completing claims the backend accepted more than once
                      (must be 0)
    completed_before_accepted
                      tasks completed before the claim holding them had its
                      delivery accepted, i.e. by a stale claim (must be 0)
    unsettled_units   units neither delivered nor dead-lettered once settled
    orphaned_tasks    tasks a killed worker held (EXECUTING) at its death
    max_orphan_recovery_seconds (and the median)
                      over all kills: from the kill (the database's clock) to
                      the last of that worker's tasks being rescued (the
                      rescue's executed_at, polled every 0.1 s; when the next
                      claim's outcome has already overwritten it, that claim's
                      started_at, counted in orphan_recoveries_timed_by_reclaim)
    invariants_passed GET /api/admin/invariants/all

Progress goes to stderr. Exit status 0 when nothing was lost, nothing was
counted twice, everything settled and the invariants passed; 1 otherwise.

    .venv/bin/python bench/chaos.py [--minutes 5 | --seconds N] [--seed N]

Uses a throw-away embedded PostgreSQL (pgserver), removed afterwards; the
processes are the ones tests/e2e/test_chaos.py runs, with the same short lease.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' process helpers

from tests.conftest import OPERATOR_KEY
from tests.e2e.ledger import ledger_report
from tests.e2e.procs import Proc, service_env
from tests.helpers import free_port, wait_until

from goodfellaz17.db.migrate import apply_migrations

WORKERS = 3
PROCESS_SETTINGS = {
    "task_lease_seconds": 1.5,
    "worker_heartbeat_seconds": 0.3,
    "worker_rescue_interval_seconds": 0.3,
    "max_attempts": 100,
    "sim_latency_ms": 400,
    "worker_concurrency": 3,
    "worker_batch_size": 3,
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Kill:
    at: datetime  # the database's clock, right after the process died
    orphans: dict[str, int]  # task id -> the fencing token the dead worker held
    recovered_at: dict[str, datetime] = field(default_factory=dict)

    @property
    def recovery_seconds(self) -> float | None:
        if len(self.recovered_at) < len(self.orphans) or not self.orphans:
            return None
        return max((t - self.at).total_seconds() for t in self.recovered_at.values())


class OrphanWatch:
    """Polls the tasks each killed worker held until every one of them is
    rescued or re-claimed, and notes when, by the database's timestamps."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.kills: list[Kill] = []
        self.upper_bounds = 0  # recoveries timed by the re-claim, not the rescue
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def record_kill(self, conn: psycopg.Connection[Any], pid: int) -> Kill:
        row = conn.execute("SELECT now()").fetchone()
        assert row is not None
        held = conn.execute(
            """SELECT t.id::text, t.fencing_token FROM order_tasks t
               JOIN workers w ON w.id = t.lease_owner
               WHERE t.status = 'EXECUTING' AND w.pid = %s""",
            (pid,),
        ).fetchall()
        kill = Kill(at=row[0], orphans=dict(held))
        with self._lock:
            self.kills.append(kill)
        return kill

    def pending(self) -> int:
        with self._lock:
            return sum(len(k.orphans) - len(k.recovered_at) for k in self.kills)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.1):
                with self._lock:
                    open_kills = [k for k in self.kills if len(k.recovered_at) < len(k.orphans)]
                for kill in open_kills:
                    self._check(conn, kill)

    def _check(self, conn: psycopg.Connection[Any], kill: Kill) -> None:
        waiting = [t for t in kill.orphans if t not in kill.recovered_at]
        rows = conn.execute(
            """SELECT id::text, status, fencing_token, executed_at, started_at, last_error
               FROM order_tasks WHERE id = ANY(%s::uuid[])""",
            (waiting,),
        ).fetchall()
        for task_id, status, token, executed_at, started_at, last_error in rows:
            if token == kill.orphans[task_id]:
                if status == "EXECUTING":
                    continue  # still orphaned, lease not yet expired or not yet rescued
                if status == "COMPLETED":
                    # The dead worker's last commit landed as it died: not an orphan.
                    with self._lock:
                        del kill.orphans[task_id]
                    continue
            # The rescue writes executed_at and last_error, which a re-claim
            # keeps: exact until the new claim's own outcome overwrites them;
            # then the re-claim's started_at, just after the rescue, bounds it.
            exact = (last_error or "").startswith("orphaned") and status != "COMPLETED"
            with self._lock:
                kill.recovered_at[task_id] = executed_at if exact else started_at
                if not exact:
                    self.upper_bounds += 1


def submit_orders(base: str, stop: threading.Event, rng: random.Random, every: float) -> list[str]:
    submitted: list[str] = []
    with httpx.Client(base_url=base, headers={"X-Api-Key": OPERATOR_KEY}, timeout=30) as client:
        while not stop.is_set():
            quantity = rng.randint(2_000, 15_000)
            response = client.post(
                "/api/orders", json={"quantity": quantity, "target": f"soak-{len(submitted)}"}
            )
            if response.status_code != 201:
                raise SystemExit(f"order refused: {response.status_code} {response.text}")
            submitted.append(response.json()["id"])
            stop.wait(rng.uniform(0.5, 1.5) * every)
    return submitted


def open_tasks(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT count(*) FROM order_tasks"
        " WHERE status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')"
    ).fetchone()
    assert row is not None
    return int(row[0])


def totals(conn: psycopg.Connection[Any]) -> dict[str, int]:
    row = conn.execute(
        """SELECT count(*), COALESCE(sum(quantity), 0), COALESCE(sum(delivered), 0),
                  COALESCE(sum(failed_permanent_plays), 0),
                  COALESCE(sum(quantity - delivered - failed_permanent_plays), 0)
           FROM orders"""
    ).fetchone()
    assert row is not None
    keys = ("orders", "units_ordered", "delivered", "dead_lettered", "unsettled_units")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def soak(
    url: str, workdir: Path, seconds: float, seed: int, order_every: float, settle: float
) -> dict[str, Any]:
    rng = random.Random(seed)
    ledger = workdir / "ledger.jsonl"
    settings = {**PROCESS_SETTINGS, "sim_ledger_path": ledger}
    port = free_port()
    server = Proc(
        ["serve"],
        service_env(url, port=port, worker_enabled="false", **settings),
        workdir / "server.log",
    )
    worker_env = service_env(url, **settings)
    spawned = 0

    def spawn() -> Proc:
        nonlocal spawned
        spawned += 1
        return Proc(["worker"], worker_env, workdir / f"worker-{spawned}.log")

    workers = [spawn() for _ in range(WORKERS)]
    base = f"http://127.0.0.1:{port}"
    watch = OrphanWatch(url)
    stop_orders = threading.Event()
    submitted: list[str] = []
    kills = 0
    say(f"logs and ledger in {workdir}")
    try:
        wait_until(lambda: _up(base), within=60, what="server up")
        submitter = threading.Thread(
            target=lambda: submitted.extend(submit_orders(base, stop_orders, rng, order_every)),
            name="orders",
            daemon=True,
        )
        submitter.start()
        watch.start()
        with psycopg.connect(url, autocommit=True) as conn:
            ends = time.monotonic() + seconds
            while time.monotonic() < ends:
                time.sleep(rng.uniform(0.5, 3.0))
                victim = rng.randrange(WORKERS)
                pid = workers[victim].pid
                workers[victim].kill()
                kill = watch.record_kill(conn, pid)
                workers[victim].close()
                workers[victim] = spawn()
                kills += 1
                if kills % 10 == 0:
                    say(f"{kills} kills, last orphaned {len(kill.orphans)} task(s)")
            stop_orders.set()
            submitter.join(timeout=60)
            say(f"soak over after {kills} kills; settling {open_tasks(conn)} open task(s)")
            wait_until(
                lambda: open_tasks(conn) == 0 and watch.pending() == 0,
                timeout=settle,
                interval=0.2,
                message="every task settled and every orphan recovered",
            )
        with httpx.Client(base_url=base, headers={"X-Api-Key": OPERATOR_KEY}, timeout=60) as c:
            check = c.get("/api/admin/invariants/all").json()
    finally:
        stop_orders.set()
        watch.stop()
        for proc in workers:
            proc.close()
        server.terminate()
        server.close()

    with psycopg.connect(url, autocommit=True) as conn:
        report = ledger_report(conn, ledger)
        counted = totals(conn)
    recoveries = [k.recovery_seconds for k in watch.kills if k.recovery_seconds is not None]
    return {
        "seconds": round(seconds),
        "kills": kills,
        "orders": counted["orders"],
        "units_ordered": counted["units_ordered"],
        "delivered": counted["delivered"],
        "dead_lettered": counted["dead_lettered"],
        "lost": report["lost"],
        "double_counted": report["double_counted"],
        "completed_before_accepted": report["completed_before_accepted"],
        "unsettled_units": counted["unsettled_units"],
        "redelivered_after_rescue": report["redelivered_after_rescue"],
        "orphaned_tasks": sum(len(k.orphans) for k in watch.kills),
        "max_orphan_recovery_seconds": round(max(recoveries), 3) if recoveries else None,
        "median_orphan_recovery_seconds": (
            round(statistics.median(recoveries), 3) if recoveries else None
        ),
        "orphan_recoveries_timed_by_reclaim": watch.upper_bounds,
        "invariants_passed": bool(check["passed"]),
        "invariant_violations": check["violationCount"],
    }


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/actuator/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=5.0, help="soak length (default 5)")
    length.add_argument("--seconds", type=float, help="soak length in seconds")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--order-every", type=float, default=5.0, help="seconds between orders")
    parser.add_argument("--settle", type=float, default=300.0, help="longest wait to settle")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(
            tempfile.mkdtemp(prefix="gf-chaos-soak-pg-"), cleanup_mode="delete"
        )
    workdir = Path(tempfile.mkdtemp(prefix="gf-chaos-soak-logs-"))
    try:
        url: str = server.get_uri()
        apply_migrations(url)
        result = soak(url, workdir, seconds, args.seed, args.order_every, args.settle)
    finally:
        with contextlib.suppress(Exception):
            server.cleanup()
    print(json.dumps(result), flush=True)
    healthy = (
        result["lost"] == 0
        and result["double_counted"] == 0
        and result["completed_before_accepted"] == 0
        and result["unsettled_units"] == 0
        and result["invariants_passed"]
    )
    if healthy:
        shutil.rmtree(workdir, ignore_errors=True)  # kept for a look when something is wrong
    sys.exit(0 if healthy else 1)


if __name__ == "__main__":
    main()
