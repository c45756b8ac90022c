"""The command line: real subprocesses against a test database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from goodfellaz17.db.migrate import apply_migrations, migration_ids, pending_migrations
from tests.conftest import _url_for
from tests.e2e.procs import service_env


def run(db_url: str, *args: str, **env: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "goodfellaz17", *args],
        capture_output=True,
        text=True,
        env=service_env(db_url, **env),
        timeout=60,
        check=False,
    )


def test_orders_create_and_show(db_url: str) -> None:
    created = run(db_url, "orders", "create", "--quantity", "15000", "--target", "cli-t", "--json")
    assert created.returncode == 0, created.stderr
    order = json.loads(created.stdout)
    assert order["task_count"] == 38
    shown = run(db_url, "orders", "show", order["id"], "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["quantity"] == 15000
    listed = run(db_url, "orders", "list")
    assert order["id"] in listed.stdout


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["orders", "create", "--quantity", "0", "--target", "t"], {}, "quantity"),
        (["orders", "create", "--quantity", "10", "--target", ""], {}, "target"),
        (
            ["orders", "create", "--quantity", "10", "--target", "t", "--backend", "x"],
            {},
            "backend",
        ),
        (["orders", "show", "not-a-uuid"], {}, "ORDER_ID"),
        (["orders", "show", "00000000-0000-0000-0000-000000000000"], {}, "not found"),
        (["orders", "list", "--status", "DONE"], {}, "status"),
        (["orders", "list"], {"worker_batch_size": "zero"}, "GOODFELLAZ17_WORKER_BATCH_SIZE"),
        (["serve"], {"api_keys": ""}, "GOODFELLAZ17_API_KEYS"),
    ],
)
def test_errors_exit_2_with_one_readable_line(
    db_url: str, args: list[str], env: dict[str, str], needle: str
) -> None:
    result = run(db_url, *args, **env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(db_url: str) -> None:
    result = run(db_url, "orders", "create", "--quantity", "many", "--target", "t")
    assert result.returncode == 2


def test_two_replicas_migrating_at_once_apply_the_schema_once(pg_base_url: str) -> None:
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS gf_migrate_race")
        conn.execute("CREATE DATABASE gf_migrate_race")
    url = _url_for(pg_base_url, "gf_migrate_race")
    assert pending_migrations(url) == migration_ids()
    assert migration_ids()[0] == "0001_initial"
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            results.append(apply_migrations(url))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    migrations = len(migration_ids())
    assert migrations >= 2  # 0002 builds an index CONCURRENTLY while the others wait
    assert sorted(len(r) for r in results) == [0, 0, migrations]
    assert pending_migrations(url) == []
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM nodes").fetchone() == (1,)
    with psycopg.connect(pg_base_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE gf_migrate_race WITH (FORCE)")
