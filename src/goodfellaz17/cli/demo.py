"""`goodfellaz17 demo`: the whole path on an embedded PostgreSQL.

Starts the server and a worker in this process (throw-away API key, loopback
port), creates one order through the HTTP API, shows a live progress bar
until the order is done, then prints the invariant check and a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from goodfellaz17.api.app import create_app
from goodfellaz17.api.server import uvicorn_config
from goodfellaz17.db.migrate import apply_migrations
from goodfellaz17.db.pool import DatabaseLocation, open_pool
from goodfellaz17.db.repository import Repository
from goodfellaz17.logs import configure_logging
from goodfellaz17.services.invariants import OrderCheck, check_order
from goodfellaz17.settings import ApiKey, Role, Settings

STATUSES = ("PENDING", "EXECUTING", "FAILED_RETRYING", "COMPLETED", "FAILED_PERMANENT")
DEMO_NODE = "sim-local-1"


@dataclass(frozen=True)
class DemoOptions:
    quantity: int = 15_000
    rate: int = 1_000
    failure_rate: float = 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_settings(settings: Settings, options: DemoOptions) -> Settings:
    key = secrets.token_urlsafe(24)
    return settings.model_copy(
        update={
            "data_dir": settings.data_dir / "demo",
            "api_keys": [ApiKey(key, Role.OPERATOR)],
            "host": "127.0.0.1",
            "port": _free_port(),
            "sim_failure_rate": options.failure_rate,
            "sim_latency_ms": 5.0,
            "backoff_base_seconds": 0.25,
            "backoff_max_seconds": 2.0,
            "worker_poll_interval_seconds": settings.worker_poll_interval_seconds,
            "log_level": "warning",
            "log_format": "console",
        }
    )


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> bool:
    settings = demo_settings(settings, options)
    configure_logging(settings)
    location = DatabaseLocation(settings)
    try:
        console.print(f"[bold]goodfellaz17 demo[/] — embedded PostgreSQL in {settings.data_dir}")
        url = location.url()
        applied = apply_migrations(url)
        if applied:
            console.print(f"schema: applied {len(applied)} migration(s)")
        return asyncio.run(_run(settings, options, url, console))
    finally:
        location.close()


async def _run(settings: Settings, options: DemoOptions, url: str, console: Console) -> bool:
    async with open_pool(url, settings, min_size=1, max_size=2) as pool:
        repo = Repository(pool)
        await repo.node_upsert("simulated", DEMO_NODE, capacity_per_hour=options.rate * 3600)
        server = uvicorn.Server(
            uvicorn_config(
                create_app(settings, url, run_worker=True), host=settings.host, port=settings.port
            )
        )
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.02)
            base = f"http://{settings.host}:{settings.port}"
            headers = {"X-Api-Key": settings.api_keys[0].secret}
            async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
                response = await client.post(
                    "/api/orders",
                    json={
                        "quantity": options.quantity,
                        "target": "demo-target",
                        "backend": "simulated",
                    },
                    headers={"Idempotency-Key": f"demo-{uuid.uuid4()}"},
                )
                response.raise_for_status()
                order = response.json()
            console.print(
                f"order [bold]{order['id']}[/]: {order['quantity']:,} units in "
                f"{order['taskCount']} tasks · node rate {options.rate:,} units/s · "
                f"simulated failure rate {options.failure_rate:.0%}"
            )
            started = time.monotonic()
            final = await _watch(repo, uuid.UUID(order["id"]), options.quantity, console)
            elapsed = time.monotonic() - started
            report = await check_order(repo, uuid.UUID(order["id"]))
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await serving
    _print_report(console, final, report, elapsed)
    return report.passed


async def _snapshot(repo: Repository, order_id: uuid.UUID) -> dict[str, Any]:
    order = await repo.order_get(order_id)
    assert order is not None
    counts = dict.fromkeys(STATUSES, 0)
    for row in await repo.order_task_summary(order_id):
        counts[row["status"]] = row["tasks"]
    return {"order": order, "tasks": counts}


def _status_line(snap: dict[str, Any], rate: float) -> str:
    t = snap["tasks"]
    return (
        f"tasks: [green]{t['COMPLETED']} completed[/] · [cyan]{t['EXECUTING']} executing[/] · "
        f"[yellow]{t['FAILED_RETRYING']} retrying[/] · {t['PENDING']} pending · "
        f"[red]{t['FAILED_PERMANENT']} dead-lettered[/] · {rate:,.0f} units/s"
    )


async def _watch(
    repo: Repository, order_id: uuid.UUID, quantity: int, console: Console
) -> dict[str, Any]:
    progress = Progress(
        TextColumn("[bold]delivering"),
        BarColumn(bar_width=None),
        MofNCompleteColumn(),
        TextColumn("units · {task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    bar = progress.add_task("units", total=quantity)
    started = time.monotonic()
    with Live(Table.grid(), console=console, refresh_per_second=10) as live:
        while True:
            snap = await _snapshot(repo, order_id)
            delivered = snap["order"]["delivered"]
            rate = delivered / max(time.monotonic() - started, 1e-6)
            progress.update(bar, completed=delivered)
            line = _status_line(snap, rate)
            grid = Table.grid()
            grid.add_row(progress)
            grid.add_row(line)
            live.update(grid)
            open_tasks = (
                snap["tasks"]["PENDING"]
                + snap["tasks"]["EXECUTING"]
                + snap["tasks"]["FAILED_RETRYING"]
            )
            if snap["order"]["status"] == "COMPLETED" or open_tasks == 0:
                break
            await asyncio.sleep(0.2)
    return snap


def _print_report(
    console: Console, snap: dict[str, Any], report: OrderCheck, elapsed: float
) -> None:
    order = snap["order"]
    table = Table(title="invariant check", show_lines=False)
    table.add_column("check")
    table.add_column("expected", justify="right")
    table.add_column("actual", justify="right")
    table.add_column("result")
    for check in report.checks:
        table.add_row(
            check.name,
            str(check.expected),
            str(check.actual),
            "[green]PASS[/]" if check.passed else "[red]FAIL[/]",
        )
    console.print(table)
    verdict = "[bold green]ALL INVARIANTS HOLD[/]" if report.passed else "[bold red]VIOLATED[/]"
    console.print(
        f"{verdict} · order {order['status']} · delivered {order['delivered']:,} of "
        f"{order['quantity']:,} · dead-lettered {order['failed_permanent_plays']:,} · "
        f"{elapsed:.1f} s ({order['delivered'] / max(elapsed, 1e-6):,.0f} units/s)"
    )
