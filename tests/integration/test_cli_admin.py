"""The operator CLI against a real database: same results as the API,
tables by default, --json for scripts, exit 2 with one line on errors."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import structlog
from typer.testing import CliRunner

from goodfellaz17.cli import app
from tests.helpers import insert_order, set_task_states, violations

MIXED = ["COMPLETED"] * 4 + ["FAILED_PERMANENT"] * 2 + ["FAILED_RETRYING"] * 2 + ["EXECUTING"]


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Runs a command; the CLI configures logging, so it is put back afterwards."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    runner = CliRunner()
    saved_structlog = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (args, result.stdout, result.stderr, result.exception)
        return result

    yield run
    structlog.configure(**saved_structlog)
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def as_json(result: Any) -> Any:
    return json.loads(result.stdout)


def one_line_error(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_reads_mirror_the_admin_api(cli: Any, sql: psycopg.Connection[Any]) -> None:
    order_id = insert_order(sql, 4000)
    set_task_states(sql, order_id, MIXED)

    status = as_json(cli("status", "--json"))
    assert status["scope"] == "fleet"
    assert status["workerId"] is None
    assert {"totalProcessed", "recoveredOrphans", "isRunning", "workers"} <= set(status)

    progress = as_json(cli("orders", "progress", str(order_id), "--json"))
    assert progress["tasks"]["COMPLETED"] == {"tasks": 4, "units": 1600}
    assert progress["percentComplete"] == 40.0
    failed = as_json(cli("orders", "failed-tasks", str(order_id), "--json"))
    assert failed["count"] == 2
    assert {t["lastError"] for t in failed["tasks"]} == {"seeded failure"}
    assert {(t["attempts"], t["orphanings"]) for t in failed["tasks"]} == {(1, 0)}
    assert "orphanings" in cli("orders", "failed-tasks", str(order_id)).stdout
    capacity = as_json(cli("capacity", "--json"))
    assert capacity["backlogUnits"] == 3 * 400  # one PENDING, two FAILED_RETRYING
    assert capacity["healthyNodes"] == 1

    checked = as_json(cli("invariants", "check", str(order_id), "--json"))
    assert checked["passed"] is True
    assert as_json(cli("invariants", "check", "--json"))["passed"] is True
    assert as_json(cli("invariants", "check", "--orphans", "--json"))["count"] == 0

    table = cli("orders", "progress", str(order_id)).stdout
    assert "FAILED_PERMANENT" in table
    assert "percentComplete" in table
    assert "sim-local-1" in cli("nodes", "list").stdout


def test_invariant_violations_exit_1(cli: Any, sql: psycopg.Connection[Any]) -> None:
    order_id = insert_order(sql, 4000)
    sql.execute("UPDATE orders SET failed_permanent_plays = 5 WHERE id = %s", (order_id,))
    result = cli("invariants", "check", "--all", "--json", code=1)
    assert as_json(result)["violations"][0]["check"] == (
        "failed_permanent_plays_equals_dead_letter_tasks"
    )
    assert (
        "failed_permanent_plays_equals_dead_letter_tasks"
        in cli("invariants", "check", str(order_id), code=1).stdout
    )


def test_operator_actions_keep_invariants_and_record_the_os_user(
    cli: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = str(insert_order(sql, 4000))
    set_task_states(sql, uuid.UUID(order_id), MIXED)

    assert as_json(cli("orders", "retry-now", order_id, "--json"))["tasksAffected"] == 2
    drained = as_json(cli("dlq", "drain", order_id, "--json"))
    assert drained["tasksAffected"] == 2
    assert drained["actor"].startswith("cli:")
    refused = cli("orders", "force-complete", order_id, code=2)
    assert "EXECUTING" in one_line_error(refused)
    assert "EXECUTING" in one_line_error(cli("orders", "cancel", order_id, code=2))
    cancelled = as_json(cli("orders", "cancel", order_id, "--force", "--json"))
    assert cancelled["tasksAffected"] == 2 + 2 + 1 + 1
    done = cli("orders", "force-complete", order_id)
    assert "COMPLETED" in done.stdout
    assert violations(sql) == []
    actors = sql.execute("SELECT DISTINCT actor FROM operator_actions").fetchall()
    assert len(actors) == 1
    assert actors[0][0].startswith("cli:")
    actions = [a for (a,) in sql.execute("SELECT action FROM operator_actions ORDER BY id")]
    assert actions == ["retry_now", "drain_dead_letters", "cancel", "force_complete"]


def test_nodes_and_chaos(cli: Any, sql: psycopg.Connection[Any]) -> None:
    node = as_json(
        cli("nodes", "add", "--provider", "simulated", "--identifier", "sim-9", "--json")
    )
    assert node["nodeIdentifier"] == "sim-9"
    assert "already registered" in one_line_error(
        cli("nodes", "add", "--provider", "simulated", "--identifier", "sim-9", code=2)
    )
    assert "provider" in one_line_error(
        cli("nodes", "add", "--provider", "pigeon", "--identifier", "p", code=2)
    )
    disabled = as_json(cli("nodes", "disable", str(node["id"]), "--json"))
    assert disabled["state"] == "DISABLED"
    assert "not found" in one_line_error(cli("nodes", "disable", "424242", code=2))

    on = as_json(cli("chaos", "enable", "--pause", "--ttl", "30", "--json"))
    assert on["active"] is True
    assert on["workerPaused"] is True
    assert 25 <= on["remainingSeconds"] <= 30
    assert as_json(cli("chaos", "status", "--json"))["workerPaused"] is True
    assert as_json(cli("chaos", "disable", "--json"))["active"] is False
    assert "failureRate" in one_line_error(cli("chaos", "enable", "--failure-rate", "2", code=2))


def test_chaos_forbidden_by_configuration(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_CHAOS_ALLOWED", "false")
    assert "GOODFELLAZ17_CHAOS_ALLOWED" in one_line_error(cli("chaos", "enable", code=2))


def test_bad_arguments_exit_2_with_one_line(cli: Any) -> None:
    assert "ORDER_ID" in one_line_error(cli("orders", "progress", "nope", code=2))
    assert "not found" in one_line_error(cli("dlq", "drain", str(uuid.uuid4()), code=2))
    both = cli("invariants", "check", str(uuid.uuid4()), "--all", code=2)
    assert "one of" in one_line_error(both)
