"""Failed authentication is throttled per client address: a token bucket of
GOODFELLAZ17_AUTH_FAILURE_BURST failures, one more every
GOODFELLAZ17_AUTH_FAILURE_REFILL_SECONDS. Time is injected, never waited for."""

from __future__ import annotations

import pytest

from goodfellaz17.api.auth import AuthThrottle, client_address_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_failures_then_one_per_refill_interval() -> None:
    clock = Clock()
    throttle = AuthThrottle(burst=3, refill_seconds=10, clock=clock)
    for _ in range(3):
        assert throttle.wait_seconds("192.0.2.1") == 0
        throttle.failed("192.0.2.1")
    assert throttle.wait_seconds("192.0.2.1") == pytest.approx(10)
    clock.now += 4
    assert throttle.wait_seconds("192.0.2.1") == pytest.approx(6)
    clock.now += 6
    assert throttle.wait_seconds("192.0.2.1") == 0  # one more guess allowed
    throttle.failed("192.0.2.1")
    assert throttle.wait_seconds("192.0.2.1") == pytest.approx(10)
    clock.now += 1000
    for _ in range(3):  # the bucket refills to the burst, never beyond
        assert throttle.wait_seconds("192.0.2.1") == 0
        throttle.failed("192.0.2.1")
    assert throttle.wait_seconds("192.0.2.1") > 0


def test_addresses_are_throttled_independently() -> None:
    throttle = AuthThrottle(burst=1, refill_seconds=60, clock=Clock())
    throttle.failed("192.0.2.1")
    assert throttle.wait_seconds("192.0.2.1") > 0
    assert throttle.wait_seconds("192.0.2.2") == 0


def test_an_ipv6_network_counts_as_one_address() -> None:
    # Anyone with one IPv6 address usually holds its whole /64.
    assert client_address_key("2001:db8:1:2::1") == client_address_key("2001:db8:1:2:ffff::9")
    assert client_address_key("2001:db8:1:2::1") != client_address_key("2001:db8:1:3::1")
    assert client_address_key("192.0.2.7") == "192.0.2.7"
    assert client_address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_address_key(None) == "unknown"
    assert client_address_key("not-an-address") == "not-an-address"


def test_memory_stays_bounded_under_many_addresses() -> None:
    throttle = AuthThrottle(burst=2, refill_seconds=60, clock=Clock(), max_addresses=100)
    for n in range(10_000):
        throttle.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(throttle) <= 100
    throttle.failed("192.0.2.1")
    throttle.failed("192.0.2.1")
    assert throttle.wait_seconds("192.0.2.1") > 0, "the latest offender is kept"
