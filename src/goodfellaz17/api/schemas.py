"""Request and response bodies. JSON field names are camelCase."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


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
    quantity: int = Field(gt=0, description="units to deliver", examples=[15000])
    target: str = Field(min_length=1, max_length=512, description="opaque to the engine")
    backend: str = Field(default="simulated", min_length=1, max_length=32)


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

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> OrderResponse:
        return cls(
            id=row["id"],
            status=row["status"],
            quantity=row["quantity"],
            delivered=row["delivered"],
            failed_permanent_plays=row["failed_permanent_plays"],
            remaining=row["quantity"] - row["delivered"] - row["failed_permanent_plays"],
            target=row["target"],
            backend=row["backend"],
            task_count=row["task_count"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            completed_at=row["completed_at"],
        )


class OrderPage(ApiModel):
    items: list[OrderResponse]
    next_cursor: str | None


class ComponentHealth(ApiModel):
    status: str
    details: dict[str, Any] = Field(default_factory=dict)


class HealthResponse(ApiModel):
    status: str
    components: dict[str, ComponentHealth] = Field(default_factory=dict)
