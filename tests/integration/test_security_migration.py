"""Migration 0010 upgrades a database that has history: idempotency keys
used before it keep working for the caller that retries, and the invariant
log's old rows keep what the alerts saw."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from yoyo import get_backend, read_migrations
from yoyo.migrations import MigrationList

from goodfellaz17.api.app import create_app
from goodfellaz17.db.migrate import _yoyo_url, apply_migrations, migrations_dir
from goodfellaz17.services.orders import request_fingerprint
from tests.conftest import ORDERS_KEY, _url_for, key_headers, make_settings
from tests.helpers import insert_order
from tests.integration.console_helpers import client_for

SECURITY_MIGRATION = "0010_security_hardening"


@pytest.fixture
def before_0010(pg_base_url: str) -> Iterator[str]:
    """A database migrated up to, not including, 0010."""
    name = f"gf_pre0010_{os.getpid()}"
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    url = _url_for(pg_base_url, name)
    backend = get_backend(_yoyo_url(url))
    try:
        shipped = read_migrations(migrations_dir())
        earlier = MigrationList([m for m in shipped if m.id < SECURITY_MIGRATION])
        with backend.lock():
            backend.apply_migrations(backend.to_apply(earlier))
    finally:
        backend.connection.close()
    yield url
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_keys_and_checks_from_before_the_migration_keep_their_meaning(
    before_0010: str,
) -> None:
    url = before_0010
    with psycopg.connect(url, autocommit=True) as sql:
        legacy = insert_order(sql, 800, target="from-before")
        sql.execute(
            "UPDATE orders SET idempotency_key = 'retry-me', request_hash = %s WHERE id = %s",
            (request_fingerprint(800, "from-before", "simulated"), legacy),
        )
        orphan_check = [{"name": "no_task_executing_past_its_lease", "passed": True}]
        sql.execute(
            "INSERT INTO invariant_check_log (scope, passed, checks) VALUES"
            ' (\'GLOBAL\', false, \'[{"orderId": "x", "check": "y"}]\'),'
            " ('GLOBAL', true, %s)",
            (json.dumps(orphan_check),),
        )
    assert SECURITY_MIGRATION in apply_migrations(url)

    with psycopg.connect(url, autocommit=True) as sql:
        scope = sql.execute("SELECT idempotency_scope FROM orders").fetchone()
        assert scope == ("legacy",)
        logged = sql.execute(
            "SELECT scope, source, passed FROM invariant_check_log ORDER BY id"
        ).fetchall()
        # The full check still fails the alert; the orphan check never could.
        assert logged == [("GLOBAL", "MONITOR", False), ("ORPHANS", "API", True)]

    settings = make_settings(url, invariant_check_interval_seconds=0)
    app = create_app(settings, url, run_worker=False)
    body = {"quantity": 800, "target": "from-before"}
    headers = key_headers(ORDERS_KEY, **{"Idempotency-Key": "retry-me"})
    async with app.router.lifespan_context(app), client_for(app) as client:
        replay: httpx.Response = await client.post("/api/orders", headers=headers, json=body)
        assert (replay.status_code, replay.json()["id"]) == (200, str(legacy))
        other = await client.post("/api/orders", headers=headers, json={**body, "quantity": 9})
        assert other.status_code == 409
        metrics = (await client.get("/metrics", headers=key_headers(ORDERS_KEY))).text
    assert "delivery_invariant_violations 1.0" in metrics
