"""Operator actions: each one transaction, recorded with who did it, refused
where it would be unsafe, and every invariant still true afterwards."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest

from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import Conflict, NotFound
from goodfellaz17.services import invariants, operations
from tests.conftest import OPERATOR_KEY, key_headers
from tests.helpers import (
    assert_counters_exact,
    insert_order,
    order_row,
    set_task_states,
    wait_for,
)

MIXED = (
    ["COMPLETED"] * 10
    + ["FAILED_PERMANENT"] * 5
    + ["FAILED_RETRYING"] * 5
    + ["EXECUTING"] * 3
    + ["PENDING"] * 15
)


@pytest.fixture
def mixed_order(sql: psycopg.Connection[Any]) -> uuid.UUID:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, MIXED)
    return order_id


def tally(sql: psycopg.Connection[Any], order_id: uuid.UUID) -> dict[str, int]:
    rows = sql.execute(
        "SELECT status, count(*) FROM order_tasks WHERE order_id = %s GROUP BY status",
        (order_id,),
    ).fetchall()
    return dict(rows)


async def assert_all_invariants_hold(repo: Repository, order_id: uuid.UUID) -> None:
    assert (await invariants.check_order(repo, order_id)).passed is True
    overall = await invariants.check_all(repo)
    assert overall.passed is True, overall.violations


def recorded_actions(sql: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return sql.execute(
        "SELECT action, order_id, actor, details FROM operator_actions ORDER BY id"
    ).fetchall()


async def test_retry_now_makes_retrying_tasks_due_and_first_in_line(
    repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    before = order_row(sql, mixed_order)
    result = await operations.retry_now(repo, mixed_order, actor="test:alice")
    assert result.tasks_affected == 5
    due = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s AND status = 'FAILED_RETRYING'"
        " AND retry_after <= now() AND queue_position <= extract(epoch FROM now())",
        (mixed_order,),
    ).fetchone()
    assert due == (5,)
    assert order_row(sql, mixed_order) == before
    assert_counters_exact(sql, mixed_order)
    await assert_all_invariants_hold(repo, mixed_order)
    [(action, order_id, actor, details)] = recorded_actions(sql)
    assert (action, order_id, actor) == ("retry_now", mixed_order, "test:alice")
    assert details["tasks"] == 5


async def test_drain_requeues_dead_letters_from_attempt_zero(
    repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    result = await operations.drain_dead_letters(repo, mixed_order, actor="test:bob")
    assert result.tasks_affected == 5
    assert result.failed_permanent_plays == 0
    assert "FAILED_PERMANENT" not in tally(sql, mixed_order)
    drained = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s AND status = 'FAILED_RETRYING'"
        " AND attempts = 0 AND retry_after <= now()",
        (mixed_order,),
    ).fetchone()
    assert drained == (5,)
    assert_counters_exact(sql, mixed_order)
    await assert_all_invariants_hold(repo, mixed_order)
    assert recorded_actions(sql)[0][0] == "drain_dead_letters"


async def test_force_complete_is_refused_while_tasks_execute(
    repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    before = tally(sql, mixed_order)
    with pytest.raises(Conflict) as refused:
        await operations.force_complete(repo, mixed_order, actor="test")
    assert refused.value.field == "force"
    assert tally(sql, mixed_order) == before
    assert recorded_actions(sql) == []


async def test_force_complete_with_force_dead_letters_every_open_task(
    repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    result = await operations.force_complete(repo, mixed_order, actor="test", force=True)
    assert result.order_status == "COMPLETED"
    assert result.tasks_affected == 5 + 3 + 15
    assert tally(sql, mixed_order) == {"COMPLETED": 10, "FAILED_PERMANENT": 28}
    order = order_row(sql, mixed_order)
    assert order["delivered"] + order["failed_permanent_plays"] == order["quantity"]
    assert_counters_exact(sql, mixed_order)
    await assert_all_invariants_hold(repo, mixed_order)
    with pytest.raises(Conflict):
        await operations.force_complete(repo, mixed_order, actor="test", force=True)

    # Draining a force-completed order reopens it, still consistent.
    await operations.drain_dead_letters(repo, mixed_order, actor="test")
    assert order_row(sql, mixed_order)["status"] == "PROCESSING"
    await assert_all_invariants_hold(repo, mixed_order)


async def test_force_complete_without_executing_tasks_needs_no_force(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 4000)
    set_task_states(sql, order_id, ["COMPLETED"] * 4 + ["FAILED_PERMANENT"] * 2)
    result = await operations.force_complete(repo, order_id, actor="test")
    assert result.order_status == "COMPLETED"
    assert result.delivered == 1600
    assert result.failed_permanent_plays == 2400
    await assert_all_invariants_hold(repo, order_id)


async def test_cancel_dead_letters_the_remaining_tasks_saying_so(
    repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    with pytest.raises(Conflict):
        await operations.cancel(repo, mixed_order, actor="test:carol")
    result = await operations.cancel(repo, mixed_order, actor="test:carol", force=True)
    assert result.tasks_affected == 5 + 3 + 15
    assert tally(sql, mixed_order) == {"COMPLETED": 10, "FAILED_PERMANENT": 28}
    cancelled = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s AND last_error LIKE"
        " 'cancelled by operator test:carol%%'",
        (mixed_order,),
    ).fetchone()
    assert cancelled == (23,)
    # Dead letters keep the order PROCESSING until drained or force-completed.
    assert result.order_status == "PROCESSING"
    assert_counters_exact(sql, mixed_order)
    await assert_all_invariants_hold(repo, mixed_order)


async def test_cancel_without_executing_tasks_needs_no_force(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 2000)
    result = await operations.cancel(repo, order_id, actor="test")
    assert result.tasks_affected == 5
    assert result.order_status == "PROCESSING"
    assert result.failed_permanent_plays == 2000
    await assert_all_invariants_hold(repo, order_id)


async def test_actions_on_an_unknown_order_are_not_found(repo: Repository) -> None:
    for action in (
        operations.retry_now,
        operations.drain_dead_letters,
        operations.force_complete,
        operations.cancel,
    ):
        with pytest.raises(NotFound):
            await action(repo, uuid.uuid4(), actor="test")


async def test_operator_actions_over_http_record_the_api_key_as_actor(
    api: Any, repo: Repository, sql: psycopg.Connection[Any], mixed_order: uuid.UUID
) -> None:
    base = f"/api/admin/orders/{mixed_order}"
    headers = key_headers(OPERATOR_KEY)
    assert (await api.post(f"{base}/retry-now", headers=headers)).status_code == 200
    assert (await api.post(f"{base}/drain-dead-letters", headers=headers)).status_code == 200
    refused = await api.post(f"{base}/force-complete", headers=headers, json={"force": False})
    assert refused.status_code == 409
    assert refused.json()["field"] == "force"
    refused = await api.post(f"{base}/cancel", headers=headers)
    assert refused.status_code == 409
    cancelled = await api.post(f"{base}/cancel", headers=headers, json={"force": True})
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["action"] == "cancel"
    assert body["tasksAffected"] == 5 + 5 + 3 + 15
    done = await api.post(f"{base}/force-complete", headers=headers, json={})
    assert done.status_code == 200
    assert done.json()["orderStatus"] == "COMPLETED"
    bad = await api.post(f"{base}/force-complete", headers=headers, json={"force": "yes"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "force"
    actions = recorded_actions(sql)
    assert [a[0] for a in actions] == [
        "retry_now",
        "drain_dead_letters",
        "cancel",
        "force_complete",
    ]
    assert all(a[2].startswith("api-key:") and a[2].endswith("(operator)") for a in actions)
    await assert_all_invariants_hold(repo, mixed_order)


async def _wait_until_blocked_on_a_lock(sql: psycopg.Connection[Any]) -> None:
    def waiting() -> bool:
        row = sql.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
        return row is not None and row[0] > 0

    await wait_for(waiting, 10, "the action to wait on a lock")


async def test_a_deadlocked_action_is_retried_and_the_caller_never_sees_it(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    order_id = insert_order(sql, 4000)
    set_task_states(sql, order_id, ["COMPLETED"] * 2)
    other = psycopg.connect(db_url)  # a psql session holding the order row
    try:
        # The action (default deadlock_timeout, 1 s) detects the cycle first
        # and is the one PostgreSQL aborts.
        other.execute("SET deadlock_timeout = '10s'")
        other.execute("SELECT 1 FROM orders WHERE id = %s FOR UPDATE", (order_id,))
        action = asyncio.create_task(operations.force_complete(repo, order_id, actor="test"))
        await _wait_until_blocked_on_a_lock(sql)
        # Now close the cycle: the action holds the open tasks, we want one.
        await asyncio.to_thread(
            other.execute,
            "UPDATE order_tasks SET last_error = 'touched' WHERE order_id = %s AND seq = 3",
            (order_id,),
        )
        await asyncio.to_thread(other.commit)
        result = await asyncio.wait_for(action, timeout=20)
    finally:
        other.close()
    assert result.order_status == "COMPLETED"
    assert len(recorded_actions(sql)) == 1
    await assert_all_invariants_hold(repo, order_id)
