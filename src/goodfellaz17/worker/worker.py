"""OrderDeliveryWorker: claim → execute → record, with leases and fencing.

The worker owns concurrency, heartbeats and shutdown. The database is the
referee: claims use FOR UPDATE SKIP LOCKED, every outcome is written with
the claim's fencing token, and a write that changes nothing means the lease
was lost (rescued or re-claimed elsewhere) — logged, counted, never retried.

Shape of a running worker (all in one event loop):

    listener ──NOTIFY──► claim loop ──ready queue──► N executors
                                                       │ outcomes
    control loop (chaos, heartbeat, leases)            ▼
    rescuer (orphans)                               flusher ──► one txn per batch

The worker must never count a unit the database did not accept, and never
sleep on a task's behalf while holding a database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import psycopg_pool
from prometheus_client import REGISTRY, CollectorRegistry

from goodfellaz17.backends.base import (
    DeliveryBackend,
    DeliveryError,
    DeliveryRequest,
    PermanentDeliveryError,
)
from goodfellaz17.backends.registry import build_backends
from goodfellaz17.db.pool import create_pool
from goodfellaz17.db.repository import ClaimedTask, NodeOutcome, Repository, TaskFailure
from goodfellaz17.domain.retry import BackoffPolicy, OrphanPolicy
from goodfellaz17.domain.states import TaskStatus
from goodfellaz17.logs import get_logger
from goodfellaz17.metrics import WorkerMetrics
from goodfellaz17.settings import Settings

log = get_logger(__name__)

NOTIFY_CHANNEL = "goodfellaz17_tasks_due"
CHAOS_REFRESH_SECONDS = 1.0
CHAOS_NOTIFY_PAYLOAD = "chaos"  # what services.chaos sends when chaos is switched
DB_RETRY_MAX_SECONDS = 5.0
RESCUE_BATCH = 500
_DB_ERRORS = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)

_metrics_by_registry: dict[int, WorkerMetrics] = {}


def worker_metrics(registry: CollectorRegistry = REGISTRY) -> WorkerMetrics:
    """One WorkerMetrics per registry (prometheus refuses duplicate names)."""
    key = id(registry)
    if key not in _metrics_by_registry:
        _metrics_by_registry[key] = WorkerMetrics(registry)
    return _metrics_by_registry[key]


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class WorkerCounters:
    processed: int = 0
    completed: int = 0
    failed: int = 0
    retries: int = 0
    recovered_orphans: int = 0
    leases_lost: int = 0


@dataclass(frozen=True, slots=True)
class ChaosState:
    active: bool = False
    worker_paused: bool = False
    failure_rate: float = 0.0
    latency_ms: int = 0


class _BoundMetrics:
    """The labelled children resolved once: no label lookups per task."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.completed = metrics.tasks_total.labels(status="completed")
        self.dead_lettered = metrics.tasks_total.labels(status="failed_permanent")
        self.delivered_units = metrics.plays_total.labels(outcome="delivered")
        self.failed_units = metrics.plays_total.labels(outcome="failed")
        self.retries = metrics.retries_total
        self.orphans = metrics.orphans_recovered_total


@dataclass(slots=True)
class _Outcome:
    task: ClaimedTask
    ok: bool
    error: str | None = None
    permanent: bool = False
    counts_against_node: bool = False


_HEAD = float("-inf")
CURSOR_RESCAN_SECONDS = 5.0


class _QueueCursor:
    """One claimer's place in the queue (a queue_position).

    It steps back when work becomes due behind it: a NOTIFY says the earliest
    queue position that became due (a new order, a drain, a retry-now), so
    fairness between orders holds. Work that becomes due without a NOTIFY (a
    backoff ending) sorts by its due time, normally ahead of the cursor; a
    full rescan from the head at least every few seconds covers the rest."""

    def __init__(self) -> None:
        self._at = _HEAD
        self._rescanned_at = time.monotonic()

    def position(self) -> float:
        if time.monotonic() - self._rescanned_at > CURSOR_RESCAN_SECONDS:
            self._at = _HEAD
        if self._at == _HEAD:
            self._rescanned_at = time.monotonic()
        return self._at

    def rewind(self, position: float) -> None:
        """New work is due at `position`: the next claim starts there at the latest."""
        self._at = min(self._at, position)

    def rescanned(self) -> None:
        self._rescanned_at = time.monotonic()

    def advance(self, claimed: list[ClaimedTask]) -> None:
        if claimed:
            self._at = max(self._at, max(t.queue_position for t in claimed))


