"""Replays every curl-able endpoint of the contract's section 3 against a
live `goodfellaz17 serve` (API + worker) on loopback, started as a
subprocess on a test database, checking status codes and the named fields."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import API_KEYS, OPERATOR_KEY, ORDERS_KEY, READ_KEY
from tests.helpers import free_port, health_is_up, wait_until

pytestmark = pytest.mark.e2e

WORKER_STATUS_FIELDS = {
    "workerId",
    "totalProcessed",
    "totalCompleted",
    "totalFailed",
    "totalRetries",
    "recoveredOrphans",
    "isRunning",
}


def serve_command() -> list[str]:
    script = Path(sys.executable).parent / "goodfellaz17"
    if script.exists():
        return [str(script), "serve"]
    found = shutil.which("goodfellaz17")
    return [found, "serve"] if found else [sys.executable, "-m", "goodfellaz17", "serve"]


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[httpx.Client]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "GOODFELLAZ17_API_KEYS": API_KEYS,
        "GOODFELLAZ17_PORT": str(port),
        "GOODFELLAZ17_LOG_FORMAT": "json",
        "GOODFELLAZ17_WORKER_POLL_INTERVAL_SECONDS": "1",
        "GOODFELLAZ17_SIM_USE_NODE_RATE": "false",
        "GOODFELLAZ17_SIM_LATENCY_MS": "5",
        # Some tasks dead-letter at once, so failed-tasks has rows to show:
        # with 38 tasks, none failing has probability 0.7**38 ~ 1e-6.
        "GOODFELLAZ17_SIM_PERMANENT_FAILURE_RATE": "0.3",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(serve_command(), env=env, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited {proc.returncode}:\n{log_path.read_text()}")
        return health_is_up(f"http://127.0.0.1:{port}", timeout=10)

    try:
        wait_until(ready, 60, "the server to answer /actuator/health")
        yield client
    except BaseException:
        print(log_path.read_text()[-5000:])
        raise
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-5000:]  # graceful, not killed
    assert b"Application shutdown complete" in log_path.read_bytes()


def h(key: str = OPERATOR_KEY, **extra: str) -> dict[str, str]:
    return {"X-Api-Key": key, **extra}


def test_every_contract_endpoint_answers_on_a_live_server(
    server: httpx.Client, sql: psycopg.Connection[Any]
) -> None:
    api = server

    health = api.get("/actuator/health")
    assert health.status_code == 200
    assert health.json()["status"] == "UP"
    assert health.json()["components"]["db"]["status"] == "UP"
    assert health.json()["components"]["worker"]["status"] == "UP"

    # Authentication: 401 without or with a wrong key, 403 for too small a role.
    assert api.get("/api/admin/capacity").status_code == 401
    assert api.get("/api/admin/capacity", headers=h("nope")).json()["error"] == "unauthorized"
    forbidden = api.post("/api/admin/testing/enable", headers=h(READ_KEY), json={})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "forbidden"

    # Orders.
    body = {"quantity": 15000, "target": "e2e-target"}
    created = api.post(
        "/api/orders", headers=h(ORDERS_KEY, **{"Idempotency-Key": "e2e-1"}), json=body
    )
    assert created.status_code == 201, created.text
    order = created.json()
    order_id = order["id"]
    assert order["taskCount"] == 38
    replay = api.post(
        "/api/orders", headers=h(ORDERS_KEY, **{"Idempotency-Key": "e2e-1"}), json=body
    )
    assert replay.status_code == 200
    assert replay.json()["id"] == order_id
    got = api.get(f"/api/orders/{order_id}", headers=h(READ_KEY))
    assert got.status_code == 200
    assert {"id", "status", "quantity", "delivered", "failedPermanentPlays"} <= set(got.json())

    # The worker in this process delivers it; dead letters stay until handled.
    def settled() -> bool:
        p = api.get(f"/api/admin/orders/{order_id}/progress", headers=h(READ_KEY)).json()
        return p["tasks"]["COMPLETED"]["tasks"] + p["tasks"]["FAILED_PERMANENT"]["tasks"] == 38

    wait_until(settled, 60, "every task to be delivered or dead-lettered")
    progress = api.get(f"/api/admin/orders/{order_id}/progress", headers=h(READ_KEY))
    assert progress.status_code == 200
    p = progress.json()
    assert {"tasks", "percentComplete", "etaSeconds", "unitsPerSecond", "ageSeconds"} <= set(p)
    assert set(p["tasks"]) == {
        "PENDING",
        "EXECUTING",
        "COMPLETED",
        "FAILED_RETRYING",
        "FAILED_PERMANENT",
    }
    assert all(set(t) == {"tasks", "units"} for t in p["tasks"].values())
    dead = p["tasks"]["FAILED_PERMANENT"]
    assert dead["tasks"] > 0

    failed = api.get(f"/api/admin/orders/{order_id}/failed-tasks", headers=h(READ_KEY))
    assert failed.status_code == 200
    assert failed.json()["count"] == dead["tasks"]
    for task in failed.json()["tasks"]:
        assert task["lastError"].startswith("simulated permanent failure")
        assert task["attempts"] >= 1
        assert task["executedAt"] is not None

    status = api.get("/api/admin/worker/status", headers=h(READ_KEY))
    assert status.status_code == 200
    s = status.json()
    assert set(s) >= WORKER_STATUS_FIELDS
    assert s["isRunning"] is True
    assert s["scope"] == "process"
    assert s["totalProcessed"] >= 38
    assert s["totalCompleted"] == p["tasks"]["COMPLETED"]["tasks"]
    assert s["totalFailed"] == dead["tasks"]
    assert [w["id"] for w in s["workers"] if w["alive"]] == [s["workerId"]]

    # Invariants: one order (logged), every order, orphans.
    one = api.get(f"/api/admin/invariants/orders/{order_id}", headers=h(READ_KEY))
    assert one.status_code == 200
    assert one.json()["passed"] is True
    assert len(one.json()["checks"]) >= 6
    logged = sql.execute(
        "SELECT count(*) FROM invariant_check_log WHERE order_id = %s", (order_id,)
    ).fetchone()
    assert logged == (1,)
    every = api.get("/api/admin/invariants/all", headers=h(READ_KEY))
    assert every.status_code == 200
    assert every.json()["passed"] is True
    assert every.json()["violations"] == []
    orphans = api.get("/api/admin/invariants/orphans", headers=h(READ_KEY))
    assert orphans.status_code == 200
    assert orphans.json()["orphans"] == []

    capacity = api.get("/api/admin/capacity", headers=h(READ_KEY))
    assert capacity.status_code == 200
    c = capacity.json()
    assert c["healthyNodes"] >= 1
    assert c["healthyUnitsPerHour"] > 0
    assert c["liveWorkers"] == 1
    assert {"backlogUnits", "backlogEtaSeconds", "newOrderFitsWithin2h"} <= set(c)

    # Chaos injection.
    chaos = api.get("/api/admin/testing/status", headers=h(READ_KEY))
    assert chaos.status_code == 200
    assert chaos.json()["active"] is False
    on = api.post(
        "/api/admin/testing/enable",
        headers=h(),
        json={"workerPaused": True, "failureRate": 0.1, "latencyMs": 5, "ttlSeconds": 60},
    )
    assert on.status_code == 200
    assert {"workerPaused", "failureRate", "latencyMs", "expiresAt"} <= set(on.json())
    assert on.json()["workerPaused"] is True
    assert api.get("/api/admin/testing/status", headers=h(READ_KEY)).json()["active"] is True
    off = api.post("/api/admin/testing/disable", headers=h())
    assert off.status_code == 200
    assert off.json()["active"] is False

    # Nodes: /proxies and /nodes are one resource.
    proxy = api.post(
        "/api/internal/proxies",
        headers=h(),
        json={"provider": "simulated", "nodeIdentifier": "e2e-node-1"},
    )
    assert proxy.status_code == 201, proxy.text
    duplicate = api.post(
        "/api/internal/nodes",
        headers=h(),
        json={"provider": "simulated", "nodeIdentifier": "e2e-node-1"},
    )
    assert duplicate.status_code == 409
    node = api.post(
        "/api/internal/nodes",
        headers=h(),
        json={"provider": "simulated", "nodeIdentifier": "e2e-node-2", "capacityPerHour": 9000},
    )
    assert node.status_code == 201
    listed = api.get("/api/internal/proxies", headers=h(READ_KEY)).json()
    assert {"e2e-node-1", "e2e-node-2"} <= {n["nodeIdentifier"] for n in listed}
    disabled = api.delete(f"/api/internal/nodes/{node.json()['id']}", headers=h())
    assert disabled.status_code == 200
    assert disabled.json()["healthy"] is False

    # Operator actions, ending with the order force-completed; invariants hold.
    base = f"/api/admin/orders/{order_id}"
    assert api.post(f"{base}/retry-now", headers=h()).status_code == 200
    drained = api.post(f"{base}/drain-dead-letters", headers=h())
    assert drained.status_code == 200
    assert drained.json()["tasksAffected"] == dead["tasks"]
    assert api.post(f"{base}/cancel", headers=h(), json={"force": True}).status_code == 200
    done = api.post(f"{base}/force-complete", headers=h(), json={"force": True})
    assert done.status_code == 200, done.text
    assert done.json()["orderStatus"] == "COMPLETED"
    final = api.get("/api/admin/invariants/all", headers=h(READ_KEY)).json()
    assert final["passed"] is True, final["violations"]
    assert api.get(f"/api/orders/{order_id}", headers=h(READ_KEY)).json()["status"] == "COMPLETED"
