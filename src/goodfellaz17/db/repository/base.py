"""The repository's plumbing: the pool, the named queries and the two fetch
helpers every subject's queries use. Never holds policy or SQL text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, LiteralString

from psycopg import pq
from psycopg.rows import DictRow
from psycopg_pool import AsyncConnectionPool

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.queries import load_queries
from goodfellaz17.db.transient import retrying_transient

Row = dict[str, Any]


class RepositoryBase:
    """The pool and the named queries; subclasses add one method per query."""

    def __init__(self, pool: AsyncConnectionPool[AsyncConn]) -> None:
        self.pool = pool
        self.q = load_queries()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        async with self.pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def _fetchall(
        self, name: str, params: dict[str, Any] | None = None, conn: AsyncConn | None = None
    ) -> list[DictRow]:
        query: LiteralString = self.q[name]
        if conn is not None:
            cur = await conn.execute(query, params)
            return await cur.fetchall()
        async with self.pool.connection() as c:
            cur = await c.execute(query, params)
            return await cur.fetchall()

    async def _fetchall_again_if_moved(
        self, name: str, params: dict[str, Any], conn: AsyncConn
    ) -> list[DictRow]:
        """One statement on an autocommit connection, run again when a row it
        waited for moved to another partition meanwhile (db/transient.py)."""
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            return await self._fetchall(name, params, conn)  # the caller's transaction
        async for attempt in retrying_transient():
            with attempt:
                return await self._fetchall(name, params, conn)
        raise AssertionError("retrying_transient reraises")  # pragma: no cover

    async def _fetchone(
        self, name: str, params: dict[str, Any] | None = None, conn: AsyncConn | None = None
    ) -> DictRow | None:
        rows = await self._fetchall(name, params, conn)
        return rows[0] if rows else None
