"""Which addresses a webhook may be sent to (server-side request forgery).

A webhook URL comes from the queues file or, for per-job callbacks, from whoever may enqueue: it must not
become a way to reach the cluster's own services, the node, or the cloud's metadata endpoint. Every address a
host name resolves to is checked (``refusal``) and the connection is made to exactly the checked addresses
(``PinnedResolver``: aiohttp connects to what the resolver returns), so a second DNS answer cannot swap in
another one. Refused unless the operator allows them (``ARQSCALE_WEBHOOKS_ALLOW_NETWORKS``): every address
that is not global (loopback, private, link-local, unique-local, carrier-grade NAT, reserved, unspecified,
documentation ranges), multicast, and the cloud metadata addresses. IPv4-mapped, 6to4 and Teredo IPv6
addresses are judged by the IPv4 address they carry.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, ...
        "fd00:ec2::254",  # AWS over IPv6
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
    )
)


ALLOW_HINT = "an operator may allow it with ARQSCALE_WEBHOOKS_ALLOW_NETWORKS"


# IANA's special-purpose ranges that are not globally reachable, written out: Python's ``is_global`` has changed
# between patch releases (e.g. 192.0.0.0/24), and this check must not depend on which one runs it.
NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
        "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
        "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
        "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
    )
)  # fmt: skip
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class AddressRefused(OSError):
    """The URL's host is (or resolves to) an address webhooks may not reach."""


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """``ARQSCALE_WEBHOOKS_ALLOW_NETWORKS``: comma-separated CIDRs (or single addresses)."""
    return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


def _carried(addr: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, Teredo, NAT64), or itself."""
    if isinstance(addr, ipaddress.IPv6Address):
        for inner in (addr.ipv4_mapped, addr.sixtofour, addr.teredo[1] if addr.teredo else None):
            if inner is not None:
                return inner
        if addr in NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr


def refusal(addr: IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why ``addr`` may not be called, or None when it may."""
    allowed = tuple(allowed)
    if any(addr.version == net.version and addr in net for net in allowed):
        return None
    inner = _carried(addr)
    if inner is not addr and any(inner.version == net.version and inner in net for net in allowed):
        return None
    if addr in METADATA or inner in METADATA:
        return f"{addr} is a cloud metadata address"
    for a in (inner, addr):
        if a.is_loopback:
            return f"{addr} is a loopback address"
        if a.is_link_local:
            return f"{addr} is a link-local address"
        if a.is_multicast:
            return f"{addr} is a multicast address"
        if any(a.version == net.version and a in net for net in NOT_PUBLIC) or a.is_private or not a.is_global:
            return f"{addr} is not a public address (private, reserved or local network)"
    return None


def check_literal(host: str, allowed: Iterable[IPNetwork]) -> None:
    """A URL whose host is an IP address is not resolved (aiohttp connects to it as is): check it here."""
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return
    why = refusal(addr, allowed)
    if why is not None:
        raise AddressRefused(f"refused: {why} ({ALLOW_HINT})")


class PinnedResolver(AbstractResolver):
    """Resolves a host, refuses it when any of its addresses is refused, and returns exactly those addresses."""

    def __init__(self, allowed: Iterable[IPNetwork]) -> None:
        self.allowed = tuple(allowed)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        results: list[ResolveResult] = []
        for fam, _, proto, _, sockaddr in infos:
            ip = str(sockaddr[0]).split("%", 1)[0]
            why = refusal(ipaddress.ip_address(ip), self.allowed)
            if why is not None:
                raise AddressRefused(f"refused: {host} resolves to {why} ({ALLOW_HINT})")
            port_of = int(sockaddr[1])
            flags = socket.AI_NUMERICHOST
            results.append(ResolveResult(hostname=host, host=ip, port=port_of, family=fam, proto=proto, flags=flags))
        if not results:
            raise OSError(f"cannot resolve {host}: no address")
        return results

    async def close(self) -> None:
        return None