@dataclass(slots=True)
class _Held:
    """A claim this worker holds: its token, and when it was claimed."""

    task: ClaimedTask
    claimed_at: float
    started: bool = False


@dataclass
class _Wakeup:
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self) -> None:
        self.event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self.event.wait()
        self.event.clear()


class OrderDeliveryWorker:
    def __init__(
        self,
        settings: Settings,
        database_url: str,
        *,
        backends: dict[str, DeliveryBackend] | None = None,
        worker_id: str | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        # LISTEN is session state: a transaction-mode pooler would drop it.
        direct = settings.direct_database_url
        self.listen_url = direct.get_secret_value() if direct is not None else database_url
        self.worker_id = worker_id or new_worker_id()
        self.backends = backends if backends is not None else build_backends(settings)
        self.metrics = worker_metrics(registry)
        self.counters = WorkerCounters()
        self.backoff = BackoffPolicy(
            settings.backoff_base_seconds, settings.backoff_max_seconds, settings.max_attempts
        )
        self.orphan_policy = OrphanPolicy(self.backoff, settings.max_orphanings)
        self.chaos = ChaosState()
        self.is_running = False
        self.log = log.bind(worker_id=self.worker_id)

        self._pool = create_pool(
            database_url,
            settings,
            application_name=f"goodfellaz17-worker:{self.worker_id}"[:63],
            min_size=2,
            # claimers + as many outcome writes in flight + control, rescuer, idle checks
            max_size=2 * settings.worker_claimers + 3,
        )
        self.repo = Repository(self._pool)
        self._stopping = asyncio.Event()
        self._claim_wakeup = _Wakeup()
        self._flush_wakeup = _Wakeup()
        self._ready: deque[_Held] = deque()
        self._ready_signal = asyncio.Condition()
        self._held: dict[uuid.UUID, _Held] = {}
        self._executing = 0
        self._outcomes: list[_Outcome] = []
        self._background: list[asyncio.Task[None]] = []
        self._executors: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._capacity = settings.worker_concurrency + settings.worker_batch_size
        self._room_waiters = 0
        self._cursors: list[_QueueCursor] = []
        self._reserved = 0
        self._flush_slots = asyncio.Semaphore(settings.worker_claimers)
        self._flushes: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._executor_idle = asyncio.Event()
        self._node_stats = NodeStats()
        self._m = _BoundMetrics(self.metrics)
        self._debug = logging.getLogger(__name__).isEnabledFor(logging.DEBUG)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> asyncio.Task[None]:
        """Open the pool, register, and start all loops; returns the main task."""
        await self._pool.open(wait=False)
        self._main = asyncio.create_task(self._run(), name=f"worker:{self.worker_id}")
        return self._main

    async def run_until_stopped(self) -> None:
        await (await self.start())

    async def stop(self) -> None:
        """Stop claiming, finish in-flight tasks within the grace period, hand
        back claims never started (attempt refunded), record everything."""
        self._stopping.set()
        self._claim_wakeup.set()
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main

    async def _run(self) -> None:
        await self._with_db_retry("register", self._register)
        self.is_running = True
        self.log.info(
            "worker started",
            concurrency=self.settings.worker_concurrency,
            batch_size=self.settings.worker_batch_size,
        )
        spawn = asyncio.create_task
        self._flusher = spawn(self._supervise("flush", self._flush_loop), name="flush")
        self._background = [
            spawn(self._supervise("listen", self._listen_loop), name="listen"),
            spawn(self._supervise("control", self._control_loop), name="control"),
            spawn(self._supervise("rescue", self._rescue_loop), name="rescue"),
            self._flusher,
        ]
        self._executors = [
            spawn(self._executor_loop(), name=f"executor-{i}")
            for i in range(self.settings.worker_concurrency)
        ]
        try:
            await asyncio.gather(
                *(self._claim_loop() for _ in range(self.settings.worker_claimers))
            )
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.is_running = False
        await self._release_unstarted()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.worker_grace_period_seconds):
                while self._executing:
                    await self._executor_idle.wait()
                    self._executor_idle.clear()
        for task in self._executors:
            task.cancel()
        await asyncio.gather(*self._executors, return_exceptions=True)
        # Outcomes already being written are not interrupted: let them land,
        # and start no new write behind our back.
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await asyncio.gather(*self._flushes, return_exceptions=True)
        # Whatever is still held was interrupted mid-delivery: it may or may not
        # have been delivered, so it is retried (same idempotency key), not refunded.
        for held in list(self._held.values()):
            if held.started and not any(o.task.id == held.task.id for o in self._outcomes):
                self._outcomes.append(
                    _Outcome(
                        held.task, ok=False, error="interrupted: worker shut down mid-delivery"
                    )
                )
        with contextlib.suppress(*_DB_ERRORS):
            async with asyncio.timeout(max(self.settings.worker_grace_period_seconds, 5.0)):
                await self._flush_remaining()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(*_DB_ERRORS):
            await self._heartbeat("STOPPED")
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.aclose()
        await self._pool.close()
        self.log.info(
            "worker stopped", processed=self.counters.processed, completed=self.counters.completed
        )

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a background loop alive: a bug is logged, then the loop restarts."""
        while True:
            try:
                await loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("background loop crashed; restarting", loop=name)
                await asyncio.sleep(1.0)

    async def _register(self) -> None:
        async with self.repo.connection() as conn:
            await self.repo.worker_register(conn, self.worker_id, socket.gethostname(), os.getpid())

    async def _with_db_retry(self, what: str, action: Callable[[], Awaitable[Any]]) -> Any:
        """Run `action`, retrying database outages with capped backoff until stopped."""
        delay = 0.1
        while True:
            try:
                return await action()
            except _DB_ERRORS as exc:
                if self._stopping.is_set() and what != "register":
                    raise
                self.log.warning(
                    "database unavailable",
                    during=what,
                    error=str(exc)[:200],
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    # ------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        poll = self.settings.worker_poll_interval_seconds
        cursor = _QueueCursor()
        self._cursors.append(cursor)
        while not self._stopping.is_set():
            room = self._capacity - len(self._held) - self._reserved
            if room <= 0:
                self._room_waiters += 1
                try:
                    await self._claim_wakeup.wait(poll)
                finally:
                    self._room_waiters -= 1
                continue
            limit = min(self.settings.worker_batch_size, room)
            self._reserved += limit  # other claimers see the room as taken
            try:
                claimed = await self._claim(limit, cursor)
            except _DB_ERRORS as exc:
                self.log.warning("claim failed: database unavailable", error=str(exc)[:200])
                await self._claim_wakeup.wait(min(poll, 1.0))
                continue
            finally:
                self._reserved -= limit
            if len(claimed) == limit:
                continue  # there may be more: claim again while there is room
            await self._claim_wakeup.wait(await self._idle_timeout(poll))

    async def _claim(self, limit: int, cursor: _QueueCursor) -> list[ClaimedTask]:
        """Claim from where this claimer left off in the queue; only when that
        runs dry, from the head. The head is where every claimed task leaves an
        index entry behind until vacuum can remove it (never, while another
        session holds an old snapshot): starting past them keeps a claim's cost
        flat when dead rows pile up."""
        start = cursor.position()
        claimed = await self._claim_from(limit, start)
        if len(claimed) < limit and start != _HEAD:
            claimed += await self._claim_from(limit - len(claimed), _HEAD)
            cursor.rescanned()
        cursor.advance(claimed)
        return claimed

    async def _claim_from(self, limit: int, from_position: float) -> list[ClaimedTask]:
        async with self.repo.connection() as conn:
            claimed = await self.repo.task_claim_batch(
                conn,
                worker_id=self.worker_id,
                limit=limit,
                lease_seconds=self.settings.task_lease_seconds,
                from_position=from_position,
                node_offset=random.randrange(1 << 16),
            )
        if claimed:
            now = time.monotonic()
            async with self._ready_signal:
                for task in claimed:
                    held = _Held(task, now)
                    self._held[task.id] = held
                    self._ready.append(held)
                self._ready_signal.notify(len(claimed))
        return claimed

    async def _idle_timeout(self, poll: float) -> float:
        """Sleep no longer than the poll interval, and wake when the earliest
        backing-off task becomes due."""
        try:
            async with self.repo.connection() as conn:
                next_at, db_now = await self.repo.task_next_retry_at(conn)
        except _DB_ERRORS:
            return min(poll, 1.0)
        if next_at is None:
            return poll
        return min(poll, max((next_at - db_now).total_seconds(), 0.0) + 0.005)

    # ------------------------------------------------------------ executing

    async def _executor_loop(self) -> None:
        while True:
            async with self._ready_signal:
                while not self._ready:
                    await self._ready_signal.wait()
                held = self._ready.popleft()
            if held.task.id not in self._held:
                continue  # lease lost while waiting
            held.started = True
            self._executing += 1
            try:
                outcome = await self._execute(held.task)
            finally:
                self._executing -= 1
                if not self._executing:
                    self._executor_idle.set()
            self._outcomes.append(outcome)
            self._flush_wakeup.set()

    async def _execute(self, task: ClaimedTask) -> _Outcome:
        backend = self.backends.get(task.backend)
        started = time.perf_counter()
        try:
            chaos = self.chaos
            if chaos.active and chaos.latency_ms:
                await asyncio.sleep(chaos.latency_ms / 1000.0)
            if chaos.active and chaos.failure_rate and random.random() < chaos.failure_rate:
                return _Outcome(task, ok=False, error="chaos: injected failure")
            if backend is None:
                return _Outcome(
                    task,
                    ok=False,
                    permanent=True,
                    error=f"no delivery backend named {task.backend!r}",
                )
            await backend.deliver(_request_for(task))
            return _Outcome(task, ok=True)
        except PermanentDeliveryError as exc:
            return _Outcome(task, ok=False, permanent=True, error=str(exc)[:1000])
        except DeliveryError as exc:
            return _Outcome(task, ok=False, error=str(exc)[:1000], counts_against_node=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a backend bug must not lose the task
            self.log.exception("backend raised unexpectedly", **_task_fields(task))
            return _Outcome(
                task,
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:1000],
                counts_against_node=True,
            )
        finally:
            self.metrics.task_duration.observe(time.perf_counter() - started)

    # ------------------------------------------------------------ recording

    async def _flush_loop(self) -> None:
        """Record outcomes as they arrive: while one batch is being written the
        next accumulates, with up to `claimers` writes in flight (group commit
        does the rest)."""
        while True:
            if not self._outcomes:
                await self._flush_wakeup.wait(1.0)
                continue
            await self._flush_slots.acquire()
            if not self._outcomes:
                self._flush_slots.release()
                continue
            batch, self._outcomes = self._outcomes, []
            flush = asyncio.create_task(self._flush_batch(batch))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)

    async def _flush_batch(self, batch: list[_Outcome]) -> None:
        try:
            await self._record(batch)
        except BaseException as exc:
            self._outcomes[:0] = batch  # keep them; fencing makes a retry safe
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, _DB_ERRORS):
                self.log.warning(
                    "recording outcomes failed: database unavailable",
                    pending=len(self._outcomes),
                    error=str(exc)[:200],
                )
            else:
                self.log.exception("recording outcomes failed", pending=len(self._outcomes))
            await asyncio.sleep(0.5)
            self._flush_wakeup.set()
        finally:
            self._flush_slots.release()

    async def _flush_remaining(self) -> None:
        """At shutdown: wait for writes in flight, then record what is left."""
        slots = self.settings.worker_claimers
        for _ in range(slots):
            await self._flush_slots.acquire()
        try:
            if self._outcomes:
                batch, self._outcomes = self._outcomes, []
                try:
                    await self._record(batch)
                except BaseException:
                    self._outcomes[:0] = batch
                    raise
        finally:
            for _ in range(slots):
                self._flush_slots.release()

    async def _record(self, batch: list[_Outcome]) -> None:
        started = time.perf_counter()
        successes = [(o.task.id, o.task.fencing_token) for o in batch if o.ok]
        failures = [
            TaskFailure(
                task_id=o.task.id,
                fencing_token=o.task.fencing_token,
                error=o.error or "unknown error",
                permanent=o.permanent,
                delay_seconds=self.backoff.delay(o.task.attempt),
            )
            for o in batch
            if not o.ok
        ]
        async with self.repo.connection() as conn:
            rows = await self.repo.task_record_outcomes(
                conn, successes, failures, max_attempts=self.settings.max_attempts
            )
        self.metrics.batch_duration.observe(time.perf_counter() - started)
        self._node_stats.add(batch)
        self._account(batch, {r["id"]: r["status"] for r in rows})

    def _account(self, batch: list[_Outcome], recorded: dict[uuid.UUID, str]) -> None:
        """Count what the database accepted, and only that."""
        c, debug = self.counters, self._debug
        completed_tasks = completed_units = dead_tasks = dead_units = retries = 0
        for outcome in batch:
            task = outcome.task
            self._held.pop(task.id, None)
            status = recorded.get(task.id)
            if status is None:
                c.leases_lost += 1
                self.log.warning(
                    "lease lost: outcome not recorded", **_task_fields(task), ok=outcome.ok
                )
            elif status == TaskStatus.COMPLETED:
                completed_tasks += 1
                completed_units += task.quantity
                if debug:
                    self.log.debug("task completed", **_task_fields(task), quantity=task.quantity)
            elif status == TaskStatus.FAILED_PERMANENT:
                dead_tasks += 1
                dead_units += task.quantity
                self.log.warning("task dead-lettered", **_task_fields(task), error=outcome.error)
            else:
                retries += 1
                self.log.info("task failed, will retry", **_task_fields(task), error=outcome.error)
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
        if self._room_waiters or retries:
            self._claim_wakeup.set()  # room was freed, or a retry may be due soon

    async def _flush_node_stats(self) -> None:
        """Node health and totals, at most once per control-loop tick: off the
        hot path, so workers do not queue on the same nodes row per batch."""
        outcomes = self._node_stats.take()
        if not outcomes:
            return
        try:
            async with self.repo.connection() as conn:
                await self.repo.node_record_outcomes(
                    conn,
                    outcomes,
                    threshold=self.settings.circuit_failure_threshold,
                    cooldown_seconds=self.settings.circuit_cooldown_seconds,
                )
        except BaseException:
            self._node_stats.restore(outcomes)
            raise

    # ------------------------------------------------------------ background

    async def _listen_loop(self) -> None:
        """LISTEN on a dedicated connection; any notification wakes the claim loop."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.listen_url,
                    autocommit=True,
                    application_name=f"goodfellaz17-listen:{self.worker_id}"[:63],
                    connect_timeout=max(1, int(self.settings.db_connect_timeout_seconds)),
                )
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.1
                    # We may have missed some while (re)connecting, a chaos switch too.
                    self._rewind_cursors(_HEAD)
                    await self._refresh_chaos_quietly()
                    self._claim_wakeup.set()
                    async for notify in conn.notifies():
                        if notify.payload == CHAOS_NOTIFY_PAYLOAD:
                            # Chaos switched: obey it before the next claim, so a
                            # drain right after "disable" is not failed by stale state.
                            await self._refresh_chaos_quietly()
                        self._rewind_cursors(_due_position(notify.payload))
                        self._claim_wakeup.set()
            except _DB_ERRORS as exc:
                self.log.debug("listen connection lost", error=str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    async def _control_loop(self) -> None:
        """Chaos settings every second; heartbeat and lease extension on their period."""
        last_heartbeat = 0.0
        while True:
            try:
                await self._refresh_chaos()
                await self._flush_node_stats()
                now = time.monotonic()
                if now - last_heartbeat >= self.settings.worker_heartbeat_seconds:
                    await self._extend_leases()
                    await self._heartbeat("STOPPING" if self._stopping.is_set() else "RUNNING")
                    last_heartbeat = now
            except _DB_ERRORS as exc:
                self.log.debug("control loop: database unavailable", error=str(exc)[:200])
            await asyncio.sleep(min(CHAOS_REFRESH_SECONDS, self.settings.worker_heartbeat_seconds))

    def _rewind_cursors(self, position: float) -> None:
        for cursor in self._cursors:
            cursor.rewind(position)

    async def _refresh_chaos_quietly(self) -> None:
        try:
            await self._refresh_chaos()
        except _DB_ERRORS as exc:  # the control loop reads it again within a second
            self.log.debug("chaos refresh failed", error=str(exc)[:200])

    async def _refresh_chaos(self) -> None:
        row = await self.repo.chaos_get()
        was_paused = self.chaos.active and self.chaos.worker_paused
        self.chaos = ChaosState(
            active=bool(row["active"]),
            worker_paused=bool(row["worker_paused"]),
            failure_rate=float(row["failure_rate"]),
            latency_ms=int(row["latency_ms"]),
        )
        if was_paused and not (self.chaos.active and self.chaos.worker_paused):
            self._claim_wakeup.set()  # chaos expired or was disabled: resume at once

    async def _extend_leases(self) -> None:
        """Extend the leases of claims held for more than a third of the lease."""
        lease = self.settings.task_lease_seconds
        cutoff = time.monotonic() - lease / 3
        old = [h for h in self._held.values() if h.claimed_at <= cutoff]
        if not old:
            return
        claims = [(h.task.id, h.task.fencing_token) for h in old]
        async with self.repo.connection() as conn:
            kept = await self.repo.task_extend_leases(conn, claims, lease)
        now = time.monotonic()
        for held in old:
            if held.task.id in kept:
                held.claimed_at = now
            else:
                self._held.pop(held.task.id, None)
                self.counters.leases_lost += 1
                self.log.warning("lease lost while executing", **_task_fields(held.task))

    async def _heartbeat(self, status: str) -> None:
        c = self.counters
        async with self.repo.connection() as conn:
            await self.repo.worker_heartbeat(
                conn,
                worker_id=self.worker_id,
                status=status,
                total_processed=c.processed,
                total_completed=c.completed,
                total_failed=c.failed,
                total_retries=c.retries,
                recovered_orphans=c.recovered_orphans,
            )

    async def _rescue_loop(self) -> None:
        interval = self.settings.worker_rescue_interval_seconds
        while True:
            try:
                await self.rescue_orphans_once()
            except _DB_ERRORS as exc:
                self.log.debug("rescuer: database unavailable", error=str(exc)[:200])
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))

    async def rescue_orphans_once(self) -> int:
        """Move every EXECUTING task past its lease back into the queue (or to
        the dead-letter queue once its orphan budget is spent). Returns how many."""
        total = 0
        while True:
            async with self.repo.transaction() as conn:
                orphans = await self.repo.task_lock_orphans(conn, limit=RESCUE_BATCH)
                rescues = self.orphan_policy.rescue_all(orphans)
                rows = await self.repo.task_rescue_orphans(conn, rescues)
            for row in rows:
                self._count_rescued(row)
            total += len(rows)
            if len(rows) < RESCUE_BATCH:
                break
        if total:
            self._claim_wakeup.set()
        return total

    def _count_rescued(self, row: dict[str, Any]) -> None:
        c, m = self.counters, self._m
        c.recovered_orphans += 1
        m.orphans.inc()
        if row["status"] == TaskStatus.FAILED_PERMANENT:
            c.failed += 1
            m.dead_lettered.inc()
            m.failed_units.inc(row["quantity"])
        else:
            c.retries += 1
            m.retries.inc()
        self.log.warning(
            "Recovering orphaned task",
            order_id=str(row["order_id"]),
            task_id=str(row["id"]),
            attempt=row["attempts"],
            node=row["node_identifier"],
            lost_by=row["lease_owner"],
            new_status=row["status"],
        )

    async def _release_unstarted(self) -> None:
        async with self._ready_signal:
            unstarted = [h for h in self._ready if h.task.id in self._held]
            self._ready.clear()
        if not unstarted:
            return
        claims = [(h.task.id, h.task.fencing_token) for h in unstarted]
        try:
            async with self.repo.connection() as conn:
                released = await self.repo.task_release_many(conn, claims)
        except _DB_ERRORS as exc:
            self.log.warning(
                "could not hand back unstarted tasks; their leases will expire",
                count=len(claims),
                error=str(exc)[:200],
            )
            return
        for held in unstarted:
            self._held.pop(held.task.id, None)
        self.log.info("handed back unstarted tasks", count=len(released))

    # ------------------------------------------------------------ introspection

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "workerId": self.worker_id,
            "totalProcessed": c.processed,
            "totalCompleted": c.completed,
            "totalFailed": c.failed,
            "totalRetries": c.retries,
            "recoveredOrphans": c.recovered_orphans,
            "leasesLost": c.leases_lost,
            "isRunning": self.is_running,
            "inFlight": len(self._held),
            "executing": self._executing,
            "chaosActive": self.chaos.active,
        }


def _due_position(payload: str) -> float:
    """The queue position a "tasks due" NOTIFY announces; the head of the
    queue when it names none (a chaos switch, an older sender)."""
    try:
        return float(payload)
    except ValueError:
        return _HEAD


def _request_for(task: ClaimedTask) -> DeliveryRequest:
    return DeliveryRequest(
        task_id=task.id,
        order_id=task.order_id,
        quantity=task.quantity,
        target=task.target,
        attempt=task.attempt,
        fencing_token=task.fencing_token,
        node_id=task.node_id,
        node_identifier=task.node_identifier,
        endpoint=task.endpoint,
        capacity_per_hour=task.capacity_per_hour,
    )


def _task_fields(task: ClaimedTask) -> dict[str, Any]:
    return {
        "order_id": str(task.order_id),
        "task_id": str(task.id),
        "attempt": task.attempt,
        "node": task.node_identifier,
    }


class NodeStats:
    """Per-node outcomes accumulated between writes: units delivered, failures
    that count against the node's health (retryable delivery errors), and the
    failures since its last success, in the order they happened."""

    def __init__(self) -> None:
        self._stats: dict[int, NodeOutcome] = {}

    def add(self, batch: list[_Outcome]) -> None:
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
