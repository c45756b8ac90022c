"""`goodfellaz17 worker`: one worker process, stopped gracefully by SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from goodfellaz17.logs import get_logger
from goodfellaz17.settings import Settings
from goodfellaz17.worker.worker import OrderDeliveryWorker

log = get_logger(__name__)


async def run_worker_process(settings: Settings, database_url: str) -> None:
    worker = OrderDeliveryWorker(settings, database_url)
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
