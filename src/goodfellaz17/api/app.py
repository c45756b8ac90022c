"""The FastAPI application: create_app(settings, database_url) and its lifespan.

Nothing happens at import time. The lifespan opens the pool and, when this
process runs the worker, starts it in the same event loop and stops it
gracefully (finish in-flight tasks, hand back the rest) on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from goodfellaz17 import __version__
from goodfellaz17.api.access_log import AccessLogMiddleware
from goodfellaz17.api.auth import KeyRing
from goodfellaz17.api.console import install_console
from goodfellaz17.api.deps import AppContext
from goodfellaz17.api.errors import install_error_handlers
from goodfellaz17.api.middleware import RequestGuardMiddleware
from goodfellaz17.api.routes import (
    admin_orders,
    capacity,
    chaos,
    docs,
    health,
    invariants,
    nodes,
    orders,
    workers,
)
from goodfellaz17.api.routes import metrics as metrics_routes
from goodfellaz17.db.pool import create_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.logs import get_logger
from goodfellaz17.metrics import (
    DatabaseGaugeCollector,
    MetricsExporter,
    new_process_registry,
    storage_metrics,
)
from goodfellaz17.metrics_server import MetricsServer
from goodfellaz17.services.invariant_monitor import InvariantMonitor
from goodfellaz17.services.storage import StorageMaintenance
from goodfellaz17.settings import Settings

log = get_logger(__name__)


def create_app(settings: Settings, database_url: str, *, run_worker: bool | None = None) -> FastAPI:
    """The app. `run_worker` defaults to GOODFELLAZ17_WORKER_ENABLED."""
    with_worker = settings.worker_enabled if run_worker is None else run_worker

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = create_pool(
            database_url, settings, application_name="goodfellaz17-api", check_on_checkout=True
        )
        await pool.open(wait=False)
        repo = Repository(pool)
        ctx = AppContext(settings=settings, repo=repo, keyring=KeyRing(settings.api_keys))
        app.state.ctx = ctx
        from goodfellaz17.worker.worker import worker_metrics

        registry = new_process_registry()
        worker_metrics(registry)  # the contract's counters exist (at 0) even without a worker
        ctx.count_auth_failures_in(registry)
        ctx.metrics = MetricsExporter(
            registry,
            DatabaseGaugeCollector(repo, stale_after_seconds=settings.worker_stale_after_seconds),
        )
        metrics_server = None
        if settings.metrics_port is not None:
            metrics_server = MetricsServer(ctx.metrics, settings.host, settings.metrics_port)
            try:
                await metrics_server.start()
            except BaseException:
                await pool.close()
                raise
            app.state.metrics_port = metrics_server.port
        worker_task = None
        if with_worker:
            from goodfellaz17.worker.worker import OrderDeliveryWorker

            ctx.worker = OrderDeliveryWorker(settings, database_url, registry=registry)
            worker_task = await ctx.worker.start()
        monitor_task = None
        if settings.invariant_check_interval_seconds > 0:
            monitor = InvariantMonitor(repo, settings.invariant_check_interval_seconds)
            monitor_task = asyncio.create_task(monitor.run(), name="invariant-monitor")
        maintenance_task = None
        if settings.maintenance_interval_seconds > 0:
            maintenance = StorageMaintenance(repo, settings, storage_metrics(registry))
            maintenance_task = asyncio.create_task(maintenance.run(), name="storage-maintenance")
        log.info("api started", worker=with_worker, version=__version__)
        try:
            yield
        finally:
            if ctx.worker is not None:
                await ctx.worker.stop()
                if worker_task is not None:
                    await worker_task
            for task in (monitor_task, maintenance_task):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if metrics_server is not None:
                await metrics_server.stop()
            await pool.close()
            log.info("api stopped")

    app = FastAPI(
        title="goodfellaz17",
        version=__version__,
        description="A durable order delivery engine. Every /api/ path needs X-Api-Key.",
        lifespan=lifespan,
        # Served by routes/docs.py, behind GOODFELLAZ17_API_DOCS.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestGuardMiddleware, max_body_bytes=settings.max_body_bytes, json_prefixes=("/api/",)
    )
    app.add_middleware(AccessLogMiddleware)  # outermost: sees every answer, even a 413
    app.include_router(docs.router)
    app.include_router(health.router)
    app.include_router(orders.router)
    app.include_router(workers.router)
    app.include_router(invariants.router)
    app.include_router(admin_orders.router)
    app.include_router(capacity.router)
    app.include_router(chaos.router)
    app.include_router(nodes.router)
    app.include_router(nodes.proxies_router)
    app.include_router(metrics_routes.router)
    install_console(app, settings)  # /console: the operators' web pages
    return app
