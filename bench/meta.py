"""What every result JSON records: the commit, the machine, its load, the settings and the command."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty_paths": len(git("status", "--porcelain").splitlines())}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def repository_relative(argument: str) -> str:
    """`argument` with the repository's absolute path taken off: results name no machine's directories."""
    return argument.replace(f"{ROOT}/", "").replace(str(ROOT), ".")


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran, as one would type it at the repository root."""
    return shlex.join(["python", *(repository_relative(argument) for argument in argv or sys.argv)])


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def record(settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "git": git_commit(),
        "machine": machine(),
        "load_average_at_start": load_average(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "command": command_line(),
    }
