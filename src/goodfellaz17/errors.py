"""Errors the services raise; the API and the CLI turn them into 4xx / exit 2.

ServiceError
├── InvalidInput   a field's value is unacceptable       (HTTP 422, exit 2)
├── NotFound       the named resource does not exist      (HTTP 404, exit 2)
├── Conflict       the request clashes with current state (HTTP 409, exit 2)
└── Forbidden      refused by configuration               (HTTP 403, exit 2)
"""

from __future__ import annotations


class ServiceError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(ServiceError):
    status_code = 422
    code = "validation_error"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"
