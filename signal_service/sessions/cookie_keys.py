"""Cookie key rotation: re-encrypts every stored TradingView session and notification secret under the
newest configured key.

Rotation is: prepend the new key to ALERTS_COOKIE_KEYS (every process then encrypts with it and still
decrypts with the old one), run `alerts keys rotate`, then drop the old key. Running it twice is harmless:
rows already under the newest key are left alone.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from mesh.crypto import CookieCipher, CookieCipherError
from signal_service.database import Database
from signal_service.users.repository import UserRepository

log = logging.getLogger(__name__)


@dataclass(slots=True)
class KeyRotationReport:
    key_id: str
    examined: int = 0
    reencrypted: int = 0
    # Sessions no configured key opens; they are left untouched.
    unreadable: list[uuid.UUID] = field(default_factory=list)
    # The same for the notification secrets (webhook secret, Discord URL).
    secrets_examined: int = 0
    secrets_reencrypted: int = 0
    secrets_unreadable: list[uuid.UUID] = field(default_factory=list)


async def reencrypt_sessions(
    database: Database, cipher: CookieCipher, *, batch_size: int = 500
) -> KeyRotationReport:
    """Walks user_config in user id order, one transaction per batch, rows locked while rewritten: the
    TradingView sessions, then the notification secrets (counted in the same report)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = KeyRotationReport(key_id=cipher.primary_key_id)
    for column in ("tv_session_ciphertext", "notification_secrets_ciphertext"):
        await _reencrypt_column(database, cipher, column, batch_size, report)
    return report


async def _reencrypt_column(
    database: Database, cipher: CookieCipher, column: str, batch_size: int, report: KeyRotationReport
) -> None:
    after: uuid.UUID | None = None
    while True:
        async with database.transaction() as session:
            users = UserRepository(session)
            if column == "tv_session_ciphertext":
                rows = await users.sessions_after(after, batch_size)
            else:
                rows = await users.notification_secrets_after(after, batch_size)
            sessions = column == "tv_session_ciphertext"
            for user_id, ciphertext in rows:
                if sessions:
                    report.examined += 1
                else:
                    report.secrets_examined += 1
                try:
                    if not cipher.needs_reencryption(ciphertext):
                        continue
                    plaintext = cipher.decrypt(ciphertext)
                except CookieCipherError:
                    (report.unreadable if sessions else report.secrets_unreadable).append(user_id)
                    continue
                await users.update_config(user_id, **{column: cipher.encrypt(plaintext)})
                if sessions:
                    report.reencrypted += 1
                else:
                    report.secrets_reencrypted += 1
        log.info(
            "cookie key rotation batch done",
            extra={
                "column": column,
                "examined": report.examined,
                "reencrypted": report.reencrypted,
                "key_id": report.key_id,
            },
        )
        if len(rows) < batch_size:
            return
        after = rows[-1][0]
