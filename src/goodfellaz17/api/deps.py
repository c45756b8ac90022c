"""Dependencies, as Annotated aliases so routes read like prose."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.security import APIKeyHeader

from goodfellaz17.api.auth import KeyRing, Principal
from goodfellaz17.db.repository import Repository
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


def authorize(ctx: AppContext, presented: str | None, role: Role) -> Principal:
    """The principal of `presented` if its role grants `role`: 401 without a
    valid key, 403 with a valid key of too small a role."""
    principal = ctx.keyring.authenticate(presented)
    if principal is None:
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
        ctx: Context, presented: Annotated[str | None, Depends(api_key_header)]
    ) -> Principal:
        return authorize(ctx, presented, role)

    check.required_role = role  # type: ignore[attr-defined]
    return check


Reader = Annotated[Principal, Depends(require(Role.READ))]
OrderTaker = Annotated[Principal, Depends(require(Role.ORDERS))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
