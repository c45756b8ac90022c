"""Storage v2: open work in a small table, finished work in day partitions
that leave by retention (db/schema.sql, "Storage"; services/storage.py).

What these tests pin down: a task moves out of the open partition in the
statement that finishes it and back when an operator drains it; an order
and its finished tasks share a day; a day is dropped only when every order
in it finished longer ago than the retention period, never by a DELETE and
never with an open order in it; a missing day partition never fails an order
or a completion; the archive writes what is dropped; the small tables keep
their own retention; one maintenance leader at a time.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from goodfellaz17.db.repository import Repository
from goodfellaz17.services import invariants
from goodfellaz17.services.storage import (
    MAINTENANCE_LOCK_ID,
    StorageMaintenance,
    archive,
    today_utc,
)
from goodfellaz17.settings import Settings
from tests.conftest import make_settings
from tests.helpers import insert_order, violations, wait_for
from tests.runbook_sql import DRAIN_DEAD_LETTERS

OPEN = "order_tasks_open"


def partition_of(sql: psycopg.Connection[Any], task_seq: int, order_id: uuid.UUID) -> str:
    row = sql.execute(
        "SELECT tableoid::regclass::text FROM order_tasks WHERE order_id = %s AND seq = %s",
        (order_id, task_seq),
    ).fetchone()
    assert row is not None
    return str(row[0])


def day_suffix(day: date) -> str:
    return day.strftime("%Y%m%d")


def old_order(
    sql: psycopg.Connection[Any], day: date, *, completed_days_ago: int | None, tasks: int = 3
) -> uuid.UUID:
    """An order taken on `day` (its id's time), its tasks, and, unless
    completed_days_ago is None, all of them delivered that many days ago."""
    sql.execute("SELECT storage_create_day(%s)", (day,))
    row = sql.execute(
        """WITH o AS (
               INSERT INTO orders (id, quantity, target, backend, task_count, created_at)
               VALUES (uuid_v7(%(day)s::timestamp AT TIME ZONE 'UTC' + interval '12 hours'),
                       %(qty)s, 't', 'simulated', %(tasks)s,
                       %(day)s::timestamp AT TIME ZONE 'UTC' + interval '12 hours')
               RETURNING id, created_at)
           INSERT INTO order_tasks (order_id, seq, quantity, queue_position, created_at)
           SELECT o.id, s, 100, s, o.created_at FROM o, generate_series(0, %(tasks)s - 1) s
           RETURNING order_id""",
        {"day": day, "qty": 100 * tasks, "tasks": tasks},
    ).fetchone()
    assert row is not None
    order_id = uuid.UUID(str(row[0]))
    if completed_days_ago is not None:
        sql.execute(
            "UPDATE order_tasks SET status = 'COMPLETED', executed_at = now() WHERE order_id = %s",
            (order_id,),
        )
        sql.execute(
            "UPDATE orders SET completed_at = now() - make_interval(days => %s) WHERE id = %s",
            (completed_days_ago, order_id),
        )
    return order_id


def tables(sql: psycopg.Connection[Any], pattern: str) -> set[str]:
    rows = sql.execute(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %s", (pattern,)
    ).fetchall()
    return {r[0] for r in rows}


def storage_settings(db_url: str, **overrides: Any) -> Settings:
    return make_settings(db_url, retention_days=30, **overrides)


# ---------------------------------------------------------------- where rows live


def test_a_task_leaves_the_open_partition_in_the_statement_that_finishes_it(
    sql: psycopg.Connection[Any],
) -> None:
    order_id = insert_order(sql, 1_200)
    day = day_suffix(today_utc())
    assert {partition_of(sql, s, order_id) for s in range(3)} == {OPEN}
    sql.execute(
        """UPDATE order_tasks SET status = 'COMPLETED', executed_at = now()
           WHERE order_id = %s AND seq = 0""",
        (order_id,),
    )
    sql.execute(
        """UPDATE order_tasks SET status = 'FAILED_PERMANENT', executed_at = now(),
                  last_error = 'x' WHERE order_id = %s AND seq = 1""",
        (order_id,),
    )
    assert partition_of(sql, 0, order_id) == f"order_tasks_finished_p{day}"
    assert partition_of(sql, 1, order_id) == f"order_tasks_finished_p{day}"
    assert partition_of(sql, 2, order_id) == OPEN
    order = sql.execute(
        "SELECT tableoid::regclass::text, delivered, failed_permanent_plays FROM orders"
        " WHERE id = %s",
        (order_id,),
    ).fetchone()
    assert order == (f"orders_p{day}", 400, 400)
    # The runbook's drain, verbatim: the dead letter comes back to the open table.
    sql.execute(DRAIN_DEAD_LETTERS.replace("{orderId}", str(order_id)))
    assert partition_of(sql, 1, order_id) == OPEN
    assert sql.execute(
        "SELECT status, failed_permanent_plays FROM orders WHERE id = %s", (order_id,)
    ).fetchone() == ("PROCESSING", 0)
    assert violations(sql) == []


def test_the_open_table_holds_only_open_tasks(sql: psycopg.Connection[Any]) -> None:
    for _ in range(3):
        order_id = insert_order(sql, 4_000)
        sql.execute(
            "UPDATE order_tasks SET status = 'COMPLETED', executed_at = now()"
            " WHERE order_id = %s AND seq < 7",
            (order_id,),
        )
    rows = sql.execute("SELECT DISTINCT status FROM order_tasks_open").fetchall()
    assert {r[0] for r in rows} == {"PENDING"}
    assert sql.execute("SELECT count(*) FROM order_tasks_open").fetchone() == (9,)


async def test_a_missing_day_never_fails_an_order_or_a_completion(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """An order whose day has no partition (the maintenance leader was down
    for days) lands in the DEFAULT partitions; when the day's partitions are
    made, its rows move into them, counters and invariants unchanged."""
    later = today_utc() + timedelta(days=40)
    row = sql.execute(
        """WITH o AS (INSERT INTO orders (id, quantity, target, backend, task_count)
                      VALUES (uuid_v7(%s::timestamp AT TIME ZONE 'UTC'), 800, 't', 'simulated', 2)
                      RETURNING id)
           INSERT INTO order_tasks (order_id, seq, quantity, queue_position)
           SELECT o.id, s, 400, s FROM o, generate_series(0, 1) s RETURNING order_id""",
        (later,),
    ).fetchone()
    assert row is not None
    order_id = row[0]
    sql.execute(
        "UPDATE order_tasks SET status = 'COMPLETED', executed_at = now()"
        " WHERE order_id = %s AND seq = 0",
        (order_id,),
    )
    assert partition_of(sql, 0, order_id) == "order_tasks_finished_default"
    assert sql.execute(
        "SELECT tableoid::regclass::text FROM orders WHERE id = %s", (order_id,)
    ).fetchone() == ("orders_default",)

    assert sql.execute("SELECT storage_create_day(%s)", (later,)).fetchone() == (True,)

    suffix = day_suffix(later)
    assert partition_of(sql, 0, order_id) == f"order_tasks_finished_p{suffix}"
    assert partition_of(sql, 1, order_id) == OPEN
    assert sql.execute(
        "SELECT tableoid::regclass::text, delivered FROM orders WHERE id = %s", (order_id,)
    ).fetchone() == (f"orders_p{suffix}", 400)
    sql.execute(
        "UPDATE order_tasks SET status = 'COMPLETED', executed_at = now() WHERE order_id = %s",
        (order_id,),
    )
    assert sql.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone() == (
        "COMPLETED",
    )
    assert (await invariants.check_all(repo)).passed is True


# ---------------------------------------------------------------- retention


async def test_maintenance_makes_the_days_ahead_and_drops_only_expired_days(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    today = today_utc()
    expired_day, open_day, recent_day = (today - timedelta(days=d) for d in (60, 50, 45))
    expired = old_order(sql, expired_day, completed_days_ago=40)
    still_open = old_order(sql, open_day, completed_days_ago=None)
    recently_done = old_order(sql, recent_day, completed_days_ago=3)
    settings = storage_settings(db_url, partition_days_ahead=5)

    result = await StorageMaintenance(repo, settings).run_once()

    assert result.led
    assert result.days_dropped == [expired_day]
    assert "order(s) still open" in result.days_kept[open_day]
    assert "completed within the retention period" in result.days_kept[recent_day]
    for day in (today + timedelta(days=d) for d in range(6)):
        assert f"orders_p{day_suffix(day)}" in tables(sql, "orders_p%")
    assert f"orders_p{day_suffix(expired_day)}" not in tables(sql, "orders_p%")
    assert f"order_tasks_finished_p{day_suffix(expired_day)}" not in tables(
        sql, "order_tasks_finished_p%"
    )
    assert sql.execute("SELECT count(*) FROM orders WHERE id = %s", (expired,)).fetchone() == (0,)
    assert sql.execute(
        "SELECT count(*) FROM order_tasks WHERE order_id = %s", (expired,)
    ).fetchone() == (0,)
    for kept in (still_open, recently_done):
        assert sql.execute("SELECT count(*) FROM orders WHERE id = %s", (kept,)).fetchone() == (1,)
    assert sql.execute(
        "SELECT dropped_at IS NOT NULL FROM storage_days WHERE day = %s", (expired_day,)
    ).fetchone() == (True,)
    assert violations(sql) == []

    again = await StorageMaintenance(repo, settings).run_once()
    assert again.days_created == 0
    assert again.days_dropped == []


async def test_a_day_that_must_be_archived_first_is_kept_until_it_is(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str, tmp_path: Any
) -> None:
    day = today_utc() - timedelta(days=70)
    order_id = old_order(sql, day, completed_days_ago=60, tasks=4)
    settings = storage_settings(db_url, retention_require_archive=True)

    kept = await StorageMaintenance(repo, settings).run_once()
    assert kept.days_dropped == []
    assert kept.days_kept[day] == "not archived yet"

    out = io.StringIO()
    result = await archive(repo, settings, out, fmt="jsonl", drop=False)
    assert result.days == [day]
    assert result.orders == 1
    assert result.tasks == 4
    [line] = out.getvalue().splitlines()
    exported = json.loads(line)
    assert exported["id"] == str(order_id)
    assert exported["delivered"] == 400
    assert [t["status"] for t in exported["tasks"]] == ["COMPLETED"] * 4

    dropped = await StorageMaintenance(repo, settings).run_once()
    assert dropped.days_dropped == [day]


async def test_the_archive_writes_csv_one_task_a_row_and_can_drop_at_once(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    day = today_utc() - timedelta(days=90)
    order_id = old_order(sql, day, completed_days_ago=80, tasks=2)
    out = io.StringIO()
    result = await archive(repo, storage_settings(db_url), out, fmt="csv", drop=True)
    assert result.dropped == [day]
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [(r["order_id"], r["task_seq"], r["task_status"]) for r in rows] == [
        (str(order_id), "0", "COMPLETED"),
        (str(order_id), "1", "COMPLETED"),
    ]
    assert sql.execute("SELECT count(*) FROM orders WHERE id = %s", (order_id,)).fetchone() == (0,)


async def test_the_small_tables_keep_only_the_retention_period(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    sql.execute(
        """INSERT INTO invariant_check_log (scope, passed, check_timestamp)
           VALUES ('GLOBAL', true, now() - interval '31 days'), ('GLOBAL', true, now())"""
    )
    sql.execute(
        """INSERT INTO operator_actions (action, actor, created_at)
           VALUES ('drain', 'op', now() - interval '31 days'), ('drain', 'op', now())"""
    )
    sql.execute(
        """INSERT INTO order_idempotency_keys (scope, key, order_id, created_at)
           VALUES ('cli', 'old', gen_random_uuid(), now() - interval '31 days'),
                  ('cli', 'new', gen_random_uuid(), now())"""
    )
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, status, stopped_at)
           VALUES ('gone', 'h', 1, 'STOPPED', now() - interval '31 days'),
                  ('stopped-lately', 'h', 2, 'STOPPED', now()),
                  ('running', 'h', 3, 'RUNNING', NULL)"""
    )
    result = await StorageMaintenance(repo, storage_settings(db_url)).run_once()
    assert result.purged == {
        "invariant_check_log": 1,
        "operator_actions": 1,
        "order_idempotency_keys": 1,
        "workers": 1,
    }
    assert sql.execute("SELECT key FROM order_idempotency_keys").fetchall() == [("new",)]
    assert {r[0] for r in sql.execute("SELECT id FROM workers").fetchall()} == {
        "stopped-lately",
        "running",
    }


