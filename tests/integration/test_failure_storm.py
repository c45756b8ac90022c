"""A failure storm: the backend fails every delivery for a while (chaos
injection at failureRate 1.0, switched on and off through the operator API).

During the storm tasks retry with backoff and then go to the dead-letter
queue; nothing is counted as delivered that was not, and the invariants hold
throughout. After it, draining the dead letters (one order through the API,
the other through the CLI) delivers the rest, and each order ends exact:
delivered = quantity, nothing dead-lettered, every unit backed by exactly one
accepted delivery in the simulated backend's ledger.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from goodfellaz17.api.app import create_app
from goodfellaz17.settings import Settings
from tests.conftest import OPERATOR_KEY, key_headers, make_settings
from tests.e2e.ledger import ledger_report
from tests.e2e.procs import service_env
from tests.helpers import open_tasks, violations, wait_for

QUANTITY = 15_000
TASKS = 38
MAX_ATTEMPTS = 3
CHAOS_ERROR = "chaos: injected failure"


@pytest.fixture
def storm_settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        max_attempts=MAX_ATTEMPTS,
        backoff_base_seconds=0.2,
        backoff_max_seconds=0.6,
        sim_latency_ms=40.0,
        worker_concurrency=4,
        worker_batch_size=4,
        sim_ledger_path=tmp_path / "ledger.jsonl",
        invariant_check_interval_seconds=0,
    )


@pytest.fixture
async def client(storm_settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its worker in the same process, as `goodfellaz17 serve` runs."""
    app = create_app(storm_settings, db_url, run_worker=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://test", headers=key_headers(OPERATOR_KEY)
        ) as c:
            yield c


def tasks_by_status(sql: psycopg.Connection[Any], order_id: str) -> dict[str, int]:
    rows = sql.execute(
        "SELECT status, count(*) FROM order_tasks WHERE order_id = %s GROUP BY status", (order_id,)
    ).fetchall()
    return dict(rows)


