"""Storage v2 upgrades a database that has history while a worker runs.

A database at the last migration before 0011 holds orders in every state;
a worker of the previous release keeps claiming and completing through the
same SQL functions while `apply_migrations` copies everything into the
partitioned tables. Afterwards every order still has exactly its tasks and
units, every unit the old worker delivered is counted once, every invariant
holds, and today's worker finishes the work.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from goodfellaz17.db.migrate import _yoyo_url, apply_migrations, migrations_dir
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import _url_for, make_settings
from tests.helpers import insert_order, set_task_states, violations, wait_for

STORAGE_MIGRATION = "0011_storage_v2"

# Orders in every state the old schema can hold: task states by seq.
SEEDS = [
    [],  # untouched: PENDING
    ["COMPLETED"] * 5,  # PROCESSING, some delivered
    ["COMPLETED"] * 38,  # all delivered: COMPLETED
    ["COMPLETED"] * 30 + ["FAILED_PERMANENT"] * 8,  # finished with dead letters
    ["EXECUTING", "FAILED_RETRYING", "FAILED_PERMANENT", "COMPLETED"],  # a bit of everything
]


@pytest.fixture
def before_storage_v2(pg_base_url: str) -> Iterator[str]:
    """A database migrated up to, not including, 0011."""
    name = f"gf_pre0011_{os.getpid()}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = _url_for(pg_base_url, name)
    backend = get_backend(_yoyo_url(url))
    try:
        shipped = read_migrations(migrations_dir())
        earlier = MigrationList([m for m in shipped if m.id < STORAGE_MIGRATION])
        with backend.lock():
            backend.apply_migrations(backend.to_apply(earlier))
    finally:
        backend.connection.close()
    yield url
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def snapshot(sql: psycopg.Connection[Any]) -> dict[str, Any]:
    orders = sql.execute(
        "SELECT id, quantity, delivered, failed_permanent_plays, task_count FROM orders"
    ).fetchall()
    tasks = sql.execute("SELECT id, order_id, seq, quantity, status FROM order_tasks").fetchall()
    return {
        "orders": {r[0]: r[1:] for r in orders},
        "tasks": {r[0]: r[1:] for r in tasks},
    }


class OldReleaseWorker(threading.Thread):
    """What a worker of the previous release sends: its claim and its
    completion, the two functions whose signatures 0011 keeps, in a loop
    until stopped. A statement refused while the migration holds its locks
    is an outage to it: it tries again."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.completed_units = 0
        self.claims = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                try:
                    claimed = conn.execute(
                        "SELECT id, fencing_token, quantity"
                        " FROM task_claim_batch('old-release', 3, 60, '-Infinity', 0)"
                    ).fetchall()
                    self.claims += 1
                    if not claimed:
                        continue
                    done = conn.execute(
                        """SELECT quantity FROM task_record_outcomes(%s, %s, '{}', '{}', '{}',
                                                                    '{}', '{}', 5)""",
                        ([r[0] for r in claimed], [r[1] for r in claimed]),
                    ).fetchall()
                    self.completed_units += sum(r[0] for r in done)
                except psycopg.Error as exc:
                    self.errors.append(type(exc).__name__)


async def test_an_upgrade_while_a_worker_runs_keeps_every_task_and_every_unit(
    before_storage_v2: str,
) -> None:
    url = before_storage_v2
    with psycopg.connect(url, autocommit=True) as sql:
        # The old release's own orders.
        for states in SEEDS:
            order_id = insert_order(sql, 15_000)
            set_task_states(sql, order_id, states)
        sql.execute(
            "UPDATE order_tasks SET lease_expires_at = now() + interval '1 hour'"
            " WHERE status = 'EXECUTING'"
        )
        sql.execute("UPDATE order_tasks SET retry_after = now() WHERE status = 'FAILED_RETRYING'")
        assert violations(sql) == []
        before = snapshot(sql)
        delivered_before = sum(o[1] for o in before["orders"].values())

        old = OldReleaseWorker(url)
        old.start()
        await wait_for(lambda: old.claims > 3, 30, "the old worker to be claiming")
        applied = await asyncio.to_thread(apply_migrations, url)
        await wait_for(lambda: old.claims > 20, 30, "the old worker to claim on the new storage")
        old.stop.set()
        old.join(30)

        assert applied == [STORAGE_MIGRATION]
        assert violations(sql) == []
        after = snapshot(sql)
        # Every order and every task is still there, with its quantities.
        assert after["orders"].keys() == before["orders"].keys()
        for order_id, (quantity, _, _, task_count) in before["orders"].items():
            assert after["orders"][order_id][0] == quantity
            assert after["orders"][order_id][3] == task_count
        assert {t: v[:3] for t, v in after["tasks"].items()} == {
            t: v[:3] for t, v in before["tasks"].items()
        }
        # What the old worker delivered, across the upgrade, is counted once.
        delivered_after = sum(o[1] for o in after["orders"].values())
        assert delivered_after - delivered_before == old.completed_units
        assert old.completed_units > 0
        # The tasks sit where the new storage puts them.
        misplaced = sql.execute(
            """SELECT count(*) FROM order_tasks
               WHERE (status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING'))
                     <> (tableoid = 'order_tasks_open'::regclass)"""
        ).fetchone()
        assert misplaced == (0,)

        # Today's worker finishes what is left (the old worker's last claims
        # and the seeded EXECUTING task come back when their lease ends).
        sql.execute(
            "UPDATE order_tasks SET lease_expires_at = now() - interval '1 s'"
            " WHERE status = 'EXECUTING'"
        )
        sql.execute(
            """UPDATE order_tasks SET status = 'FAILED_RETRYING', attempts = 0,
                      retry_after = now() WHERE status = 'FAILED_PERMANENT'"""
        )
        settings = make_settings(url, max_attempts=5)
        worker = OrderDeliveryWorker(settings, url, registry=CollectorRegistry())
        await worker.start()
        try:
            await wait_for(
                lambda: (
                    sql.execute(
                        "SELECT count(*) FROM orders WHERE status <> 'COMPLETED'"
                    ).fetchone()
                    == (0,)
                ),
                60,
                "every order to complete",
            )
        finally:
            await worker.stop()
        totals = sql.execute(
            "SELECT sum(quantity), sum(delivered), sum(failed_permanent_plays) FROM orders"
        ).fetchone()
        assert totals == (15_000 * len(SEEDS), 15_000 * len(SEEDS), 0)
        assert violations(sql) == []
