"""Nodes: the delivery capacity. Register, list with health, enable/disable.

A node's provider is the backend that delivers through it, so it must be a
backend this build knows. Webhook endpoints must be https://, except on a
loopback host (a local test receiver), and may not point inside the network
unless the destination rules allow it (domain/destinations.py; the webhook
backend checks the resolved address again at connect time). Nodes are
disabled, never deleted: tasks and history refer to them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from psycopg.types.json import Jsonb

from goodfellaz17.backends.base import BACKEND_NAMES
from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.domain.destinations import ALLOW_LIST_VARIABLE, DestinationPolicy
from goodfellaz17.errors import Conflict, InvalidInput, NotFound
from goodfellaz17.logs import get_logger

log = get_logger(__name__)

DEFAULT_CAPACITY_PER_HOUR = 360_000  # the column's default
MAX_CAPACITY_PER_HOUR = 2_147_483_647
MAX_IDENTIFIER_LENGTH = 200
MAX_ENDPOINT_LENGTH = 2000
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_endpoint(
    endpoint: str | None, provider: str, destinations: DestinationPolicy
) -> str | None:
    if endpoint is None:
        if provider == "webhook":
            raise InvalidInput("a webhook node needs an endpoint URL", field="endpoint")
        return None
    if len(endpoint) > MAX_ENDPOINT_LENGTH or not endpoint.isprintable() or " " in endpoint:
        raise InvalidInput(
            f"endpoint must be a URL of at most {MAX_ENDPOINT_LENGTH} characters",
            field="endpoint",
        )
    try:
        parts = urlsplit(endpoint)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidInput("endpoint is not a valid URL", field="endpoint") from None
    if not host:
        raise InvalidInput("endpoint must be an absolute URL with a host", field="endpoint")
    if parts.username or parts.password:
        raise InvalidInput("endpoint must not carry credentials", field="endpoint")
    if not (parts.scheme == "https" or (parts.scheme == "http" and is_loopback(host))):
        raise InvalidInput(
            "endpoint must be https:// (plain http:// only on a loopback host)", field="endpoint"
        )
    refusal = destinations.host_refusal(host)
    if refusal is not None:
        raise InvalidInput(
            f"endpoint host {host!r} is {refusal}: webhooks may not point inside the network"
            f" unless {ALLOW_LIST_VARIABLE} names it",
            field="endpoint",
        )
    return endpoint


def validate_node(
    provider: str,
    node_identifier: str,
    endpoint: str | None,
    capacity_per_hour: int | None,
    destinations: DestinationPolicy,
) -> tuple[str | None, int]:
    if provider not in BACKEND_NAMES:
        raise InvalidInput(f"provider must be one of: {', '.join(BACKEND_NAMES)}", field="provider")
    if (
        not node_identifier.strip()
        or len(node_identifier) > MAX_IDENTIFIER_LENGTH
        or not node_identifier.isprintable()
    ):
        raise InvalidInput(
            f"nodeIdentifier must be 1-{MAX_IDENTIFIER_LENGTH} printable characters",
            field="nodeIdentifier",
        )
    capacity = DEFAULT_CAPACITY_PER_HOUR if capacity_per_hour is None else capacity_per_hour
    if isinstance(capacity, bool) or not 1 <= capacity <= MAX_CAPACITY_PER_HOUR:
        raise InvalidInput(
            f"capacityPerHour must be between 1 and {MAX_CAPACITY_PER_HOUR}",
            field="capacityPerHour",
        )
    return validate_endpoint(endpoint, provider, destinations), capacity


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    provider: str
    node_identifier: str
    endpoint: str | None
    capacity_per_hour: int
    enabled: bool
    state: str  # CLOSED, HALF_OPEN, OPEN or DISABLED
    healthy: bool  # tasks may go here
    circuit_state: str
    circuit_opened_until: datetime | None
    consecutive_failures: int
    total_delivered: int
    total_failures: int
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def node_of(row: Row) -> Node:
    state = row["effective_state"]
    return Node(
        id=row["id"],
        provider=row["provider"],
        node_identifier=row["node_identifier"],
        endpoint=row["endpoint"],
        capacity_per_hour=row["capacity_per_hour"],
        enabled=row["enabled"],
        state=state,
        healthy=row.get("healthy", state in ("CLOSED", "HALF_OPEN")),
        circuit_state=row["circuit_state"],
        circuit_opened_until=row["circuit_opened_until"],
        consecutive_failures=row["consecutive_failures"],
        total_delivered=row["total_delivered"],
        total_failures=row["total_failures"],
        last_success_at=row["last_success_at"],
        last_failure_at=row["last_failure_at"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def register_node(
    repo: Repository,
    *,
    provider: str,
    node_identifier: str,
    endpoint: str | None = None,
    capacity_per_hour: int | None = None,
    destinations: DestinationPolicy,
    actor: str,
) -> Node:
    endpoint, capacity = validate_node(
        provider, node_identifier, endpoint, capacity_per_hour, destinations
    )
    async with repo.transaction() as conn:
        row = await repo.node_create(
            provider=provider,
            node_identifier=node_identifier,
            endpoint=endpoint,
            capacity_per_hour=capacity,
            conn=conn,
        )
        if row is None:
            raise Conflict(
                f"a {provider} node {node_identifier!r} is already registered",
                field="nodeIdentifier",
            )
        await repo.operator_action_record(
            conn,
            action="node_register",
            order_id=None,
            actor=actor,
            details=Jsonb({"nodeId": row["id"], "provider": provider, "node": node_identifier}),
        )
    log.info("node registered", node_id=row["id"], provider=provider, actor=actor)
    return node_of(row)


async def list_nodes(repo: Repository) -> list[Node]:
    return [node_of(r) for r in await repo.node_list()]


async def set_node_enabled(repo: Repository, node_id: int, *, enabled: bool, actor: str) -> Node:
    async with repo.transaction() as conn:
        row = await repo.node_set_enabled(node_id, enabled, conn)
        if row is None:
            raise NotFound(f"node {node_id} not found", field="nodeId")
        await repo.operator_action_record(
            conn,
            action="node_enable" if enabled else "node_disable",
            order_id=None,
            actor=actor,
            details=Jsonb({"nodeId": node_id}),
        )
    log.info("node enabled" if enabled else "node disabled", node_id=node_id, actor=actor)
    return node_of(row)
