"""The outcome recorder: batched, fenced writes of what the executors did.

Outcomes accumulate in a buffer; the flush loop writes everything buffered in
one statement (`task_record_outcomes`) while the next batch accumulates, with
up to `GOODFELLAZ17_WORKER_CLAIMERS` writes in flight. Each write is fenced by
the claims' tokens: a task missing from the result had lost its lease and is
counted as such, never retried. Node health is accumulated alongside and
written at most once per control tick (off the hot path).

The recorder counts only what the database accepted, and never drops an
outcome: a failed write puts its batch back (fencing makes the retry safe).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from goodfellaz17.db.repository import ClaimedTask, NodeOutcome, Repository, TaskFailure
from goodfellaz17.domain.retry import BackoffPolicy
from goodfellaz17.domain.states import TaskStatus
from goodfellaz17.settings import Settings
from goodfellaz17.worker.claims import ClaimLedger, Held, Wakeup
from goodfellaz17.worker.counters import BoundMetrics, WorkerCounters
from goodfellaz17.worker.outage import DB_ERRORS

FLUSH_RETRY_SECONDS = 0.5


@dataclass(slots=True)
class Outcome:
    task: ClaimedTask
    ok: bool
    error: str | None = None
    permanent: bool = False
    counts_against_node: bool = False


def task_fields(task: ClaimedTask) -> dict[str, Any]:
    """What every log line about one task says about it."""
    return {
        "order_id": str(task.order_id),
        "task_id": str(task.id),
        "attempt": task.attempt,
        "node": task.node_identifier,
    }


class OutcomeRecorder:
    def __init__(
        self,
        *,
        repo: Repository,
        settings: Settings,
        ledger: ClaimLedger,
        counters: WorkerCounters,
        metrics: BoundMetrics,
        log: Any,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._ledger = ledger
        self._counters = counters
        self._m = metrics
        self._log = log
        self._backoff = BackoffPolicy(
            settings.backoff_base_seconds, settings.backoff_max_seconds, settings.max_attempts
        )
        self._pending: list[Outcome] = []
        self._wakeup = Wakeup()
        self._slots = asyncio.Semaphore(settings.worker_claimers)
        self._writes: set[asyncio.Task[None]] = set()
        self._node_stats = NodeStats()
        self._debug = logging.getLogger(__name__).isEnabledFor(logging.DEBUG)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._wakeup.set()

    def add_interrupted(self, held: Iterable[Held]) -> None:
        """Claims cut off mid-delivery by shutdown: maybe delivered, maybe not,
        so retried (same idempotency key), never refunded."""
        buffered = {o.task.id for o in self._pending}
        error = "interrupted: worker shut down mid-delivery"
        for claim in held:
            if claim.started and claim.task.id not in buffered:
                self._pending.append(Outcome(claim.task, ok=False, error=error))

    # ------------------------------------------------------------ flushing

    async def run(self) -> None:
        """Record outcomes as they arrive: while one batch is being written the
        next accumulates, with up to `claimers` writes in flight (group commit
        does the rest)."""
        while True:
            if not self._pending:
                await self._wakeup.wait(1.0)
                continue
            await self._slots.acquire()
            if not self._pending:
                self._slots.release()
                continue
            batch, self._pending = self._pending, []
            write = asyncio.create_task(self._flush_batch(batch))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def _flush_batch(self, batch: list[Outcome]) -> None:
        try:
            await self._record(batch)
        except BaseException as exc:
            self._pending[:0] = batch  # keep them; fencing makes a retry safe
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, DB_ERRORS):
                self._log.warning(
                    "recording outcomes failed: database unavailable",
                    pending=len(self._pending),
                    error=str(exc)[:200],
                )
            else:
                self._log.exception("recording outcomes failed", pending=len(self._pending))
            await asyncio.sleep(FLUSH_RETRY_SECONDS)
            self._wakeup.set()
        finally:
            self._slots.release()

    async def wait_for_writes(self) -> None:
        """Let the writes in flight land (they are not interrupted)."""
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def flush_remaining(self) -> None:
        """At shutdown: wait for writes in flight, then record what is left."""
        slots = self._settings.worker_claimers
        for _ in range(slots):
            await self._slots.acquire()
        try:
            if self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._record(batch)
                except BaseException:
                    self._pending[:0] = batch
                    raise
        finally:
            for _ in range(slots):
                self._slots.release()

    # ------------------------------------------------------------ recording

    async def _record(self, batch: list[Outcome]) -> None:
        started = time.perf_counter()
        successes = [(o.task.id, o.task.fencing_token) for o in batch if o.ok]
        failures = [
            TaskFailure(
                task_id=o.task.id,
                fencing_token=o.task.fencing_token,
                error=o.error or "unknown error",
                permanent=o.permanent,
                delay_seconds=self._backoff.delay(o.task.attempt),
            )
            for o in batch
            if not o.ok
        ]
        async with self._repo.connection() as conn:
            rows = await self._repo.task_record_outcomes(
                conn, successes, failures, max_attempts=self._settings.max_attempts
            )
        self._m.batch_duration.observe(time.perf_counter() - started)
        self._node_stats.add(batch)
        self._account(batch, {r["id"]: r["status"] for r in rows})

    def _account(self, batch: list[Outcome], recorded: dict[uuid.UUID, str]) -> None:
        """Count what the database accepted, and only that."""
        c, ledger, log, debug = self._counters, self._ledger, self._log, self._debug
        completed_tasks = completed_units = dead_tasks = dead_units = retries = 0
        for outcome in batch:
            task = outcome.task
            ledger.forget(task.id)
            status = recorded.get(task.id)
            if status is None:
                c.leases_lost += 1
                log.warning("lease lost: outcome not recorded", **task_fields(task), ok=outcome.ok)
            elif status == TaskStatus.COMPLETED:
                completed_tasks += 1
                completed_units += task.quantity
                if debug:
                    log.debug("task completed", **task_fields(task), quantity=task.quantity)
            elif status == TaskStatus.FAILED_PERMANENT:
                dead_tasks += 1
                dead_units += task.quantity
                log.warning("task dead-lettered", **task_fields(task), error=outcome.error)
            else:
                retries += 1
                log.info("task failed, will retry", **task_fields(task), error=outcome.error)
        c.processed += completed_tasks + dead_tasks + retries
        c.completed += completed_tasks
        c.failed += dead_tasks
        c.retries += retries
        m = self._m
        if completed_tasks:
            m.completed.inc(completed_tasks)
            m.delivered_units.inc(completed_units)
        if dead_tasks:
            m.dead_lettered.inc(dead_tasks)
            m.failed_units.inc(dead_units)
        if retries:
            m.retries.inc(retries)
        if ledger.room_waiters or retries:
            ledger.wakeup.set()  # room was freed, or a retry may be due soon

    async def flush_node_stats(self) -> None:
        """Node health and totals, at most once per control tick: off the hot
        path, so workers do not queue on the same nodes row per batch."""
        outcomes = self._node_stats.take()
        if not outcomes:
            return
        try:
            async with self._repo.connection() as conn:
                await self._repo.node_record_outcomes(
                    conn,
                    outcomes,
                    threshold=self._settings.circuit_failure_threshold,
                    cooldown_seconds=self._settings.circuit_cooldown_seconds,
                )
        except BaseException:
            self._node_stats.restore(outcomes)
            raise


class NodeStats:
    """Per-node outcomes accumulated between writes: units delivered, failures
    that count against the node's health (retryable delivery errors), and the
    failures since its last success, in the order they happened."""

    def __init__(self) -> None:
        self._stats: dict[int, NodeOutcome] = {}

    def add(self, batch: list[Outcome]) -> None:
        for o in batch:
            if o.ok:
                self._merge(NodeOutcome(o.task.node_id, o.task.quantity, 0, True, 0, None))
            elif o.counts_against_node:
                self._merge(NodeOutcome(o.task.node_id, 0, 1, False, 1, o.error))

    def _merge(self, new: NodeOutcome) -> None:
        old = self._stats.get(new.node_id)
        if old is None:
            self._stats[new.node_id] = new
            return
        self._stats[new.node_id] = NodeOutcome(
            node_id=new.node_id,
            delivered_units=old.delivered_units + new.delivered_units,
            failures=old.failures + new.failures,
            had_success=old.had_success or new.had_success,
            trailing_failures=(
                new.trailing_failures
                if new.had_success
                else old.trailing_failures + new.trailing_failures
            ),
            last_error=new.last_error or old.last_error,
        )

    def take(self) -> list[NodeOutcome]:
        outcomes = [self._stats[k] for k in sorted(self._stats)]
        self._stats.clear()
        return outcomes

    def restore(self, outcomes: list[NodeOutcome]) -> None:
        pending, self._stats = self._stats, {}
        for outcome in outcomes:
            self._merge(outcome)
        for outcome in pending.values():
            self._merge(outcome)
