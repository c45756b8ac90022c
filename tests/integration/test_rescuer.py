"""The orphan rescuer on its own: one run_once() rescues every orphan there is,
batch after batch, and returns how many it retried and dead-lettered."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.retry import BackoffPolicy, OrphanPolicy
from goodfellaz17.logs import get_logger
from goodfellaz17.worker import rescuer as rescuer_module
from goodfellaz17.worker.counters import BoundMetrics, WorkerCounters, worker_metrics
from goodfellaz17.worker.rescuer import OrphanRescuer, RescueResult
from tests.helpers import insert_order, violations

MAX_ORPHANINGS = 3


def seed_orphans(sql: psycopg.Connection[Any], orphanings: list[int]) -> None:
    """One order whose tasks (one per entry) are EXECUTING past their lease,
    claimed by a worker that died, each orphaned that many times before."""
    order_id = insert_order(sql, 400 * len(orphanings))
    sql.execute(
        """UPDATE order_tasks t SET status = 'EXECUTING', attempts = 1,
               orphanings = a.orphanings,
               lease_owner = 'dead-worker', lease_expires_at = now() - interval '1 second',
               fencing_token = nextval('order_tasks_fencing_token_seq'),
               started_at = now() - interval '10 minutes',
               node_id = (SELECT id FROM nodes WHERE node_identifier = 'sim-local-1')
           FROM unnest(%s::int[]) WITH ORDINALITY a (orphanings, seq)
           WHERE t.order_id = %s AND t.seq = a.seq - 1""",
        (orphanings, order_id),
    )


def new_rescuer(
    repo: Repository, db_url: str, counters: WorkerCounters, woken: asyncio.Event
) -> OrphanRescuer:
    return OrphanRescuer(
        repo=repo,
        policy=OrphanPolicy(BackoffPolicy(0.05, 0.2, 5), MAX_ORPHANINGS),
        counters=counters,
        metrics=BoundMetrics(worker_metrics(CollectorRegistry())),
        on_rescued=woken.set,
        log=get_logger(__name__),
    )


async def test_run_once_rescues_every_orphan_in_batches_and_returns_the_counts(
    repo: Repository,
    sql: psycopg.Connection[Any],
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rescuer_module, "RESCUE_BATCH", 2)  # five orphans: three batches
    seed_orphans(sql, [0, 1, MAX_ORPHANINGS - 1, 0, MAX_ORPHANINGS - 1])
    counters, woken = WorkerCounters(), asyncio.Event()
    rescuer = new_rescuer(repo, db_url, counters, woken)

    assert await rescuer.run_once() == RescueResult(retried=3, dead_lettered=2)
    assert woken.is_set()  # the claimers look again: the retried ones may be due
    assert (counters.recovered_orphans, counters.retries, counters.failed) == (5, 3, 2)
    rows = sql.execute("SELECT status, count(*) FROM order_tasks GROUP BY status").fetchall()
    assert dict(rows) == {"FAILED_RETRYING": 3, "FAILED_PERMANENT": 2}
    assert violations(sql) == []

    woken.clear()
    assert await rescuer.run_once() == RescueResult()  # nothing left to rescue
    assert not woken.is_set()


async def test_run_once_leaves_claims_whose_lease_still_runs(
    repo: Repository, sql: psycopg.Connection[Any], db_url: str
) -> None:
    seed_orphans(sql, [1])
    sql.execute("UPDATE order_tasks SET lease_expires_at = now() + interval '1 minute'")
    counters, woken = WorkerCounters(), asyncio.Event()
    assert await new_rescuer(repo, db_url, counters, woken).run_once() == RescueResult()
    assert sql.execute("SELECT status FROM order_tasks").fetchone() == ("EXECUTING",)
    assert counters.recovered_orphans == 0
