"""The webhook backend against real HTTP servers on loopback: outcomes, the
total deadline, the bounded response read, where endpoints may point (at
registration and at connect time) and what an error may say."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpcore
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from goodfellaz17.backends.base import (
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from goodfellaz17.backends.registry import build_backends
from goodfellaz17.backends.webhook import RESPONSE_READ_BYTES, WebhookBackend
from goodfellaz17.domain.destinations import AllowList, DestinationPolicy, IPAddress
from goodfellaz17.worker.worker import OrderDeliveryWorker
from tests.conftest import key_headers, make_settings
from tests.helpers import insert_order, order_row, violations

MIB = 1024 * 1024
HUGE_BODY = 100 * MIB
DRIP_EVERY = 0.05  # seconds per byte: far inside any per-read timeout
# What an internal service might say to a scan; no error may repeat it.
BANNER = b"SSH-2.0-OpenSSH_9.2p1 admin-panel.corp\r\n\r\n"
STATUS = {
    "/ok": 200,
    "/accepted": 202,
    "/429": 429,
    "/500": 500,
    "/503": 503,
    "/400": 400,
    "/404": 404,
    "/hang": 200,
}


class Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str | None, bytes]]] = []
    hosts: ClassVar[list[str | None]] = []
    sent: ClassVar[dict[str, int]] = {}
    finished: ClassVar[threading.Event] = threading.Event()
    stop: ClassVar[threading.Event] = threading.Event()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.seen.append((self.path, self.headers.get("Idempotency-Key"), body))
        Receiver.hosts.append(self.headers.get("Host"))
        try:
            self.respond()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client hung up: what a bounded client does
        finally:
            Receiver.finished.set()

    def respond(self) -> None:
        if self.path == "/hang":
            time.sleep(2)
        if self.path == "/drip-head":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            self.drip_forever()
            return
        if self.path == "/drip-body":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
            self.drip_forever()
            return
        if self.path == "/huge":
            self.send_huge_body()
            return
        if self.path == "/banner":
            self.wfile.write(BANNER)
            return
        if self.path == "/500-banner":
            self.send_response(500)
            self.send_header("Content-Length", str(len(BANNER)))
            self.end_headers()
            self.wfile.write(BANNER)
            return
        self.send_response(STATUS.get(self.path, 200))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def drip_forever(self) -> None:
        while not Receiver.stop.wait(DRIP_EVERY):
            self.wfile.write(b"a")
            self.wfile.flush()

    def send_huge_body(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(HUGE_BODY))
        self.end_headers()
        chunk = b"\0" * (64 * 1024)
        Receiver.sent[self.path] = 0
        while Receiver.sent[self.path] < HUGE_BODY and not Receiver.stop.is_set():
            self.wfile.write(chunk)
            Receiver.sent[self.path] += len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[int]:
    """A Receiver on a loopback port (TLS with `tls`); yields the port."""
    Receiver.seen, Receiver.hosts, Receiver.sent = [], [], {}
    Receiver.finished, Receiver.stop = threading.Event(), threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        Receiver.stop.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[str]:
    with serving() as port:
        yield f"http://127.0.0.1:{port}"


def request(endpoint: str, node: str = "hook-1") -> DeliveryRequest:
    return DeliveryRequest(
        task_id=uuid.uuid4(),
        order_id=uuid.uuid4(),
        quantity=400,
        target="acct",
        attempt=1,
        fencing_token=7,
        node_id=1,
        node_identifier=node,
        endpoint=endpoint,
        capacity_per_hour=3600,
    )


@asynccontextmanager
async def webhook(**settings: Any) -> AsyncIterator[Any]:
    """The webhook backend exactly as the service builds it from its settings."""
    backend = build_backends(make_settings(**settings))["webhook"]
    try:
        yield backend
    finally:
        await backend.aclose()


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
    req = request(receiver + path)
    async with webhook(webhook_timeout_seconds=0.3) as backend:
        if outcome is None:
            await backend.deliver(req)
        else:
            with pytest.raises(outcome):
                await backend.deliver(req)
    [(seen_path, key, body)] = Receiver.seen
    assert seen_path == path
    assert key == str(req.task_id)
    assert b'"quantity":400' in body.replace(b" ", b"")


async def test_an_unreachable_endpoint_is_retryable() -> None:
    async with webhook(webhook_timeout_seconds=0.5) as backend:
        with pytest.raises(RetryableDeliveryError):
            await backend.deliver(request("http://127.0.0.1:9/unreachable"))


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


# ---------------------------------------------------------------- the total deadline


@pytest.mark.parametrize("path", ["/drip-head", "/drip-body"])
async def test_a_dripping_receiver_fails_the_delivery_at_the_deadline(
    receiver: str, path: str
) -> None:
    """One byte every 50 ms never trips the 5 s read timeout; the 1 s deadline
    ends the delivery anyway, as a retryable failure."""
    async with webhook(webhook_timeout_seconds=5.0, webhook_deadline_seconds=1.0) as backend:
        started = time.monotonic()
        with pytest.raises(RetryableDeliveryError, match="deadline") as failed:
            async with asyncio.timeout(8):  # bounds this test on a backend without one
                await backend.deliver(request(receiver + path))
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 3.0
    assert "hook-1" in str(failed.value)


async def test_a_100_mib_response_is_not_downloaded(receiver: str) -> None:
    async with webhook(webhook_timeout_seconds=5.0) as backend:
        await backend.deliver(request(receiver + "/huge"))  # 200: delivered
    assert await asyncio.to_thread(Receiver.finished.wait, 10)
    # The receiver could write only what the kernel's socket buffers hold once
    # the client stopped reading and hung up: megabytes, never 100 MiB.
    assert Receiver.sent["/huge"] < HUGE_BODY / 4


async def test_a_hung_receiver_opens_the_node_circuit_and_frees_the_task(
    db_url: str, sql: psycopg.Connection[Any], receiver: str
) -> None:
    """A receiver that never finishes its answer must not hold the task (and
    its lease) forever: the deadline fails it, and counts against the node."""
    sql.execute(
        "INSERT INTO nodes (provider, node_identifier, endpoint) VALUES ('webhook', 'drip', %s)",
        (receiver + "/drip-body",),
    )
    insert_order(sql, 400, backend="webhook")
    settings = make_settings(
        db_url,
        webhook_timeout_seconds=5.0,
        webhook_deadline_seconds=0.5,
        circuit_failure_threshold=1,
        circuit_cooldown_seconds=3600,
    )
    worker = OrderDeliveryWorker(settings, db_url, registry=CollectorRegistry())
    running = await worker.start()
    try:
        await wait_for(lambda: node_circuit(sql) == "OPEN", within=10)
    finally:
        await worker.stop()
        await running
    status, attempts, last_error = sql.execute(
        "SELECT status, attempts, last_error FROM order_tasks"
    ).fetchone() or ("", 0, "")
    assert status == "FAILED_RETRYING"
    assert attempts >= 1
    assert "deadline" in last_error
    failures, node_error = sql.execute(
        "SELECT consecutive_failures, last_error FROM nodes WHERE node_identifier = 'drip'"
    ).fetchone() or (0, "")
    assert failures >= 1
    assert "deadline" in node_error


def node_circuit(sql: psycopg.Connection[Any]) -> str | None:
    row = sql.execute("SELECT circuit_state FROM nodes WHERE node_identifier = 'drip'").fetchone()
    return None if row is None else str(row[0])


async def wait_for(predicate: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------- what errors say


@pytest.mark.parametrize("path", ["/banner", "/500-banner"])
async def test_errors_never_repeat_what_the_receiver_said(receiver: str, path: str) -> None:
    """A read key sees node lastError and task last_error: they carry a status
    code and a generic reason, never the receiver's bytes (a port scanner's
    banner, an internal page)."""
    async with webhook(webhook_timeout_seconds=2.0) as backend:
        with pytest.raises(RetryableDeliveryError) as failed:
            await backend.deliver(request(receiver + path))
    message = str(failed.value)
    assert "OpenSSH" not in message
    assert "admin-panel" not in message
    assert "hook-1" in message


# ---------------------------------------------------------------- where endpoints may point

INSIDE_THE_NETWORK = [
    "https://169.254.169.254/latest/meta-data/",
    "https://[::ffff:169.254.169.254]/latest/meta-data/",
    "https://10.0.0.1:6443/",
    "https://172.16.5.4/hook",
    "https://192.168.0.10/hook",
    "https://[fd00:ec2::254]/",
    "https://[fe80::1]/",
    "https://0.0.0.0:8080/",
    "https://167772161/",  # 10.0.0.1 written as one number
    "https://kubernetes.default.svc/",
    "https://kubernetes.default.svc.cluster.local/api",
    "https://metadata.google.internal/computeMetadata/v1/",
    "https://intranet/hook",
]


@pytest.mark.parametrize("endpoint", INSIDE_THE_NETWORK)
async def test_endpoints_inside_the_network_are_refused_naming_the_field(
    api: Any, sql: psycopg.Connection[Any], endpoint: str
) -> None:
    r = await api.post(
        "/api/internal/nodes",
        headers=key_headers(),
        json={"provider": "webhook", "nodeIdentifier": "scan", "endpoint": endpoint},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "endpoint"
    assert "GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS" in r.json()["message"]
    assert sql.execute("SELECT count(*) FROM nodes WHERE provider = 'webhook'").fetchone() == (0,)


async def test_the_allow_list_admits_named_internal_destinations(
    db_url: str, sql: psycopg.Connection[Any]
) -> None:
    from goodfellaz17.api.app import create_app

    settings = make_settings(
        db_url, webhook_allowed_destinations="10.0.0.0/8, receiver.delivery.svc.cluster.local"
    )
    app = create_app(settings, db_url, run_worker=False)
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for name, endpoint, status in [
                ("a", "https://10.1.2.3:8443/hook", 201),
                ("b", "https://receiver.delivery.svc.cluster.local/hook", 201),
                ("c", "https://other.delivery.svc.cluster.local/hook", 422),
                ("d", "https://192.168.0.10/hook", 422),
            ]:
                r = await client.post(
                    "/api/internal/nodes",
                    headers=key_headers(),
                    json={"provider": "webhook", "nodeIdentifier": name, "endpoint": endpoint},
                )
                assert r.status_code == status, (endpoint, r.text)


# ---------------------------------------------------------------- connect time

DEVELOPMENT = DestinationPolicy.for_environment(production=False)
# 127.0.0.1 stands in for a public address: loopback is all a test can reach.
PUBLIC_STAND_IN = DestinationPolicy.for_environment(
    production=True, allowed=AllowList.parse("127.0.0.1")
)


class CountingStream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream, counts: CountingNetwork) -> None:
        self._inner, self._counts = inner, counts

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._inner.read(max_bytes, timeout)
        self._counts.bytes_read += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> httpcore.AsyncNetworkStream:
        inner = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return CountingStream(inner, self._counts)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class CountingNetwork(httpcore.AsyncNetworkBackend):
    """The real network, recording where sockets go and how much is read."""

    def __init__(self) -> None:
        self.bytes_read = 0
        self.connected_to: list[str] = []
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected_to.append(host)
        stream = await self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return CountingStream(stream, self)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def answering(*answers: list[str]) -> Any:
    """A resolver that gives these answers, one per lookup, in order."""
    pending = [[ipaddress.ip_address(a) for a in answer] for answer in answers]

    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return pending.pop(0)

    return resolve


async def test_at_most_a_few_kib_of_a_response_are_read(receiver: str) -> None:
    network = CountingNetwork()
    backend = WebhookBackend(destinations=DEVELOPMENT, network_backend=network)
    try:
        await backend.deliver(request(receiver + "/huge"))
    finally:
        await backend.aclose()
    # Headers plus the bounded body, at most one network read (64 KiB) past it.
    assert network.bytes_read <= RESPONSE_READ_BYTES + 64 * 1024 + 1024


async def test_production_rules_refuse_loopback_at_connect_time(receiver: str) -> None:
    """A node registered before the rules (or inserted by hand) is refused
    when its request would leave, before any connection."""
    network = CountingNetwork()
    production = DestinationPolicy.for_environment(production=True)
    backend = WebhookBackend(destinations=production, network_backend=network)
    try:
        for endpoint in [receiver + "/ok", receiver.replace("127.0.0.1", "localhost") + "/ok"]:
            with pytest.raises(RetryableDeliveryError, match=r"destination refused.*loopback"):
                await backend.deliver(request(endpoint))
    finally:
        await backend.aclose()
    assert network.connected_to == []
    assert Receiver.seen == []


async def test_a_name_rebound_to_a_private_address_is_refused_at_connect_time(
    receiver: str,
) -> None:
    port = receiver.rsplit(":", 1)[1]
    endpoint = f"http://hooks.rebind.example:{port}/ok"
    network = CountingNetwork()
    backend = WebhookBackend(
        destinations=PUBLIC_STAND_IN,
        network_backend=network,
        resolve=answering(["127.0.0.1"], ["10.0.0.1"], ["127.0.0.1", "169.254.169.254"]),
    )
    try:
        await backend.deliver(request(endpoint))
        for inside in ["a private address", "the cloud metadata service"]:
            with pytest.raises(RetryableDeliveryError, match="destination refused") as refused:
                await backend.deliver(request(endpoint))
            assert inside in str(refused.value)
            assert "10.0.0.1" not in str(refused.value)
    finally:
        await backend.aclose()
    # One connection, to the address that was checked, with the name as Host.
    assert network.connected_to == ["127.0.0.1"]
    assert Receiver.hosts == [f"hooks.rebind.example:{port}"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for hooks.tls.example: (certificate, key)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=hooks.tls.example", "-addext", "subjectAltName=DNS:hooks.tls.example"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_checks_the_name_while_the_socket_goes_to_the_checked_address(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    network = CountingNetwork()
    with serving(tls=server_tls) as port:
        backend = WebhookBackend(
            destinations=DEVELOPMENT,
            verify_tls=trusting,
            network_backend=network,
            resolve=answering(["127.0.0.1"], ["127.0.0.1"]),
        )
        default = WebhookBackend(destinations=DEVELOPMENT, resolve=answering(["127.0.0.1"]))
        try:
            await backend.deliver(request(f"https://hooks.tls.example:{port}/ok"))
            # Verification stays on: the same certificate for another name, and
            # the default trust store for a self-signed one, are refused.
            for checking, endpoint in [
                (backend, f"https://other.tls.example:{port}/ok"),
                (default, f"https://hooks.tls.example:{port}/ok"),
            ]:
                with pytest.raises(RetryableDeliveryError, match="TLS") as refused:
                    await checking.deliver(request(endpoint))
                assert "tls.example" not in str(refused.value)
        finally:
            await backend.aclose()
            await default.aclose()
    assert network.connected_to == ["127.0.0.1", "127.0.0.1"]
    assert Receiver.hosts == [f"hooks.tls.example:{port}"]
