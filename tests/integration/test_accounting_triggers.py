"""The database keeps orders.delivered and failed_permanent_plays exact, for
every writer: the service, and an operator running the runbook by hand."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import runbook_sql
from tests.helpers import (
    assert_counters_exact,
    insert_order,
    order_row,
    set_task_states,
    task_sums,
    violations,
)

STATUSES = ["PENDING", "EXECUTING", "COMPLETED", "FAILED_RETRYING", "FAILED_PERMANENT"]
MIXED = ["COMPLETED"] * 10 + ["FAILED_PERMANENT"] * 5 + ["FAILED_RETRYING"] * 5 + ["EXECUTING"] * 3


@pytest.fixture
def mixed_order(sql: psycopg.Connection[Any]) -> Any:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, MIXED)
    return order_id


def test_counters_follow_hand_updates_of_a_mixed_order(
    sql: psycopg.Connection[Any], mixed_order: Any
) -> None:
    order = order_row(sql, mixed_order)
    sums = task_sums(sql, mixed_order)
    assert order["status"] == "PROCESSING"
    assert order["delivered"] == sums["COMPLETED"] > 0
    assert order["failed_permanent_plays"] == sums["FAILED_PERMANENT"] > 0
    assert violations(sql) == []


def test_force_retry_sql_makes_retrying_tasks_due_and_keeps_counters(
    sql: psycopg.Connection[Any], mixed_order: Any
) -> None:
    before = order_row(sql, mixed_order)
    cur = sql.execute(runbook_sql.render(runbook_sql.FORCE_RETRY, mixed_order))
    assert cur.rowcount == 5
    due = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s AND status = 'FAILED_RETRYING'"
        " AND retry_after <= now()",
        (mixed_order,),
    ).fetchone()
    assert due == (5,)
    assert order_row(sql, mixed_order) == before
    assert_counters_exact(sql, mixed_order)


def test_drain_sql_moves_dead_letters_back_and_subtracts_their_units(
    sql: psycopg.Connection[Any], mixed_order: Any
) -> None:
    cur = sql.execute(runbook_sql.render(runbook_sql.DRAIN_DEAD_LETTERS, mixed_order))
    assert cur.rowcount == 5
    order = order_row(sql, mixed_order)
    assert order["failed_permanent_plays"] == 0
    assert order["status"] == "PROCESSING"
    assert_counters_exact(sql, mixed_order)


def test_force_complete_sql_closes_open_tasks_and_leaves_every_invariant_true(
    sql: psycopg.Connection[Any], mixed_order: Any
) -> None:
    sql.execute(runbook_sql.render(runbook_sql.FORCE_COMPLETE, mixed_order))
    order = order_row(sql, mixed_order)
    sums = task_sums(sql, mixed_order)
    assert order["status"] == "COMPLETED"
    assert set(sums) == {"COMPLETED", "FAILED_PERMANENT"}
    assert order["delivered"] == sums["COMPLETED"]
    assert order["failed_permanent_plays"] == sums["FAILED_PERMANENT"]
    assert order["delivered"] + order["failed_permanent_plays"] == order["quantity"]
    reasons = sql.execute(
        "SELECT DISTINCT last_error FROM order_tasks WHERE order_id = %s AND status ="
        " 'FAILED_PERMANENT' AND last_error LIKE 'cancelled%%'",
        (mixed_order,),
    ).fetchall()
    assert len(reasons) == 1
    assert "completed by an operator" in reasons[0][0]
    assert violations(sql) == []


def test_drain_after_force_complete_reopens_the_order(
    sql: psycopg.Connection[Any], mixed_order: Any
) -> None:
    sql.execute(runbook_sql.render(runbook_sql.FORCE_COMPLETE, mixed_order))
    sql.execute(runbook_sql.render(runbook_sql.DRAIN_DEAD_LETTERS, mixed_order))
    order = order_row(sql, mixed_order)
    assert order["status"] == "PROCESSING"
    assert order["failed_permanent_plays"] == 0
    assert_counters_exact(sql, mixed_order)


@pytest.mark.parametrize(
    "name",
    ["stuck_orders", "task_distribution", "recent_failures", "invariant_health", "invariant_log"],
)
def test_runbook_queries_run_verbatim(
    sql: psycopg.Connection[Any], mixed_order: Any, name: str
) -> None:
    rows = sql.execute(runbook_sql.render(runbook_sql.ALL[name], mixed_order)).fetchall()
    if name == "task_distribution":
        assert rows[0][2:] == (15, 3, 10, 5, 5)
    if name == "recent_failures":
        assert len(rows) == 5
    if name == "invariant_health":
        assert rows[0][-1] == "HEALTHY"


def test_last_completion_completes_the_order_in_the_same_statement(
    sql: psycopg.Connection[Any],
) -> None:
    order_id = insert_order(sql, 1_000)
    assert order_row(sql, order_id)["status"] == "PENDING"
    sql.execute(
        "UPDATE order_tasks SET status = 'EXECUTING', attempts = 1,"
        " lease_expires_at = now() + interval '1 minute', fencing_token = 1"
        " WHERE order_id = %s AND seq = 0",
        (order_id,),
    )
    assert order_row(sql, order_id)["status"] == "PROCESSING"
    sql.execute("UPDATE order_tasks SET status = 'COMPLETED' WHERE order_id = %s", (order_id,))
    order = order_row(sql, order_id)
    assert order["status"] == "COMPLETED"
    assert order["delivered"] == 1_000
    completed_at = sql.execute(
        "SELECT completed_at FROM orders WHERE id = %s", (order_id,)
    ).fetchone()
    assert completed_at is not None
    assert completed_at[0] is not None


def test_one_statement_over_many_orders_updates_each_once(sql: psycopg.Connection[Any]) -> None:
    ids = [insert_order(sql, 2_000) for _ in range(5)]
    sql.execute("UPDATE order_tasks SET status = 'FAILED_PERMANENT' WHERE seq < 2")
    for order_id in ids:
        assert_counters_exact(sql, order_id)
        assert order_row(sql, order_id)["failed_permanent_plays"] == 800


def test_deleting_a_task_is_reflected_and_breaks_only_the_sum_check(
    sql: psycopg.Connection[Any],
) -> None:
    order_id = insert_order(sql, 1_200)
    set_task_states(sql, order_id, ["COMPLETED"])
    sql.execute("DELETE FROM order_tasks WHERE order_id = %s AND seq = 0", (order_id,))
    assert order_row(sql, order_id)["delivered"] == 0
    assert {v[1] for v in violations(sql)} == {"task_quantities_sum_to_order_quantity"}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=7),
            st.sampled_from(STATUSES),
            st.integers(min_value=1, max_value=3),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_any_sequence_of_hand_status_changes_keeps_counters_exact(
    sql: psycopg.Connection[Any], steps: list[tuple[int, str, int]]
) -> None:
    order_id = insert_order(sql, 3_000)  # 8 tasks of 375
    for first_seq, status, span in steps:
        sql.execute(
            """UPDATE order_tasks SET status = %s,
                   lease_expires_at = CASE WHEN %s = 'EXECUTING' THEN now() + interval '1 hour' END,
                   fencing_token = COALESCE(fencing_token, 0) + 1
               WHERE order_id = %s AND seq BETWEEN %s AND %s""",
            (status, status, order_id, first_seq, first_seq + span - 1),
        )
        order = order_row(sql, order_id)
        sums = task_sums(sql, order_id)
        assert order["delivered"] == sums.get("COMPLETED", 0)
        assert order["failed_permanent_plays"] == sums.get("FAILED_PERMANENT", 0)
        open_units = sum(sums.get(s, 0) for s in ("PENDING", "EXECUTING", "FAILED_RETRYING"))
        if sums.get("COMPLETED", 0) == 3_000:
            assert order["status"] == "COMPLETED"
        if open_units:
            assert order["status"] != "COMPLETED"
        assert violations(sql) == []


def row_version(sql: psycopg.Connection[Any], order_id: Any) -> Any:
    """The row's version (xmin) and its last locker or deleter (xmax)."""
    return sql.execute(
        "SELECT xmin::text, xmax::text FROM orders WHERE id = %s", (order_id,)
    ).fetchone()


