"""OrderDeliveryWorker: the lifecycle of one worker, and the wiring of its parts.

The database is the referee: claims use FOR UPDATE SKIP LOCKED, every outcome
is written with the claim's fencing token, and a write that changes nothing
means the lease was lost (rescued or re-claimed elsewhere) — logged, counted,
never retried. The work itself is done by collaborators, each owning its own
state, all sharing one ClaimLedger (the claims held in memory):

    claimer.listen ──NOTIFY──► claimer (claim loops) ──ledger──► N executors
                                                                    │ outcomes
    control tick (periodic): chaos, node stats, heartbeat + leases  ▼
    rescuer (periodic): orphans                         outcome recorder ──► one txn per batch

This module only starts them, stops them gracefully (stop claiming, hand back
unstarted claims, let deliveries in flight finish within the grace period,
record everything) and reports status. It must never count a unit the
database did not accept, and never sleep on a task's behalf while holding a
database connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

from goodfellaz17.backends.base import DeliveryBackend
from goodfellaz17.backends.registry import build_backends
from goodfellaz17.db.pool import create_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.retry import BackoffPolicy, OrphanPolicy
from goodfellaz17.logs import get_logger
from goodfellaz17.periodic import periodic
from goodfellaz17.settings import Settings
from goodfellaz17.worker.chaos import ChaosState, ChaosWatch
from goodfellaz17.worker.claimer import Claimer
from goodfellaz17.worker.claims import ClaimLedger
from goodfellaz17.worker.counters import BoundMetrics, WorkerCounters, worker_metrics
from goodfellaz17.worker.executor import Executor
from goodfellaz17.worker.leases import LeaseKeeper
from goodfellaz17.worker.outage import DB_ERRORS, DB_RETRY_MAX_SECONDS
from goodfellaz17.worker.outcomes import OutcomeRecorder
from goodfellaz17.worker.rescuer import OrphanRescuer

__all__ = ["CHAOS_REFRESH_SECONDS", "OrderDeliveryWorker", "new_worker_id", "worker_metrics"]

log = get_logger(__name__)

CHAOS_REFRESH_SECONDS = 1.0
RESCUE_JITTER = 0.2  # rescuers of many workers drift apart


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


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
        self.is_running = False
        # Set once a stopping worker has stopped claiming and handed back its
        # unstarted claims: only deliveries in flight remain.
        self.draining = asyncio.Event()
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
        self._wire_collaborators()
        self._background: list[asyncio.Task[None]] = []
        self._executors: list[asyncio.Task[None]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._main: asyncio.Task[None] | None = None
        self._last_heartbeat = 0.0

    def _wire_collaborators(self) -> None:
        s, repo, log_ = self.settings, self.repo, self.log
        bound = BoundMetrics(self.metrics)
        self.ledger = ClaimLedger(capacity=s.worker_concurrency + s.worker_batch_size)
        self.chaos_watch = ChaosWatch(repo, on_resume=self.ledger.wakeup.set, log=log_)
        self.claimer = Claimer(
            repo=repo,
            settings=s,
            worker_id=self.worker_id,
            listen_url=self.listen_url,
            ledger=self.ledger,
            chaos=self.chaos_watch,
            stopping=self._stopping,
            log=log_,
        )
        self.outcomes = OutcomeRecorder(
            repo=repo,
            settings=s,
            ledger=self.ledger,
            counters=self.counters,
            metrics=bound,
            log=log_,
        )
        self.executor = Executor(
            backends=self.backends,
            ledger=self.ledger,
            chaos=self.chaos_watch,
            outcomes=self.outcomes,
            task_duration=bound.task_duration,
            log=log_,
        )
        self.leases = LeaseKeeper(
            repo=repo,
            settings=s,
            worker_id=self.worker_id,
            ledger=self.ledger,
            counters=self.counters,
            log=log_,
        )
        self.rescuer = OrphanRescuer(
            repo=repo,
            policy=OrphanPolicy(
                BackoffPolicy(s.backoff_base_seconds, s.backoff_max_seconds, s.max_attempts),
                s.max_orphanings,
            ),
            counters=self.counters,
            metrics=bound,
            on_rescued=self.ledger.wakeup.set,
            log=log_,
        )

    @property
    def chaos(self) -> ChaosState:
        """The chaos settings this worker obeys right now."""
        return self.chaos_watch.state

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
        self.ledger.wakeup.set()
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main

    async def _run(self) -> None:
        await self._with_db_retry("register", self._register)
        self.is_running = True
        s = self.settings
        self.log.info(
            "worker started", concurrency=s.worker_concurrency, batch_size=s.worker_batch_size
        )
        spawn = asyncio.create_task
        self._flusher = spawn(self._supervise("flush", self.outcomes.run), name="flush")
        self._background = [
            spawn(self._supervise("listen", self.claimer.listen), name="listen"),
            spawn(self._control_loop(), name="control"),
            spawn(self._rescue_loop(), name="rescue"),
            self._flusher,
        ]
        self._executors = [
            spawn(self.executor.run(), name=f"executor-{i}") for i in range(s.worker_concurrency)
        ]
        try:
            await self.claimer.run()
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self.is_running = False
        await self.claimer.hand_back_unstarted()
        self.draining.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.worker_grace_period_seconds):
                await self.ledger.wait_until_idle()
        for task in self._executors:
            task.cancel()
        await asyncio.gather(*self._executors, return_exceptions=True)
        # Outcomes already being written are not interrupted: let them land,
        # and start no new write behind our back.
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.outcomes.wait_for_writes()
        # Whatever is still held was interrupted mid-delivery: it may or may not
        # have been delivered, so it is retried (same idempotency key), not refunded.
        self.outcomes.add_interrupted(self.ledger.started())
        with contextlib.suppress(*DB_ERRORS):
            async with asyncio.timeout(max(self.settings.worker_grace_period_seconds, 5.0)):
                await self.outcomes.flush_remaining()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        with contextlib.suppress(*DB_ERRORS):
            await self.leases.heartbeat("STOPPED")
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
            except DB_ERRORS as exc:
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

    # ------------------------------------------------------------ periodic work

    async def _control_loop(self) -> None:
        await periodic(
            self.control_once,
            min(CHAOS_REFRESH_SECONDS, self.settings.worker_heartbeat_seconds),
            name="control",
            outages=DB_ERRORS,
            outage_event="control loop: database unavailable",
            log=self.log,
        )

    async def control_once(self) -> None:
        """Chaos settings every tick; heartbeat and lease extension on their period."""
        await self.chaos_watch.refresh()
        await self.outcomes.flush_node_stats()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.settings.worker_heartbeat_seconds:
            await self.leases.extend_leases()
            await self.leases.heartbeat("STOPPING" if self._stopping.is_set() else "RUNNING")
            self._last_heartbeat = now

    async def _rescue_loop(self) -> None:
        await periodic(
            self.rescuer.run_once,
            self.settings.worker_rescue_interval_seconds,
            name="rescue",
            jitter=RESCUE_JITTER,
            outages=DB_ERRORS,
            outage_event="rescuer: database unavailable",
            log=self.log,
        )

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
            "inFlight": len(self.ledger),
            "executing": self.ledger.executing,
            "chaosActive": self.chaos.active,
        }
