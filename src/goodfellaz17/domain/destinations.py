"""Where the engine's outbound requests may go: the destination rules.

Webhook nodes (and, later, order callbacks) name a URL; a URL whose host is,
or resolves to, an address inside the network would let whoever registers it
reach the cloud metadata service, the Kubernetes API or any internal port.
So an endpoint is refused when its host is

- an address that is not public: loopback, unspecified, link-local (incl. the
  metadata address 169.254.169.254), private (10/8, 172.16/12, 192.168/16,
  fc00::/7), shared (100.64/10), multicast, reserved or special-purpose, or
  an IPv6 address carrying one of those in IPv4 form (::ffff:10.0.0.1);
- a name that resolves only inside a network: localhost, *.svc,
  *.cluster.local, *.internal, ..., or a single-label name (resolved through
  the network's search domains),

unless the operator's allow-list names it (GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS:
addresses, CIDR networks, host names, `*.suffix` patterns). Development
allows loopback too, so local receivers and the demo work.

Pure rules: no DNS, no sockets. It must never decide on anything but what it
is given; backends/destinations.py applies the same rules at connect time to
the addresses a name actually resolved to.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from enum import StrEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_LIST_VARIABLE = "GOODFELLAZ17_WEBHOOK_ALLOWED_DESTINATIONS"


class AddressKind(StrEnum):
    PUBLIC = "a public address"
    LOOPBACK = "a loopback address"
    UNSPECIFIED = "an unspecified address"
    LINK_LOCAL = "a link-local address"
    PRIVATE = "a private address"
    SHARED = "a shared (carrier-grade NAT) address"
    MULTICAST = "a multicast address"
    RESERVED = "a reserved or special-purpose address"


def _table(*rows: tuple[str, AddressKind]) -> tuple[tuple[IPNetwork, AddressKind], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in rows)


# IANA's special-purpose registries, as an explicit table: Python's
# is_private/is_global changed between patch releases, these rules must not.
_SPECIAL_IPV4 = _table(
    ("0.0.0.0/8", AddressKind.UNSPECIFIED),  # "this network": 0.0.0.0 reaches the host itself
    ("10.0.0.0/8", AddressKind.PRIVATE),
    ("100.64.0.0/10", AddressKind.SHARED),
    ("127.0.0.0/8", AddressKind.LOOPBACK),
    ("169.254.0.0/16", AddressKind.LINK_LOCAL),
    ("172.16.0.0/12", AddressKind.PRIVATE),
    ("192.0.0.0/24", AddressKind.RESERVED),  # IETF protocol assignments
    ("192.0.2.0/24", AddressKind.RESERVED),  # documentation
    ("192.88.99.0/24", AddressKind.RESERVED),  # 6to4 relays (deprecated)
    ("192.168.0.0/16", AddressKind.PRIVATE),
    ("198.18.0.0/15", AddressKind.RESERVED),  # benchmarking
    ("198.51.100.0/24", AddressKind.RESERVED),  # documentation
    ("203.0.113.0/24", AddressKind.RESERVED),  # documentation
    ("224.0.0.0/4", AddressKind.MULTICAST),
    ("240.0.0.0/4", AddressKind.RESERVED),  # incl. the broadcast address
)
_SPECIAL_IPV6 = _table(
    ("::/128", AddressKind.UNSPECIFIED),
    ("::1/128", AddressKind.LOOPBACK),
    ("64:ff9b:1::/48", AddressKind.PRIVATE),  # local-use NAT64
    ("100::/64", AddressKind.RESERVED),  # discard
    ("2001::/23", AddressKind.RESERVED),  # IETF protocol assignments, Teredo
    ("2001:db8::/32", AddressKind.RESERVED),  # documentation
    ("3fff::/20", AddressKind.RESERVED),  # documentation
    ("5f00::/16", AddressKind.RESERVED),  # segment routing
    ("fc00::/7", AddressKind.PRIVATE),  # unique local
    ("fe80::/10", AddressKind.LINK_LOCAL),
    ("fec0::/10", AddressKind.PRIVATE),  # site-local (deprecated)
    ("ff00::/8", AddressKind.MULTICAST),
)
_GLOBAL_UNICAST_IPV6 = ipaddress.ip_network("2000::/3")
# IPv6 forms that carry an IPv4 address the packet may end up at.
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4)."""
    value = int(address)
    if address in _IPV4_MAPPED or address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF)
    return None


def address_kind(address: IPAddress) -> AddressKind:
    """What kind of address this is; only PUBLIC ones are outside the network."""
    if isinstance(address, ipaddress.IPv6Address):
        carried = embedded_ipv4(address)
        if carried is not None:
            return address_kind(carried)
        table = _SPECIAL_IPV6
    else:
        table = _SPECIAL_IPV4
    for network, kind in table:
        if address in network:
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_IPV6:
        return AddressKind.RESERVED
    return AddressKind.PUBLIC


