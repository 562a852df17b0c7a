"""alerts.cli: the command tree, and configuration problems reported by name without their values."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from alerts.cli import PRODUCTION_COMMANDS, build_parser
from alerts.cli.captures import failure_summary
from alerts.cli.clients import settings_error
from signal_service.settings import SignalSettings


def test_every_production_command_parses() -> None:
    parser = build_parser()
    for command in PRODUCTION_COMMANDS:
        assert callable(parser.parse_args(list(command)).handler)


@pytest.mark.parametrize(
    "argv",
    [
        ["dev"],
        ["demo", "--stay"],
        ["user", "create", "--json"],
        ["keys", "generate", "k1"],
        ["captures", "failed", "--json"],
        ["captures", "retry", "--all"],
        ["notifications", "failed", "--user", "u1", "--limit", "5"],
        ["notifications", "retry", "s1", "s2"],
        ["token", "create", "u1", "--ttl", "60", "--json"],
        ["token", "revoke", "u1"],
        ["user", "rotate-token", "u1", "--grace", "30", "--json"],
        ["user", "enable", "u1"],
        ["serve", "chart-stub", "--port", "9000"],
    ],
)
def test_each_command_group_registers_its_commands(argv: list[str]) -> None:
    assert callable(build_parser().parse_args(argv).handler)


def test_the_failed_and_retry_commands_read_their_options() -> None:
    parser = build_parser()
    listing = parser.parse_args(["notifications", "failed", "--user", "u1", "--limit", "5", "--json"])
    named = parser.parse_args(["captures", "retry", "s1", "s2"])
    every = parser.parse_args(["notifications", "retry", "--all"])

    assert (listing.user, listing.limit, listing.json) == ("u1", 5, True)
    assert (named.signal_ids, named.all_failed) == (["s1", "s2"], False)
    assert (every.signal_ids, every.all_failed) == ([], True)
    with pytest.raises(SystemExit):
        parser.parse_args(["captures", "retry", "--all", "s1"])


def test_a_user_command_takes_the_user_id_and_json_and_its_own_options() -> None:
    parser = build_parser()
    rotate = parser.parse_args(["user", "rotate-token", "u1", "--grace", "30", "--json"])
    disable = parser.parse_args(["user", "disable", "u2"])

    assert (rotate.user_id, rotate.grace, rotate.json) == ("u1", 30, True)
    assert (disable.user_id, disable.enabled, disable.json) == ("u2", False, False)


def test_a_settings_error_names_the_variables_and_never_echoes_a_value() -> None:
    secret = "sk-configured-secret-value"
    with pytest.raises(ValidationError) as caught:
        SignalSettings(env="production", service_api_key=SecretStr(secret), database_pool_size="many")
    message = str(settings_error(caught.value))
    assert "ALERTS_DATABASE_POOL_SIZE" in message
    assert secret not in message
    assert "many" not in message


def test_a_missing_production_secret_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        SignalSettings(env="production", database_url="postgresql+asyncpg://db/alerts")
    message = str(settings_error(caught.value))
    assert message.startswith("configuration: production requires ")
    assert "ALERTS_COOKIE_KEYS" in message
    assert "db/alerts" not in message


def test_failed_captures_are_summed_up_by_reason_with_what_to_do() -> None:
    lines = failure_summary(["timeout", "infrastructure_unavailable", "infrastructure_unavailable", ""])
    assert lines[0].split(":")[0].split() == ["2", "infrastructure_unavailable"]
    assert "alerts captures retry --all" in lines[0]
    assert [line.split() for line in lines[1:]] == [["1", "no", "reason", "recorded"], ["1", "timeout"]]
