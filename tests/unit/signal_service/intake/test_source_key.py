"""The source a per-source limit counts: IPv4 addresses as they are, IPv6 by /64."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from signal_service.intake.ratelimit import source_key


@given(st.ip_addresses(v=6), st.integers(min_value=0, max_value=2**64 - 1))
def test_every_address_of_one_ipv6_64_is_one_source(address: ipaddress.IPv6Address, host: int) -> None:
    if address.ipv4_mapped is not None:
        return
    neighbour = ipaddress.IPv6Address((int(address) >> 64 << 64) | host)
    if neighbour.ipv4_mapped is not None:
        return
    assert source_key(str(address)) == source_key(str(neighbour))
    assert source_key(str(address)) == str(ipaddress.ip_network(f"{address}/64", strict=False))


@given(st.ip_addresses(v=4))
def test_ipv4_addresses_are_their_own_source_also_when_mapped(address: ipaddress.IPv4Address) -> None:
    assert source_key(str(address)) == str(address)
    assert source_key(f"::ffff:{address}") == str(address)


def test_text_that_is_no_address_counts_as_itself_bounded() -> None:
    assert source_key("") == ""
    assert source_key("unix:/run/edge.sock") == "unix:/run/edge.sock"
    assert len(source_key("x" * 1000)) == 64
