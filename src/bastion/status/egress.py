"""Where webhooks may be delivered: public addresses only, unless the operator allows more.

A subscriber URL is operator input, but a webhook is still a request the exchange makes from
inside its own network. Loopback, private, link-local (cloud metadata at 169.254.169.254),
carrier-grade NAT, multicast and reserved addresses are refused by default. The host is
resolved on every delivery and the connection goes to the address that was checked (the
``Host`` header and TLS name stay the URL's), so a DNS answer that changes between check and
connect cannot redirect a delivery.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class Refused(Exception):
    """The destination is not allowed; the message is safe to show (no port or host detail)."""


def _unmapped(addr: Address) -> Address:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_public(addr: Address) -> bool:
    a = _unmapped(addr)
    if isinstance(a, ipaddress.IPv4Address) and a in _CGNAT:
        return False
    return a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified)


@dataclass(frozen=True)
class Egress:
    """The delivery policy: which extra networks (CIDRs) an operator allows."""

    allow: tuple[Network, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, text: str) -> Egress:
        """``"10.1.2.0/24,127.0.0.1"`` (``BASTION_WEBHOOK_ALLOW``); empty allows none."""
        nets = tuple(ipaddress.ip_network(part.strip(), strict=False)
                     for part in text.split(",") if part.strip())
        return cls(nets)

    def allowed(self, addr: Address) -> bool:
        a = _unmapped(addr)
        return is_public(a) or any(a in net for net in self.allow)

    async def resolve(self, url: str) -> tuple[httpx.URL, str]:
        """The URL to connect to (host replaced by a checked address) and the original host;
        raises ``Refused`` if any address the name resolves to is not allowed."""
        parsed = httpx.URL(url)
        host = parsed.host
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise Refused("destination name does not resolve") from None
        addrs = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addrs or not all(self.allowed(a) for a in addrs):
            raise Refused("destination address is not allowed (private, loopback, link-local "
                          "or reserved; see BASTION_WEBHOOK_ALLOW)")
        pinned = _unmapped(addrs[0])
        return parsed.copy_with(host=str(pinned)), host
