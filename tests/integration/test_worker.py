"""The OrderDeliveryWorker in-process on a real database: delivery, retries,
dead letters, wake-up by NOTIFY, graceful stop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import time_machine
from prometheus_client import CollectorRegistry

from goodfellaz17.backends.base import DeliveryRequest, RetryableDeliveryError
from goodfellaz17.backends.simulated import SimulatedBackend, SimulatedConfig
from goodfellaz17.settings import Settings
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import make_settings
from tests.helpers import insert_order, open_tasks, order_row, violations, wait_for


@asynccontextmanager
async def running_worker(
    settings: Settings, db_url: str, **kwargs: Any
) -> AsyncIterator[OrderDeliveryWorker]:
    worker = OrderDeliveryWorker(settings, db_url, registry=CollectorRegistry(), **kwargs)
    task = await worker.start()
    try:
        yield worker
    finally:
        await worker.stop()
        await task


def all_orders_settled(sql: psycopg.Connection[Any]) -> bool:
    return open_tasks(sql) == 0


async def test_worker_delivers_several_orders_exactly(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    ids = [insert_order(sql, q) for q in (15_000, 1_234, 401)]
    settings = make_settings(db_url, worker_batch_size=10, worker_concurrency=16)
    async with running_worker(settings, db_url) as worker:
        await wait_for(lambda: all_orders_settled(sql))
    for order_id, quantity in zip(ids, (15_000, 1_234, 401), strict=True):
        order = order_row(sql, order_id)
        assert (order["status"], order["delivered"]) == ("COMPLETED", quantity)
    assert violations(sql) == []
    assert worker.counters.completed == 38 + 4 + 2
    assert worker.counters.processed == worker.counters.completed
    assert not worker.is_running
    row = sql.execute(
        "SELECT status, total_completed FROM workers WHERE id = %s", (worker.worker_id,)
    ).fetchone()
    assert row == ("STOPPED", 44)


async def test_failures_retry_with_backoff_then_complete(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 15_000)
    settings = make_settings(db_url, sim_failure_rate=0.3, sim_seed=7, max_attempts=20)
    async with running_worker(settings, db_url) as worker:
        await wait_for(lambda: all_orders_settled(sql))
    order = order_row(sql, order_id)
    assert (order["status"], order["delivered"]) == ("COMPLETED", 15_000)
    retries = sql.execute("SELECT sum(attempts - 1) FROM order_tasks").fetchone()
    assert retries is not None
    assert retries[0] > 0
    assert worker.counters.retries == retries[0]
    assert violations(sql) == []


async def test_tasks_that_keep_failing_are_dead_lettered(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 2_000)
    settings = make_settings(
        db_url, sim_failure_rate=1.0, max_attempts=3, circuit_failure_threshold=1000
    )
    async with running_worker(settings, db_url) as worker:
        await wait_for(lambda: all_orders_settled(sql))
    order = order_row(sql, order_id)
    assert (order["status"], order["delivered"], order["failed_permanent_plays"]) == (
        "PROCESSING",
        0,
        2_000,
    )
    rows = sql.execute("SELECT DISTINCT status, attempts, last_error FROM order_tasks").fetchall()
    assert rows == [("FAILED_PERMANENT", 3, "simulated failure on node sim-local-1")]
    assert worker.counters.failed == 5
    assert violations(sql) == []


async def test_a_new_order_is_picked_up_at_once_despite_a_ten_second_poll(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    settings = make_settings(db_url, worker_poll_interval_seconds=10.0)
    async with running_worker(settings, db_url):
        await asyncio.sleep(0.5)  # let the worker finish its first claim and go idle
        latencies = []
        for _ in range(5):
            order_id = insert_order(sql, 400)
            started = time.monotonic()
            await wait_for(
                lambda oid=order_id: (
                    sql.execute(
                        "SELECT started_at IS NOT NULL FROM order_tasks WHERE order_id = %s", (oid,)
                    ).fetchone()
                    == (True,)
                ),
                within=5,
                interval=0.002,
            )
            latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.1)
    assert max(latencies) < 0.2, latencies


class GatedBackend:
    """Holds every delivery until released, so a test can stop mid-flight."""

    name = "simulated"

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()

    async def deliver(self, request: DeliveryRequest) -> None:
        self.started += 1
        await self.release.wait()

    async def aclose(self) -> None:
        return None


async def test_stop_finishes_in_flight_tasks_and_hands_back_unstarted_claims(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 400 * 20)
    backend = GatedBackend()
    settings = make_settings(
        db_url, worker_concurrency=2, worker_batch_size=5, worker_grace_period_seconds=10
    )
    worker = OrderDeliveryWorker(
        settings, db_url, registry=CollectorRegistry(), backends={"simulated": backend}
    )
    task = await worker.start()
    await wait_for(lambda: backend.started == 2)

    def executing() -> int:
        row = sql.execute("SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING'").fetchone()
        assert row is not None
        return int(row[0])

    # Prefetched claims beyond the two executing (the claimers fill the
    # queue ahead of the executors; on a busy machine that can lag a little).
    await wait_for(lambda: executing() > 2)
    assert backend.started == 2
    stopping = asyncio.create_task(worker.stop())
    # Release the deliveries only once the stopping worker has handed back
    # what it never started: else the executors would start those too.
    async with asyncio.timeout(10):
        await worker.draining.wait()
    assert backend.started == 2
    backend.release.set()
    await stopping
    await task
    rows = dict(sql.execute("SELECT status, count(*) FROM order_tasks GROUP BY status").fetchall())
    assert rows == {"COMPLETED": 2, "PENDING": 18}
    refunded = sql.execute(
        "SELECT max(attempts) FROM order_tasks WHERE status = 'PENDING'"
    ).fetchone()
    assert refunded == (0,)
    assert order_row(sql, order_id)["delivered"] == 2 * 400
    assert violations(sql) == []


class FlakyNode:
    """A backend whose node fails every delivery (a dead endpoint)."""

    name = "simulated"

    def __init__(self) -> None:
        self.calls = 0

    async def deliver(self, request: DeliveryRequest) -> None:
        self.calls += 1
        raise RetryableDeliveryError("HTTP 503 from node")

    async def aclose(self) -> None:
        return None


async def test_a_failing_node_opens_its_circuit_and_tasks_wait_instead_of_failing(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400 * 30)
    backend = FlakyNode()
    settings = make_settings(
        db_url,
        circuit_failure_threshold=3,
        circuit_cooldown_seconds=3600,
        max_attempts=50,
        worker_concurrency=1,
        worker_batch_size=1,
    )
    async with running_worker(settings, db_url, backends={"simulated": backend}):
        await wait_for(
            lambda: sql.execute("SELECT circuit_state FROM nodes").fetchone() == ("OPEN",)
        )
        calls_when_open = backend.calls
        await asyncio.sleep(0.5)
    assert backend.calls <= calls_when_open + 2  # at most the claims already held
    dead = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'FAILED_PERMANENT'"
    ).fetchone()
    assert dead == (0,)


async def test_the_simulated_backend_is_deterministic_with_a_seed() -> None:
    import uuid

    config = SimulatedConfig(latency_ms=0, failure_rate=0.5, seed=42, use_node_rate=False)
    outcomes = []
    for _ in range(2):
        backend = SimulatedBackend(config)
        run = []
        for i in range(50):
            request = DeliveryRequest(
                uuid.UUID(int=i), uuid.UUID(int=0), 400, "t", 1, i, 1, "n1", None, 3600
            )
            try:
                await backend.deliver(request)
                run.append(True)
            except RetryableDeliveryError:
                run.append(False)
        outcomes.append(run)
    assert outcomes[0] == outcomes[1]
    assert 10 < sum(outcomes[0]) < 40


async def test_a_long_task_keeps_its_lease_by_heartbeat(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 400)
    settings = make_settings(
        db_url, task_lease_seconds=1.0, worker_heartbeat_seconds=0.1, sim_latency_ms=3000
    )
    async with running_worker(settings, db_url) as worker:
        await wait_for(lambda: all_orders_settled(sql), within=20)
    row = sql.execute("SELECT status, attempts FROM order_tasks").fetchone()
    assert row == ("COMPLETED", 1)
    assert worker.counters.recovered_orphans == 0
    assert order_row(sql, order_id)["delivered"] == 400


@pytest.mark.parametrize("skew_hours", [2, -2], ids=["clock-ahead", "clock-behind"])
async def test_leases_follow_the_database_clock_whatever_the_worker_clock_says(
    db_url: str, sql: psycopg.Connection[Any], skew_hours: int
) -> None:
    """A worker whose wall clock is hours off still keeps its leases on the
    database's clock: every extension ends at the database's now() plus the
    lease, neither hours later (a lease nobody could rescue) nor hours earlier
    (a live claim rescued from under its worker)."""
    lease = 6.0
    order_id = insert_order(sql, 400)
    backend = GatedBackend()
    settings = make_settings(
        db_url,
        task_lease_seconds=lease,
        worker_heartbeat_seconds=0.2,
        worker_rescue_interval_seconds=0.2,
    )
    skewed = datetime.now(UTC) + timedelta(hours=skew_hours)
    with time_machine.travel(skewed, tick=True):
        assert abs(time.time() - skewed.timestamp()) < 60  # the worker's clock is off
        async with running_worker(settings, db_url, backends={"simulated": backend}) as worker:
            await wait_for(lambda: backend.started == 1)

            def extended() -> bool:
                # Claimed with now() + lease; only an extension moves it further.
                row = sql.execute(
                    "SELECT lease_expires_at > started_at + make_interval(secs => %s)"
                    " FROM order_tasks",
                    (lease,),
                ).fetchone()
                return row == (True,)

            await wait_for(extended, within=4 * lease)
            remaining = sql.execute(
                "SELECT extract(epoch FROM lease_expires_at - now()) FROM order_tasks"
            ).fetchone()
            assert remaining is not None
            assert 0 < float(remaining[0]) <= lease
            backend.release.set()
            await wait_for(lambda: all_orders_settled(sql))
    assert sql.execute("SELECT status, attempts FROM order_tasks").fetchone() == ("COMPLETED", 1)
    assert (worker.counters.leases_lost, worker.counters.recovered_orphans) == (0, 0)
    assert order_row(sql, order_id)["delivered"] == 400


async def test_a_small_order_arriving_behind_a_big_one_is_served_promptly(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    big = insert_order(sql, 400 * 300)
    settings = make_settings(db_url, sim_latency_ms=50, worker_concurrency=2, worker_batch_size=2)
    async with running_worker(settings, db_url):
        await wait_for(lambda: order_row(sql, big)["delivered"] >= 400 * 20)
        small = insert_order(sql, 400 * 3)
        await wait_for(lambda: order_row(sql, small)["status"] == "COMPLETED")
        remaining = sql.execute(
            "SELECT count(*) FROM order_tasks WHERE order_id = %s AND status <> 'COMPLETED'", (big,)
        ).fetchone()
    assert remaining is not None
    assert remaining[0] > 200, "the small order must not wait for the big one to finish"


async def test_stopping_mid_stream_leaves_nothing_executing_and_loses_no_lease(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400 * 400)
    settings = make_settings(db_url, sim_instant=True, worker_claimers=2)
    async with running_worker(settings, db_url) as worker:
        await wait_for(lambda: worker.counters.completed >= 100)
    assert worker.counters.leases_lost == 0  # no outcome written twice at shutdown
    executing = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING'"
    ).fetchone()
    assert executing == (0,)
    completed = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'COMPLETED'"
    ).fetchone()
    assert completed == (worker.counters.completed,)
    assert violations(sql) == []
