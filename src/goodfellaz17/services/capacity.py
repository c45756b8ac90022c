"""Capacity planning: healthy capacity against the backlog, per backend.

Tasks of an order go only to healthy nodes of the order's backend, so each
backend is its own pipe; they drain in parallel, and the backlog's ETA is the
slowest backend's. Estimates are conservative: a new order is assumed to
queue behind the whole backlog of its backend (fair queueing usually does
better), and with no live worker nothing moves, so no ETA.
"""

from __future__ import annotations

from dataclasses import dataclass

from goodfellaz17.backends.base import BACKEND_NAMES
from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.domain.estimates import eta_at_capacity, fits_within
from goodfellaz17.errors import InvalidInput
from goodfellaz17.settings import Settings

NEW_ORDER_QUANTITY = 15_000
NEW_ORDER_DEADLINE_SECONDS = 2 * 3600.0


@dataclass(frozen=True, slots=True)
class BackendCapacity:
    backend: str
    healthy_nodes: int
    total_nodes: int
    healthy_units_per_hour: int
    pending_units: int
    retrying_units: int
    executing_units: int
    backlog_units: int  # pending + retrying
    backlog_eta_seconds: float | None


@dataclass(frozen=True, slots=True)
class Capacity:
    """Every backend's figures summed, and whether a new order would fit."""

    healthy_nodes: int
    total_nodes: int
    healthy_units_per_hour: int
    live_workers: int
    pending_units: int
    retrying_units: int
    executing_units: int
    backlog_units: int
    backlog_eta_seconds: float | None  # the slowest backend's; None if one cannot move
    new_order_quantity: int
    new_order_backend: str
    new_order_eta_seconds: float | None
    new_order_fits_within_2h: bool
    backends: list[BackendCapacity]


def _backend_capacity(row: Row, workers_alive: bool) -> BackendCapacity:
    backlog = int(row["pending_units"] + row["retrying_units"])
    units_per_hour = int(row["healthy_units_per_hour"]) if workers_alive else 0
    return BackendCapacity(
        backend=row["backend"],
        healthy_nodes=int(row["healthy_nodes"]),
        total_nodes=int(row["total_nodes"]),
        healthy_units_per_hour=int(row["healthy_units_per_hour"]),
        pending_units=int(row["pending_units"]),
        retrying_units=int(row["retrying_units"]),
        executing_units=int(row["executing_units"]),
        backlog_units=backlog,
        backlog_eta_seconds=eta_at_capacity(backlog, units_per_hour),
    )


async def capacity(
    repo: Repository,
    settings: Settings,
    *,
    quantity: int = NEW_ORDER_QUANTITY,
    backend: str = "simulated",
) -> Capacity:
    if backend not in BACKEND_NAMES:
        raise InvalidInput(f"backend must be one of: {', '.join(BACKEND_NAMES)}", field="backend")
    if not 1 <= quantity <= settings.max_order_quantity:
        raise InvalidInput(
            f"quantity must be between 1 and {settings.max_order_quantity}", field="quantity"
        )
    totals = await repo.worker_totals(stale_after_seconds=settings.worker_stale_after_seconds)
    live_workers = int(totals["alive"])
    rows = await repo.capacity_by_backend()
    backends = [_backend_capacity(r, live_workers > 0) for r in rows]
    etas = [b.backlog_eta_seconds for b in backends if b.backlog_units > 0]
    known = [eta for eta in etas if eta is not None]
    backlog_eta = max(known, default=0.0) if len(known) == len(etas) else None
    mine = next((b for b in backends if b.backend == backend), None)
    ahead = mine.backlog_units if mine else 0
    units_per_hour = mine.healthy_units_per_hour if mine and live_workers else 0
    new_eta = eta_at_capacity(ahead + quantity, units_per_hour)
    return Capacity(
        healthy_nodes=sum(b.healthy_nodes for b in backends),
        total_nodes=sum(b.total_nodes for b in backends),
        healthy_units_per_hour=sum(b.healthy_units_per_hour for b in backends),
        live_workers=live_workers,
        pending_units=sum(b.pending_units for b in backends),
        retrying_units=sum(b.retrying_units for b in backends),
        executing_units=sum(b.executing_units for b in backends),
        backlog_units=sum(b.backlog_units for b in backends),
        backlog_eta_seconds=backlog_eta,
        new_order_quantity=quantity,
        new_order_backend=backend,
        new_order_eta_seconds=new_eta,
        new_order_fits_within_2h=fits_within(new_eta, NEW_ORDER_DEADLINE_SECONDS),
        backends=backends,
    )
