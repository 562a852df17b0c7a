"""User administration: creation, settings, webhook tokens and TradingView sessions."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from mesh import notification_preferences
from mesh.crypto import CookieCipher
from mesh.errors import AlreadyExistsError, InvalidArgumentError
from signal_service.captures.service import CaptureCoordinator
from signal_service.clock import next_month_start, utcnow
from signal_service.database import Database
from signal_service.ids import require_uuid
from signal_service.models import User, UserConfig
from signal_service.sessions.service import SessionChecks, record_renewal
from signal_service.settings import SignalSettings
from signal_service.users import allowlist, tokens
from signal_service.users.cookies import require_cookie_value
from signal_service.users.repository import UserRepository
from signal_service.visibility import no_such_user


@dataclass(frozen=True, slots=True)
class UserView:
    user: User
    config: UserConfig


@dataclass(frozen=True, slots=True)
class IssuedToken:
    view: UserView
    webhook_token: str
    webhook_url: str
    previous_token_expires_at: datetime | None = None


USER_UPDATABLE_FIELDS = frozenset(
    {
        "plan",
        "signals_quota",
        "webhook_enabled",
        "default_chart_id",
        "ip_allowlist",
        "require_tradingview_client_certificate",
        "notification_preferences",
    }
)


DEFAULT_USERS_PAGE = 100
MAX_USERS_PAGE = 500


def webhook_url(settings: SignalSettings, token: str) -> str:
    return f"{settings.external_url}/webhook/u/{token}"


class UserManager:
    def __init__(
        self,
        *,
        database: Database,
        settings: SignalSettings,
        cipher: CookieCipher,
        captures: CaptureCoordinator | None = None,
        sessions: SessionChecks | None = None,
        on_commit: Any = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._cipher = cipher
        # Renewal re-queues failed captures and waits for the new cookies' check when these are given.
        self._captures = captures
        self._sessions = sessions
        self._on_commit = on_commit or (lambda: None)

    async def create(
        self,
        *,
        external_id: str,
        plan: str,
        default_chart_id: str,
        signals_quota: int,
        ip_allowlist: Sequence[str],
        notification_preferences: dict[str, Any],
        require_tradingview_client_certificate: bool = False,
    ) -> IssuedToken:
        if plan not in self._settings.plan_limits:
            raise InvalidArgumentError(f"unknown plan {plan!r}", reason="INVALID_PLAN")
        if signals_quota < 0:
            raise InvalidArgumentError("signals_quota must not be negative", reason="INVALID_QUOTA")
        preferences, secrets_ciphertext = self._preferences(notification_preferences, None)
        token = tokens.generate_token()
        now = utcnow()
        # Columns with a server default (created_at, ...) are left to PostgreSQL.
        user = User(  # type: ignore[call-arg]
            id=uuid.uuid4(),
            external_id=external_id or None,
            plan=plan,
            webhook_token_hash=tokens.hash_token(token),
            webhook_enabled=True,
            signals_quota=signals_quota or self._settings.plan_limits[plan].signals_quota,
            signals_used=0,
            quota_reset_at=next_month_start(now),
            event_seq=0,
        )
        # Columns with a server default (created_at, ...) are left to PostgreSQL.
        config = UserConfig(  # type: ignore[call-arg]
            user_id=user.id,
            default_chart_id=default_chart_id or None,
            ip_allowlist=allowlist.normalise(ip_allowlist),
            require_tradingview_client_certificate=require_tradingview_client_certificate,
            notification_preferences=preferences,
            notification_secrets_ciphertext=secrets_ciphertext,
        )
        try:
            async with self._database.transaction() as session:
                await UserRepository(session).add(user, config)
        except IntegrityError as exc:
            raise AlreadyExistsError(
                "a user with this external_id exists", reason="EXTERNAL_ID_TAKEN"
            ) from exc
        view = await self.get(user_id=str(user.id))
        return IssuedToken(view=view, webhook_token=token, webhook_url=webhook_url(self._settings, token))

    async def get(
        self, *, user_id: str = "", external_id: str = "", owner: uuid.UUID | None = None
    ) -> UserView:
        """By id or external id; with `owner`, only that user (any other is "no such user")."""
        parsed = require_uuid(user_id, "user_id") if user_id else None
        if owner is not None and parsed is not None and parsed != owner:
            raise no_such_user()
        async with self._database.session() as session:
            repository = UserRepository(session)
            if parsed is not None:
                found = await repository.get(parsed)
            elif external_id:
                found = await repository.get_by_external_id(external_id, owner=owner)
            else:
                raise InvalidArgumentError("user_id or external_id is required", reason="MISSING_USER")
        if found is None:
            raise no_such_user()
        return UserView(*found)

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[UserView], str]:
        """A page of users in id order and the token of the next page ("" after the last)."""
        if page_size < 0 or page_size > MAX_USERS_PAGE:
            raise InvalidArgumentError(
                f"page_size must be between 0 and {MAX_USERS_PAGE}", reason="INVALID_PAGE_SIZE"
            )
        after = require_uuid(page_token, "page_token") if page_token else None
        limit = page_size or DEFAULT_USERS_PAGE
        async with self._database.session() as session:
            rows = await UserRepository(session).page(after, limit + 1)
        views = [UserView(*row) for row in rows[:limit]]
        return views, str(views[-1].user.id) if len(rows) > limit else ""

    async def update(self, user_id: str, values: dict[str, Any]) -> UserView:
        unknown = set(values) - USER_UPDATABLE_FIELDS
        if unknown:
            raise InvalidArgumentError(
                f"not updatable: {', '.join(sorted(unknown))}", reason="INVALID_UPDATE_MASK"
            )
        if not values:
            raise InvalidArgumentError("update_mask names no field", reason="INVALID_UPDATE_MASK")
        parsed_id = require_uuid(user_id, "user_id")
        user_values: dict[str, Any] = {}
        config_values: dict[str, Any] = {}
        if "plan" in values:
            if values["plan"] not in self._settings.plan_limits:
                raise InvalidArgumentError(f"unknown plan {values['plan']!r}", reason="INVALID_PLAN")
            user_values["plan"] = values["plan"]
            # A new plan brings its quota, unless the same update sets one explicitly.
            user_values["signals_quota"] = self._settings.plan_limits[values["plan"]].signals_quota
        if "signals_quota" in values:
            if values["signals_quota"] < 0:
                raise InvalidArgumentError("signals_quota must not be negative", reason="INVALID_QUOTA")
            user_values["signals_quota"] = values["signals_quota"]
        if "webhook_enabled" in values:
            user_values["webhook_enabled"] = bool(values["webhook_enabled"])
        if "default_chart_id" in values:
            config_values["default_chart_id"] = values["default_chart_id"] or None
        if "ip_allowlist" in values:
            config_values["ip_allowlist"] = allowlist.normalise(values["ip_allowlist"])
        if "require_tradingview_client_certificate" in values:
            config_values["require_tradingview_client_certificate"] = bool(
                values["require_tradingview_client_certificate"]
            )
        if "notification_preferences" in values:
            # Checked before any lock; checked again with the stored secrets under it.
            notification_preferences.parse(values["notification_preferences"])
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            if await repository.lock(parsed_id) is None:
                raise no_such_user()
            if "notification_preferences" in values:
                stored = await repository.notification_secrets_ciphertext(parsed_id)
                document, ciphertext = self._preferences(values["notification_preferences"], stored)
                config_values["notification_preferences"] = document
                config_values["notification_secrets_ciphertext"] = ciphertext
            if user_values:
                await repository.update_user(parsed_id, **user_values)
            if config_values:
                await repository.update_config(parsed_id, **config_values)
        return await self.get(user_id=user_id)

    def _preferences(
        self, document: dict[str, Any], stored_ciphertext: bytes | None
    ) -> tuple[dict[str, Any], bytes | None]:
        """The preferences to store (secrets redacted) and the ciphertext of their secrets."""
        parsed = notification_preferences.parse(document)
        stored = json.loads(self._cipher.decrypt(stored_ciphertext)) if stored_ciphertext else {}
        public, secrets = notification_preferences.split(parsed, stored)
        return public, self._cipher.encrypt(json.dumps(secrets).encode()) if secrets else None

    async def rotate_token(self, user_id: str, grace_period_seconds: int) -> IssuedToken:
        if grace_period_seconds < 0 or grace_period_seconds > 7 * 24 * 3600:
            raise InvalidArgumentError(
                "grace_period_seconds must be between 0 and 7 days", reason="INVALID_GRACE_PERIOD"
            )
        parsed_id = require_uuid(user_id, "user_id")
        token = tokens.generate_token()
        expires_at = utcnow() + timedelta(seconds=grace_period_seconds) if grace_period_seconds else None
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            current = await repository.lock(parsed_id)
            if current is None:
                raise no_such_user()
            await repository.update_user(
                parsed_id,
                webhook_token_hash=tokens.hash_token(token),
                previous_token_hash=current.webhook_token_hash if expires_at else None,
                previous_token_expires_at=expires_at,
            )
        return IssuedToken(
            view=await self.get(user_id=user_id),
            webhook_token=token,
            webhook_url=webhook_url(self._settings, token),
            previous_token_expires_at=expires_at,
        )

    async def set_tradingview_session(self, user_id: str, sessionid: str, sessionid_sign: str) -> UserView:
        require_cookie_value("sessionid", sessionid)
        require_cookie_value("sessionid_sign", sessionid_sign)
        parsed_id = require_uuid(user_id, "user_id")
        plaintext = json.dumps({"sessionid": sessionid, "sessionid_sign": sessionid_sign}).encode()
        ciphertext = self._cipher.encrypt(plaintext)
        now = utcnow()
        async with self._database.transaction() as session:
            repository = UserRepository(session)
            user = await repository.lock(parsed_id)
            if user is None:
                raise no_such_user()
            await repository.update_config(
                parsed_id,
                tv_session_ciphertext=ciphertext,
                tv_cookies_valid=None,
                tv_cookies_checked_at=None,
                tv_cookies_changed_at=now,
                tv_session_set_at=now,
                tv_check_requested_at=now,
                tv_check_claimed_at=None,
                tv_check_claimed_by=None,
            )
            # One check of the new cookies, and the captures the old ones failed, in this transaction.
            await record_renewal(session, parsed_id)
            if self._captures is not None:
                await self._captures.requeue_session_failures(session, parsed_id, user.plan)
        self._on_commit()
        if self._sessions is not None:
            await self._sessions.wait_for_first_check(parsed_id, now)
        return await self.get(user_id=user_id)
