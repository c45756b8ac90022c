"""Zombie workers: a worker frozen (SIGSTOP) past its lease while it delivers,
then thawed (SIGCONT), as a long GC pause, a stalled VM or a partitioned
host would do. Its tasks are rescued and re-claimed by the other workers
meanwhile; when it wakes it finishes its deliveries and reports them with
its old fencing tokens. Those reports must change nothing: every task is
completed by the claim that holds it, after that claim's delivery was
accepted, and every unit is counted once.

A SIGKILLed worker (test_chaos.py) never reports late, so only this test
shows the fencing guard at work across processes.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import OPERATOR_KEY
from tests.e2e.ledger import ledger_report
from tests.e2e.procs import Proc, service_env
from tests.helpers import free_port, health_is_up, open_tasks, violations, wait_until

pytestmark = pytest.mark.e2e

ORDERS = 4
QUANTITY = 15_000
PAUSES = 8


def executing_by(sql: psycopg.Connection[Any], pid: int) -> int:
    row = sql.execute(
        "SELECT count(*) FROM order_tasks t JOIN workers w ON w.id = t.lease_owner"
        " WHERE t.status = 'EXECUTING' AND w.pid = %s",
        (pid,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_thawed_after_its_lease_changes_nothing_it_no_longer_holds(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rng = random.Random(7_2026)
    ledger = tmp_path / "ledger.jsonl"
    port = free_port()
    common = {
        "sim_ledger_path": ledger,
        "task_lease_seconds": 1.0,
        "worker_heartbeat_seconds": 0.2,
        "worker_rescue_interval_seconds": 0.2,
        "max_attempts": 100,
        "sim_latency_ms": 600,
        "worker_concurrency": 2,
        "worker_batch_size": 2,
    }
    server = Proc(
        ["serve"],
        service_env(db_url, port=port, worker_enabled="false", **common),
        tmp_path / "server.log",
    )
    worker_env = service_env(db_url, **common)
    workers = [Proc(["worker"], worker_env, tmp_path / f"worker-{i}.log") for i in range(3)]
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Api-Key": OPERATOR_KEY}
    frozen_with_tasks = 0
    try:
        wait_until(lambda: health_is_up(base), within=30, what="server up")
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for i in range(ORDERS):
                response = client.post(
                    "/api/orders", json={"quantity": QUANTITY, "target": f"zombie-{i}"}
                )
                assert response.status_code == 201, response.text
        for _ in range(PAUSES):
            victim = workers[rng.randrange(len(workers))]
            wait_until(
                lambda v=victim: executing_by(sql, v.pid) > 0 or open_tasks(sql) == 0,
                within=15,
                what="the victim delivering",
            )
            frozen_with_tasks += executing_by(sql, victim.pid) > 0
            os.kill(victim.pid, signal.SIGSTOP)
            try:
                time.sleep(rng.uniform(1.6, 2.6))  # the freeze itself: longer than the lease
            finally:
                os.kill(victim.pid, signal.SIGCONT)
            time.sleep(rng.uniform(0.2, 0.6))
        wait_until(
            lambda: open_tasks(sql) == 0,
            within=120,
            interval=0.2,
            what="every task settled after the freezes",
        )
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            orders = client.get("/api/orders", params={"limit": 50}).json()["items"]
            check = client.get("/api/admin/invariants/all").json()
    finally:
        for proc in workers:
            with_cont(proc)
            proc.close()
        server.terminate()
        server.close()

    assert frozen_with_tasks >= PAUSES // 2, "workers must be frozen mid-delivery"
    assert check["passed"] is True, check
    for order in orders:
        assert (order["status"], order["delivered"]) == ("COMPLETED", QUANTITY)
    report = ledger_report(sql, ledger)
    # The precondition: thawed workers did deliver for claims they had lost...
    assert report["redelivered_after_rescue"] > 0, report
    # ...and none of those late reports counted or completed anything.
    assert report["completed_before_accepted"] == 0, report
    assert report["lost"] == 0, report
    assert report["double_counted"] == 0, report
    assert report["units_delivered"] == ORDERS * QUANTITY == report["units_in_completed_tasks"]
    lost_leases = sum(proc.output().count("lease lost: outcome not recorded") for proc in workers)
    assert lost_leases > 0, "thawed workers' late reports must have been refused"
    assert violations(sql) == []


def with_cont(proc: Proc) -> None:
    """Never leave a stopped process behind (a SIGKILL works on it, but say so)."""
    if proc.popen.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
