"""Delivery backends: deliver one task of N units to a target on a node."""

from goodfellaz17.backends.base import (
    BACKEND_NAMES,
    DeliveryBackend,
    DeliveryError,
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)

__all__ = [
    "BACKEND_NAMES",
    "DeliveryBackend",
    "DeliveryError",
    "DeliveryRequest",
    "PermanentDeliveryError",
    "RetryableDeliveryError",
]
