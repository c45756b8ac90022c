"""Model-based test: random sequences of engine and operator actions against
the real database, compared after every step with a small in-memory model.

Rules drive the production SQL (the named queries the worker runs) and the
runbook's hand-written SQL verbatim; the model says what must have happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
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
        self.conn.execute("TRUNCATE orders, invariant_check_log CASCADE")
        self.tasks: dict[uuid.UUID, TaskModel] = {}
        self.orders: dict[uuid.UUID, OrderModel] = {}
        self.stale: list[Claim] = []  # claims whose lease was rescued or handed back

    def teardown(self) -> None:
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

    @rule(target=claims, limit=st.integers(min_value=1, max_value=4))
    def claim(self, limit: int) -> Any:
        due = [
            t
            for t, m in self.tasks.items()
            if m.status in ("PENDING", "FAILED_RETRYING")
            and self.orders[m.order_id].status != "COMPLETED"
        ]
        rows = self._sql(
            "task_claim_batch",
            worker_id="model",
            limit=limit,
            lease_seconds=600,
            from_position=float("-inf"),
            node_offset=0,
        )
        assert len(rows) == min(limit, len(due))
        claimed = []
        for row in rows:
            model = self.tasks[row["id"]]
            assert row["id"] in due, "claimed a task that was not due"
            model.status, model.attempts = "EXECUTING", model.attempts + 1
            model.token, model.lease_expired = row["fencing_token"], False
            assert row["attempts"] == model.attempts
            self._refresh_order_status(model.order_id)
            claimed.append(Claim(row["id"], row["fencing_token"]))
        return multiple(*claimed)

    @rule(target=claims, limit=st.integers(min_value=1, max_value=4))
    def claim_again(self, limit: int) -> Any:
        return self.claim(limit)

    def _holds(self, claim: Claim) -> bool:
        model = self.tasks[claim.task_id]
        return model.status == "EXECUTING" and model.token == claim.token

    @rule(claim=claims)
    def complete(self, claim: Claim) -> None:
        """Also the late completion: a claim whose lease was rescued or re-claimed."""
        valid = self._holds(claim)
        rows = self._record(done=[claim])
        assert (len(rows) == 1) == valid, "fencing must accept exactly the current claim"
        if valid:
            model = self.tasks[claim.task_id]
            model.status = "COMPLETED"
            self._refresh_order_status(model.order_id)

    @rule(claim=claims, permanent=st.booleans())
    def fail(self, claim: Claim, permanent: bool) -> None:
        valid = self._holds(claim)
        rows = self._record(failed=[claim], permanent=permanent)
        assert (len(rows) == 1) == valid
        if valid:
            model = self.tasks[claim.task_id]
            dead = permanent or model.attempts >= MAX_ATTEMPTS
            model.status = "FAILED_PERMANENT" if dead else "FAILED_RETRYING"
            assert rows[0]["status"] == model.status
            self._refresh_order_status(model.order_id)

    @rule(claim=claims)
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
        """A worker whose lease was taken away reports late: nothing may change,
        whatever state the task is in now (often re-claimed by someone else)."""
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
        for row in rows:
            model = self.tasks[row["id"]]
            assert model.token is not None
            self.stale.append(Claim(row["id"], model.token))
            # A crash is not a delivery failure: the attempt is refunded and
            # the orphaning counts against its own budget.
            model.attempts, model.orphanings = model.attempts - 1, model.orphanings + 1
            model.status = (
                "FAILED_PERMANENT" if model.orphanings >= MAX_ORPHANINGS else "FAILED_RETRYING"
            )
            model.lease_expired = False
            assert row["status"] == model.status
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
        for order_id, order in self.orders.items():
            row = self.conn.execute(
                "SELECT status, delivered, failed_permanent_plays FROM orders WHERE id = %s",
                (order_id,),
            ).fetchone()
            assert row is not None
            done = [self.tasks[t] for t in order.tasks]
            assert row["delivered"] == sum(t.quantity for t in done if t.status == "COMPLETED")
            assert row["failed_permanent_plays"] == sum(
                t.quantity for t in done if t.status == "FAILED_PERMANENT"
            )
            assert row["status"] == order.status

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
    machine = DeliveryMachine.TestCase
    machine.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine().runTest()
