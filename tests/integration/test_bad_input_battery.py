"""The bad-input battery: malformed requests to every endpoint. Each one gets
its documented 4xx with a JSON error naming what was wrong, and a snapshot of
every table before and after shows that nothing was written.

Free text (an order's target, a node's identifier) is opaque data: SQL in it is
not an error, so those cases check that it is stored verbatim and harms
nothing. Everything with a type (ids, numbers, enums, cursors) is refused.

One database for the whole module (seeded with orders in every state and a
webhook node): every case is refused, so none can disturb another, and a case
that did write would show up in its own snapshot.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest

from goodfellaz17.api.app import create_app
from tests.conftest import OPERATOR_KEY, database_from_template, make_settings
from tests.helpers import insert_order, set_task_states

TABLES = (
    "orders",
    "order_tasks",
    "nodes",
    "workers",
    "chaos_settings",
    "operator_actions",
    "invariant_check_log",
)
SQLI = "'; DROP TABLE orders; --"
SQLI_OR = "1' OR '1'='1"
TEN_MB = 10 * 1024 * 1024
MIXED = ["COMPLETED"] * 3 + ["FAILED_PERMANENT"] * 2 + ["FAILED_RETRYING"] * 2 + ["EXECUTING"] * 2


def snapshot(conn: psycopg.Connection[Any], tables: tuple[str, ...] = TABLES) -> dict[str, Any]:
    """Row count and a digest of every row, per table."""
    return {
        table: conn.execute(
            f"SELECT count(*), md5(COALESCE(string_agg(t::text, ',' ORDER BY t::text), ''))"
            f" FROM {table} t"
        ).fetchone()
        for table in tables
    }


@dataclass(frozen=True)
class Bad:
    case: str
    method: str
    path: str  # {order} and {node} name seeded rows
    status: int
    field: str | None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def raw(text: str | bytes) -> bytes:
    return text.encode() if isinstance(text, str) else text


ORDER = {"quantity": 400, "target": "acct"}
NODE = {"provider": "simulated", "nodeIdentifier": "n-9"}
HOOK = {"provider": "webhook", "nodeIdentifier": "h-9"}
JSON_CT = {"Content-Type": "application/json"}

BATTERY: list[Bad] = [
    # ---------------------------------------------------------------- POST /api/orders
    Bad("order: quantity -1", "POST", "/api/orders", 422, "quantity", {**ORDER, "quantity": -1}),
    Bad(
        "order: quantity 2^63", "POST", "/api/orders", 422, "quantity", {**ORDER, "quantity": 2**63}
    ),
    Bad(
        "order: quantity 1e309 (infinity)",
        "POST",
        "/api/orders",
        422,
        "quantity",
        content=b'{"quantity": 1e309, "target": "acct"}',
        headers=JSON_CT,
    ),
    Bad(
        "order: quantity NaN",
        "POST",
        "/api/orders",
        422,
        "quantity",
        content=b'{"quantity": NaN, "target": "acct"}',
        headers=JSON_CT,
    ),
    Bad(
        "order: quantity null", "POST", "/api/orders", 422, "quantity", {**ORDER, "quantity": None}
    ),
    Bad(
        "order: quantity as SQL",
        "POST",
        "/api/orders",
        422,
        "quantity",
        {**ORDER, "quantity": SQLI},
    ),
    Bad("order: target as object", "POST", "/api/orders", 422, "target", {**ORDER, "target": {}}),
    Bad(
        "order: ANSI escape in target",
        "POST",
        "/api/orders",
        422,
        "target",
        {**ORDER, "target": "\x1b[31mred"},
    ),
    Bad(
        "order: C1 control (CSI) in target",
        "POST",
        "/api/orders",
        422,
        "target",
        {**ORDER, "target": "\x9b31mred"},
    ),
    Bad(
        "order: newline in target",
        "POST",
        "/api/orders",
        422,
        "target",
        {**ORDER, "target": "a\nb"},
    ),
    Bad(
        "order: 513 emoji target",
        "POST",
        "/api/orders",
        422,
        "target",
        {**ORDER, "target": "🚀" * 513},
    ),
    Bad("order: backend as SQL", "POST", "/api/orders", 422, "backend", {**ORDER, "backend": SQLI}),
    Bad(
        "order: backend with NUL",
        "POST",
        "/api/orders",
        422,
        "backend",
        {**ORDER, "backend": "simulated\x00"},
    ),
    Bad(
        "order: truncated JSON",
        "POST",
        "/api/orders",
        422,
        "body",
        content=b'{"quantity": 400, "tar',
        headers=JSON_CT,
    ),
    Bad(
        "order: not UTF-8",
        "POST",
        "/api/orders",
        422,
        "body",
        content=b'{"quantity": 400, "target": "\xff\xfe"}',
        headers=JSON_CT,
    ),
    Bad(
        "order: 10 MB body",
        "POST",
        "/api/orders",
        413,
        "body",
        content=raw(json.dumps({**ORDER, "target": "x" * TEN_MB})),
        headers=JSON_CT,
    ),
    Bad(
        "order: 10 MB body without Content-Length",
        "POST",
        "/api/orders",
        413,
        "body",
        content=b"",  # replaced by a chunked stream in the test
        headers={**JSON_CT, "X-Chunked": "10MB"},
    ),
    Bad(
        "order: XML body",
        "POST",
        "/api/orders",
        415,
        "Content-Type",
        content=b"<order quantity='400'/>",
        headers={"Content-Type": "application/xml"},
    ),
    Bad(
        "order: over-long Idempotency-Key",
        "POST",
        "/api/orders",
        422,
        "Idempotency-Key",
        ORDER,
        headers={"Idempotency-Key": SQLI * 20},
    ),
    Bad("order: PUT", "PUT", "/api/orders", 405, "method", ORDER),
    # ---------------------------------------------------------------- GET /api/orders[/{id}]
    Bad("orders: status as SQL", "GET", f"/api/orders?status={SQLI_OR}", 422, "status"),
    Bad("orders: limit -1", "GET", "/api/orders?limit=-1", 422, "limit"),
    Bad("orders: limit huge", "GET", f"/api/orders?limit={10**30}", 422, "limit"),
    Bad("orders: limit as text", "GET", "/api/orders?limit=ten", 422, "limit"),
    Bad("orders: cursor as SQL", "GET", f"/api/orders?cursor={SQLI}", 422, "cursor"),
    Bad("order: id as SQL", "GET", f"/api/orders/{SQLI_OR}", 422, "orderId"),
    Bad("order: id in Cyrillic", "GET", "/api/orders/ордер", 422, "orderId"),
    Bad("order: id with NUL", "GET", "/api/orders/%00", 422, "orderId"),
    Bad("order: DELETE", "DELETE", "/api/orders/{order}", 405, "method"),
    # ---------------------------------------------------------------- invariants
    Bad(
        "invariants: order id as SQL",
        "GET",
        f"/api/admin/invariants/orders/{SQLI_OR}",
        422,
        "orderId",
    ),
    Bad("orphans: limit 0", "GET", "/api/admin/invariants/orphans?limit=0", 422, "limit"),
    Bad(
        "orphans: limit as SQL",
        "GET",
        "/api/admin/invariants/orphans?limit=1;DROP TABLE orders",
        422,
        "limit",
    ),
    Bad("invariants/all: POST", "POST", "/api/admin/invariants/all", 405, "method", {}),
    # ---------------------------------------------------------------- admin: orders
    Bad("progress: id as SQL", "GET", f"/api/admin/orders/{SQLI}/progress", 422, "orderId"),
    Bad(
        "failed-tasks: limit -5",
        "GET",
        "/api/admin/orders/{order}/failed-tasks?limit=-5",
        422,
        "limit",
    ),
    Bad(
        "failed-tasks: limit 1e9",
        "GET",
        "/api/admin/orders/{order}/failed-tasks?limit=1000000000",
        422,
        "limit",
    ),
    Bad("retry-now: id as SQL", "POST", f"/api/admin/orders/{SQLI_OR}/retry-now", 422, "orderId"),
    Bad("retry-now: GET", "GET", "/api/admin/orders/{order}/retry-now", 405, "method"),
    Bad(
        "drain: id with unicode",
        "POST",
        "/api/admin/orders/\u202eabc\u202c/drain-dead-letters",
        422,
        "orderId",
    ),
    Bad(
        "force-complete: force as text",
        "POST",
        "/api/admin/orders/{order}/force-complete",
        422,
        "force",
        {"force": "yes"},
    ),
    Bad(
        "force-complete: force as 1",
        "POST",
        "/api/admin/orders/{order}/force-complete",
        422,
        "force",
        {"force": 1},
    ),
    Bad(
        "force-complete: truncated JSON",
        "POST",
        "/api/admin/orders/{order}/force-complete",
        422,
        "body",
        content=b'{"force": tr',
        headers=JSON_CT,
    ),
    Bad(
        "force-complete: 10 MB body",
        "POST",
        "/api/admin/orders/{order}/force-complete",
        413,
        "body",
        content=b'{"force": false, "pad": "' + b"x" * TEN_MB + b'"}',
        headers=JSON_CT,
    ),
    Bad(
        "cancel: force null",
        "POST",
        "/api/admin/orders/{order}/cancel",
        422,
        "force",
        {"force": None},
    ),
    Bad(
        "cancel: unknown field",
        "POST",
        "/api/admin/orders/{order}/cancel",
        422,
        "reason",
        {"force": True, "reason": SQLI},
    ),
    Bad(
        "cancel: body is a list",
        "POST",
        "/api/admin/orders/{order}/cancel",
        422,
        "body",
        [{"force": True}],
    ),
    # ---------------------------------------------------------------- capacity
    Bad("capacity: quantity 0", "GET", "/api/admin/capacity?quantity=0", 422, "quantity"),
    Bad(
        "capacity: quantity huge",
        "GET",
        f"/api/admin/capacity?quantity={10**40}",
        422,
        "quantity",
    ),
    Bad("capacity: backend as SQL", "GET", f"/api/admin/capacity?backend={SQLI}", 422, "backend"),
    # ---------------------------------------------------------------- chaos
    Bad(
        "chaos: failureRate 1.5",
        "POST",
        "/api/admin/testing/enable",
        422,
        "failureRate",
        {"failureRate": 1.5},
    ),
    Bad(
        "chaos: failureRate negative",
        "POST",
        "/api/admin/testing/enable",
        422,
        "failureRate",
        {"failureRate": -0.1},
    ),
    Bad(
        "chaos: failureRate NaN",
        "POST",
        "/api/admin/testing/enable",
        422,
        "failureRate",
        content=b'{"failureRate": NaN}',
        headers=JSON_CT,
    ),
    Bad(
        "chaos: latencyMs huge",
        "POST",
        "/api/admin/testing/enable",
        422,
        "latencyMs",
        {"latencyMs": 10**20},
    ),
    Bad(
        "chaos: ttlSeconds 0",
        "POST",
        "/api/admin/testing/enable",
        422,
        "ttlSeconds",
        {"ttlSeconds": 0},
    ),
    Bad(
        "chaos: workerPaused as text",
        "POST",
        "/api/admin/testing/enable",
        422,
        "workerPaused",
        {"workerPaused": "true"},
    ),
    Bad(
        "chaos: unknown field",
        "POST",
        "/api/admin/testing/enable",
        422,
        "killAll",
        {"killAll": True},
    ),
    Bad(
        "chaos: truncated JSON",
        "POST",
        "/api/admin/testing/enable",
        422,
        "body",
        content=b'{"failureRate": 0.',
        headers=JSON_CT,
    ),
    Bad("chaos: disable by GET", "GET", "/api/admin/testing/disable", 405, "method"),
    Bad("chaos status: DELETE", "DELETE", "/api/admin/testing/status", 405, "method"),
    # ---------------------------------------------------------------- nodes
    Bad(
        "node: provider as SQL",
        "POST",
        "/api/internal/nodes",
        422,
        "provider",
        {**NODE, "provider": SQLI},
    ),
    Bad(
        "node: identifier with tab",
        "POST",
        "/api/internal/nodes",
        422,
        "nodeIdentifier",
        {**NODE, "nodeIdentifier": "a\tb"},
    ),
    Bad(
        "node: blank identifier",
        "POST",
        "/api/internal/proxies",
        422,
        "nodeIdentifier",
        {**NODE, "nodeIdentifier": " "},
    ),
    Bad(
        "node: capacity negative",
        "POST",
        "/api/internal/nodes",
        422,
        "capacityPerHour",
        {**NODE, "capacityPerHour": -1},
    ),
    Bad(
        "node: capacity 2^31",
        "POST",
        "/api/internal/proxies",
        422,
        "capacityPerHour",
        {**NODE, "capacityPerHour": 2**31},
    ),
    Bad("node: webhook without endpoint", "POST", "/api/internal/nodes", 422, "endpoint", HOOK),
    Bad(
        "node: javascript: endpoint",
        "POST",
        "/api/internal/nodes",
        422,
        "endpoint",
        {**HOOK, "endpoint": "javascript:alert(1)"},
    ),
    Bad(
        "node: endpoint with credentials",
        "POST",
        "/api/internal/nodes",
        422,
        "endpoint",
        {**HOOK, "endpoint": "https://user:secret@hooks.example.test/x"},
    ),
    Bad(
        "node: endpoint with SQL",
        "POST",
        "/api/internal/proxies",
        422,
        "endpoint",
        {**HOOK, "endpoint": f"https://hooks.example.test/{SQLI}"},
    ),
    Bad(
        "node: plain http off loopback",
        "POST",
        "/api/internal/nodes",
        422,
        "endpoint",
        {**HOOK, "endpoint": "http://hooks.example.test/x"},
    ),
    Bad(
        "node: 10 MB body",
        "POST",
        "/api/internal/nodes",
        413,
        "body",
        content=raw(json.dumps({**NODE, "nodeIdentifier": "n" * TEN_MB})),
        headers=JSON_CT,
    ),
    Bad(
        "node: form body",
        "POST",
        "/api/internal/proxies",
        415,
        "Content-Type",
        content=b"provider=simulated&nodeIdentifier=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Bad("node: id as SQL", "DELETE", f"/api/internal/nodes/{SQLI_OR}", 422, "nodeId"),
    Bad("node: id 0", "POST", "/api/internal/nodes/0/disable", 422, "nodeId"),
    Bad("node: id -1", "POST", "/api/internal/proxies/-1/enable", 422, "nodeId"),
    Bad("node: id 2^63", "DELETE", f"/api/internal/proxies/{2**63}", 422, "nodeId"),
    Bad("node: id 1.5", "POST", "/api/internal/nodes/1.5/enable", 422, "nodeId"),
    Bad("nodes: PATCH", "PATCH", "/api/internal/nodes/{node}", 405, "method", {"enabled": False}),
    # ---------------------------------------------------------------- the rest
    Bad("worker status: POST", "POST", "/api/admin/worker/status", 405, "method", {}),
    Bad("metrics: POST", "POST", "/metrics", 405, "method", {}),
    Bad("health: DELETE", "DELETE", "/actuator/health", 405, "method"),
    Bad("unknown api path", "GET", "/api/admin/orders", 404, "path"),
    Bad(
        "api key as SQL",
        "GET",
        "/api/orders",
        401,
        "X-Api-Key",
        headers={"X-Api-Key": SQLI_OR},
    ),
]


@pytest.fixture(scope="module")
def battery_db(pg_base_url: str, template_url: str) -> Iterator[str]:
    with database_from_template(pg_base_url, f"gf_battery_{os.getpid()}") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for states in (MIXED, ["COMPLETED"] * 10, []):
                set_task_states(conn, insert_order(conn, 4_000), states)
            conn.execute(
                "INSERT INTO nodes (provider, node_identifier, endpoint)"
                " VALUES ('webhook', 'hook-1', 'https://hooks.example.test/deliver')"
            )
            conn.execute("INSERT INTO operator_actions (action, actor) VALUES ('seed', 'test')")
            conn.execute("INSERT INTO invariant_check_log (scope, passed) VALUES ('GLOBAL', true)")
        yield url


@pytest.fixture(scope="module")
async def battery_api(battery_db: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(battery_db, invariant_check_interval_seconds=0)
    app = create_app(settings, battery_db, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


@pytest.fixture(scope="module")
def battery_sql(battery_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(battery_db, autocommit=True) as conn:
        yield conn


def seeded(sql: psycopg.Connection[Any]) -> dict[str, str]:
    order = sql.execute("SELECT id FROM orders ORDER BY created_at, id LIMIT 1").fetchone()
    node = sql.execute("SELECT max(id) FROM nodes").fetchone()
    assert order is not None
    assert node is not None
    return {"order": str(order[0]), "node": str(node[0])}


async def chunks(total: int, size: int = 1 << 20) -> AsyncIterator[bytes]:
    yield b'{"quantity": 400, "target": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


def test_the_battery_is_large_and_reaches_every_endpoint(battery_db: str) -> None:
    assert len(BATTERY) >= 40
    assert len({b.case for b in BATTERY}) == len(BATTERY)
    app = create_app(make_settings(battery_db), battery_db, run_worker=False)
    templates = {
        path
        for path in app.openapi()["paths"]
        if path.startswith("/api/") and "/proxies" not in path
    }

    def template_of(path: str) -> str | None:
        bare = path.split("?")[0]
        parts = bare.strip("/").split("/")
        for template in templates:
            pattern = template.strip("/").split("/")
            if len(pattern) == len(parts) and all(
                p.startswith("{") or p == q for p, q in zip(pattern, parts, strict=True)
            ):
                return template
        return None

    reached = {template_of(b.path.replace("/proxies", "/nodes")) for b in BATTERY}
    assert templates <= reached, sorted(templates - reached)


@pytest.mark.parametrize("bad", BATTERY, ids=[b.case for b in BATTERY])
async def test_malformed_request_is_refused_naming_the_field_and_writes_nothing(
    battery_api: httpx.AsyncClient, battery_sql: psycopg.Connection[Any], bad: Bad
) -> None:
    path = bad.path.format(**seeded(battery_sql))
    headers = {"X-Api-Key": OPERATOR_KEY, **bad.headers}
    content: Any = bad.content
    if headers.pop("X-Chunked", None):
        content = chunks(TEN_MB)
    before = snapshot(battery_sql)
    response = await battery_api.request(
        bad.method,
        path,
        headers=headers,
        json=bad.json if bad.content is None else None,
        content=content,
    )
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["field"] == bad.field, error
    assert error["error"]
    assert error["message"]
    assert len(response.content) < 4096, "an error body never echoes a large input"
    assert snapshot(battery_sql) == before


FREE_TEXT = [
    ("target", SQLI),
    ("target", SQLI_OR),
    ("target", "Robert'); DROP TABLE order_tasks;--"),
    ("target", "مرحبا 👋 ünïcødé"),
]


@pytest.mark.parametrize(("name", "value"), FREE_TEXT)
async def test_sql_in_free_text_is_stored_verbatim_and_harms_nothing(
    battery_api: httpx.AsyncClient, battery_sql: psycopg.Connection[Any], name: str, value: str
) -> None:
    before = snapshot(battery_sql, ("nodes", "workers", "chaos_settings"))
    orders_before = battery_sql.execute("SELECT count(*) FROM orders").fetchone()
    response = await battery_api.post(
        "/api/orders",
        headers={"X-Api-Key": OPERATOR_KEY, "Idempotency-Key": value.encode().hex()[:200]},
        json={**ORDER, name: value},
    )
    assert response.status_code == 201, response.text
    order_id = response.json()["id"]
    stored = battery_sql.execute("SELECT target FROM orders WHERE id = %s", (order_id,)).fetchone()
    assert stored == (value,)
    assert battery_sql.execute("SELECT count(*) FROM orders").fetchone() == (orders_before[0] + 1,)
    assert snapshot(battery_sql, ("nodes", "workers", "chaos_settings")) == before
    node = await battery_api.post(
        "/api/internal/nodes",
        headers={"X-Api-Key": OPERATOR_KEY},
        json={"provider": "simulated", "nodeIdentifier": f"{value[:150]}-{order_id[:8]}"},
    )
    assert node.status_code == 201, node.text
    assert node.json()["nodeIdentifier"].startswith(value[:150])
