"""The HTTP side and the wake-up path.

- POST /api/orders of a 15,000-unit order against `goodfellaz17 serve`
  (worker disabled, loopback only): latency one request at a time, then
  orders/s with several concurrent clients (httpx, async). The load
  generator shares the machine with the server and PostgreSQL.
- Pick-up latency: an idle worker (default 10 s poll, woken by
  LISTEN/NOTIFY) and orders committed one at a time through the product's
  own `order_create` query, 40-100 ms apart. Both ends on the database
  clock, from `clock_timestamp()` just before COMMIT is sent (so the
  commit's own flush counts against the engine, and no sample can come out
  negative): to the first task's `started_at` (the claim statement's start:
  the wake-up), and to the moment a poller, every 2 ms, first sees the task
  claimed (EXECUTING committed: the figure the target is checked on; it
  overstates by up to one poll).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from bench.config import BenchConfig
from bench.pg import BenchServer, PostgresCpu, backend_pid, process_cpu_seconds, reset_product
from bench.procs import (
    VENV_BIN,
    Child,
    clean_env,
    engine_env,
    free_port,
    start,
    start_workers,
    stop,
    wait_until,
    wait_workers_ready,
)
from bench.stats import percentile
from goodfellaz17.db.queries import load_queries
from goodfellaz17.domain.plan import plan_task_sizes
from goodfellaz17.domain.queue import FAIR_SHARE_SECONDS, RUN_LENGTH

API_KEY = "bench-operator-key-0123456789"
HEADERS = {"X-Api-Key": API_KEY}


class Api:
    """`goodfellaz17 serve` on a free loopback port, worker disabled."""

    def __init__(self, server: BenchServer, url: str, log_dir: Path, name: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = clean_env(
            {
                "DATABASE_URL": url,
                "GOODFELLAZ17_DATA_DIR": str(server.root / "api-data"),
                "GOODFELLAZ17_WORKER_ENABLED": "false",
                "GOODFELLAZ17_API_KEYS": f"{API_KEY}:operator",
                "GOODFELLAZ17_LOG_FORMAT": "json",
            }
        )
        argv = [str(VENV_BIN / "goodfellaz17"), "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port)]
        self.child: Child = start(name, argv, env, log_dir)

    def wait_ready(self, timeout: float = 90.0) -> None:
        def healthy() -> bool:
            try:
                return httpx.get(self.base_url + "/actuator/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(
            healthy,
            timeout=timeout,
            what="the API to be healthy",
            interval=0.2,
            children=[self.child],
        )

    def stop(self) -> None:
        stop([self.child])


def order_body(i: int, quantity: int) -> dict[str, Any]:
    return {"quantity": quantity, "target": f"bench-api-{i}", "backend": "simulated"}


async def _post(client: httpx.AsyncClient, i: int, quantity: int) -> float:
    started = time.perf_counter()
    response = await client.post("/api/orders", json=order_body(i, quantity))
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"POST /api/orders: {response.status_code} {response.text[:300]}")
    return elapsed


async def _api_round(base_url: str, cfg: BenchConfig, round_no: int) -> dict[str, Any]:
    limits = httpx.Limits(
        max_connections=cfg.api_clients, max_keepalive_connections=cfg.api_clients
    )
    async with httpx.AsyncClient(
        base_url=base_url, headers=HEADERS, limits=limits, timeout=60
    ) as client:
        serial = round_no * 1_000_000
        for i in range(10):  # warm-up: connections, prepared statements
            await _post(client, serial + i, cfg.quantity)
        sequential = [
            await _post(client, serial + 100 + i, cfg.quantity) for i in range(cfg.api_sequential)
        ]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(cfg.api_concurrent):
            queue.put_nowait(serial + 500_000 + i)
        concurrent: list[float] = []

        async def client_loop() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                concurrent.append(await _post(client, i, cfg.quantity))

        started = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(cfg.api_clients)))
        wall = time.perf_counter() - started
    ms = 1000.0
    return {
        "sequential": cfg.api_sequential,
        "latency_median_ms": percentile(sequential, 50) * ms,
        "latency_p99_ms": percentile(sequential, 99) * ms,
        "clients": cfg.api_clients,
        "concurrent": cfg.api_concurrent,
        "orders_per_s": cfg.api_concurrent / wall,
        "concurrent_latency_median_ms": percentile(concurrent, 50) * ms,
        "concurrent_latency_p99_ms": percentile(concurrent, 99) * ms,
    }


def run_api(
    cfg: BenchConfig,
    server: BenchServer,
    admin: psycopg.Connection[Any],
    url: str,
    cpu: PostgresCpu,
) -> list[dict[str, Any]]:
    api = Api(server, url, cfg.out_dir / "logs", "api-orders")
    results = []
    try:
        api.wait_ready()
        me = backend_pid(admin)
        for r in range(cfg.rounds):
            reset_product(admin)
            server_cpu = process_cpu_seconds([api.child.pid])
            pg0 = cpu.snapshot()
            result = asyncio.run(_api_round(api.base_url, cfg, r))
            pg1 = cpu.snapshot()
            orders = 10 + cfg.api_sequential + cfg.api_concurrent
            result["server_cpu_ms_per_order"] = (
                (process_cpu_seconds([api.child.pid]) - server_cpu) / orders * 1000
            )
            result["pg_cpu_ms_per_order"] = (
                PostgresCpu.seconds_between(pg0, pg1, exclude=[me]) / orders * 1000
            )
            results.append(result)
    finally:
        api.stop()
    return results


# ---------------------------------------------------------------- pick-up


def _create_order(admin: psycopg.Connection[Any], cfg: BenchConfig, i: int) -> tuple[Any, Any, Any]:
    """One order through the product's own order_create; returns its id and
    the database clock just before COMMIT and right after it returned."""
    with admin.transaction():
        row = admin.execute(
            load_queries()["order_create"],
            {
                "quantity": cfg.quantity,
                "target": f"bench-pickup-{i}",
                "backend": "simulated",
                "sizes": plan_task_sizes(cfg.quantity, cfg.task_size),
                "idempotency_scope": "cli",
                "idempotency_key": None,
                "request_hash": None,
                "fair_share_seconds": FAIR_SHARE_SECONDS,
                "run_length": RUN_LENGTH,
            },
        ).fetchone()
        before = admin.execute("SELECT clock_timestamp()").fetchone()
    after = admin.execute("SELECT clock_timestamp()").fetchone()
    if row is None or before is None or after is None:
        raise RuntimeError("order_create returned no row")
    return row[0], before[0], after[0]


def _wait_claimed(admin: psycopg.Connection[Any], order_id: Any, timeout: float) -> tuple[Any, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = admin.execute(
            "SELECT min(started_at), clock_timestamp() FROM order_tasks WHERE order_id = %s",
            (order_id,),
        ).fetchone()
        assert row is not None
        if row[0] is not None:
            return row[0], row[1]
        if time.monotonic() > deadline:
            raise RuntimeError(f"order {order_id} not picked up within {timeout:.0f}s")
        time.sleep(0.002)


def _wait_completed(admin: psycopg.Connection[Any], order_id: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = admin.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
        if row is not None and row[0] == "COMPLETED":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"order {order_id} not completed within {timeout:.0f}s")
        time.sleep(0.005)


def run_pickup(
    cfg: BenchConfig, server: BenchServer, admin: psycopg.Connection[Any], url: str
) -> list[dict[str, Any]]:
    reset_product(admin)
    env = engine_env(url, server.root / "worker-data", cfg.batch, cfg.engine_env)
    workers = start_workers(1, env, cfg.out_dir / "logs", "pickup")
    rng = random.Random(7)
    results = []
    try:
        wait_workers_ready(admin, workers)
        time.sleep(0.5)  # let the worker finish its first (empty) claim and go idle
        for r in range(cfg.rounds):
            claim_ms: list[float] = []
            visible_ms: list[float] = []
            commit_ms: list[float] = []
            for i in range(cfg.pickup_samples):
                order_id, committing, committed = _create_order(admin, cfg, r * 100_000 + i)
                started, seen = _wait_claimed(admin, order_id, timeout=30)
                claim_ms.append((started - committing).total_seconds() * 1000)
                visible_ms.append((seen - committing).total_seconds() * 1000)
                commit_ms.append((committed - committing).total_seconds() * 1000)
                _wait_completed(admin, order_id, timeout=60)
                workers[0].check_alive()
                time.sleep(rng.uniform(0.04, 0.10))  # the worker goes back to its idle wait
            results.append(
                {
                    "samples": cfg.pickup_samples,
                    "median_ms": percentile(visible_ms, 50),
                    "p99_ms": percentile(visible_ms, 99),
                    "max_ms": max(visible_ms),
                    "claim_start_median_ms": percentile(claim_ms, 50),
                    "claim_start_p99_ms": percentile(claim_ms, 99),
                    "commit_median_ms": percentile(commit_ms, 50),
                }
            )
    finally:
        stop(workers)
    return results
