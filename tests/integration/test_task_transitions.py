"""Every transition of the task state machine against a real PostgreSQL,
including the fencing that stops a late, rescued worker from counting."""

from __future__ import annotations

import asyncio
import random
from itertools import pairwise
from typing import Any

import psycopg

from goodfellaz17.db.repository import Repository, TaskFailure
from goodfellaz17.domain.queue import FAIR_SHARE_SECONDS, RUN_LENGTH
from goodfellaz17.domain.retry import BackoffPolicy, OrphanPolicy
from tests import runbook_sql
from tests.helpers import assert_counters_exact, insert_order, order_row

LEASE = 60.0


async def claim(
    repo: Repository, worker: str = "w1", limit: int = 10, lease: float = LEASE
) -> list[Any]:
    async with repo.transaction() as conn:
        return await repo.task_claim_batch(conn, worker_id=worker, limit=limit, lease_seconds=lease)


async def complete(repo: Repository, tasks: list[Any]) -> set[Any]:
    async with repo.connection() as conn:
        rows = await repo.task_record_outcomes(
            conn, [(t.id, t.fencing_token) for t in tasks], [], max_attempts=5
        )
    return {r["id"] for r in rows}


async def fail(
    repo: Repository,
    tasks: list[Any],
    *,
    permanent: bool = False,
    delay: float = 0.0,
    max_attempts: int = 5,
) -> list[Any]:
    failures = [TaskFailure(t.id, t.fencing_token, "boom", permanent, delay) for t in tasks]
    async with repo.connection() as conn:
        return await repo.task_record_outcomes(conn, [], failures, max_attempts=max_attempts)


async def rescue(repo: Repository, max_attempts: int = 5, max_orphanings: int = 20) -> list[Any]:
    """The rescuer's transaction: lock the orphans, decide, apply."""
    policy = OrphanPolicy(BackoffPolicy(0.0, 0.0, max_attempts), max_orphanings)
    async with repo.transaction() as conn:
        orphans = await repo.task_lock_orphans(conn, limit=100)
        return await repo.task_rescue_orphans(conn, policy.rescue_all(orphans))


def statuses(sql: psycopg.Connection[Any], order_id: Any) -> dict[str, int]:
    rows = sql.execute(
        "SELECT status, count(*) FROM order_tasks WHERE order_id = %s GROUP BY status", (order_id,)
    ).fetchall()
    return dict(rows)


async def test_claim_moves_pending_to_executing_with_lease_token_and_node(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 15_000)
    tasks = await claim(repo, limit=10)
    assert len(tasks) == 10
    assert len({t.fencing_token for t in tasks}) == 10
    assert all(t.attempt == 1 and t.node_identifier == "sim-local-1" for t in tasks)
    row = sql.execute(
        "SELECT count(*) FROM order_tasks WHERE status = 'EXECUTING'"
        " AND lease_owner = 'w1' AND lease_expires_at > now() + interval '50 s'"
        " AND node_id IS NOT NULL"
    ).fetchone()
    assert row == (10,)
    assert order_row(sql, order_id)["status"] == "PROCESSING"


async def test_two_claimers_never_get_the_same_task(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 15_000)
    batches = await asyncio.gather(*(claim(repo, worker=f"w{i}", limit=5) for i in range(4)))
    ids = [t.id for batch in batches for t in batch]
    assert len(ids) == 20
    assert len(set(ids)) == 20


async def test_completion_counts_units_and_the_last_one_completes_the_order(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 1_000)  # 3 tasks
    tasks = await claim(repo)
    assert await complete(repo, tasks[:2]) == {t.id for t in tasks[:2]}
    order = order_row(sql, order_id)
    assert order["status"] == "PROCESSING"
    assert order["delivered"] == sum(t.quantity for t in tasks[:2])
    await complete(repo, tasks[2:])
    order = order_row(sql, order_id)
    assert order["status"] == "COMPLETED"
    assert order["delivered"] == 1_000
    assert_counters_exact(sql, order_id)


async def test_retryable_failure_backs_off_then_becomes_due_again(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400)
    [task] = await claim(repo)
    [row] = await fail(repo, [task], delay=3600)
    assert row["status"] == "FAILED_RETRYING"
    assert await claim(repo) == []  # not due for an hour
    sql.execute("UPDATE order_tasks SET retry_after = now()")  # the runbook's retry-now
    [again] = await claim(repo)
    assert again.id == task.id
    assert again.attempt == 2
    assert again.fencing_token != task.fencing_token


