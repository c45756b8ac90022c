"""Storage: day partitions made ahead and dropped by retention, the archive,
and the small tables' retention (db/queries.sql, storage)."""

from __future__ import annotations

from datetime import date

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase


class StorageQueries(RepositoryBase):
    """One method per `storage_*` query."""

    async def storage_leader_lock(self, conn: AsyncConn, *, lock_id: int) -> bool:
        row = await self._fetchone("storage_leader_lock", {"lock_id": lock_id}, conn)
        return bool(row and row["leader"])

    async def storage_lock_timeout(self, conn: AsyncConn, *, lock_timeout: str) -> None:
        await self._fetchall("storage_lock_timeout", {"timeout": lock_timeout}, conn)

    async def storage_ensure_days(self, conn: AsyncConn, *, from_day: date, to_day: date) -> int:
        row = await self._fetchone(
            "storage_ensure_days", {"from_day": from_day, "to_day": to_day}, conn
        )
        return int(row["created"]) if row else 0

    async def storage_day_list(
        self, *, retention_days: int, conn: AsyncConn | None = None
    ) -> list[DictRow]:
        return await self._fetchall("storage_day_list", {"retention_days": retention_days}, conn)

    async def storage_drop_day(
        self, conn: AsyncConn, *, day: date, retention_days: int, require_archive: bool
    ) -> bool:
        """True when the day was dropped; False when something keeps it now."""
        row = await self._fetchone(
            "storage_drop_day",
            {"day": day, "retention_days": retention_days, "require_archive": require_archive},
            conn,
        )
        return row is not None

    async def storage_day_orders(self, conn: AsyncConn, *, day: date) -> list[DictRow]:
        return await self._fetchall("storage_day_orders", {"day": day}, conn)

    async def storage_day_mark_archived(self, conn: AsyncConn, *, day: date) -> None:
        await self._fetchall("storage_day_mark_archived", {"day": day}, conn)

    async def storage_purge_default(
        self, conn: AsyncConn, *, retention_days: int, limit: int
    ) -> DictRow:
        row = await self._fetchone(
            "storage_purge_default", {"retention_days": retention_days, "limit": limit}, conn
        )
        assert row is not None, "an aggregate always returns a row"
        return row

    async def storage_purge_logs(
        self, conn: AsyncConn, *, retention_days: int, limit: int
    ) -> DictRow:
        row = await self._fetchone(
            "storage_purge_logs", {"retention_days": retention_days, "limit": limit}, conn
        )
        assert row is not None, "an aggregate always returns a row"
        return row
