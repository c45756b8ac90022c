"""Order use cases: create (with TaskGenerationService), read, list.

Results are typed (`Order`, `CreatedOrder`, `OrderListing`); the API's schemas
and the CLI choose how to print them. Nothing here writes a task's state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from goodfellaz17.backends.base import BACKEND_NAMES
from goodfellaz17.db.repository import Repository, Row
from goodfellaz17.domain.plan import plan_task_sizes
from goodfellaz17.domain.queue import FAIR_SHARE_SECONDS, RUN_LENGTH
from goodfellaz17.domain.states import OrderStatus
from goodfellaz17.errors import Conflict, InvalidInput, NotFound
from goodfellaz17.settings import Settings

MAX_TARGET_LENGTH = 512
MAX_IDEMPOTENCY_KEY_LENGTH = 255
# Idempotency keys are unique per scope: the calling API key's
# (Principal.idempotency_scope), or this one for the command line.
CLI_SCOPE = "cli"


@dataclass(frozen=True, slots=True)
class Order:
    """One row of `orders`, its columns in the table's order."""

    id: uuid.UUID
    status: str
    quantity: int
    delivered: int
    failed_permanent_plays: int
    target: str
    backend: str
    task_count: int
    idempotency_key: str | None
    request_hash: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @property
    def remaining(self) -> int:
        """Units neither delivered nor dead-lettered."""
        return self.quantity - self.delivered - self.failed_permanent_plays

    @classmethod
    def from_row(cls, row: Row) -> Order:
        return cls(**{f: row[f] for f in ORDER_COLUMNS})


ORDER_COLUMNS = tuple(Order.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class CreatedOrder:
    order: Order
    created: bool  # False: an earlier request with the same idempotency key


@dataclass(frozen=True, slots=True)
class OrderListing:
    """A page of orders, newest first, and the cursor of the next (older) page."""

    orders: list[Order]
    next_cursor: str | None


def validate_target(target: str) -> str:
    if not target or not target.strip():
        raise InvalidInput("target must not be empty", field="target")
    if len(target) > MAX_TARGET_LENGTH:
        raise InvalidInput(f"target must be at most {MAX_TARGET_LENGTH} characters", field="target")
    if any(unicodedata.category(ch) == "Cc" for ch in target):  # C0, DEL and C1
        raise InvalidInput("target must not contain control characters", field="target")
    return target


def validate_quantity(quantity: int, settings: Settings) -> int:
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        raise InvalidInput("quantity must be an integer", field="quantity")
    if quantity <= 0:
        raise InvalidInput("quantity must be greater than 0", field="quantity")
    if quantity > settings.max_order_quantity:
        raise InvalidInput(
            f"quantity must be at most {settings.max_order_quantity}", field="quantity"
        )
    return quantity


def validate_backend(backend: str) -> str:
    if backend not in BACKEND_NAMES:
        raise InvalidInput(f"backend must be one of: {', '.join(BACKEND_NAMES)}", field="backend")
    return backend


def validate_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
        )
    return key


def request_fingerprint(quantity: int, target: str, backend: str) -> str:
    body = json.dumps({"quantity": quantity, "target": target, "backend": backend}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


async def create_order(
    repo: Repository,
    settings: Settings,
    *,
    quantity: int,
    target: str,
    backend: str = "simulated",
    idempotency_key: str | None = None,
    idempotency_scope: str = CLI_SCOPE,
) -> CreatedOrder:
    """Validate, split into tasks and store order + tasks in one transaction.

    A repeated idempotency key with the same request returns the first order
    (created=False); with a different request it is a Conflict. Keys are
    the caller's own: the same key in another scope is another order.
    """
    validate_quantity(quantity, settings)
    validate_target(target)
    validate_backend(backend)
    validate_idempotency_key(idempotency_key)
    fingerprint = request_fingerprint(quantity, target, backend)
    sizes = plan_task_sizes(quantity, settings.task_size)
    row = await repo.order_create(
        quantity=quantity,
        target=target,
        backend=backend,
        sizes=sizes,
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
        request_hash=fingerprint if idempotency_key else None,
        fair_share_seconds=FAIR_SHARE_SECONDS,
        run_length=RUN_LENGTH,
    )
    if row is not None:
        return CreatedOrder(order=Order.from_row(row), created=True)
    assert idempotency_key is not None
    existing = await repo.order_get_by_idempotency_key(idempotency_key, scope=idempotency_scope)
    if existing is None:  # pragma: no cover - the conflicting row is committed
        raise Conflict("idempotency key is in use; retry", field="Idempotency-Key")
    if existing["request_hash"] != fingerprint:
        raise Conflict(
            "Idempotency-Key was already used with a different request",
            field="Idempotency-Key",
        )
    return CreatedOrder(order=Order.from_row(existing), created=False)


async def get_order(repo: Repository, order_id: uuid.UUID) -> Order:
    row = await repo.order_get(order_id)
    if row is None:
        raise NotFound(f"order {order_id} not found", field="orderId")
    return Order.from_row(row)


def encode_cursor(created_at: datetime, order_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{order_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, order_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        return datetime.fromisoformat(created), uuid.UUID(order_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not a cursor returned by this API", field="cursor") from None


async def list_orders(
    repo: Repository, *, status: str | None, limit: int, cursor: str | None
) -> OrderListing:
    if status is not None and status not in OrderStatus.__members__:
        raise InvalidInput(
            f"status must be one of: {', '.join(OrderStatus.__members__)}", field="status"
        )
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    before = decode_cursor(cursor) if cursor else None
    rows = await repo.order_list(status=status, limit=limit + 1, before=before)
    orders = [Order.from_row(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(orders[-1].created_at, orders[-1].id)
    return OrderListing(orders, next_cursor)
