"""Logs: task events carry the task's identity, orphan rescues say so, JSON in
production, and no API key (valid or not) ever reaches a log line."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import httpx
import psycopg
import pytest
import structlog
from prometheus_client import CollectorRegistry

from goodfellaz17.api.app import create_app
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import (
    OPERATOR_KEY,
    ORDERS_KEY,
    READ_KEY,
    key_headers,
    make_settings,
)
from tests.helpers import insert_order
from tests.observability import captured_logs, json_lines

TASK_FIELDS = ("order_id", "task_id", "worker_id", "attempt", "node")
# Every event the worker logs about one task.
TASK_EVENTS = {
    "task completed",
    "task failed, will retry",
    "task dead-lettered",
    "Recovering orphaned task",
    "lease lost: outcome not recorded",
    "lease lost while executing",
    "backend raised unexpectedly",
}


def _seed_orphan(sql: psycopg.Connection[Any]) -> tuple[uuid.UUID, uuid.UUID]:
    order = insert_order(sql, 400)
    row = sql.execute(
        """UPDATE order_tasks SET status = 'EXECUTING', attempts = 2,
               lease_owner = 'dead-worker', lease_expires_at = now() - interval '1 second',
               fencing_token = nextval('order_tasks_fencing_token_seq'),
               started_at = now() - interval '10 minutes',
               node_id = (SELECT id FROM nodes WHERE node_identifier = 'sim-local-1')
           WHERE order_id = %s RETURNING id""",
        (order,),
    ).fetchone()
    assert row is not None
    return order, row[0]


async def test_every_task_event_names_order_task_worker_attempt_and_node(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    orphan_order, orphan_task = _seed_orphan(sql)
    insert_order(sql, 15_000)
    settings = make_settings(
        db_url,
        env="production",
        log_format="auto",
        log_level="debug",
        sim_failure_rate=0.4,
        sim_permanent_failure_rate=0.05,
        max_attempts=3,
        circuit_failure_threshold=1000,
    )
    with captured_logs(settings) as buffer:
        worker = OrderDeliveryWorker(settings, db_url, registry=CollectorRegistry())
        await worker.start()
        try:
            deadline = time.monotonic() + 60
            while sql.execute(
                """SELECT count(*) FROM order_tasks
                   WHERE status IN ('PENDING', 'EXECUTING', 'FAILED_RETRYING')"""
            ).fetchone() != (0,):
                assert time.monotonic() < deadline, "orders not finished in 60 s"
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()
    lines = json_lines(buffer)  # production logs are JSON, one object per line

    task_lines = [line for line in lines if line["event"] in TASK_EVENTS]
    seen = {line["event"] for line in task_lines}
    assert {
        "task completed",
        "task failed, will retry",
        "task dead-lettered",
        "Recovering orphaned task",
    } <= seen
    for line in task_lines:
        missing = [f for f in TASK_FIELDS if line.get(f) in (None, "")]
        assert not missing, f"{line['event']!r} lacks {missing}: {line}"
        assert line["worker_id"] == worker.worker_id
        assert line["node"] == "sim-local-1"
        uuid.UUID(line["order_id"])
        uuid.UUID(line["task_id"])

    (rescue,) = [line for line in lines if line["event"] == "Recovering orphaned task"]
    assert rescue["order_id"] == str(orphan_order)
    assert rescue["task_id"] == str(orphan_task)
    assert rescue["attempt"] == 2
    assert rescue["lost_by"] == "dead-worker"
    assert rescue["level"] == "warning"


async def test_api_keys_never_appear_in_any_log_line(db_url: str) -> None:
    settings = make_settings(
        db_url,
        env="production",
        log_format="auto",
        log_level="debug",
        invariant_check_interval_seconds=0,
        sim_failure_rate=0.2,
    )
    wrong_keys = ["wrong-key-0123456789abcdef", OPERATOR_KEY + "x", READ_KEY[:-1]]
    secrets = [READ_KEY, ORDERS_KEY, OPERATOR_KEY, *wrong_keys]
    with captured_logs(settings) as buffer:
        app = create_app(settings, db_url, run_worker=True)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                created = await client.post(
                    "/api/orders",
                    headers=key_headers(ORDERS_KEY, **{"Idempotency-Key": "log-test"}),
                    json={"quantity": 1200, "target": "logs"},
                )
                assert created.status_code == 201
                order_id = created.json()["id"]
                for key in secrets:
                    for headers in (
                        {"X-Api-Key": key},
                        {"Authorization": f"Bearer {key}"},
                        {"X-Api-Key": key, "Content-Type": "text/plain"},
                    ):
                        await client.get(f"/api/orders/{order_id}", headers=headers)
                        await client.get("/metrics", headers=headers)
                        await client.post("/api/orders", headers=headers, json={"quantity": -1})
                        await client.get(f"/api/orders/not-a-uuid?api_key={key}", headers=headers)
                        await client.post("/api/orders", headers=headers, content=b"{not json")
                deadline = time.monotonic() + 30
                while (await client.get(f"/api/orders/{order_id}", headers=key_headers())).json()[
                    "status"
                ] != "COMPLETED":
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
        # A library that logs a request's headers, the way some HTTP clients do
        # at debug level: the field names and the configured keys are scrubbed.
        logging.getLogger("some.http.client").debug(
            "sending request with X-Api-Key: %s", OPERATOR_KEY
        )
        structlog.get_logger("test").info(
            "request headers", headers={"X-Api-Key": wrong_keys[0], "Accept": "*/*"}
        )

    output = buffer.getvalue()
    events = {line["event"] for line in json_lines(buffer)}
    # The run logged plenty: start-up, the worker's task events, the stop.
    assert {"api started", "worker started", "worker stopped", "request headers"} <= events
    requests = [line for line in json_lines(buffer) if line["event"] == "http request"]
    assert len(requests) > 5 * len(secrets) * 3
    assert {r["status"] for r in requests} >= {200, 401, 415}
    for secret in secrets:
        assert secret not in output
    assert "[redacted]" in output
    assert json.loads(output.splitlines()[-1])["headers"]["Accept"] == "*/*"


def test_the_console_format_is_readable_lines_not_json() -> None:
    with captured_logs(make_settings(None, log_format="console")) as buffer:
        structlog.get_logger("t").info("hello operator", order_id="o-1")
    line = buffer.getvalue().strip()
    assert "hello operator" in line
    assert "order_id=o-1" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


# ---------------------------------------------------------------- exceptions and URLs


DB_PASSWORD = "s3cr3t-db-passw0rd"
DB_URL = f"postgresql://goodfellaz17:{DB_PASSWORD}@db.internal:5432/goodfellaz17"


def _raise_with_secrets() -> None:
    raise RuntimeError(f"could not use {OPERATOR_KEY} on {DB_URL}")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_exceptions_are_scrubbed_after_the_traceback_is_formatted(log_format: str) -> None:
    settings = make_settings(None, log_format=log_format)
    with captured_logs(settings) as buffer:
        try:
            _raise_with_secrets()
        except RuntimeError:
            structlog.get_logger("t").exception("structlog saw it")
            logging.getLogger("some.library").exception("the stdlib saw it")
        try:
            _raise_with_secrets()
        except RuntimeError as exc:
            structlog.get_logger("t").warning("passed as a value", error=exc)
    output = buffer.getvalue()
    assert "structlog saw it" in output
    assert "the stdlib saw it" in output
    assert "_raise_with_secrets" in output, "the traceback itself is kept"
    assert output.count("RuntimeError") >= 3
    assert OPERATOR_KEY not in output
    assert DB_PASSWORD not in output
    assert "db.internal:5432" in output, "only the password is hidden"


def test_database_passwords_are_scrubbed_from_every_line() -> None:
    settings = make_settings(DB_URL.replace(DB_PASSWORD, "configured-pw-1234"))
    forms = [
        DB_URL,
        DB_URL.replace("postgresql://", "postgres://"),
        f"host=db.internal user=goodfellaz17 password={DB_PASSWORD} dbname=x",
        f"host=db.internal password='{DB_PASSWORD}' dbname=x",
    ]
    with captured_logs(settings) as buffer:
        for n, text in enumerate(forms):
            structlog.get_logger("t").info("connecting", url=text, n=n)
            logging.getLogger("psycopg.pool").warning("connection failed: %s", text)
        structlog.get_logger("t").info("the configured one", detail="pw is configured-pw-1234")
    output = buffer.getvalue()
    assert DB_PASSWORD not in output
    assert "configured-pw-1234" not in output
    assert output.count("db.internal") >= 2 * len(forms)
