"""/metrics: auth, the scrape-time database gauges, the separate metrics port."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg
import pytest

from goodfellaz17.api.app import create_app
from goodfellaz17.db.repository import Repository
from goodfellaz17.metrics import DATABASE_GAUGES, DatabaseGaugeCollector, MetricsExporter
from goodfellaz17.services.invariant_monitor import InvariantMonitor
from tests.conftest import OPERATOR_KEY, ORDERS_KEY, READ_KEY, key_headers, make_settings
from tests.helpers import insert_order, set_task_states
from tests.observability import closed_port_url, free_port, parse_metrics, sample

METRICS_PATHS = ["/metrics", "/actuator/prometheus"]
CONTRACT_SERIES = [
    ("delivery_tasks_total", {"status": "completed"}),
    ("delivery_tasks_total", {"status": "failed_permanent"}),
    ("delivery_tasks_pending", {}),
    ("delivery_tasks_executing", {}),
    ("delivery_dead_letter_queue", {}),
    ("delivery_worker_active", {}),
    ("delivery_retries_total", {}),
    ("delivery_orphans_recovered_total", {}),
    ("delivery_plays_total", {"outcome": "delivered"}),
    ("delivery_plays_total", {"outcome": "failed"}),
    ("delivery_task_duration_seconds_count", {}),
    ("delivery_batch_duration_seconds_count", {}),
]


async def scrape(
    api: Any, key: str = READ_KEY
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await api.get("/metrics", headers=key_headers(key))
    assert response.status_code == 200, response.text
    return parse_metrics(response.text)


async def test_metrics_on_the_main_port_refuse_missing_and_wrong_keys(api: Any) -> None:
    for path in METRICS_PATHS:
        for key in (None, "", "wrong-key", READ_KEY + "x", READ_KEY[:-1]):
            headers = {} if key is None else {"X-Api-Key": key}
            response = await api.get(path, headers=headers)
            assert response.status_code == 401, (path, key)
            assert response.json()["field"] == "X-Api-Key"
            assert "delivery_" not in response.text


async def test_metrics_on_the_main_port_admit_every_role(api: Any) -> None:
    for path in METRICS_PATHS:
        for key in (READ_KEY, ORDERS_KEY, OPERATOR_KEY):
            response = await api.get(path, headers=key_headers(key))
            assert response.status_code == 200, (path, key)
            assert response.headers["content-type"].startswith("text/plain")
            metrics = parse_metrics(response.text)
            for name, labels in CONTRACT_SERIES:
                sample(metrics, name, **labels)
            assert sample(metrics, "delivery_database_up") == 1


def _seed_everything(sql: psycopg.Connection[Any]) -> None:
    """A database where every gauge has its own, distinct, non-zero value."""
    busy = insert_order(sql, 15_000)  # 38 tasks
    set_task_states(
        sql,
        busy,
        ["COMPLETED"] * 5 + ["EXECUTING"] * 4 + ["FAILED_RETRYING"] * 3 + ["FAILED_PERMANENT"] * 2,
    )
    # 3 of the 4 executing tasks were claimed 6 minutes ago; one has lost its lease.
    sql.execute(
        """UPDATE order_tasks SET started_at = now() - interval '6 minutes'
           WHERE order_id = %s AND seq IN (5, 6, 7)""",
        (busy,),
    )
    sql.execute(
        """UPDATE order_tasks SET lease_expires_at = now() - interval '1 second'
           WHERE order_id = %s AND seq = 5""",
        (busy,),
    )
    for hours, state in ((3, "COMPLETED"), (5, "COMPLETED"), (6, "EXECUTING"), (7, None)):
        order = insert_order(sql, 800)
        if state is not None:
            set_task_states(sql, order, [state])
        sql.execute(
            "UPDATE orders SET created_at = now() - make_interval(hours => %s) WHERE id = %s",
            (hours, order),
        )
    # The 6-hour order's executing task has lost its lease too: two violating orders.
    sql.execute(
        """UPDATE order_tasks SET lease_expires_at = now() - interval '1 second',
                  started_at = now() - interval '1 hour'
           WHERE status = 'EXECUTING' AND order_id IN (
               SELECT id FROM orders WHERE created_at < now() - interval '350 minutes')"""
    )
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, status, last_heartbeat_at) VALUES
           ('fresh-1', 'h', 1, 'RUNNING', now()),
           ('fresh-2', 'h', 2, 'STOPPING', now() - interval '5 seconds'),
           ('stale', 'h', 3, 'RUNNING', now() - interval '10 minutes'),
           ('stopped', 'h', 4, 'STOPPED', now())"""
    )
    sql.execute("UPDATE chaos_settings SET enabled = true, expires_at = now() + interval '1 hour'")
    sql.execute(
        """INSERT INTO nodes (provider, node_identifier, enabled, circuit_state,
                              circuit_opened_until) VALUES
           ('simulated', 'healthy-2', true, 'CLOSED', NULL),
           ('simulated', 'half-open', true, 'OPEN', now() - interval '1 second'),
           ('simulated', 'open', true, 'OPEN', now() + interval '1 minute'),
           ('simulated', 'disabled', false, 'CLOSED', NULL)"""
    )


