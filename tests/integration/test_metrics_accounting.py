"""Acceptance: after a delivery with failures, retries, dead letters and an
orphan rescue, every metric equals what the database says happened."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from goodfellaz17.api.app import create_app
from tests.conftest import ORDERS_KEY, READ_KEY, key_headers, make_settings
from tests.helpers import insert_order, open_tasks, violations, wait_for
from tests.observability import parse_metrics, sample


def _one(sql: psycopg.Connection[Any], query: str) -> float:
    row = sql.execute(query).fetchone()
    assert row is not None
    return float(row[0] or 0)


def _seed_orphan(sql: psycopg.Connection[Any]) -> None:
    """A task claimed by a worker that died 10 minutes ago, lease expired."""
    order = insert_order(sql, 800)
    sql.execute(
        """UPDATE order_tasks SET status = 'EXECUTING', attempts = 1,
               lease_owner = 'dead-worker', lease_expires_at = now() - interval '1 second',
               fencing_token = nextval('order_tasks_fencing_token_seq'),
               started_at = now() - interval '10 minutes',
               node_id = (SELECT id FROM nodes WHERE node_identifier = 'sim-local-1')
           WHERE order_id = %s AND seq = 0""",
        (order,),
    )


async def test_metrics_equal_the_database_after_failures_retries_and_an_orphan(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    _seed_orphan(sql)
    settings = make_settings(
        db_url,
        sim_failure_rate=0.45,
        sim_permanent_failure_rate=0.05,
        max_attempts=3,
        circuit_failure_threshold=1000,  # keep the one node open through the failures
        worker_concurrency=8,
        invariant_check_interval_seconds=0,
    )
    app = create_app(settings, db_url, run_worker=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(
                "/api/orders",
                headers=key_headers(ORDERS_KEY),
                json={"quantity": 15_000, "target": "acceptance"},
            )
            assert response.status_code == 201, response.text
            await wait_for(
                lambda: open_tasks(sql) == 0, 60, "the worker to finish the orders", interval=0.05
            )

            running = parse_metrics(
                (await client.get("/metrics", headers=key_headers(READ_KEY))).text
            )
            assert sample(running, "delivery_worker_active") == 1

            # Stop the worker so that every outcome it recorded is also counted.
            worker = app.state.ctx.worker
            await worker.stop()
            response = await client.get("/metrics", headers=key_headers(READ_KEY))
    assert response.status_code == 200
    metrics = parse_metrics(response.text)

    completed = _one(sql, "SELECT count(*) FROM order_tasks WHERE status = 'COMPLETED'")
    dead = _one(sql, "SELECT count(*) FROM order_tasks WHERE status = 'FAILED_PERMANENT'")
    delivered_units = _one(sql, "SELECT sum(delivered) FROM orders")
    failed_units = _one(sql, "SELECT sum(failed_permanent_plays) FROM orders")
    # Every claim but a task's first is a retry; a claim lost with its worker
    # (an orphaning) was refunded from attempts and counted apart.
    retries = _one(
        sql,
        """SELECT sum(attempts + orphanings - 1)
                  + count(*) FILTER (WHERE status = 'FAILED_RETRYING')
           FROM order_tasks""",
    )
    attempts = _one(sql, "SELECT sum(attempts) FROM order_tasks")
    assert _one(sql, "SELECT sum(orphanings) FROM order_tasks") == 1

    # The scenario really had every kind of event the metrics count.
    assert completed > 0
    assert dead > 0
    assert retries > dead
    assert delivered_units == _one(
        sql, "SELECT sum(quantity) FROM order_tasks WHERE status = 'COMPLETED'"
    )

    assert sample(metrics, "delivery_plays_total", outcome="delivered") == delivered_units
    assert sample(metrics, "delivery_plays_total", outcome="failed") == failed_units
    assert sample(metrics, "delivery_tasks_total", status="completed") == completed
    assert sample(metrics, "delivery_tasks_total", status="failed_permanent") == dead
    assert sample(metrics, "delivery_retries_total") == retries
    assert sample(metrics, "delivery_orphans_recovered_total") == 1
    assert sample(metrics, "delivery_dead_letter_queue") == dead
    assert sample(metrics, "delivery_tasks_pending") == 0
    assert sample(metrics, "delivery_tasks_retrying") == 0
    assert sample(metrics, "delivery_tasks_executing") == 0
    assert sample(metrics, "delivery_worker_active") == 0  # it said STOPPED on the way out
    # One task execution observed per delivery attempt (the dead worker's lost
    # claim is an orphaning, not an attempt).
    assert sample(metrics, "delivery_task_duration_seconds_count") == attempts
    assert sample(metrics, "delivery_batch_duration_seconds_count") > 0

    # The worker's own heartbeat row agrees with its metrics too.
    row = sql.execute(
        """SELECT total_completed, total_failed, total_retries, recovered_orphans
           FROM workers WHERE id = %s""",
        (worker.worker_id,),
    ).fetchone()
    assert row == (completed, dead, retries, 1)
    assert violations(sql) == []
