"""Operator reads at production size: 1,000,000 tasks.

A separate database is bulk-loaded in one statement with a settled state
mix (90 % of orders delivered, 5 % half done with a task backing off, 3 %
with two dead-lettered tasks, 2 % not started), vacuumed and analyzed.
Then, against `goodfellaz17 serve` on it:

- GET /api/admin/invariants/all, timed from the client. Until that
  endpoint exists (it answers anything but 200), the underlying service
  call `goodfellaz17.services.invariants.check_all(repo)` is timed
  in-process instead, and the results say which was measured.
- GET /metrics (with a read key), timed from the client; n/a until the
  endpoint exists.

The first call of each is a warm-up (reported apart, not in the median).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from bench.api import HEADERS, Api
from bench.config import BenchConfig
from bench.pg import (
    SCALE_DB,
    BenchServer,
    create_product_database,
    load_settled_orders,
    orders_for_tasks,
    settle,
)
from goodfellaz17.settings import load_settings

INVARIANTS_PATH = "/api/admin/invariants/all"
METRICS_PATH = "/metrics"


def _timed_get(client: httpx.Client, path: str) -> tuple[int, float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(path)
    return response.status_code, time.perf_counter() - started, response


async def _service_check_all(url: str, repeats: int) -> tuple[list[float], dict[str, Any]]:
    from goodfellaz17.api.schemas import GlobalInvariantsResponse
    from goodfellaz17.db.pool import open_pool
    from goodfellaz17.db.repository import Repository
    from goodfellaz17.services.invariants import check_all

    settings = load_settings(DATABASE_URL=url)
    async with open_pool(url, settings, min_size=1, max_size=2, application_name="bench") as pool:
        await pool.wait()
        repo = Repository(pool)
        times = []
        result = None
        for _ in range(repeats):
            started = time.perf_counter()
            result = await check_all(repo)
            times.append(time.perf_counter() - started)
    # What GET /api/admin/invariants/all would have answered, for the report.
    return times, GlobalInvariantsResponse.model_validate(result).model_dump(by_alias=True)


def _state_counts(admin: psycopg.Connection[Any]) -> dict[str, int]:
    rows = admin.execute("SELECT status, count(*) FROM order_tasks GROUP BY status").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def run_scale(cfg: BenchConfig, server: BenchServer) -> dict[str, Any]:
    url = create_product_database(server, SCALE_DB)
    orders = orders_for_tasks(cfg.scale_tasks, cfg.quantity, cfg.task_size)
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as admin:
        started = time.perf_counter()
        load = load_settled_orders(admin, orders, quantity=cfg.quantity, task_size=cfg.task_size)
        out["load_seconds"] = time.perf_counter() - started
        settle(admin, ("orders", "order_tasks"))
        out["settle_seconds"] = time.perf_counter() - started - out["load_seconds"]
        out["orders"] = load.orders
        out["tasks"] = load.tasks
        out["task_states"] = _state_counts(admin)

    api = Api(server, url, cfg.out_dir / "logs", "api-scale")
    try:
        api.wait_ready()
        with httpx.Client(base_url=api.base_url, headers=HEADERS, timeout=120) as client:
            out["invariants"] = _invariants(client, url, cfg.scale_repeats)
            out["metrics"] = _metrics(client, cfg.scale_repeats)
    finally:
        api.stop()
    server.drop_database(SCALE_DB)
    return out


def _invariants(client: httpx.Client, url: str, repeats: int) -> dict[str, Any]:
    status, first, response = _timed_get(client, INVARIANTS_PATH)
    if status == 200:
        times = [_timed_get(client, INVARIANTS_PATH)[1] for _ in range(repeats)]
        body = response.json()
        via = f"GET {INVARIANTS_PATH}"
    else:
        times, body = asyncio.run(_service_check_all(url, repeats + 1))
        first, times = times[0], times[1:]
        via = f"check_all(repo) in-process (GET {INVARIANTS_PATH} answered {status})"
    return {
        "via": via,
        "warmup_s": first,
        "seconds": times,
        "passed": body.get("passed"),
        "orders_checked": body.get("ordersChecked"),
        "violations": body.get("violationCount"),
    }


def _metrics(client: httpx.Client, repeats: int) -> dict[str, Any]:
    status, first, response = _timed_get(client, METRICS_PATH)
    if status != 200:
        return {"via": f"n/a (GET {METRICS_PATH} answered {status})", "seconds": []}
    times = [_timed_get(client, METRICS_PATH)[1] for _ in range(max(repeats, 5))]
    return {
        "via": f"GET {METRICS_PATH}",
        "warmup_s": first,
        "seconds": times,
        "bytes": len(response.content),
    }
