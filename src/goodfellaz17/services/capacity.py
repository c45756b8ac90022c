"""Capacity planning: healthy capacity against the backlog, per backend.

Tasks of an order go only to healthy nodes of the order's backend, so each
backend is its own pipe; they drain in parallel, and the backlog's ETA is the
slowest backend's. Estimates are conservative: a new order is assumed to
queue behind the whole backlog of its backend (fair queueing usually does
better), and with no live worker nothing moves, so no ETA.
"""

from __future__ import annotations

from typing import Any

from goodfellaz17.backends.base import BACKEND_NAMES
from goodfellaz17.db.repository import Repository
from goodfellaz17.domain.estimates import eta_at_capacity, fits_within
from goodfellaz17.errors import InvalidInput
from goodfellaz17.settings import Settings

NEW_ORDER_QUANTITY = 15_000
NEW_ORDER_DEADLINE_SECONDS = 2 * 3600.0


def _backend_view(row: dict[str, Any], workers_alive: bool) -> dict[str, Any]:
    backlog = int(row["pending_units"] + row["retrying_units"])
    units_per_hour = int(row["healthy_units_per_hour"]) if workers_alive else 0
    return {
        "backend": row["backend"],
        "healthyNodes": int(row["healthy_nodes"]),
        "totalNodes": int(row["total_nodes"]),
        "healthyUnitsPerHour": int(row["healthy_units_per_hour"]),
        "pendingUnits": int(row["pending_units"]),
        "retryingUnits": int(row["retrying_units"]),
        "executingUnits": int(row["executing_units"]),
        "backlogUnits": backlog,
        "backlogEtaSeconds": eta_at_capacity(backlog, units_per_hour),
    }


async def capacity(
    repo: Repository,
    settings: Settings,
    *,
    quantity: int = NEW_ORDER_QUANTITY,
    backend: str = "simulated",
) -> dict[str, Any]:
    if backend not in BACKEND_NAMES:
        raise InvalidInput(f"backend must be one of: {', '.join(BACKEND_NAMES)}", field="backend")
    if not 1 <= quantity <= settings.max_order_quantity:
        raise InvalidInput(
            f"quantity must be between 1 and {settings.max_order_quantity}", field="quantity"
        )
    totals = await repo.worker_totals(stale_after_seconds=settings.worker_stale_after_seconds)
    live_workers = int(totals["alive"])
    rows = await repo.capacity_by_backend()
    backends = [_backend_view(r, live_workers > 0) for r in rows]
    etas = [b["backlogEtaSeconds"] for b in backends if b["backlogUnits"] > 0]
    backlog_eta = None if None in etas else max(etas, default=0.0)
    mine = next((b for b in backends if b["backend"] == backend), None)
    ahead = mine["backlogUnits"] if mine else 0
    units_per_hour = mine["healthyUnitsPerHour"] if mine and live_workers else 0
    new_eta = eta_at_capacity(ahead + quantity, units_per_hour)
    return {
        "healthyNodes": sum(b["healthyNodes"] for b in backends),
        "totalNodes": sum(b["totalNodes"] for b in backends),
        "healthyUnitsPerHour": sum(b["healthyUnitsPerHour"] for b in backends),
        "liveWorkers": live_workers,
        "pendingUnits": sum(b["pendingUnits"] for b in backends),
        "retryingUnits": sum(b["retryingUnits"] for b in backends),
        "executingUnits": sum(b["executingUnits"] for b in backends),
        "backlogUnits": sum(b["backlogUnits"] for b in backends),
        "backlogEtaSeconds": backlog_eta,
        "newOrderQuantity": quantity,
        "newOrderBackend": backend,
        "newOrderEtaSeconds": new_eta,
        "newOrderFitsWithin2h": fits_within(new_eta, NEW_ORDER_DEADLINE_SECONDS),
        "backends": backends,
    }
