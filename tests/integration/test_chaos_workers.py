"""Chaos pause, seen by running workers: claiming stops on every worker
within one poll interval, disable resumes at once, and an expired TTL
resumes by itself; expired chaos injects no failure and no latency."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from goodfellaz17.db.repository import Repository
from goodfellaz17.services import chaos, invariants
from goodfellaz17.services.orders import create_order
from goodfellaz17.settings import Settings
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import make_settings
from tests.helpers import insert_order, wait_for

POLL_SECONDS = 2.0


@pytest.fixture
def worker_settings(db_url: str) -> Settings:
    return make_settings(
        db_url,
        worker_poll_interval_seconds=POLL_SECONDS,
        worker_concurrency=2,
        worker_batch_size=2,
        sim_latency_ms=100.0,
        task_size=400,
    )


@pytest.fixture
async def workers(worker_settings: Settings, db_url: str) -> AsyncIterator[list[Any]]:
    running = [
        OrderDeliveryWorker(worker_settings, db_url, worker_id=f"chaos-test-{i}") for i in range(2)
    ]
    for worker in running:
        await worker.start()
    try:
        yield running
    finally:
        for worker in running:
            await worker.stop()


def claimed(sql: psycopg.Connection[Any], order_id: uuid.UUID) -> int:
    row = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s AND status <> 'PENDING'",
        (order_id,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def status_of(sql: psycopg.Connection[Any], order_id: uuid.UUID) -> str:
    row = sql.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_pause_stops_every_worker_and_disable_or_expiry_resumes(
    repo: Repository,
    sql: psycopg.Connection[Any],
    worker_settings: Settings,
    workers: list[Any],
) -> None:
    order = (await create_order(repo, worker_settings, quantity=16_000, target="t")).order
    order_id = order.id
    await wait_for(lambda: claimed(sql, order_id) >= 8, 20, "the workers to start delivering")

    # Pause with work in flight: every worker knows within one poll interval...
    await chaos.enable_chaos(
        repo, worker_settings, actor="test", worker_paused=True, ttl_seconds=60
    )
    started = time.monotonic()
    await wait_for(
        lambda: all(w.chaos.worker_paused for w in workers), POLL_SECONDS, "workers to see pause"
    )
    assert time.monotonic() - started < POLL_SECONDS
    # ...and from then on nothing is claimed, for a whole poll interval and more.
    frozen = claimed(sql, order_id)
    assert frozen < 40
    deadline = time.monotonic() + POLL_SECONDS * 1.25
    while time.monotonic() < deadline:
        assert claimed(sql, order_id) == frozen
        await asyncio.sleep(0.05)

    # Disable: claiming resumes at once (NOTIFY), not at the next poll.
    await chaos.disable_chaos(repo, actor="test")
    started = time.monotonic()
    await wait_for(lambda: claimed(sql, order_id) > frozen, POLL_SECONDS, "resume")
    assert time.monotonic() - started < POLL_SECONDS
    await wait_for(lambda: status_of(sql, order_id) == "COMPLETED", 30, "the order to complete")

    # A pause with a short TTL ends by itself: nothing is claimed before it expires.
    await chaos.enable_chaos(repo, worker_settings, actor="test", worker_paused=True, ttl_seconds=1)
    late = (await create_order(repo, worker_settings, quantity=2000, target="t2")).order.id
    assert claimed(sql, late) == 0
    await wait_for(lambda: status_of(sql, late) == "COMPLETED", 15, "the TTL to expire")
    started_after_expiry = sql.execute(
        "SELECT min(t.started_at) >= c.expires_at FROM order_tasks t, chaos_settings c"
        " WHERE t.order_id = %s GROUP BY c.expires_at",
        (late,),
    ).fetchone()
    assert started_after_expiry == (True,)
    assert (await chaos.chaos_status(repo)).expired is True
    assert (await invariants.check_all(repo)).passed is True


async def test_expired_chaos_injects_neither_failures_nor_latency(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    """Once its TTL has passed (on the database's clock), chaos is off for the
    failure rate and the latency too, not only for the pause (which the claim
    statement checks): the stored settings no longer count."""
    sql.execute(
        """UPDATE chaos_settings SET enabled = true, worker_paused = false,
               failure_rate = 1.0, latency_ms = 600000,
               expires_at = now() - interval '1 second'
           WHERE id = 1"""
    )
    settings = make_settings(db_url, max_attempts=1, worker_grace_period_seconds=0.5)
    worker = OrderDeliveryWorker(settings, db_url, worker_id="chaos-expired")
    await worker.start()
    try:
        # The worker has read the stored settings before any work arrives.
        await wait_for(lambda: worker.chaos.failure_rate == 1.0, 10, "the worker to read chaos")
        assert worker.chaos.active is False
        order_id = insert_order(sql, 400 * 6)
        await wait_for(lambda: status_of(sql, order_id) == "COMPLETED", 20, "the delivery")
    finally:
        await worker.stop()
    rows = sql.execute(
        "SELECT status, attempts, last_error, count(*) FROM order_tasks GROUP BY 1, 2, 3"
    ).fetchall()
    assert rows == [("COMPLETED", 1, None, 6)]
