"""The destination rules: which hosts and addresses a webhook may reach.

The networks below are written from the RFCs, not read from the module: the
rules must refuse every one of them whatever the module's table says.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from goodfellaz17.backends.destinations import DestinationGuard, DestinationRefused, Resolver
from goodfellaz17.domain.destinations import (
    AddressKind,
    AllowList,
    DestinationPolicy,
    IPAddress,
    NameKind,
    address_kind,
    literal_address,
    name_kind,
)
from goodfellaz17.errors import InvalidInput
from goodfellaz17.services.nodes import validate_endpoint
from goodfellaz17.settings import ConfigError, Settings, load_settings

DEVELOPMENT = DestinationPolicy.for_environment(production=False)
PRODUCTION = DestinationPolicy.for_environment(production=True)

INSIDE: dict[str, AddressKind] = {
    "127.0.0.0/8": AddressKind.LOOPBACK,
    "::1/128": AddressKind.LOOPBACK,
    "0.0.0.0/8": AddressKind.UNSPECIFIED,
    "::/128": AddressKind.UNSPECIFIED,
    "169.254.0.0/16": AddressKind.LINK_LOCAL,
    "fe80::/10": AddressKind.LINK_LOCAL,
    "10.0.0.0/8": AddressKind.PRIVATE,
    "172.16.0.0/12": AddressKind.PRIVATE,
    "192.168.0.0/16": AddressKind.PRIVATE,
    "fc00::/7": AddressKind.PRIVATE,
    "100.64.0.0/10": AddressKind.SHARED,
    "224.0.0.0/4": AddressKind.MULTICAST,
    "ff00::/8": AddressKind.MULTICAST,
}


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@st.composite
def inside_addresses(draw: st.DrawFn) -> tuple[IPAddress, AddressKind]:
    network, kind = draw(st.sampled_from(sorted(INSIDE.items())))
    return draw(st.ip_addresses(network=network)), kind


@given(inside_addresses())
def test_every_address_inside_the_network_has_its_kind(
    sample: tuple[IPAddress, AddressKind],
) -> None:
    address, kind = sample
    assert address_kind(address) is kind


@given(inside_addresses())
def test_production_refuses_every_inside_address_and_development_all_but_loopback(
    sample: tuple[IPAddress, AddressKind],
) -> None:
    address, kind = sample
    assert PRODUCTION.address_refusal(address) is not None
    assert (DEVELOPMENT.address_refusal(address) is None) is (kind is AddressKind.LOOPBACK)


@given(st.ip_addresses())
def test_an_address_is_public_only_where_python_agrees(address: IPAddress) -> None:
    """Ours refuse at least what Python's ipaddress calls non-global."""
    if isinstance(address, ipaddress.IPv6Address) and (
        address.ipv4_mapped or address.sixtofour or address in ipaddress.ip_network("64:ff9b::/96")
    ):
        return  # judged by the IPv4 address inside: the next test
    if address_kind(address) is AddressKind.PUBLIC:
        assert address.is_global
        inside = ["is_private", "is_loopback", "is_link_local", "is_multicast", "is_reserved"]
        assert not [flag for flag in inside if getattr(address, flag)]
        assert not address.is_unspecified


@given(st.ip_addresses(v=4), st.integers(0, 2**80 - 1))
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_it(
    v4: ipaddress.IPv4Address, low_bits: int
) -> None:
    kind = address_kind(v4)
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | int(v4))
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | int(v4))
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | low_bits)
    assert address_kind(mapped) is kind
    assert address_kind(nat64) is kind
    assert address_kind(six_to_four) is kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("169.254.169.254", AddressKind.LINK_LOCAL),
        ("fd00:ec2::254", AddressKind.PRIVATE),
        ("172.31.255.255", AddressKind.PRIVATE),
        ("255.255.255.255", AddressKind.RESERVED),
        ("192.0.2.1", AddressKind.RESERVED),
        ("2001:db8::1", AddressKind.RESERVED),
        ("2001:0:4136:e378::1", AddressKind.RESERVED),  # Teredo tunnels to anywhere
        ("::ffff:10.0.0.1", AddressKind.PRIVATE),
        ("4000::1", AddressKind.RESERVED),  # outside global unicast
        ("8.8.8.8", AddressKind.PUBLIC),
        ("172.15.255.255", AddressKind.PUBLIC),
        ("172.32.0.0", AddressKind.PUBLIC),
        ("100.63.255.255", AddressKind.PUBLIC),
        ("2606:4700:4700::1111", AddressKind.PUBLIC),
        ("::ffff:8.8.8.8", AddressKind.PUBLIC),
    ],
)
def test_address_kinds_at_the_edges(address: str, kind: AddressKind) -> None:
    assert address_kind(ip(address)) is kind


def test_the_metadata_service_is_named_in_the_refusal() -> None:
    for address in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"]:
        assert "cloud metadata" in (DEVELOPMENT.address_refusal(ip(address)) or "")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("[::1]", "::1"),
        ("fe80::1%25eth0", "fe80::1"),
        ("10.0.0.1.", "10.0.0.1"),
    ],
)
def test_every_spelling_of_an_address_is_read_as_that_address(host: str, address: str) -> None:
    assert literal_address(host) == ip(address)


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("localhost", NameKind.LOOPBACK),
        ("LOCALHOST.", NameKind.LOOPBACK),
        ("app.localhost", NameKind.LOOPBACK),
        ("kubernetes.default.svc", NameKind.INTERNAL),
        ("kubernetes.default.svc.cluster.local", NameKind.INTERNAL),
        ("metadata.google.internal", NameKind.INTERNAL),
        ("printer.local", NameKind.INTERNAL),
        ("router.home.arpa", NameKind.INTERNAL),
        ("intranet", NameKind.SINGLE_LABEL),
        ("kubernetes", NameKind.SINGLE_LABEL),
        ("hooks.example.com", None),
        ("localhost.example.com", None),
        ("svc.example.com", None),
    ],
)
def test_names_that_resolve_inside_a_network(host: str, kind: NameKind | None) -> None:
    assert name_kind(host) is kind


