"""The executor: runs held claims through their order's delivery backend.

`GOODFELLAZ17_WORKER_CONCURRENCY` executor loops take claims from the ledger's
ready queue in claim order, deliver each (applying chaos latency and failures
while chaos is in force), and hand the outcome to the recorder.

An executor never touches the database and never lets a backend's exception
lose a task: whatever happens becomes an Outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from prometheus_client import Histogram

from goodfellaz17.backends.base import (
    DeliveryBackend,
    DeliveryError,
    DeliveryRequest,
    PermanentDeliveryError,
)
from goodfellaz17.db.repository import ClaimedTask
from goodfellaz17.worker.chaos import ChaosWatch
from goodfellaz17.worker.claims import ClaimLedger
from goodfellaz17.worker.outcomes import Outcome, OutcomeRecorder, task_fields


class Executor:
    def __init__(
        self,
        *,
        backends: dict[str, DeliveryBackend],
        ledger: ClaimLedger,
        chaos: ChaosWatch,
        outcomes: OutcomeRecorder,
        task_duration: Histogram,
        log: Any,
    ) -> None:
        self._backends = backends
        self._ledger = ledger
        self._chaos = chaos
        self._outcomes = outcomes
        self._task_duration = task_duration
        self._log = log

    async def run(self) -> None:
        """One executor loop: take the next ready claim, run it, hand over the outcome."""
        ledger, record = self._ledger, self._outcomes.add
        ready = ledger.ready_signal
        while True:
            async with ready:
                while (held := ledger.pop_ready()) is None:
                    await ready.wait()
            if not ledger.start(held):
                continue  # lease lost while waiting
            try:
                outcome = await self.execute(held.task)
            finally:
                ledger.finish()
            record(outcome)

    async def execute(self, task: ClaimedTask) -> Outcome:
        backend = self._backends.get(task.backend)
        started = time.perf_counter()
        try:
            chaos = self._chaos.state
            if chaos.active and chaos.latency_ms:
                await asyncio.sleep(chaos.latency_ms / 1000.0)
            if chaos.active and chaos.failure_rate and random.random() < chaos.failure_rate:
                return Outcome(task, ok=False, error="chaos: injected failure")
            if backend is None:
                return Outcome(
                    task,
                    ok=False,
                    permanent=True,
                    error=f"no delivery backend named {task.backend!r}",
                )
            await backend.deliver(_request_for(task))
            return Outcome(task, ok=True)
        except PermanentDeliveryError as exc:
            return Outcome(task, ok=False, permanent=True, error=str(exc)[:1000])
        except DeliveryError as exc:
            return Outcome(task, ok=False, error=str(exc)[:1000], counts_against_node=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a backend bug must not lose the task
            self._log.exception("backend raised unexpectedly", **task_fields(task))
            return Outcome(
                task,
                ok=False,
                error=f"{type(exc).__name__}: {exc}"[:1000],
                counts_against_node=True,
            )
        finally:
            self._task_duration.observe(time.perf_counter() - started)


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
