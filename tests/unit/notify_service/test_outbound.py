"""Which addresses a user-supplied notification URL may reach."""

from __future__ import annotations

import ipaddress

import pytest

from notify_service.outbound import forbidden_reason


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00:ec2::254", "private"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "not globally routable"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("8.8.8.8", ""),
        ("2606:4700:4700::1111", ""),
    ],
)
def test_only_public_addresses_are_reachable(address: str, reason: str) -> None:
    assert forbidden_reason(ipaddress.ip_address(address), allow_loopback=False) == reason


def test_the_dev_setting_opens_loopback_and_nothing_else() -> None:
    assert forbidden_reason(ipaddress.ip_address("127.0.0.1"), allow_loopback=True) == ""
    assert forbidden_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allow_loopback=True) == ""
    assert forbidden_reason(ipaddress.ip_address("10.0.0.1"), allow_loopback=True) == "private"
