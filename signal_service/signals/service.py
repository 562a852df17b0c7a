"""Reading signals (pages, stats) and recording their outcomes (result, profit or loss, notes)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation

from mesh.errors import InvalidArgumentError
from signal_service.clock import utcnow
from signal_service.database import Database
from signal_service.events.repository import EventRepository
from signal_service.ids import require_uuid
from signal_service.models import EventType, SignalEvent, SignalResult
from signal_service.parsing import IndicatorCatalog
from signal_service.signals.repository import (
    SignalFilter,
    SignalPages,
    SignalRepository,
    SignalRow,
    UserStatsRow,
)
from signal_service.users.repository import UserRepository
from signal_service.visibility import no_such_signal, no_such_user

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20


@dataclass(frozen=True, slots=True)
class SignalPage:
    rows: list[SignalRow]
    next_page_token: str


def encode_page_token(row: SignalRow) -> str:
    raw = json.dumps([row.signal.created_at.isoformat(), str(row.signal.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = token + "=" * (-len(token) % 4)
        created_at, signal_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created_at), uuid.UUID(signal_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgumentError("invalid page_token", reason="INVALID_PAGE_TOKEN") from exc


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgumentError("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def require_storable_text(where: SignalFilter) -> None:
    """PostgreSQL text cannot hold NUL (stored strings lose theirs), so a filter holding one is refused as
    the caller's mistake rather than failing in the database."""
    for name in ("ticker", "indicator", "signal_type"):
        if "\x00" in (getattr(where, name) or ""):
            raise InvalidArgumentError(f"{name} must not contain NUL", reason=f"INVALID_{name.upper()}")


class SignalReader:
    def __init__(self, database: Database, catalog: IndicatorCatalog) -> None:
        self._database = database
        self._catalog = catalog

    async def get(self, signal_id: str, *, owner: uuid.UUID | None = None) -> SignalRow:
        """The signal; with `owner`, only if it is that user's (any other is "no such signal")."""
        parsed = require_uuid(signal_id, "signal_id")
        async with self._database.session() as session:
            row = await SignalRepository(session).get(parsed, owner=owner)
        if row is None:
            raise no_such_signal()
        return row

    async def list(self, where: SignalFilter, *, size: int, page_token: str) -> SignalPage:
        require_storable_text(where)
        limit = page_size(size)
        after = decode_page_token(page_token) if page_token else None
        async with self._database.connection() as connection:
            rows = await SignalPages(connection).matching(
                self._by_indicator_key(where), after=after, limit=limit + 1
            )
        next_token = encode_page_token(rows[limit - 1]) if len(rows) > limit else ""
        return SignalPage(rows=rows[:limit], next_page_token=next_token)

    def _by_indicator_key(self, where: SignalFilter) -> SignalFilter:
        """An indicator filter naming a catalog indicator, in any of its spellings, matches the catalog's
        key, so that signals which spelled it differently are found together; any other name matches the
        indicator as stored."""
        if where.indicator is None:
            return where
        spec = self._catalog.indicator_named(where.indicator)
        if spec is None:
            return where
        return replace(where, indicator=None, indicator_key=spec.name)

    async def stats(self, user_id: str) -> UserStats:
        parsed = require_uuid(user_id, "user_id")
        month_start = utcnow().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        async with self._database.session() as session:
            row = await SignalRepository(session).stats(parsed, month_start)
        if row is None:
            raise no_such_user()
        resolved = row.wins + row.losses
        return UserStats(
            user_id=str(parsed), counts=row, win_rate=row.wins / resolved * 100 if resolved else 0.0
        )


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    counts: UserStatsRow
    # wins / (wins + losses) * 100; 0 when nothing is resolved.
    win_rate: float


MAX_NOTES_CHARS = 10_000


# A profit or loss of 10^31 or more, or finer than 10^-30, is a client bug rather than a trade.
_PROFIT_LOSS_DIGITS = 30


def parse_profit_loss(value: str) -> Decimal | None:
    """The exact decimal the platform sent ("-12.50" stays -12.50); None for empty."""
    parsed = parse_decimal(value.strip(), "profit_loss")
    if parsed is None:
        return None
    exponent = parsed.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -_PROFIT_LOSS_DIGITS or (parsed != 0 and parsed.adjusted() > _PROFIT_LOSS_DIGITS):
        raise InvalidArgumentError("profit_loss is out of range", reason="INVALID_PROFIT_LOSS")
    return parsed


class SignalOutcomes:
    """The trader's verdict on a signal, recorded with an OUTCOME_UPDATED event in the same transaction."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def update(
        self,
        signal_id: str,
        *,
        result: SignalResult | None,
        profit_loss: str,
        notes: str,
        owner: uuid.UUID | None = None,
    ) -> SignalRow:
        """Replaces result, profit_loss and notes; with `owner`, only of that user's signals."""
        parsed = require_uuid(signal_id, "signal_id")
        if result is None:
            raise InvalidArgumentError("result is required", reason="INVALID_RESULT")
        amount = parse_profit_loss(profit_loss)
        if len(notes) > MAX_NOTES_CHARS:
            raise InvalidArgumentError(
                f"notes longer than {MAX_NOTES_CHARS} characters", reason="INVALID_NOTES"
            )
        async with self._database.transaction() as session:
            signals = SignalRepository(session)
            row = await signals.get(parsed, for_update=True, owner=owner)
            if row is None:
                raise no_such_signal()
            owner = row.signal.user_id
            await signals.update_signal(parsed, result=result, profit_loss=amount, notes=notes or None)
            # Signal row, then user row: the same lock order as captures, so the two never deadlock.
            seq = await UserRepository(session).next_event_seq(owner)
            await EventRepository(session).add(
                # Columns with a server default (created_at, ...) are left to PostgreSQL.
                SignalEvent(user_id=owner, seq=seq, type=EventType.OUTCOME_UPDATED, signal_id=parsed)  # type: ignore[call-arg]
            )
            updated = await signals.get(parsed)
            assert updated is not None
        return updated


def parse_decimal(value: str, what: str) -> Decimal | None:
    if not value:
        return None
    try:
        parsed = Decimal(value)
    except InvalidOperation as exc:
        raise InvalidArgumentError(
            f"{what} must be a decimal string", reason=f"INVALID_{what.upper()}"
        ) from exc
    if not parsed.is_finite():
        raise InvalidArgumentError(f"{what} must be finite", reason=f"INVALID_{what.upper()}")
    return parsed
