"""The edge's durable spool: webhooks the signal service could not take now are kept and replayed later.

TradingView does not queue alerts: one refused or timed out after its last re-send is gone. So when the
signal service is unreachable, or answers UNAVAILABLE or DEADLINE_EXCEEDED, the edge appends the whole
IngestWebhookRequest (token, chart, query, body, content type, source IP, user agent, received_at) with a
fresh idempotency key to this spool, answers 202, and a background replayer sends the spooled requests
in order once the signal service answers again.

Storage is SQLite in WAL mode with ``synchronous=FULL``: every append is committed and fsync'd before the
202 goes out, WAL frames carry checksums so a torn write at power loss is discarded rather than read
back, and deleting replayed rows reuses their pages. A hand-rolled segment file would need the same
pieces (CRC'd length-prefixed records, a separate fsync'd acknowledgement offset, compaction) with none
of SQLite's testing behind them. One database file serves every edge worker process on the host
(SQLite serialises their writes; ids give one global order), and an exclusive ``flock`` elects the
one process that replays.

Records are the serialised protobuf request: the proto's field numbers never change (buf breaking guards
them), so a spool written by one release replays under the next.

Replay is idempotent: the signal service returns the first signal for a repeated idempotency key, and a
request that got through just before a timeout (so the edge spooled it anyway) is caught by its dedupe
window, since the spooled request keeps its original received_at. The signal service also treats a call
carrying an idempotency key as a replay and skips the per-user rate limit for it: the request was taken
in when the limit could not be checked, and a spool draining at full speed after an outage would
otherwise be refused for its own replay rate rather than the user's sending rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc
from litestar import Litestar
from prometheus_client import Counter, Gauge

from apidevs.alerts.v1 import signal_service_pb2
from mesh.coalescer import Coalescer
from mesh.errors import Failure, classify_failure, from_rpc_error
from mesh.logging import request_id_var
from mesh.loops import BackgroundLoop

log = logging.getLogger(__name__)

_Result = TypeVar("_Result")

SPOOL_BYTES = Gauge("alerts_spool_bytes", "Bytes of webhook requests waiting in the edge spool")
SPOOL_PENDING = Gauge("alerts_spool_pending", "Webhook requests waiting in the edge spool")
SPOOL_REPLAYED = Counter(
    "alerts_spool_replayed_total",
    "Spooled webhook requests removed after a definitive answer, by outcome",
    ["outcome"],
)

DATABASE_NAME = "webhooks.sqlite3"
_LEADER_LOCK_NAME = "replay.lock"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS spooled_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    request BLOB NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS spool_totals (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 0),
    bytes INTEGER NOT NULL,
    pending INTEGER NOT NULL
);
INSERT OR IGNORE INTO spool_totals VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS spooled_requests_added AFTER INSERT ON spooled_requests BEGIN
    UPDATE spool_totals SET bytes = bytes + NEW.size, pending = pending + 1;
END;
CREATE TRIGGER IF NOT EXISTS spooled_requests_removed AFTER DELETE ON spooled_requests BEGIN
    UPDATE spool_totals SET bytes = bytes - OLD.size, pending = pending - 1;
END;
"""


# The spool's files hold webhook tokens (credentials) until replayed: only the edge's own user reads them.
_FILE_MODE = 0o600
_DIRECTORY_MODE = 0o700
_SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm", "-journal")


class SpoolFullError(Exception):
    """The spool holds its maximum size, or this source's share of it, or cannot be written at all: the
    caller answers 503."""


@dataclass(frozen=True, slots=True)
class SpooledRequest:
    id: int
    request_id: str
    request: signal_service_pb2.IngestWebhookRequest


@dataclass(frozen=True, slots=True)
class SpoolTotals:
    pending: int
    bytes: int


