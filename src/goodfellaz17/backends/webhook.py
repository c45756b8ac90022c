"""The webhook backend: POST the task as JSON to the node's endpoint.

2xx = delivered; 429, 5xx, timeouts and connection errors = retryable; any
other status = permanent. The task id travels as the `Idempotency-Key`
header so the receiver can drop repeats. TLS verification is on by default.

Bounded in every dimension a receiver controls:
- time: each read, write and connect has its timeout, and the whole exchange
  (resolve, connect, send, status, a bounded body) has a total deadline, so a
  receiver that drips one byte at a time fails at the deadline (retryable,
  and it counts against the node's circuit) instead of holding a worker slot
  and its lease forever;
- size: at most RESPONSE_READ_BYTES of a response are read (streamed, never
  buffered whole); the rest is dropped with the connection;
- place: connections go only where the destination rules allow
  (backends/destinations.py), checked on the resolved address.

Errors say what happened in our words (status code, timeout, refused
destination) and never repeat what the receiver sent: read keys see them as a
node's lastError and a task's last_error.

Requests are built with httpx (URL, headers, JSON) and sent through
httpcore, whose connection pool accepts the guarding network backend. No
redirect is followed and no HTTP(S)_PROXY is used: a proxy would resolve the
name itself, out of the guard's reach (egress is the network policy's job).
"""

from __future__ import annotations

import asyncio
import ssl

import httpcore
import httpx

from goodfellaz17.backends.base import (
    DeliveryRequest,
    PermanentDeliveryError,
    RetryableDeliveryError,
)
from goodfellaz17.backends.destinations import DestinationGuard, DestinationRefused, Resolver
from goodfellaz17.domain.destinations import DestinationPolicy
from goodfellaz17.logs import get_logger

log = get_logger(__name__)

RESPONSE_READ_BYTES = 4096
USER_AGENT = "goodfellaz17-webhook/1"


class WebhookBackend:
    name = "webhook"

    def __init__(
        self,
        *,
        destinations: DestinationPolicy,
        timeout_seconds: float = 10.0,
        deadline_seconds: float = 30.0,
        verify_tls: bool | ssl.SSLContext = True,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        guard = DestinationGuard(destinations, inner=network_backend, resolve=resolve)
        self.deadline_seconds = deadline_seconds
        self._timeouts = dict.fromkeys(("connect", "read", "write", "pool"), timeout_seconds)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify_tls),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=guard,  # every connection goes through the destination rules
        )

    async def deliver(self, request: DeliveryRequest) -> None:
        node = request.node_identifier
        if not request.endpoint:
            raise RetryableDeliveryError(f"node {node} has no endpoint")
        try:
            async with asyncio.timeout(self.deadline_seconds):
                status = await self._post(request)
        except TimeoutError:
            raise RetryableDeliveryError(
                f"no complete answer within the {self.deadline_seconds:g} s deadline"
                f" from node {node}"
            ) from None
        except DestinationRefused as exc:
            log.warning(
                "webhook destination refused",
                node=node,
                host=exc.host,
                address=None if exc.address is None else str(exc.address),
                reason=exc.reason,
            )
            raise RetryableDeliveryError(
                f"destination refused for node {node}: {exc.reason}"
            ) from None
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
            # exc's text may quote the receiver (a malformed status line, a
            # certificate's names): keep it for the operator's log only.
            log.info(
                "webhook delivery failed", node=node, error=f"{type(exc).__name__}: {exc}"[:300]
            )
            raise RetryableDeliveryError(f"{_failure_reason(exc)} (node {node})") from None
        except (httpx.InvalidURL, httpcore.UnsupportedProtocol):
            raise RetryableDeliveryError(f"node {node}'s endpoint is not a usable URL") from None
        if 200 <= status < 300:
            return
        detail = f"HTTP {status} from node {node}"
        if status == 429 or status >= 500:
            raise RetryableDeliveryError(detail)
        raise PermanentDeliveryError(detail)

    async def _post(self, request: DeliveryRequest) -> int:
        """POST the task; return the status after reading at most
        RESPONSE_READ_BYTES of the body (a short body is read whole, so the
        connection can be reused)."""
        assert request.endpoint is not None
        outgoing = httpx.Request(
            "POST",
            request.endpoint,
            json=_payload(request),
            headers={"Idempotency-Key": request.idempotency_key, "User-Agent": USER_AGENT},
        )
        url = httpcore.URL(
            scheme=outgoing.url.raw_scheme,
            host=outgoing.url.raw_host,
            port=outgoing.url.port,
            target=outgoing.url.raw_path,
        )
        async with self._pool.stream(
            "POST",
            url,
            headers=outgoing.headers.raw,
            content=outgoing.content,
            extensions={"timeout": self._timeouts},
        ) as response:
            read = 0
            async for chunk in response.aiter_stream():
                read += len(chunk)
                if read >= RESPONSE_READ_BYTES:
                    break
            return response.status

    async def aclose(self) -> None:
        await self._pool.aclose()


def _payload(request: DeliveryRequest) -> dict[str, object]:
    return {
        "taskId": str(request.task_id),
        "orderId": str(request.order_id),
        "quantity": request.quantity,
        "target": request.target,
        "attempt": request.attempt,
        "node": request.node_identifier,
    }


def _failure_reason(exc: Exception) -> str:
    """A failure in our words: which step failed, never the receiver's text."""
    if isinstance(exc, httpcore.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, httpcore.TimeoutException):
        return "timeout waiting for the receiver"
    if isinstance(exc, httpcore.ConnectError):
        if _caused_by(exc, ssl.SSLError):
            return "TLS handshake failed (certificate not accepted?)"
        return "could not connect"
    if isinstance(exc, httpcore.ProtocolError):
        return "the receiver did not answer with valid HTTP"
    return "the connection broke"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is in exc's chain of causes (libraries wrap TLS errors twice)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