async def test_finished_orders_from_before_storage_v2_leave_the_default_partition(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    """Orders with the old random ids sit in the DEFAULT partitions; past the
    retention period they are deleted from there in bounded batches."""
    legacy = []
    for completed_days_ago in (40, 1):
        row = sql.execute(
            """WITH o AS (INSERT INTO orders (id, quantity, target, backend, task_count)
                          VALUES (('f' || substr(gen_random_uuid()::text, 2))::uuid, 400, 't',
                                  'simulated', 1)
                          RETURNING id)
               INSERT INTO order_tasks (order_id, seq, quantity, queue_position)
               SELECT o.id, 0, 400, 0 FROM o RETURNING order_id"""
        ).fetchone()
        assert row is not None
        sql.execute(
            "UPDATE order_tasks SET status = 'COMPLETED', executed_at = now() WHERE order_id = %s",
            (row[0],),
        )
        sql.execute(
            "UPDATE orders SET completed_at = now() - make_interval(days => %s) WHERE id = %s",
            (completed_days_ago, row[0]),
        )
        legacy.append(row[0])
    assert sql.execute(
        "SELECT count(*) FROM orders_default WHERE id = ANY(%s)", (legacy,)
    ).fetchone() == (2,)
    result = await StorageMaintenance(repo, storage_settings(db_url)).run_once()
    assert result.purged == {"orders": 1, "order_tasks": 1}
    assert [r[0] for r in sql.execute("SELECT id FROM orders").fetchall()] == [legacy[1]]
    assert violations(sql) == []


async def test_only_one_replica_leads_the_maintenance(repo: Repository, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT pg_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_ID,))
        result = await StorageMaintenance(repo, storage_settings(db_url)).run_once()
        other.execute("ROLLBACK")
    assert not result.led
    assert result.days_created == 0
    assert result.days_dropped == []


