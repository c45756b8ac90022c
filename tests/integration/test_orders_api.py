"""The Order API: creation with task generation, reads, pagination, idempotency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg

from goodfellaz17.api.app import create_app
from tests.conftest import API_KEYS, OPERATOR_KEY, ORDERS_KEY, READ_KEY, key_headers, make_settings
from tests.integration.console_helpers import client_for


async def test_create_order_returns_201_with_its_38_tasks(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    response = await api.post(
        "/api/orders",
        headers=key_headers(ORDERS_KEY),
        json={"quantity": 15000, "target": "acct-42", "backend": "simulated"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["taskCount"] == 38
    assert body["status"] == "PENDING"
    assert body["failedPermanentPlays"] == 0
    assert body["delivered"] == 0
    rows = sql.execute(
        "SELECT count(*), sum(quantity), max(quantity) - min(quantity)"
        " FROM order_tasks WHERE order_id = %s",
        (body["id"],),
    ).fetchone()
    assert rows == (38, 15000, 1)


async def test_get_order_and_list_with_cursor_pagination(api: Any) -> None:
    ids = []
    for i in range(5):
        r = await api.post(
            "/api/orders", headers=key_headers(), json={"quantity": 100 + i, "target": f"t{i}"}
        )
        ids.append(r.json()["id"])
    got = await api.get(f"/api/orders/{ids[0]}", headers=key_headers(READ_KEY))
    assert got.status_code == 200
    assert got.json()["quantity"] == 100

    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/orders", headers=key_headers(READ_KEY), params=params)).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    pending = await api.get(
        "/api/orders", headers=key_headers(READ_KEY), params={"status": "COMPLETED"}
    )
    assert pending.json()["items"] == []


async def test_idempotent_retry_returns_the_same_order_and_a_different_body_conflicts(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    headers = key_headers(ORDERS_KEY, **{"Idempotency-Key": "order-abc"})
    body = {"quantity": 15000, "target": "acct-1"}
    first = await api.post("/api/orders", headers=headers, json=body)
    again = await api.post("/api/orders", headers=headers, json=body)
    other = await api.post("/api/orders", headers=headers, json={**body, "quantity": 14999})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    assert other.json()["field"] == "Idempotency-Key"
    assert sql.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert sql.execute("SELECT count(*) FROM order_tasks").fetchone() == (38,)


async def test_twenty_concurrent_identical_posts_create_exactly_one_order(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    headers = key_headers(ORDERS_KEY, **{"Idempotency-Key": "burst-1"})
    body = {"quantity": 15000, "target": "acct-burst"}
    responses = await asyncio.gather(
        *(api.post("/api/orders", headers=headers, json=body) for _ in range(20))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 19 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert sql.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    assert sql.execute("SELECT count(*) FROM order_tasks").fetchone() == (38,)


async def test_openapi_is_served_and_documents_the_order_routes(api: Any) -> None:
    spec = (await api.get("/openapi.json")).json()
    assert "/api/orders" in spec["paths"]
    assert "/api/orders/{orderId}" in spec["paths"]


OTHER_CLIENT_KEY = "test-other-orders-key-0123456789"


async def test_idempotency_keys_belong_to_the_api_key_that_used_them(db_url: str) -> None:
    # One orders client must not be able to pre-claim another's Idempotency-Keys.
    settings = make_settings(db_url, api_keys=f"{API_KEYS},{OTHER_CLIENT_KEY}:orders")
    app = create_app(settings, db_url, run_worker=False)
    body = {"quantity": 800, "target": "mine"}
    other_body = {"quantity": 1200, "target": "theirs"}

    async def post(key: str, json: dict[str, Any]) -> httpx.Response:
        headers = key_headers(key, **{"Idempotency-Key": "order-2026-0001"})
        response: httpx.Response = await client.post("/api/orders", headers=headers, json=json)
        return response

    async with app.router.lifespan_context(app), client_for(app) as client:
        first = await post(ORDERS_KEY, body)
        assert first.status_code == 201
        theirs = await post(OTHER_CLIENT_KEY, other_body)
        assert theirs.status_code == 201, theirs.text
        assert theirs.json()["id"] != first.json()["id"]
        assert theirs.json()["quantity"] == 1200
        replay = await post(OTHER_CLIENT_KEY, other_body)
        assert (replay.status_code, replay.json()["id"]) == (200, theirs.json()["id"])
        mine = await post(ORDERS_KEY, body)
        assert (mine.status_code, mine.json()["id"]) == (200, first.json()["id"])
        conflict = await post(ORDERS_KEY, other_body)
        assert conflict.status_code == 409
        assert conflict.json()["field"] == "Idempotency-Key"
        # Operators are callers of their own: their keys are theirs too.
        operators = await post(OPERATOR_KEY, body)
        assert operators.status_code == 201
