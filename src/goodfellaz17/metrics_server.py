"""A separate metrics port (GOODFELLAZ17_METRICS_PORT), served without an API key.

The main port keeps /metrics behind a read key; this port exists for
Prometheus, which scrapes it from inside the cluster network. It runs in the
caller's event loop (uvicorn on a socket bound here, so a busy port fails
start-up with a plain OSError) and never installs signal handlers: the
process that hosts it owns SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn
from starlette.responses import PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from goodfellaz17.logs import get_logger
from goodfellaz17.metrics import MetricsExporter

log = get_logger(__name__)

METRICS_PATHS = frozenset({"/metrics", "/actuator/prometheus"})
START_TIMEOUT_SECONDS = 10.0


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handling: the host process owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class MetricsServer:
    def __init__(self, exporter: MetricsExporter, host: str, port: int) -> None:
        self.exporter = exporter
        self.host = host
        self.port = port
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response: Response
        if scope["path"] not in METRICS_PATHS:
            response = PlainTextResponse("not found: try /metrics\n", status_code=404)
        elif scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("method not allowed\n", status_code=405)
        else:
            body = await self.exporter.render()
            response = Response(body, media_type=self.exporter.content_type)
        await response(scope, receive, send)

    async def start(self) -> None:
        """Bind and serve; returns once the port accepts connections."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="metrics-port")
        async with asyncio.timeout(START_TIMEOUT_SECONDS):
            while not self._server.started:
                if self._task.done():
                    await self._task  # re-raise why it could not start
                    raise RuntimeError("metrics server stopped during start-up")
                await asyncio.sleep(0.01)
        log.info("metrics port open", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None