def test_claims_and_retries_of_started_orders_leave_the_orders_rows_alone(
    sql: psycopg.Connection[Any],
) -> None:
    """Only counter changes, the first start and a reopening write or lock an
    order: claims and retries of a started order do neither (its row keeps
    its version, and no locker's id in xmax), so concurrent claimers do not
    queue on it."""
    order_id = insert_order(sql, 4_000)
    set_task_states(sql, order_id, ["EXECUTING"])  # started: PROCESSING
    version = row_version(sql, order_id)
    sql.execute(
        """UPDATE order_tasks SET status = 'EXECUTING', attempts = attempts + 1,
                       lease_expires_at = now() + interval '1 minute', fencing_token = 7
                   WHERE order_id = %s AND seq BETWEEN 1 AND 5""",
        (order_id,),
    )
    sql.execute(
        """UPDATE order_tasks SET status = 'FAILED_RETRYING', retry_after = now()
                   WHERE order_id = %s AND seq BETWEEN 1 AND 3""",
        (order_id,),
    )
    sql.execute(
        """UPDATE order_tasks SET lease_expires_at = now() + interval '1 hour'
                   WHERE order_id = %s AND status = 'EXECUTING'""",
        (order_id,),
    )
    assert row_version(sql, order_id) == version
    sql.execute(
        "UPDATE order_tasks SET status = 'COMPLETED' WHERE order_id = %s AND seq = 4", (order_id,)
    )
    assert (
        sql.execute(
            "SELECT xmin::text, xmax::text FROM orders WHERE id = %s", (order_id,)
        ).fetchone()
        != version
    )
    assert_counters_exact(sql, order_id)
