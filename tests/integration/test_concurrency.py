"""Concurrency: 50 order creations at once (some sharing an Idempotency-Key)
while two workers deliver and operators act on the same orders at the same
time (retry-now, drain, force-complete, cancel, chaos on and off).

No client ever sees a 5xx: deadlocks and serialization failures are retried
inside. A 409 is allowed only where the API documents it (force-complete and
cancel while tasks execute, force-complete of a COMPLETED order). Every action
that answered 200 is recorded once; in the end, with chaos off and the dead
letters of unfinished orders drained, every order is COMPLETED, every unit is
counted once, and the invariants hold.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from goodfellaz17.api.app import create_app
from goodfellaz17.settings import Settings
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import OPERATOR_KEY, ORDERS_KEY, key_headers, make_settings
from tests.e2e.ledger import ledger_report
from tests.helpers import open_tasks, violations, wait_for

CREATIONS = 50
SHARED_KEYS = 5  # 5 keys sent twice each: 45 orders from 50 requests
ACTIONS = 60
ALLOWED: dict[str, set[int]] = {
    "create": {200, 201},
    "retry-now": {200},
    "drain-dead-letters": {200},
    "force-complete": {200, 409},
    "cancel": {200, 409},
    "chaos": {200},
}
RECORDED_AS = {
    "retry-now": "retry_now",
    "drain-dead-letters": "drain_dead_letters",
    "force-complete": "force_complete",
    "cancel": "cancel",
}


@pytest.fixture
def busy_settings(db_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        db_url,
        sim_latency_ms=15.0,
        worker_concurrency=8,
        worker_batch_size=8,
        max_attempts=5,
        task_lease_seconds=30.0,
        sim_ledger_path=tmp_path / "ledger.jsonl",
        invariant_check_interval_seconds=0,
        db_pool_max_size=8,
    )


@pytest.fixture
async def client(busy_settings: Settings, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its worker, plus a second worker on the same database."""
    app = create_app(busy_settings, db_url, run_worker=True)
    second = OrderDeliveryWorker(
        busy_settings, db_url, worker_id="second-worker", registry=CollectorRegistry()
    )
    async with app.router.lifespan_context(app):
        task = await second.start()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", timeout=60
            ) as c:
                yield c
        finally:
            await second.stop()
            await task


async def test_concurrent_orders_and_operator_actions_never_surface_a_database_error(
    client: httpx.AsyncClient, sql: psycopg.Connection[Any], busy_settings: Settings
) -> None:
    rng = random.Random(20261129)
    created: list[str] = []
    outcomes: list[tuple[str, int, str]] = []
    first_orders = asyncio.Event()

    async def create(i: int) -> None:
        key = f"shared-{i % SHARED_KEYS}" if i < 2 * SHARED_KEYS else f"unique-{i}"
        quantity = 400 * (1 + i % SHARED_KEYS) if i < 2 * SHARED_KEYS else rng.randint(1, 4000)
        response = await client.post(
            "/api/orders",
            headers=key_headers(ORDERS_KEY, **{"Idempotency-Key": key}),
            json={"quantity": quantity, "target": f"t-{key}"},
        )
        outcomes.append(("create", response.status_code, response.text))
        if response.status_code == 201:
            created.append(response.json()["id"])
            if len(created) >= 5:
                first_orders.set()

    async def act(j: int) -> None:
        await first_orders.wait()
        await asyncio.sleep(rng.uniform(0, 1.5))
        kind = rng.choice([*RECORDED_AS, "chaos"])
        headers = key_headers(OPERATOR_KEY)
        if kind == "chaos":
            if j % 2:
                body = {"failureRate": 0.3, "ttlSeconds": 60}
                response = await client.post(
                    "/api/admin/testing/enable", json=body, headers=headers
                )
            else:
                response = await client.post("/api/admin/testing/disable", headers=headers)
        else:
            order_id = rng.choice(created)
            body = {"force": rng.random() < 0.5} if kind in ("force-complete", "cancel") else None
            response = await client.post(
                f"/api/admin/orders/{order_id}/{kind}", json=body, headers=headers
            )
        outcomes.append((kind, response.status_code, response.text))

    async with asyncio.timeout(120):
        await asyncio.gather(
            *(create(i) for i in range(CREATIONS)), *(act(j) for j in range(ACTIONS))
        )

    assert len(outcomes) == CREATIONS + ACTIONS
    unexpected = [o for o in outcomes if o[1] not in ALLOWED[o[0]]]
    assert not unexpected, unexpected
    assert len(created) == CREATIONS - SHARED_KEYS
    codes = Counter((kind, code) for kind, code, _ in outcomes)
    assert codes[("create", 200)] == SHARED_KEYS  # the replays of a shared key
    for kind, code, text in outcomes:
        if code == 409:
            assert kind in ("force-complete", "cancel")
            assert '"field":"force"' in text or "already COMPLETED" in text, text
    # Every action that answered 200 was recorded exactly once.
    recorded = Counter(
        row[0] for row in sql.execute("SELECT action FROM operator_actions").fetchall()
    )
    for kind, action in RECORDED_AS.items():
        assert recorded[action] == codes[(kind, 200)], kind
    assert recorded["chaos_enable"] + recorded["chaos_disable"] == codes[("chaos", 200)]

    # Calm: chaos off, unfinished orders' dead letters drained; everything settles.
    headers = key_headers(OPERATOR_KEY)
    assert (await client.post("/api/admin/testing/disable", headers=headers)).status_code == 200
    for _ in range(5):  # a task failing as chaos ends may be dead-lettered after a drain
        await wait_for(lambda: open_tasks(sql) == 0, 90, "every task settled", interval=0.05)
        unfinished = [
            order["id"]
            for order in (await client.get("/api/orders?limit=500", headers=headers)).json()[
                "items"
            ]
            if order["status"] != "COMPLETED"
        ]
        if not unfinished:
            break
        for order_id in unfinished:
            drained = await client.post(
                f"/api/admin/orders/{order_id}/drain-dead-letters", headers=headers
            )
            assert drained.status_code == 200, drained.text

    orders = (await client.get("/api/orders?limit=500", headers=headers)).json()["items"]
    assert len(orders) == len(created)
    forced = {
        str(row[0])
        for row in sql.execute(
            "SELECT order_id FROM operator_actions WHERE action = 'force_complete'"
        ).fetchall()
    }
    for order in orders:
        assert order["status"] == "COMPLETED", order
        assert order["delivered"] + order["failedPermanentPlays"] == order["quantity"]
        if order["id"] not in forced:
            assert order["delivered"] == order["quantity"], order
    check = (await client.get("/api/admin/invariants/all", headers=headers)).json()
    assert check["passed"] is True, check
    report = ledger_report(sql, busy_settings.sim_ledger_path)  # type: ignore[arg-type]
    assert report["lost"] == 0, report
    assert report["double_counted"] == 0, report
    assert report["completed_before_accepted"] == 0, report
    assert report["units_delivered"] == report["units_in_completed_tasks"]
    assert violations(sql) == []
