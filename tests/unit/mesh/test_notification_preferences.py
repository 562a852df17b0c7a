"""notification_preferences: the accepted shape, errors naming the field, secrets kept out of the document."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import notification_preferences as prefs
from mesh.errors import InvalidArgumentError

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
DISCORD = "https://discord.com/api/webhooks/123456789012345678/" + "a" * 68


def field_of(document: object) -> str:
    with pytest.raises(InvalidArgumentError) as caught:
        prefs.parse(document)  # type: ignore[arg-type]
    assert caught.value.reason == prefs.REASON
    return caught.value.metadata["field"]


def test_the_issue_example_is_accepted_and_its_secrets_split_off() -> None:
    parsed = prefs.parse(
        {
            "telegram": {"chat_id": "-1001234567890", "enabled": True, "with_screenshot": True},
            "discord": {"webhook_url": DISCORD, "enabled": True},
            "webhook": {"url": "https://example.com/hook", "secret": SECRET, "enabled": True},
            "filters": {"indicators": ["ADX DEF"], "tickers": ["BINANCE:BTCUSDT"], "signal_types": []},
        }
    )
    document, secrets = prefs.split(parsed, {})
    assert secrets == {"discord_webhook_url": DISCORD, "webhook_secret": SECRET}
    assert document["discord"] == {"enabled": True, "webhook_url_set": True}
    assert document["webhook"] == {"url": "https://example.com/hook", "enabled": True, "secret_set": True}
    assert SECRET not in str(document)
    assert DISCORD not in str(document)
    assert prefs.enabled_channels(document) == ["telegram", "discord", "webhook"]


def test_a_struct_number_chat_id_becomes_its_digits() -> None:
    assert prefs.parse({"telegram": {"chat_id": -1001234567890.0}}).telegram.chat_id == "-1001234567890"


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"telegram": {"chat_id": "not a chat"}}, "notification_preferences.telegram.chat_id"),
        ({"telegram": {}}, "notification_preferences.telegram.chat_id"),
        (
            {"discord": {"webhook_url": "https://evil.example/api/webhooks/1/x"}},
            "notification_preferences.discord.webhook_url",
        ),
        ({"webhook": {"url": "ftp://example.com"}}, "notification_preferences.webhook.url"),
        ({"webhook": {"url": "https://user:pw@example.com"}}, "notification_preferences.webhook.url"),
        (
            {"webhook": {"url": "https://example.com", "secret": "whsec_short"}},
            "notification_preferences.webhook.secret",
        ),
        ({"filters": {"tickers": ["x"] * 101}}, "notification_preferences.filters.tickers"),
        ({"sms": {}}, "notification_preferences.sms"),
    ],
)
def test_errors_name_the_field(document: dict, field: str) -> None:
    assert field_of(document) == field


def test_a_wrong_secret_is_never_quoted() -> None:
    wrong = "whsec_" + "!" * 40
    with pytest.raises(InvalidArgumentError) as caught:
        prefs.parse({"webhook": {"url": "https://example.com", "secret": wrong}})
    assert wrong not in str(caught.value)
    assert "!!!!" not in caught.value.message


def test_an_update_without_the_secrets_keeps_the_stored_ones() -> None:
    shown = {"webhook": {"url": "https://example.com/h", "enabled": True, "secret_set": True}}
    document, secrets = prefs.split(prefs.parse(shown), {"webhook_secret": SECRET})
    assert secrets == {"webhook_secret": SECRET}
    assert document["webhook"]["secret_set"] is True


def test_enabling_a_channel_without_its_secret_names_it() -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        prefs.split(prefs.parse({"webhook": {"url": "https://example.com/h"}}), {})
    assert caught.value.metadata["field"] == "notification_preferences.webhook.secret"
    with pytest.raises(InvalidArgumentError) as caught:
        prefs.split(prefs.parse({"discord": {"enabled": True}}), {})
    assert caught.value.metadata["field"] == "notification_preferences.discord.webhook_url"


def test_a_disabled_channel_is_not_delivered_to() -> None:
    document, _ = prefs.split(prefs.parse({"telegram": {"chat_id": "42", "enabled": False}}), {})
    assert prefs.enabled_channels(document) == []


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["telegram", "discord", "webhook", "filters", "x"]), json_values))
def test_any_document_is_accepted_or_refused_with_a_field(document: dict) -> None:
    field = ""
    try:
        prefs.parse(document)
    except InvalidArgumentError as exc:
        field = exc.metadata["field"]
    assert field == "" or field.startswith("notification_preferences")
