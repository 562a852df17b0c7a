"""mesh/settings.py: unknown ALERTS_* variables stop start-up with the closest real name."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capture_service.settings import CaptureSettings
from edge.settings import EdgeSettings
from mesh.errors import ConfigurationError
from mesh.setting_names import SETTING_NAMES
from mesh.settings import CommonSettings, env_names, refuse_unknown_variables
from signal_service.settings import DatabaseJobSettings, SignalSettings
from storage_service.settings import StorageSettings

REPO_DIR = Path(__file__).resolve().parents[3]
EVERY_SETTINGS_CLASS = (
    CommonSettings,
    EdgeSettings,
    SignalSettings,
    DatabaseJobSettings,
    StorageSettings,
    CaptureSettings,
)


@pytest.mark.parametrize("settings_class", EVERY_SETTINGS_CLASS)
def test_every_settings_class_refuses_an_unknown_variable(
    settings_class: type[CommonSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERTS_PUBLIC_BASE_URL", "https://alerts.example.com")
    with pytest.raises(ConfigurationError) as refused:
        settings_class()
    assert str(refused.value) == (
        "unknown setting ALERTS_PUBLIC_BASE_URL (did you mean ALERTS_PUBLIC_URL?); see docs/configuration.md"
    )


@pytest.mark.parametrize(
    ("misspelt", "closest"),
    [
        ("ALERTS_GCS_BUCKET", "ALERTS_STORAGE_GCS_BUCKET"),
        ("ALERTS_GCS_ENDPOINT", "ALERTS_STORAGE_GCS_ENDPOINT"),
        ("ALERTS_DATABSE_URL", "ALERTS_DATABASE_URL"),
        ("alerts_redis_ulr", "ALERTS_REDIS_URL"),
    ],
)
def test_the_message_names_the_closest_real_setting(misspelt: str, closest: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"\(did you mean {closest}\?\)"):
        refuse_unknown_variables({misspelt: "x"}, known=SETTING_NAMES)


def test_every_unknown_variable_is_named_on_one_line() -> None:
    with pytest.raises(ConfigurationError) as refused:
        refuse_unknown_variables({"ALERTS_NOPE": "1", "ALERTS_GCS_BUCKET": "b"}, known=SETTING_NAMES)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("unknown settings ALERTS_GCS_BUCKET (did you mean ALERTS_STORAGE_GCS_BUCKET?)")
    assert "ALERTS_NOPE" in message


def test_another_services_variable_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    """One environment feeds every process of `alerts dev` and every container of a deployment."""
    monkeypatch.setenv("ALERTS_STORAGE_BACKEND", "local")
    monkeypatch.setenv("ALERTS_CAPTURE_CONCURRENCY", "2")
    monkeypatch.setenv("ALERTS_TRUSTED_PROXIES", "10.0.0.0/8")
    assert EdgeSettings().trusted_proxies == ["10.0.0.0/8"]
    assert SignalSettings().env == "dev"


def test_other_variables_are_none_of_its_business() -> None:
    refuse_unknown_variables(
        {"PATH": "/usr/bin", "ALERTSX": "1", "MY_ALERTS_THING": "1"}, known=SETTING_NAMES
    )


@given(st.text(alphabet=string.ascii_uppercase + string.digits + "_", min_size=1, max_size=40))
def test_a_name_is_refused_exactly_when_no_process_reads_it(suffix: str) -> None:
    name = f"ALERTS_{suffix}"
    if name in SETTING_NAMES:
        refuse_unknown_variables({name: "x"}, known=SETTING_NAMES)
    else:
        with pytest.raises(ConfigurationError, match=name):
            refuse_unknown_variables({name: "x"}, known=SETTING_NAMES)


def test_the_catalog_holds_every_settings_class_field() -> None:
    for settings_class in EVERY_SETTINGS_CLASS:
        assert env_names(settings_class) <= SETTING_NAMES, settings_class.__name__


def test_a_service_stops_with_the_one_line_message() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "alerts.cli", "serve", "storage"],
        env={"ALERTS_GCS_BUCKET": "alerts-media", "PATH": "/usr/bin:/bin"},
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr == (
        "alerts: unknown setting ALERTS_GCS_BUCKET (did you mean ALERTS_STORAGE_GCS_BUCKET?);"
        " see docs/configuration.md\n"
    )
