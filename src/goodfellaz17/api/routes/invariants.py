"""Invariant checks: one order, every order (set-based), and orphaned tasks.
Every check is appended to invariant_check_log, as asked for over the API
(never read by the alerts). What a key without the operator role asks for
writes a bounded number of rows: it gets a global check at most
GOODFELLAZ17_INVARIANT_REUSE_SECONDS old (an operator key always a fresh
one), and a repeated check with the same outcome is logged once per window."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from goodfellaz17.api.deps import AppSettings, Reader, Repo
from goodfellaz17.api.schemas import (
    ErrorResponse,
    GlobalInvariantsResponse,
    OrderInvariantsResponse,
    OrphansResponse,
)
from goodfellaz17.services import invariants
from goodfellaz17.settings import Role

router = APIRouter(
    prefix="/api/admin/invariants",
    tags=["admin"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

OrderId = Annotated[uuid.UUID, Path(alias="orderId", description="the order's id")]


@router.get(
    "/orders/{orderId}",
    response_model=OrderInvariantsResponse,
    responses={404: {"model": ErrorResponse}},
)
async def check_order(
    order_id: OrderId, _: Reader, repo: Repo, settings: AppSettings
) -> OrderInvariantsResponse:
    checked = await invariants.check_order(
        repo, order_id, dedupe_seconds=settings.invariant_reuse_seconds
    )
    return OrderInvariantsResponse.model_validate(checked)


@router.get("/all", response_model=GlobalInvariantsResponse)
async def check_all(
    principal: Reader, repo: Repo, settings: AppSettings
) -> GlobalInvariantsResponse:
    if principal.may(Role.OPERATOR):
        return GlobalInvariantsResponse.model_validate(await invariants.check_all(repo))
    recent = await invariants.recent_global_check(
        repo, max_age_seconds=settings.invariant_reuse_seconds
    )
    return GlobalInvariantsResponse.model_validate(recent)


@router.get("/orphans", response_model=OrphansResponse)
async def check_orphans(
    _: Reader,
    repo: Repo,
    settings: AppSettings,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> OrphansResponse:
    found = await invariants.check_orphans(
        repo, limit=limit, dedupe_seconds=settings.invariant_reuse_seconds
    )
    return OrphansResponse.model_validate(found)