def describe_address(address: IPAddress) -> str:
    """The address's kind in words, naming the cloud metadata service."""
    kind = address_kind(address)
    carried = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if address in METADATA_ADDRESSES or carried in METADATA_ADDRESSES:
        return f"{kind.value} (the cloud metadata service)"
    return kind.value


# Legacy numeric IPv4 forms (127.1, 0x7f.0.0.1, 2130706433) that resolvers
# accept as addresses: a name that looks like this is an address.
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")


def literal_address(host: str) -> IPAddress | None:
    """The address a URL host spells, in any form a resolver would read; None for a name."""
    text = host.strip("[]").rstrip(".").lower()
    text = text.split("%", 1)[0]  # an IPv6 zone names an interface, not another address
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


class NameKind(StrEnum):
    LOOPBACK = "a loopback name"
    INTERNAL = "a name that only resolves inside a network"
    SINGLE_LABEL = "a single-label name (resolved through the network's search domains)"


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Kubernetes services, mDNS, ICANN's private-use .internal, home networks, and
# the top-level names that private networks commonly use and nobody can register.
_INTERNAL_SUFFIXES = (
    ".svc",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
    ".lan",
    ".home",
    ".corp",
    ".intranet",
    ".private",
)


def normal_name(host: str) -> str:
    return host.rstrip(".").lower()


def name_kind(host: str) -> NameKind | None:
    """Why a host name points inside a network, or None for an ordinary name."""
    name = normal_name(host)
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return NameKind.LOOPBACK
    if "." not in name:
        return NameKind.SINGLE_LABEL
    if name.endswith(_INTERNAL_SUFFIXES):
        return NameKind.INTERNAL
    return None


_NAME_PATTERN = re.compile(
    r"^(\*\.)?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


@dataclass(frozen=True, slots=True)
class AllowList:
    """Destinations an operator allows although they are inside the network.

    A network admits the addresses in it. A name (`hooks.corp`, or
    `*.delivery.svc.cluster.local` for every name under it) is trusted
    wherever it resolves: the operator vouches for that name's DNS.
    """

    networks: tuple[IPNetwork, ...] = ()
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> AllowList:
        """Comma-separated addresses, CIDR networks and names; ValueError names the bad entry."""
        networks: list[IPNetwork] = []
        names: list[str] = []
        for entry in (part.strip() for part in raw.split(",")):
            if not entry:
                continue
            if "://" in entry:
                raise ValueError(f"{entry!r} is a URL: list host names, addresses or CIDR networks")
            address = literal_address(entry) if "/" not in entry else None
            if address is not None:
                networks.append(ipaddress.ip_network(address))
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]")))
                except ValueError as exc:
                    raise ValueError(f"{entry!r} is not a CIDR network: {exc}") from None
            elif _NAME_PATTERN.match(normal_name(entry)):
                names.append(normal_name(entry))
            else:
                raise ValueError(f"{entry!r} is neither an address, a CIDR network nor a host name")
        return cls(tuple(networks), tuple(names))

    def admits_address(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.networks)

    def admits_name(self, host: str) -> bool:
        name = normal_name(host)
        for allowed in self.names:
            if allowed.startswith("*."):
                if name.endswith(allowed[1:]):
                    return True
            elif name == allowed:
                return True
        return False

    def __str__(self) -> str:
        return ",".join([*(str(n) for n in self.networks), *self.names])


@dataclass(frozen=True, slots=True)
class DestinationPolicy:
    """The destination rules in force: public addresses always, loopback when
    allowed (development), and whatever the allow-list names."""

    allow_loopback: bool
    allowed: AllowList = AllowList()

    @classmethod
    def for_environment(
        cls, *, production: bool, allowed: AllowList | None = None
    ) -> DestinationPolicy:
        return cls(allow_loopback=not production, allowed=allowed or AllowList())

    def address_refusal(self, address: IPAddress) -> str | None:
        """Why a connection to `address` is refused (e.g. "a private address"), or None."""
        kind = address_kind(address)
        if kind is AddressKind.PUBLIC or self.allowed.admits_address(address):
            return None
        if kind is AddressKind.LOOPBACK and self.allow_loopback:
            return None
        return describe_address(address)

    def host_refusal(self, host: str) -> str | None:
        """Why a URL's host is refused before any lookup, or None. An address is
        judged as an address; a name by its form (its addresses are judged at
        connect time)."""
        address = literal_address(host)
        if address is not None:
            return self.address_refusal(address)
        if self.trusts_name(host):
            return None
        kind = name_kind(host)
        if kind is None or (kind is NameKind.LOOPBACK and self.allow_loopback):
            return None
        return kind.value

    def trusts_name(self, host: str) -> bool:
        """Whether the allow-list names this host, so its addresses are not judged."""
        return literal_address(host) is None and self.allowed.admits_name(host)
