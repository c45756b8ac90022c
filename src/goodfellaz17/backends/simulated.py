"""The simulated backend: in-process, no network, deterministic with a seed.

Per delivery it waits the configured latency plus the time the node needs at
its rate: a node's capacity_per_hour is shared by every delivery this process
sends to it, so one node delivers at most that many units an hour however
many tasks run at once. Then it fails with the configured probabilities.
Each outcome is drawn from a generator seeded by (seed, task id, attempt), so
a run is reproducible however the tasks interleave. `instant` skips all
waiting and failing (benchmarks).

With a ledger path, every accepted delivery appends one JSON line (task id,
fencing token, units) to the ledger: the "receiving side's" record, which
tests compare with the database to prove that nothing was counted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from goodfellaz17.backends.base import (
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)


@dataclass(frozen=True, slots=True)
class SimulatedConfig:
    latency_ms: float = 20.0
    failure_rate: float = 0.0
    permanent_failure_rate: float = 0.0
    seed: int | None = None
    instant: bool = False
    use_node_rate: bool = True
    ledger_path: Path | None = None


class SimulatedBackend:
    name = "simulated"

    def __init__(self, config: SimulatedConfig) -> None:
        self.config = config
        self._seed = config.seed if config.seed is not None else random.randrange(2**63)
        self._ledger_fd: int | None = None
        self._node_free_at: dict[int, float] = {}
        if config.ledger_path is not None:
            config.ledger_path.parent.mkdir(parents=True, exist_ok=True)
            self._ledger_fd = os.open(
                config.ledger_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )

    def _rng(self, request: DeliveryRequest) -> random.Random:
        return random.Random(f"{self._seed}:{request.task_id}:{request.attempt}")

    def _reserve_seconds(self, request: DeliveryRequest) -> float:
        """Book the node's capacity for this delivery; return how long it takes."""
        seconds = self.config.latency_ms / 1000.0
        if self.config.use_node_rate and request.capacity_per_hour > 0:
            now = asyncio.get_running_loop().time()
            start = max(now, self._node_free_at.get(request.node_id, now))
            done = start + request.quantity * 3600.0 / request.capacity_per_hour
            self._node_free_at[request.node_id] = done
            seconds += done - now
        return seconds

    async def deliver(self, request: DeliveryRequest) -> None:
        if self.config.instant:
            self._record(request)
            return
        rng = self._rng(request)
        roll = rng.random()
        await asyncio.sleep(self._reserve_seconds(request))
        if roll < self.config.permanent_failure_rate:
            raise PermanentDeliveryError(
                f"simulated permanent failure on node {request.node_identifier}"
            )
        if roll < self.config.permanent_failure_rate + self.config.failure_rate:
            raise RetryableDeliveryError(f"simulated failure on node {request.node_identifier}")
        self._record(request)

    def _record(self, request: DeliveryRequest) -> None:
        if self._ledger_fd is None:
            return
        line = json.dumps(
            {
                "task_id": str(request.task_id),
                "order_id": str(request.order_id),
                "fencing_token": request.fencing_token,
                "quantity": request.quantity,
                "node": request.node_identifier,
                "pid": os.getpid(),
                "at": time.time(),  # when the delivery was accepted (wall clock)
            },
            separators=(",", ":"),
        )
        # One write() per line on an O_APPEND descriptor: lines from several
        # processes never interleave, and a SIGKILL loses at most this line.
        os.write(self._ledger_fd, (line + "\n").encode())

    async def aclose(self) -> None:
        if self._ledger_fd is not None:
            os.close(self._ledger_fd)
            self._ledger_fd = None


def read_ledger(path: Path) -> list[dict[str, object]]:
    """Every accepted delivery recorded at `path` (complete lines only)."""
    entries: list[dict[str, object]] = []
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by SIGKILL was never acknowledged
    return entries
