"""Chaos injection as one worker sees it: the operator's settings, re-read often.

The settings live in `chaos_settings` (services/chaos.py writes them). The
database decides whether they are still in force (`active` is computed with
its now(), so an expired setting reads as off on every worker alike); the
pause is enforced by the claim statement itself, while the injected failure
rate and latency are applied by the executor from the state held here.

This module never writes chaos settings and never applies them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.worker.outage import DB_ERRORS


@dataclass(frozen=True, slots=True)
class ChaosState:
    active: bool = False
    worker_paused: bool = False
    failure_rate: float = 0.0
    latency_ms: int = 0

    @classmethod
    def from_row(cls, row: Row) -> ChaosState:
        return cls(
            active=bool(row["active"]),
            worker_paused=bool(row["worker_paused"]),
            failure_rate=float(row["failure_rate"]),
            latency_ms=int(row["latency_ms"]),
        )

    @property
    def paused(self) -> bool:
        return self.active and self.worker_paused


class ChaosWatch:
    """The current ChaosState, refreshed from the database; `on_resume` is
    called when a pause ends (expired or disabled), so claiming resumes at once."""

    def __init__(self, repo: Repository, on_resume: Callable[[], None], log: Any) -> None:
        self.state = ChaosState()
        self._repo = repo
        self._on_resume = on_resume
        self._log = log

    async def refresh(self) -> None:
        was_paused = self.state.paused
        self.state = ChaosState.from_row(await self._repo.chaos_get())
        if was_paused and not self.state.paused:
            self._on_resume()

    async def refresh_quietly(self) -> None:
        """Refresh, or leave it to the next periodic refresh (within a second)."""
        try:
            await self.refresh()
        except DB_ERRORS as exc:
            self._log.debug("chaos refresh failed", error=str(exc)[:200])
