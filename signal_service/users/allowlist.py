"""Per-user source address allowlists: CIDRs, bare addresses, and named presets."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from mesh.errors import InvalidArgumentError

# TradingView's published webhook source addresses.
PRESETS: dict[str, tuple[str, ...]] = {
    "tradingview": ("52.89.214.238/32", "34.212.75.30/32", "54.218.53.128/32", "52.32.178.7/32"),
}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalise(entries: Iterable[str]) -> list[str]:
    """Validates entries as given by an administrator; raises InvalidArgumentError on the first bad one."""
    result = []
    for raw in entries:
        entry = raw.strip().lower()
        if entry in PRESETS:
            result.append(entry)
            continue
        try:
            result.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError as exc:
            raise InvalidArgumentError(
                f"not a CIDR, address or preset: {raw!r}", reason="INVALID_IP_ALLOWLIST"
            ) from exc
    return result


@lru_cache(maxsize=4096)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    networks: list[Network] = []
    for entry in entries:
        for cidr in PRESETS.get(entry, (entry,)):
            networks.append(ipaddress.ip_network(cidr, strict=False))
    return tuple(networks)


def allows(entries: Iterable[str], source_ip: str) -> bool:
    """An empty allowlist allows every source; an unparseable source address is never allowed."""
    networks = _networks(tuple(entries))
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address.version == network.version and address in network for network in networks)