def backing_off(sql: psycopg.Connection[Any]) -> int:
    """Tasks that failed and wait out a backoff before their next attempt."""
    row = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'FAILED_RETRYING'"
        " AND retry_after > executed_at AND last_error = %s",
        (CHAOS_ERROR,),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def drain_with_cli(db_url: str, order_id: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "goodfellaz17",
        "dlq",
        "drain",
        order_id,
        "--json",
        env=service_env(db_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


async def test_a_failure_storm_dead_letters_after_backoff_and_draining_delivers_the_rest(
    client: httpx.AsyncClient,
    sql: psycopg.Connection[Any],
    db_url: str,
    storm_settings: Settings,
) -> None:
    first = (await client.post("/api/orders", json={"quantity": QUANTITY, "target": "a"})).json()
    await wait_for(
        lambda: tasks_by_status(sql, first["id"]).get("COMPLETED", 0) >= 3,
        30,
        "the first order delivering",
    )

    # The storm: every delivery fails, on every worker.
    storm = await client.post(
        "/api/admin/testing/enable", json={"failureRate": 1.0, "ttlSeconds": 300}
    )
    assert storm.status_code == 200, storm.text
    assert storm.json()["active"] is True
    # The switch reaches the worker by NOTIFY (see the test below).
    deadline = time.monotonic() + 5
    while not (await client.get("/api/admin/worker/status")).json()["chaosActive"]:
        assert time.monotonic() < deadline, "the worker did not see the storm"
        await asyncio.sleep(0.05)
    second = (await client.post("/api/orders", json={"quantity": QUANTITY, "target": "b"})).json()
    seen_backoff = 0

    def settled_watching_backoff() -> bool:
        nonlocal seen_backoff
        seen_backoff = max(seen_backoff, backing_off(sql))
        return open_tasks(sql) == 0

    await wait_for(settled_watching_backoff, 90, "every task settled in the storm")

    # Retried with backoff, then dead-lettered: nothing delivered in the storm.
    assert seen_backoff > 0, "failed tasks must wait out a backoff before retrying"
    dead = sql.execute(
        "SELECT order_id::text, attempts, last_error FROM order_tasks"
        " WHERE status = 'FAILED_PERMANENT'"
    ).fetchall()
    assert {(attempts, error) for _, attempts, error in dead} == {(MAX_ATTEMPTS, CHAOS_ERROR)}
    assert tasks_by_status(sql, second["id"]) == {"FAILED_PERMANENT": TASKS}
    orders = {o["id"]: o for o in (await client.get("/api/orders")).json()["items"]}
    for order in orders.values():
        assert order["status"] == "PROCESSING"
        assert order["delivered"] + order["failedPermanentPlays"] == QUANTITY
    assert orders[second["id"]]["delivered"] == 0
    assert 0 < orders[first["id"]]["delivered"] < QUANTITY
    status = (await client.get("/api/admin/worker/status")).json()
    assert status["totalFailed"] == len(dead)
    assert status["totalRetries"] >= len(dead) * (MAX_ATTEMPTS - 1)
    assert (await client.get("/api/admin/invariants/all")).json()["passed"] is True
    assert ledger_report(sql, storm_settings.sim_ledger_path)["lost"] == 0  # type: ignore[arg-type]

    # The storm is over: chaos off, then the dead letters are drained.
    calm = await client.post("/api/admin/testing/disable")
    assert calm.json()["active"] is False
    deadline = time.monotonic() + 5
    while (await client.get("/api/admin/worker/status")).json()["chaosActive"]:
        assert time.monotonic() < deadline, "the worker did not see the storm end"
        await asyncio.sleep(0.05)
    drained = await client.post(f"/api/admin/orders/{first['id']}/drain-dead-letters")
    assert drained.status_code == 200, drained.text
    assert drained.json()["unitsAffected"] == orders[first["id"]]["failedPermanentPlays"]
    by_cli = await drain_with_cli(db_url, second["id"])
    assert (by_cli["tasksAffected"], by_cli["unitsAffected"]) == (TASKS, QUANTITY)

    await wait_for(lambda: open_tasks(sql) == 0, 60, "the drained tasks delivered")
    for order_id in (first["id"], second["id"]):
        order = (await client.get(f"/api/orders/{order_id}")).json()
        assert order["status"] == "COMPLETED"
        assert (order["delivered"], order["failedPermanentPlays"]) == (QUANTITY, 0)
        check = (await client.get(f"/api/admin/invariants/orders/{order_id}")).json()
        assert check["passed"] is True
    everything = (await client.get("/api/admin/invariants/all")).json()
    assert everything["passed"] is True
    assert everything["ordersChecked"] == 2
    report = ledger_report(sql, storm_settings.sim_ledger_path)  # type: ignore[arg-type]
    assert report["lost"] == 0, report
    assert report["double_counted"] == 0, report
    assert report["completed_before_accepted"] == 0, report
    assert report["units_delivered"] == report["units_in_completed_tasks"] == 2 * QUANTITY
    actions = [
        row[0] for row in sql.execute("SELECT action FROM operator_actions ORDER BY id").fetchall()
    ]
    assert actions == ["chaos_enable", "chaos_disable", "drain_dead_letters", "drain_dead_letters"]
    assert violations(sql) == []


async def test_a_worker_obeys_a_chaos_switch_at_once_not_at_its_next_refresh(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Enable and disable NOTIFY the workers, which re-read the settings at
    once: with the periodic re-read pushed out to a minute, only that can
    make the worker see the switch."""
    from goodfellaz17.services import chaos
    from goodfellaz17.worker import worker as worker_module

    monkeypatch.setattr(worker_module, "CHAOS_REFRESH_SECONDS", 60.0)
    settings = make_settings(db_url, worker_heartbeat_seconds=60.0)
    app = create_app(settings, db_url, run_worker=True)
    async with app.router.lifespan_context(app):
        ctx = app.state.ctx
        worker = ctx.worker
        await wait_for(lambda: worker.is_running, 10, "the worker running")
        await chaos.enable_chaos(ctx.repo, settings, actor="test", failure_rate=1.0)
        await wait_for(lambda: worker.chaos.failure_rate == 1.0, 10, "the worker seeing chaos")
        await chaos.disable_chaos(ctx.repo, actor="test")
        await wait_for(lambda: not worker.chaos.active, 10, "the worker seeing chaos end")
