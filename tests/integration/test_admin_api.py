"""Admin API: progress, dead letters, capacity, worker status, nodes, chaos."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import ORDERS_KEY, READ_KEY, key_headers, make_settings
from tests.helpers import insert_order, set_task_states

MIXED = ["COMPLETED"] * 10 + ["FAILED_PERMANENT"] * 5 + ["FAILED_RETRYING"] * 5 + ["EXECUTING"] * 3


async def test_progress_counts_tasks_and_units_per_status(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, MIXED)
    r = await api.get(f"/api/admin/orders/{order_id}/progress", headers=key_headers(READ_KEY))
    assert r.status_code == 200, r.text
    body = r.json()
    expected = dict(
        sql.execute(
            "SELECT status, json_build_object('tasks', count(*), 'units', sum(quantity))"
            " FROM order_tasks WHERE order_id = %s GROUP BY status",
            (order_id,),
        ).fetchall()
    )
    assert {s: t for s, t in body["tasks"].items() if t["tasks"]} == expected
    assert sum(t["tasks"] for t in body["tasks"].values()) == 38
    assert body["delivered"] == expected["COMPLETED"]["units"]
    assert body["percentComplete"] == round(100 * body["delivered"] / 15_000, 2)
    assert body["remaining"] == 15_000 - body["delivered"] - body["failedPermanentPlays"]
    assert body["status"] == "PROCESSING"
    assert body["ageSeconds"] >= 0
    # Ten tasks completed just now: a positive rate and a finite ETA.
    assert body["unitsPerSecond"] > 0
    assert body["etaSeconds"] is not None
    assert body["etaSeconds"] > 0


async def test_progress_of_an_untouched_order_has_no_eta(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 1000)
    body = (
        await api.get(f"/api/admin/orders/{order_id}/progress", headers=key_headers(READ_KEY))
    ).json()
    assert body["tasks"]["PENDING"] == {"tasks": 3, "units": 1000}
    assert body["percentComplete"] == 0
    assert body["unitsPerSecond"] == 0
    assert body["etaSeconds"] is None


async def test_failed_tasks_lists_dead_letters_with_last_error(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, MIXED)
    r = await api.get(f"/api/admin/orders/{order_id}/failed-tasks", headers=key_headers(READ_KEY))
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 5
    assert len(body["tasks"]) == 5
    for task in body["tasks"]:
        assert task["lastError"] == "seeded failure"
        assert task["attempts"] == 1
        assert task["executedAt"] is not None
    limited = await api.get(
        f"/api/admin/orders/{order_id}/failed-tasks",
        headers=key_headers(READ_KEY),
        params={"limit": 2},
    )
    assert len(limited.json()["tasks"]) == 2
    assert limited.json()["count"] == 5


async def test_failed_tasks_show_delivery_attempts_and_orphanings_apart(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    """Two budgets, two counts (issue 14.12): an operator sees whether a dead
    letter failed its deliveries or kept losing its workers."""
    order_id = insert_order(sql, 1_200)
    set_task_states(sql, order_id, ["FAILED_PERMANENT"] * 2 + ["COMPLETED"])
    sql.execute(
        "UPDATE order_tasks SET orphanings = 20, attempts = 0 WHERE order_id = %s AND seq = 0",
        (order_id,),
    )
    r = await api.get(f"/api/admin/orders/{order_id}/failed-tasks", headers=key_headers(READ_KEY))
    assert r.status_code == 200, r.text
    counts = {t["seq"]: (t["attempts"], t["orphanings"]) for t in r.json()["tasks"]}
    assert counts == {0: (0, 20), 1: (1, 0)}


async def test_unknown_orders_are_404_naming_the_order(api: Any) -> None:
    missing = "00000000-0000-0000-0000-0000000000ff"
    for path in ["progress", "failed-tasks"]:
        r = await api.get(f"/api/admin/orders/{missing}/{path}", headers=key_headers(READ_KEY))
        assert r.status_code == 404
        assert r.json()["field"] == "orderId"
        bad = await api.get(f"/api/admin/orders/not-a-uuid/{path}", headers=key_headers(READ_KEY))
        assert bad.status_code == 422
        assert bad.json()["field"] == "orderId"


async def test_capacity_weighs_the_backlog_against_healthy_nodes(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    # The seeded node: 3,600,000 units/hour. A live worker is needed for any ETA.
    none_alive = (await api.get("/api/admin/capacity", headers=key_headers(READ_KEY))).json()
    assert none_alive["liveWorkers"] == 0
    assert none_alive["newOrderFitsWithin2h"] is False
    assert none_alive["newOrderEtaSeconds"] is None

    sql.execute("INSERT INTO workers (id, hostname, pid) VALUES ('w1', 'h', 1)")
    order_id = insert_order(sql, 15_000)
    set_task_states(sql, order_id, ["FAILED_RETRYING"] * 2 + ["EXECUTING"])
    body = (await api.get("/api/admin/capacity", headers=key_headers(READ_KEY))).json()
    retrying, executing = sql.execute(
        "SELECT sum(quantity) FILTER (WHERE status = 'FAILED_RETRYING'),"
        " sum(quantity) FILTER (WHERE status = 'EXECUTING') FROM order_tasks"
    ).fetchone() or (0, 0)
    assert body["liveWorkers"] == 1
    assert body["healthyNodes"] == body["totalNodes"] == 1
    assert body["healthyUnitsPerHour"] == 3_600_000
    assert body["retryingUnits"] == retrying
    assert body["executingUnits"] == executing
    assert body["backlogUnits"] == 15_000 - executing
    assert body["backlogEtaSeconds"] == pytest.approx(body["backlogUnits"] / 1000, abs=0.1)
    assert body["newOrderEtaSeconds"] == pytest.approx(
        (body["backlogUnits"] + 15_000) / 1000, abs=0.1
    )
    assert body["newOrderFitsWithin2h"] is True

    # A slow node: 15,000 + backlog at 10,000 units/hour takes over 2 h.
    sql.execute("UPDATE nodes SET capacity_per_hour = 10000")
    slow = (await api.get("/api/admin/capacity", headers=key_headers(READ_KEY))).json()
    assert slow["newOrderFitsWithin2h"] is False
    sql.execute("UPDATE nodes SET enabled = false")
    off = (await api.get("/api/admin/capacity", headers=key_headers(READ_KEY))).json()
    assert off["healthyNodes"] == 0
    assert off["backlogEtaSeconds"] is None


async def test_worker_status_without_a_worker_reports_fleet_totals(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    sql.execute(
        """INSERT INTO workers (id, hostname, pid, total_processed, total_completed,
                                total_failed, total_retries, recovered_orphans, last_heartbeat_at,
                                status)
           VALUES ('alive', 'h', 1, 10, 8, 1, 1, 2, now(), 'RUNNING'),
                  ('silent', 'h', 2, 5, 5, 0, 0, 0, now() - interval '1 hour', 'RUNNING'),
                  ('gone', 'h', 3, 1, 1, 0, 0, 0, now() - interval '2 hours', 'STOPPED')"""
    )
    r = await api.get("/api/admin/worker/status", headers=key_headers(READ_KEY))
    assert r.status_code == 200
    body = r.json()
    assert body["scope"] == "fleet"
    assert body["workerId"] is None
    assert (body["totalProcessed"], body["totalCompleted"], body["totalFailed"]) == (16, 14, 1)
    assert (body["totalRetries"], body["recoveredOrphans"]) == (1, 2)
    assert body["isRunning"] is True
    states = {w["id"]: (w["state"], w["alive"]) for w in body["workers"]}
    assert states == {
        "alive": ("ALIVE", True),
        "silent": ("STALE", False),
        "gone": ("STOPPED", False),
    }
    assert body["workers"][0]["id"] == "alive"
    assert "lastHeartbeatAt" in body["workers"][0]


async def test_nodes_register_list_duplicate_and_disable(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    created = await api.post(
        "/api/internal/proxies",
        headers=key_headers(),
        json={"provider": "simulated", "nodeIdentifier": "sim-2", "capacityPerHour": 5000},
    )
    assert created.status_code == 201, created.text
    node = created.json()
    assert (node["provider"], node["nodeIdentifier"], node["capacityPerHour"]) == (
        "simulated",
        "sim-2",
        5000,
    )
    assert node["healthy"] is True
    again = await api.post(
        "/api/internal/nodes",
        headers=key_headers(),
        json={"provider": "simulated", "nodeIdentifier": "sim-2"},
    )
    assert again.status_code == 409
    assert again.json()["field"] == "nodeIdentifier"
    webhook = await api.post(
        "/api/internal/nodes",
        headers=key_headers(),
        json={
            "provider": "webhook",
            "nodeIdentifier": "hook-1",
            "endpoint": "https://hooks.example.com/deliver",
        },
    )
    assert webhook.status_code == 201, webhook.text

    listed = (await api.get("/api/internal/nodes", headers=key_headers(READ_KEY))).json()
    assert {n["nodeIdentifier"] for n in listed} == {"sim-local-1", "sim-2", "hook-1"}
    assert all("healthy" in n and "state" in n for n in listed)

    gone = await api.delete(f"/api/internal/nodes/{node['id']}", headers=key_headers())
    assert gone.status_code == 200
    assert gone.json()["enabled"] is False
    assert gone.json()["state"] == "DISABLED"
    assert gone.json()["healthy"] is False
    back = await api.post(f"/api/internal/proxies/{node['id']}/enable", headers=key_headers())
    assert back.json()["healthy"] is True
    missing = await api.delete("/api/internal/nodes/999999", headers=key_headers())
    assert missing.status_code == 404
    actions = sql.execute("SELECT action FROM operator_actions ORDER BY id").fetchall()
    assert [a for (a,) in actions] == [
        "node_register",
        "node_register",
        "node_disable",
        "node_enable",
    ]


BAD_NODES: list[tuple[str, dict[str, Any], int, str]] = [
    ("unknown provider", {"provider": "carrier-pigeon", "nodeIdentifier": "n"}, 422, "provider"),
    ("missing identifier", {"provider": "simulated"}, 422, "nodeIdentifier"),
    ("blank identifier", {"provider": "simulated", "nodeIdentifier": "  "}, 422, "nodeIdentifier"),
    (
        "zero capacity",
        {"provider": "simulated", "nodeIdentifier": "n", "capacityPerHour": 0},
        422,
        "capacityPerHour",
    ),
    ("webhook without endpoint", {"provider": "webhook", "nodeIdentifier": "n"}, 422, "endpoint"),
    (
        "plain http endpoint",
        {"provider": "webhook", "nodeIdentifier": "n", "endpoint": "http://hooks.example.com/x"},
        422,
        "endpoint",
    ),
    (
        "ftp endpoint",
        {"provider": "webhook", "nodeIdentifier": "n", "endpoint": "ftp://example.com/x"},
        422,
        "endpoint",
    ),
    (
        "endpoint with credentials",
        {"provider": "webhook", "nodeIdentifier": "n", "endpoint": "https://u:p@example.com/"},
        422,
        "endpoint",
    ),
    ("unknown field", {"provider": "simulated", "nodeIdentifier": "n", "x": 1}, 422, "x"),
]


async def test_bad_nodes_are_refused_naming_the_field(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    for case, body, status, field in BAD_NODES:
        r = await api.post("/api/internal/nodes", headers=key_headers(), json=body)
        assert r.status_code == status, (case, r.text)
        assert r.json()["field"] == field, case
    assert sql.execute("SELECT count(*) FROM nodes").fetchone() == (1,)


async def test_plain_http_webhooks_are_allowed_on_loopback_only(api: Any) -> None:
    for host in ["127.0.0.1", "localhost", "[::1]", "127.0.0.2"]:
        r = await api.post(
            "/api/internal/nodes",
            headers=key_headers(),
            json={"provider": "webhook", "nodeIdentifier": host, "endpoint": f"http://{host}:9/x"},
        )
        assert r.status_code == 201, (host, r.text)
    for host in ["10.0.0.1", "example.com", "localhost.example.com"]:
        r = await api.post(
            "/api/internal/nodes",
            headers=key_headers(),
            json={"provider": "webhook", "nodeIdentifier": host, "endpoint": f"http://{host}/x"},
        )
        assert r.status_code == 422, (host, r.text)


async def test_node_and_chaos_writes_need_the_operator_role(api: Any) -> None:
    for method, path, body in [
        ("POST", "/api/internal/nodes", {"provider": "simulated", "nodeIdentifier": "n"}),
        ("DELETE", "/api/internal/nodes/1", None),
        ("POST", "/api/admin/testing/enable", {}),
        ("POST", "/api/admin/testing/disable", None),
        ("POST", "/api/admin/orders/00000000-0000-0000-0000-000000000001/cancel", None),
    ]:
        r = await api.request(method, path, headers=key_headers(ORDERS_KEY), json=body)
        assert r.status_code == 403, (path, r.text)


async def test_chaos_enable_status_disable(api: Any, sql: psycopg.Connection[Any]) -> None:
    off = (await api.get("/api/admin/testing/status", headers=key_headers(READ_KEY))).json()
    assert off["active"] is False
    assert off["workerPaused"] is False
    on = await api.post(
        "/api/admin/testing/enable",
        headers=key_headers(),
        json={"workerPaused": True, "failureRate": 0.25, "latencyMs": 10},
    )
    assert on.status_code == 200, on.text
    body = on.json()
    assert body["active"] is True
    assert (body["workerPaused"], body["failureRate"], body["latencyMs"]) == (True, 0.25, 10)
    # Default TTL: 15 minutes, and always an expiry.
    assert 895 <= body["remainingSeconds"] <= 900
    assert body["expiresAt"] is not None
    assert body["updatedBy"].startswith("api-key:")
    status = (await api.get("/api/admin/testing/status", headers=key_headers(READ_KEY))).json()
    assert status["active"] is True
    assert status["workerPaused"] is True
    disabled = (await api.post("/api/admin/testing/disable", headers=key_headers())).json()
    assert disabled["active"] is False
    assert disabled["workerPaused"] is False
    assert sql.execute("SELECT enabled FROM chaos_settings").fetchone() == (False,)
    actions = sql.execute("SELECT action FROM operator_actions ORDER BY id").fetchall()
    assert [a for (a,) in actions] == ["chaos_enable", "chaos_disable"]


async def test_expired_chaos_reads_as_off(api: Any, sql: psycopg.Connection[Any]) -> None:
    sql.execute(
        "UPDATE chaos_settings SET enabled = true, worker_paused = true, failure_rate = 1,"
        " expires_at = now() - interval '1 second'"
    )
    body = (await api.get("/api/admin/testing/status", headers=key_headers(READ_KEY))).json()
    assert body["active"] is False
    assert body["expired"] is True
    assert body["workerPaused"] is False
    assert body["failureRate"] == 0


BAD_CHAOS: list[tuple[dict[str, Any], str]] = [
    ({"failureRate": 1.5}, "failureRate"),
    ({"failureRate": -0.1}, "failureRate"),
    ({"latencyMs": -1}, "latencyMs"),
    ({"ttlSeconds": 0}, "ttlSeconds"),
    ({"ttlSeconds": 86_401}, "ttlSeconds"),
    ({"workerPaused": "yes"}, "workerPaused"),
    ({"pause": True}, "pause"),
]


async def test_bad_chaos_settings_are_refused_naming_the_field(
    api: Any, sql: psycopg.Connection[Any]
) -> None:
    for body, field in BAD_CHAOS:
        r = await api.post("/api/admin/testing/enable", headers=key_headers(), json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["field"] == field, body
    assert sql.execute("SELECT enabled FROM chaos_settings").fetchone() == (False,)


async def test_chaos_can_be_forbidden_by_configuration(db_url: str) -> None:
    import httpx

    from goodfellaz17.api.app import create_app

    app = create_app(make_settings(db_url, chaos_allowed=False), db_url, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            r = await client.post(
                "/api/admin/testing/enable", headers=key_headers(), json={"workerPaused": True}
            )
            assert r.status_code == 403
            assert r.json()["error"] == "forbidden"
            assert "GOODFELLAZ17_CHAOS_ALLOWED" in r.json()["message"]
            off = await client.post("/api/admin/testing/disable", headers=key_headers())
            assert off.status_code == 200