async def test_permanent_error_and_exhausted_attempts_dead_letter(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 800)  # 2 tasks
    first, second = await claim(repo)
    [row] = await fail(repo, [first], permanent=True)
    assert row["status"] == "FAILED_PERMANENT"
    [row] = await fail(repo, [second], max_attempts=1)
    assert row["status"] == "FAILED_PERMANENT"
    order = order_row(sql, order_id)
    assert order["failed_permanent_plays"] == 800
    assert order["status"] == "PROCESSING"  # dead letters keep it open for an operator
    assert_counters_exact(sql, order_id)
    last_error = sql.execute("SELECT DISTINCT last_error FROM order_tasks").fetchall()
    assert last_error == [("boom",)]


async def test_expired_lease_is_rescued_and_the_late_completion_is_rejected(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 400)
    [task] = await claim(repo, worker="slow-worker", lease=0.05)
    await asyncio.sleep(0.1)  # let the 50 ms lease lapse in database time
    [rescued] = await rescue(repo)
    assert rescued["status"] == "FAILED_RETRYING"
    assert rescued["lease_owner"] == "slow-worker"
    error = sql.execute("SELECT last_error FROM order_tasks").fetchone()
    assert error is not None
    assert "slow-worker" in error[0]

    assert await complete(repo, [task]) == set()  # the late worker counts nothing
    assert order_row(sql, order_id)["delivered"] == 0

    [retry] = await claim(repo, worker="w2")
    assert await complete(repo, [task]) == set()  # its token is stale after a re-claim too
    assert await complete(repo, [retry]) == {retry.id}
    order = order_row(sql, order_id)
    assert order["delivered"] == 400
    assert order["status"] == "COMPLETED"


async def test_rescue_dead_letters_a_task_out_of_orphanings(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 400)
    await claim(repo, lease=0.01)
    await asyncio.sleep(0.05)
    [rescued] = await rescue(repo, max_orphanings=1)
    assert rescued["status"] == "FAILED_PERMANENT"
    assert order_row(sql, order_id)["failed_permanent_plays"] == 400


def expire_leases(sql: psycopg.Connection[Any]) -> None:
    """Database time passes for every claim: their leases lapse."""
    sql.execute(
        "UPDATE order_tasks SET lease_expires_at = now() - interval '1 s'"
        " WHERE status = 'EXECUTING'"
    )


