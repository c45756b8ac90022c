"""Every /api/ route refuses a missing or wrong key, whatever the route does."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.routing import APIRoute

from goodfellaz17.api.app import create_app
from tests.conftest import OPERATOR_KEY, READ_KEY, make_settings
from tests.integration.console_helpers import client_for, log_in
from tests.observability import parse_metrics, sample

SAMPLE_UUID = "00000000-0000-0000-0000-000000000001"


def walk_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, through included routers (FastAPI >= 0.160 wraps them)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += walk_routes(route.original_router.routes)
        elif hasattr(route, "routes"):
            found += walk_routes(route.routes)
    return found


def api_routes(app: Any) -> list[tuple[str, str]]:
    routes = []
    for route in walk_routes(app.routes):
        if route.path.startswith("/api/"):
            path = re.sub(r"\{[^}]+\}", SAMPLE_UUID, route.path)
            routes.extend((method, path) for method in sorted(route.methods))
    return routes


async def test_the_route_walk_finds_every_documented_api_route(api: Any) -> None:
    walked = {r.path for r in walk_routes(api.app.routes) if r.path.startswith("/api/")}
    documented = {p for p in api.app.openapi()["paths"] if p.startswith("/api/")}
    assert documented
    assert documented <= walked


@pytest.mark.parametrize("key", [None, "", "wrong-key", READ_KEY + "x", READ_KEY[:-1]])
async def test_every_api_route_rejects_missing_and_wrong_keys(api: Any, key: str | None) -> None:
    headers = {} if key is None else {"X-Api-Key": key}
    for method, path in api_routes(api.app):
        response = await api.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path, response.text)
        body = response.json()
        assert body["error"] == "unauthorized"
        assert body["field"] == "X-Api-Key"
        if key:
            assert key not in response.text


async def test_a_read_key_may_not_create_orders(api: Any) -> None:
    response = await api.post(
        "/api/orders", headers={"X-Api-Key": READ_KEY}, json={"quantity": 10, "target": "t"}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


async def test_health_needs_no_key(api: Any) -> None:
    response = await api.get("/actuator/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "UP"
    assert body["components"]["db"]["status"] == "UP"


DOCS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


async def _docs_statuses(db_url: str, key: str | None, **overrides: Any) -> dict[str, int]:
    app = create_app(make_settings(db_url, **overrides), db_url, run_worker=False)
    headers = {} if key is None else {"X-Api-Key": key}
    async with app.router.lifespan_context(app), client_for(app) as client:
        return {path: (await client.get(path, headers=headers)).status_code for path in DOCS}


async def test_production_serves_the_api_docs_only_to_a_key(db_url: str) -> None:
    assert set((await _docs_statuses(db_url, None, env="production")).values()) == {401}
    assert set((await _docs_statuses(db_url, "wrong-key", env="production")).values()) == {401}
    assert set((await _docs_statuses(db_url, READ_KEY, env="production")).values()) == {200}
    assert set((await _docs_statuses(db_url, None)).values()) == {200}  # development: public


async def test_the_api_docs_can_be_switched_off(db_url: str) -> None:
    statuses = await _docs_statuses(db_url, OPERATOR_KEY, env="production", api_docs="off")
    assert set(statuses.values()) == {404}
    assert set((await _docs_statuses(db_url, None, api_docs="key")).values()) == {401}


# ---------------------------------------------------------------- throttling guesses


async def test_wrong_keys_from_one_address_are_throttled_and_counted(db_url: str) -> None:
    settings = make_settings(db_url, auth_failure_burst=3, auth_failure_refill_seconds=60)
    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app), client_for(app) as guesser:
        statuses = []
        for n in range(5):
            response = await guesser.get("/api/orders", headers={"X-Api-Key": f"guess-{n}"})
            statuses.append(response.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.json()["error"] == "too_many_requests"
        assert response.json()["field"] == "X-Api-Key"
        # Throttled, even the right key waits: otherwise guessing would go on.
        right = await guesser.get("/api/orders", headers={"X-Api-Key": READ_KEY})
        assert right.status_code == 429
        async with client_for(app, client=("192.0.2.9", 5000)) as bystander:
            ok = await bystander.get("/api/orders", headers={"X-Api-Key": READ_KEY})
            assert ok.status_code == 200, "another address is not throttled"
            missing = await bystander.get("/api/orders")
            assert missing.status_code == 401, "no key is no guess"
            metrics = parse_metrics(
                (await bystander.get("/metrics", headers=ok.request.headers)).text
            )
    assert sample(metrics, "delivery_auth_failures_total", surface="api", reason="invalid_key") == 3
    assert sample(metrics, "delivery_auth_failures_total", surface="api", reason="throttled") == 3
    assert sample(metrics, "delivery_auth_failures_total", surface="api", reason="missing_key") == 1
    assert (
        sample(metrics, "delivery_auth_failures_total", surface="console", reason="invalid_key")
        == 0
    )


async def test_failed_console_logins_are_throttled_with_the_api(db_url: str) -> None:
    settings = make_settings(db_url, auth_failure_burst=2, auth_failure_refill_seconds=60)
    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app), client_for(app) as guesser:
        assert (await log_in(guesser, "guess-1")).status_code == 401
        api = await guesser.get("/api/orders", headers={"X-Api-Key": "guess-2"})
        assert api.status_code == 401
        throttled = await log_in(guesser, OPERATOR_KEY)
        assert throttled.status_code == 429
        assert int(throttled.headers["retry-after"]) >= 1
        assert "Too many failed attempts" in throttled.text
        assert not [c for c in throttled.headers.get_list("set-cookie") if "gf_console=" in c]
        async with client_for(app, client=("192.0.2.9", 5000)) as bystander:
            scraped = await bystander.get("/metrics", headers={"X-Api-Key": READ_KEY})
            metrics = parse_metrics(scraped.text)
    assert (
        sample(metrics, "delivery_auth_failures_total", surface="console", reason="invalid_key")
        == 1
    )
    assert (
        sample(metrics, "delivery_auth_failures_total", surface="console", reason="throttled") == 1
    )
