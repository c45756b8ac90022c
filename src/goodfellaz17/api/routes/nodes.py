"""Nodes, the delivery capacity: register, list with health, disable/enable.

The same resource answers at /api/internal/nodes and /api/internal/proxies
(the runbook's older name). Nodes are disabled, never deleted: DELETE
disables.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from goodfellaz17.api.deps import Operator, Reader, Repo
from goodfellaz17.api.schemas import ErrorResponse, NodeResponse, RegisterNodeRequest
from goodfellaz17.services import nodes

_resource = APIRouter(
    tags=["nodes"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)

NodeId = Annotated[int, Path(alias="nodeId", ge=1, le=2**63 - 1, description="the node's id")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


@_resource.post(
    "", status_code=201, response_model=NodeResponse, responses={409: {"model": ErrorResponse}}
)
async def register_node(body: RegisterNodeRequest, principal: Operator, repo: Repo) -> Any:
    return await nodes.register_node(
        repo,
        provider=body.provider,
        node_identifier=body.node_identifier,
        endpoint=body.endpoint,
        capacity_per_hour=body.capacity_per_hour,
        actor=principal.actor,
    )


@_resource.get("", response_model=list[NodeResponse])
async def list_nodes(_: Reader, repo: Repo) -> Any:
    return await nodes.list_nodes(repo)


@_resource.delete("/{nodeId}", response_model=NodeResponse, responses=NOT_FOUND)
async def delete_node(node_id: NodeId, principal: Operator, repo: Repo) -> Any:
    """Disables the node (kept for history; tasks refer to it)."""
    return await nodes.set_node_enabled(repo, node_id, enabled=False, actor=principal.actor)


@_resource.post("/{nodeId}/disable", response_model=NodeResponse, responses=NOT_FOUND)
async def disable_node(node_id: NodeId, principal: Operator, repo: Repo) -> Any:
    return await nodes.set_node_enabled(repo, node_id, enabled=False, actor=principal.actor)


@_resource.post("/{nodeId}/enable", response_model=NodeResponse, responses=NOT_FOUND)
async def enable_node(node_id: NodeId, principal: Operator, repo: Repo) -> Any:
    """Enables the node and closes its circuit."""
    return await nodes.set_node_enabled(repo, node_id, enabled=True, actor=principal.actor)


router = APIRouter()
router.include_router(_resource, prefix="/api/internal/nodes")
router.include_router(_resource, prefix="/api/internal/proxies")
