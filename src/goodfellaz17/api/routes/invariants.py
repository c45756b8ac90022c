"""Invariant checks: one order, every order (set-based), and orphaned tasks.
Every check is appended to invariant_check_log."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query

from goodfellaz17.api.deps import Reader, Repo
from goodfellaz17.api.schemas import (
    ErrorResponse,
    GlobalInvariantsResponse,
    OrderInvariantsResponse,
    OrphansResponse,
)
from goodfellaz17.services import invariants

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
async def check_order(order_id: OrderId, _: Reader, repo: Repo) -> OrderInvariantsResponse:
    return OrderInvariantsResponse.model_validate(await invariants.check_order(repo, order_id))


@router.get("/all", response_model=GlobalInvariantsResponse)
async def check_all(_: Reader, repo: Repo) -> GlobalInvariantsResponse:
    return GlobalInvariantsResponse.model_validate(await invariants.check_all(repo))


@router.get("/orphans", response_model=OrphansResponse)
async def check_orphans(
    _: Reader, repo: Repo, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> OrphansResponse:
    return OrphansResponse.model_validate(await invariants.check_orphans(repo, limit=limit))
