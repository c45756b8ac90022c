"""The services' typed results and the API's response models name the same
fields: the response model is the one place a result gets its camelCase
names, so a field added on one side only would vanish from the API (or fail
validation) without this test."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import BaseModel

from goodfellaz17.api import schemas
from goodfellaz17.services import (
    capacity,
    chaos,
    invariants,
    nodes,
    operations,
    orders,
    progress,
    workers,
)

PAIRS: list[tuple[Any, type[BaseModel]]] = [
    (progress.OrderProgress, schemas.OrderProgressResponse),
    (progress.TaskTally, schemas.StatusTally),
    (progress.FailedTasks, schemas.FailedTasksResponse),
    (progress.FailedTask, schemas.FailedTask),
    (capacity.Capacity, schemas.CapacityResponse),
    (capacity.BackendCapacity, schemas.BackendCapacity),
    (chaos.ChaosState, schemas.ChaosStatusResponse),
    (nodes.Node, schemas.NodeResponse),
    (invariants.OrderCheck, schemas.OrderInvariantsResponse),
    (invariants.InvariantCheck, schemas.InvariantCheck),
    (invariants.GlobalCheck, schemas.GlobalInvariantsResponse),
    (invariants.Violation, schemas.InvariantViolation),
    (invariants.OrphanCheck, schemas.OrphansResponse),
    (invariants.OrphanTask, schemas.OrphanTask),
    (operations.ActionResult, schemas.OperatorActionResponse),
    (workers.WorkerStatus, schemas.WorkerStatusResponse),
    (workers.WorkerEntry, schemas.WorkerEntry),
]


def field_names(result_type: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(result_type)]


@pytest.mark.parametrize(("result_type", "model"), PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_a_result_and_its_response_model_have_the_same_fields_in_order(
    result_type: Any, model: type[BaseModel]
) -> None:
    assert field_names(result_type) == list(model.model_fields)


def test_an_order_response_shows_the_order_without_its_request_fingerprint() -> None:
    hidden = {"idempotency_key", "request_hash"}
    shown = [f for f in field_names(orders.Order) if f not in hidden]
    response = list(schemas.OrderResponse.model_fields)
    assert [f for f in response if f != "remaining"] == shown
    assert isinstance(orders.Order.remaining, property)  # read by the model, not stored


def test_the_in_process_worker_adds_only_fields_the_status_has() -> None:
    assert set(field_names(workers.LocalWorker)) <= set(field_names(workers.WorkerStatus))
