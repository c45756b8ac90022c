"""Schema migrations: plain SQL files under migrations/, applied by yoyo.

Start-up of several replicas at once is safe: the whole run happens while
holding a PostgreSQL advisory lock on a separate connection, so exactly one
process applies pending migrations and the others then find nothing to do.
The others wait for the lock by polling, not inside pg_advisory_lock(): a
statement blocked there holds a snapshot, and CREATE INDEX CONCURRENTLY in
the lock holder waits for every older snapshot in the database, so each
would wait for the other forever (a deadlock PostgreSQL cannot see).
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Any

import psycopg

log = logging.getLogger(__name__)

MIGRATION_LOCK_ID = 0x6F6F_6466_6C7A  # "goodflz": an arbitrary, fixed bigint
LOCK_POLL_SECONDS = 0.2


def migrations_dir() -> str:
    return str(resources.files(__package__).joinpath("migrations"))


def _yoyo_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def _wait_for_lock(conn: psycopg.Connection[Any]) -> None:
    """Take the migration lock, polling between tries (see the module docstring)."""
    while True:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_ID,)).fetchone()
        if row is not None and row[0]:
            return
        time.sleep(LOCK_POLL_SECONDS)


def apply_migrations(url: str) -> list[str]:
    """Apply every pending migration; return the ids applied (empty if none)."""
    from yoyo import get_backend, read_migrations

    with psycopg.connect(url, autocommit=True) as lock_conn:
        _wait_for_lock(lock_conn)
        try:
            backend = get_backend(_yoyo_url(url))
            try:
                migrations = read_migrations(migrations_dir())
                with backend.lock():
                    pending = backend.to_apply(migrations)
                    backend.apply_migrations(pending)
                applied = [m.id for m in pending]
            finally:
                backend.connection.close()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    for migration_id in applied:
        log.info("migration applied", extra={"migration": migration_id})
    return applied


def migration_ids() -> list[str]:
    """The ids yoyo gives the shipped migrations (their file names, no .sql)."""
    folder = resources.files(__package__).joinpath("migrations")
    return sorted(
        p.name.removesuffix(".sql")
        for p in folder.iterdir()
        if p.name.endswith(".sql") and not p.name.endswith(".rollback.sql")
    )


def pending_migrations(url: str) -> list[str]:
    """Shipped migrations not yet applied: one cheap query, no yoyo import (the
    CLI checks this on every command)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            applied = {row[0] for row in conn.execute("SELECT migration_id FROM _yoyo_migration")}
        except psycopg.errors.UndefinedTable:
            applied = set()
    return [m for m in migration_ids() if m not in applied]
