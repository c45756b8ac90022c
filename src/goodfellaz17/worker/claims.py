"""The claims one worker holds, in memory: the ledger its parts share.

A claim enters when the claimer wins it from the database, waits in the ready
queue until an executor starts it, and leaves when its outcome is recorded,
when its lease turns out lost, or when it is handed back at shutdown. The
ledger bounds how many claims the worker holds (`capacity`: concurrency plus
one batch), so the worker never claims work it cannot start soon.

Also here: a claimer's place in the queue (QueueCursor) and the wake-up that
tells the claimers to look again (Wakeup).

The ledger never talks to the database: it is the worker's memory of what the
database granted, and the database stays the referee. It is one event loop's
state: no locks beyond the condition the executors wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from goodfellaz17.db.repository import ClaimedTask

HEAD = float("-inf")
CURSOR_RESCAN_SECONDS = 5.0


@dataclass(slots=True)
class Held:
    """A claim this worker holds: the task with its token, and when it was
    claimed (or its lease last extended), on the worker's monotonic clock."""

    task: ClaimedTask
    claimed_at: float
    started: bool = False


@dataclass
class Wakeup:
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self) -> None:
        self.event.set()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(seconds, 0.0)):
                await self.event.wait()
        self.event.clear()


class QueueCursor:
    """One claimer's place in the queue (a queue_position).

    It steps back when work becomes due behind it: a NOTIFY says the earliest
    queue position that became due (a new order, a drain, a retry-now), so
    fairness between orders holds. Work that becomes due without a NOTIFY (a
    backoff ending) sorts by its due time, normally ahead of the cursor; a
    full rescan from the head at least every few seconds covers the rest."""

    def __init__(self) -> None:
        self._at = HEAD
        self._rescanned_at = time.monotonic()

    def position(self) -> float:
        if time.monotonic() - self._rescanned_at > CURSOR_RESCAN_SECONDS:
            self._at = HEAD
        if self._at == HEAD:
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


class ClaimLedger:
    """Held claims by task id, the ready queue in claim order, and the room left.

    `ready_signal` is what executors wait on; `wakeup` is what claimers wait on
    (room freed, work due, stop requested)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.wakeup = Wakeup()
        self.ready_signal = asyncio.Condition()
        self.executing = 0
        self.room_waiters = 0
        self._held: dict[uuid.UUID, Held] = {}
        self._ready: deque[Held] = deque()
        self._reserved = 0
        self._idle = asyncio.Event()

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, task_id: uuid.UUID) -> bool:
        return task_id in self._held

    # ------------------------------------------------------------ claiming

    def room(self) -> int:
        """How many more claims fit, counting batches other claimers are
        claiming right now."""
        return self.capacity - len(self._held) - self._reserved

    def reserve(self, count: int) -> None:
        self._reserved += count

    def unreserve(self, count: int) -> None:
        self._reserved -= count

    async def hold(self, claimed: list[ClaimedTask]) -> None:
        """Claims the database granted: held from now, ready for an executor."""
        now = time.monotonic()
        async with self.ready_signal:
            for task in claimed:
                held = Held(task, now)
                self._held[task.id] = held
                self._ready.append(held)
            self.ready_signal.notify(len(claimed))

    # ------------------------------------------------------------ executing

    def pop_ready(self) -> Held | None:
        """The oldest claim no executor has taken; call under `ready_signal`."""
        return self._ready.popleft() if self._ready else None

    def start(self, held: Held) -> bool:
        """An executor takes `held`; False when its lease was lost meanwhile."""
        if held.task.id not in self._held:
            return False
        held.started = True
        self.executing += 1
        return True

    def finish(self) -> None:
        self.executing -= 1
        if not self.executing:
            self._idle.set()

    async def wait_until_idle(self) -> None:
        """Until no executor is running a task."""
        while self.executing:
            await self._idle.wait()
            self._idle.clear()

    # ------------------------------------------------------------ leaving

    def forget(self, task_id: uuid.UUID) -> None:
        """The claim is over: recorded, lost, or handed back."""
        self._held.pop(task_id, None)

    def held_since(self, cutoff: float) -> list[Held]:
        """Claims claimed (or extended) at or before `cutoff` (monotonic)."""
        return [h for h in self._held.values() if h.claimed_at <= cutoff]

    async def take_unstarted(self) -> list[Held]:
        """Empty the ready queue: the held claims no executor will start."""
        async with self.ready_signal:
            unstarted = [h for h in self._ready if h.task.id in self._held]
            self._ready.clear()
        return unstarted

    def started(self) -> list[Held]:
        """Held claims an executor started (at shutdown: interrupted mid-delivery)."""
        return [h for h in self._held.values() if h.started]
