"""Bad input: a 4xx with a JSON body naming the field, and nothing written."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import key_headers

VALID = {"quantity": 15000, "target": "acct", "backend": "simulated"}


def snapshot(sql: psycopg.Connection[Any]) -> tuple[Any, ...]:
    return tuple(
        sql.execute(
            f"SELECT count(*), md5(COALESCE(string_agg(t::text, ',' ORDER BY t::text),''))"
            f" FROM {table} t"
        ).fetchone()
        for table in ("orders", "order_tasks", "nodes", "workers", "chaos_settings")
    )


BAD_ORDERS: list[tuple[str, Any, int, str]] = [
    ("zero quantity", {**VALID, "quantity": 0}, 422, "quantity"),
    ("negative quantity", {**VALID, "quantity": -5}, 422, "quantity"),
    ("quantity over the maximum", {**VALID, "quantity": 1_000_001}, 422, "quantity"),
    ("huge quantity", {**VALID, "quantity": 10**30}, 422, "quantity"),
    ("fractional quantity", {**VALID, "quantity": 1.5}, 422, "quantity"),
    ("quantity as string", {**VALID, "quantity": "15000"}, 422, "quantity"),
    ("quantity as bool", {**VALID, "quantity": True}, 422, "quantity"),
    ("missing quantity", {"target": "acct"}, 422, "quantity"),
    ("missing target", {"quantity": 10}, 422, "target"),
    ("empty target", {**VALID, "target": ""}, 422, "target"),
    ("blank target", {**VALID, "target": "   "}, 422, "target"),
    ("over-long target", {**VALID, "target": "x" * 513}, 422, "target"),
    ("control characters in target", {**VALID, "target": "a\x00b"}, 422, "target"),
    ("target as number", {**VALID, "target": 12}, 422, "target"),
    ("unknown backend", {**VALID, "backend": "carrier-pigeon"}, 422, "backend"),
    ("unknown field", {**VALID, "priority": "high"}, 422, "priority"),
    ("body is a list", [VALID], 422, "body"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "field"), BAD_ORDERS, ids=[c[0] for c in BAD_ORDERS]
)
async def test_bad_order_bodies_are_refused_naming_the_field(
    api: Any, sql: psycopg.Connection[Any], case: str, body: Any, status: int, field: str
) -> None:
    before = snapshot(sql)
    response = await api.post("/api/orders", headers=key_headers(), json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert error["message"]
    assert snapshot(sql) == before


RAW_CASES: list[tuple[str, str, str, dict[str, str], bytes, int, str]] = [
    (
        "malformed JSON",
        "POST",
        "/api/orders",
        {"Content-Type": "application/json"},
        b'{"quantity": 15000, "target": ',
        422,
        "body",
    ),
    (
        "wrong content type",
        "POST",
        "/api/orders",
        {"Content-Type": "text/plain"},
        b"quantity=15000",
        415,
        "Content-Type",
    ),
    (
        "form content type",
        "POST",
        "/api/orders",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"quantity=15000",
        415,
        "Content-Type",
    ),
    (
        "oversized body",
        "POST",
        "/api/orders",
        {"Content-Type": "application/json"},
        b'{"target": "' + b"x" * 200_000 + b'"}',
        413,
        "body",
    ),
    ("empty body", "POST", "/api/orders", {"Content-Type": "application/json"}, b"", 422, "body"),
]


@pytest.mark.parametrize(
    ("case", "method", "path", "headers", "content", "status", "field"),
    RAW_CASES,
    ids=[c[0] for c in RAW_CASES],
)
async def test_malformed_requests_are_refused_naming_the_field(
    api: Any,
    sql: psycopg.Connection[Any],
    case: str,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes,
    status: int,
    field: str,
) -> None:
    before = snapshot(sql)
    response = await api.request(method, path, headers=key_headers(**headers), content=content)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert snapshot(sql) == before


@pytest.mark.parametrize(
    "order_id", ["not-a-uuid", "1234", "' OR 1=1 --", "00000000-0000-0000-0000-00000000000g"]
)
async def test_malformed_order_ids_are_refused(api: Any, order_id: str) -> None:
    response = await api.get(f"/api/orders/{order_id}", headers=key_headers())
    assert response.status_code == 422
    assert response.json()["field"] == "orderId"


async def test_unknown_order_is_404_naming_the_id(api: Any) -> None:
    response = await api.get(
        "/api/orders/00000000-0000-0000-0000-000000000000", headers=key_headers()
    )
    assert response.status_code == 404
    assert response.json()["field"] == "orderId"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "DONE"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"cursor": "%%%garbage"}, "cursor"),
    ],
)
async def test_bad_list_parameters_are_refused(
    api: Any, params: dict[str, Any], field: str
) -> None:
    response = await api.get("/api/orders", headers=key_headers(), params=params)
    assert response.status_code == 422
    assert response.json()["field"] == field


async def test_a_long_idempotency_key_is_refused(api: Any, sql: psycopg.Connection[Any]) -> None:
    before = snapshot(sql)
    response = await api.post(
        "/api/orders", json=VALID, headers=key_headers(**{"Idempotency-Key": "k" * 300})
    )
    assert response.status_code == 422
    assert response.json()["field"] == "Idempotency-Key"
    assert snapshot(sql) == before


async def test_wrong_method_is_a_json_405(api: Any) -> None:
    response = await api.delete("/api/orders", headers=key_headers())
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
