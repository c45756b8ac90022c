"""The ops console over HTTP (no browser): sessions and their cookie, CSRF,
roles, every route behind a session, and the numbers the partials show."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import psycopg
import pytest

from goodfellaz17.api.app import create_app
from goodfellaz17.services.invariant_monitor import InvariantMonitor
from tests.conftest import OPERATOR_KEY, ORDERS_KEY, READ_KEY, make_settings
from tests.helpers import insert_order, order_row, set_task_states, violations
from tests.integration.console_helpers import (
    client_for,
    data_value,
    log_in,
    nonce_of,
    signed_in,
    state_count,
)
from tests.integration.test_auth import walk_routes

SAMPLE_UUID = "00000000-0000-0000-0000-000000000001"


def seeded_order(
    sql: psycopg.Connection[Any], states: list[str], quantity: int = 4000
) -> uuid.UUID:
    """An order of 400-unit tasks put into `states` (by seq) in one transaction,
    so a worker could never see it half-made."""
    with sql.transaction():
        order_id = insert_order(sql, quantity=quantity)
        set_task_states(sql, order_id, states)
    return order_id


# ---------------------------------------------------------------- every route is protected


def console_routes(app: Any) -> list[tuple[str, str]]:
    samples = {"order_id": SAMPLE_UUID, "node_id": "1", "slug": "drain-dead-letters"}
    routes = []
    for route in walk_routes(app.routes):
        if not route.path.startswith("/console") or route.path == "/console/login":
            continue
        path = re.sub(r"\{([^}]+)\}", lambda m: samples[m.group(1)], route.path)
        routes.extend((method, path) for method in sorted(route.methods))
    return routes


async def test_the_walk_finds_the_console_routes(app: Any) -> None:
    routes = console_routes(app)
    paths = {p for _, p in routes}
    assert {
        "/console",
        "/console/orders",
        "/console/workers",
        "/console/partials/overview",
    } <= paths
    assert ("POST", "/console/chaos/disable") in routes
    assert len(routes) == 19  # a new console route: add it here once it is known to be guarded


@pytest.mark.parametrize("cookie", [None, "garbage", "eyJrIjoiMSJ9.AAAA.BBBB"])
async def test_every_console_route_needs_a_session(app: Any, cookie: str | None) -> None:
    async with client_for(app) as c:
        if cookie is not None:
            c.cookies.set("gf_console", cookie)
        for method, path in console_routes(app):
            response = await c.request(method, path, data={"csrf_token": "x"})
            if method == "GET" and not path.startswith("/console/partials/"):
                assert response.status_code == 303, (method, path)
                assert response.headers["location"].startswith("/console/login?next=%2Fconsole")
            else:
                assert response.status_code == 401, (method, path, response.text)


async def test_static_files_and_the_login_form_need_no_session(client: Any) -> None:
    assert (await client.get("/console/login")).status_code == 200
    css = await client.get("/console/static/console.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
    assert (await client.get("/console/static/console.js")).status_code == 200


async def test_an_api_key_header_does_not_open_the_console(client: Any) -> None:
    response = await client.get("/console", headers={"X-Api-Key": OPERATOR_KEY})
    assert response.status_code == 303


# ---------------------------------------------------------------- login, cookie, logout


async def test_login_sets_an_httponly_strict_cookie_that_does_not_hold_the_key(
    client: Any,
) -> None:
    response = await log_in(client, OPERATOR_KEY, next_url="/console/orders")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/orders"
    cookies = response.headers.get_list("set-cookie")
    (session,) = [c for c in cookies if c.startswith("gf_console=")]
    attributes = {a.strip().lower() for a in session.split(";")[1:]}
    assert "httponly" in attributes
    assert "samesite=strict" in attributes
    assert "path=/" in attributes
    assert "max-age=28800" in attributes
    assert "secure" not in attributes  # plain http, but only ever on loopback
    value = session.split(";")[0].split("=", 1)[1]
    digest = hashlib.sha256(OPERATOR_KEY.encode()).hexdigest()
    for secret in (OPERATOR_KEY, digest, digest[:16], OPERATOR_KEY[:12]):
        assert secret not in value
    assert (await client.get("/console/orders")).status_code == 200


async def test_over_https_the_cookie_is_secure_and_host_prefixed(app: Any) -> None:
    async with client_for(app, base_url="https://127.0.0.1") as c:
        response = await log_in(c, READ_KEY)
        assert response.status_code == 303
        (session,) = [
            x for x in response.headers.get_list("set-cookie") if x.startswith("__Host-gf_console=")
        ]
        attributes = {a.strip().lower() for a in session.split(";")[1:]}
        assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
        assert not any(a.startswith("domain") for a in attributes)
        assert (await c.get("/console")).status_code == 200


async def test_plain_http_from_another_host_never_takes_a_key(app: Any) -> None:
    # An ASGI scope value only: no traffic leaves the process.
    async with client_for(app, base_url="http://console.example", client=("192.0.2.7", 4000)) as c:
        form = await c.get("/console/login")
        assert form.status_code == 200
        assert "only over https" in form.text
        assert "set-cookie" not in form.headers
        response = await c.post(
            "/console/login",
            data={"api_key": OPERATOR_KEY, "nonce": nonce_of(form.text), "next": "/console"},
        )
        assert response.status_code == 400
        assert "set-cookie" not in response.headers
        assert OPERATOR_KEY not in response.text


@pytest.mark.parametrize("key", ["", "wrong-key", OPERATOR_KEY + "x", " "])
async def test_a_wrong_key_is_refused_and_not_echoed(client: Any, key: str) -> None:
    response = await log_in(client, key)
    assert response.status_code == 401
    assert "not valid" in response.text
    assert not [c for c in response.headers.get_list("set-cookie") if c.startswith("gf_console=")]
    if key.strip():
        assert key not in response.text
    assert (await client.get("/console")).status_code == 303


async def test_login_without_the_form_nonce_is_refused(client: Any) -> None:
    response = await client.post(
        "/console/login", data={"api_key": OPERATOR_KEY, "nonce": "forged", "next": "/console"}
    )
    assert response.status_code == 403
    assert (await client.get("/console")).status_code == 303


@pytest.mark.parametrize(
    "next_url", ["https://evil.example/", "//evil.example/console", "/api/orders", "/\\evil"]
)
async def test_login_never_redirects_off_the_console(client: Any, next_url: str) -> None:
    response = await log_in(client, OPERATOR_KEY, next_url=next_url)
    assert response.status_code == 303
    assert response.headers["location"] == "/console"


async def test_logout_ends_the_session_and_needs_the_csrf_token(client: Any) -> None:
    csrf = await signed_in(client, READ_KEY)
    refused = await client.post("/console/logout", data={})
    assert refused.status_code == 403
    assert (await client.get("/console")).status_code == 200
    response = await client.post("/console/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    assert (await client.get("/console")).status_code == 303


async def test_a_session_ends_when_its_key_is_removed(db_url: str) -> None:
    before = make_settings(db_url, invariant_check_interval_seconds=0)
    first = create_app(before, db_url, run_worker=False)
    async with first.router.lifespan_context(first), client_for(first) as c:
        await signed_in(c, OPERATOR_KEY)
        cookie = c.cookies.get("gf_console")
    assert cookie
    after = make_settings(db_url, api_keys=f"{READ_KEY}:read", invariant_check_interval_seconds=0)
    second = create_app(after, db_url, run_worker=False)
    async with second.router.lifespan_context(second), client_for(second) as c:
        c.cookies.set("gf_console", cookie)
        assert (await c.get("/console")).status_code == 303
    same = create_app(before, db_url, run_worker=False)  # a restart with the same keys
    async with same.router.lifespan_context(same), client_for(same) as c:
        c.cookies.set("gf_console", cookie)
        assert (await c.get("/console")).status_code == 200


async def test_console_answers_carry_security_headers(client: Any) -> None:
    await signed_in(client, READ_KEY)
    for path in ("/console", "/console/login", "/console/partials/overview"):
        response = await client.get(path)
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["cache-control"] == "no-store"
    api = await client.get("/actuator/health")
    assert "content-security-policy" not in api.headers


# ---------------------------------------------------------------- CSRF and roles


async def test_a_form_post_without_the_right_csrf_token_is_refused(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    csrf = await signed_in(client, OPERATOR_KEY)
    enable = {"failure_rate_percent": "10", "latency_ms": "0", "ttl_minutes": "5"}
    for form in (enable, {**enable, "csrf_token": ""}, {**enable, "csrf_token": csrf + "x"}):
        response = await client.post("/console/chaos/enable", data=form)
        assert response.status_code == 403, form
        assert "CSRF" in response.text
    cross_site = await client.post(
        "/console/chaos/enable",
        data={**enable, "csrf_token": csrf},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 403
    row = sql.execute("SELECT enabled FROM chaos_settings").fetchone()
    assert row == (False,)
    accepted = await client.post("/console/chaos/enable", data={**enable, "csrf_token": csrf})
    assert accepted.status_code == 303
    assert sql.execute("SELECT enabled FROM chaos_settings").fetchone() == (True,)


async def test_a_token_from_another_session_is_refused(app: Any) -> None:
    async with client_for(app) as first, client_for(app) as second:
        token_of_first = await signed_in(first, OPERATOR_KEY)
        await signed_in(second, OPERATOR_KEY)
        response = await second.post("/console/chaos/disable", data={"csrf_token": token_of_first})
        assert response.status_code == 403


@pytest.mark.parametrize("key", [READ_KEY, ORDERS_KEY])
async def test_keys_below_operator_may_look_but_not_act(
    app: Any, sql: psycopg.Connection[Any], key: str
) -> None:
    order_id = seeded_order(sql, ["COMPLETED", "FAILED_PERMANENT", "FAILED_RETRYING"])
    async with client_for(app) as c:
        csrf = await signed_in(c, key)
        page = await c.get(f"/console/orders/{order_id}")
        assert page.status_code == 200
        assert f'href="/console/orders/{order_id}/actions/' not in page.text
        assert 'id="action-drain-dead-letters" title="needs an operator key"' in page.text
        assert 'id="chaos-form"' not in (await c.get("/console")).text
        assert 'id="node-form"' not in (await c.get("/console/workers")).text
        before = order_row(sql, order_id)
        for slug in ("retry-now", "drain-dead-letters", "force-complete", "cancel"):
            response = await c.post(
                f"/console/orders/{order_id}/actions/{slug}", data={"csrf_token": csrf}
            )
            assert response.status_code == 403, slug
            assert "operator key" in response.text
        for path in ("/console/chaos/enable", "/console/chaos/disable", "/console/nodes"):
            response = await c.post(path, data={"csrf_token": csrf, "node_identifier": "n"})
            assert response.status_code == 403, path
        assert order_row(sql, order_id) == before
        assert sql.execute("SELECT count(*) FROM operator_actions").fetchone() == (0,)
        assert sql.execute("SELECT count(*) FROM nodes").fetchone() == (1,)


# ---------------------------------------------------------------- operator actions


async def test_drain_confirms_what_will_happen_then_moves_the_dead_letters(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = seeded_order(sql, ["COMPLETED", "FAILED_PERMANENT", "FAILED_PERMANENT"])
    csrf = await signed_in(client, OPERATOR_KEY)
    confirm = await client.get(f"/console/orders/{order_id}/actions/drain-dead-letters")
    assert confirm.status_code == 200
    assert "2 dead-letter task(s) (800 units) move from FAILED_PERMANENT" in confirm.text
    assert "failed_permanent_plays drops by 800" in confirm.text
    response = await client.post(
        f"/console/orders/{order_id}/actions/drain-dead-letters", data={"csrf_token": csrf}
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/console/orders/{order_id}"
    page = await client.get(response.headers["location"])
    assert "Drained 2 dead-letter task(s) (800 units)" in page.text
    statuses = sql.execute(
        "SELECT status, attempts FROM order_tasks WHERE order_id = %s AND seq IN (1, 2)",
        (order_id,),
    ).fetchall()
    assert statuses == [("FAILED_RETRYING", 0), ("FAILED_RETRYING", 0)]
    assert order_row(sql, order_id)["failed_permanent_plays"] == 0
    action = sql.execute("SELECT action, actor FROM operator_actions").fetchone()
    assert action is not None
    assert action[0] == "drain_dead_letters"
    assert action[1].startswith("api-key:")
    assert action[1].endswith("(operator)")
    assert violations(sql) == []


async def test_force_complete_while_tasks_execute_needs_force(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = seeded_order(sql, ["COMPLETED", "EXECUTING", "PENDING"])
    csrf = await signed_in(client, OPERATOR_KEY)
    url = f"/console/orders/{order_id}/actions/force-complete"
    confirm = await client.get(url)
    assert "1 task(s) (400 units) are EXECUTING right now" in confirm.text
    refused = await client.post(url, data={"csrf_token": csrf})
    assert refused.status_code == 409
    assert "EXECUTING" in refused.text
    assert order_row(sql, order_id)["status"] == "PROCESSING"
    done = await client.post(url, data={"csrf_token": csrf, "force": "on"})
    assert done.status_code == 303
    row = order_row(sql, order_id)
    assert row["status"] == "COMPLETED"
    assert row["delivered"] == 400
    assert violations(sql) == []


async def test_cancel_and_retry_now_run_the_same_service_as_the_api(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = seeded_order(sql, ["FAILED_RETRYING", "PENDING"])
    csrf = await signed_in(client, OPERATOR_KEY)
    retry = await client.post(
        f"/console/orders/{order_id}/actions/retry-now", data={"csrf_token": csrf}
    )
    assert retry.status_code == 303
    notice = (await client.get(retry.headers["location"])).text
    assert "Made 1 retrying task(s) (400 units) due now." in notice
    cancel = await client.post(
        f"/console/orders/{order_id}/actions/cancel", data={"csrf_token": csrf}
    )
    assert cancel.status_code == 303
    errors = sql.execute(
        "SELECT DISTINCT last_error FROM order_tasks WHERE order_id = %s", (order_id,)
    ).fetchall()
    assert len(errors) == 1
    assert errors[0][0].startswith("cancelled by operator api-key:")
    history = (await client.get(f"/console/orders/{order_id}")).text
    assert "retry_now" in history
    assert "cancel" in history


async def test_unknown_orders_actions_and_nodes_are_404_pages(client: Any) -> None:
    csrf = await signed_in(client, OPERATOR_KEY)
    for path in (
        f"/console/orders/{SAMPLE_UUID}",
        "/console/orders/not-a-uuid",
        f"/console/orders/{SAMPLE_UUID}/actions/drain-dead-letters",
        f"/console/orders/{SAMPLE_UUID}/actions/explode",
        "/console/nodes/999/disable",
        "/console/nodes/x/disable",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert "text/html" in response.headers["content-type"]
    posted = await client.post(
        f"/console/orders/{SAMPLE_UUID}/actions/cancel", data={"csrf_token": csrf}
    )
    assert posted.status_code == 404


# ---------------------------------------------------------------- chaos and nodes


async def test_chaos_banner_follows_enable_and_disable(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    csrf = await signed_in(client, OPERATOR_KEY)
    assert "chaos-active" not in (await client.get("/console/partials/chaos")).text
    enabled = await client.post(
        "/console/chaos/enable",
        data={
            "csrf_token": csrf,
            "failure_rate_percent": "30",
            "latency_ms": "250",
            "ttl_minutes": "10",
            "worker_paused": "on",
        },
    )
    assert enabled.status_code == 303
    row = sql.execute(
        "SELECT worker_paused, failure_rate, latency_ms,"
        " round(extract(epoch FROM expires_at - updated_at)) FROM chaos_settings"
    ).fetchone()
    assert row == (True, 0.3, 250, 600)
    banner = (await client.get("/console/partials/chaos?from=%2Fconsole%2Forders")).text
    assert "Chaos injection is ON" in banner
    assert "workers paused · failure rate 30% · latency 250 ms" in banner
    assert "in 10 min" in banner
    assert 'name="next" value="/console/orders"' in banner
    on_every_page = (await client.get("/console/workers")).text
    assert 'id="chaos-active"' in on_every_page
    disabled = await client.post(
        "/console/chaos/disable", data={"csrf_token": csrf, "next": "/console/orders"}
    )
    assert disabled.status_code == 303
    assert disabled.headers["location"] == "/console/orders"
    assert "chaos-active" not in (await client.get("/console/partials/chaos")).text


async def test_bad_chaos_values_are_shown_on_the_form(client: Any) -> None:
    csrf = await signed_in(client, OPERATOR_KEY)
    response = await client.post(
        "/console/chaos/enable",
        data={"csrf_token": csrf, "failure_rate_percent": "150", "ttl_minutes": "5"},
    )
    assert response.status_code == 422
    assert "failureRate must be between 0 and 1" in response.text
    assert 'value="150"' in response.text


async def test_chaos_refused_by_configuration(db_url: str) -> None:
    settings = make_settings(db_url, chaos_allowed=False, invariant_check_interval_seconds=0)
    app = create_app(settings, db_url, run_worker=False)
    async with app.router.lifespan_context(app), client_for(app) as c:
        csrf = await signed_in(c, OPERATOR_KEY)
        assert "GOODFELLAZ17_CHAOS_ALLOWED=false" in (await c.get("/console")).text
        response = await c.post("/console/chaos/enable", data={"csrf_token": csrf})
        assert response.status_code == 403


async def test_nodes_are_added_refused_disabled_and_enabled(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    csrf = await signed_in(client, OPERATOR_KEY)
    added = await client.post(
        "/console/nodes",
        data={
            "csrf_token": csrf,
            "provider": "simulated",
            "node_identifier": "sim-eu-2",
            "capacity_per_hour": "120,000",
        },
    )
    assert added.status_code == 303
    node = sql.execute(
        "SELECT id, capacity_per_hour, enabled FROM nodes WHERE node_identifier = 'sim-eu-2'"
    ).fetchone()
    assert node is not None
    assert node[1:] == (120_000, True)
    duplicate = await client.post(
        "/console/nodes",
        data={"csrf_token": csrf, "provider": "simulated", "node_identifier": "sim-eu-2"},
    )
    assert duplicate.status_code == 409
    assert "already registered" in duplicate.text
    plain_http = await client.post(
        "/console/nodes",
        data={
            "csrf_token": csrf,
            "provider": "webhook",
            "node_identifier": "hook",
            "endpoint": "http://node.example/deliver",
        },
    )
    assert plain_http.status_code == 422
    assert "https://" in plain_http.text
    assert 'value="http://node.example/deliver"' in plain_http.text
    confirm = await client.get(f"/console/nodes/{node[0]}/disable")
    assert "Workers stop sending tasks to this simulated node" in confirm.text
    disabled = await client.post(f"/console/nodes/{node[0]}/disable", data={"csrf_token": csrf})
    assert disabled.status_code == 303
    page = (await client.get("/console/partials/workers")).text
    assert f'data-node-id="{node[0]}" data-state="DISABLED"' in page
    enabled = await client.post(f"/console/nodes/{node[0]}/enable", data={"csrf_token": csrf})
    assert enabled.status_code == 303
    assert sql.execute("SELECT enabled FROM nodes WHERE id = %s", (node[0],)).fetchone() == (True,)


# ---------------------------------------------------------------- the numbers


async def test_overview_partial_counts_tasks_dead_letters_workers_and_nodes(
    app: Any, client: Any, sql: psycopg.Connection[Any]
) -> None:
    seeded_order(
        sql,
        ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED_PERMANENT", "FAILED_RETRYING", "EXECUTING"],
        quantity=2800,  # 7 tasks: the 7th stays PENDING
    )
    seeded_order(sql, ["FAILED_PERMANENT"], quantity=400)
    # Two completions within the last 5 minutes (800 units), one 10 minutes
    # ago (400: in the hour, not in the rate), none older than an hour.
    sql.execute(
        """UPDATE order_tasks SET executed_at = now() - interval '10 minutes'
           WHERE status = 'COMPLETED' AND seq = 0"""
    )
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, last_heartbeat_at) VALUES
           ('alive', 'h', 1, now()), ('stale', 'h', 2, now() - interval '1 hour')"""
    )
    sql.execute(
        """INSERT INTO nodes (provider, node_identifier, enabled) VALUES
           ('simulated', 'off', false)"""
    )
    html = (await signed_in(client, READ_KEY), await client.get("/console/partials/overview"))[
        1
    ].text
    assert state_count(html, "PENDING") == 1
    assert state_count(html, "EXECUTING") == 1
    assert state_count(html, "FAILED_RETRYING") == 1
    assert state_count(html, "FAILED_PERMANENT") == 2
    assert state_count(html, "COMPLETED") == 3
    assert data_value(html, "stat-dead-letters") == "2"
    assert data_value(html, "stat-rate") == str(800 // 5)
    assert "1,200 in the last hour" in html
    assert data_value(html, "stat-workers") == "1"
    assert "1 stale" in html
    assert data_value(html, "stat-nodes") == "1"
    assert "/ 2" in html
    assert data_value(html, "stat-orders") == "2"
    assert data_value(html, "stat-invariants") == "unchecked"
    # A check asked for over the API is not what the alert sees, nor the console.
    await client.get("/api/admin/invariants/all", headers={"X-Api-Key": READ_KEY})
    html = (await client.get("/console/partials/overview")).text
    assert data_value(html, "stat-invariants") == "unchecked"
    await InvariantMonitor(app.state.ctx.repo, 60).run_once()
    html = (await client.get("/console/partials/overview")).text
    assert data_value(html, "stat-invariants") == "passed"


async def test_chart_partial_draws_sixty_minutes_from_the_database(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = seeded_order(sql, ["COMPLETED"] * 4, quantity=1600)
    sql.execute(
        """UPDATE order_tasks SET executed_at = CASE seq
               WHEN 0 THEN now() WHEN 1 THEN now() - interval '30 minutes'
               WHEN 2 THEN now() - interval '30 minutes'
               ELSE now() - interval '2 hours' END
           WHERE order_id = %s""",
        (order_id,),
    )
    await signed_in(client, READ_KEY)
    html = (await client.get("/console/partials/chart")).text
    assert 'data-total="1200"' in html
    assert 'data-peak="800"' in html
    assert html.count('<rect class="chart-bar"') == 60
    assert "800 units</title>" in html
    tall = re.findall(r'class="chart-bar"[^>]*height="([\d.]+)"', html)
    assert sorted(float(h) for h in tall if float(h) > 0) == [40.0, 80.0]  # of 100, max 1,000


async def test_orders_partial_shows_progress_filters_and_the_stuck_flag(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    fresh = seeded_order(sql, ["COMPLETED", "FAILED_PERMANENT"], quantity=1200)
    stuck = seeded_order(sql, ["COMPLETED"], quantity=800)
    sql.execute("UPDATE orders SET created_at = now() - interval '3 hours' WHERE id = %s", (stuck,))
    done = seeded_order(sql, ["COMPLETED"], quantity=400)
    await signed_in(client, READ_KEY)
    html = (await client.get("/console/partials/orders")).text
    row = re.search(rf'data-order-id="{fresh}".*?</tr>', html, re.S)
    assert row is not None
    assert 'data-delivered="400" data-dead="400" data-quantity="1200"' in row.group(0)
    assert 'width="333"' in row.group(0)  # delivered: a third of the bar
    stuck_row = re.search(rf'data-order-id="{stuck}"[^>]*class="([^"]*)"', html)
    assert stuck_row is not None
    assert stuck_row.group(1) == "row-stuck"
    assert html.count("stuck &gt; 2 h") == 1
    processing = (await client.get("/console/partials/orders?status=PROCESSING")).text
    assert str(fresh) in processing
    assert str(stuck) in processing
    assert str(done) not in processing
    assert (await client.get("/console/orders?status=NOPE")).status_code == 404


async def test_order_partial_shows_distribution_dead_letters_and_invariants(
    client: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = seeded_order(sql, ["COMPLETED", "FAILED_PERMANENT", "FAILED_PERMANENT"])
    sql.execute(
        """UPDATE order_tasks SET last_error = 'node said 410 <gone>'
           WHERE order_id = %s AND seq = 1""",
        (order_id,),
    )
    await signed_in(client, READ_KEY)
    html = (await client.get(f"/console/partials/orders/{order_id}")).text
    assert 'data-state="FAILED_PERMANENT" data-tasks="2"' in html
    assert 'data-state="PENDING" data-tasks="7"' in html
    assert 'class="count" data-value="2"' in html
    assert "node said 410 &lt;gone&gt;" in html  # escaped, never markup
    assert 'data-value="passed"' in html
    logged = sql.execute("SELECT count(*) FROM invariant_check_log").fetchone()
    assert logged == (0,)  # looking is not a logged check
    sql.execute(
        "ALTER TABLE order_tasks DISABLE TRIGGER USER;"
        f" UPDATE order_tasks SET quantity = 1 WHERE order_id = '{order_id}' AND seq = 0;"
        " ALTER TABLE order_tasks ENABLE TRIGGER USER"
    )
    broken = (await client.get(f"/console/partials/orders/{order_id}")).text
    assert 'data-value="failed"' in broken
    assert "check-bad" in broken
