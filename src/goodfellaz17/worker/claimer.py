"""The claimer: wins due tasks from the database into the claim ledger.

It runs `GOODFELLAZ17_WORKER_CLAIMERS` claim loops and the LISTEN connection
that wakes them. A claim loop claims while the ledger has room, from its place
in the queue; when the queue runs dry it sleeps until woken (a NOTIFY, room
freed, a retry coming due, a stop) or until the poll interval has passed. At
shutdown the claimer hands back the claims no executor started, refunding
their attempt.

It never executes or records a task, and never holds a database connection
while it waits.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg

from goodfellaz17.db.repository import ClaimedTask, Repository
from goodfellaz17.settings import Settings
from goodfellaz17.worker.chaos import ChaosWatch
from goodfellaz17.worker.claims import HEAD, ClaimLedger, QueueCursor
from goodfellaz17.worker.outage import DB_ERRORS, DB_RETRY_MAX_SECONDS

NOTIFY_CHANNEL = "goodfellaz17_tasks_due"
CHAOS_NOTIFY_PAYLOAD = "chaos"  # what services.chaos sends when chaos is switched


class Claimer:
    def __init__(
        self,
        *,
        repo: Repository,
        settings: Settings,
        worker_id: str,
        listen_url: str,
        ledger: ClaimLedger,
        chaos: ChaosWatch,
        stopping: asyncio.Event,
        log: Any,
    ) -> None:
        self._repo = repo
        self._settings = settings
        self._worker_id = worker_id
        self._listen_url = listen_url
        self._ledger = ledger
        self._chaos = chaos
        self._stopping = stopping
        self._log = log
        self._cursors: list[QueueCursor] = []

    async def run(self) -> None:
        """The claim loops, until a stop is requested."""
        await asyncio.gather(*(self._claim_loop() for _ in range(self._settings.worker_claimers)))

    # ------------------------------------------------------------ claiming

    async def _claim_loop(self) -> None:
        poll = self._settings.worker_poll_interval_seconds
        ledger = self._ledger
        cursor = QueueCursor()
        self._cursors.append(cursor)
        while not self._stopping.is_set():
            room = ledger.room()
            if room <= 0:
                ledger.room_waiters += 1
                try:
                    await ledger.wakeup.wait(poll)
                finally:
                    ledger.room_waiters -= 1
                continue
            limit = min(self._settings.worker_batch_size, room)
            ledger.reserve(limit)  # other claimers see the room as taken
            try:
                claimed = await self._claim(limit, cursor)
            except DB_ERRORS as exc:
                self._log.warning("claim failed: database unavailable", error=str(exc)[:200])
                await ledger.wakeup.wait(min(poll, 1.0))
                continue
            finally:
                ledger.unreserve(limit)
            if len(claimed) == limit:
                continue  # there may be more: claim again while there is room
            await ledger.wakeup.wait(await self._idle_timeout(poll))

    async def _claim(self, limit: int, cursor: QueueCursor) -> list[ClaimedTask]:
        """Claim from where this claimer left off in the queue; only when that
        runs dry, from the head. The head is where every claimed task leaves an
        index entry behind until vacuum can remove it (never, while another
        session holds an old snapshot): starting past them keeps a claim's cost
        flat when dead rows pile up."""
        start = cursor.position()
        claimed = await self._claim_from(limit, start)
        if len(claimed) < limit and start != HEAD:
            claimed += await self._claim_from(limit - len(claimed), HEAD)
            cursor.rescanned()
        cursor.advance(claimed)
        return claimed

    async def _claim_from(self, limit: int, from_position: float) -> list[ClaimedTask]:
        async with self._repo.connection() as conn:
            claimed = await self._repo.task_claim_batch(
                conn,
                worker_id=self._worker_id,
                limit=limit,
                lease_seconds=self._settings.task_lease_seconds,
                from_position=from_position,
                node_offset=random.randrange(1 << 16),
            )
        if claimed:
            await self._ledger.hold(claimed)
        return claimed

    async def _idle_timeout(self, poll: float) -> float:
        """Sleep no longer than the poll interval, and wake when the earliest
        backing-off task becomes due."""
        try:
            async with self._repo.connection() as conn:
                next_at, db_now = await self._repo.task_next_retry_at(conn)
        except DB_ERRORS:
            return min(poll, 1.0)
        if next_at is None:
            return poll
        return min(poll, max((next_at - db_now).total_seconds(), 0.0) + 0.005)

    # ------------------------------------------------------------ waking up

    async def listen(self) -> None:
        """LISTEN on a dedicated connection; any notification wakes the claim loops."""
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._listen_url,
                    autocommit=True,
                    application_name=f"goodfellaz17-listen:{self._worker_id}"[:63],
                    connect_timeout=max(1, int(self._settings.db_connect_timeout_seconds)),
                )
                async with conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    delay = 0.1
                    # We may have missed some while (re)connecting, a chaos switch too.
                    self._rewind_cursors(HEAD)
                    await self._chaos.refresh_quietly()
                    self._ledger.wakeup.set()
                    async for notify in conn.notifies():
                        if notify.payload == CHAOS_NOTIFY_PAYLOAD:
                            # Chaos switched: obey it before the next claim, so a
                            # drain right after "disable" is not failed by stale state.
                            await self._chaos.refresh_quietly()
                        self._rewind_cursors(_due_position(notify.payload))
                        self._ledger.wakeup.set()
            except DB_ERRORS as exc:
                self._log.debug("listen connection lost", error=str(exc)[:200])
                await asyncio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_SECONDS)

    def _rewind_cursors(self, position: float) -> None:
        for cursor in self._cursors:
            cursor.rewind(position)

    # ------------------------------------------------------------ stopping

    async def hand_back_unstarted(self) -> None:
        """Release the claims no executor started (attempt refunded); if the
        database is away, their leases expire and the rescuer returns them."""
        unstarted = await self._ledger.take_unstarted()
        if not unstarted:
            return
        claims = [(h.task.id, h.task.fencing_token) for h in unstarted]
        try:
            async with self._repo.connection() as conn:
                released = await self._repo.task_release_many(conn, claims)
        except DB_ERRORS as exc:
            self._log.warning(
                "could not hand back unstarted tasks; their leases will expire",
                count=len(claims),
                error=str(exc)[:200],
            )
            return
        for held in unstarted:
            self._ledger.forget(held.task.id)
        self._log.info("handed back unstarted tasks", count=len(released))


def _due_position(payload: str) -> float:
    """The queue position a "tasks due" NOTIFY announces; the head of the
    queue when it names none (a chaos switch, an older sender)."""
    try:
        return float(payload)
    except ValueError:
        return HEAD