def _expected_from_sql(sql: psycopg.Connection[Any]) -> dict[str, float]:
    """The gauges, computed the plain way (no index tricks) to compare with."""

    def one(query: str) -> float:
        row = sql.execute(query).fetchone()
        assert row is not None
        return float(row[0])

    def tasks(where: str) -> float:
        return one(f"SELECT count(*) FROM order_tasks WHERE {where}")

    return {
        "delivery_tasks_pending": tasks("status = 'PENDING'"),
        "delivery_tasks_retrying": tasks("status = 'FAILED_RETRYING'"),
        "delivery_tasks_executing": tasks("status = 'EXECUTING'"),
        "delivery_tasks_executing_over_5m": tasks(
            "status = 'EXECUTING' AND now() - started_at > interval '5 minutes'"
        ),
        "delivery_dead_letter_queue": tasks("status = 'FAILED_PERMANENT'"),
        "delivery_worker_active": one(
            """SELECT count(*) FROM workers WHERE status IN ('RUNNING', 'STOPPING')
               AND now() - last_heartbeat_at < interval '30 seconds'"""
        ),
        "delivery_orders_processing_over_2h": one(
            """SELECT count(*) FROM orders WHERE status = 'PROCESSING'
               AND created_at < now() - interval '2 hours'"""
        ),
        "delivery_orders_processing_over_4h": one(
            """SELECT count(*) FROM orders WHERE status = 'PROCESSING'
               AND created_at < now() - interval '4 hours'"""
        ),
        "delivery_invariant_violations": one(
            "SELECT count(*) FROM v_order_invariants WHERE NOT passed"
        ),
        "delivery_chaos_enabled": 1.0,
        "delivery_nodes_healthy": one(
            """SELECT count(*) FROM nodes WHERE enabled
               AND (circuit_state <> 'OPEN' OR circuit_opened_until <= now())"""
        ),
        "delivery_nodes_registered": one("SELECT count(*) FROM nodes"),
    }


async def test_database_gauges_equal_what_the_database_says(
    api: Any, sql: psycopg.Connection[Any], repo: Repository
) -> None:
    _seed_everything(sql)
    before_check = await scrape(api)
    assert sample(before_check, "delivery_invariant_violations") == 0
    assert ("delivery_invariant_last_check_timestamp_seconds", frozenset()) not in before_check

    await InvariantMonitor(repo, 60).run_once()
    metrics = await scrape(api)
    expected = _expected_from_sql(sql)

    # Each seeded value is distinct where it matters, so a swapped column shows.
    assert expected["delivery_tasks_pending"] == 24 + 1 + 1 + 1 + 2  # busy order + the others
    assert expected["delivery_tasks_executing"] == 5
    assert expected["delivery_tasks_executing_over_5m"] == 4
    assert expected["delivery_tasks_retrying"] == 3
    assert expected["delivery_dead_letter_queue"] == 2
    assert expected["delivery_orders_processing_over_2h"] == 3
    assert expected["delivery_orders_processing_over_4h"] == 2
    assert expected["delivery_invariant_violations"] == 2
    assert expected["delivery_worker_active"] == 2
    assert expected["delivery_nodes_healthy"] == 3
    assert expected["delivery_nodes_registered"] == 5
    for name, value in expected.items():
        assert sample(metrics, name) == value, name
    checked_at = sql.execute(
        """SELECT extract(epoch FROM max(check_timestamp)) FROM invariant_check_log
           WHERE scope = 'GLOBAL' AND order_id IS NULL"""
    ).fetchone()
    assert checked_at is not None
    assert sample(metrics, "delivery_invariant_last_check_timestamp_seconds") == pytest.approx(
        float(checked_at[0])
    )
    assert {g.name for g in DATABASE_GAUGES} <= {name for name, _ in metrics}


