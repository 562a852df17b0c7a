"""`alerts demo` as a newcomer runs it: a real subprocess starting every service, real Chromium captures.

The first runs point it at the machine's PostgreSQL (a fresh database) and Redis (a namespace of its own)
so that they are quick; one run uses the embedded default, exactly what `make demo` does.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from alerts.demo import DEMO_ALERTS, PNG_MAGIC
from alerts.processes import alerts_argv, free_port
from tests.e2e.stacks import fresh_database

pytestmark = pytest.mark.e2e

DEMO_TIMEOUT_SECONDS = 120
EMBEDDED_DEMO_WALL_SECONDS = 420


def _demo_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ALERTS_")}
    env.update(
        {
            "ALERTS_DATA_DIR": str(data_dir),
            "ALERTS_EDGE_PORT": str(free_port()),
            "ALERTS_SIGNAL_ADDR": f"127.0.0.1:{free_port()}",
            "ALERTS_STORAGE_ADDR": f"127.0.0.1:{free_port()}",
            "ALERTS_LOG_LEVEL": "INFO",
        }
    )
    env.update(overrides)
    return env


@pytest.fixture
def machine_infra_env(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    # Its own database: the session's in-process signal server relays outbox rows of the database it
    # serves into another Redis namespace, where this demo's workers would never see them.
    with fresh_database(database_url) as own_database:
        yield _demo_env(
            tmp_path / "data",
            ALERTS_DATABASE_URL=own_database,
            ALERTS_REDIS_URL=redis_url,
            ALERTS_REDIS_NAMESPACE=f"demo-{uuid.uuid4().hex[:10]}",
        )


def processes_using(data_dir: Path) -> list[str]:
    """Every live process started for this data dir: children inherit ALERTS_DATA_DIR, whatever they are
    (services, Chromium, the embedded PostgreSQL and Redis)."""
    markers = {f"ALERTS_DATA_DIR={path}".encode() for path in (data_dir, data_dir.resolve())}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if markers & set(environ.split(b"\0")) and "State:\tZ" not in status:
            found.append(f"{entry.name}: {command[:160]}")
    return found


def parse_table(output: str) -> list[dict[str, str]]:
    """The demo's result table, cut into columns along its dashed rule."""
    lines = output.splitlines()
    rule_index = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+(  -+)+", line.strip()))
    spans = [match.span() for match in re.finditer(r"-+", lines[rule_index])]
    spans[-1] = (spans[-1][0], None)

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in spans]

    headers = cells(lines[rule_index - 1])
    rows = []
    for line in lines[rule_index + 1 :]:
        if not line.strip():
            break
        rows.append(dict(zip(headers, cells(line), strict=True)))
    return rows


