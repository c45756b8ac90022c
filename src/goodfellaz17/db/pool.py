"""Connections: where the database is, and the async pool every caller shares."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from goodfellaz17.db.embedded import EmbeddedPostgres
from goodfellaz17.settings import Settings

AsyncConn = psycopg.AsyncConnection[DictRow]


class DatabaseLocation:
    """Resolves the database URL: DATABASE_URL, or the embedded server."""

    def __init__(self, settings: Settings, *, stop_embedded_on_exit: bool = True) -> None:
        self._settings = settings
        self._embedded: EmbeddedPostgres | None = None
        self._stop_embedded_on_exit = stop_embedded_on_exit
        self._url: str | None = None

    @property
    def is_embedded(self) -> bool:
        return self._settings.database_url is None

    def url(self) -> str:
        if self._url is None:
            if self._settings.database_url is not None:
                self._url = self._settings.database_url.get_secret_value()
            else:
                self._embedded = EmbeddedPostgres(
                    self._settings.data_dir, stop_on_exit=self._stop_embedded_on_exit
                )
                self._url = self._embedded.start()
        return self._url

    def direct_url(self) -> str:
        """Where session state works (LISTEN, advisory locks): the direct URL
        when DATABASE_URL goes through a transaction-mode pooler."""
        if self._settings.direct_database_url is not None:
            return self._settings.direct_database_url.get_secret_value()
        return self.url()

    def close(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
            self._url = None


def connection_kwargs(settings: Settings, application_name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "autocommit": True,
        "row_factory": dict_row,
        "prepare_threshold": settings.db_prepare_threshold,
        "application_name": application_name,
        "connect_timeout": max(1, int(settings.db_connect_timeout_seconds)),
    }
    # PgBouncer refuses the `options` start-up parameter, so a timeout of 0
    # (PostgreSQL's "no timeout") sends nothing; behind a pooler, set the
    # timeout on the role instead (ALTER ROLE ... SET statement_timeout).
    if settings.db_statement_timeout_ms:
        kwargs["options"] = f"-c statement_timeout={settings.db_statement_timeout_ms}"
    return kwargs


def create_pool(
    url: str,
    settings: Settings,
    *,
    application_name: str = "goodfellaz17",
    min_size: int | None = None,
    max_size: int | None = None,
    check_on_checkout: bool = False,
) -> AsyncConnectionPool[AsyncConn]:
    """An unopened pool; callers `await pool.open()` inside their event loop.

    `check_on_checkout` pings each connection as it is handed out, so the first
    request after a database restart gets a fresh connection instead of an
    error; it costs a round trip, so the worker's hot path does without."""
    max_size = max_size or settings.db_pool_max_size
    min_size = min(min_size if min_size is not None else settings.db_pool_min_size, max_size)
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(settings, application_name),
        connection_class=psycopg.AsyncConnection[DictRow],
        open=False,
        timeout=settings.db_connect_timeout_seconds,
        reconnect_timeout=0,  # keep trying for ever: the database may come back
        name=application_name,
        check=AsyncConnectionPool.check_connection if check_on_checkout else None,
    )


@asynccontextmanager
async def open_pool(
    url: str, settings: Settings, **kwargs: Any
) -> AsyncIterator[AsyncConnectionPool[AsyncConn]]:
    pool = create_pool(url, settings, **kwargs)
    await pool.open(wait=False)
    try:
        yield pool
    finally:
        await pool.close()
