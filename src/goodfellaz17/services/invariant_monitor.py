"""The periodic global invariant check behind `delivery_invariant_violations`.

/metrics must stay cheap, so it never runs the check: it reads the latest
GLOBAL row of invariant_check_log written by this monitor (source MONITOR) or
an operator's CLI. This service writes those rows, every
GOODFELLAZ17_INVARIANT_CHECK_INTERVAL_SECONDS, from each API process. It must
never stop the process: database outages and bugs are logged and the next
round tries again.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import psycopg_pool

from goodfellaz17.db.repository import Repository
from goodfellaz17.logs import get_logger
from goodfellaz17.services.invariants import CheckSource, check_all

log = get_logger(__name__)


class InvariantMonitor:
    def __init__(self, repo: Repository, interval_seconds: float) -> None:
        self.repo = repo
        self.interval_seconds = interval_seconds

    async def run_once(self) -> dict[str, Any]:
        """Check every order once, log the outcome, return the check's result."""
        result = await check_all(self.repo, source=CheckSource.MONITOR)
        if result["passed"]:
            log.debug(
                "invariant check passed",
                orders_checked=result["ordersChecked"],
                duration_ms=result["durationMs"],
            )
        else:
            log.error(
                "invariant violation detected",
                violation_count=result["violationCount"],
                orders_checked=result["ordersChecked"],
                first_violations=result["violations"][:5],
            )
        return result

    async def run(self) -> None:
        """Check every interval (jittered so replicas spread out) until cancelled."""
        while True:
            await asyncio.sleep(self.interval_seconds * random.uniform(0.9, 1.1))
            try:
                await self.run_once()
            except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
                log.warning("invariant check skipped: database unavailable", error=str(exc)[:200])
            except Exception:
                log.exception("invariant check failed")
