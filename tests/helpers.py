"""Small helpers shared by tests: seeding orders in a given state by hand."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from goodfellaz17.domain.plan import plan_task_sizes


def insert_order(
    conn: psycopg.Connection[Any],
    quantity: int = 15_000,
    task_size: int = 400,
    target: str = "t",
    backend: str = "simulated",
) -> uuid.UUID:
    """Insert an order and its tasks with plain SQL, as the service would."""
    sizes = plan_task_sizes(quantity, task_size)
    row = conn.execute(
        """WITH o AS (INSERT INTO orders (quantity, target, backend, task_count)
                      VALUES (%s, %s, %s, %s)
                      RETURNING id, created_at, order_queue_start(created_at) AS start)
           INSERT INTO order_tasks (order_id, seq, quantity, queue_position)
           SELECT o.id, s.ord - 1, s.qty, order_task_position(o.start, o.id, (s.ord - 1)::int, 1)
           FROM o, unnest(%s::int[]) WITH ORDINALITY s(qty, ord)
           RETURNING order_id""",
        (quantity, target, backend, len(sizes), sizes),
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


def set_task_states(conn: psycopg.Connection[Any], order_id: uuid.UUID, states: list[str]) -> None:
    """Put the order's tasks (by seq) into the given states, by hand."""
    for seq, status in enumerate(states):
        executing = status == "EXECUTING"
        conn.execute(
            """UPDATE order_tasks SET status = %s, attempts = attempts + 1,
                   lease_expires_at = CASE WHEN %s THEN now() + interval '5 minutes' END,
                   fencing_token = CASE WHEN %s THEN nextval('order_tasks_fencing_token_seq') END,
                   retry_after = CASE WHEN %s = 'FAILED_RETRYING'
                                      THEN now() + interval '1 hour' END,
                   last_error = CASE WHEN %s LIKE 'FAILED%%' THEN 'seeded failure' END,
                   executed_at = CASE WHEN %s IN ('COMPLETED', 'FAILED_PERMANENT',
                                                 'FAILED_RETRYING') THEN now() END
               WHERE order_id = %s AND seq = %s""",
            (status, executing, executing, status, status, status, order_id, seq),
        )


def order_row(conn: psycopg.Connection[Any], order_id: uuid.UUID) -> dict[str, Any]:
    cur = conn.execute(
        "SELECT status, quantity, delivered, failed_permanent_plays FROM orders WHERE id = %s",
        (order_id,),
    )
    row = cur.fetchone()
    assert row is not None
    return dict(
        zip(["status", "quantity", "delivered", "failed_permanent_plays"], row, strict=True)
    )


def task_sums(conn: psycopg.Connection[Any], order_id: uuid.UUID) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status, sum(quantity) FROM order_tasks WHERE order_id = %s GROUP BY status",
        (order_id,),
    ).fetchall()
    return {status: int(total) for status, total in rows}


def violations(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT order_id, check_name, expected, actual FROM v_order_invariants WHERE NOT passed"
    ).fetchall()


def assert_counters_exact(conn: psycopg.Connection[Any], order_id: uuid.UUID) -> None:
    order = order_row(conn, order_id)
    sums = task_sums(conn, order_id)
    assert order["delivered"] == sums.get("COMPLETED", 0)
    assert order["failed_permanent_plays"] == sums.get("FAILED_PERMANENT", 0)
    assert violations(conn) == []
