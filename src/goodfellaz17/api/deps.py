"""Dependencies, as Annotated aliases so routes read like prose."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader
from prometheus_client import CollectorRegistry, Counter

from goodfellaz17.api.auth import AuthThrottle, KeyRing, Principal, client_address_key
from goodfellaz17.db.repository import Repository
from goodfellaz17.metrics import auth_failure_counter
from goodfellaz17.settings import Role, Settings

if TYPE_CHECKING:
    from goodfellaz17.metrics import MetricsExporter
    from goodfellaz17.worker.worker import OrderDeliveryWorker


@dataclass
class AppContext:
    settings: Settings
    repo: Repository
    keyring: KeyRing
    worker: OrderDeliveryWorker | None = None
    metrics: MetricsExporter | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    throttle: AuthThrottle = field(init=False)
    auth_failures: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = AuthThrottle(
            self.settings.auth_failure_burst, self.settings.auth_failure_refill_seconds
        )
        self.auth_failures = auth_failure_counter(CollectorRegistry())

    def count_auth_failures_in(self, registry: CollectorRegistry) -> None:
        """Export the failure counter on the process's registry."""
        self.auth_failures = auth_failure_counter(registry)

    def refuse_if_throttled(self, request: Request, surface: str) -> None:
        """429 (with Retry-After) when the client's address guessed too often."""
        wait = self.throttle.wait_seconds(client_address_key(_client_host(request)))
        if wait > 0:
            self.auth_failures.labels(surface=surface, reason="throttled").inc()
            raise Throttled(math.ceil(wait))

    def record_auth_failure(self, request: Request, surface: str, *, presented: bool) -> None:
        """A refused attempt: counted; a wrong key (not a missing one) is a guess."""
        reason = "invalid_key" if presented else "missing_key"
        self.auth_failures.labels(surface=surface, reason=reason).inc()
        if presented:
            self.throttle.failed(client_address_key(_client_host(request)))


def _client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


class Throttled(HTTPException):
    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            status_code=429,
            detail={
                "message": "too many failed authentication attempts from this address; "
                f"retry in {retry_after_seconds} s",
                "field": "X-Api-Key",
            },
            headers={"Retry-After": str(retry_after_seconds)},
        )
        self.retry_after_seconds = retry_after_seconds


def get_context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(get_context)]


def get_repo(ctx: Context) -> Repository:
    return ctx.repo


Repo = Annotated[Repository, Depends(get_repo)]


def get_settings(ctx: Context) -> Settings:
    return ctx.settings


AppSettings = Annotated[Settings, Depends(get_settings)]

api_key_header = APIKeyHeader(name="X-Api-Key", auto_error=False, description="API key")


def authorize(request: Request, ctx: AppContext, presented: str | None, role: Role) -> Principal:
    """The principal of `presented` if its role grants `role`: 429 while the
    client's address is throttled for guessing, 401 without a valid key, 403
    with a valid key of too small a role."""
    if presented:
        ctx.refuse_if_throttled(request, "api")
    principal = ctx.keyring.authenticate(presented)
    if principal is None:
        ctx.record_auth_failure(request, "api", presented=bool(presented))
        raise HTTPException(
            status_code=401,
            detail={"message": "missing or invalid API key", "field": "X-Api-Key"},
        )
    if not principal.may(role):
        raise HTTPException(
            status_code=403,
            detail={
                "message": f"this API key's role may not do this (needs {role.value})",
                "field": "X-Api-Key",
            },
        )
    return principal


def require(role: Role) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency that admits keys whose role grants `role` (see authorize)."""

    async def check(
        request: Request, ctx: Context, presented: Annotated[str | None, Depends(api_key_header)]
    ) -> Principal:
        return authorize(request, ctx, presented, role)

    check.required_role = role  # type: ignore[attr-defined]
    return check


Reader = Annotated[Principal, Depends(require(Role.READ))]
OrderTaker = Annotated[Principal, Depends(require(Role.ORDERS))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
