"""/actuator/health: 503 with DOWN when the database is unreachable, never a
500 and never a hang; liveness does not depend on the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg

from goodfellaz17.api.app import create_app
from tests.conftest import make_settings
from tests.helpers import wait_for
from tests.observability import closed_port_url

# The health check gives the database 2 s; allow for a loaded CI machine.
ANSWER_WITHIN_SECONDS = 6.0


@asynccontextmanager
async def running_app(url: str, *, worker: bool = False) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(url, db_connect_timeout_seconds=1, invariant_check_interval_seconds=0)
    app = create_app(settings, url, run_worker=worker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def timed_get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    started = time.monotonic()
    response = await client.get(path)
    assert time.monotonic() - started < ANSWER_WITHIN_SECONDS, f"{path} took too long"
    return response


async def wait_for_health(client: httpx.AsyncClient, status_code: int) -> httpx.Response:
    """Poll /actuator/health until it answers `status_code`; anything but 200
    or 503 on the way fails at once."""

    async def answered() -> httpx.Response | None:
        response = await timed_get(client, "/actuator/health")
        assert response.status_code in (200, 503), response.text
        return response if response.status_code == status_code else None

    response = await wait_for(answered, 20, f"health to answer {status_code}", interval=0.05)
    assert response is not None
    return response


async def assert_down(client: httpx.AsyncClient) -> None:
    health = await timed_get(client, "/actuator/health")
    assert health.status_code == 503
    body = health.json()
    assert body["status"] == "DOWN"
    assert body["components"]["db"]["status"] == "DOWN"
    readiness = await timed_get(client, "/actuator/health/readiness")
    assert readiness.status_code == 503
    assert readiness.json()["status"] == "DOWN"
    liveness = await timed_get(client, "/actuator/health/liveness")
    assert liveness.status_code == 200
    assert liveness.json()["status"] == "UP"


async def test_health_is_503_down_when_nothing_listens_at_the_database_address() -> None:
    async with running_app(closed_port_url()) as client:
        await assert_down(client)


async def test_health_is_503_down_not_a_hang_when_the_database_never_answers() -> None:
    """A server that accepts connections and then says nothing (a hung host, a
    black-holed network): the check gives up on its own timeout."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running_app(f"postgresql://nobody@127.0.0.1:{port}/silent") as client:
            await assert_down(client)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_health_follows_the_database_down_and_back_up(db_url: str, pg_base_url: str) -> None:
    dbname = db_url.split("?")[0].rsplit("/", 1)[1]
    async with running_app(db_url, worker=True) as client:
        up = await wait_for_health(client, 200)  # the worker registers just after start-up
        body = up.json()
        assert body["status"] == "UP"
        assert body["components"]["db"]["status"] == "UP"
        assert body["components"]["worker"]["status"] == "UP"

        with psycopg.connect(pg_base_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
            try:
                await assert_down(client)
            finally:
                admin.execute(f"ALTER DATABASE {dbname} WITH ALLOW_CONNECTIONS true")

        assert (await wait_for_health(client, 200)).json()["status"] == "UP"


async def test_every_health_endpoint_needs_no_key(api: Any) -> None:
    for path in ("/actuator/health", "/actuator/health/liveness", "/actuator/health/readiness"):
        response = await api.get(path)
        assert response.status_code == 200, path
        assert response.json()["status"] == "UP"
