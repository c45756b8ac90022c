"""Request and response bodies. JSON field names are camelCase.

The responses are the services' typed results as the API shows them: each
response model reads the result's attributes (`Model.model_validate(result)`)
and names them in camelCase. The CLI's `--json` prints the same models.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from goodfellaz17.backends.base import BACKEND_NAMES

# Documented as an enum; checked by the services, whose 422 names the field.
BACKEND_ENUM: dict[str, Any] = {"enum": list(BACKEND_NAMES)}


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, from_attributes=True)


class RequestModel(ApiModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", strict=True
    )


class ErrorDetail(ApiModel):
    field: str
    message: str


class ErrorResponse(ApiModel):
    error: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = None


class CreateOrderRequest(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"quantity": 15000, "target": "acct-42"}]}
    )

    quantity: int = Field(gt=0, description="units to deliver", examples=[15000])
    target: str = Field(min_length=1, max_length=512, description="opaque to the engine")
    backend: str = Field(
        default="simulated", min_length=1, max_length=32, json_schema_extra=BACKEND_ENUM
    )


class OrderResponse(ApiModel):
    id: uuid.UUID
    status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    remaining: int
    target: str
    backend: str
    task_count: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class OrderPage(ApiModel):
    items: list[OrderResponse]
    next_cursor: str | None


class ComponentHealth(ApiModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


class HealthResponse(ApiModel):
    status: str
    components: dict[str, ComponentHealth] = Field(default_factory=dict)


# ---------------------------------------------------------------- admin: workers


class WorkerEntry(ApiModel):
    id: str
    hostname: str
    pid: int
    status: str
    state: str = Field(description="ALIVE, STALE (silent past the stale threshold) or STOPPED")
    alive: bool
    started_at: datetime
    last_heartbeat_at: datetime
    seconds_since_heartbeat: float
    stopped_at: datetime | None
    total_processed: int
    total_completed: int
    total_failed: int
    total_retries: int
    recovered_orphans: int


class WorkerStatusResponse(ApiModel):
    scope: str = Field(description="process: this process's worker; fleet: every worker's totals")
    worker_id: str | None
    total_processed: int
    total_completed: int
    total_failed: int
    total_retries: int
    recovered_orphans: int
    is_running: bool
    leases_lost: int | None = None
    in_flight: int | None = None
    executing: int | None = None
    chaos_active: bool | None = None
    workers_alive: int
    workers_stale: int
    workers_known: int
    stale_after_seconds: float
    workers: list[WorkerEntry]


# ---------------------------------------------------------------- admin: invariants


class InvariantCheck(ApiModel):
    name: str
    description: str
    expected: int
    actual: int
    passed: bool


class OrderInvariantsResponse(ApiModel):
    order_id: uuid.UUID
    passed: bool
    checks: list[InvariantCheck]
    checked_at: datetime
    duration_ms: float


class InvariantViolation(ApiModel):
    order_id: uuid.UUID
    check: str
    expected: int
    actual: int


class GlobalInvariantsResponse(ApiModel):
    passed: bool
    orders_checked: int
    violation_count: int
    violations: list[InvariantViolation]
    checked_at: datetime
    duration_ms: float


class OrphanTask(ApiModel):
    task_id: uuid.UUID
    order_id: uuid.UUID
    seq: int
    quantity: int
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime
    overdue_seconds: float
    started_at: datetime | None
    node_id: int | None


class OrphansResponse(ApiModel):
    passed: bool
    check: str
    count: int
    orphans: list[OrphanTask]
    checked_at: datetime
    duration_ms: float


# ---------------------------------------------------------------- admin: orders


class StatusTally(ApiModel):
    tasks: int
    units: int


class OrderProgressResponse(ApiModel):
    order_id: uuid.UUID
    status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    remaining: int
    task_count: int
    tasks: dict[str, StatusTally] = Field(description="tasks and units per task status")
    percent_complete: float
    percent_settled: float = Field(description="delivered + dead-lettered, in percent")
    units_per_second: float
    units_per_hour: int
    rate_window_seconds: float
    eta_seconds: float | None = Field(description="null while nothing is being delivered")
    age_seconds: float
    running_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


class FailedTask(ApiModel):
    task_id: uuid.UUID
    seq: int
    quantity: int
    attempts: int = Field(description="delivery attempts (GOODFELLAZ17_MAX_ATTEMPTS)")
    orphanings: int = Field(
        description="times its worker was lost, crashed or hung (GOODFELLAZ17_MAX_ORPHANINGS)"
    )
    last_error: str | None
    executed_at: datetime | None
    node_id: int | None


class FailedTasksResponse(ApiModel):
    order_id: uuid.UUID
    count: int
    units: int
    tasks: list[FailedTask]


class ForceRequest(RequestModel):
    force: bool = Field(default=False, description="also act while tasks are EXECUTING")


class OperatorActionResponse(ApiModel):
    action: str
    order_id: uuid.UUID
    actor: str
    tasks_affected: int
    units_affected: int
    order_status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    action_id: int
    recorded_at: datetime
    details: dict[str, Any]


# ---------------------------------------------------------------- admin: capacity


class BackendCapacity(ApiModel):
    backend: str
    healthy_nodes: int
    total_nodes: int
    healthy_units_per_hour: int
    pending_units: int
    retrying_units: int
    executing_units: int
    backlog_units: int
    backlog_eta_seconds: float | None


class CapacityResponse(ApiModel):
    healthy_nodes: int
    total_nodes: int
    healthy_units_per_hour: int
    live_workers: int
    pending_units: int
    retrying_units: int
    executing_units: int
    backlog_units: int = Field(description="pending + retrying units")
    backlog_eta_seconds: float | None
    new_order_quantity: int
    new_order_backend: str
    new_order_eta_seconds: float | None
    new_order_fits_within_2h: bool = Field(alias="newOrderFitsWithin2h")
    backends: list[BackendCapacity]


# ---------------------------------------------------------------- admin: chaos


class ChaosEnableRequest(RequestModel):
    worker_paused: bool = False
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    ttl_seconds: float | None = Field(
        default=None, gt=0, le=86_400, description="default GOODFELLAZ17_CHAOS_DEFAULT_TTL_SECONDS"
    )


class ChaosStatusResponse(ApiModel):
    active: bool
    expired: bool
    worker_paused: bool
    failure_rate: float
    latency_ms: int
    expires_at: datetime | None
    remaining_seconds: float | None
    updated_by: str | None
    updated_at: datetime


# ---------------------------------------------------------------- internal: nodes


class RegisterNodeRequest(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"provider": "simulated", "nodeIdentifier": "sim-2", "capacityPerHour": 360000}
            ]
        }
    )

    provider: str = Field(
        min_length=1,
        max_length=32,
        description="a delivery backend name",
        json_schema_extra=BACKEND_ENUM,
    )
    node_identifier: str = Field(min_length=1, max_length=200)
    endpoint: str | None = Field(default=None, max_length=2000)
    capacity_per_hour: int | None = Field(default=None, gt=0, le=2_147_483_647)


class NodeResponse(ApiModel):
    id: int
    provider: str
    node_identifier: str
    endpoint: str | None
    capacity_per_hour: int
    enabled: bool
    state: str = Field(description="CLOSED, HALF_OPEN, OPEN or DISABLED")
    healthy: bool
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
