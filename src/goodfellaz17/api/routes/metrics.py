"""Prometheus metrics on the main port, behind a read key.

For a scraper that cannot send X-Api-Key, set GOODFELLAZ17_METRICS_PORT: the
same metrics are then also served without a key on that port.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from goodfellaz17.api.deps import Context, Reader
from goodfellaz17.api.schemas import ErrorResponse

router = APIRouter(
    tags=["metrics"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

_TEXT_FORMAT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}
}


@router.get("/metrics", response_class=Response, responses=_TEXT_FORMAT)
@router.get("/actuator/prometheus", response_class=Response, responses=_TEXT_FORMAT)
async def metrics(ctx: Context, _: Reader) -> Response:
    assert ctx.metrics is not None, "the lifespan creates the exporter"
    body = await ctx.metrics.render()
    return Response(body, media_type=ctx.metrics.content_type)
