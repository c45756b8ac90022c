"""The console's fleet forms: chaos injection on and off, and adding,
disabling and enabling nodes.

Each runs the same service function as the admin API behind
`ActingOperator` (a session, its CSRF token and an operator key); disabling
a node first shows a confirmation page. A refused value is shown on the form
it came from, with the numbers as they stand.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from goodfellaz17.api.console.deps import ActingOperator, Console, ConsoleRefusal, Viewer
from goodfellaz17.api.console.pages import (
    fleet_context,
    overview_context,
    page,
    parse_node_id,
    refused,
    safe_next,
    see_other,
)
from goodfellaz17.api.deps import AppSettings, Repo
from goodfellaz17.db.repository import Repository
from goodfellaz17.errors import InvalidInput, ServiceError
from goodfellaz17.services import chaos, nodes

router = APIRouter(prefix="/console", include_in_schema=False)


def _number(raw: str, field: str, label: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"{label} must be a number", field=field) from None


@router.post("/chaos/enable", name="console_chaos_enable")
async def enable_chaos(
    request: Request,
    session: ActingOperator,
    cons: Console,
    repo: Repo,
    settings: AppSettings,
    failure_rate_percent: Annotated[str, Form(max_length=20)] = "0",
    latency_ms: Annotated[str, Form(max_length=20)] = "0",
    ttl_minutes: Annotated[str, Form(max_length=20)] = "",
    worker_paused: Annotated[str | None, Form()] = None,
) -> Response:
    try:
        rate = _number(failure_rate_percent or "0", "failureRate", "Failure rate") / 100
        latency = _number(latency_ms or "0", "latencyMs", "Latency")
        if not latency.is_integer():
            raise InvalidInput("Latency must be a whole number of ms", field="latencyMs")
        ttl = _number(ttl_minutes, "ttlSeconds", "Expiry") * 60 if ttl_minutes else None
        await chaos.enable_chaos(
            repo,
            settings,
            actor=session.principal.actor,
            worker_paused=worker_paused == "on",
            failure_rate=rate,
            latency_ms=int(latency),
            ttl_seconds=ttl,
        )
    except ServiceError as exc:
        context = await overview_context(repo, settings)
        context["chaos_defaults"] = {
            "ttl_minutes": ttl_minutes,
            "allowed": settings.chaos_allowed,
            "failure_rate_percent": failure_rate_percent,
            "latency_ms": latency_ms,
            "worker_paused": worker_paused == "on",
        }
        context["chaos_error"] = exc.message
        response = await page(request, cons, repo, "overview.html", context)
        response.status_code = exc.status_code
        return response
    return see_other("/console")


@router.post("/chaos/disable", name="console_chaos_disable")
async def disable_chaos(
    session: ActingOperator,
    repo: Repo,
    next: Annotated[str, Form(max_length=2000)] = "/console",
) -> Response:
    await chaos.disable_chaos(repo, actor=session.principal.actor)
    return see_other(safe_next(next))


# ---------------------------------------------------------------- nodes


@router.post("/nodes", name="console_node_add")
async def add_node(
    request: Request,
    session: ActingOperator,
    cons: Console,
    repo: Repo,
    settings: AppSettings,
    provider: Annotated[str, Form(max_length=40)] = "",
    node_identifier: Annotated[str, Form(max_length=400)] = "",
    endpoint: Annotated[str, Form(max_length=4000)] = "",
    capacity_per_hour: Annotated[str, Form(max_length=20)] = "",
) -> Response:
    form = {
        "provider": provider,
        "node_identifier": node_identifier,
        "endpoint": endpoint,
        "capacity_per_hour": capacity_per_hour,
    }
    try:
        capacity: int | None = None
        if capacity_per_hour.strip():
            try:
                capacity = int(capacity_per_hour.replace(",", "").replace("_", "").strip())
            except ValueError:
                raise InvalidInput(
                    "capacity must be a whole number of units per hour", field="capacityPerHour"
                ) from None
        await nodes.register_node(
            repo,
            provider=provider,
            node_identifier=node_identifier.strip(),
            endpoint=endpoint.strip() or None,
            capacity_per_hour=capacity,
            destinations=settings.webhook_destinations,
            actor=session.principal.actor,
        )
    except ServiceError as exc:
        context = await fleet_context(repo, settings)
        context.update(form=form, node_error=exc.message)
        response = await page(request, cons, repo, "workers.html", context)
        response.status_code = exc.status_code
        return response
    return see_other("/console/workers")


async def _node(repo: Repository, node_id: int) -> nodes.Node:
    for node in await nodes.list_nodes(repo):
        if node.id == node_id:
            return node
    raise ConsoleRefusal(404, "No such node", f"There is no node {node_id}.")


@router.get("/nodes/{node_id}/disable", name="console_node_confirm_disable")
async def confirm_disable_node(
    request: Request, node_id: str, _: Viewer, cons: Console, repo: Repo
) -> HTMLResponse:
    node = await _node(repo, parse_node_id(node_id))
    return await page(request, cons, repo, "confirm_node.html", {"node": node})


async def _set_node_enabled(
    node_id: str, session: ActingOperator, repo: Repo, *, enabled: bool
) -> Response:
    try:
        await nodes.set_node_enabled(
            repo, parse_node_id(node_id), enabled=enabled, actor=session.principal.actor
        )
    except ServiceError as exc:
        raise refused(exc) from None
    return see_other("/console/workers")


@router.post("/nodes/{node_id}/disable", name="console_node_disable")
async def disable_node(node_id: str, session: ActingOperator, repo: Repo) -> Response:
    return await _set_node_enabled(node_id, session, repo, enabled=False)


@router.post("/nodes/{node_id}/enable", name="console_node_enable")
async def enable_node(node_id: str, session: ActingOperator, repo: Repo) -> Response:
    return await _set_node_enabled(node_id, session, repo, enabled=True)
