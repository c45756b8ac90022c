"""Order API: create (idempotent), read, list."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response

from goodfellaz17.api.deps import AppSettings, OrderTaker, Reader, Repo
from goodfellaz17.api.schemas import CreateOrderRequest, ErrorResponse, OrderPage, OrderResponse
from goodfellaz17.logs import get_logger
from goodfellaz17.services import orders as order_service

log = get_logger(__name__)

router = APIRouter(
    prefix="/api/orders",
    tags=["orders"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)

OrderId = Annotated[uuid.UUID, Path(alias="orderId", description="the order's id")]


@router.post(
    "",
    status_code=201,
    response_model=OrderResponse,
    responses={
        200: {"model": OrderResponse, "description": "replay of an idempotent request"},
        409: {"model": ErrorResponse},
    },
)
async def create_order(
    body: CreateOrderRequest,
    principal: OrderTaker,
    repo: Repo,
    settings: AppSettings,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> OrderResponse:
    result = await order_service.create_order(
        repo,
        settings,
        quantity=body.quantity,
        target=body.target,
        backend=body.backend,
        idempotency_key=idempotency_key,
        idempotency_scope=principal.idempotency_scope,
    )
    order = OrderResponse.model_validate(result.order)
    if result.created:
        log.info(
            "order created",
            order_id=str(order.id),
            quantity=order.quantity,
            task_count=order.task_count,
            backend=order.backend,
            actor=principal.actor,
        )
    else:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    return order


@router.get("/{orderId}", response_model=OrderResponse, responses={404: {"model": ErrorResponse}})
async def get_order(order_id: OrderId, _: Reader, repo: Repo) -> OrderResponse:
    return OrderResponse.model_validate(await order_service.get_order(repo, order_id))


@router.get("", response_model=OrderPage)
async def list_orders(
    _: Reader,
    repo: Repo,
    status: Annotated[str | None, Query(description="PENDING, PROCESSING or COMPLETED")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderPage:
    listing = await order_service.list_orders(repo, status=status, limit=limit, cursor=cursor)
    return OrderPage(
        items=[OrderResponse.model_validate(o) for o in listing.orders],
        next_cursor=listing.next_cursor,
    )
