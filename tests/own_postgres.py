"""A PostgreSQL server of a test's own, on a free loopback port, that the test may crash and restart.

The machine's shared server is never stopped: other test sessions use it. The binaries are the ones the
`pgserver` package ships (a project dependency), so this works from a fresh clone. initdb and postgres
refuse to run as root; as root they run as pgserver's own system user, as `alerts dev` does. Its files
live in a directory of its own under the system's temporary directory, not pytest's: pytest makes its
base directory private to the user running it whenever a session starts, which would lock a server
running as another user out of its own files mid-test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pgserver
import psutil
from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

from alerts.processes import free_port

_SYSTEM_USER = "pgserver"
_START_TIMEOUT_SECONDS = 60


class OwnPostgres:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pgdata = directory / "pgdata"
        self.port = free_port()
        self._user = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """postgresql+asyncpg URL of the `postgres` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self._init()
        # Reachable over TCP only, on its own port; the socket directory is its own too.
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory}"
        self._pg_ctl(["-w", "-t", str(_START_TIMEOUT_SECONDS), "-o", options, "-l", str(self._log), "start"])

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pg_ctl(["-w", "-m", "fast", "stop"])

    def crash(self, how: str) -> None:
        """Takes the server away as an outage would: `kill` SIGKILLs the postmaster and every backend (a
        host or OOM kill: connections drop without a word), `immediate` and `fast` are pg_ctl's shutdown
        modes (backends tell their clients 57P01 and exit, without or with a clean rollback)."""
        if how == "kill":
            postmaster = psutil.Process(self._postmaster_pid())
            processes = [postmaster, *postmaster.children(recursive=True)]
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.send_signal(signal.SIGKILL)
            psutil.wait_procs(processes, timeout=30)
            # The next postmaster refuses to start while the old one's pid file names a live process.
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            return
        if how not in ("immediate", "fast"):
            raise ValueError(f"unknown way to crash PostgreSQL: {how}")
        self._pg_ctl(["-w", "-m", how, "stop"])

    @property
    def _log(self) -> Path:
        return self.directory / "postgres.log"

    def _postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])

    def _init(self) -> None:
        self.pgdata.mkdir(parents=True)
        if self._user is not None:
            entry = ensure_user_exists(self._user)
            assert entry is not None
            ensure_prefix_permissions(self.directory)
            for path in (self.directory, self.pgdata):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        pgserver.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata, **self._run_as()
        )

    def _pg_ctl(self, args: list[str]) -> None:
        pgserver.pg_ctl(args, pgdata=self.pgdata, timeout=_START_TIMEOUT_SECONDS + 10, **self._run_as())

    def _run_as(self) -> dict[str, object]:
        """subprocess.run arguments for the server's user: its group too, and none of root's."""
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}


@contextlib.contextmanager
def own_postgres() -> Iterator[OwnPostgres]:
    """A started server, stopped and deleted afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="alerts-own-postgres-"))
    try:
        server = OwnPostgres(directory)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def wait_until_accepting(server: OwnPostgres, timeout_seconds: float = 30.0) -> None:
    """Waits for a restarted server to take connections (pg_ctl -w returns once it does, but a caller
    that restarted it in the background may need this)."""
    import socket

    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"PostgreSQL on port {server.port} did not come back")
