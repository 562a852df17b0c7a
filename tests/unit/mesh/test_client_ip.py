from __future__ import annotations

from edge.client_ip import client_ip


def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    assert client_ip("198.51.100.9", "1.2.3.4", []) == "198.51.100.9"
    assert client_ip("198.51.100.9", "1.2.3.4", ["10.0.0.0/8"]) == "198.51.100.9"


def test_forwarded_for_is_walked_past_trusted_proxies() -> None:
    trusted = ["10.0.0.0/8"]
    assert client_ip("10.0.0.2", "52.89.214.238", trusted) == "52.89.214.238"
    # The left-most entry is whatever the client claimed; only hops our proxies added are believed.
    assert client_ip("10.0.0.2", "6.6.6.6, 52.89.214.238, 10.0.0.5", trusted) == "52.89.214.238"
    assert client_ip("10.0.0.2", "garbage", trusted) == "10.0.0.2"
