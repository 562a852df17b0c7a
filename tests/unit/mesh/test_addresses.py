"""The source an address counts as, for the spool's per-source room."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from mesh.addresses import source_network


@given(st.ip_addresses(v=6))
def test_every_address_of_an_ipv6_slash_64_is_one_source(address: ipaddress.IPv6Address) -> None:
    if address.ipv4_mapped is not None:
        return
    network = ipaddress.IPv6Network((address, 64), strict=False)
    assert source_network(str(address)) == str(network)
    assert source_network(str(network.network_address + (2**64 - 1))) == str(network)
    if int(network.network_address) + 2**64 < 2**128:
        assert source_network(str(network.network_address + 2**64)) != str(network)


@given(st.ip_addresses(v=4))
def test_an_ipv4_address_is_its_own_source(address: ipaddress.IPv4Address) -> None:
    assert source_network(str(address)) == str(address)
    assert source_network(f"::ffff:{address}") == str(address)


@given(st.text(max_size=60))
def test_any_text_is_some_source_and_never_an_error(text: str) -> None:
    assert isinstance(source_network(text), str)


def test_spellings_of_one_address_are_one_source() -> None:
    assert source_network("2001:DB8::1") == source_network("2001:db8:0:0:ffff::9") == "2001:db8::/64"
    assert source_network(" 198.51.100.7 ") == "198.51.100.7"
