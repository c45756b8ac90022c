"""Progress/capacity arithmetic and node endpoint rules: pure, no database."""

from __future__ import annotations

import pytest

from goodfellaz17.domain.destinations import DestinationPolicy
from goodfellaz17.domain.estimates import (
    eta_at_capacity,
    eta_seconds,
    fits_within,
    percent,
    recent_rate,
)
from goodfellaz17.errors import InvalidInput
from goodfellaz17.services.nodes import is_loopback, validate_endpoint

DEVELOPMENT = DestinationPolicy.for_environment(production=False)


def test_percent_rounds_and_handles_an_empty_whole() -> None:
    assert percent(5000, 15000) == 33.33
    assert percent(15000, 15000) == 100.0
    assert percent(0, 0) == 0.0


def test_rate_uses_the_shorter_of_window_and_running_time() -> None:
    assert recent_rate(3000, 300, 10) == 300.0
    assert recent_rate(3000, 300, 3000) == 10.0
    assert recent_rate(3000, 300, None) == 0.0
    assert recent_rate(0, 300, 100) == 0.0


def test_eta_is_zero_when_done_and_unknown_when_nothing_moves() -> None:
    assert eta_seconds(0, 0.0) == 0.0
    assert eta_seconds(1000, 0.0) is None
    assert eta_seconds(1000, 100.0) == 10.0
    assert eta_at_capacity(15_000, 3_600_000) == 15.0
    assert eta_at_capacity(15_000, 0) is None


def test_a_15k_order_fits_in_two_hours_only_with_enough_capacity() -> None:
    assert fits_within(eta_at_capacity(15_000, 7_500), 7200) is True
    assert fits_within(eta_at_capacity(15_001, 7_500), 7200) is False
    assert fits_within(None, 7200) is False


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "LOCALHOST"], ids=str
)
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0", "::", "localhost.evil"])
def test_non_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://hooks.example.com/deliver",
        "https://hooks.example.com:8443/x?y=1",
        "http://127.0.0.1:8080/x",
        "http://[::1]/x",
        "http://localhost/x",
    ],
)
def test_accepted_webhook_endpoints(endpoint: str) -> None:
    assert validate_endpoint(endpoint, "webhook", DEVELOPMENT) == endpoint


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://hooks.example.com/x",
        "ftp://example.com/x",
        "https:///no-host",
        "hooks.example.com/x",
        "https://user:pw@example.com/x",
        "https://example.com:99999/x",
        "https://exa mple.com/x",
        "https://example.com/\n",
        "https://example.com/" + "x" * 2000,
    ],
)
def test_refused_webhook_endpoints_name_the_field(endpoint: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_endpoint(endpoint, "webhook", DEVELOPMENT)
    assert refused.value.field == "endpoint"


def test_webhook_nodes_need_an_endpoint_and_simulated_ones_do_not() -> None:
    with pytest.raises(InvalidInput):
        validate_endpoint(None, "webhook", DEVELOPMENT)
    assert validate_endpoint(None, "simulated", DEVELOPMENT) is None
