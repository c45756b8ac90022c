"""Health for people and for Kubernetes probes. No API key needed.

/actuator/health            db + worker; 503 with DOWN when the database is down
/actuator/health/liveness   the process serves requests (never touches the db)
/actuator/health/readiness  ready for traffic: the database answers
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from goodfellaz17.api.deps import Context
from goodfellaz17.api.schemas import ComponentHealth, HealthResponse

router = APIRouter(prefix="/actuator", tags=["health"])

DB_CHECK_TIMEOUT_SECONDS = 2.0


async def _db_health(ctx: Context) -> ComponentHealth:
    try:
        async with asyncio.timeout(DB_CHECK_TIMEOUT_SECONDS):
            async with ctx.repo.pool.connection(timeout=DB_CHECK_TIMEOUT_SECONDS) as conn:
                await conn.execute("SELECT 1")
    except Exception as exc:  # any failure means DOWN; the reason is reported
        return ComponentHealth(status="DOWN", details={"error": type(exc).__name__})
    return ComponentHealth(status="UP")


def _worker_health(ctx: Context) -> ComponentHealth:
    worker = ctx.worker
    if worker is None:
        return ComponentHealth(status="DISABLED", details={"reason": "worker not enabled here"})
    return ComponentHealth(
        status="UP" if worker.is_running else "DOWN", details={"workerId": worker.worker_id}
    )


def _respond(health: HealthResponse) -> JSONResponse:
    code = 200 if health.status == "UP" else 503
    return JSONResponse(health.model_dump(by_alias=True), status_code=code)


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(ctx: Context) -> JSONResponse:
    db = await _db_health(ctx)
    worker = _worker_health(ctx)
    status = "UP" if db.status == "UP" and worker.status != "DOWN" else "DOWN"
    return _respond(HealthResponse(status=status, components={"db": db, "worker": worker}))


@router.get("/health/liveness", response_model=HealthResponse)
async def liveness() -> JSONResponse:
    return _respond(HealthResponse(status="UP"))


@router.get(
    "/health/readiness", response_model=HealthResponse, responses={503: {"model": HealthResponse}}
)
async def readiness(ctx: Context) -> JSONResponse:
    db = await _db_health(ctx)
    return _respond(HealthResponse(status=db.status, components={"db": db}))
