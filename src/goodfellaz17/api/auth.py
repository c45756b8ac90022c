"""API keys and roles: constant-time checks, keys never echoed or logged,
and guessing slowed down per client address.

Roles nest: `operator` may do everything, `orders` may create and read
orders, `read` may only read.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from goodfellaz17.settings import ApiKey, Role

GRANTS: dict[Role, frozenset[Role]] = {
    Role.READ: frozenset({Role.READ}),
    Role.ORDERS: frozenset({Role.READ, Role.ORDERS}),
    Role.OPERATOR: frozenset({Role.READ, Role.ORDERS, Role.OPERATOR}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    role: Role
    # 32 hex digits of the key's SHA-256: names what the key owns (its
    # idempotency keys). Never the key, and too long to guess it from.
    fingerprint: str

    @property
    def key_id(self) -> str:
        """A short fingerprint of the key, safe to log."""
        return self.fingerprint[:8]

    @property
    def idempotency_scope(self) -> str:
        return f"key:{self.fingerprint}"

    @property
    def actor(self) -> str:
        return f"api-key:{self.key_id}({self.role.value})"

    def may(self, needed: Role) -> bool:
        return needed in GRANTS[self.role]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def key_fingerprint(digest: bytes) -> str:
    return digest.hex()[:32]


class KeyRing:
    def __init__(self, keys: list[ApiKey]) -> None:
        self._entries = [(_digest(k.secret), k.role) for k in keys]

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, presented: str | None) -> Principal | None:
        """The principal for `presented`, or None. Compares digests of equal
        length with hmac.compare_digest and always walks every key, so the
        time taken says nothing about which key, or how much of it, matched."""
        if not presented:
            return None
        digest = _digest(presented)
        match: Role | None = None
        for stored, role in self._entries:
            if hmac.compare_digest(digest, stored):
                match = role
        if match is None:
            return None
        return Principal(role=match, fingerprint=key_fingerprint(digest))


# ---------------------------------------------------------------- throttling guesses

MAX_TRACKED_ADDRESSES = 10_000


def client_address_key(host: str | None) -> str:
    """Who is guessing: the client's IPv4 address, or its IPv6 /64 (whoever
    holds one IPv6 address usually holds the whole network)."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class AuthThrottle:
    """Failed authentication per client address, as a token bucket: `burst`
    failures at once, then one more every `refill_seconds`. Only failures
    take a token; while an address has none, every attempt from it waits
    (a right key too, or guessing would simply go on).

    In memory, per process: at most `max_addresses` buckets (the least
    recently failing are forgotten first), so no flood of addresses can grow
    it without bound. Several replicas each keep their own count.
    """

    def __init__(
        self,
        burst: int,
        refill_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, address: str, now: float) -> float:
        bucket = self._buckets.get(address)
        if bucket is None:
            return float(self.burst)
        tokens, at = bucket
        return min(float(self.burst), tokens + (now - at) / self.refill_seconds)

    def wait_seconds(self, address: str) -> float:
        """0 when `address` may try now, else how long until it may."""
        tokens = self._tokens(address, self.clock())
        return 0.0 if tokens >= 1 else (1 - tokens) * self.refill_seconds

    def failed(self, address: str) -> None:
        now = self.clock()
        self._buckets[address] = (max(self._tokens(address, now) - 1, 0.0), now)
        self._buckets.move_to_end(address)
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)
