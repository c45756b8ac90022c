"""Console sessions: kept server-side so a logout, an idle timeout or the
absolute lifetime ends them (db/queries.sql, console sessions)."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from goodfellaz17.db.repository.base import RepositoryBase


class SessionQueries(RepositoryBase):
    """One method per `console_session_*` query."""

    async def console_session_open(
        self, *, id_hash: str, key_binding: str, idle_seconds: float, max_seconds: float
    ) -> None:
        await self._fetchone(
            "console_session_open",
            {
                "id_hash": id_hash,
                "key_binding": key_binding,
                "idle_seconds": idle_seconds,
                "max_seconds": max_seconds,
            },
        )

    async def console_session_get(
        self,
        *,
        id_hash: str,
        idle_seconds: float,
        max_seconds: float,
        touch: bool,
        touch_after_seconds: float,
    ) -> str | None:
        """The session's key binding, or None when it is not live."""
        row = await self._fetchone(
            "console_session_get",
            {
                "id_hash": id_hash,
                "idle_seconds": idle_seconds,
                "max_seconds": max_seconds,
                "touch": touch,
                "touch_after_seconds": touch_after_seconds,
            },
        )
        return None if row is None else str(row["key_binding"])

    async def console_session_delete(self, *, id_hash: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(self.q["console_session_delete"], {"id_hash": id_hash})

    async def console_session_flash_set(self, *, id_hash: str, path: str, message: str) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                self.q["console_session_flash_set"],
                {"id_hash": id_hash, "flash": Jsonb({"path": path, "message": message})},
            )

    async def console_session_flash_take(self, *, id_hash: str, path: str) -> str | None:
        row = await self._fetchone("console_session_flash_take", {"id_hash": id_hash, "path": path})
        return None if row is None else str(row["message"])
