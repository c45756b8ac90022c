"""The delivery backend seam: one method, and errors that say whether to retry.

    DeliveryError
    ├── RetryableDeliveryError   timeouts, 429, 5xx, connection trouble:
    │                            the task backs off and runs again
    └── PermanentDeliveryError   the request itself is wrong (other 4xx):
                                 the task goes to the dead-letter queue

A backend returns normally when the units were delivered. The task id is the
idempotency key: delivering the same task twice must not deliver twice.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

BACKEND_NAMES = ("simulated", "webhook")


class DeliveryError(Exception):
    """A delivery did not happen."""

    retryable: bool = True


class RetryableDeliveryError(DeliveryError):
    retryable = True


class PermanentDeliveryError(DeliveryError):
    retryable = False


@dataclass(frozen=True, slots=True)
class DeliveryRequest:
    task_id: uuid.UUID
    order_id: uuid.UUID
    quantity: int
    target: str
    attempt: int
    fencing_token: int
    node_id: int
    node_identifier: str
    endpoint: str | None
    capacity_per_hour: int

    @property
    def idempotency_key(self) -> str:
        return str(self.task_id)


class DeliveryBackend(Protocol):
    name: str

    async def deliver(self, request: DeliveryRequest) -> None:
        """Deliver `request.quantity` units or raise a DeliveryError."""
        ...

    async def aclose(self) -> None: ...
