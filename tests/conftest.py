"""Shared fixtures: one real PostgreSQL (pgserver) per test session, a
migrated template database, and a fresh database cloned from it per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import settings as hypothesis_settings

from goodfellaz17.db.migrate import apply_migrations
from goodfellaz17.db.pool import open_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.settings import Settings, load_settings

# A shared 2-core machine: per-example deadlines only measure the neighbours.
hypothesis_settings.register_profile("goodfellaz17", deadline=None)
hypothesis_settings.load_profile("goodfellaz17")

READ_KEY = "test-read-key-0123456789"
ORDERS_KEY = "test-orders-key-0123456789"
OPERATOR_KEY = "test-operator-key-0123456789"
API_KEYS = f"{READ_KEY}:read,{ORDERS_KEY}:orders,{OPERATOR_KEY}:operator"
# Production requires a session secret (development generates one in the data folder).
SESSION_SECRET = "test-session-secret-0123456789abcdef0123456789"
TEMPLATE_DB = "gf_template"

_db_counter = itertools.count()


def _url_for(base_url: str, dbname: str) -> str:
    # pgserver URIs look like postgresql://postgres:@/postgres?host=/socket/dir
    head, _, query = base_url.partition("?")
    root = head.rsplit("/", 1)[0]
    return f"{root}/{dbname}?{query}" if query else f"{root}/{dbname}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    # Not under pytest's tmp_path: pytest rotates /tmp/pytest-of-<user>/pytest-N
    # between concurrent sessions, and pgserver kills any postgres whose command
    # line contains its data path as a substring (pytest-5 vs pytest-55).
    root = Path(tempfile.mkdtemp(prefix="goodfellaz17-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        server = pgserver.get_server(root / "pgdata", cleanup_mode="delete")
    # A test server only: trade durability for speed. Benchmarks keep the defaults.
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("ALTER SYSTEM SET synchronous_commit = off")
        conn.execute("ALTER SYSTEM SET full_page_writes = off")
        conn.execute("SELECT pg_reload_conf()")
    yield server
    server.cleanup()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A folder for a PostgreSQL data directory of the test's own (see pg_server)."""
    root = Path(tempfile.mkdtemp(prefix="goodfellaz17-own-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_base_url(pg_server: Any) -> str:
    uri: str = pg_server.get_uri()
    return uri


@pytest.fixture(scope="session")
def template_url(pg_base_url: str) -> str:
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    url = _url_for(pg_base_url, TEMPLATE_DB)
    apply_migrations(url)
    return url


@contextmanager
def database_from_template(pg_base_url: str, name: str) -> Iterator[str]:
    """A migrated database of the caller's own, cloned from the template;
    dropped afterwards. Module fixtures use it for a database they share."""
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    try:
        yield _url_for(pg_base_url, name)
    finally:
        with psycopg.connect(pg_base_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(pg_base_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with database_from_template(pg_base_url, f"gf_test_{os.getpid()}_{next(_db_counter)}") as url:
        yield url


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's GOODFELLAZ17_* or DATABASE_URL."""
    for key in list(os.environ):
        if key.startswith("GOODFELLAZ17_") or key == "DATABASE_URL":
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GOODFELLAZ17_DATA_DIR", str(tmp_path / "data"))


def make_settings(db_url: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "api_keys": API_KEYS,
        # Storage maintenance (partitions, retention) runs only where a test
        # asks for it: DDL under a test's feet is not what the test is about.
        "maintenance_interval_seconds": 0.0,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.2,
        "sim_latency_ms": 0.0,
        "sim_use_node_rate": False,
        "worker_poll_interval_seconds": 10.0,
        "worker_heartbeat_seconds": 0.5,
        "worker_rescue_interval_seconds": 0.5,
        "log_format": "console",
        # Tests that send wrong keys on purpose expect a 401 for each one;
        # the throttle has its own tests (tests/integration/test_auth.py).
        "auth_failure_burst": 1_000_000,
    }
    if db_url is not None:
        values["DATABASE_URL"] = db_url
    if overrides.get("env") == "production":
        values["session_secret"] = SESSION_SECRET
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def repo(db_url: str, settings: Settings) -> AsyncIterator[Repository]:
    async with open_pool(db_url, settings, min_size=1, max_size=4) as pool:
        await pool.wait()
        yield Repository(pool)


@pytest.fixture
def sql(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A plain autocommit connection, like an operator's psql session."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def api(settings: Settings, db_url: str) -> AsyncIterator[Any]:
    """An httpx client on the app (no worker), lifespan included."""
    import httpx

    from goodfellaz17.api.app import create_app

    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def key_headers(key: str = OPERATOR_KEY, **extra: str) -> dict[str, str]:
    return {"X-Api-Key": key, **extra}
