"""Webhook intake: authenticates a webhook by its token, parses it and stores it with its capture job.

Each call is one unit of work: the ingest function writes the signal, its event, audit row and outbox
message in one transaction; messages for the broker are sent by the outbox relay after commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cachetools import TTLCache

from mesh.addresses import source_network
from mesh.coalescer import Coalescer
from mesh.errors import (
    AlertsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from mesh.logging import request_id_var
from mesh.queues import PLANS_BY_PRIORITY, capture_queue
from signal_service.audit.service import AuditWriter, summarised_refusal
from signal_service.captures.service import capture_job
from signal_service.clock import next_month_start, utcnow
from signal_service.database import Database, database_unreachable
from signal_service.ids import uuid7
from signal_service.intake.group_commit import GroupCommit
from signal_service.intake.ratelimit import RateLimiter
from signal_service.intake.repository import (
    AUDIT_BODY_LIMIT,
    WebhookIngest,
    WebhookRepository,
    WebhookUserRow,
    json_text,
)
from signal_service.models import AuditLog, ScreenshotStatus
from signal_service.parsing import IndicatorCatalog, ParsedAlert, parse_alert
from signal_service.rows import storable
from signal_service.settings import SignalSettings
from signal_service.users import allowlist, tokens

log = logging.getLogger(__name__)


# Not frozen, like WebhookIngest (intake/repository.py): built once per webhook and never changed.
@dataclass(slots=True)
class IngestCommand:
    webhook_token: str
    body: bytes
    received_at: datetime
    chart_id: str = ""
    content_type: str = ""
    source_ip: str = ""
    user_agent: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
    # What the caller received; more than len(body) when the edge cut an oversize body short.
    body_size: int = 0
    # Set when the edge already refused the call itself and only reports it for the audit log.
    edge_refusal: str = ""
    # The edge's word that Envoy verified TradingView's client certificate on this request's connection.
    tradingview_client_certificate_verified: bool = False


@dataclass(frozen=True, slots=True)
class IngestResult:
    signal_id: uuid.UUID
    screenshot_status: ScreenshotStatus
    estimated_wait_seconds: int
    duplicate: bool


class QueueBacklog:
    """The latest known length of each capture queue, refreshed by the outbox relay."""

    def __init__(self) -> None:
        self.lengths: dict[str, int] = {}

    def ahead_of(self, plan: str) -> int:
        """Jobs a new job of this plan waits behind: its own queue and every higher-priority one."""
        ahead = 0
        for candidate in PLANS_BY_PRIORITY:
            ahead += self.lengths.get(capture_queue(candidate), 0)
            if candidate == plan:
                break
        return ahead


def _is_replay(command: IngestCommand) -> bool:
    """Only the edge's spool replayer sets an idempotency key (see IngestWebhookRequest).

    Replays skip the rate limits: the edge took the request in while it could not be stored (or shed it
    under a burst), and a spool draining at full speed would otherwise be refused for its replay rate, not
    the user's sending rate. Quota, allowlist and every other check still apply.
    """
    return bool(command.idempotency_key)


@dataclass(frozen=True, slots=True)
class WebhookUser:
    """What intake reads about a token's user before its transaction; the transaction re-verifies it."""

    id: uuid.UUID
    plan: str
    webhook_enabled: bool
    ip_allowlist: tuple[str, ...]
    require_tradingview_client_certificate: bool


class WebhookUserCache:
    """Recent token -> user lookups, so that a burst of one user's alerts reads the user once.

    Only users found are kept, keyed by the token's hash, and a hit is never trusted to write: the
    intake statement re-checks token, plan, enabled flag, allowlist and client certificate requirement
    under the user's row lock and
    answers "stale" when any changed, so a rotated token or a disabled webhook takes effect at once.
    Nor is a hit trusted to refuse: a refusal is decided on a fresh read.
    """

    def __init__(
        self, ttl_seconds: float, max_entries: int = 100_000, timer: Callable[[], float] = time.monotonic
    ) -> None:
        # Full, it drops the least recently used lookup (expired ones first), never everything at once.
        self._entries: TTLCache[str, WebhookUser] | None = (
            TTLCache(maxsize=max_entries, ttl=ttl_seconds, timer=timer) if ttl_seconds > 0 else None
        )

    def get(self, token_hash: str) -> WebhookUser | None:
        return self._entries.get(token_hash) if self._entries is not None else None

    def put(self, token_hash: str, user: WebhookUser) -> None:
        if self._entries is not None:
            self._entries[token_hash] = user

    def forget(self, token_hash: str) -> None:
        if self._entries is not None:
            self._entries.pop(token_hash, None)