async def test_invariant_gauge_reads_the_latest_check_and_never_runs_one(
    api: Any, sql: psycopg.Connection[Any], repo: Repository
) -> None:
    order = insert_order(sql, 800)
    set_task_states(sql, order, ["EXECUTING"])
    sql.execute("UPDATE order_tasks SET lease_expires_at = now() - interval '1 second'")
    await InvariantMonitor(repo, 60).run_once()
    assert sample(await scrape(api), "delivery_invariant_violations") == 1

    sql.execute("UPDATE order_tasks SET lease_expires_at = now() + interval '5 minutes'")
    logged = sql.execute("SELECT count(*) FROM invariant_check_log").fetchone()
    assert sample(await scrape(api), "delivery_invariant_violations") == 1  # until re-checked
    assert sql.execute("SELECT count(*) FROM invariant_check_log").fetchone() == logged

    await InvariantMonitor(repo, 60).run_once()
    assert sample(await scrape(api), "delivery_invariant_violations") == 0


async def test_the_background_invariant_check_runs_on_its_interval(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    settings = make_settings(db_url, invariant_check_interval_seconds=0.05)
    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app):
        deadline = time.monotonic() + 10
        while True:
            row = sql.execute(
                "SELECT count(*) FROM invariant_check_log WHERE scope = 'GLOBAL'"
            ).fetchone()
            if row is not None and row[0] >= 2:
                break
            assert time.monotonic() < deadline, "no periodic GLOBAL invariant check was logged"
            await asyncio.sleep(0.05)


class _CountingRepo(Repository):
    """The real repository, counting gauge reads."""

    def __init__(self, repo: Repository) -> None:
        super().__init__(repo.pool)
        self.gauge_reads = 0

    async def metrics_gauges(self, *, stale_after_seconds: float, connect_timeout: float) -> Any:
        self.gauge_reads += 1
        return await super().metrics_gauges(
            stale_after_seconds=stale_after_seconds, connect_timeout=connect_timeout
        )


async def test_concurrent_scrapes_share_one_database_read(repo: Repository) -> None:
    from prometheus_client import CollectorRegistry

    counting = _CountingRepo(repo)
    exporter = MetricsExporter(
        CollectorRegistry(), DatabaseGaugeCollector(counting, stale_after_seconds=30)
    )
    bodies = await asyncio.gather(*(exporter.render() for _ in range(8)))
    assert counting.gauge_reads == 1
    assert all(b"delivery_tasks_pending 0.0" in body for body in bodies)
    await exporter.render()  # a later scrape reads again: values are never stale
    assert counting.gauge_reads == 2


async def test_a_scrape_with_the_database_down_answers_fast_without_the_gauges() -> None:
    url = closed_port_url()
    settings = make_settings(url, db_connect_timeout_seconds=1, invariant_check_interval_seconds=0)
    app = create_app(settings, url, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            started = time.monotonic()
            response = await client.get("/metrics", headers=key_headers(READ_KEY))
            elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed < 5
    metrics = parse_metrics(response.text)
    assert sample(metrics, "delivery_database_up") == 0
    assert sample(metrics, "delivery_tasks_total", status="completed") == 0
    names = {name for name, _ in metrics}
    assert not names & {g.name for g in DATABASE_GAUGES}


async def test_the_metrics_port_serves_without_a_key(db_url: str) -> None:
    port = free_port()
    settings = make_settings(db_url, metrics_port=port, invariant_check_interval_seconds=0)
    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient() as client:
        for path in METRICS_PATHS:
            response = await client.get(f"http://127.0.0.1:{port}{path}")
            assert response.status_code == 200
            metrics = parse_metrics(response.text)
            assert sample(metrics, "delivery_database_up") == 1
            for name, labels in CONTRACT_SERIES:
                sample(metrics, name, **labels)
        assert (await client.get(f"http://127.0.0.1:{port}/api/orders")).status_code == 404
        assert (await client.post(f"http://127.0.0.1:{port}/metrics")).status_code == 405
        # The main port still wants a key.
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as main:
            assert (await main.get("/metrics")).status_code == 401
    with pytest.raises(httpx.ConnectError):  # closed with the app
        await httpx.AsyncClient().get(f"http://127.0.0.1:{port}/metrics")


async def test_a_busy_metrics_port_stops_start_up(db_url: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = make_settings(db_url, metrics_port=port, invariant_check_interval_seconds=0)
        app = create_app(settings, db_url, run_worker=False)
        with pytest.raises(OSError, match="in use"):
            async with app.router.lifespan_context(app):
                pass


def test_gauge_names_are_unique_and_prefixed() -> None:
    names = [g.name for g in DATABASE_GAUGES]
    assert len(names) == len(set(names))
    assert all(n.startswith("delivery_") and not n.endswith("_total") for n in names)
