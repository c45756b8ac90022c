"""The auth matrix: every route of the app times {no key, wrong key, read key,
orders key, operator key} gives exactly the expected status.

The role each route needs is declared here, in ROUTES, and the table must
cover the app's route table exactly: a new route cannot be added without
deciding who may call it. Each call is a valid request (fresh rows where the
route changes them), so an admitted key gets the route's success status and a
refused one 401 (no or wrong key) or 403 (too small a role). No key, valid or
not, appears in any response or log line.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from goodfellaz17.api.app import create_app
from goodfellaz17.api.auth import GRANTS
from goodfellaz17.settings import Role
from tests.conftest import (
    OPERATOR_KEY,
    ORDERS_KEY,
    READ_KEY,
    database_from_template,
    make_settings,
)
from tests.helpers import insert_order, set_task_states
from tests.integration.test_auth import walk_routes
from tests.integration.test_console import console_routes
from tests.observability import captured_logs

PUBLIC = None
WRONG_KEY = "wrong-" + OPERATOR_KEY[6:]
KEYS: dict[str, str | None] = {
    "no key": None,
    "wrong key": WRONG_KEY,
    "read key": READ_KEY,
    "orders key": ORDERS_KEY,
    "operator key": OPERATOR_KEY,
}
KEY_ROLES = {READ_KEY: Role.READ, ORDERS_KEY: Role.ORDERS, OPERATOR_KEY: Role.OPERATOR}
SECRETS = [READ_KEY, ORDERS_KEY, OPERATOR_KEY, WRONG_KEY]
_unique = itertools.count()

Prepare = Callable[[psycopg.Connection[Any]], dict[str, Any]]


def nothing(_: psycopg.Connection[Any]) -> dict[str, Any]:
    return {}


def fresh_order(sql: psycopg.Connection[Any]) -> dict[str, Any]:
    """An order with completed, dead-lettered, retrying and pending tasks
    (none executing), so every operator action on it succeeds."""
    order_id = insert_order(sql, 4_000)
    set_task_states(
        sql, order_id, ["COMPLETED"] * 3 + ["FAILED_PERMANENT"] * 2 + ["FAILED_RETRYING"]
    )
    return {"orderId": order_id}


def a_node(sql: psycopg.Connection[Any]) -> dict[str, Any]:
    row = sql.execute("SELECT id FROM nodes WHERE node_identifier = 'matrix-hook'").fetchone()
    assert row is not None
    return {"nodeId": row[0]}


def new_node_body(_: psycopg.Connection[Any]) -> dict[str, Any]:
    return {"json": {"provider": "simulated", "nodeIdentifier": f"matrix-{next(_unique)}"}}


@dataclass(frozen=True)
class Expect:
    role: Role | None  # None: public
    ok: int
    prepare: Prepare = nothing
    json: Any = None


ORDER_BODY = {"quantity": 400, "target": "matrix"}
R, ORD, OP = Role.READ, Role.ORDERS, Role.OPERATOR

ROUTES: dict[tuple[str, str], Expect] = {
    # The matrix runs in production, where the API docs need a key.
    ("GET", "/openapi.json"): Expect(R, 200),
    ("GET", "/docs"): Expect(R, 200),
    ("GET", "/docs/oauth2-redirect"): Expect(R, 200),
    ("GET", "/redoc"): Expect(R, 200),
    ("GET", "/actuator/health"): Expect(PUBLIC, 200),
    ("GET", "/actuator/health/liveness"): Expect(PUBLIC, 200),
    ("GET", "/actuator/health/readiness"): Expect(PUBLIC, 200),
    ("GET", "/metrics"): Expect(R, 200),
    ("GET", "/actuator/prometheus"): Expect(R, 200),
    ("POST", "/api/orders"): Expect(ORD, 201, json=ORDER_BODY),
    ("GET", "/api/orders"): Expect(R, 200),
    ("GET", "/api/orders/{orderId}"): Expect(R, 200, fresh_order),
    ("GET", "/api/admin/worker/status"): Expect(R, 200),
    ("GET", "/api/admin/invariants/orders/{orderId}"): Expect(R, 200, fresh_order),
    ("GET", "/api/admin/invariants/all"): Expect(R, 200),
    ("GET", "/api/admin/invariants/orphans"): Expect(R, 200),
    ("GET", "/api/admin/orders/{orderId}/progress"): Expect(R, 200, fresh_order),
    ("GET", "/api/admin/orders/{orderId}/failed-tasks"): Expect(R, 200, fresh_order),
    ("POST", "/api/admin/orders/{orderId}/retry-now"): Expect(OP, 200, fresh_order),
    ("POST", "/api/admin/orders/{orderId}/drain-dead-letters"): Expect(OP, 200, fresh_order),
    ("POST", "/api/admin/orders/{orderId}/force-complete"): Expect(OP, 200, fresh_order),
    ("POST", "/api/admin/orders/{orderId}/cancel"): Expect(OP, 200, fresh_order),
    ("GET", "/api/admin/capacity"): Expect(R, 200),
    ("GET", "/api/admin/testing/status"): Expect(R, 200),
    ("POST", "/api/admin/testing/enable"): Expect(OP, 200, json={"ttlSeconds": 60}),
    ("POST", "/api/admin/testing/disable"): Expect(OP, 200),
    **{
        (method, f"/api/internal/{resource}{suffix}"): expect
        for resource in ("nodes", "proxies")
        for method, suffix, expect in (
            ("POST", "", Expect(OP, 201, new_node_body)),
            ("GET", "", Expect(R, 200)),
            ("DELETE", "/{nodeId}", Expect(OP, 200, a_node)),
            ("POST", "/{nodeId}/disable", Expect(OP, 200, a_node)),
            ("POST", "/{nodeId}/enable", Expect(OP, 200, a_node)),
        )
    },
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, HEAD aside (GET's twin)."""
    found = set()
    for route in [*walk_routes(app.routes), *app.routes]:
        if isinstance(route, APIRoute | Route):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return found


