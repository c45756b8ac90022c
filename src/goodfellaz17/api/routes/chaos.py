"""Chaos injection (pause workers, inject failures, add latency) for every
worker on this database; it always expires."""

from __future__ import annotations

from fastapi import APIRouter

from goodfellaz17.api.deps import AppSettings, Operator, Reader, Repo
from goodfellaz17.api.schemas import ChaosEnableRequest, ChaosStatusResponse, ErrorResponse
from goodfellaz17.services import chaos

router = APIRouter(
    prefix="/api/admin/testing",
    tags=["admin"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)


@router.get("/status", response_model=ChaosStatusResponse)
async def chaos_status(_: Reader, repo: Repo) -> ChaosStatusResponse:
    return ChaosStatusResponse.model_validate(await chaos.chaos_status(repo))


@router.post("/enable", response_model=ChaosStatusResponse)
async def enable_chaos(
    principal: Operator,
    repo: Repo,
    settings: AppSettings,
    body: ChaosEnableRequest | None = None,
) -> ChaosStatusResponse:
    body = body or ChaosEnableRequest()
    state = await chaos.enable_chaos(
        repo,
        settings,
        actor=principal.actor,
        worker_paused=body.worker_paused,
        failure_rate=body.failure_rate,
        latency_ms=body.latency_ms,
        ttl_seconds=body.ttl_seconds,
    )
    return ChaosStatusResponse.model_validate(state)


@router.post("/disable", response_model=ChaosStatusResponse)
async def disable_chaos(principal: Operator, repo: Repo) -> ChaosStatusResponse:
    return ChaosStatusResponse.model_validate(
        await chaos.disable_chaos(repo, actor=principal.actor)
    )
