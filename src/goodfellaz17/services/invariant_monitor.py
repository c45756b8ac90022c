"""The periodic global invariant check behind `delivery_invariant_violations`.

/metrics must stay cheap, so it never runs the check: it reads the latest
GLOBAL row of invariant_check_log written by this monitor (source MONITOR) or
an operator's CLI. This service writes those rows, every
GOODFELLAZ17_INVARIANT_CHECK_INTERVAL_SECONDS, from each API process. It must
never stop the process: database outages and bugs are logged and the next
round tries again.
"""

from __future__ import annotations

import logging

import psycopg
import psycopg_pool

from goodfellaz17.db.repository import Repository
from goodfellaz17.logs import get_logger
from goodfellaz17.periodic import periodic
from goodfellaz17.services.invariants import CheckSource, GlobalCheck, check_all

log = get_logger(__name__)

CHECK_JITTER = 0.1  # replicas spread out


class InvariantMonitor:
    def __init__(self, repo: Repository, interval_seconds: float) -> None:
        self.repo = repo
        self.interval_seconds = interval_seconds

    async def run_once(self) -> GlobalCheck:
        """Check every order once, log the outcome, return the check's result."""
        result = await check_all(self.repo, source=CheckSource.MONITOR)
        if result.passed:
            log.debug(
                "invariant check passed",
                orders_checked=result.orders_checked,
                duration_ms=result.duration_ms,
            )
        else:
            log.error(
                "invariant violation detected",
                violation_count=result.violation_count,
                orders_checked=result.orders_checked,
                first_violations=[v.as_logged() for v in result.violations[:5]],
            )
        return result

    async def run(self) -> None:
        """Check every interval (jittered so replicas spread out) until cancelled."""
        await periodic(
            self.run_once,
            self.interval_seconds,
            name="invariant-monitor",
            jitter=CHECK_JITTER,
            wait_first=True,
            outages=(psycopg.OperationalError, psycopg_pool.PoolTimeout),
            outage_event="invariant check skipped: database unavailable",
            outage_level=logging.WARNING,
            crash_event="invariant check failed",
            log=log,
        )