# A user changed between reading it and storing its alert this many times in a row: let the edge retry.
_STALE_ATTEMPTS = 3


# Refusals the edge decides on its own and reports for the audit log (IngestWebhookRequest.edge_refusal).
EDGE_REFUSALS = frozenset(
    {"BODY_TIMEOUT", "HEADERS_TOO_LARGE", "INCOMPLETE_BODY", "MALFORMED_TOKEN", "INVALID_CHART"}
)

# Rate and quota refusals come in floods by nature; like every refusal of a caller that showed no user's
# token, they are audited summarised: no body, and repeats merged per minute (audit/service.py).
_SUMMARISED_REASONS = frozenset({"RATE_LIMITED", "QUOTA_EXCEEDED"})


class WebhookIngestor:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        catalog: IndicatorCatalog,
        rate_limiter: RateLimiter,
        audit: AuditWriter,
        backlog: QueueBacklog,
        on_commit: Any = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._catalog = catalog
        self._rate_limiter = rate_limiter
        self._audit = audit
        self._backlog = backlog
        self._on_commit = on_commit or (lambda: None)
        self._users = WebhookUserCache(settings.webhook_user_cache_seconds)
        # A burst of users not cached (a candle close) reads them in a few statements, not one each.
        self._user_reads: Coalescer[str, WebhookUserRow | None] = Coalescer(
            self._read_users, max_batch=500, max_inflight=2, whole_turn=True
        )
        self._group_commit = GroupCommit(
            database,
            max_batch=settings.ingest_group_commit_max_batch,
            max_inflight=settings.ingest_group_commit_max_inflight,
        )
        self._relay_kick_pending = False

    async def ingest(self, command: IngestCommand) -> IngestResult:
        started = time.perf_counter()
        body_sha256 = hashlib.sha256(command.body).digest()
        user_id: uuid.UUID | None = None
        try:
            if command.edge_refusal:
                user_id = self._known_user_id(command.webhook_token)
                reason = (
                    command.edge_refusal if command.edge_refusal in EDGE_REFUSALS else "INVALID_EDGE_REFUSAL"
                )
                raise InvalidArgumentError("refused at the edge", reason=reason)
            if not tokens.looks_like_token(command.webhook_token):
                await self._limit_unknown_source(command)
                raise NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
            token_hash = tokens.hash_token(command.webhook_token)
            user = self._users.get(token_hash)
            if user is not None and not self._admits(user, command):
                user = None
            if user is None:
                user = await self._read_user(token_hash, command)
            user_id = user.id
            self._check_admission(user, command)
            parsed = parse_alert(
                command.body,
                content_type=command.content_type,
                query=command.query,
                received_at=command.received_at,
                catalog=self._catalog,
            )
            for _attempt in range(_STALE_ATTEMPTS):
                result = await self._store(command, token_hash, user, parsed, body_sha256, started)
                if result is not None:
                    return result
                # The user changed since it was read (token, plan, allowlist, certificate rule, disabled).
                self._users.forget(token_hash)
                user = await self._read_user(token_hash, command)
                self._check_admission(user, command)
            raise UnavailableError("the user is being changed; try again", reason="USER_CHANGED")
        except Exception as exc:
            if database_unreachable(exc):
                # UNAVAILABLE makes the edge spool the call and replay it later; the replay is audited.
                raise UnavailableError("database unavailable", reason="DATABASE_UNAVAILABLE") from exc
            reason = getattr(exc, "reason", "") or "INTERNAL_ERROR"
            self._audit.record(
                self._audit_row(command, body_sha256, started, user_id, None, "refused", reason)
            )
            raise

    def _known_user_id(self, token: str) -> uuid.UUID | None:
        """The caller's user for an edge refusal's audit row, when already cached: an edge refusal (a
        header flood, a trickled body) never costs a database read."""
        if not tokens.looks_like_token(token):
            return None
        cached = self._users.get(tokens.hash_token(token))
        return cached.id if cached is not None else None

    async def _read_users(self, token_hashes: list[str]) -> list[WebhookUserRow | None]:
        async with self._database.connection() as connection:
            found = await WebhookRepository(connection).find_users(token_hashes, utcnow())
        return [found.get(token_hash) for token_hash in token_hashes]

    async def _read_user(self, token_hash: str, command: IngestCommand) -> WebhookUser:
        found = await self._user_reads.submit(token_hash)
        if found is None:
            await self._limit_unknown_source(command)
            raise NotFoundError("unknown webhook", reason="UNKNOWN_TOKEN")
        read = WebhookUser(
            id=found.id,
            plan=found.plan,
            webhook_enabled=found.webhook_enabled,
            ip_allowlist=tuple(found.ip_allowlist),
            require_tradingview_client_certificate=found.require_tradingview_client_certificate,
        )
        self._users.put(token_hash, read)
        return read

    async def _limit_unknown_source(self, command: IngestCommand) -> None:
        # Replays keep this limit: a spool filled with junk tokens must not buy them unlimited lookups.
        # An IPv6 source is its /64, which one client rotates through freely.
        decision = await self._rate_limiter.acquire(
            f"unknown:{source_network(command.source_ip)}",
            rate_per_second=self._settings.unknown_token_rate_per_second,
            burst=self._settings.unknown_token_burst,
        )
        if not decision.allowed:
            raise ResourceExhaustedError(
                "too many requests", reason="RATE_LIMITED", retry_after_seconds=decision.retry_after_seconds
            )

    def _admits(self, user: WebhookUser, command: IngestCommand) -> bool:
        try:
            self._check_admission(user, command)
        except AlertsError:
            return False
        return True

    def _check_admission(self, user: WebhookUser, command: IngestCommand) -> None:
        if not user.webhook_enabled:
            raise PermissionDeniedError("webhook disabled", reason="WEBHOOK_DISABLED")
        if not allowlist.allows(user.ip_allowlist, command.source_ip):
            raise PermissionDeniedError("source address not allowed", reason="IP_NOT_ALLOWED")
        if (
            user.require_tradingview_client_certificate
            and not command.tradingview_client_certificate_verified
        ):
            raise PermissionDeniedError(
                "TradingView's client certificate is required", reason="CLIENT_CERTIFICATE_REQUIRED"
            )
        if max(command.body_size, len(command.body)) > self._settings.max_body_bytes:
            raise InvalidArgumentError(
                f"body larger than {self._settings.max_body_bytes} bytes", reason="BODY_TOO_LARGE"
            )

    async def _store(
        self,
        command: IngestCommand,
        token_hash: str,
        user: WebhookUser,
        parsed: ParsedAlert,
        body_sha256: bytes,
        started: float,
    ) -> IngestResult | None:
        """Stores the alert in one statement and transaction; None when `user` no longer matches the row."""
        now = utcnow()
        window = timedelta(seconds=self._settings.dedupe_window_seconds)
        signal_id = uuid7()
        capturable = parsed.ticker is not None
        limits = self._settings.plan_limits[user.plan]
        status = ScreenshotStatus.PENDING if capturable else ScreenshotStatus.SKIPPED
        job = capture_job(signal_id, user.plan) if capturable else None
        row = WebhookIngest(
            user_id=user.id,
            token_hash=token_hash,
            plan=user.plan,
            ip_allowlist=user.ip_allowlist,
            require_tradingview_client_certificate=user.require_tradingview_client_certificate,
            now=now,
            next_quota_reset=next_month_start(now),
            idempotency_key=command.idempotency_key or None,
            body_sha256=body_sha256,
            # Both ways around received_at: a replayed request is older than signals stored since, and only
            # those within the window are the same alert.
            dedupe_since=command.received_at - window,
            dedupe_until=command.received_at + window,
            signal_id=signal_id,
            chart_id=storable(command.chart_id),
            indicator=storable(parsed.indicator),
            indicator_key=storable(parsed.indicator_key),
            ticker=storable(parsed.ticker),
            exchange=storable(parsed.exchange),
            symbol=storable(parsed.symbol),
            price=parsed.price,
            signal_type=storable(parsed.signal_type),
            interval=storable(parsed.interval),
            alert_time=parsed.alert_time,
            bar_time=parsed.bar_time,
            fired_at=parsed.fired_at,
            delayed_feed=parsed.delayed_feed,
            parse_status=str(parsed.status),
            parse_problems=json_text(list(parsed.problems)),
            extra=json_text(parsed.extra),
            raw_body=command.body,
            content_type=storable(command.content_type) or None,
            source_ip=storable(command.source_ip) or None,
            received_at=command.received_at,
            screenshot_status=status,
            outbox_queue=job.queue_name if job else None,
            outbox_actor=job.actor_name if job else None,
            outbox_args=json.dumps(job.args) if job else None,
            outbox_options=json.dumps(job.options) if job else None,
            request_id=request_id_var.get() or None,
            user_agent=storable(command.user_agent[:512]) or None,
            latency_ms=(time.perf_counter() - started) * 1000,
            body_size=max(command.body_size, len(command.body)),
            rate_interval=None if _is_replay(command) else timedelta(seconds=1 / limits.rate_per_second),
            rate_burst=limits.rate_burst,
        )
        stored = await self._group_commit.ingest(row)
        if stored.outcome == "stale":
            return None
        if stored.outcome == "rate_limited":
            raise ResourceExhaustedError(
                "too many webhooks; slow down",
                reason="RATE_LIMITED",
                retry_after_seconds=stored.retry_after_seconds,
            )
        if stored.outcome == "quota_exceeded":
            assert stored.quota_resets_at is not None
            raise ResourceExhaustedError(
                "monthly signal quota exhausted",
                reason="QUOTA_EXCEEDED",
                metadata={"quota": str(stored.quota), "resets_at": stored.quota_resets_at.isoformat()},
                retry_after_seconds=(stored.quota_resets_at - now).total_seconds(),
            )
        assert stored.signal_id is not None
        assert stored.screenshot_status is not None
        duplicate = stored.outcome == "duplicate"
        if not duplicate and job is not None:
            self._kick_relay()
        status = ScreenshotStatus(stored.screenshot_status)
        pending = status == ScreenshotStatus.PENDING
        return IngestResult(
            signal_id=stored.signal_id,
            screenshot_status=status,
            estimated_wait_seconds=self._estimate_wait(user.plan) if pending else 0,
            duplicate=duplicate,
        )

    def _kick_relay(self) -> None:
        """Wakes the outbox relay for the capture job just committed, once per short window: under load a
        relay pass per webhook costs more than the webhook, while one per window sends them all together."""
        if self._relay_kick_pending:
            return
        self._relay_kick_pending = True
        asyncio.get_running_loop().call_later(self._settings.outbox_kick_delay_seconds, self._send_kick)

    def _send_kick(self) -> None:
        self._relay_kick_pending = False
        self._on_commit()

    def _estimate_wait(self, plan: str) -> int:
        per_capture = self._settings.capture_seconds_estimate
        parallel = max(1, self._settings.capture_parallelism)
        return math.ceil(per_capture * (1 + self._backlog.ahead_of(plan) / parallel))

    @staticmethod
    def _audit_row(
        command: IngestCommand,
        body_sha256: bytes,
        started: float,
        user_id: uuid.UUID | None,
        signal_id: uuid.UUID | None,
        outcome: str,
        reason: str,
    ) -> AuditLog:
        if user_id is None or reason in _SUMMARISED_REASONS:
            return summarised_refusal(
                created_at=command.received_at,
                user_id=user_id,
                source=source_network(command.source_ip) if command.source_ip else None,
                reason=reason,
                request_id=request_id_var.get() or None,
                user_agent=command.user_agent[:512] or None,
                latency_ms=(time.perf_counter() - started) * 1000,
                body_sha256=body_sha256.hex(),
                body_size=max(command.body_size, len(command.body)),
                content_type=command.content_type or None,
            )
        return AuditLog(
            created_at=command.received_at,
            user_id=user_id,
            signal_id=signal_id,
            request_id=request_id_var.get() or None,
            source_ip=command.source_ip or None,
            user_agent=command.user_agent[:512] or None,
            outcome=outcome,
            reason=reason or None,
            latency_ms=(time.perf_counter() - started) * 1000,
            body_sha256=body_sha256.hex(),
            body=command.body[:AUDIT_BODY_LIMIT],
            body_size=max(command.body_size, len(command.body)),
            content_type=command.content_type or None,
        )
