"""PostgreSQL stops mid-run and comes back: API and workers reconnect by
themselves, the API answers 503 (not 500, not a hang) meanwhile, and no unit
is lost or counted twice."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from goodfellaz17.db.migrate import apply_migrations
from tests.conftest import OPERATOR_KEY
from tests.e2e.ledger import ledger_report
from tests.e2e.procs import Proc, service_env
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.e2e


class PrivateServer:
    """A PostgreSQL of this test's own, so it can be stopped without harming others."""

    def __init__(self, root: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver import _commands

        self._pg_ctl = _commands.pg_ctl
        self.server = pgserver.get_server(root / "pgdata", cleanup_mode="stop")
        self.url: str = self.server.get_uri()
        self.socket_dir = self.url.split("host=")[1]

    def stop(self) -> None:
        self._pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=self.server.pgdata, user=self.server.system_user
        )

    def start(self) -> None:
        self._pg_ctl(
            [
                "-w",
                "-o",
                '-h ""',
                "-o",
                f"-k {self.socket_dir}",
                "-l",
                str(self.server.log),
                "start",
            ],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def cleanup(self) -> None:
        self.server.cleanup()


@pytest.fixture
def private_pg(private_dir: Path) -> Iterator[PrivateServer]:
    server = PrivateServer(private_dir)
    apply_migrations(server.url)
    yield server
    server.cleanup()


def _get(client: httpx.Client, path: str) -> tuple[int, float]:
    started = time.monotonic()
    try:
        code = client.get(path).status_code
    except httpx.HTTPError:
        code = -1
    return code, time.monotonic() - started


def test_database_restart_mid_run_loses_nothing(private_pg: PrivateServer, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    port = free_port()
    common = {
        "sim_ledger_path": ledger,
        "task_lease_seconds": 3,
        "worker_heartbeat_seconds": 0.5,
        "sim_latency_ms": 300,
        "worker_concurrency": 4,
        "max_attempts": 100,
        "db_connect_timeout_seconds": 2,
    }
    server = Proc(
        ["serve"], service_env(private_pg.url, port=port, **common), tmp_path / "server.log"
    )
    worker = Proc(["worker"], service_env(private_pg.url, **common), tmp_path / "worker.log")
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, headers={"X-Api-Key": OPERATOR_KEY}, timeout=15) as client:
            wait_until(
                lambda: _get(client, "/actuator/health")[0] == 200, within=30, what="server up"
            )
            ids = [
                client.post("/api/orders", json={"quantity": 8_000, "target": f"r{i}"}).json()["id"]
                for i in range(3)
            ]
            wait_until(
                lambda: client.get(f"/api/orders/{ids[0]}").json()["delivered"] > 0,
                within=30,
                what="delivery under way",
            )

            private_pg.stop()
            down_codes = []
            for _ in range(4):
                health, health_s = _get(client, "/actuator/health")
                order, order_s = _get(client, f"/api/orders/{ids[0]}")
                down_codes.append((health, order))
                assert health_s < 5, "health must answer, not hang"
                assert order_s < 8, "the API must answer, not hang"
                time.sleep(0.5)
            assert all(code == (503, 503) for code in down_codes), down_codes
            private_pg.start()

            wait_until(
                lambda: _get(client, "/actuator/health")[0] == 200,
                within=30,
                what="health UP again",
            )
            wait_until(
                lambda: all(
                    client.get(f"/api/orders/{i}").json()["status"] == "COMPLETED" for i in ids
                ),
                within=120,
                interval=0.3,
                what="orders completed after restart",
            )
            orders = [client.get(f"/api/orders/{i}").json() for i in ids]
        assert server.popen.poll() is None, "the server must not have crashed"
        assert worker.popen.poll() is None, "the worker must not have crashed"
    finally:
        exit_codes = (worker.terminate(), server.terminate())
        worker.close()
        server.close()
    assert exit_codes == (0, 0), "SIGTERM is a graceful stop, exit 0"
    assert [o["delivered"] for o in orders] == [8_000] * 3
    with psycopg.connect(private_pg.url) as sql:
        report = ledger_report(sql, ledger)
        assert report["lost"] == 0, report
        assert report["double_counted"] == 0, report
        assert report["units_delivered"] == 24_000
        broken = sql.execute("SELECT count(*) FROM v_order_invariants WHERE NOT passed").fetchone()
        assert broken == (0,)
    # The processes came back by reconnecting, not by restarting in a loop.
    assert server.output().count("api started") == 1
    assert worker.output().count("worker started") == 1