# ---------------------------------------------------------------- the global check


async def test_the_global_check_reads_only_orders_that_changed_since_verified(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    finished = [old_order(sql, today_utc(), completed_days_ago=0) for _ in range(3)]
    open_order = insert_order(sql, 800)
    first = await invariants.check_all(repo)
    assert first.passed
    assert first.orders_checked == 4
    second = await invariants.check_all(repo)
    # The three finished orders were verified; only the open one is read again
    # (and the oldest verified ones, up to the re-check budget).
    assert second.orders_checked == 4
    verified = sql.execute(
        "SELECT count(*) FROM orders WHERE verified_xid IS NOT NULL AND xmin = verified_xid"
    ).fetchone()
    assert verified == (3,)
    unverified = sql.execute("SELECT id FROM v_unverified_orders").fetchall()
    assert [r[0] for r in unverified] == [open_order]
    assert set(finished).isdisjoint(r[0] for r in unverified)


@pytest.mark.parametrize(
    "corruption",
    [
        "UPDATE orders SET delivered = delivered - 1 WHERE id = %(id)s",
        "UPDATE orders SET status = 'PROCESSING' WHERE id = %(id)s",
    ],
)
async def test_a_verified_order_corrupted_past_the_triggers_is_caught_by_the_next_check(
    repo: Repository, sql: psycopg.Connection[Any], corruption: str
) -> None:
    order_id = old_order(sql, today_utc(), completed_days_ago=0)
    assert (await invariants.check_all(repo)).passed
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute(corruption, {"id": order_id})
    result = await invariants.check_all(repo)
    assert not result.passed
    assert {v.order_id for v in result.violations} == {order_id}


async def test_a_task_corrupted_past_the_triggers_is_caught_by_the_rolling_recheck(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """A task changed with the triggers off leaves its order's row as it was:
    the global check re-reads the verified orders checked longest ago, so it
    is found within the re-check's rounds (here: the next one)."""
    order_id = old_order(sql, today_utc(), completed_days_ago=0)
    assert (await invariants.check_all(repo)).passed
    with sql.transaction():
        sql.execute("SET LOCAL session_replication_role = replica")
        sql.execute("UPDATE order_tasks SET quantity = 99 WHERE order_id = %s", (order_id,))
    result = await invariants.check_all(repo)
    assert not result.passed
    assert {v.check for v in result.violations} >= {"task_quantities_sum_to_order_quantity"}


# ---------------------------------------------------------------- rows that moved


async def test_an_outcome_for_a_task_moved_meanwhile_is_a_lost_lease_not_an_error(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    """A completion waiting on a task's lock while an operator's cancel moves
    it to the finished partition: PostgreSQL then refuses the UPDATE with a
    serialization failure (the row moved to another partition); the write
    tries again and finds the task no longer EXECUTING: not recorded, no
    error, no units counted."""
    order_id = insert_order(sql, 400)
    async with repo.connection() as conn:
        [task] = await repo.task_claim_batch(conn, worker_id="w1", limit=1, lease_seconds=60)
    with psycopg.connect(db_url) as operator:
        operator.execute(
            """UPDATE order_tasks SET status = 'FAILED_PERMANENT', last_error = 'cancelled'
               WHERE order_id = %s""",
            (order_id,),
        )

        async def complete() -> list[Any]:
            async with repo.connection() as conn:
                return await repo.task_record_outcomes(
                    conn, [(task.id, task.fencing_token)], [], max_attempts=5
                )

        write = asyncio.create_task(complete())
        await wait_for(
            lambda: (
                sql.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                ).fetchone()
                == (1,)
            ),
            10,
            "the completion to wait for the operator's lock",
        )
        operator.commit()
    assert await write == []
    assert sql.execute(
        "SELECT status, delivered, failed_permanent_plays FROM orders WHERE id = %s", (order_id,)
    ).fetchone() == ("PROCESSING", 0, 400)
    assert violations(sql) == []
