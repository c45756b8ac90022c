"""Worker status: this process's worker, or the fleet when none runs here."""

from __future__ import annotations

from fastapi import APIRouter

from goodfellaz17.api.deps import Context, Reader
from goodfellaz17.api.schemas import ErrorResponse, WorkerStatusResponse
from goodfellaz17.services.workers import LocalWorker, worker_status

router = APIRouter(
    prefix="/api/admin/worker",
    tags=["admin"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.get("/status", response_model=WorkerStatusResponse)
async def get_worker_status(_: Reader, ctx: Context) -> WorkerStatusResponse:
    local = LocalWorker.from_status(ctx.worker.status()) if ctx.worker is not None else None
    return WorkerStatusResponse.model_validate(
        await worker_status(ctx.repo, ctx.settings, local=local)
    )
