"""Stateless HelloVerifyRequest cookies with a rotating secret
(RFC 6347 §4.2.1).

``cookie = generation || HMAC-SHA256(secret[generation], address || ClientHello
parameters)[:16]``. A fresh random secret is drawn every ``rotation`` seconds
(by the injected clock); a cookie verifies under the secret it was made with
while that secret is the current or the previous one, so it lives between one
and two rotation periods. No state is kept per peer.
"""

from __future__ import annotations

import hmac
import os

from .crypto import hmac_sha256

_MAC_LENGTH = 16
#: Bytes of a cookie this server issues.
COOKIE_LENGTH = 1 + _MAC_LENGTH


class CookieJar:
    """Issues and checks cookies; the only state is two secrets."""

    __slots__ = ("_current", "_generation", "_previous", "_rotation")

    def __init__(self, rotation: float, now: float) -> None:
        self._rotation = rotation
        self._generation = self._generation_at(now)
        self._current = os.urandom(32)
        self._previous: bytes | None = None

    def _generation_at(self, now: float) -> int:
        return int(now // self._rotation)

    def _advance(self, now: float) -> None:
        generation = self._generation_at(now)
        if generation <= self._generation:
            return
        self._previous = self._current if generation == self._generation + 1 else None
        self._current = os.urandom(32)
        self._generation = generation

    def issue(self, address: bytes, parameters: bytes, now: float) -> bytes:
        """The cookie for a ClientHello from ``address``."""
        self._advance(now)
        tag = bytes((self._generation & 0xFF,))
        return tag + hmac_sha256(self._current, address + parameters)[:_MAC_LENGTH]

    def verify(self, cookie: bytes, address: bytes, parameters: bytes, now: float) -> bool:
        """True if ``cookie`` was issued here, recently, for this address and
        these ClientHello parameters (constant-time comparison)."""
        self._advance(now)
        if len(cookie) != COOKIE_LENGTH:
            return False
        if cookie[0] == self._generation & 0xFF:
            secret: bytes | None = self._current
        elif cookie[0] == (self._generation - 1) & 0xFF:
            secret = self._previous
        else:
            return False
        if secret is None:
            return False
        expected = hmac_sha256(secret, address + parameters)[:_MAC_LENGTH]
        return hmac.compare_digest(cookie[1:], expected)
