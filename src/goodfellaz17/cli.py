"""The `goodfellaz17` command line (Typer + Rich).

Errors print one readable line to stderr and exit with code 2. Commands that
read or change data use the same service functions as the HTTP API, directly
against the database.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, NoReturn, TypeVar

import psycopg
import psycopg_pool
import typer
from rich.console import Console
from rich.table import Table

from goodfellaz17.db.pool import DatabaseLocation, open_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import ServiceError
from goodfellaz17.settings import ConfigError, Settings, load_settings

T = TypeVar("T")

app = typer.Typer(
    name="goodfellaz17",
    help="A durable order delivery engine on PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
orders_app = typer.Typer(help="Create and inspect orders.", no_args_is_help=True)
app.add_typer(orders_app, name="orders")

out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]


def fail(message: str) -> NoReturn:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


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


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


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
    """Run one async action against the database and turn errors into exit 2."""
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
        fail(
            f"database unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        )
    finally:
        location.close()


# ---------------------------------------------------------------- server side


@app.command()
def migrate() -> None:
    """Apply pending schema migrations (safe to run from several replicas)."""
    from goodfellaz17.db.migrate import apply_migrations

    settings = settings_or_exit()
    location = DatabaseLocation(settings)
    try:
        applied = apply_migrations(location.direct_url())
    except psycopg.OperationalError as exc:
        fail(f"database unavailable: {str(exc).splitlines()[0]}")
    finally:
        location.close()
    out.print(
        f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else "")
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [GOODFELLAZ17_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port [GOODFELLAZ17_PORT]")] = None,
) -> None:
    """Run the HTTP API and (unless GOODFELLAZ17_WORKER_ENABLED=false) a worker."""
    from goodfellaz17.api.app import create_app
    from goodfellaz17.api.server import GracefulServer, uvicorn_config
    from goodfellaz17.db.migrate import apply_migrations
    from goodfellaz17.logs import configure_logging, get_logger

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = settings_or_exit(**overrides)
    if not settings.api_keys:
        fail("GOODFELLAZ17_API_KEYS: serve needs at least one API key (key:role,...)")
    configure_logging(settings)
    location = DatabaseLocation(settings)
    try:
        url = location.url()
        apply_migrations(location.direct_url())
    except psycopg.OperationalError as exc:
        location.close()
        fail(f"database unavailable: {str(exc).splitlines()[0]}")
    get_logger(__name__).info(
        "serving", host=settings.host, port=settings.port, embedded_db=location.is_embedded
    )
    config = uvicorn_config(
        create_app(settings, url),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.worker_grace_period_seconds) + 5,
    )
    try:
        asyncio.run(GracefulServer(config).serve())
    finally:
        location.close()


@app.command()
def worker() -> None:
    """Run a worker only (scale out with as many as you like on one database)."""
    from goodfellaz17.logs import configure_logging
    from goodfellaz17.worker.runner import idle_until_stopped, run_worker_process

    settings = settings_or_exit()
    configure_logging(settings)
    if not settings.worker_enabled:
        asyncio.run(idle_until_stopped())  # the emergency brake holds for scaled-out workers too
        return
    location = DatabaseLocation(settings)
    try:
        url = database_url(settings, location)
        asyncio.run(run_worker_process(settings, url))
    except psycopg.OperationalError as exc:
        fail(f"database unavailable: {str(exc).splitlines()[0]}")
    finally:
        location.close()


@app.command()
def demo(
    quantity: Annotated[int, typer.Option(help="units to order")] = 15_000,
    rate: Annotated[int, typer.Option(help="simulated delivery rate, units per second")] = 1_000,
    failure_rate: Annotated[float, typer.Option(help="simulated failure probability")] = 0.05,
    task_size: Annotated[int, typer.Option(help="units per task")] = 400,
    data_dir: Annotated[str | None, typer.Option(help="embedded database folder")] = None,
) -> None:
    """Deliver one order end to end on the embedded PostgreSQL, with a live
    progress bar, then print the invariant check."""
    from goodfellaz17.demo import DemoOptions, run_demo

    if quantity <= 0:
        fail("--quantity must be greater than 0")
    if rate <= 0:
        fail("--rate must be greater than 0")
    if not 0 <= failure_rate < 1:
        fail("--failure-rate must be in [0, 1)")
    if task_size <= 0:
        fail("--task-size must be greater than 0")
    overrides: dict[str, Any] = {"task_size": task_size}
    if data_dir:
        overrides["data_dir"] = data_dir
    settings = settings_or_exit(**overrides)
    options = DemoOptions(quantity=quantity, rate=rate, failure_rate=failure_rate)
    try:
        passed = run_demo(settings, options, out)
    except ServiceError as exc:
        fail(exc.message)
    if not passed:
        raise typer.Exit(code=1)


# ---------------------------------------------------------------- orders


def _order_table(order: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None)
    for key in (
        "id",
        "status",
        "quantity",
        "delivered",
        "failed_permanent_plays",
        "target",
        "backend",
        "task_count",
        "created_at",
        "completed_at",
    ):
        table.add_row(key, str(order.get(key)))
    return table


@orders_app.command("create")
def orders_create(
    quantity: Annotated[int, typer.Option(help="units to deliver")],
    target: Annotated[str, typer.Option(help="where the units go (opaque)")],
    backend: Annotated[str, typer.Option(help="delivery backend")] = "simulated",
    idempotency_key: Annotated[str | None, typer.Option(help="dedupe retries")] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an order and its tasks."""
    from goodfellaz17.services.orders import create_order

    settings = settings_or_exit()
    result = run_with_repo(
        settings,
        lambda repo: create_order(
            repo,
            settings,
            quantity=quantity,
            target=target,
            backend=backend,
            idempotency_key=idempotency_key,
        ),
    )
    if as_json:
        print_json(result.order)
    else:
        out.print(_order_table(result.order))


@orders_app.command("show")
def orders_show(order_id: str, as_json: JsonOption = False) -> None:
    """Show one order."""
    from goodfellaz17.services.orders import get_order

    oid = parse_uuid(order_id, "ORDER_ID")
    settings = settings_or_exit()
    order = run_with_repo(settings, lambda repo: get_order(repo, oid))
    if as_json:
        print_json(order)
    else:
        out.print(_order_table(order))


@orders_app.command("list")
def orders_list(
    status: Annotated[str | None, typer.Option(help="PENDING, PROCESSING or COMPLETED")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List recent orders."""
    from goodfellaz17.services.orders import list_orders

    settings = settings_or_exit()
    rows, _ = run_with_repo(
        settings, lambda repo: list_orders(repo, status=status, limit=limit, cursor=None)
    )
    if as_json:
        print_json(rows)
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=36)  # ids are for copying: never cut
    for header in ("status", "quantity", "delivered", "dead-lettered", "created"):
        table.add_column(header)
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["status"],
            str(r["quantity"]),
            str(r["delivered"]),
            str(r["failed_permanent_plays"]),
            r["created_at"].isoformat(timespec="seconds"),
        )
    out.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


# The operator commands mirroring the admin API live in their own module;
# importing it registers them on `app` and `orders_app`.
from goodfellaz17 import cli_admin as _cli_admin  # noqa: E402, F401