def test_development_allows_loopback_hosts_and_production_does_not() -> None:
    for host in ["127.0.0.1", "::1", "localhost", "[::1]", "2130706433"]:
        assert DEVELOPMENT.host_refusal(host) is None, host
        assert PRODUCTION.host_refusal(host) is not None, host
    for host in ["10.0.0.1", "kubernetes.default.svc", "intranet", "0.0.0.0"]:
        assert DEVELOPMENT.host_refusal(host) is not None, host
    assert PRODUCTION.host_refusal("hooks.example.com") is None


def test_the_allow_list_admits_what_it_names_and_nothing_else() -> None:
    allowed = AllowList.parse(
        " 10.20.0.0/16, 192.168.1.5 ,fd00::/8, receiver.delivery.svc.cluster.local, *.hooks.corp, "
    )
    policy = DestinationPolicy.for_environment(production=True, allowed=allowed)
    for host in [
        "10.20.3.4",
        "192.168.1.5",
        "fd00::1",
        "receiver.delivery.svc.cluster.local",
        "Receiver.Delivery.svc.cluster.local.",
        "a.hooks.corp",
        "a.b.hooks.corp",
    ]:
        assert policy.host_refusal(host) is None, host
    for host in ["10.21.0.1", "192.168.1.6", "other.delivery.svc.cluster.local", "hooks.corp"]:
        assert policy.host_refusal(host) is not None, host
    assert policy.trusts_name("a.hooks.corp")
    assert not policy.trusts_name("10.20.3.4")


@pytest.mark.parametrize(
    "raw", ["10.0.0.0/33", "10.0.0.1/8", "https://hooks.corp/", "bad name", "a..b", "*"]
)
def test_a_bad_allow_list_entry_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match="'"):
        AllowList.parse(f"10.0.0.0/8,{raw}")


def test_settings_name_the_allow_list_variable_on_a_bad_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS", "10.0.0.0/8,http://x/")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS:")


def test_settings_build_the_rules_of_their_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS", "10.0.0.0/8")
    settings = load_settings()
    assert settings.webhook_deadline_seconds == 30
    assert settings.webhook_destinations == DestinationPolicy(
        allow_loopback=True, allowed=AllowList.parse("10.0.0.0/8")
    )
    # Built without validation, so other production requirements do not matter here.
    production = Settings.model_construct(
        env="production", webhook_allowed_destinations=AllowList()
    )
    assert production.webhook_destinations == PRODUCTION


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_the_deadline_must_be_a_positive_number(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GOODFELLAZ17_WEBHOOK_DEADLINE_SECONDS", value)
    with pytest.raises(ConfigError, match=r"^GOODFELLAZ17_WEBHOOK_DEADLINE_SECONDS:"):
        load_settings()


@pytest.mark.parametrize(
    "endpoint",
    ["http://127.0.0.1:8080/x", "http://localhost/x", "https://[::1]/x", "https://10.0.0.1/x"],
)
def test_production_registration_refuses_loopback_and_private_endpoints(endpoint: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        validate_endpoint(endpoint, "webhook", PRODUCTION)
    assert refused.value.field == "endpoint"


# ---------------------------------------------------------------- at connect time


def resolving_to(*addresses: str) -> Resolver:
    async def resolve(host: str, port: int) -> Sequence[IPAddress]:
        return [ip(a) for a in addresses]

    return resolve


async def test_one_inside_address_among_public_ones_refuses_the_name() -> None:
    guard = DestinationGuard(PRODUCTION, resolve=resolving_to("8.8.8.8", "10.0.0.1"))
    with pytest.raises(DestinationRefused, match="private address"):
        await guard.checked_addresses("hooks.example.com", 443)


async def test_public_answers_are_the_addresses_connected_to() -> None:
    guard = DestinationGuard(PRODUCTION, resolve=resolving_to("8.8.8.8", "2606:4700::1"))
    assert await guard.checked_addresses("hooks.example.com", 443) == [
        ip("8.8.8.8"),
        ip("2606:4700::1"),
    ]


async def test_an_allow_listed_name_is_trusted_wherever_it_resolves() -> None:
    policy = DestinationPolicy.for_environment(
        production=True, allowed=AllowList.parse("receiver.delivery.svc.cluster.local")
    )
    guard = DestinationGuard(policy, resolve=resolving_to("10.96.0.12"))
    name = "receiver.delivery.svc.cluster.local"
    assert await guard.checked_addresses(name, 443) == [ip("10.96.0.12")]


async def test_an_address_host_is_never_looked_up() -> None:
    async def no_lookup(host: str, port: int) -> Sequence[IPAddress]:
        raise AssertionError("looked up an address")

    guard = DestinationGuard(DEVELOPMENT, resolve=no_lookup)
    assert await guard.checked_addresses("127.1", 80) == [ip("127.0.0.1")]
    with pytest.raises(DestinationRefused, match="private"):
        await guard.checked_addresses("167772161", 80)
