"""The benchmark's PostgreSQL: one embedded server, its databases, bulk
loading in the product's own shapes, and CPU accounting of its processes.

The server keeps pgserver's defaults. Durability is never traded for speed
here: `check_durability` refuses to measure on a server with fsync or
synchronous_commit off, because every figure would then be meaningless
against production.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg

from goodfellaz17.db.migrate import apply_migrations
from goodfellaz17.domain.plan import plan_task_sizes
from goodfellaz17.domain.queue import FAIR_SHARE_SECONDS

PRODUCT_DB = "bench"
PEER_DB = "bench_peer"
SCALE_DB = "bench_scale"

# Settings that decide what a figure means; recorded with the results.
REPORTED_SETTINGS = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "work_mem",
    "max_connections",
    "max_wal_size",
    "checkpoint_timeout",
    "autovacuum",
    "autovacuum_naptime",
    "jit",
)


class DurabilityOff(RuntimeError):
    """The server would not give production-like figures."""


class BenchServer:
    """An embedded PostgreSQL in its own folder, stopped on `stop()`."""

    def __init__(self, root: Path | None = None, *, keep: bool = False) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="gf-bench-")) if root is None else root
        self.pgdata = self.root / "pgdata"
        self.keep = keep
        self._attached = False
        self._server: Any = None

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver

            logging.getLogger("pgserver").setLevel(logging.WARNING)
            self.root.mkdir(parents=True, exist_ok=True)
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")

    @classmethod
    def attach(cls, handle: Any) -> BenchServer:
        """Use a pgserver server started elsewhere (the test suite's); its
        owner stops it."""
        server = cls(Path(handle.pgdata).parent, keep=True)
        server._own_root = False
        server._server = handle
        server._attached = True
        return server

    def stop(self) -> None:
        if self._attached:
            return
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def base_url(self) -> str:
        uri: str = self._server.get_uri()
        return uri

    @property
    def socket_dir(self) -> str:
        """pgserver listens on a Unix socket only; its folder is the URI's host."""
        from urllib.parse import parse_qs, urlsplit

        hosts = parse_qs(urlsplit(self.base_url).query).get("host", [])
        return hosts[0] if hosts else str(self.pgdata)

    @property
    def bin_dir(self) -> Path:
        import pgserver

        return Path(pgserver.__file__).parent / "pginstall" / "bin"

    def url(self, dbname: str) -> str:
        head, _, query = self.base_url.partition("?")
        root = head.rsplit("/", 1)[0]
        return f"{root}/{dbname}?{query}" if query else f"{root}/{dbname}"

    def postmaster_pid(self) -> int:
        pgdata = Path(self._server.pgdata) if self._server is not None else self.pgdata
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])

    def recreate_database(self, name: str) -> str:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settings(self) -> dict[str, str]:
        with psycopg.connect(self.base_url, autocommit=True) as conn:
            return {
                name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in REPORTED_SETTINGS
            }


def check_durability(settings: dict[str, str]) -> None:
    for name in ("fsync", "synchronous_commit"):
        if settings.get(name) != "on":
            raise DurabilityOff(f"{name} is {settings.get(name)!r}: benchmarks need it on")


def create_product_database(server: BenchServer, name: str = PRODUCT_DB) -> str:
    url = server.recreate_database(name)
    apply_migrations(url)
    return url


def reset_product(conn: psycopg.Connection[Any]) -> None:
    """Empty the queue (new, empty relations: no bloat carried between runs),
    then vacuum, analyze and checkpoint so every run starts alike."""
    conn.execute(
        "TRUNCATE orders, order_tasks, workers, invariant_check_log, operator_actions CASCADE"
    )
    settle(conn, ("orders", "order_tasks", "workers", "nodes", "chaos_settings"))


def settle(conn: psycopg.Connection[Any], tables: Iterable[str]) -> None:
    """VACUUM ANALYZE the tables and CHECKPOINT: the same starting line for
    every system measured (needs an autocommit connection)."""
    conn.execute("VACUUM ANALYZE " + ", ".join(tables))
    conn.execute("CHECKPOINT")


# ---------------------------------------------------------------- loading

_LOAD_QUEUED = """
WITH o AS (
    INSERT INTO orders (quantity, target, backend, task_count, created_at)
    SELECT %(quantity)s, %(prefix)s || g, 'simulated', cardinality(%(sizes)s::int[]),
           clock_timestamp()
    FROM generate_series(1, %(orders)s) AS g
    RETURNING id, created_at, order_queue_start(created_at) AS start
)
INSERT INTO order_tasks (order_id, seq, quantity, queue_position, created_at)
SELECT o.id, s.ord - 1, s.qty,
       order_task_position(o.start, o.id, (s.ord - 1)::int, %(fair_share)s),
       o.created_at
FROM o, unnest(%(sizes)s::int[]) WITH ORDINALITY AS s (qty, ord)
"""


