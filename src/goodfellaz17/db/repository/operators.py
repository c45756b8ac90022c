"""What operators look at and leave behind: the audit trail, capacity, the
metrics' gauges and the console's overview (db/queries.sql, operator
actions, capacity, metrics, console)."""

from __future__ import annotations

import uuid

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase, Row


class OperatorQueries(RepositoryBase):
    """The read-mostly statements behind the admin API, /metrics and the console."""

    async def operator_action_record(
        self,
        conn: AsyncConn,
        *,
        action: str,
        order_id: uuid.UUID | None,
        actor: str,
        details: Jsonb,
    ) -> Row:
        row = await self._fetchone(
            "operator_action_record",
            {"action": action, "order_id": order_id, "actor": actor, "details": details},
            conn,
        )
        assert row is not None
        return row

    async def capacity_by_backend(self) -> list[DictRow]:
        return await self._fetchall("capacity_by_backend")

    async def metrics_gauges(self, *, stale_after_seconds: float, connect_timeout: float) -> Row:
        """The scrape-time gauges, in one cheap statement (see metrics_gauges)."""
        async with self.pool.connection(timeout=connect_timeout) as conn:
            row = await self._fetchone(
                "metrics_gauges", {"stale_after_seconds": stale_after_seconds}, conn
            )
        assert row is not None
        return row

    async def console_overview(self, *, stale_after_seconds: float) -> Row:
        row = await self._fetchone("console_overview", {"stale_after_seconds": stale_after_seconds})
        assert row is not None, "an aggregate always returns a row"
        return row

    async def task_delivered_per_minute(self, *, minutes: int) -> list[DictRow]:
        return await self._fetchall("task_delivered_per_minute", {"minutes": minutes})

    async def operator_action_list_for_order(
        self, order_id: uuid.UUID, *, limit: int
    ) -> list[DictRow]:
        return await self._fetchall(
            "operator_action_list_for_order", {"order_id": order_id, "limit": limit}
        )
