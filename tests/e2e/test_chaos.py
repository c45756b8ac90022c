"""Crash chaos: a server and three workers on one PostgreSQL, workers SIGKILLed
at random moments and restarted, at least 20 times. Nothing may be lost or
counted twice."""

from __future__ import annotations

import random
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

ORDERS = 5
QUANTITY = 15_000
KILLS = 20


def test_sigkilled_workers_lose_nothing_and_count_nothing_twice(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    rng = random.Random(20261129)
    ledger = tmp_path / "ledger.jsonl"
    port = free_port()
    common = {
        "sim_ledger_path": ledger,
        "task_lease_seconds": 1.5,
        "worker_heartbeat_seconds": 0.3,
        "worker_rescue_interval_seconds": 0.3,
        "max_attempts": 100,
        "sim_latency_ms": 400,
        "worker_concurrency": 3,
        "worker_batch_size": 3,
    }
    server = Proc(
        ["serve"],
        service_env(db_url, port=port, worker_enabled="false", **common),
        tmp_path / "server.log",
    )
    worker_env = service_env(db_url, **common)
    spawned = 0

    def spawn() -> Proc:
        nonlocal spawned
        spawned += 1
        return Proc(["worker"], worker_env, tmp_path / f"worker-{spawned}.log")

    workers = [spawn() for _ in range(3)]
    base = f"http://127.0.0.1:{port}"
    headers = {"X-Api-Key": OPERATOR_KEY}
    try:
        wait_until(lambda: health_is_up(base), within=30, what="server up")
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            for i in range(ORDERS):
                response = client.post(
                    "/api/orders", json={"quantity": QUANTITY, "target": f"chaos-{i}"}
                )
                assert response.status_code == 201, response.text
        kills = 0
        while kills < KILLS:
            time.sleep(rng.uniform(0.2, 0.9))
            victim = rng.randrange(len(workers))
            workers[victim].kill()
            workers[victim].close()
            workers[victim] = spawn()
            kills += 1
        assert open_tasks(sql) > 0, "the orders must still be running when the kills end"
        wait_until(
            lambda: open_tasks(sql) == 0,
            within=240,
            interval=0.2,
            what="every task settled after the chaos",
        )
        with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
            orders = client.get("/api/orders", params={"limit": 50}).json()["items"]
            check = client.get("/api/admin/invariants/all").json()
    finally:
        for proc in workers:
            proc.close()
        server.terminate()
        server.close()

    assert check["passed"] is True, check
    assert check["ordersChecked"] == ORDERS
    assert len(orders) == ORDERS
    for order in orders:
        assert order["status"] == "COMPLETED"
        assert order["delivered"] == QUANTITY
        assert order["failedPermanentPlays"] == 0
    report = ledger_report(sql, ledger)
    assert report["lost"] == 0, report
    assert report["double_counted"] == 0, report
    assert report["completed_before_accepted"] == 0, report
    assert report["units_delivered"] == ORDERS * QUANTITY == report["units_in_completed_tasks"]
    rescued = sql.execute("SELECT count(*) FROM order_tasks WHERE orphanings > 0").fetchone()
    assert rescued is not None
    assert rescued[0] > 0, "kills must have orphaned some tasks"
    assert violations(sql) == []
