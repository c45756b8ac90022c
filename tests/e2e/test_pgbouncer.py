"""PgBouncer in transaction mode in front of the test PostgreSQL.

What breaks behind a transaction-mode pooler, and the settings that make
goodfellaz17 work there (docs/ARCHITECTURE.md, "PgBouncer"):

- prepared statements: GOODFELLAZ17_DB_PREPARE_THRESHOLD empty (off);
- the `options` start-up parameter (statement timeout), refused by PgBouncer:
  GOODFELLAZ17_DB_STATEMENT_TIMEOUT_MS=0 sends none;
- LISTEN (session state, lost when the server connection goes back to the
  pool) and the migrations' advisory lock: GOODFELLAZ17_DIRECT_DATABASE_URL.

Then an order goes through the API and two workers (serve + worker), all via
PgBouncer, and is delivered exactly once per task.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from goodfellaz17.backends.simulated import read_ledger
from goodfellaz17.db.pool import connection_kwargs
from goodfellaz17.settings import load_settings
from tests.conftest import ORDERS_KEY
from tests.e2e.procs import Proc, service_env
from tests.e2e.test_worker_processes import assert_ledger_matches_accounting
from tests.helpers import free_port, health_is_up, violations, wait_until

pytestmark = pytest.mark.e2e

POOLER_SETTINGS = {"db_prepare_threshold": "", "db_statement_timeout_ms": 0}


@dataclass(frozen=True)
class Bouncer:
    port: int
    log: Path

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def clients(self) -> list[dict[str, Any]]:
        """SHOW CLIENTS on the admin console, which speaks only the simple
        query protocol (hence a client-side-binding cursor)."""
        with psycopg.connect(
            self.url("pgbouncer"),
            autocommit=True,
            cursor_factory=psycopg.ClientCursor,
            row_factory=dict_row,
        ) as admin:
            return admin.execute("SHOW CLIENTS").fetchall()


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        pytest.skip(
            "pgbouncer is not installed and `make test` could not install it "
            "(Debian package pgbouncer; `make debian-deps` as root)"
        )
    return found


@pytest.fixture(scope="module")
def bouncer(pg_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncer]:
    binary = pgbouncer_binary()
    socket_dir = parse_qs(urlsplit(pg_base_url).query)["host"][0]
    work = tmp_path_factory.mktemp("pgbouncer")
    port = free_port()
    ini = work / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={socket_dir} port=5432 user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
admin_users = postgres
pool_mode = transaction
default_pool_size = 20
max_client_conn = 500
server_reset_query =
"""
    )
    command = [binary]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; run it as the owner of the
        # PostgreSQL socket directory, which can reach the socket.
        owner = pwd.getpwuid(Path(socket_dir).stat().st_uid).pw_name
        os.chown(work, Path(socket_dir).stat().st_uid, -1)
        os.chown(ini, Path(socket_dir).stat().st_uid, -1)
        command += ["-u", owner]
    log = work / "pgbouncer.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([*command, str(ini)], stdout=out, stderr=subprocess.STDOUT)
    try:

        def accepting() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"pgbouncer exited: {log.read_text()[-2000:]}")
            try:
                with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres"):
                    return True
            except psycopg.OperationalError:
                return False

        wait_until(accepting, within=20, what="pgbouncer accepting")
        yield Bouncer(port, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def dbname(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def test_transaction_mode_breaks_what_the_pooler_settings_turn_off(
    bouncer: Bouncer, db_url: str
) -> None:
    pooled = bouncer.url(dbname(db_url))
    defaults = connection_kwargs(load_settings(), "probe")
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        psycopg.connect(pooled, **defaults).close()

    # Server-side prepared statements meet other clients' server connections.
    prepared = {**defaults, "prepare_threshold": 0}
    prepared.pop("options")
    conns = [psycopg.connect(pooled, **prepared) for _ in range(3)]
    try:
        with pytest.raises(psycopg.errors.DuplicatePreparedStatement):
            query_each(conns, times=10)
    finally:
        for conn in conns:
            conn.close()

    tuned = connection_kwargs(load_settings(**POOLER_SETTINGS), "probe")
    assert tuned["prepare_threshold"] is None
    conns = [psycopg.connect(pooled, **tuned) for _ in range(3)]
    try:
        assert query_each(conns, times=10) == 30
    finally:
        for conn in conns:
            conn.close()


def query_each(conns: list[psycopg.Connection[Any]], times: int) -> int:
    answered = 0
    for i in range(times):
        for conn in conns:
            row = conn.execute("SELECT %s::int AS n", (i,)).fetchone()  # dict rows
            if row is not None and row["n"] == i:
                answered += 1
    return answered


def notified_within(listen_url: str, notify_url: str, seconds: float) -> bool:
    with psycopg.connect(listen_url, autocommit=True) as listener:
        listener.execute("LISTEN goodfellaz17_probe")

        def notify() -> None:
            with psycopg.connect(notify_url, autocommit=True) as conn:
                conn.execute("NOTIFY goodfellaz17_probe, 'x'")

        threading.Thread(target=notify).start()
        return any(True for _ in listener.notifies(timeout=seconds, stop_after=1))


def test_listen_needs_the_direct_url(bouncer: Bouncer, db_url: str) -> None:
    pooled = bouncer.url(dbname(db_url))
    # NOTIFY through the pooler is fine (it is transactional); LISTEN is not.
    assert notified_within(db_url, pooled, seconds=5.0)
    assert not notified_within(pooled, pooled, seconds=1.5)


def test_api_and_workers_behind_pgbouncer_deliver_an_order_exactly(
    bouncer: Bouncer, db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    pooled = bouncer.url(dbname(db_url))
    ledger = tmp_path / "ledger.jsonl"
    port = free_port()
    env = service_env(
        pooled,
        direct_database_url=db_url,
        sim_ledger_path=ledger,
        # Longer than the test's deadline: only NOTIFY (LISTEN on the direct
        # URL) can get the order delivered in time.
        worker_poll_interval_seconds=120,
        **POOLER_SETTINGS,
    )
    server = Proc(["serve", "--port", str(port)], env, tmp_path / "serve.log")
    worker = Proc(["worker"], env, tmp_path / "worker.log")
    try:
        base = f"http://127.0.0.1:{port}"

        wait_until(lambda: health_is_up(base), within=30, what="serve healthy")
        wait_until(
            lambda: (
                sql.execute("SELECT count(*) FROM workers WHERE status = 'RUNNING'").fetchone()
                == (2,)
            ),
            within=30,
            what="two workers running",
        )
        started = time.monotonic()
        created = httpx.post(
            f"{base}/api/orders",
            json={"quantity": 15_000, "target": "behind-pgbouncer", "backend": "simulated"},
            headers={"X-Api-Key": ORDERS_KEY, "Idempotency-Key": "pgbouncer-1"},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]

        def completed() -> bool:
            order = httpx.get(
                f"{base}/api/orders/{order_id}", headers={"X-Api-Key": ORDERS_KEY}, timeout=5
            ).json()
            return bool(order["status"] == "COMPLETED")

        wait_until(completed, within=60, what="order completed via PgBouncer")
        assert time.monotonic() - started < 60
        clients = {c["application_name"].split(":")[0] for c in bouncer.clients()}
    finally:
        assert worker.terminate() == 0, worker.output()[-3000:]
        assert server.terminate() == 0, server.output()[-3000:]
        for proc in (worker, server):
            proc.close()
    assert {"goodfellaz17-api", "goodfellaz17-worker"} <= clients, clients
    assert "goodfellaz17-listen" not in clients, "LISTEN must bypass the pooler"
    order = sql.execute(
        "SELECT status, delivered, failed_permanent_plays FROM orders WHERE id = %s", (order_id,)
    ).fetchone()
    assert order == ("COMPLETED", 15_000, 0)
    attempts = sql.execute(
        "SELECT count(*), max(attempts), count(DISTINCT lease_owner) FROM order_tasks"
    ).fetchone()
    assert attempts == (38, 1, 2), "38 tasks, each executed once, by both workers"
    assert len(read_ledger(ledger)) == 38
    assert_ledger_matches_accounting(sql, ledger)
    assert violations(sql) == []
    assert "Application shutdown complete" in server.output()
    for log in (server.output(), worker.output()):
        assert "prepared statement" not in log
        assert "unsupported startup parameter" not in log
