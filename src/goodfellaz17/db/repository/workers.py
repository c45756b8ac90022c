"""Workers and chaos injection: the fleet's heartbeats and the one chaos row
(db/queries.sql, workers and chaos)."""

from __future__ import annotations

from typing import Any

from psycopg.rows import DictRow

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.repository.base import RepositoryBase, Row


class WorkerQueries(RepositoryBase):
    """One method per `worker_*`, `chaos_*` query, and the wake-up NOTIFY."""

    async def worker_register(
        self, conn: AsyncConn, worker_id: str, hostname: str, pid: int
    ) -> None:
        await conn.execute(
            self.q["worker_register"], {"worker_id": worker_id, "hostname": hostname, "pid": pid}
        )

    async def worker_heartbeat(self, conn: AsyncConn, **values: Any) -> None:
        await conn.execute(self.q["worker_heartbeat"], values)

    async def worker_list(self, *, stale_after_seconds: float, limit: int) -> list[DictRow]:
        return await self._fetchall(
            "worker_list", {"stale_after_seconds": stale_after_seconds, "limit": limit}
        )

    async def worker_totals(self, *, stale_after_seconds: float) -> Row:
        row = await self._fetchone("worker_totals", {"stale_after_seconds": stale_after_seconds})
        assert row is not None, "an aggregate always returns a row"
        return row

    async def chaos_get(self, conn: AsyncConn | None = None) -> Row:
        row = await self._fetchone("chaos_get", None, conn)
        assert row is not None, "chaos_settings row is created by the migrations"
        return row

    async def chaos_enable(
        self,
        conn: AsyncConn,
        *,
        worker_paused: bool,
        failure_rate: float,
        latency_ms: int,
        ttl_seconds: float,
        actor: str,
    ) -> Row:
        row = await self._fetchone(
            "chaos_enable",
            {
                "worker_paused": worker_paused,
                "failure_rate": failure_rate,
                "latency_ms": latency_ms,
                "ttl_seconds": ttl_seconds,
                "actor": actor,
            },
            conn,
        )
        assert row is not None, "chaos_settings row is created by the migrations"
        return row

    async def chaos_disable(self, conn: AsyncConn, *, actor: str) -> Row:
        row = await self._fetchone("chaos_disable", {"actor": actor}, conn)
        assert row is not None, "chaos_settings row is created by the migrations"
        return row

    async def tasks_due_notify(self, conn: AsyncConn, payload: str) -> None:
        await conn.execute(self.q["tasks_due_notify"], {"payload": payload})
