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
from goodfellaz17.services.invariant_monitor import InvariantMonitor
from goodfellaz17.services.invariants import MAX_ORDER_ROWS_PER_GLOBAL_CHECK
from goodfellaz17.settings import Settings
from tests.conftest import OPERATOR_KEY, READ_KEY, key_headers
from tests.helpers import insert_order, set_task_states
from tests.integration.console_helpers import client_for, data_value, signed_in
from tests.observability import parse_metrics, sample

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
        "SELECT scope, passed, failed_checks FROM invariant_check_log ORDER BY id"
    ).fetchall()
    assert logged == [
        ("ORPHANS", True, []),
        ("ORPHANS", False, ["no_task_executing_past_its_lease"]),
    ]


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


# ---------------------------------------------------------------- what read keys can reach


async def _alert_inputs(api: Any) -> tuple[float, float]:
    """What the InvariantViolation and InvariantCheckStale alerts read."""
    metrics = parse_metrics((await api.get("/metrics", headers=key_headers(READ_KEY))).text)
    return (
        sample(metrics, "delivery_invariant_violations"),
        sample(metrics, "delivery_invariant_last_check_timestamp_seconds"),
    )


async def _console_verdict(api: Any) -> str:
    async with client_for(api.app) as console:
        await signed_in(console, READ_KEY)
        return data_value((await console.get("/console/partials/overview")).text, "stat-invariants")


async def test_nothing_a_read_key_does_changes_what_the_invariant_alert_sees(
    api: Any, repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = _processing_order(sql)
    _without_triggers(
        sql, "UPDATE orders SET delivered = delivered - 1 WHERE id = %(id)s", order_id
    )
    assert (await InvariantMonitor(repo, 60).run_once()).violation_count == 1
    # The monitor's check is old enough that a read key's /all runs a check of
    # its own rather than reusing it.
    sql.execute("UPDATE invariant_check_log SET check_timestamp = now() - interval '2 min'")
    seen = await _alert_inputs(api)
    assert seen[0] == 1
    assert await _console_verdict(api) == "violations"

    for path in (
        "/api/admin/invariants/orphans",
        "/api/admin/invariants/all",
        f"/api/admin/invariants/orders/{order_id}",
        "/api/admin/invariants/orphans",
    ):
        response = await api.get(path, headers=key_headers(READ_KEY))
        assert response.status_code == 200, path
        # Neither the count nor the check's age moved (the audit's /orphans
        # call turned the gauge to 0; any call refreshed the timestamp).
        assert await _alert_inputs(api) == seen, path
    fresh = (await api.get("/api/admin/invariants/all", headers=key_headers(READ_KEY))).json()
    assert fresh["passed"] is False

    assert await _console_verdict(api) == "violations"
    scopes = sql.execute(
        "SELECT scope, source FROM invariant_check_log WHERE order_id IS NULL ORDER BY id"
    ).fetchall()
    assert scopes == [("GLOBAL", "MONITOR"), ("ORPHANS", "API"), ("GLOBAL", "API")]


async def test_the_operators_own_check_from_the_cli_feeds_the_alert(
    api: Any, repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    # The runbook's answer to InvariantCheckStale: `goodfellaz17 invariants check --all`.
    await invariants.check_all(repo, source=invariants.CheckSource.CLI)
    row = sql.execute(
        "SELECT extract(epoch FROM check_timestamp) FROM invariant_check_log"
    ).fetchone()
    assert row is not None
    assert await _alert_inputs(api) == (0, pytest.approx(float(row[0])))


async def test_read_key_checks_write_a_bounded_number_of_rows(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = _processing_order(sql)
    paths = [
        "/api/admin/invariants/all",
        "/api/admin/invariants/orphans",
        f"/api/admin/invariants/orders/{order_id}",
    ]
    answers = []
    for _ in range(34):
        for path in paths:
            response = await api.get(path, headers=key_headers(READ_KEY))
            assert response.status_code == 200
            answers.append(response.json())
    logged = sql.execute(
        "SELECT scope, count(*) FROM invariant_check_log GROUP BY scope ORDER BY scope"
    ).fetchall()
    # 102 GETs within the reuse window: one global check (reused), one row per
    # distinct outcome of the orphan and the order check.
    assert logged == [("GLOBAL", 1), ("ORDER", 1), ("ORPHANS", 1)]
    assert {a["checkedAt"] for a in answers[::3]} == {answers[0]["checkedAt"]}
    assert all(a["passed"] for a in answers)


async def test_an_operator_key_always_gets_a_fresh_global_check(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = _processing_order(sql)
    first = (await api.get("/api/admin/invariants/all", headers=key_headers(READ_KEY))).json()
    assert first["passed"] is True
    _without_triggers(
        sql, "UPDATE orders SET delivered = delivered - 1 WHERE id = %(id)s", order_id
    )
    reused = (await api.get("/api/admin/invariants/all", headers=key_headers(READ_KEY))).json()
    assert reused == first, "a read key gets the recent result, with its checkedAt"
    fresh = (await api.get("/api/admin/invariants/all", headers=key_headers(OPERATOR_KEY))).json()
    assert fresh["passed"] is False
    assert fresh["violationCount"] == 1
    again = (await api.get("/api/admin/invariants/all", headers=key_headers(READ_KEY))).json()
    assert again == fresh, "the newest check is the one reused"


async def test_a_failing_global_check_writes_a_bounded_number_of_rows(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    broken = [insert_order(sql, 800) for _ in range(MAX_ORDER_ROWS_PER_GLOBAL_CHECK + 20)]
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute("UPDATE orders SET delivered = 1 WHERE id = ANY(%s)", (broken,))
    result = await invariants.check_all(repo)
    assert result.violation_count == len(broken)
    per_order = sql.execute(
        "SELECT count(*) FROM invariant_check_log WHERE order_id IS NOT NULL"
    ).fetchone()
    assert per_order == (MAX_ORDER_ROWS_PER_GLOBAL_CHECK,)
    first_orders = sql.execute(
        "SELECT order_id FROM invariant_check_log WHERE order_id IS NOT NULL ORDER BY order_id"
    ).fetchall()
    assert [r[0] for r in first_orders] == sorted(broken)[:MAX_ORDER_ROWS_PER_GLOBAL_CHECK]
    overall = sql.execute(
        "SELECT violation_count FROM invariant_check_log WHERE order_id IS NULL"
    ).fetchall()
    assert overall == [(len(broken),)], "the GLOBAL row counts them all"
