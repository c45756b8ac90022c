"""KeyRing compares keys in constant time: hmac.compare_digest over SHA-256
digests of equal length, against every configured key whether or not one
matched, so neither which key matched nor how much of a key was right shows
in the time taken. Checked by spying on compare_digest, not by timing."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from goodfellaz17.api import auth
from goodfellaz17.api.auth import KeyRing
from goodfellaz17.settings import ApiKey, Role

KEYS = [
    ApiKey("read-key-0123456789", Role.READ),
    ApiKey("orders-key-0123456789-longer", Role.ORDERS),
    ApiKey("operator-key-0123456789", Role.OPERATOR),
]


@pytest.fixture
def comparisons(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any, bool]]:
    calls: list[tuple[Any, Any, bool]] = []
    compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        result = compare(a, b)
        calls.append((a, b, result))
        return result

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize(
    "presented",
    [
        "read-key-0123456789",  # the first key
        "operator-key-0123456789",  # the last key
        "operator-key-012345678",  # a prefix of a key
        "operator-key-0123456789-and-more",  # a key plus more
        "x",  # short
        "y" * 10_000,  # long
        "nöt-äscii-🔑",
    ],
)
def test_every_configured_key_is_compared_by_digest_whatever_matches(
    comparisons: list[tuple[Any, Any, bool]], presented: str
) -> None:
    ring = KeyRing(KEYS)
    principal = ring.authenticate(presented)
    expected = {k.secret: k.role for k in KEYS}.get(presented)
    assert (principal.role if principal else None) == expected
    # One comparison per configured key, even after a match...
    assert len(comparisons) == len(KEYS)
    # ...always of two SHA-256 digests (equal length, whatever the key's length)...
    digest = hashlib.sha256(presented.encode()).digest()
    assert all(a == digest and len(b) == len(a) == 32 for a, b, _ in comparisons)
    # ...against each stored key in turn.
    stored = [hashlib.sha256(k.secret.encode()).digest() for k in KEYS]
    assert [b for _, b, _ in comparisons] == stored
    assert sum(result for *_, result in comparisons) == (1 if expected else 0)


def test_no_key_is_compared_with_plain_equality(comparisons: list[Any]) -> None:
    """The stored form is the digest: the secret itself is not kept to compare."""
    ring = KeyRing(KEYS)
    held = repr(ring._entries)
    for key in KEYS:
        assert key.secret not in held
    assert ring.authenticate(None) is None
    assert ring.authenticate("") is None
    assert comparisons == []
