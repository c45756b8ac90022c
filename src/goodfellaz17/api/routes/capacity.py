"""Capacity: healthy nodes and units/hour against the backlog."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from goodfellaz17.api.deps import AppSettings, Reader, Repo
from goodfellaz17.api.schemas import BACKEND_ENUM, CapacityResponse, ErrorResponse
from goodfellaz17.services import capacity as capacity_service

router = APIRouter(
    prefix="/api/admin/capacity",
    tags=["admin"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)


@router.get("", response_model=CapacityResponse)
async def capacity(
    _: Reader,
    repo: Repo,
    settings: AppSettings,
    quantity: Annotated[
        int, Query(ge=1, description="size of the hypothetical new order")
    ] = capacity_service.NEW_ORDER_QUANTITY,
    backend: Annotated[str, Query(max_length=32, json_schema_extra=BACKEND_ENUM)] = "simulated",
) -> CapacityResponse:
    return CapacityResponse.model_validate(
        await capacity_service.capacity(repo, settings, quantity=quantity, backend=backend)
    )
