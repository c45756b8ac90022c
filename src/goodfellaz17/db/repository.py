"""One typed method per named query: the only place the engine runs SQL.

Methods take a connection or use the pool; they never decide policy (that is
the worker's and the services' job) and never loop over tasks issuing one
statement each.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from psycopg.rows import DictRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from goodfellaz17.db.pool import AsyncConn
from goodfellaz17.db.queries import load_queries

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    id: uuid.UUID
    order_id: uuid.UUID
    seq: int
    quantity: int
    attempt: int
    fencing_token: int
    queue_position: float
    target: str
    backend: str
    node_id: int
    node_identifier: str
    endpoint: str | None
    capacity_per_hour: int


@dataclass(frozen=True, slots=True)
class TaskFailure:
    task_id: uuid.UUID
    fencing_token: int
    error: str
    permanent: bool
    delay_seconds: float


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    node_id: int
    delivered_units: int
    failures: int
    had_success: bool
    trailing_failures: int
    last_error: str | None


class Repository:
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

    async def _fetchone(
        self, name: str, params: dict[str, Any] | None = None, conn: AsyncConn | None = None
    ) -> DictRow | None:
        rows = await self._fetchall(name, params, conn)
        return rows[0] if rows else None

    # ------------------------------------------------------------ orders

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

    # ------------------------------------------------------------ tasks

    async def task_claim_batch(
        self,
        conn: AsyncConn,
        *,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        from_position: float = float("-inf"),
        node_offset: int = 0,
    ) -> list[ClaimedTask]:
        rows = await self._fetchall(
            "task_claim_batch",
            {
                "worker_id": worker_id,
                "limit": limit,
                "lease_seconds": lease_seconds,
                "from_position": from_position,
                "node_offset": node_offset,
            },
            conn,
        )
        return [
            ClaimedTask(
                id=r["id"],
                order_id=r["order_id"],
                seq=r["seq"],
                quantity=r["quantity"],
                attempt=r["attempts"],
                fencing_token=r["fencing_token"],
                queue_position=r["queue_position"],
                target=r["target"],
                backend=r["backend"],
                node_id=r["node_id"],
                node_identifier=r["node_identifier"],
                endpoint=r["endpoint"],
                capacity_per_hour=r["capacity_per_hour"],
            )
            for r in rows
        ]

    async def task_next_retry_at(self, conn: AsyncConn) -> tuple[datetime | None, datetime]:
        row = await self._fetchone("task_next_retry_at", None, conn)
        assert row is not None
        return row["next_retry_at"], row["db_now"]

    async def task_record_outcomes(
        self,
        conn: AsyncConn,
        successes: Sequence[tuple[uuid.UUID, int]],
        failures: Sequence[TaskFailure],
        *,
        max_attempts: int,
    ) -> list[DictRow]:
        """Fenced batch of completions and failures in one statement; returns
        id, order_id, new status, attempts, quantity of the tasks that changed."""
        return await self._fetchall(
            "task_record_outcomes",
            {
                "done_ids": [s[0] for s in successes],
                "done_tokens": [s[1] for s in successes],
                "failed_ids": [f.task_id for f in failures],
                "failed_tokens": [f.fencing_token for f in failures],
                "errors": [f.error for f in failures],
                "permanent": [f.permanent for f in failures],
                "delays": [f.delay_seconds for f in failures],
                "max_attempts": max_attempts,
            },
            conn,
        )

    async def task_release_many(
        self, conn: AsyncConn, claims: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]:
        rows = await self._fetchall(
            "task_release_many",
            {"ids": [c[0] for c in claims], "tokens": [c[1] for c in claims]},
            conn,
        )
        return {r["id"] for r in rows}

    async def task_extend_leases(
        self, conn: AsyncConn, claims: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
    ) -> set[uuid.UUID]:
        rows = await self._fetchall(
            "task_extend_leases",
            {
                "ids": [c[0] for c in claims],
                "tokens": [c[1] for c in claims],
                "lease_seconds": lease_seconds,
            },
            conn,
        )
        return {r["id"] for r in rows}

    async def task_rescue_orphans(
        self,
        conn: AsyncConn,
        *,
        limit: int,
        max_attempts: int,
        backoff_base: float,
        backoff_max: float,
    ) -> list[DictRow]:
        return await self._fetchall(
            "task_rescue_orphans",
            {
                "limit": limit,
                "max_attempts": max_attempts,
                "backoff_base": backoff_base,
                "backoff_max": backoff_max,
            },
            conn,
        )

    # ------------------------------------------------------------ nodes

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

    # ------------------------------------------------------------ workers

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

    # ------------------------------------------------------------ invariants

    async def invariant_order_checks(self, conn: AsyncConn, order_id: uuid.UUID) -> list[DictRow]:
        return await self._fetchall("invariant_order_checks", {"order_id": order_id}, conn)

    async def invariant_global_summary(
        self, conn: AsyncConn, max_violations: int = 1000
    ) -> DictRow:
        row = await self._fetchone(
            "invariant_global_summary", {"max_violations": max_violations}, conn
        )
        assert row is not None
        return row

    async def invariant_log_order(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_order", values, conn)
        assert row is not None
        ts: datetime = row["check_timestamp"]
        return ts

    async def invariant_log_orphans(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_orphans", values, conn)
        assert row is not None
        ts: datetime = row["check_timestamp"]
        return ts

    async def invariant_log_global(self, conn: AsyncConn, **values: Any) -> datetime:
        row = await self._fetchone("invariant_log_global", values, conn)
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

    async def invariant_orphans(self, conn: AsyncConn, *, limit: int) -> list[DictRow]:
        return await self._fetchall("invariant_orphans", {"limit": limit}, conn)

    # ------------------------------------------------------------ chaos

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

    # ------------------------------------------------------------ operator actions

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

    # ------------------------------------------------------------ capacity

    async def capacity_by_backend(self) -> list[DictRow]:
        return await self._fetchall("capacity_by_backend")

    # ------------------------------------------------------------ metrics

    async def metrics_gauges(self, *, stale_after_seconds: float, connect_timeout: float) -> Row:
        """The scrape-time gauges, in one cheap statement (see metrics_gauges)."""
        async with self.pool.connection(timeout=connect_timeout) as conn:
            row = await self._fetchone(
                "metrics_gauges", {"stale_after_seconds": stale_after_seconds}, conn
            )
        assert row is not None
        return row

    # ------------------------------------------------------------ console

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

    # ------------------------------------------------------------ console sessions

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