def expected_status(expect: Expect, key: str | None) -> int:
    if expect.role is PUBLIC:
        return expect.ok
    role = KEY_ROLES.get(key or "")
    if role is None:
        return 401
    return expect.ok if expect.role in GRANTS[role] else 403


@pytest.fixture(scope="module")
def matrix_db(pg_base_url: str, template_url: str) -> Iterator[str]:
    with database_from_template(pg_base_url, f"gf_matrix_{os.getpid()}") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO nodes (provider, node_identifier, endpoint)"
                " VALUES ('webhook', 'matrix-hook', 'https://hooks.example.test/deliver')"
            )
        yield url


# The ops console authenticates with a session cookie opened by a key, not
# with X-Api-Key: its matrix (no, forged and expired sessions; read and
# operator sessions) is tests/integration/test_console.py, whose walk of the
# app's routes covers every console route but the login form.
CONSOLE_LOGIN = {("GET", "/console/login"), ("POST", "/console/login")}


def test_the_declared_table_covers_exactly_the_apps_routes(matrix_db: str) -> None:
    app = create_app(make_settings(matrix_db), matrix_db, run_worker=False)
    every = app_routes(app)
    console = {r for r in every if r[1].startswith("/console")}
    assert len(console - CONSOLE_LOGIN) == len(console_routes(app))
    served = every - console
    assert set(ROUTES) == served, {
        "undeclared routes": sorted(served - set(ROUTES)),
        "declared but not served": sorted(set(ROUTES) - served),
    }
    # Everything under /api/ needs a key; what is public is only health.
    assert all(e.role is not PUBLIC for (_, path), e in ROUTES.items() if path.startswith("/api/"))


@pytest.mark.parametrize("who", list(KEYS))
async def test_every_route_gives_exactly_the_expected_status_for_each_key(
    matrix_db: str, who: str
) -> None:
    key = KEYS[who]
    settings = make_settings(
        matrix_db,
        env="production",
        log_format="json",
        log_level="debug",
        invariant_check_interval_seconds=0,
    )
    mismatches = []
    with (
        psycopg.connect(matrix_db, autocommit=True) as sql,
        captured_logs(settings) as logs,
    ):
        app = create_app(settings, matrix_db, run_worker=False)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for (method, template), expect in sorted(ROUTES.items()):
                    prepared = expect.prepare(sql)
                    body = prepared.pop("json", expect.json)
                    path = template.format(**prepared)
                    headers = {} if key is None else {"X-Api-Key": key}
                    response = await client.request(method, path, headers=headers, json=body)
                    want = expected_status(expect, key)
                    if response.status_code != want:
                        mismatches.append((method, template, want, response.status_code))
                        continue
                    for secret in SECRETS:
                        assert secret not in response.text, (method, template)
                    if want in (401, 403):
                        error = response.json()
                        assert error["error"] == ("unauthorized" if want == 401 else "forbidden")
                        assert error["field"] == "X-Api-Key"
    assert not mismatches, mismatches
    output = logs.getvalue()
    assert output.count('"http request"') >= len(ROUTES)
    for secret in SECRETS:
        assert secret not in output


def test_the_expected_status_rules_follow_the_role_grants() -> None:
    operator_only = Expect(OP, 200)
    assert expected_status(operator_only, OPERATOR_KEY) == 200
    assert expected_status(operator_only, ORDERS_KEY) == 403
    assert expected_status(operator_only, READ_KEY) == 403
    assert expected_status(operator_only, WRONG_KEY) == 401
    assert expected_status(operator_only, None) == 401
    assert expected_status(Expect(ORD, 201), ORDERS_KEY) == 201
    assert expected_status(Expect(R, 200), ORDERS_KEY) == 200
    assert expected_status(Expect(PUBLIC, 200), WRONG_KEY) == 200
