"""Orders: create, read, and the operator actions' statements (db/queries.sql, orders)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase, Row


class OrderQueries(RepositoryBase):
    """One method per `order_*` query."""

    async def order_create(
        self,
        *,
        quantity: int,
        target: str,
        backend: str,
        sizes: Sequence[int],
        idempotency_scope: str,
        idempotency_key: str | None,
        request_hash: str | None,
        fair_share_seconds: float,
        run_length: int,
    ) -> Row | None:
        """Insert the order and its tasks; None when the idempotency key exists
        in the scope."""
        return await self._fetchone(
            "order_create",
            {
                "quantity": quantity,
                "target": target,
                "backend": backend,
                "sizes": list(sizes),
                "idempotency_scope": idempotency_scope,
                "idempotency_key": idempotency_key,
                "request_hash": request_hash,
                "fair_share_seconds": fair_share_seconds,
                "run_length": run_length,
            },
        )

    async def order_get(self, order_id: uuid.UUID, conn: AsyncConn | None = None) -> Row | None:
        return await self._fetchone("order_get", {"order_id": order_id}, conn)

    async def order_get_by_idempotency_key(self, key: str, *, scope: str) -> Row | None:
        return await self._fetchone(
            "order_get_by_idempotency_key", {"idempotency_key": key, "idempotency_scope": scope}
        )

    async def order_list(
        self,
        *,
        status: str | None,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None,
    ) -> list[DictRow]:
        return await self._fetchall(
            "order_list",
            {
                "status": status,
                "limit": limit,
                "before_created_at": before[0] if before else None,
                "before_id": before[1] if before else None,
            },
        )

    async def order_task_summary(
        self, order_id: uuid.UUID, conn: AsyncConn | None = None
    ) -> list[DictRow]:
        return await self._fetchall("order_task_summary", {"order_id": order_id}, conn)

    async def order_tasks_list(self, order_id: uuid.UUID) -> list[DictRow]:
        return await self._fetchall("order_tasks_list", {"order_id": order_id})

    async def order_progress(
        self, order_id: uuid.UUID, *, window_seconds: float, conn: AsyncConn | None = None
    ) -> Row | None:
        return await self._fetchone(
            "order_progress", {"order_id": order_id, "window_seconds": window_seconds}, conn
        )

    async def order_failed_tasks(self, order_id: uuid.UUID, *, limit: int) -> list[DictRow]:
        return await self._fetchall("order_failed_tasks", {"order_id": order_id, "limit": limit})

    async def order_lock_for_action(self, conn: AsyncConn, order_id: uuid.UUID) -> Row | None:
        """Lock the order's open tasks; the order with open task counts, or None."""
        return await self._fetchone("order_lock_for_action", {"order_id": order_id}, conn)

    async def order_tasks_retry_now(self, conn: AsyncConn, order_id: uuid.UUID) -> list[DictRow]:
        return await self._fetchall("order_tasks_retry_now", {"order_id": order_id}, conn)

    async def order_tasks_drain_dead_letters(
        self, conn: AsyncConn, order_id: uuid.UUID
    ) -> list[DictRow]:
        return await self._fetchall("order_tasks_drain_dead_letters", {"order_id": order_id}, conn)

    async def order_force_complete(self, conn: AsyncConn, order_id: uuid.UUID) -> bool:
        return (
            await self._fetchone("order_force_complete", {"order_id": order_id}, conn) is not None
        )

    async def order_tasks_cancel_open(
        self, conn: AsyncConn, order_id: uuid.UUID, *, reason: str, include_executing: bool
    ) -> list[DictRow]:
        return await self._fetchall(
            "order_tasks_cancel_open",
            {"order_id": order_id, "reason": reason, "include_executing": include_executing},
            conn,
        )
