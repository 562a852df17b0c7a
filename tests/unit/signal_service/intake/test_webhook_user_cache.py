"""The token -> user cache: bounded, least recently used out first, entries gone after their TTL."""

from __future__ import annotations

import uuid

from signal_service.intake.service import WebhookUser, WebhookUserCache


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _user() -> WebhookUser:
    return WebhookUser(
        id=uuid.uuid4(),
        plan="free",
        webhook_enabled=True,
        ip_allowlist=(),
        require_tradingview_client_certificate=False,
    )


def test_a_full_cache_drops_the_least_recently_used_lookup_only() -> None:
    cache = WebhookUserCache(60.0, max_entries=3, timer=FakeClock())
    users = {name: _user() for name in ("a", "b", "c", "d")}
    for name in ("a", "b", "c"):
        cache.put(name, users[name])
    assert cache.get("a") == users["a"]

    cache.put("d", users["d"])

    assert cache.get("b") is None
    assert [cache.get(name) for name in ("a", "c", "d")] == [users["a"], users["c"], users["d"]]


def test_an_entry_expires_after_its_ttl_and_can_be_forgotten_before() -> None:
    clock = FakeClock()
    cache = WebhookUserCache(5.0, timer=clock)
    first, second = _user(), _user()
    cache.put("first", first)
    cache.put("second", second)
    cache.forget("second")
    assert cache.get("second") is None

    clock.now = 4.9
    assert cache.get("first") == first
    clock.now = 5.0
    assert cache.get("first") is None


def test_a_ttl_of_zero_keeps_nothing() -> None:
    cache = WebhookUserCache(0.0)
    cache.put("token", _user())
    assert cache.get("token") is None