async def test_rescued_orphans_back_off_with_full_jitter_under_the_cap(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """The rescue's backoff is the worker's (BackoffPolicy): spread from 0 to
    the capped ceiling, written as both retry_after and queue position."""
    insert_order(sql, 400 * 60)
    await claim(repo, limit=60)
    sql.execute("UPDATE order_tasks SET attempts = 4 WHERE status = 'EXECUTING'")
    expire_leases(sql)
    # Attempt 4: the ceiling is 30 s capped (80 s uncapped).
    policy = OrphanPolicy(BackoffPolicy(base_seconds=10, max_seconds=30, max_attempts=50), 50)
    async with repo.transaction() as conn:
        orphans = await repo.task_lock_orphans(conn, limit=100)
        rows = await repo.task_rescue_orphans(conn, policy.rescue_all(orphans, random.Random(5)))
    assert len(rows) == 60
    delays = sql.execute(
        """SELECT extract(epoch FROM retry_after - executed_at)::float8,
                  queue_position - extract(epoch FROM executed_at)::float8
           FROM order_tasks WHERE status = 'FAILED_RETRYING'"""
    ).fetchall()
    assert len(delays) == 60
    assert all(abs(wait - position) < 1e-3 for wait, position in delays)
    waits = sorted(wait for wait, _ in delays)
    assert all(0 <= w <= 30 for w in waits)
    # Spread, not the ceiling: a third of them below 10 s, a third above 20 s
    # (expected 20 each; a constant delay would put all 60 on one side).
    assert sum(w < 10 for w in waits) >= 10
    assert sum(w > 20 for w in waits) >= 10


async def lose_the_lease(repo: Repository, sql: psycopg.Connection[Any], **policy: Any) -> Any:
    """A worker claims the one due task and dies: the lease lapses and the
    rescuer takes the task back. Returns the rescued row."""
    [task] = await claim(repo, worker="doomed")
    expire_leases(sql)
    [rescued] = await rescue(repo, **policy)
    assert rescued["id"] == task.id
    return rescued


async def test_a_worker_crash_does_not_spend_the_delivery_attempts(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """Issue 14.12: orphaned as often as GOODFELLAZ17_MAX_ATTEMPTS without a
    single delivery failure, a task is still retried, then delivered."""
    order_id = insert_order(sql, 400)
    rescued = [await lose_the_lease(repo, sql, max_attempts=5) for _ in range(5)]
    assert [r["status"] for r in rescued] == ["FAILED_RETRYING"] * 5
    row = sql.execute("SELECT attempts, orphanings FROM order_tasks").fetchone()
    assert row == (0, 5)
    [task] = await claim(repo)
    assert task.attempt == 1
    assert await complete(repo, [task]) == {task.id}
    assert order_row(sql, order_id)["status"] == "COMPLETED"


async def test_delivery_failures_keep_their_own_budget_after_orphanings(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400)
    for _ in range(3):
        await lose_the_lease(repo, sql, max_attempts=3)
    outcomes = []
    for _ in range(3):
        [task] = await claim(repo)
        [failed] = await fail(repo, [task], max_attempts=3)
        outcomes.append(failed["status"])
    assert outcomes == ["FAILED_RETRYING", "FAILED_RETRYING", "FAILED_PERMANENT"]
    row = sql.execute("SELECT attempts, orphanings, last_error FROM order_tasks").fetchone()
    assert row == (3, 3, "boom")


async def test_a_task_that_keeps_killing_its_worker_is_dead_lettered_saying_so(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """A poison pill: every worker that takes it dies. Past the orphan budget
    (GOODFELLAZ17_MAX_ORPHANINGS) it goes to the dead-letter queue with a
    last_error an operator can act on."""
    order_id = insert_order(sql, 400)
    rescued = [await lose_the_lease(repo, sql, max_attempts=5, max_orphanings=3) for _ in range(3)]
    assert [r["status"] for r in rescued] == ["FAILED_RETRYING"] * 2 + ["FAILED_PERMANENT"]
    row = sql.execute("SELECT attempts, orphanings, last_error FROM order_tasks").fetchone()
    assert row is not None
    attempts, orphanings, last_error = row
    assert (attempts, orphanings) == (0, 3)
    assert "orphaned 3 times" in last_error
    assert "killing its workers" in last_error
    assert "doomed" in last_error
    assert order_row(sql, order_id)["failed_permanent_plays"] == 400


async def test_a_drain_gives_fresh_attempts_but_keeps_the_orphan_history(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """Drained by the runbook's SQL (which knows nothing of orphanings), a
    poison pill gets one more try: one more crash dead-letters it again."""
    order_id = insert_order(sql, 400)
    for _ in range(3):
        await lose_the_lease(repo, sql, max_orphanings=3)
    sql.execute(runbook_sql.render(runbook_sql.DRAIN_DEAD_LETTERS, order_id))
    assert sql.execute("SELECT attempts, orphanings FROM order_tasks").fetchone() == (0, 3)
    again = await lose_the_lease(repo, sql, max_orphanings=3)
    assert (again["status"], again["orphanings"]) == ("FAILED_PERMANENT", 4)


async def test_released_claim_goes_back_to_pending_with_its_attempt_refunded(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400)
    [task] = await claim(repo)
    async with repo.transaction() as conn:
        assert await repo.task_release_many(conn, [(task.id, task.fencing_token)]) == {task.id}
    row = sql.execute("SELECT status, attempts FROM order_tasks").fetchone()
    assert row == ("PENDING", 0)


async def test_lease_extension_needs_the_current_token(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    insert_order(sql, 400)
    [task] = await claim(repo, lease=5)
    async with repo.transaction() as conn:
        assert await repo.task_extend_leases(conn, [(task.id, task.fencing_token)], 600) == {
            task.id
        }
        assert (
            await repo.task_extend_leases(conn, [(task.id, task.fencing_token + 999)], 600) == set()
        )
    remaining = sql.execute(
        "SELECT lease_expires_at - now() > interval '500 s' FROM order_tasks"
    ).fetchone()
    assert remaining == (True,)


async def test_drained_dead_letters_are_claimed_again(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 400)
    [task] = await claim(repo)
    await fail(repo, [task], permanent=True)
    sql.execute(
        "UPDATE order_tasks SET status = 'FAILED_RETRYING', attempts = 0,"
        " retry_after = NOW() WHERE status = 'FAILED_PERMANENT' AND order_id = %s",
        (order_id,),
    )
    [again] = await claim(repo)
    assert again.attempt == 1
    await complete(repo, [again])
    order = order_row(sql, order_id)
    assert (order["status"], order["delivered"], order["failed_permanent_plays"]) == (
        "COMPLETED",
        400,
        0,
    )


async def test_tasks_of_a_completed_order_are_never_claimed(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 800)
    # An inconsistent row an operator might create: COMPLETED order, open task.
    sql.execute("ALTER TABLE orders DISABLE TRIGGER orders_complete_closes_tasks")
    sql.execute("UPDATE orders SET status = 'COMPLETED' WHERE id = %s", (order_id,))
    sql.execute("ALTER TABLE orders ENABLE TRIGGER orders_complete_closes_tasks")
    assert await claim(repo) == []


async def test_without_a_healthy_node_nothing_is_claimed_and_tasks_wait(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 800)
    sql.execute(
        "UPDATE nodes SET circuit_state = 'OPEN', circuit_opened_until = now() + interval '1 hour'"
    )
    assert await claim(repo) == []
    assert statuses(sql, order_id) == {"PENDING": 2}
    sql.execute("UPDATE nodes SET circuit_opened_until = now() - interval '1 s'")  # half-open
    assert len(await claim(repo)) == 2


async def test_a_big_order_does_not_starve_a_small_one(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    big = insert_order(sql, 400 * 200)
    sql.execute("UPDATE order_tasks SET queue_position = queue_position - 30")  # 30 s older
    small = insert_order(sql, 400 * 3)
    claimed = [t for _ in range(6) for t in await claim(repo, limit=10)]
    small_claimed = [t for t in claimed if t.order_id == small]
    assert len(small_claimed) == 3, "the small order's tasks run within the first batches"
    assert any(t.order_id == big for t in claimed)


async def test_node_circuit_opens_after_consecutive_failures_and_closes_on_success(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    from goodfellaz17.db.repository import NodeOutcome

    node_id = sql.execute("SELECT id FROM nodes").fetchone()
    assert node_id is not None
    async with repo.transaction() as conn:
        await repo.node_record_outcomes(
            conn,
            [NodeOutcome(node_id[0], 0, 5, False, 5, "HTTP 503")],
            threshold=5,
            cooldown_seconds=60,
        )
    state = sql.execute("SELECT circuit_state, circuit_opened_until > now() FROM nodes").fetchone()
    assert state == ("OPEN", True)
    async with repo.transaction() as conn:
        await repo.node_record_outcomes(
            conn, [NodeOutcome(node_id[0], 400, 0, True, 0, None)], threshold=5, cooldown_seconds=60
        )
    state = sql.execute("SELECT circuit_state, consecutive_failures FROM nodes").fetchone()
    assert state == ("CLOSED", 0)


def expected_positions(
    sql: psycopg.Connection[Any], start: float, order_id: Any
) -> list[tuple[float]]:
    """Where the order's tasks belong if the order starts at `start`."""
    return sql.execute(
        "SELECT order_task_position(%s, %s, seq, %s, %s) FROM order_tasks"
        " WHERE order_id = %s ORDER BY seq",
        (start, order_id, FAIR_SHARE_SECONDS, RUN_LENGTH, order_id),
    ).fetchall()


def positions_of(sql: psycopg.Connection[Any], order_id: Any) -> list[tuple[float]]:
    return sql.execute(
        "SELECT queue_position FROM order_tasks WHERE order_id = %s ORDER BY seq", (order_id,)
    ).fetchall()


async def assert_a_new_order_starts_at(
    repo: Repository, sql: psycopg.Connection[Any], start: float
) -> None:
    from goodfellaz17.services.orders import create_order
    from tests.conftest import make_settings

    order = (await create_order(repo, make_settings(), quantity=800, target="t")).order
    assert positions_of(sql, order.id) == expected_positions(sql, start, order.id)


async def test_a_new_order_joins_the_queue_at_its_front_or_its_arrival(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    from goodfellaz17.services.orders import create_order
    from tests.conftest import make_settings

    settings = make_settings()
    empty = (await create_order(repo, settings, quantity=800, target="t")).order
    arrival = sql.execute(
        "SELECT extract(epoch FROM created_at)::float8 FROM orders WHERE id = %s", (empty.id,)
    ).fetchone()
    assert arrival is not None
    # Nothing waiting: the order starts at its arrival.
    assert positions_of(sql, empty.id) == expected_positions(sql, arrival[0], empty.id)
    # The claimers have worked far ahead of the clock: the front is in the future.
    sql.execute("UPDATE order_tasks SET queue_position = queue_position + 1000")
    front = sql.execute(
        "SELECT min(queue_position) FROM order_tasks WHERE status = 'PENDING'"
    ).fetchone()
    assert front is not None
    await assert_a_new_order_starts_at(repo, sql, front[0])


async def test_a_claim_records_where_its_worker_is_in_the_queue(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """The furthest position a worker claimed is on its row: where new orders
    join the queue (order_queue_start)."""
    insert_order(sql, 400 * 20)
    sql.execute("INSERT INTO workers (id, hostname, pid) VALUES ('w1', 'h', 1)")
    claimed = await claim(repo, "w1", limit=7)
    row = sql.execute("SELECT claim_position FROM workers WHERE id = 'w1'").fetchone()
    assert row == (max(t.queue_position for t in claimed),)


async def test_the_front_is_searched_from_where_the_claimers_are(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """A retry waiting behind the claimers does not pull a new order back
    there: the search for the front starts at the furthest position a live
    worker claimed last (no walk over the queue already worked through)."""
    old = insert_order(sql, 400 * 30)
    sql.execute(
        """UPDATE order_tasks SET queue_position = extract(epoch FROM now()) + 5000 + seq,
                  status = CASE WHEN seq < 10 THEN 'COMPLETED' ELSE 'PENDING' END,
                  executed_at = CASE WHEN seq < 10 THEN now() END
           WHERE order_id = %s""",
        (old,),
    )
    # A retry queued behind the claimers (its position is the time it failed).
    sql.execute(
        """UPDATE order_tasks SET status = 'FAILED_RETRYING', retry_after = now() + interval '1 h',
                  queue_position = extract(epoch FROM now()) + 3000
           WHERE order_id = %s AND seq = 10""",
        (old,),
    )
    # The live claimers last claimed up to the tenth task; a stopped worker's
    # older place does not count.
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, status, claim_position)
           SELECT 'live', 'h', 1, 'RUNNING', queue_position FROM order_tasks
            WHERE order_id = %s AND seq = 9
           UNION ALL
           SELECT 'gone', 'h', 2, 'STOPPED', extract(epoch FROM now()) + 1000""",
        (old,),
    )
    front = sql.execute(
        "SELECT queue_position FROM order_tasks WHERE order_id = %s AND seq = 11", (old,)
    ).fetchone()
    assert front is not None
    await assert_a_new_order_starts_at(repo, sql, front[0])


async def test_an_order_queues_its_tasks_in_runs_so_a_claim_touches_few_orders(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """Orders started together are fair per round of ten tasks, not per task:
    a batch of ten usually comes from one or two orders, so its completion
    updates one or two order rows instead of ten."""
    orders = [insert_order(sql, 15_000) for _ in range(20)]
    sql.execute(  # the same start for all
        "UPDATE order_tasks t SET queue_position = order_task_position(1e6, t.order_id, t.seq, 1.0)"
    )
    touched = []
    for _ in range(20):
        batch = await claim(repo, limit=10)
        assert len(batch) == 10
        touched.append(len({t.order_id for t in batch}))
    assert sorted(touched)[len(touched) // 2] <= 2, touched
    # ...and every order got its first run before any order got its third.
    rounds = sql.execute(
        """SELECT order_id, max(seq) / 10 FROM order_tasks WHERE status = 'EXECUTING'
           GROUP BY order_id"""
    ).fetchall()
    assert {r[0] for r in rounds} == set(orders)
    assert max(r[1] for r in rounds) == 0


async def test_runs_are_as_long_as_the_run_length_passed_in(
    repo: Repository, sql: psycopg.Connection[Any]
) -> None:
    """The run length is the caller's (domain/queue.py), not a literal in SQL:
    with runs of four, tasks 0-3 share the first round, 4-7 the second."""
    row = await repo.order_create(
        quantity=12,
        target="t",
        backend="simulated",
        sizes=[1] * 12,
        idempotency_scope="cli",
        idempotency_key=None,
        request_hash=None,
        fair_share_seconds=1.0,
        run_length=4,
    )
    assert row is not None
    positions = [p for (p,) in positions_of(sql, row["id"])]
    # Within a run the next task is 1/1024 of a fair share later; a new run
    # starts a round (four fair shares) after the previous one.
    new_runs = [seq for seq, (a, b) in enumerate(pairwise(positions), start=1) if b - a > 1]
    assert new_runs == [4, 8]


def test_the_previous_releases_four_argument_call_queues_like_the_service(
    sql: psycopg.Connection[Any],
) -> None:
    """During a rolling upgrade the old release calls order_task_position
    without a run length; its tasks must land where the new release's do."""
    differing = sql.execute(
        """SELECT count(*) FROM generate_series(0, 99) AS s (seq)
            WHERE order_task_position(1e6, '00000000-0000-0000-0000-000000000001', s.seq, 1.0)
               <> order_task_position(1e6, '00000000-0000-0000-0000-000000000001', s.seq, 1.0,
                                      %s)""",
        (RUN_LENGTH,),
    ).fetchone()
    assert differing == (0,)


def test_the_default_claim_batch_is_one_run() -> None:
    from tests.conftest import make_settings

    assert make_settings().worker_batch_size == RUN_LENGTH
