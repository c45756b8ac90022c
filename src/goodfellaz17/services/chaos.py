"""Chaos injection for every worker on this database: pause claiming, inject
failures, add latency. Stored in `chaos_settings` (one row), which each
worker reads every second and the claim query checks on every claim.

Chaos always expires (default GOODFELLAZ17_CHAOS_DEFAULT_TTL_SECONDS), so it
can never be left on silently, and GOODFELLAZ17_CHAOS_ALLOWED=false forbids
turning it on at all. Every change wakes the workers (NOTIFY) and is recorded
in `operator_actions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg.types.json import Jsonb

from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.errors import Forbidden, InvalidInput
from goodfellaz17.logs import get_logger
from goodfellaz17.settings import Settings

log = get_logger(__name__)

MAX_TTL_SECONDS = 86_400
MAX_LATENCY_MS = 600_000


@dataclass(frozen=True, slots=True)
class ChaosState:
    """Chaos as the workers apply it: once expired, it reads as off."""

    active: bool
    expired: bool  # switched on, and its time ran out
    worker_paused: bool
    failure_rate: float
    latency_ms: int
    expires_at: datetime | None
    remaining_seconds: float | None
    updated_by: str | None
    updated_at: datetime


def _state(row: Row) -> ChaosState:
    active = bool(row["active"])
    expires_at = row["expires_at"]
    remaining = (expires_at - row["db_now"]).total_seconds() if active and expires_at else None
    return ChaosState(
        active=active,
        expired=bool(row["enabled"]) and not active,
        worker_paused=active and bool(row["worker_paused"]),
        failure_rate=float(row["failure_rate"]) if active else 0.0,
        latency_ms=int(row["latency_ms"]) if active else 0,
        expires_at=expires_at if active else None,
        remaining_seconds=round(remaining, 1) if remaining is not None else None,
        updated_by=row["updated_by"],
        updated_at=row["updated_at"],
    )


async def chaos_status(repo: Repository) -> ChaosState:
    return _state(await repo.chaos_get())


def _validate(failure_rate: float, latency_ms: int, ttl_seconds: float) -> None:
    if not 0.0 <= failure_rate <= 1.0:
        raise InvalidInput("failureRate must be between 0 and 1", field="failureRate")
    if not 0 <= latency_ms <= MAX_LATENCY_MS:
        raise InvalidInput(f"latencyMs must be between 0 and {MAX_LATENCY_MS}", field="latencyMs")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInput(
            f"ttlSeconds must be greater than 0 and at most {MAX_TTL_SECONDS}",
            field="ttlSeconds",
        )


async def enable_chaos(
    repo: Repository,
    settings: Settings,
    *,
    actor: str,
    worker_paused: bool = False,
    failure_rate: float = 0.0,
    latency_ms: int = 0,
    ttl_seconds: float | None = None,
) -> ChaosState:
    if not settings.chaos_allowed:
        raise Forbidden(
            "chaos injection is disabled by GOODFELLAZ17_CHAOS_ALLOWED=false", field="chaos"
        )
    ttl = float(settings.chaos_default_ttl_seconds if ttl_seconds is None else ttl_seconds)
    _validate(failure_rate, latency_ms, ttl)
    details = {
        "workerPaused": worker_paused,
        "failureRate": failure_rate,
        "latencyMs": latency_ms,
        "ttlSeconds": ttl,
    }
    async with repo.transaction() as conn:
        row = await repo.chaos_enable(
            conn,
            worker_paused=worker_paused,
            failure_rate=failure_rate,
            latency_ms=latency_ms,
            ttl_seconds=ttl,
            actor=actor,
        )
        await repo.operator_action_record(
            conn, action="chaos_enable", order_id=None, actor=actor, details=Jsonb(details)
        )
        await repo.tasks_due_notify(conn, "chaos")
    log.warning(
        "chaos enabled",
        actor=actor,
        worker_paused=worker_paused,
        failure_rate=failure_rate,
        latency_ms=latency_ms,
        ttl_seconds=ttl,
    )
    return _state(row)


async def disable_chaos(repo: Repository, *, actor: str) -> ChaosState:
    async with repo.transaction() as conn:
        row = await repo.chaos_disable(conn, actor=actor)
        await repo.operator_action_record(
            conn, action="chaos_disable", order_id=None, actor=actor, details=Jsonb({})
        )
        await repo.tasks_due_notify(conn, "chaos")
    log.info("chaos disabled", actor=actor)
    return _state(row)
