"""What every CLI command needs before it can act: settings, a checked
argument, the database (migrated or checked), and who is acting.

Errors become one line and exit code 2 here (config errors name the
variable, service errors say what was refused), never a traceback.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import psycopg_pool

from goodfellaz17.cli.output import fail
from goodfellaz17.db.pool import DatabaseLocation, open_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import ServiceError
from goodfellaz17.settings import ConfigError, Settings, load_settings

T = TypeVar("T")


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc))


def parse_uuid(value: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{name}: {value!r} is not a valid UUID")


def unavailable(exc: Exception) -> str:
    """The one line that says the database could not be reached."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"database unavailable: {first}"


def cli_actor() -> str:
    """Who did it, for operator_actions: the OS user at this shell."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def database_url(settings: Settings, location: DatabaseLocation) -> str:
    """The URL, with the schema migrated (embedded) or checked (external)."""
    from goodfellaz17.db.migrate import apply_migrations, pending_migrations

    url = location.url()
    if location.is_embedded:
        apply_migrations(url)
    elif pending := pending_migrations(location.direct_url()):
        fail(
            f"the database schema is not up to date ({len(pending)} pending): "
            "run `goodfellaz17 migrate`"
        )
    return url


def run_with_repo(settings: Settings, action: Callable[[Repository], Awaitable[T]]) -> T:
    """Run one async action against the database; log lines go to stderr (so
    --json stays clean) and errors become exit code 2."""
    from goodfellaz17.logs import configure_logging

    configure_logging(settings, stream=sys.stderr)
    location = DatabaseLocation(settings)

    async def main() -> T:
        url = database_url(settings, location)
        async with open_pool(
            url, settings, min_size=1, max_size=2, application_name="goodfellaz17-cli"
        ) as pool:
            await pool.wait(timeout=settings.db_connect_timeout_seconds)
            return await action(Repository(pool))

    try:
        return asyncio.run(main())
    except ServiceError as exc:
        fail(exc.message)
    except (psycopg.OperationalError, psycopg_pool.PoolTimeout) as exc:
        fail(unavailable(exc))
    finally:
        location.close()
