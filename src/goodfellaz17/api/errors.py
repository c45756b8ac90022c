"""Every error leaves the API as JSON naming what was wrong:

    {"error": "validation_error", "message": "quantity: ...", "field": "quantity",
     "details": [{"field": "quantity", "message": "..."}]}

Database outages become 503, never 500; a 500 is a bug and is logged.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg_pool
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from goodfellaz17.errors import ServiceError
from goodfellaz17.logs import get_logger

log = get_logger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
    503: "service_unavailable",
}


def error_body(
    status: int,
    message: str,
    *,
    field: str | None = None,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error": code or _HTTP_CODES.get(status, "error"),
        "message": message,
        "field": field,
    }
    if details:
        body["details"] = details
    return body


def error_response(
    status: int,
    message: str,
    *,
    field: str | None = None,
    code: str | None = None,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, field=field, code=code, details=details),
        status_code=status,
        headers=headers,
    )


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        source, parts = parts[0], parts[1:]
        if not parts:
            return "body" if source == "body" else source
        if source == "body" and parts and parts[0].isdigit():
            return "body"  # a JSON syntax error: loc is a character offset
    return ".".join(parts) if parts else "body"


def _validation_message(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "request body is not valid JSON"
    if error.get("type") == "extra_forbidden":
        return "unknown field"
    return str(error.get("msg", "invalid value"))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": _field_of(tuple(e.get("loc", ()))), "message": _validation_message(e)}
        for e in exc.errors()
    ]
    first = details[0] if details else {"field": "body", "message": "invalid request"}
    return error_response(
        422, f"{first['field']}: {first['message']}", field=first["field"], details=details
    )


async def _on_service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status_code, exc.message, field=exc.field, code=exc.code)


# Routing's own refusals, which name no field: what was wrong is the path or the method.
_ROUTING_FIELDS = {404: "path", 405: "method"}


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
        # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): the
        # same thing as malformed JSON, so the same answer.
        message = "request body is not valid JSON"
        return error_response(
            422,
            f"body: {message}",
            field="body",
            details=[{"field": "body", "message": message}],
        )
    field = _ROUTING_FIELDS.get(exc.status_code)
    message = str(exc.detail)
    if isinstance(exc.detail, dict):
        field = exc.detail.get("field")
        message = str(exc.detail.get("message", message))
    return error_response(
        exc.status_code, message, field=field, headers=getattr(exc, "headers", None)
    )


async def _on_database_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
    return error_response(
        503, "the database is unavailable; retry shortly", headers={"Retry-After": "5"}
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, method=request.method)
    return error_response(500, "internal error", code="internal_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ServiceError, _on_service_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(psycopg.OperationalError, _on_database_down)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _on_database_down)
    app.add_exception_handler(Exception, _on_unexpected)