@dataclass(frozen=True, slots=True)
class Load:
    orders: int
    tasks: int
    units: int


def orders_for_tasks(tasks: int, quantity: int, task_size: int) -> int:
    return max(1, math.ceil(tasks / len(plan_task_sizes(quantity, task_size))))


def load_queued_orders(
    conn: psycopg.Connection[Any],
    orders: int,
    *,
    quantity: int,
    task_size: int,
    prefix: str = "bench-target-",
) -> Load:
    """Insert `orders` PENDING orders and their tasks in one statement, split
    exactly as the product splits them (plan_task_sizes) and queued exactly
    as order_create queues them (queue_position, FAIR_SHARE_SECONDS)."""
    sizes = plan_task_sizes(quantity, task_size)
    conn.execute(
        _LOAD_QUEUED,
        {
            "quantity": quantity,
            "prefix": prefix,
            "sizes": sizes,
            "orders": orders,
            "fair_share": FAIR_SHARE_SECONDS,
        },
    )
    return Load(orders=orders, tasks=orders * len(sizes), units=orders * quantity)


# A settled production database: mostly delivered orders, some half done
# with a task backing off, some with dead letters waiting for an operator,
# some not started. Loaded with triggers and foreign-key checks off
# (session_replication_role = replica), so the orders' counters are written
# here as the accounting triggers would have kept them; the invariant check
# run on this data then verifies the loader as well.
_LOAD_SETTLED = """
WITH src AS MATERIALIZED (
    SELECT g, gen_random_uuid() AS id,
           now() - interval '7 days' + g * interval '10 ms' AS created_at,
           CASE WHEN g %% 100 < %(done_pct)s THEN 'done'
                WHEN g %% 100 < %(done_pct)s + 5 THEN 'half'
                WHEN g %% 100 < %(done_pct)s + 8 THEN 'dead'
                ELSE 'new' END AS kind
    FROM generate_series(1, %(orders)s) AS g
), sums AS (
    SELECT (SELECT sum(x) FROM unnest((%(sizes)s::int[])[1:19]) x) AS half_done,
           (SELECT sum(x) FROM unnest((%(sizes)s::int[])[1:2]) x) AS dead
), o AS (
    INSERT INTO orders (id, status, quantity, delivered, failed_permanent_plays, target, backend,
                        task_count, created_at, updated_at, started_at, completed_at)
    SELECT src.id,
           CASE src.kind WHEN 'done' THEN 'COMPLETED' WHEN 'new' THEN 'PENDING'
                ELSE 'PROCESSING' END,
           %(quantity)s,
           CASE src.kind WHEN 'done' THEN %(quantity)s WHEN 'half' THEN sums.half_done
                WHEN 'dead' THEN %(quantity)s - sums.dead ELSE 0 END,
           CASE src.kind WHEN 'dead' THEN sums.dead ELSE 0 END,
           'bench-scale-' || src.g, 'simulated', cardinality(%(sizes)s::int[]),
           src.created_at, src.created_at + interval '1 minute',
           CASE WHEN src.kind <> 'new' THEN src.created_at + interval '30 seconds' END,
           CASE WHEN src.kind = 'done' THEN src.created_at + interval '1 minute' END
    FROM src, sums
)
INSERT INTO order_tasks (order_id, seq, quantity, status, attempts, retry_after, last_error,
                         executed_at, queue_position, started_at, created_at)
SELECT src.id, s.ord - 1, s.qty, st.status,
       CASE st.status WHEN 'PENDING' THEN 0 WHEN 'COMPLETED' THEN 1 ELSE 5 END,
       CASE WHEN st.status = 'FAILED_RETRYING' THEN now() + interval '1 hour' END,
       CASE WHEN st.status LIKE 'FAILED%%' THEN 'simulated failure on node sim-local-1' END,
       CASE WHEN st.status <> 'PENDING' THEN src.created_at + interval '1 minute' END,
       order_task_position(extract(epoch FROM src.created_at), src.id, (s.ord - 1)::int,
                           %(fair_share)s),
       CASE WHEN st.status <> 'PENDING' THEN src.created_at + interval '30 seconds' END,
       src.created_at
FROM src
CROSS JOIN unnest(%(sizes)s::int[]) WITH ORDINALITY AS s (qty, ord)
CROSS JOIN LATERAL (SELECT CASE
    WHEN src.kind = 'done' THEN 'COMPLETED'
    WHEN src.kind = 'half' THEN CASE WHEN s.ord <= 19 THEN 'COMPLETED'
                                     WHEN s.ord = 20 THEN 'FAILED_RETRYING'
                                     ELSE 'PENDING' END
    WHEN src.kind = 'dead' THEN CASE WHEN s.ord <= 2 THEN 'FAILED_PERMANENT'
                                     ELSE 'COMPLETED' END
    ELSE 'PENDING' END AS status) AS st
"""


