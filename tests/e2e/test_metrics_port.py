"""Real processes: `goodfellaz17 worker` and `goodfellaz17 serve` serve their
metrics on GOODFELLAZ17_METRICS_PORT without a key, and stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import API_KEYS, READ_KEY, SESSION_SECRET
from tests.helpers import insert_order, wait_until
from tests.observability import free_port, parse_metrics, sample

pytestmark = pytest.mark.e2e

CLI = str(Path(sys.executable).parent / "goodfellaz17")


@contextmanager
def process(
    args: list[str], env: dict[str, str], tmp_path: Path, ok_codes: tuple[int, ...] = (0,)
) -> Iterator[subprocess.Popen[bytes]]:
    """Run the CLI; on the way out, SIGTERM it and require a clean exit."""
    log = (tmp_path / f"{args[0]}.log").open("wb")
    full_env = {**os.environ, **env}
    proc = subprocess.Popen([CLI, *args], env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            log.close()
        assert code in ok_codes, (tmp_path / f"{args[0]}.log").read_text()


def poll(check: Callable[[], Any], what: str, seconds: float = 30) -> Any:
    """Call `check` until it returns a truthy value (connection errors retry)."""
    return wait_until(check, seconds, what, interval=0.1, retry_on=(httpx.TransportError,))


def api_only_env(db_url: str, tmp_path: Path, metrics_port: int, **extra: str) -> dict[str, str]:
    """`serve` without a worker, its metrics on `metrics_port`."""
    return {
        "DATABASE_URL": db_url,
        "GOODFELLAZ17_API_KEYS": API_KEYS,
        "GOODFELLAZ17_METRICS_PORT": str(metrics_port),
        "GOODFELLAZ17_WORKER_ENABLED": "false",
        "GOODFELLAZ17_DATA_DIR": str(tmp_path / "data"),
        **extra,
    }


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
    response = httpx.get(url, timeout=5)
    return parse_metrics(response.text) if response.status_code == 200 else None


def test_a_lone_worker_serves_its_metrics_port(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    env = {
        "DATABASE_URL": db_url,
        "GOODFELLAZ17_METRICS_PORT": str(port),
        "GOODFELLAZ17_SIM_LATENCY_MS": "0",
        "GOODFELLAZ17_SIM_USE_NODE_RATE": "false",
        "GOODFELLAZ17_WORKER_HEARTBEAT_SECONDS": "0.5",
        "GOODFELLAZ17_DATA_DIR": str(tmp_path / "data"),
    }
    with process(["worker"], env, tmp_path):
        poll(lambda: (m := scrape(url)) and sample(m, "delivery_worker_active") == 1, "worker")
        order = insert_order(sql, 800)

        def delivered() -> Any:
            m = scrape(url)
            return m and sample(m, "delivery_plays_total", outcome="delivered") == 800 and m

        metrics = poll(delivered, "the order's 800 units")
        assert sample(metrics, "delivery_tasks_total", status="completed") == 2
        assert sample(metrics, "delivery_task_duration_seconds_count") == 2
        assert sample(metrics, "delivery_database_up") == 1
        row = sql.execute("SELECT delivered FROM orders WHERE id = %s", (order,)).fetchone()
        assert row == (800,)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)


def test_serve_keeps_a_key_on_the_main_port_and_none_on_the_metrics_port(
    db_url: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = api_only_env(db_url, tmp_path, metrics_port)
    with process(["serve", "--port", str(port)], env, tmp_path, ok_codes=(0,)):
        metrics = poll(lambda: scrape(f"http://127.0.0.1:{metrics_port}/metrics"), "metrics")
        sample(metrics, "delivery_tasks_total", status="completed")
        assert sample(metrics, "delivery_database_up") == 1
        main = f"http://127.0.0.1:{port}"
        poll(lambda: httpx.get(f"{main}/actuator/health").status_code == 200, "the API")
        assert httpx.get(f"{main}/metrics").status_code == 401
        assert httpx.get(f"{main}/actuator/prometheus").status_code == 401
        keyed = httpx.get(f"{main}/metrics", headers={"X-Api-Key": READ_KEY})
        assert keyed.status_code == 200
        assert "delivery_dead_letter_queue" in keyed.text


def test_production_serve_hides_its_software_and_keeps_its_docs_behind_a_key(
    db_url: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = api_only_env(
        db_url,
        tmp_path,
        metrics_port,
        GOODFELLAZ17_ENV="production",
        GOODFELLAZ17_SESSION_SECRET=SESSION_SECRET,
    )
    with process(["serve", "--port", str(port)], env, tmp_path, ok_codes=(0,)):
        main = f"http://127.0.0.1:{port}"
        health = poll(lambda: (r := httpx.get(f"{main}/actuator/health")).is_success and r, "API")
        metrics = poll(lambda: httpx.get(f"http://127.0.0.1:{metrics_port}/metrics"), "metrics")
        for response in (health, metrics, httpx.get(f"{main}/api/orders")):
            assert "server" not in response.headers, response.headers
        for path in ("/docs", "/redoc", "/openapi.json"):
            refused = httpx.get(main + path)
            assert refused.status_code == 401, path
            assert "server" not in refused.headers
            assert httpx.get(main + path, headers={"X-Api-Key": READ_KEY}).status_code == 200