class WebhookSpool:
    """A durable FIFO of IngestWebhookRequests, shared by every edge process on the host.

    SQLite calls block, so they run on one thread of the spool's own; the event loop never waits on disk.
    """

    def __init__(self, directory: Path, *, max_bytes: int, max_bytes_per_source: int | None = None) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        # One source (an IPv4 address, an IPv6 /64) never takes more than this, so junk from a few sources
        # cannot fill the room real alerts need while the signal service is away.
        self.max_bytes_per_source = max_bytes_per_source or max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-spool")
        self._connection: sqlite3.Connection | None = None
        # Appends made while one is being written share the next transaction, and its one fsync.
        self._appends: Coalescer[tuple[str, str, bytes], SpoolTotals] = Coalescer(
            self._append_all, max_batch=500
        )

    @property
    def path(self) -> Path:
        return self.directory / DATABASE_NAME

    async def open(self) -> None:
        await self._run(self._open)
        self.publish(await self.totals())

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def append(
        self, request: signal_service_pb2.IngestWebhookRequest, *, request_id: str, source: str = ""
    ) -> signal_service_pb2.IngestWebhookRequest:
        """Stores `request` durably under a fresh idempotency key and returns what was stored; `source` is
        whom its size counts against (see mesh.addresses.source_network).

        Raises SpoolFullError when the spool or the source's share is at its limit, or cannot be written.
        """
        spooled = signal_service_pb2.IngestWebhookRequest()
        spooled.CopyFrom(request)
        spooled.idempotency_key = str(uuid.uuid4())
        totals = await self._appends.submit((request_id, source, spooled.SerializeToString()))
        self.publish(totals)
        return spooled

    async def _append_all(self, records: list[tuple[str, str, bytes]]) -> list[SpoolTotals | SpoolFullError]:
        try:
            return await self._run(self._insert, records)
        except (sqlite3.Error, OSError) as exc:
            return [SpoolFullError(f"the spool cannot be written: {exc}") for _ in records]

    async def oldest(self, limit: int) -> list[SpooledRequest]:
        rows = await self._run(self._select_oldest, limit)
        requests = []
        for row_id, request_id, payload in rows:
            request = signal_service_pb2.IngestWebhookRequest()
            request.ParseFromString(payload)
            requests.append(SpooledRequest(id=row_id, request_id=request_id, request=request))
        return requests

    async def remove(self, spooled_id: int) -> None:
        self.publish(await self._run(self._delete, spooled_id))

    async def totals(self) -> SpoolTotals:
        return await self._run(self._read_totals)

    @staticmethod
    def publish(totals: SpoolTotals) -> None:
        SPOOL_BYTES.set(totals.bytes)
        SPOOL_PENDING.set(totals.pending)

    async def _run(self, function: Callable[..., _Result], *args: Any) -> _Result:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    # --- on the spool thread ------------------------------------------------------------------------

    def _open(self) -> None:
        self.directory.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
        self.directory.chmod(_DIRECTORY_MODE)
        # SQLite creates its -wal and -shm files with the main file's mode; create that one 0600 first.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, _FILE_MODE))
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 10000")
        # Deleted rows (replayed tokens and bodies) are overwritten with zeros, not left in free pages.
        connection.execute("PRAGMA secure_delete = ON")
        connection.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit is on disk (WAL fsync'd) before append returns and the edge answers 202.
        connection.execute("PRAGMA synchronous = FULL")
        connection.executescript(_SCHEMA)
        columns = {row[1] for row in connection.execute("PRAGMA table_info(spooled_requests)")}
        if "source" not in columns:
            # A spool written by a release before per-source limits: its records count as no one's.
            connection.execute("ALTER TABLE spooled_requests ADD COLUMN source TEXT NOT NULL DEFAULT ''")
        connection.execute("CREATE INDEX IF NOT EXISTS spooled_requests_source ON spooled_requests (source)")
        self._restrict_files()
        self._connection = connection

    def _restrict_files(self) -> None:
        """0600 on every file of the database, including ones an older release created 0644."""
        for suffix in _SQLITE_FILE_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").chmod(_FILE_MODE)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise sqlite3.ProgrammingError("the spool is not open")
        return self._connection

    def _insert(self, records: list[tuple[str, str, bytes]]) -> list[SpoolTotals | SpoolFullError]:
        """Appends in one transaction: every record that fits is written, the rest are refused."""
        db = self._db()
        # IMMEDIATE takes the write lock before the size checks, so concurrent edge processes cannot
        # both pass them and overfill the spool.
        db.execute("BEGIN IMMEDIATE")
        try:
            (stored,) = db.execute("SELECT bytes FROM spool_totals").fetchone()
            stored_by_source: dict[str, int] = {}
            outcomes: list[str | None] = []
            for request_id, source, payload in records:
                if source not in stored_by_source:
                    stored_by_source[source] = db.execute(
                        "SELECT COALESCE(SUM(size), 0) FROM spooled_requests WHERE source = ?", (source,)
                    ).fetchone()[0]
                size = len(payload)
                if stored + size > self.max_bytes:
                    outcomes.append(f"the spool holds {stored} of {self.max_bytes} bytes")
                elif stored_by_source[source] + size > self.max_bytes_per_source:
                    outcomes.append(f"the spool holds {self.max_bytes_per_source} bytes from this source")
                else:
                    outcomes.append(None)
                    stored += size
                    stored_by_source[source] += size
                    db.execute(
                        "INSERT INTO spooled_requests (request_id, size, request, source)"
                        " VALUES (?, ?, ?, ?)",
                        (request_id, size, payload, source),
                    )
            totals = self._read_totals()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [totals if refusal is None else SpoolFullError(refusal) for refusal in outcomes]

    def _select_oldest(self, limit: int) -> list[tuple[int, str, bytes]]:
        statement = "SELECT id, request_id, request FROM spooled_requests ORDER BY id LIMIT ?"
        return list(self._db().execute(statement, (limit,)))

    def _delete(self, spooled_id: int) -> SpoolTotals:
        db = self._db()
        db.execute("DELETE FROM spooled_requests WHERE id = ?", (spooled_id,))
        totals = self._read_totals()
        if totals.pending == 0:
            # Drained: fold the WAL (which still holds every replayed request's frames, tokens included)
            # into the database, whose deleted rows secure_delete zeroed, and cut the WAL to nothing.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return totals

    def _read_totals(self) -> SpoolTotals:
        pending, stored = self._db().execute("SELECT pending, bytes FROM spool_totals").fetchone()
        return SpoolTotals(pending=pending, bytes=stored)


ReplaySender = Callable[[signal_service_pb2.IngestWebhookRequest], Awaitable[object]]


def settles_replay(exc: grpc.aio.AioRpcError) -> bool:
    """Whether a failed replay is a definitive refusal (drop the record) rather than "try again later".

    A replay skips the user's rate limits (it carries an idempotency key), so RATE_LIMITED on a replay is
    the unknown-token limit of its source: the token would be refused again, and keeping the record at the
    head of the spool would hold every real alert behind it. UNAUTHENTICATED, and PERMISSION_DENIED for the
    key's role, are a misconfigured key, which an operator fixes: keep the alert.
    """
    return classify_failure(from_rpc_error(exc)) is Failure.REFUSED


class SpoolReplayer:
    """Sends spooled requests to the signal service, oldest first, one at a time.

    A record is removed only after a definitive answer: success (a new signal or the earlier one for its
    idempotency key), or a refusal that would be repeated. Anything else keeps the record at the head of
    the spool and waits with backoff (mesh.loops), so order is kept. Only the process holding the leader
    lock replays; the others refresh the gauges and take over when the leader exits.
    """

    def __init__(
        self,
        spool: WebhookSpool,
        send: ReplaySender,
        *,
        poll_seconds: float = 1.0,
        min_backoff_seconds: float = 0.25,
        max_backoff_seconds: float = 5.0,
        batch_size: int = 64,
    ) -> None:
        self._spool = spool
        self._send = send
        self._batch_size = batch_size
        self._loop = BackgroundLoop(
            "spool-replayer",
            self._pass,
            interval_seconds=poll_seconds,
            min_backoff_seconds=min_backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            expected_errors=(grpc.aio.AioRpcError,),
        )
        self._lock_file: IO[bytes] | None = None

    def kick(self) -> None:
        """Called after an append: the leader looks at the spool now rather than at its next poll."""
        self._loop.wake()

    def signal_service_answered(self) -> None:
        """Called when a webhook got through: a leader backing off after failed replays replays now, so
        the spool drains as soon as the signal service is back rather than at the end of its backoff."""
        self._loop.resume()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    async def replay_once(self) -> int:
        """Sends spooled requests until the spool is empty or one is not settled; returns how many were."""
        settled = 0
        while batch := await self._spool.oldest(self._batch_size):
            for spooled in batch:
                if not await self._replay(spooled):
                    return settled
                settled += 1
        return settled

    async def _replay(self, spooled: SpooledRequest) -> bool:
        request_id_var.set(spooled.request_id)
        try:
            await self._send(spooled.request)
        except grpc.aio.AioRpcError as exc:
            if not settles_replay(exc):
                raise
            log.warning(
                "spooled webhook refused on replay",
                extra={
                    "spooled_id": spooled.id,
                    "code": exc.code().name,
                    "reason": from_rpc_error(exc).reason,
                },
            )
            outcome = "refused"
        else:
            outcome = "accepted"
        await self._spool.remove(spooled.id)
        SPOOL_REPLAYED.labels(outcome).inc()
        return True

    async def _pass(self) -> None:
        """One look at the spool: the leader replays it (an unsettled answer raises, and the loop backs
        off with the record still at the head); the others refresh the gauges."""
        if self._lead():
            await self.replay_once()
        else:
            self._spool.publish(await self._spool.totals())

    def _lead(self) -> bool:
        """Takes (or keeps) the host-wide replay lock; the OS releases it when this process exits."""
        if self._lock_file is not None:
            return True
        descriptor = os.open(
            self._spool.directory / _LEADER_LOCK_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, _FILE_MODE
        )
        lock_file = open(descriptor, "ab")  # noqa: SIM115 (held while leading)
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.close()
            return False
        lock_file.write(f"{os.getpid()}\n".encode())
        self._lock_file = lock_file
        return True


@contextlib.asynccontextmanager
async def webhook_spool(app: Litestar) -> AsyncIterator[None]:
    """Litestar lifespan: opens the spool and runs its replayer; after the channels lifespan (needs stubs)."""
    settings = app.state.settings
    spool = WebhookSpool(
        settings.data_dir / "spool",
        max_bytes=settings.spool_max_bytes,
        max_bytes_per_source=settings.spool_max_bytes_per_source,
    )
    await spool.open()

    async def send(request: signal_service_pb2.IngestWebhookRequest) -> object:
        return await app.state.signal_stub.IngestWebhook(
            request, timeout=settings.spool_replay_timeout_seconds
        )

    replayer = SpoolReplayer(spool, send, max_backoff_seconds=settings.spool_replay_max_backoff_seconds)
    app.state.spool = spool
    app.state.spool_replayer = replayer
    replayer.start()
    try:
        yield
    finally:
        await replayer.stop()
        await spool.close()
