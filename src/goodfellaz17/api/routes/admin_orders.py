"""An order seen and handled by an operator: progress, dead letters, and the
operator actions (role `operator`), each one recorded transaction."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from goodfellaz17.api.deps import Operator, Reader, Repo
from goodfellaz17.api.schemas import (
    ErrorResponse,
    FailedTasksResponse,
    ForceRequest,
    OperatorActionResponse,
    OrderProgressResponse,
)
from goodfellaz17.services import operations, progress

router = APIRouter(
    prefix="/api/admin/orders",
    tags=["admin"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
)

OrderId = Annotated[uuid.UUID, Path(alias="orderId", description="the order's id")]
ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}


@router.get("/{orderId}/progress", response_model=OrderProgressResponse)
async def order_progress(order_id: OrderId, _: Reader, repo: Repo) -> OrderProgressResponse:
    return OrderProgressResponse.model_validate(await progress.order_progress(repo, order_id))


@router.get("/{orderId}/failed-tasks", response_model=FailedTasksResponse)
async def failed_tasks(
    order_id: OrderId,
    _: Reader,
    repo: Repo,
    limit: Annotated[int, Query(ge=1, le=progress.MAX_FAILED_TASKS)] = 100,
) -> FailedTasksResponse:
    return FailedTasksResponse.model_validate(
        await progress.failed_tasks(repo, order_id, limit=limit)
    )


@router.post("/{orderId}/retry-now", response_model=OperatorActionResponse)
async def retry_now(order_id: OrderId, principal: Operator, repo: Repo) -> OperatorActionResponse:
    done = await operations.retry_now(repo, order_id, actor=principal.actor)
    return OperatorActionResponse.model_validate(done)


@router.post("/{orderId}/drain-dead-letters", response_model=OperatorActionResponse)
async def drain_dead_letters(
    order_id: OrderId, principal: Operator, repo: Repo
) -> OperatorActionResponse:
    done = await operations.drain_dead_letters(repo, order_id, actor=principal.actor)
    return OperatorActionResponse.model_validate(done)


@router.post(
    "/{orderId}/force-complete", response_model=OperatorActionResponse, responses=ACTION_RESPONSES
)
async def force_complete(
    order_id: OrderId, principal: Operator, repo: Repo, body: ForceRequest | None = None
) -> OperatorActionResponse:
    force = body.force if body is not None else False
    done = await operations.force_complete(repo, order_id, actor=principal.actor, force=force)
    return OperatorActionResponse.model_validate(done)


@router.post("/{orderId}/cancel", response_model=OperatorActionResponse, responses=ACTION_RESPONSES)
async def cancel(
    order_id: OrderId, principal: Operator, repo: Repo, body: ForceRequest | None = None
) -> OperatorActionResponse:
    force = body.force if body is not None else False
    done = await operations.cancel(repo, order_id, actor=principal.actor, force=force)
    return OperatorActionResponse.model_validate(done)
