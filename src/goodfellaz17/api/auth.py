"""API keys and roles: constant-time checks, keys never echoed or logged.

Roles nest: `operator` may do everything, `orders` may create and read
orders, `read` may only read.
"""

from __future__ import annotations

import hashlib
import hmac
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
    key_id: str  # a short fingerprint of the key, safe to log

    @property
    def actor(self) -> str:
        return f"api-key:{self.key_id}({self.role.value})"

    def may(self, needed: Role) -> bool:
        return needed in GRANTS[self.role]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


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
        return Principal(role=match, key_id=digest.hex()[:8])
