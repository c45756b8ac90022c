"""`goodfellaz17 migrate`, `serve`, `worker` and `demo`: the commands that run
the service (the contract's command line). Mounted at the top level.

They only start things; what an order or a task does is the api's and the
worker's business.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import psycopg
import typer

from goodfellaz17.cli.output import fail, out
from goodfellaz17.cli.runtime import database_url, settings_or_exit, unavailable
from goodfellaz17.db.pool import DatabaseLocation
from goodfellaz17.errors import ServiceError

app = typer.Typer()


@app.command()
def migrate() -> None:
    """Apply pending schema migrations (safe to run from several replicas)."""
    from goodfellaz17.db.migrate import apply_migrations

    settings = settings_or_exit()
    location = DatabaseLocation(settings)
    try:
        applied = apply_migrations(location.direct_url())
    except psycopg.OperationalError as exc:
        fail(unavailable(exc))
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
        fail(unavailable(exc))
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
        fail(unavailable(exc))
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
    from goodfellaz17.cli.demo import DemoOptions, run_demo

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
