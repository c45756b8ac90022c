"""Model-based test: random sequences of engine and operator actions against
the real database, compared after every step with a small in-memory model.

Rules drive the production SQL (the named queries the worker runs) and the
runbook's hand-written SQL verbatim; the model says what must have happened.

Every draw depends on the model only, never on what the database chose: a
claim draws which due tasks it takes, and another transaction (a competing
worker) holds every other due task, so the claim's SKIP LOCKED leaves it
exactly the drawn ones. The database's queue order follows random order ids
and its own clock; if a draw followed it, Hypothesis could not replay an
example (FlakyStrategyDefinition). The test must never read a choice back
from the database to decide what to draw next.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, event, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)
from psycopg.rows import dict_row

from goodfellaz17.db.queries import load_queries
from goodfellaz17.domain.plan import plan_task_sizes
from goodfellaz17.domain.queue import RUN_LENGTH
from goodfellaz17.domain.retry import BackoffPolicy, Orphan, OrphanPolicy
from tests import runbook_sql

MAX_ATTEMPTS = 3
MAX_ORPHANINGS = 4
TASK_SIZE = 400
OPEN = {"PENDING", "EXECUTING", "FAILED_RETRYING"}
Q = load_queries()
# Paths to the dead-letter queue the run took, over all examples (see the test).
DEAD_LETTER_PATHS: Counter[str] = Counter()


@dataclass
class TaskModel:
    order_id: uuid.UUID
    quantity: int
    status: str = "PENDING"
    attempts: int = 0
    orphanings: int = 0
    token: int | None = None
    lease_expired: bool = False


@dataclass
class OrderModel:
    quantity: int
    status: str = "PENDING"
    tasks: list[uuid.UUID] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    task_id: uuid.UUID
    token: int


class DeliveryMachine(RuleBasedStateMachine):
    db_url: str = ""

    claims = Bundle("claims")
    orders_bundle = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(self.db_url, autocommit=True, row_factory=dict_row)
        self.conn.execute(
            "TRUNCATE orders, order_tasks, order_idempotency_keys, invariant_check_log"
        )
        # Another worker's transaction: holds the due tasks a claim must skip.
        self.other_worker = psycopg.connect(self.db_url)
        # In creation order (order, then seq): every draw walks them in this order.
        self.tasks: dict[uuid.UUID, TaskModel] = {}
        self.orders: dict[uuid.UUID, OrderModel] = {}
        self.stale: list[Claim] = []  # claims reported, rescued or handed back
        self.deepest_retryable_failure = 0  # the highest attempt that failed retryably

    def teardown(self) -> None:
        # Steers generation towards tasks that fail on attempt after attempt.
        target(float(self.deepest_retryable_failure), label="attempt of a retryable failure")
        self.other_worker.close()
        self.conn.close()

    # ------------------------------------------------------------ helpers

    def _refresh_order_status(self, order_id: uuid.UUID, *, reopened: bool = False) -> None:
        order = self.orders[order_id]
        statuses = [self.tasks[t].status for t in order.tasks]
        if all(s == "COMPLETED" for s in statuses):
            order.status = "COMPLETED"
        elif order.status == "COMPLETED" and not reopened:
            return
        elif order.status == "COMPLETED" or any(s != "PENDING" for s in statuses):
            order.status = "PROCESSING"

    def _record(
        self,
        done: tuple[Claim, ...] | list[Claim] = (),
        failed: tuple[Claim, ...] | list[Claim] = (),
        permanent: bool = False,
    ) -> list[dict[str, Any]]:
        """The worker's one-statement outcome recording, fenced by token."""
        return self._sql(
            "task_record_outcomes",
            done_ids=[c.task_id for c in done],
            done_tokens=[c.token for c in done],
            failed_ids=[c.task_id for c in failed],
            failed_tokens=[c.token for c in failed],
            errors=["model failure"] * len(failed),
            permanent=[permanent] * len(failed),
            delays=[0.0] * len(failed),
            max_attempts=MAX_ATTEMPTS,
        )

    def _sql(self, name: str, **params: Any) -> list[dict[str, Any]]:
        cur = self.conn.execute(Q[name], params)
        return cur.fetchall() if cur.description else []

    def _due_tasks(self) -> list[uuid.UUID]:
        return [
            t
            for t, m in self.tasks.items()
            if m.status in ("PENDING", "FAILED_RETRYING")
            and self.orders[m.order_id].status != "COMPLETED"
        ]

    @contextmanager
    def _held_by_another_worker(self, task_ids: list[uuid.UUID]) -> Iterator[None]:
        """Lock the rows as a competing claimer's open transaction does."""
        self.other_worker.execute(
            "SELECT id FROM order_tasks WHERE id = ANY(%s) FOR UPDATE", (task_ids,)
        )
        try:
            yield
        finally:
            self.other_worker.rollback()

    def _dead_lettered(self, path: str) -> None:
        DEAD_LETTER_PATHS[path] += 1
        event(f"dead-lettered: {path}")

    # ------------------------------------------------------------ rules

    @rule(target=orders_bundle, quantity=st.integers(min_value=1, max_value=2_000))
    def create_order(self, quantity: int) -> uuid.UUID:
        sizes = plan_task_sizes(quantity, TASK_SIZE)
        [row] = self._sql(
            "order_create",
            quantity=quantity,
            target="t",
            backend="simulated",
            sizes=sizes,
            idempotency_scope="cli",
            idempotency_key=None,
            request_hash=None,
            fair_share_seconds=1.0,
            run_length=RUN_LENGTH,
        )
        order_id = row["id"]
        model = OrderModel(quantity=quantity)
        for task in self.conn.execute(
            "SELECT id, quantity FROM order_tasks WHERE order_id = %s ORDER BY seq", (order_id,)
        ).fetchall():
            self.tasks[task["id"]] = TaskModel(order_id, task["quantity"])
            model.tasks.append(task["id"])
        self.orders[order_id] = model
        return order_id

    @rule(target=claims, data=st.data(), slack=st.integers(min_value=0, max_value=2))
    def claim(self, data: st.DataObject, slack: int) -> Any:
        """A worker claims while another holds every due task but the drawn
        ones: the claim takes exactly those, whatever its limit above them."""
        due = self._due_tasks()
        wanted = data.draw(st.lists(st.sampled_from(due), max_size=4, unique=True)) if due else []
        return multiple(*self._claim(wanted, limit=max(1, len(wanted) + slack)))

    @rule(target=claims, data=st.data(), slack=st.integers(min_value=0, max_value=2))
    def claim_again(self, data: st.DataObject, slack: int) -> Any:
        return self.claim(data, slack)

    @precondition(lambda self: bool(self._orders_with_pending_runs()))
    @rule(data=st.data())
    def claim_stops_at_its_limit(self, data: st.DataObject) -> None:
        """More due tasks than the limit: the claim takes exactly `limit` of
        them. Which ones is the queue's choice, so the worker hands them all
        back at once (a stop before starting): the model's state, and so
        every later draw, is the same whichever the database took."""
        order_id = data.draw(st.sampled_from(self._orders_with_pending_runs()))
        wanted = [t for t in self.orders[order_id].tasks if self.tasks[t].status == "PENDING"]
        limit = data.draw(st.integers(min_value=1, max_value=len(wanted) - 1))
        rows = self._claim_among(wanted, limit)
        assert len(rows) == limit, "a claim never takes more than its limit, nor less"
        assert {r["id"] for r in rows} <= set(wanted)
        released = self._sql(
            "task_release_many",
            ids=[r["id"] for r in rows],
            tokens=[r["fencing_token"] for r in rows],
        )
        assert {r["id"] for r in released} == {r["id"] for r in rows}
        tokens = {r["id"]: r["fencing_token"] for r in rows}
        self.stale.extend(Claim(t, tokens[t]) for t in wanted if t in tokens)
        # A task of the order was claimed: the order has started for good.
        self.orders[order_id].status = "PROCESSING"

    def _orders_with_pending_runs(self) -> list[uuid.UUID]:
        return [
            order_id
            for order_id, order in self.orders.items()
            if order.status != "COMPLETED"
            and sum(self.tasks[t].status == "PENDING" for t in order.tasks) >= 2
        ]

    @precondition(lambda self: bool(self._due_tasks()))
    @rule()
    def failure_storm(self) -> None:
        """The backend is down: a worker claims every due task and each fails
        retryably, in one outcome statement. A few storms exhaust the attempts."""
        due = self._due_tasks()
        claimed = self._claim(due, limit=len(due))
        self._fail(claimed, permanent=False)

    def _claim_among(self, wanted: list[uuid.UUID], limit: int) -> list[dict[str, Any]]:
        """Claim while another worker holds every due task but `wanted`."""
        due = self._due_tasks()
        with self._held_by_another_worker([t for t in due if t not in wanted]):
            return self._sql(
                "task_claim_batch",
                worker_id="model",
                limit=limit,
                lease_seconds=600,
                from_position=float("-inf"),
                node_offset=0,
            )

    def _claim(self, wanted: list[uuid.UUID], limit: int) -> list[Claim]:
        by_id = {row["id"]: row for row in self._claim_among(wanted, limit)}
        assert set(by_id) == set(wanted), "a claim takes the due tasks nobody holds, no others"
        claimed = []
        for task_id in wanted:  # the model's order, not the database's
            row, model = by_id[task_id], self.tasks[task_id]
            model.status, model.attempts = "EXECUTING", model.attempts + 1
            model.token, model.lease_expired = row["fencing_token"], False
            assert row["attempts"] == model.attempts
            self._refresh_order_status(model.order_id)
            claimed.append(Claim(task_id, row["fencing_token"]))
        return claimed

    def _holds(self, claim: Claim) -> bool:
        model = self.tasks[claim.task_id]
        return model.status == "EXECUTING" and model.token == claim.token

    # A worker reports each claim once: the outcome rules consume it, so the
    # bundle holds the claims still out (some lost to a rescue or a forced
    # completion meanwhile) and the draws reach the live ones.

    @rule(claim=consumes(claims))
    def complete(self, claim: Claim) -> None:
        """Also the late completion: a claim whose lease was rescued or re-claimed."""
        valid = self._holds(claim)
        rows = self._record(done=[claim])
        assert (len(rows) == 1) == valid, "fencing must accept exactly the current claim"
        if valid:
            model = self.tasks[claim.task_id]
            model.status = "COMPLETED"
            self.stale.append(claim)
            self._refresh_order_status(model.order_id)

    @rule(claim=consumes(claims))
    def fail_retryably(self, claim: Claim) -> None:
        """A timeout or a 5xx: retried until the attempts run out."""
        self._fail([claim], permanent=False)

    @rule(claim=consumes(claims))
    def fail_permanently(self, claim: Claim) -> None:
        self._fail([claim], permanent=True)

    def _fail(self, claims: list[Claim], *, permanent: bool) -> None:
        valid = [c for c in claims if self._holds(c)]
        rows = {row["id"]: row for row in self._record(failed=claims, permanent=permanent)}
        assert set(rows) == {c.task_id for c in valid}, (
            "fencing must accept exactly the current claims"
        )
        for claim in valid:
            model = self.tasks[claim.task_id]
            dead = permanent or model.attempts >= MAX_ATTEMPTS
            if not permanent:
                self.deepest_retryable_failure = max(self.deepest_retryable_failure, model.attempts)
            model.status = "FAILED_PERMANENT" if dead else "FAILED_RETRYING"
            assert rows[claim.task_id]["status"] == model.status
            if dead:
                self._dead_lettered("permanent error" if permanent else "attempts exhausted")
            self.stale.append(claim)
            self._refresh_order_status(model.order_id)

    @rule(claim=consumes(claims))
    def hand_back(self, claim: Claim) -> None:
        valid = self._holds(claim)
        rows = self._sql("task_release_many", ids=[claim.task_id], tokens=[claim.token])
        assert (len(rows) == 1) == valid
        if valid:
            model = self.tasks[claim.task_id]
            model.status, model.attempts = "PENDING", model.attempts - 1
            self.stale.append(claim)

    @precondition(lambda self: bool(self.stale))
    @rule(data=st.data(), succeed=st.booleans())
    def late_outcome_with_a_stale_token(self, data: st.DataObject, succeed: bool) -> None:
        """A worker whose lease was taken away reports late, or reports twice:
        nothing may change, whatever state the task is in now (often re-claimed
        by someone else)."""
        claim = data.draw(st.sampled_from(self.stale))
        if succeed:
            rows = self._record(done=[claim])
        else:
            rows = self._record(failed=[claim], permanent=True)
        assert rows == [], "a stale token must change nothing"

    @rule(claim=claims)
    def expire_lease(self, claim: Claim) -> None:
        """Time passes for one claim: its lease lapses (database time moved by hand)."""
        if not self._holds(claim):
            return
        self.conn.execute(
            "UPDATE order_tasks SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
            (claim.task_id,),
        )
        self.tasks[claim.task_id].lease_expired = True

    @rule()
    def rescue_orphans(self) -> None:
        policy = OrphanPolicy(BackoffPolicy(0.0, 0.0, MAX_ATTEMPTS), MAX_ORPHANINGS)
        with self.conn.transaction():
            orphans = self._sql("task_lock_orphans", limit=1000)
            rescues = policy.rescue_all(
                [
                    Orphan(o["id"], o["fencing_token"], o["attempts"], o["orphanings"])
                    for o in orphans
                ]
            )
            rows = self._sql(
                "task_rescue_orphans",
                ids=[r.task_id for r in rescues],
                tokens=[r.fencing_token for r in rescues],
                dead_letter=[r.dead_letter for r in rescues],
                delays=[r.delay_seconds for r in rescues],
            )
        expired = {t for t, m in self.tasks.items() if m.status == "EXECUTING" and m.lease_expired}
        assert {r["id"] for r in rows} == expired
        by_id = {row["id"]: row for row in rows}
        for task_id in [t for t in self.tasks if t in expired]:  # the model's order
            model = self.tasks[task_id]
            assert model.token is not None
            self.stale.append(Claim(task_id, model.token))
            # A crash is not a delivery failure: the attempt is refunded and
            # the orphaning counts against its own budget.
            model.attempts, model.orphanings = model.attempts - 1, model.orphanings + 1
            model.status = (
                "FAILED_PERMANENT" if model.orphanings >= MAX_ORPHANINGS else "FAILED_RETRYING"
            )
            model.lease_expired = False
            assert by_id[task_id]["status"] == model.status
            if model.status == "FAILED_PERMANENT":
                self._dead_lettered("orphaned once too often")
            self._refresh_order_status(model.order_id)

    @rule(order_id=orders_bundle)
    def runbook_force_retry(self, order_id: uuid.UUID) -> None:
        self.conn.execute(runbook_sql.render(runbook_sql.FORCE_RETRY, order_id))

    @rule(order_id=orders_bundle)
    def runbook_drain_dead_letters(self, order_id: uuid.UUID) -> None:
        self.conn.execute(runbook_sql.render(runbook_sql.DRAIN_DEAD_LETTERS, order_id))
        drained = False
        for task_id in self.orders[order_id].tasks:
            model = self.tasks[task_id]
            if model.status == "FAILED_PERMANENT":
                model.status, model.attempts, drained = "FAILED_RETRYING", 0, True
        if drained:
            self._refresh_order_status(order_id, reopened=True)

    @rule(order_id=orders_bundle)
    def runbook_force_complete(self, order_id: uuid.UUID) -> None:
        self.conn.execute(runbook_sql.render(runbook_sql.FORCE_COMPLETE, order_id))
        order = self.orders[order_id]
        if order.status != "COMPLETED":
            for task_id in order.tasks:
                if self.tasks[task_id].status in OPEN:
                    self.tasks[task_id].status = "FAILED_PERMANENT"
        order.status = "COMPLETED"

    # ------------------------------------------------------------ invariants

    @invariant()
    def database_matches_the_model(self) -> None:
        rows = self.conn.execute(
            "SELECT id, status, attempts, orphanings FROM order_tasks"
        ).fetchall()
        assert {r["id"]: (r["status"], r["attempts"], r["orphanings"]) for r in rows} == {
            t: (m.status, m.attempts, m.orphanings) for t, m in self.tasks.items()
        }
        orders = self.conn.execute(
            "SELECT id, status, delivered, failed_permanent_plays FROM orders"
        ).fetchall()
        assert {
            r["id"]: (r["status"], r["delivered"], r["failed_permanent_plays"]) for r in orders
        } == {order_id: self._expected_order_row(order) for order_id, order in self.orders.items()}

    def _expected_order_row(self, order: OrderModel) -> tuple[str, int, int]:
        tasks = [self.tasks[t] for t in order.tasks]
        delivered = sum(t.quantity for t in tasks if t.status == "COMPLETED")
        dead = sum(t.quantity for t in tasks if t.status == "FAILED_PERMANENT")
        return order.status, delivered, dead

    @invariant()
    def every_invariant_holds(self) -> None:
        broken = self.conn.execute(
            "SELECT order_id, check_name FROM v_order_invariants WHERE NOT passed"
            " AND check_name <> 'no_task_executing_past_its_lease'"
        ).fetchall()
        assert broken == []
        expired = self.conn.execute(
            "SELECT count(*) AS n FROM order_tasks WHERE status = 'EXECUTING'"
            " AND lease_expires_at < now()"
        ).fetchone()
        assert expired is not None
        assert expired["n"] == sum(
            1 for m in self.tasks.values() if m.status == "EXECUTING" and m.lease_expired
        )


@pytest.mark.parametrize("_", [None])
def test_engine_and_operators_agree_with_the_model(db_url: str, _: None) -> None:
    DeliveryMachine.db_url = db_url
    DEAD_LETTER_PATHS.clear()
    machine = DeliveryMachine.TestCase
    machine.settings = settings(
        max_examples=40,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine().runTest()
    # Deep enough: some example ran a task through every attempt on retryable
    # failures alone, so the exhaustion edge was compared with the model.
    assert DEAD_LETTER_PATHS["attempts exhausted"] > 0, DEAD_LETTER_PATHS
