"""AES-256-GCM for TradingView session cookies, with key rotation.

A ciphertext is ``b"\\x01" | len(key id) | key id | nonce (12) | AES-GCM(plaintext)``: the first configured
key encrypts, every configured key decrypts, so rotation is: prepend a new key, re-encrypt, drop the old.
"""

from __future__ import annotations

import base64
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mesh.settings import CommonSettings, dev_secret

_VERSION = 1
_NONCE_BYTES = 12


class CookieCipherError(Exception):
    """The ciphertext is malformed, or no configured key opens it."""


class CookieCipher:
    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one cookie key is required")
        for key_id, key in keys:
            if len(key) != 32 or not key_id or len(key_id.encode()) > 255:
                raise ValueError(f"cookie key {key_id!r} must be 32 bytes with a short id")
        self._primary_id = keys[0][0]
        self._keys = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> CookieCipher:
        if not settings.cookie_keys:
            return cls([("dev", dev_secret(settings, "cookie-key"))])
        keys = []
        for entry in settings.cookie_keys:
            key_id, sep, encoded = entry.get_secret_value().partition(":")
            if not sep:
                raise ValueError("ALERTS_COOKIE_KEYS entries look like '<key id>:<base64 32-byte key>'")
            keys.append((key_id, base64.b64decode(encoded)))
        return cls(keys)

    @property
    def primary_key_id(self) -> str:
        return self._primary_id

    def encrypt(self, plaintext: bytes) -> bytes:
        key_id = self._primary_id.encode()
        nonce = os.urandom(_NONCE_BYTES)
        header = bytes([_VERSION, len(key_id)]) + key_id
        return header + nonce + self._keys[self._primary_id].encrypt(nonce, plaintext, header)

    def key_id_of(self, ciphertext: bytes) -> str:
        if len(ciphertext) < 2 or ciphertext[0] != _VERSION:
            raise CookieCipherError("unknown ciphertext format")
        return ciphertext[2 : 2 + ciphertext[1]].decode()

    def decrypt(self, ciphertext: bytes) -> bytes:
        key_id = self.key_id_of(ciphertext)
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise CookieCipherError(f"no configured key with id {key_id!r}")
        header_end = 2 + ciphertext[1]
        nonce = ciphertext[header_end : header_end + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, ciphertext[header_end + _NONCE_BYTES :], ciphertext[:header_end])
        except Exception as exc:
            raise CookieCipherError("ciphertext does not authenticate") from exc

    def needs_reencryption(self, ciphertext: bytes) -> bool:
        return self.key_id_of(ciphertext) != self._primary_id


def generate_key_entry(key_id: str) -> str:
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"