_TASK_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition,
       c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition
FROM pg_index i
LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
WHERE i.indrelid = 'order_tasks'::regclass
"""


def load_settled_orders(
    conn: psycopg.Connection[Any], orders: int, *, quantity: int, task_size: int
) -> Load:
    """Bulk-load a settled database (see _LOAD_SETTLED). The order_tasks
    indexes are dropped for the load and built again afterwards, exactly as
    the migrations define them (a build is much faster than a million
    random inserts into each index)."""
    sizes = plan_task_sizes(quantity, task_size)
    with conn.transaction():
        indexes = conn.execute(_TASK_INDEXES).fetchall()
        for name, _, constraint, _ in indexes:
            if constraint:
                conn.execute(f'ALTER TABLE order_tasks DROP CONSTRAINT "{constraint}"')
            else:
                conn.execute(f"DROP INDEX {name}")
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            _LOAD_SETTLED,
            {
                "orders": orders,
                "quantity": quantity,
                "sizes": sizes,
                "done_pct": 90,
                "fair_share": FAIR_SHARE_SECONDS,
            },
        )
        conn.execute("SET LOCAL session_replication_role = origin")
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for _, definition, constraint, constraint_definition in indexes:
            if constraint:
                conn.execute(
                    f'ALTER TABLE order_tasks ADD CONSTRAINT "{constraint}" {constraint_definition}'
                )
            else:
                conn.execute(definition)
    return Load(orders=orders, tasks=orders * len(sizes), units=orders * quantity)


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


# ---------------------------------------------------------------- CPU


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    at: float
    reaped: float  # CPU of postmaster children already exited and reaped
    live: dict[int, float] = field(default_factory=dict)
    unreaped: int = 0  # exited children the postmaster has not waited for yet


class PostgresCpu:
    """CPU seconds spent by the server: the postmaster, every live child
    (backends, WAL writer, checkpointer, autovacuum) and, through the
    postmaster's reaped-children counters, children that exited meanwhile."""

    def __init__(self, postmaster_pid: int) -> None:
        self.postmaster = psutil.Process(postmaster_pid)

    def snapshot(self) -> CpuSnapshot:
        t = self.postmaster.cpu_times()
        live = {self.postmaster.pid: t.user + t.system}
        unreaped = 0
        for child in self.postmaster.children(recursive=True):
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    unreaped += 1
                    continue
                ct = child.cpu_times()
            except psutil.NoSuchProcess:
                continue
            live[child.pid] = ct.user + ct.system
        return CpuSnapshot(
            at=time.monotonic(),
            reaped=t.children_user + t.children_system,
            live=live,
            unreaped=unreaped,
        )

    def snapshot_after_exits(
        self, before: CpuSnapshot, seen: CpuSnapshot, timeout: float = 3.0
    ) -> CpuSnapshot:
        """A snapshot once the server processes seen in `seen` but not in
        `before` (the backends of a client that just disconnected) have
        exited and been reaped. A backend vanishes from /proc a moment before
        the postmaster's wait() adds its CPU to the reaped counters; a
        snapshot in between would lose that CPU."""
        transient = {pid: used for pid, used in seen.live.items() if pid not in before.live}
        floor = before.reaped + sum(transient.values()) - 0.02
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            gone = not (set(transient) & set(snap.live)) and not snap.unreaped
            if (gone and snap.reaped >= floor) or time.monotonic() > deadline:
                return snap
            time.sleep(0.02)

    @staticmethod
    def seconds_between(a: CpuSnapshot, b: CpuSnapshot, exclude: Iterable[int] = ()) -> float:
        """CPU seconds used between two snapshots, leaving out `exclude`
        (the benchmark's own connections, which are not the system's cost)."""
        skip = set(exclude)
        total = b.reaped - a.reaped
        for pid, used in b.live.items():
            if pid not in skip:
                total += used - a.live.get(pid, 0.0)
        for pid, used in a.live.items():
            if pid not in b.live:
                total -= used  # reaped counts its whole life; keep only the window
        return max(total, 0.0)


def process_cpu_seconds(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def peak_rss_bytes(pid: int) -> int:
    """The kernel's high-water mark of the process's resident set (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
