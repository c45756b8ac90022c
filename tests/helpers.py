"""Small helpers shared by tests: seeding orders in a given state by hand,
reading them back, and waiting for a state with a deadline.

Every test helper used by more than one test file lives here, once. Nothing
here sleeps for a fixed time to let a state arrive: the waits poll a condition
and fail, naming what they waited for, when the deadline passes.
"""

from __future__ import annotations

import operator
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import httpx
import psycopg
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_fixed,
)

from goodfellaz17.domain.plan import plan_task_sizes

T = TypeVar("T")
OPEN_STATUSES = ("PENDING", "EXECUTING", "FAILED_RETRYING")


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


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def health_is_up(base_url: str, timeout: float = 2.0) -> bool:
    """The server at `base_url` answers /actuator/health with 200 (not yet
    listening counts as no)."""
    try:
        return httpx.get(f"{base_url}/actuator/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def open_tasks(conn: psycopg.Connection[Any]) -> int:
    """Tasks not yet settled (delivered or dead-lettered), over every order."""
    row = conn.execute(
        "SELECT count(*) FROM order_tasks WHERE status = ANY(%s)", (list(OPEN_STATUSES),)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _polling(
    retrying: type[Retrying] | type[AsyncRetrying],
    within: float,
    what: str,
    interval: float,
    retry_on: tuple[type[BaseException], ...],
) -> Any:
    def timed_out(state: RetryCallState) -> NoReturn:
        last = state.outcome.exception() if state.outcome is not None else None
        raise AssertionError(f"timed out after {within} s waiting for {what}") from last

    return retrying(
        stop=stop_after_delay(within),
        wait=wait_fixed(interval),
        retry=retry_if_result(operator.not_) | retry_if_exception_type(retry_on),
        retry_error_callback=timed_out,
    )


def wait_until(
    condition: Callable[[], T],
    within: float = 60.0,
    what: str = "the condition",
    *,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `condition` until it returns something truthy, and return that.
    For tests that drive subprocesses: blocks the thread between calls.
    Exceptions of the types in `retry_on` (e.g. a server not up yet) count
    as "not yet"; any other propagates at once."""
    result: T = _polling(Retrying, within, what, interval, retry_on)(condition)
    return result


async def wait_for(
    condition: Callable[[], T] | Callable[[], Awaitable[T]],
    within: float = 20.0,
    what: str = "the condition",
    *,
    interval: float = 0.02,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """`wait_until` for tests on the event loop: other tasks (the worker
    under test) run between the calls. `condition` may be a coroutine function."""
    result: T = await _polling(AsyncRetrying, within, what, interval, retry_on)(condition)
    return result
