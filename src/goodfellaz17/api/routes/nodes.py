"""Nodes, the delivery capacity: register, list with health, disable/enable.

The same resource answers at /api/internal/nodes and /api/internal/proxies
(the runbook's older name). Nodes are disabled, never deleted: DELETE
disables.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from goodfellaz17.api.deps import AppSettings, Operator, Reader, Repo
from goodfellaz17.api.schemas import ErrorResponse, NodeResponse, RegisterNodeRequest
from goodfellaz17.services import nodes

NodeId = Annotated[int, Path(alias="nodeId", ge=1, le=2**63 - 1, description="the node's id")]


async def register_node(
    body: RegisterNodeRequest, principal: Operator, repo: Repo, settings: AppSettings
) -> NodeResponse:
    node = await nodes.register_node(
        repo,
        provider=body.provider,
        node_identifier=body.node_identifier,
        endpoint=body.endpoint,
        capacity_per_hour=body.capacity_per_hour,
        destinations=settings.webhook_destinations,
        actor=principal.actor,
    )
    return NodeResponse.model_validate(node)


async def list_nodes(_: Reader, repo: Repo) -> list[NodeResponse]:
    return [NodeResponse.model_validate(n) for n in await nodes.list_nodes(repo)]


async def delete_node(node_id: NodeId, principal: Operator, repo: Repo) -> NodeResponse:
    """Disables the node (kept for history; tasks refer to it)."""
    node = await nodes.set_node_enabled(repo, node_id, enabled=False, actor=principal.actor)
    return NodeResponse.model_validate(node)


async def disable_node(node_id: NodeId, principal: Operator, repo: Repo) -> NodeResponse:
    node = await nodes.set_node_enabled(repo, node_id, enabled=False, actor=principal.actor)
    return NodeResponse.model_validate(node)


async def enable_node(node_id: NodeId, principal: Operator, repo: Repo) -> NodeResponse:
    """Enables the node and closes its circuit."""
    node = await nodes.set_node_enabled(repo, node_id, enabled=True, actor=principal.actor)
    return NodeResponse.model_validate(node)


def node_router(prefix: str) -> APIRouter:
    """The node resource under `prefix`: a router of its own per path, so each
    path is a plain route (not a nested include) for tools that walk routes."""
    router = APIRouter(
        prefix=prefix,
        tags=["nodes"],
        responses={
            401: {"model": ErrorResponse},
            403: {"model": ErrorResponse},
            422: {"model": ErrorResponse},
        },
    )
    missing: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
    duplicate: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}
    router.add_api_route(
        "",
        register_node,
        methods=["POST"],
        status_code=201,
        response_model=NodeResponse,
        responses=duplicate,
    )
    router.add_api_route("", list_nodes, methods=["GET"], response_model=list[NodeResponse])
    router.add_api_route(
        "/{nodeId}", delete_node, methods=["DELETE"], response_model=NodeResponse, responses=missing
    )
    router.add_api_route(
        "/{nodeId}/disable",
        disable_node,
        methods=["POST"],
        response_model=NodeResponse,
        responses=missing,
    )
    router.add_api_route(
        "/{nodeId}/enable",
        enable_node,
        methods=["POST"],
        response_model=NodeResponse,
        responses=missing,
    )
    return router


router = node_router("/api/internal/nodes")
proxies_router = node_router("/api/internal/proxies")
