"""Nodes: delivery capacity and its circuit breaker (db/queries.sql, nodes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase, Row


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    node_id: int
    delivered_units: int
    failures: int
    had_success: bool
    trailing_failures: int
    last_error: str | None


class NodeQueries(RepositoryBase):
    """One method per `node_*` query."""

    async def node_record_outcomes(
        self,
        conn: AsyncConn,
        outcomes: Sequence[NodeOutcome],
        *,
        threshold: int,
        cooldown_seconds: float,
    ) -> None:
        await conn.execute(
            self.q["node_record_outcomes"],
            {
                "node_ids": [o.node_id for o in outcomes],
                "delivered_units": [o.delivered_units for o in outcomes],
                "failures": [o.failures for o in outcomes],
                "had_success": [o.had_success for o in outcomes],
                "trailing_failures": [o.trailing_failures for o in outcomes],
                "last_errors": [o.last_error for o in outcomes],
                "threshold": threshold,
                "cooldown_seconds": cooldown_seconds,
            },
        )

    async def node_create(
        self,
        *,
        provider: str,
        node_identifier: str,
        endpoint: str | None,
        capacity_per_hour: int,
        conn: AsyncConn | None = None,
    ) -> Row | None:
        return await self._fetchone(
            "node_create",
            {
                "provider": provider,
                "node_identifier": node_identifier,
                "endpoint": endpoint,
                "capacity_per_hour": capacity_per_hour,
            },
            conn,
        )

    async def node_upsert(
        self, provider: str, node_identifier: str, *, capacity_per_hour: int
    ) -> Row | None:
        return await self._fetchone(
            "node_upsert",
            {
                "provider": provider,
                "node_identifier": node_identifier,
                "capacity_per_hour": capacity_per_hour,
            },
        )

    async def node_list(self) -> list[DictRow]:
        return await self._fetchall("node_list")

    async def node_set_enabled(
        self, node_id: int, enabled: bool, conn: AsyncConn | None = None
    ) -> Row | None:
        return await self._fetchone(
            "node_set_enabled", {"node_id": node_id, "enabled": enabled}, conn
        )
