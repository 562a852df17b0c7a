"""What one source of traffic is, for limits keyed per source (the edge's spool room, the signal service's
unknown-token limit): shared so that both count a source the same way."""

from __future__ import annotations

import ipaddress


def source_network(address: str) -> str:
    """What one source can vary freely: an IPv4 address, or the /64 of an IPv6 one (a host on a /64 picks
    any of its 2**64 addresses; SLAAC privacy addresses rotate on their own). Limits keyed per source use
    this; an unparseable address is its own key."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
