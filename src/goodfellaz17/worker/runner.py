"""`goodfellaz17 worker`: one worker process, stopped gracefully by SIGTERM/SIGINT.

With GOODFELLAZ17_METRICS_PORT set, it serves its own /metrics there (its
counters and histograms, plus the database gauges), without an API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from goodfellaz17.logs import get_logger
from goodfellaz17.metrics import (
    DatabaseGaugeCollector,
    MetricsExporter,
    new_process_registry,
    storage_metrics,
)
from goodfellaz17.metrics_server import MetricsServer
from goodfellaz17.services.storage import StorageMaintenance
from goodfellaz17.settings import Settings
from goodfellaz17.worker.worker import OrderDeliveryWorker

log = get_logger(__name__)


async def run_worker_process(settings: Settings, database_url: str) -> None:
    registry = new_process_registry()
    worker = OrderDeliveryWorker(settings, database_url, registry=registry)
    metrics_server = None
    if settings.metrics_port is not None:
        gauges = DatabaseGaugeCollector(
            worker.repo, stale_after_seconds=settings.worker_stale_after_seconds
        )
        metrics_server = MetricsServer(
            MetricsExporter(registry, gauges), settings.host, settings.metrics_port
        )
        await metrics_server.start()
    maintenance = None
    if settings.maintenance_interval_seconds > 0:
        # Any replica may lead the storage maintenance (an advisory lock picks one).
        storage = StorageMaintenance(worker.repo, settings, storage_metrics(registry))
        maintenance = asyncio.create_task(storage.run(), name="storage-maintenance")
    try:
        await _run_until_signalled(settings, worker)
    finally:
        if maintenance is not None:
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
        if metrics_server is not None:
            await metrics_server.stop()


async def _run_until_signalled(settings: Settings, worker: OrderDeliveryWorker) -> None:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    main = await worker.start()
    waiter = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if waiter in done:
        log.info(
            "stop requested: finishing in-flight tasks",
            grace_seconds=settings.worker_grace_period_seconds,
        )
        await worker.stop()
    else:
        waiter.cancel()
        await main  # re-raises if the worker died


async def idle_until_stopped() -> None:
    """`goodfellaz17 worker` with GOODFELLAZ17_WORKER_ENABLED=false: claim
    nothing, touch no database, and wait for SIGTERM/SIGINT, so a scaled-out
    worker Deployment obeys the emergency brake without crash-looping."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    log.warning("worker disabled by GOODFELLAZ17_WORKER_ENABLED=false: idling until stopped")
    await stop_requested.wait()
    log.info("worker stopped (was disabled)")
