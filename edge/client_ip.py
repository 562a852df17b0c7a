"""The caller's address: the socket peer, or X-Forwarded-For when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=64)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(parsed.version == network.version and parsed in network for network in networks)


def is_trusted_proxy(peer: str, trusted_proxies: Sequence[str]) -> bool:
    return _trusted(peer, _networks(tuple(trusted_proxies)))


def client_ip(peer: str, forwarded_for: str | None, trusted_proxies: Sequence[str]) -> str:
    """Walks X-Forwarded-For from the right, past trusted proxies, to the first address not ours."""
    networks = _networks(tuple(trusted_proxies))
    if not forwarded_for or not networks or not _trusted(peer, networks):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return _canonical(hop) or peer
    # Every hop is one of ours: the left-most is as near the client as anyone saw.
    return (_canonical(hops[0]) if hops else None) or peer


def _canonical(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
