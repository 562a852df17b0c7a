"""gRPC's fork handlers are off in every process of the composition root, set before gRPC is imported."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_alerts_turns_grpc_fork_handlers_off_before_grpc_loads() -> None:
    probe = (
        "import os, sys; import alerts; "
        "print(os.environ.get('GRPC_ENABLE_FORK_SUPPORT'), 'grpc' in sys.modules)"
    )
    environment = {name: value for name, value in os.environ.items() if name != "GRPC_ENABLE_FORK_SUPPORT"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=environment, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["0", "False"]


def test_the_test_processes_run_with_grpc_fork_handlers_off() -> None:
    assert os.environ.get("GRPC_ENABLE_FORK_SUPPORT") == "0"
