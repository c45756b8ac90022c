"""The emergency brake as Kubernetes applies it: the pods' environment built
from deploy/k8s (ConfigMap, Secret, container env) after
`kubectl set env deployment/... GOODFELLAZ17_WORKER_ENABLED=false`, run as
real processes. Braked, nothing delivers (the API still takes orders);
released, the waiting order is delivered."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import API_KEYS, ORDERS_KEY, SESSION_SECRET
from tests.deploy_manifests import deployed, effective_env, kubectl_set_env, one
from tests.e2e.procs import Proc
from tests.helpers import free_port, violations, wait_until

pytestmark = pytest.mark.e2e


def pod_env(deployment_name: str, db_url: str, *, brake: bool) -> dict[str, str]:
    manifests = deployed()
    deployment = copy.deepcopy(one(manifests, "Deployment", deployment_name))
    if brake:
        kubectl_set_env(deployment, "GOODFELLAZ17_WORKER_ENABLED", "false")
    config = one(manifests, "ConfigMap", "goodfellaz17-config")["data"]
    secret = {
        "DATABASE_URL": db_url,
        "GOODFELLAZ17_API_KEYS": API_KEYS,
        "GOODFELLAZ17_SESSION_SECRET": SESSION_SECRET,
    }
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = effective_env(container, config, secret)
    # Loopback and free ports on a shared test machine; the rest as deployed.
    env.update(
        {
            "GOODFELLAZ17_HOST": "127.0.0.1",
            "GOODFELLAZ17_PORT": str(free_port()),
            "GOODFELLAZ17_METRICS_PORT": str(free_port()),
            "GOODFELLAZ17_SIM_LATENCY_MS": "5",
            "GOODFELLAZ17_SIM_USE_NODE_RATE": "false",
        }
    )
    env.update({k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")})
    return env


def health(env: dict[str, str]) -> dict[str, Any] | None:
    try:
        response = httpx.get(
            f"http://127.0.0.1:{env['GOODFELLAZ17_PORT']}/actuator/health", timeout=2
        )
    except httpx.TransportError:
        return None
    body: dict[str, Any] = response.json()
    return body if response.status_code == 200 else None


def start_server(env: dict[str, str], log: Path) -> Proc:
    # The container's command line: ENTRYPOINT goodfellaz17, args from the Deployment.
    server = Proc(["serve", "--host", env["GOODFELLAZ17_HOST"]], env, log)
    wait_until(lambda: health(env) is not None, within=30, what="server healthy")
    return server


def stop(proc: Proc) -> int:
    code = proc.terminate()
    proc.close()
    return code


def test_the_brake_stops_delivery_and_releasing_it_delivers_the_waiting_order(
    db_url: str, sql: psycopg.Connection[Any], tmp_path: Path
) -> None:
    braked = pod_env("goodfellaz17", db_url, brake=True)
    server = start_server(braked, tmp_path / "braked-serve.log")
    worker = Proc(
        ["worker"], pod_env("goodfellaz17-worker", db_url, brake=True), tmp_path / "w.log"
    )
    try:
        status = health(braked)
        assert status is not None
        assert status["components"]["worker"]["status"] == "DISABLED"
        created = httpx.post(
            f"http://127.0.0.1:{braked['GOODFELLAZ17_PORT']}/api/orders",
            json={"quantity": 4_000, "target": "braked", "backend": "simulated"},
            headers={"X-Api-Key": ORDERS_KEY},
            timeout=10,
        )
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        wait_until(
            lambda: "worker disabled by GOODFELLAZ17_WORKER_ENABLED=false" in worker.output(),
            within=30,
            what="braked worker idling",
        )
        # Both processes are up and neither runs a worker: nothing can claim.
        assert sql.execute("SELECT count(*) FROM workers").fetchone() == (0,)
        assert sql.execute(
            "SELECT status, count(*) FROM order_tasks GROUP BY status"
        ).fetchall() == [("PENDING", 10)]
    finally:
        server_code, worker_code = stop(server), stop(worker)
    assert server_code == 0, "serve stops gracefully on SIGTERM"
    assert worker_code == 0, "an idle braked worker stops cleanly on SIGTERM"

    released = pod_env("goodfellaz17", db_url, brake=False)
    server = start_server(released, tmp_path / "released-serve.log")
    try:
        wait_until(
            lambda: (
                sql.execute("SELECT status FROM orders WHERE id = %s", (order_id,)).fetchone()
                == ("COMPLETED",)
            ),
            within=60,
            what="order delivered after the brake is released",
        )
    finally:
        stop(server)
    assert violations(sql) == []
