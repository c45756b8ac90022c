"""One structured log line per HTTP request (uvicorn's own access log is off).

It logs the method, the path, the status and the duration, and never the
query string or any header: those are where credentials travel. Probes and
scrapes (/actuator, /metrics) log at debug so that they do not drown the rest.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodfellaz17.logs import get_logger

log = get_logger("goodfellaz17.http")

_QUIET_PREFIXES = ("/actuator/", "/metrics")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            path: str = scope["path"]
            level = "debug" if path.startswith(_QUIET_PREFIXES) else "info"
            getattr(log, level)(
                "http request",
                method=scope["method"],
                path=path,
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
