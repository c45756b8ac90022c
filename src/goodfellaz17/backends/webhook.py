"""The webhook backend: POST the task as JSON to the node's endpoint.

2xx = delivered; 429, 5xx, timeouts and connection errors = retryable; any
other status = permanent. The task id travels as the `Idempotency-Key`
header so the receiver can drop repeats. Timeouts and TLS verification are
on by default.
"""

from __future__ import annotations

import httpx

from goodfellaz17.backends.base import (
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)


class WebhookBackend:
    name = "webhook"

    def __init__(
        self,
        *,
        timeout_seconds: float = 10.0,
        verify_tls: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds),
            verify=verify_tls,
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": "goodfellaz17-webhook/1"},
        )

    async def deliver(self, request: DeliveryRequest) -> None:
        if not request.endpoint:
            raise RetryableDeliveryError(f"node {request.node_identifier} has no endpoint")
        payload = {
            "taskId": str(request.task_id),
            "orderId": str(request.order_id),
            "quantity": request.quantity,
            "target": request.target,
            "attempt": request.attempt,
            "node": request.node_identifier,
        }
        try:
            response = await self._client.post(
                request.endpoint,
                json=payload,
                headers={"Idempotency-Key": request.idempotency_key},
            )
        except httpx.TimeoutException as exc:
            raise RetryableDeliveryError(f"timeout after {type(exc).__name__}") from exc
        except httpx.HTTPError as exc:
            raise RetryableDeliveryError(f"{type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"HTTP {status} from node {request.node_identifier}"
        if status == 429 or status >= 500:
            raise RetryableDeliveryError(detail)
        raise PermanentDeliveryError(detail)

    async def aclose(self) -> None:
        await self._client.aclose()
