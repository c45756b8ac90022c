"""The webhook backend against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from goodfellaz17.backends.base import (
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from goodfellaz17.backends.webhook import WebhookBackend
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import make_settings
from tests.helpers import insert_order, order_row, violations


class Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.seen.append((self.path, self.headers.get("Idempotency-Key"), body))
        if self.path == "/hang":
            time.sleep(2)
        status = {
            "/ok": 200,
            "/accepted": 202,
            "/429": 429,
            "/500": 500,
            "/503": 503,
            "/400": 400,
            "/404": 404,
            "/hang": 200,
        }.get(self.path, 200)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def request(endpoint: str) -> DeliveryRequest:
    return DeliveryRequest(
        task_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        quantity=400,
        target="acct",
        attempt=1,
        fencing_token=7,
        node_id=1,
        node_identifier="hook-1",
        endpoint=endpoint,
        capacity_per_hour=3600,
    )


@pytest.mark.parametrize(
    ("path", "outcome"),
    [
        ("/ok", None),
        ("/accepted", None),
        ("/429", RetryableDeliveryError),
        ("/500", RetryableDeliveryError),
        ("/503", RetryableDeliveryError),
        ("/hang", RetryableDeliveryError),
        ("/400", PermanentDeliveryError),
        ("/404", PermanentDeliveryError),
    ],
)
async def test_each_response_maps_to_its_outcome_with_the_idempotency_key(
    receiver: str, path: str, outcome: type[Exception] | None
) -> None:
    backend = WebhookBackend(timeout_seconds=0.3)
    req = request(receiver + path)
    try:
        if outcome is None:
            await backend.deliver(req)
        else:
            with pytest.raises(outcome):
                await backend.deliver(req)
    finally:
        await backend.aclose()
    [(seen_path, key, body)] = Receiver.seen
    assert seen_path == path
    assert key == str(req.task_id)
    assert b'"quantity":400' in body.replace(b" ", b"")


async def test_an_unreachable_endpoint_is_retryable() -> None:
    backend = WebhookBackend(timeout_seconds=0.5)
    try:
        with pytest.raises(RetryableDeliveryError):
            await backend.deliver(request("http://127.0.0.1:9/unreachable"))
    finally:
        await backend.aclose()


async def test_worker_delivers_a_webhook_order_with_task_ids_as_keys(
    db_url: str, sql: psycopg.Connection[Any], receiver: str
) -> None:
    sql.execute(
        "INSERT INTO nodes (provider, node_identifier, endpoint) VALUES ('webhook', 'hook-1', %s)",
        (receiver + "/ok",),
    )
    order_id = insert_order(sql, 2_000, backend="webhook")
    settings = make_settings(db_url)
    worker = OrderDeliveryWorker(settings, db_url, registry=CollectorRegistry())
    task = await worker.start()
    deadline = time.monotonic() + 20
    while order_row(sql, order_id)["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await worker.stop()
    await task
    task_ids = {str(r[0]) for r in sql.execute("SELECT id FROM order_tasks").fetchall()}
    assert {key for _, key, _ in Receiver.seen} == task_ids
    assert violations(sql) == []
