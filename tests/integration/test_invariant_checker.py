"""The invariant checker catches corruption seeded by hand in SQL, one
invariant at a time, in the single-order and the global check alike; and
the global check costs a fixed, small number of statements however many
tasks there are."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from goodfellaz17.db.pool import connection_kwargs
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.invariants import CHECKS
from goodfellaz17.services import invariants
from goodfellaz17.settings import Settings
from tests.conftest import READ_KEY, key_headers
from tests.helpers import insert_order, set_task_states

ORDER_STATES = ["COMPLETED"] * 10 + ["FAILED_PERMANENT"] * 3 + ["FAILED_RETRYING"] * 2


def _processing_order(sql: psycopg.Connection[Any]) -> uuid.UUID:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, ORDER_STATES)
    return order_id


def _completed_order(sql: psycopg.Connection[Any]) -> uuid.UUID:
    order_id = insert_order(sql, 2000)
    set_task_states(sql, order_id, ["COMPLETED"] * 5)
    return order_id


def _without_triggers(sql: psycopg.Connection[Any], statement: str, order_id: uuid.UUID) -> None:
    """Corrupt the way a buggy writer would: past the accounting triggers."""
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute(statement, {"id": order_id})


# (name, seed an order, corruption, the checks it breaks). Where a corruption
# cannot break one check alone, the comment says which others it implies.
CORRUPTIONS: list[tuple[str, Any, str, set[str]]] = [
    (
        "task quantities no longer sum to the order",
        _processing_order,
        "UPDATE order_tasks SET quantity = quantity + 7 WHERE order_id = %(id)s"
        " AND status = 'FAILED_RETRYING' AND seq = 13",
        {"task_quantities_sum_to_order_quantity"},
    ),
    (
        "delivered drifts from the completed tasks",
        _processing_order,
        "UPDATE orders SET delivered = delivered - 1 WHERE id = %(id)s",
        {"delivered_equals_completed_tasks"},
    ),
    (
        "failed_permanent_plays drifts from the dead letters",
        _processing_order,
        "UPDATE orders SET failed_permanent_plays = failed_permanent_plays + 1 WHERE id = %(id)s",
        {"failed_permanent_plays_equals_dead_letter_tasks"},
    ),
    (
        # delivered > quantity while delivered = sum(COMPLETED) would need the
        # tasks to sum past the order, so it always shows as drift as well.
        "delivered exceeds the quantity",
        _processing_order,
        "UPDATE orders SET delivered = quantity + 1 WHERE id = %(id)s",
        {"delivered_within_quantity", "delivered_equals_completed_tasks"},
    ),
    (
        # With the counters exact, an open task is exactly what makes delivered
        # fall short of quantity - failed_permanent_plays: the two go together.
        "a COMPLETED order with open tasks",
        _processing_order,
        "UPDATE orders SET status = 'COMPLETED' WHERE id = %(id)s",
        {
            "completed_order_has_no_open_tasks",
            "completed_order_delivered_is_quantity_minus_dead_letters",
        },
    ),
    (
        "every task COMPLETED but the order is not",
        _completed_order,
        "UPDATE orders SET status = 'PROCESSING' WHERE id = %(id)s",
        {"all_tasks_completed_means_order_completed"},
    ),
    (
        "a task EXECUTING past its lease",
        _processing_order,
        "UPDATE order_tasks SET status = 'EXECUTING', lease_expires_at = now() - interval '1 s',"
        " fencing_token = 1 WHERE order_id = %(id)s AND seq = 20",
        {"no_task_executing_past_its_lease"},
    ),
]


def test_the_corruptions_cover_every_check() -> None:
    assert set().union(*(c[3] for c in CORRUPTIONS)) == set(CHECKS)


async def test_a_clean_database_passes_both_checks(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    orders = [_processing_order(sql), _completed_order(sql), insert_order(sql, 10)]
    for order_id in orders:
        result = await invariants.check_order(repo, order_id)
        assert result.passed is True
        assert {c.name for c in result.checks} == set(CHECKS)
    overall = await invariants.check_all(repo)
    assert overall.passed is True
    assert overall.orders_checked == 3
    assert overall.violations == []


@pytest.mark.parametrize(
    ("case", "seed", "corruption", "broken"), CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS]
)
async def test_seeded_corruption_is_reported_as_exactly_the_broken_check(
    repo: Repository,
    sql: psycopg.Connection[Any],
    case: str,
    seed: Any,
    corruption: str,
    broken: set[str],
) -> None:
    bystander = _processing_order(sql)
    order_id = seed(sql)
    assert (await invariants.check_all(repo)).passed is True

    _without_triggers(sql, corruption, order_id)

    single = await invariants.check_order(repo, order_id)
    assert single.passed is False
    assert {c.name for c in single.checks if not c.passed} == broken
    overall = await invariants.check_all(repo)
    assert overall.passed is False
    assert {(v.order_id, v.check) for v in overall.violations} == {
        (order_id, name) for name in broken
    }
    assert (await invariants.check_order(repo, bystander)).passed is True

    logged = sql.execute(
        "SELECT scope, passed, failed_checks FROM invariant_check_log WHERE order_id = %s"
        " ORDER BY id",
        (order_id,),
    ).fetchall()
    assert [(scope, passed, set(failed)) for scope, passed, failed in logged] == [
        ("ORDER", False, broken),
        ("GLOBAL", False, broken),
    ]
    health = sql.execute(
        "SELECT orders_currently_violating, status, last_failure_at IS NOT NULL"
        " FROM v_invariant_health"
    ).fetchone()
    assert health == (1, "VIOLATED", True)


async def test_orphans_lists_tasks_executing_past_their_lease(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, ["EXECUTING"] * 3)
    clean = (await api.get("/api/admin/invariants/orphans", headers=key_headers(READ_KEY))).json()
    assert clean["passed"] is True
    assert clean["count"] == 0
    sql.execute(
        "UPDATE order_tasks SET lease_expires_at = now() - interval '1 minute', lease_owner = 'w9'"
        " WHERE order_id = %s AND seq IN (0, 2)",
        (order_id,),
    )
    r = await api.get("/api/admin/invariants/orphans", headers=key_headers(READ_KEY))
    assert r.status_code == 200
    body = r.json()
    assert body["passed"] is False
    assert body["count"] == 2
    assert {o["seq"] for o in body["orphans"]} == {0, 2}
    assert all(o["leaseOwner"] == "w9" and o["overdueSeconds"] >= 59 for o in body["orphans"])
    assert all(o["orderId"] == str(order_id) for o in body["orphans"])
    logged = sql.execute(
        "SELECT passed, failed_checks FROM invariant_check_log ORDER BY id"
    ).fetchall()
    assert logged == [(True, []), (False, ["no_task_executing_past_its_lease"])]


async def test_invariant_endpoints_answer_with_the_named_fields(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = _processing_order(sql)
    one = await api.get(f"/api/admin/invariants/orders/{order_id}", headers=key_headers(READ_KEY))
    assert one.status_code == 200
    assert one.json()["passed"] is True
    assert {c["name"] for c in one.json()["checks"]} == set(CHECKS)
    assert all({"expected", "actual", "passed"} <= set(c) for c in one.json()["checks"])
    every = await api.get("/api/admin/invariants/all", headers=key_headers(READ_KEY))
    assert every.status_code == 200
    assert {"passed", "ordersChecked", "violations", "durationMs"} <= set(every.json())
    missing = await api.get(
        f"/api/admin/invariants/orders/{uuid.uuid4()}", headers=key_headers(READ_KEY)
    )
    assert missing.status_code == 404


# ---------------------------------------------------------------- statement count


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[str] = []


@pytest.fixture
async def counting_repo(
    db_url: str, settings: Settings
) -> AsyncIterator[tuple[Repository, StatementLog]]:
    """A repository whose every client-side statement is recorded."""
    seen = StatementLog()

    class CountingCursor(psycopg.AsyncCursor[DictRow]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            seen.statements.append(str(query))
            return await super().execute(query, params, **kwargs)

    kwargs = connection_kwargs(settings, "statement-count") | {"cursor_factory": CountingCursor}
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        db_url, min_size=1, max_size=2, kwargs=kwargs, open=False
    )
    await pool.open()
    try:
        yield Repository(pool), seen
    finally:
        await pool.close()


def _seed_tasks(sql: psycopg.Connection[Any], orders: int, tasks_per_order: int) -> None:
    """orders x tasks_per_order tasks of 400 units, a third of each completed."""
    sql.execute(
        """WITH o AS (
               INSERT INTO orders (quantity, target, backend, task_count)
               SELECT %(per)s * 400, 'bulk-' || g, 'simulated', %(per)s
               FROM generate_series(1, %(orders)s) g
               RETURNING id, created_at)
           INSERT INTO order_tasks (order_id, seq, quantity, queue_position, status,
                                    attempts, executed_at)
           SELECT o.id, s, 400, extract(epoch FROM o.created_at) + s,
                  CASE WHEN s %% 3 = 0 THEN 'COMPLETED' ELSE 'PENDING' END,
                  CASE WHEN s %% 3 = 0 THEN 1 ELSE 0 END,
                  CASE WHEN s %% 3 = 0 THEN now() END
           FROM o, generate_series(0, %(per)s - 1) s""",
        {"orders": orders, "per": tasks_per_order},
    )


async def test_global_check_over_100k_tasks_takes_a_fixed_few_statements(
    counting_repo: tuple[Repository, StatementLog], sql: psycopg.Connection[Any]
) -> None:
    repo, seen = counting_repo
    _seed_tasks(sql, orders=2500, tasks_per_order=40)
    assert sql.execute("SELECT count(*) FROM order_tasks").fetchone() == (100_000,)
    sql.execute("ANALYZE")
    corrupt = sql.execute("SELECT id FROM orders ORDER BY id LIMIT 1").fetchone()
    assert corrupt is not None
    sql.execute("UPDATE orders SET delivered = delivered - 1 WHERE id = %s", (corrupt[0],))

    # The counter sees per-order work: two statements per single-order check.
    some = [r[0] for r in sql.execute("SELECT id FROM orders LIMIT 3").fetchall()]
    for order_id in some:
        await invariants.check_order(repo, order_id)
    assert len(seen.statements) == 2 * len(some)

    seen.statements.clear()
    result = await invariants.check_all(repo)
    assert result.orders_checked == 2500
    assert result.violations == [
        invariants.Violation(
            order_id=corrupt[0],
            check="delivered_equals_completed_tasks",
            expected=14 * 400,
            actual=14 * 400 - 1,
        )
    ]
    # One aggregate statement and one log insert, whatever the number of orders.
    assert len(seen.statements) <= 3, seen.statements
