"""Invariants: the checks, their log, and the orphans an operator sees
(db/queries.sql, invariants)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase


class InvariantQueries(RepositoryBase):
    """One method per `invariant_*` query."""

    async def invariant_order_checks(self, conn: AsyncConn, order_id: uuid.UUID) -> list[DictRow]:
        return await self._fetchall("invariant_order_checks", {"order_id": order_id}, conn)

    async def invariant_global_summary(
        self, conn: AsyncConn, *, recheck: int, max_violations: int = 1000
    ) -> DictRow:
        row = await self._fetchone(
            "invariant_global_summary",
            {"recheck": recheck, "max_violations": max_violations},
            conn,
        )
        assert row is not None
        return row

    async def invariant_log_order(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_order", values, conn)
        assert row is not None
        ts: datetime = row["check_timestamp"]
        return ts

    async def invariant_log_global(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_global", values, conn)
        assert row is not None
        ts: datetime = row["check_timestamp"]
        return ts

    async def invariant_orphans(self, conn: AsyncConn, *, limit: int) -> list[DictRow]:
        return await self._fetchall("invariant_orphans", {"limit": limit}, conn)

    async def invariant_log_orphans(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_orphans", values, conn)
        assert row is not None
        ts: datetime = row["check_timestamp"]
        return ts

    async def invariant_global_lock(self, conn: AsyncConn, *, lock_id: int) -> None:
        await conn.execute(self.q["invariant_global_lock"], {"lock_id": lock_id})

    async def invariant_global_latest(
        self, conn: AsyncConn, *, max_age_seconds: float
    ) -> DictRow | None:
        return await self._fetchone(
            "invariant_global_latest", {"max_age_seconds": max_age_seconds}, conn
        )
