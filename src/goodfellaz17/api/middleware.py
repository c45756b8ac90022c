"""ASGI middleware: body size limit and JSON-only request bodies.

Both answer before the route runs, so an oversized or non-JSON request can
never reach the database.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goodfellaz17.api.errors import error_body

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class _TooLarge(HTTPException):
    """Raised while the route reads a body streamed past the limit (no
    Content-Length). An HTTPException, because FastAPI re-raises those from
    body parsing (anything else becomes a 400) and the error handler then
    answers 413 naming the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, {"message": f"request body exceeds {limit} bytes", "field": "body"})


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class RequestGuardMiddleware:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, json_prefixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.json_prefixes = json_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _send_json(
                    send, 400, error_body(400, "invalid Content-Length", field="Content-Length")
                )
                return
            if int(length) > self.max_body_bytes:
                await _send_json(
                    send,
                    413,
                    error_body(
                        413, f"request body exceeds {self.max_body_bytes} bytes", field="body"
                    ),
                )
                return
        path: str = scope["path"]
        if path.startswith(self.json_prefixes) and (length is None or int(length) > 0):
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type and not (
                content_type == "application/json" or content_type.endswith("+json")
            ):
                await _send_json(
                    send,
                    415,
                    error_body(415, "request body must be application/json", field="Content-Type"),
                )
                return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await _send_json(
                    send,
                    413,
                    error_body(
                        413, f"request body exceeds {self.max_body_bytes} bytes", field="body"
                    ),
                )
