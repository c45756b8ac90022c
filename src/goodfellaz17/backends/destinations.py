"""The destination rules at connect time: an httpcore network backend that
resolves a host itself, judges every address it got (domain/destinations.py)
and connects only to an address it judged.

Checking a URL when it is registered is not enough: DNS may answer with a
public address then and a private one at delivery (rebinding). Here the
answer that is checked is the answer that is used: the host is resolved
once per connection and the socket goes to one of those addresses. TLS still
verifies the certificate against the name (SNI) and HTTP still sends the
name as Host: httpcore takes both from the URL, not from this backend.

For the webhook backend now and order callbacks later. It must never connect
to an address it has not judged, nor fall back to a resolver of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore

from goodfellaz17.domain.destinations import DestinationPolicy, IPAddress, literal_address

Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]


class DestinationRefused(httpcore.ConnectError):
    """The destination rules refuse this host or what it resolved to. A
    ConnectError, so the connection pool treats it as a failed connect."""

    def __init__(self, reason: str, *, host: str, address: IPAddress | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.host = host  # for the operator's log; the reason alone is shown to read keys
        self.address = address


async def resolve_with_system_dns(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for host, in its order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class DestinationGuard(httpcore.AsyncNetworkBackend):
    def __init__(
        self,
        policy: DestinationPolicy,
        *,
        inner: httpcore.AsyncNetworkBackend | None = None,
        resolve: Resolver | None = None,
    ) -> None:
        self.policy = policy
        self._inner = inner or httpcore.AnyIOBackend()
        self._resolve = resolve or resolve_with_system_dns

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self.checked_addresses(host, port, timeout)
        failure: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc  # try the next address, as a resolver-driven connect would
        raise failure

    async def checked_addresses(
        self, host: str, port: int, lookup_seconds: float | None = None
    ) -> list[IPAddress]:
        """The addresses to connect to, all allowed; DestinationRefused if any is not."""
        refusal = self.policy.host_refusal(host)
        if refusal is not None:
            raise DestinationRefused(f"the endpoint's host is {refusal}", host=host)
        literal = literal_address(host)
        addresses = (
            [literal] if literal is not None else await self._lookup(host, port, lookup_seconds)
        )
        if self.policy.trusts_name(host):
            return addresses
        for address in addresses:
            refusal = self.policy.address_refusal(address)
            if refusal is not None:
                # One inside address is enough to refuse: whoever controls the
                # name chose to put it there.
                raise DestinationRefused(
                    f"the endpoint's host resolves to {refusal}", host=host, address=address
                )
        return addresses

    async def _lookup(self, host: str, port: int, seconds: float | None) -> list[IPAddress]:
        try:
            async with asyncio.timeout(seconds):
                addresses = list(await self._resolve(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} did not resolve") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolved to no address")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("a unix socket is not a destination", host=path)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
