"""Access tokens the resource server holds (RFC 9200 §5.10.1).

Tokens are kept in memory by PoP key id (the ``kid`` that proofs and RFC 9202
psk_identities name), evicted when they expire, capped per client (the oldest
goes first), and a new token for the same PoP key supersedes the old one
(RFC 9200 §5.10.1, docs/design.md "The device's flow" step 5). Sans-I/O: ``now`` is passed in.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from tokens.aif import Scope
from tokens.cwt import Claims
from tokens.errors import Expired, UnknownKey
from tokens.keys import CoseKey


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token, reduced to what authorization needs."""

    kid: bytes
    pop_key: CoseKey
    client_id: str
    scope: Scope
    exp: float
    cti: bytes
    issuer: str
    claims: Claims

    def describe(self) -> dict[str, object]:
        """Audit-safe summary: no key, no token bytes."""
        return {
            "kid": self.kid.hex(),
            "cti": self.cti.hex(),
            "client_id": self.client_id,
            "scope": str(self.scope),
            "exp": self.exp,
        }


class TokenStore:
    """Tokens by PoP kid, with expiry-driven eviction and per-client caps."""

    def __init__(self, *, max_per_client: int = 4, max_tokens: int = 1_000_000) -> None:
        self.max_per_client = max_per_client
        self.max_tokens = max_tokens
        self._by_kid: dict[bytes, AccessToken] = {}
        #: the token held for a kid, or None (a bound ``dict.get``: it is on
        #: every request's path)
        self.peek: Callable[[bytes], AccessToken | None] = self._by_kid.get
        self._by_client: dict[str, OrderedDict[bytes, None]] = {}
        self._expiry: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._by_kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def all(self) -> list[AccessToken]:
        """A snapshot of every stored token."""
        return list(self._by_kid.values())

    def add(self, token: AccessToken) -> list[AccessToken]:
        """Store ``token``; return the tokens it displaced (superseded by the
        same PoP kid, or the client's oldest beyond ``max_per_client``)."""
        displaced: list[AccessToken] = []
        old = self._by_kid.get(token.kid)
        if old is not None:
            self._drop(old)
            displaced.append(old)
        per_client = self._by_client.setdefault(token.client_id, OrderedDict())
        while len(per_client) >= self.max_per_client:
            oldest = self._by_kid[next(iter(per_client))]
            self._drop(oldest)
            displaced.append(oldest)
            per_client = self._by_client.setdefault(token.client_id, OrderedDict())
        if len(self._by_kid) >= self.max_tokens and self.next_expiry() is not None:
            victim = self._by_kid[self._expiry[0][2]]  # the one expiring soonest
            self._drop(victim)
            displaced.append(victim)
        self._by_kid[token.kid] = token
        per_client[token.kid] = None
        heapq.heappush(self._expiry, (token.exp, next(self._seq), token.kid))
        return displaced

    def get(self, kid: bytes, now: float) -> AccessToken:
        """The live token for ``kid``: :class:`UnknownKey` when there is none,
        :class:`Expired` when it has expired (it is then dropped)."""
        token = self._by_kid.get(kid)
        if token is None:
            raise UnknownKey("no token for this key id")
        if token.exp <= now:
            self._drop(token)
            raise Expired("token expired")
        return token

    def expire(self, now: float) -> list[AccessToken]:
        """Drop every token whose ``exp`` has passed; return them."""
        gone: list[AccessToken] = []
        while self._expiry and self._expiry[0][0] <= now:
            _, _, kid = heapq.heappop(self._expiry)
            token = self._by_kid.get(kid)
            if token is not None and token.exp <= now:
                self._drop(token)
                gone.append(token)
        return gone

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has work (a lower bound), or None."""
        while self._expiry and self._expiry[0][2] not in self._by_kid:
            heapq.heappop(self._expiry)
        return self._expiry[0][0] if self._expiry else None

    def for_client(self, client_id: str) -> list[AccessToken]:
        return [self._by_kid[k] for k in self._by_client.get(client_id, ())]

    def remove_client(self, client_id: str) -> list[AccessToken]:
        """Drop every token of ``client_id`` (client disabled or deleted)."""
        gone = self.for_client(client_id)
        for token in gone:
            self._drop(token)
        return gone

    def remove_cti(self, cti: bytes) -> list[AccessToken]:
        """Drop the token with this cti (revocation)."""
        gone = [t for t in self._by_kid.values() if t.cti == cti]
        for token in gone:
            self._drop(token)
        return gone

    def _drop(self, token: AccessToken) -> None:
        if self._by_kid.get(token.kid) is token:
            del self._by_kid[token.kid]
        per_client = self._by_client.get(token.client_id)
        if per_client is not None:
            per_client.pop(token.kid, None)
            if not per_client:
                del self._by_client[token.client_id]
        # the heap entry is skipped lazily by expire()/next_expiry()
