"""The `alerts` command as a real process: every failure to reach what a command needs is one clear line
on stderr and exit status 1, never a traceback nor a secret; read commands answer `--json`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from alerts.processes import alerts_argv, free_port
from alerts.stack import Stack
from apidevs.alerts.v1 import resources_pb2, signal_service_pb2, user_service_pb2
from tests.e2e.stacks import child_env
from tests.keys import PLATFORM_KEY
from tests.support import SAMPLE, create_user, ingest_request

pytestmark = pytest.mark.e2e

SECRET = "sk-not-to-be-printed-4f1c"
DATABASE_COMMANDS = (("migrate",), ("keys", "rotate"), ("audit", "prune"))
SOME_USER = "0193a6f0-0000-7000-8000-000000000001"
SERVICE_COMMANDS = (
    ("user", "create"),
    ("captures", "failed"),
    ("captures", "retry", "--all"),
    ("token", "create", SOME_USER),
    ("token", "revoke", SOME_USER),
    ("user", "list"),
    ("user", "get", SOME_USER),
    ("user", "disable", SOME_USER),
    ("api-keys", "list"),
    ("api-keys", "create", "--role", "platform", "--name", "x"),
)


def run_alerts(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        alerts_argv(*args), env=env, capture_output=True, text=True, timeout=120, check=False
    )


def assert_one_line_failure(answer: subprocess.CompletedProcess[str], *expected: str) -> str:
    assert answer.returncode == 1, answer.stderr
    assert "Traceback" not in answer.stderr
    assert SECRET not in answer.stderr + answer.stdout
    lines = answer.stderr.strip().splitlines()
    assert len(lines) == 1, answer.stderr
    for fragment in expected:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """A configuration pointing at nothing in particular, in an empty data dir (no `alerts dev` state)."""
    return child_env({"ALERTS_DATA_DIR": str(tmp_path), "ALERTS_LOG_LEVEL": "WARNING"})


@pytest.mark.parametrize("command", SERVICE_COMMANDS, ids=" ".join)
def test_an_unreachable_signal_service_is_one_line(cli_env: dict[str, str], command: tuple[str, ...]) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = cli_env | {"ALERTS_SIGNAL_ADDR": address, "ALERTS_SERVICE_API_KEY": SECRET}
    assert_one_line_failure(run_alerts(env, *command), "unreachable", address)


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_an_unreachable_database_is_one_line_without_its_password(
    cli_env: dict[str, str], command: tuple[str, ...]
) -> None:
    port = free_port()
    env = cli_env | {"ALERTS_DATABASE_URL": f"postgresql+asyncpg://alerts:{SECRET}@127.0.0.1:{port}/alerts"}
    line = assert_one_line_failure(run_alerts(env, *command), "database", f"127.0.0.1:{port}")
    assert "refused" in line.lower() or "connect" in line.lower()


@pytest.mark.parametrize("command", DATABASE_COMMANDS, ids=" ".join)
def test_no_database_configured_is_one_line(cli_env: dict[str, str], command: tuple[str, ...]) -> None:
    assert_one_line_failure(run_alerts(cli_env, *command), "ALERTS_DATABASE_URL")


def test_migrate_with_an_unreadable_indicator_catalog_is_one_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = cli_env | {
        "ALERTS_DATABASE_URL": f"postgresql+asyncpg://alerts:{SECRET}@127.0.0.1:5432/alerts",
        "ALERTS_INDICATORS_PATH": str(tmp_path / "absent.toml"),
    }
    assert_one_line_failure(run_alerts(env, "migrate"), "indicator catalog", "absent.toml")


@pytest.mark.parametrize("command", SERVICE_COMMANDS, ids=" ".join)
def test_a_missing_service_key_is_one_line(cli_env: dict[str, str], command: tuple[str, ...]) -> None:
    assert_one_line_failure(run_alerts(cli_env, *command), "ALERTS_SERVICE_API_KEY")


@pytest.mark.parametrize(
    ("command", "configured", "missing"),
    [
        (("migrate",), {}, "ALERTS_DATABASE_URL"),
        (("audit", "prune"), {}, "ALERTS_DATABASE_URL"),
        (
            ("keys", "rotate"),
            {
                "ALERTS_DATABASE_URL": f"postgresql+asyncpg://alerts:{SECRET}@127.0.0.1:5432/alerts",
                "ALERTS_REDIS_URL": "redis://127.0.0.1:6379/0",
                "ALERTS_API_KEYS": SECRET,
                "ALERTS_SERVICE_API_KEY": SECRET,
            },
            "ALERTS_COOKIE_KEYS",
        ),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else None,
)
def test_a_missing_production_secret_is_one_line_naming_it(
    cli_env: dict[str, str], command: tuple[str, ...], configured: dict[str, str], missing: str
) -> None:
    env = cli_env | {"ALERTS_ENV": "production"} | configured
    assert_one_line_failure(run_alerts(env, *command), "configuration", missing)


def test_a_refused_key_is_one_line(cli_env: dict[str, str], edge_stack: Stack) -> None:
    env = cli_env | {"ALERTS_SIGNAL_ADDR": edge_stack.signal_addr, "ALERTS_SERVICE_API_KEY": SECRET}
    assert_one_line_failure(run_alerts(env, "user", "create"), "refused", edge_stack.signal_addr)


def test_user_create_answers_json(cli_env: dict[str, str], edge_stack: Stack, service_key: str) -> None:
    env = cli_env | {"ALERTS_SIGNAL_ADDR": edge_stack.signal_addr, "ALERTS_SERVICE_API_KEY": service_key}
    answer = run_alerts(env, "user", "create", "--plan", "pro", "--json")
    assert answer.returncode == 0, answer.stderr
    created = json.loads(answer.stdout)
    assert created["plan"] == "pro"
    assert created["user_id"]
    assert created["webhook_url"].startswith(edge_stack.env["ALERTS_PUBLIC_URL"] + "/webhook/u/")


async def test_token_create_gives_a_read_only_viewer_link_and_revoke_ends_it(
    cli_env: dict[str, str], edge_stack: Stack, service_key: str, edge_stack_users
) -> None:
    created = await create_user(edge_stack_users, plan=resources_pb2.PLAN_PRO)
    user_id = created.user.user_id
    env = cli_env | {
        "ALERTS_SIGNAL_ADDR": edge_stack.signal_addr,
        "ALERTS_SERVICE_API_KEY": service_key,
        "ALERTS_PUBLIC_URL": edge_stack.edge_url,
    }
    answer = run_alerts(env, "token", "create", user_id, "--ttl", "300", "--json")
    assert answer.returncode == 0, answer.stderr
    issued = json.loads(answer.stdout)
    assert issued["viewer"] == f"{edge_stack.edge_url}/ui#token={issued['access_token']}"
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    signals_url = f"{edge_stack.edge_url}/api/users/{user_id}/signals"
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(signals_url, headers=bearer)).status_code == 200

        revoked = run_alerts(env, "token", "revoke", user_id, "--json")
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["user_id"] == user_id
        assert (await client.get(signals_url, headers=bearer)).status_code == 401

    too_long = run_alerts(env, "token", "create", user_id, "--ttl", str(10**7))
    assert_one_line_failure(too_long, "INVALID_TTL")
    unknown = run_alerts(env, "token", "create", SOME_USER)
    assert_one_line_failure(unknown, "USER_NOT_FOUND")


def test_user_commands_read_and_change_users(
    cli_env: dict[str, str], edge_stack: Stack, service_key: str
) -> None:
    env = cli_env | {"ALERTS_SIGNAL_ADDR": edge_stack.signal_addr, "ALERTS_SERVICE_API_KEY": service_key}
    created = json.loads(run_alerts(env, "user", "create", "--plan", "basic", "--json").stdout)
    user_id = created["user_id"]

    listed = run_alerts(env, "user", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert user_id in {json.loads(line)["user_id"] for line in listed.stdout.splitlines()}

    updated = run_alerts(env, "user", "update", user_id, "--plan", "premium", "--chart", "abc", "--json")
    assert updated.returncode == 0, updated.stderr
    assert (json.loads(updated.stdout)["plan"], json.loads(updated.stdout)["default_chart_id"]) == (
        "PLAN_PREMIUM",
        "abc",
    )
    disabled = json.loads(run_alerts(env, "user", "disable", user_id, "--json").stdout)
    assert disabled.get("webhook_enabled", False) is False
    enabled = json.loads(run_alerts(env, "user", "enable", user_id, "--json").stdout)
    assert enabled["webhook_enabled"] is True

    rotated = json.loads(run_alerts(env, "user", "rotate-token", user_id, "--json").stdout)
    assert rotated["webhook_url"] != created["webhook_url"]

    with_cookies = env | {"TRADINGVIEW_SESSIONID": "sess-cli", "TRADINGVIEW_SESSIONID_SIGN": "sign-cli"}
    session = run_alerts(with_cookies, "user", "set-session", user_id, "--json")
    assert session.returncode == 0, session.stderr
    assert "sess-cli" not in session.stdout + session.stderr
    assert json.loads(session.stdout)["tradingview_session"]
    assert_one_line_failure(run_alerts(env, "user", "set-session", user_id), "TRADINGVIEW_SESSIONID")

    shown = run_alerts(env, "user", "get", user_id)
    assert shown.returncode == 0, shown.stderr
    assert "plan:             premium" in shown.stdout
    assert_one_line_failure(run_alerts(env, "user", "get", SOME_USER), "USER_NOT_FOUND")


async def test_api_keys_create_list_and_revoke(
    cli_env: dict[str, str], edge_stack: Stack, service_key: str, edge_stack_users
) -> None:
    from tests.keys import SYSTEM_KEYS

    env = cli_env | {
        "ALERTS_SIGNAL_ADDR": edge_stack.signal_addr,
        "ALERTS_SERVICE_API_KEY": SYSTEM_KEYS.operator,
    }
    user = await create_user(edge_stack_users)
    created = run_alerts(
        env, "api-keys", "create", "--role", "user", "--user", user.user.user_id, "--name", "cli", "--json"
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    listed = run_alerts(env, "api-keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert key["key"] not in listed.stdout
    assert key["key_id"] in {json.loads(line)["key_id"] for line in listed.stdout.splitlines()}

    stats_url = f"{edge_stack.edge_url}/api/users/{user.user.user_id}/stats"
    async with httpx.AsyncClient(timeout=10) as client:
        bearer = {"Authorization": f"Bearer {key['key']}"}
        assert (await client.get(stats_url, headers=bearer)).status_code == 200
        revoked = run_alerts(env, "api-keys", "revoke", key["key_id"], "--json")
        assert revoked.returncode == 0, revoked.stderr
        assert json.loads(revoked.stdout)["revoked_at"]
        assert (await client.get(stats_url, headers=bearer)).status_code == 401

    # A platform key may not manage keys.
    platform = env | {"ALERTS_SERVICE_API_KEY": PLATFORM_KEY}
    assert_one_line_failure(run_alerts(platform, "api-keys", "list"), "PERMISSION_DENIED")


async def test_captures_failed_answers_json(
    cli_env: dict[str, str], edge_stack: Stack, service_key: str, edge_stack_users, edge_stack_signals
) -> None:
    created = await create_user(edge_stack_users, plan=resources_pb2.PLAN_BASIC, default_chart_id="layout1")
    await edge_stack_users.SetTradingViewSession(
        user_service_pb2.SetTradingViewSessionRequest(
            user_id=created.user.user_id, sessionid="sess-1", sessionid_sign="sign-1"
        )
    )
    signal_id = (
        await edge_stack_signals.IngestWebhook(ingest_request(created.webhook_token, SAMPLE))
    ).signal_id
    await edge_stack_signals.ClaimCapture(signal_service_pb2.ClaimCaptureRequest(signal_id=signal_id))
    await edge_stack_signals.ReportCapture(
        signal_service_pb2.ReportCaptureRequest(
            signal_id=signal_id, status=resources_pb2.SCREENSHOT_STATUS_FAILED, error="TIMEOUT"
        )
    )
    env = cli_env | {"ALERTS_SIGNAL_ADDR": edge_stack.signal_addr, "ALERTS_SERVICE_API_KEY": service_key}
    answer = run_alerts(env, "captures", "failed", "--user", created.user.user_id, "--json")
    assert answer.returncode == 0, answer.stderr
    rows = [json.loads(line) for line in answer.stdout.splitlines()]
    assert [(row["signal_id"], row["user_id"], row["screenshot_error"]) for row in rows] == [
        (signal_id, created.user.user_id, "TIMEOUT")
    ]


@pytest.mark.parametrize("command", [("dev",), ("demo",)], ids=" ".join)
def test_dev_and_demo_on_an_unreachable_database_are_one_line(
    cli_env: dict[str, str], command: tuple[str, ...]
) -> None:
    port = free_port()
    env = cli_env | {
        "ALERTS_DATABASE_URL": f"postgresql+asyncpg://alerts:{SECRET}@127.0.0.1:{port}/alerts",
        "ALERTS_REDIS_URL": "redis://127.0.0.1:6379/0",
        "ALERTS_EDGE_PORT": str(free_port()),
        "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
        "ALERTS_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
    }
    line = assert_one_line_failure(run_alerts(env, *command), "migrations failed", f"127.0.0.1:{port}")
    assert "migrate.log" in line