def check_demo_output(output: str, workdir: Path) -> None:
    rows = parse_table(output)
    assert len(rows) == len(DEMO_ALERTS), output
    for row, alert in zip(rows, DEMO_ALERTS, strict=True):
        assert row["plan"] == alert.plan
        if alert.capturable:
            assert row["screenshot"] == "completed", row
            assert row["ticker"] != "-"
            assert row["to screenshot"].endswith(" s")
            png = Path(row["screenshot file (or URL)"])
            png = png if png.is_absolute() else workdir / png
            assert png.read_bytes().startswith(PNG_MAGIC)
        else:
            assert row["screenshot"] == "skipped", row
        assert row["webhook"].endswith(" ms")
        if alert.plan == "premium":
            assert row["telegram"] in ("photo+caption", "text, photo reply", "text"), row
        else:
            assert row["telegram"] == "-", row
        assert row["signal"].startswith("…")
    by_ticker = {row["ticker"]: row for row in rows}
    spanish = by_ticker["BINANCE:BTCUSDT"]
    assert (spanish["indicator"], spanish["price"], spanish["type"]) == (
        "ADX DEF [APIDEVS]",
        "67890.50",
        "Divergencia Alcista",
    )
    assert by_ticker["NASDAQ:AAPL"]["type"] == "Oversold"
    assert by_ticker["BINANCE:ETHUSDT"]["indicator"] == "Squeeze Momentum DEF [APIDEVS]"
    assert by_ticker["OANDA:XAUUSD"]["price"] == "2315.40"
    assert by_ticker["ETHUSDT"]["type"] == "Crossing Up"
    assert "OK: all 6 alerts stored" in output
    viewer_links = re.findall(r"http://127\.0\.0\.1:\d+/ui#token=eyJ\S+", output)
    assert len(viewer_links) == 2
    # Access tokens need no new keys, so nothing restarts to accept them.
    assert "restart" not in output


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + 240)
def test_demo_stores_and_captures_every_valid_alert(
    machine_infra_env: dict[str, str], tmp_path: Path
) -> None:
    data_dir = Path(machine_infra_env["ALERTS_DATA_DIR"])
    finished = subprocess.run(
        alerts_argv("demo", "--timeout", str(DEMO_TIMEOUT_SECONDS)),
        env=machine_infra_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS + 180,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    check_demo_output(finished.stdout, tmp_path)
    assert processes_using(data_dir) == []


class _Demo:
    """`alerts demo` running in the background, its output read line by line as it comes."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            alerts_argv("demo", "--timeout", str(DEMO_TIMEOUT_SECONDS), *args),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for_line(self, fragment: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(fragment in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no line with {fragment!r}; output:\n{''.join(self.lines)}")
            time.sleep(0.1)

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code


@pytest.fixture
def start_demo(machine_infra_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., _Demo]]:
    started: list[_Demo] = []

    def start(*args: str) -> _Demo:
        started.append(_Demo(machine_infra_env, tmp_path, *args))
        return started[-1]

    yield start
    for demo in started:
        if demo.process.poll() is None:
            demo.process.kill()
            demo.process.wait()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupting_the_demo_leaves_no_process_behind(
    start_demo: Callable[..., _Demo], machine_infra_env: dict[str, str], signum: signal.Signals
) -> None:
    running_demo = start_demo()
    running_demo.wait_for_line("firing", timeout=180)
    assert processes_using(Path(machine_infra_env["ALERTS_DATA_DIR"]))  # the stack is up, Chromium too
    running_demo.process.send_signal(signum)
    assert running_demo.finish(timeout=60) == 130
    output = "".join(running_demo.lines)
    assert "interrupted" in output
    assert "stopped" in output.splitlines()[-1]
    assert processes_using(Path(machine_infra_env["ALERTS_DATA_DIR"])) == []


@pytest.mark.timeout(DEMO_TIMEOUT_SECONDS + 240)
def test_demo_stay_keeps_the_viewer_links_working_until_ctrl_c(
    start_demo: Callable[..., _Demo], machine_infra_env: dict[str, str]
) -> None:
    demo = start_demo("--stay")
    demo.wait_for_line("Press Ctrl-C to stop", timeout=DEMO_TIMEOUT_SECONDS + 120)
    links = re.findall(
        r"^\s+(premium|free)\s+(http://127\.0\.0\.1:\d+)/ui#token=(eyJ\S+)$",
        "".join(demo.lines),
        flags=re.MULTILINE,
    )
    assert [plan for plan, *_ in links] == ["premium", "free"]
    for plan, origin, token in links:
        assert httpx.get(f"{origin}/ui").status_code == 200
        # Which user the token is for; the service, not this test, checks its signature.
        user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
        bearer = {"authorization": f"Bearer {token}"}
        listed = httpx.get(f"{origin}/api/users/{user_id}/signals", headers=bearer)
        assert listed.status_code == 200
        assert len(listed.json()["signals"]) == sum(1 for alert in DEMO_ALERTS if alert.plan == plan)
    demo.process.send_signal(signal.SIGINT)
    assert demo.finish(timeout=60) == 0
    assert processes_using(Path(machine_infra_env["ALERTS_DATA_DIR"])) == []


@pytest.mark.timeout(EMBEDDED_DEMO_WALL_SECONDS + 30)
def test_demo_on_embedded_postgres_and_redis(tmp_path: Path) -> None:
    """What `make demo` runs: no database or Redis configured, so both start embedded under the data dir."""
    env = _demo_env(tmp_path / ".alerts")
    finished = subprocess.run(
        alerts_argv("demo", "--timeout", str(DEMO_TIMEOUT_SECONDS)),
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EMBEDDED_DEMO_WALL_SECONDS,
        check=False,
    )
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output
    assert "embedded PostgreSQL/Redis running" in finished.stdout
    check_demo_output(finished.stdout, tmp_path)
    assert (tmp_path / ".alerts" / "postgres").is_dir()
    assert processes_using(tmp_path / ".alerts") == []
