"""The DTLS PSK callback of the resource server (RFC 4279 §2, RFC 9202
§3.3): which PSK a ``psk_identity`` names.

In this order: a registered client id (its PSK, from the registry's memory);
an RFC 9202 kid identity ``{8: {1: {1: 4, 2: kid}}}`` naming a held token's
symmetric PoP key; a whole access token as identity, verified and stored as
if uploaded to /authz-info, whose PoP key is then the PSK. Sessions keyed
by a token are remembered per token kid, so the gateway can close them when
the token ends (RFC 9202 §5). Lockouts are judged before, by the transport.

A kid identity whose token is not held here may name a token another
instance accepted (several instances on one PostgreSQL registry): with a
``fetch`` callable the lookup asks it to start fetching the kid (bounded
and negatively cached by its owner) and answers :data:`~dtls12.PSK_PENDING`;
the DTLS engine then holds the handshake without an alert (the peer
retransmits, RFC 6347 §4.2.4). When the fetch ends the gateway has the
held handshakes ask again inside :meth:`PskLookup.settling`, where the
answer comes from the tokens held: one fetch per handshake.
Sans-I/O: no socket, no database; the clock is injected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from dtls12 import PSK_PENDING, PskPending
from gateway.errors import GatewayError
from gateway.resource_server.token_store import AccessToken, TokenStore
from tokens import cnf as cnf_mod
from tokens.errors import TokenError
from tokens.keys import SymmetricKey

#: Identities remembered as a disabled client's token (for the audit reason).
MAX_DISABLED_LOOKUPS = 4096
#: Kids whose fetch is under way at once (a fetch owner bounds them lower).
MAX_FETCHING = 4096
#: Identities waiting for one kid (encodings of the RFC 9202 structure).
MAX_IDENTITIES_PER_KID = 4


def is_token_identity(identity: bytes) -> bool:
    """Whether ``identity`` starts like a CWT (a CBOR array or tag, RFC 8392 §2)."""
    return bool(identity[:1]) and identity[0] >> 5 in (4, 6)


class PskLookup:
    """``lookup(identity) -> psk or None`` for the DTLS server.

    ``client_psk``: the registry's PSK of a client id (None: unknown or
    disabled); ``accept``: verifies and stores a token carried as identity
    (raises :class:`TokenError` / :class:`GatewayError`); ``outcome``: told
    ``None`` for such a token accepted, or the refusal reason; ``fetch``:
    starts fetching the token of a kid not held here, False when it will not
    (known absent, over its bounds); the caller reports the end with
    :meth:`settling`.
    """

    def __init__(
        self,
        *,
        client_psk: Callable[[bytes], bytes | None],
        tokens: TokenStore,
        accept: Callable[[bytes, float], AccessToken],
        clock: Callable[[], float],
        outcome: Callable[[str | None], None] = lambda reason: None,
        fetch: Callable[[bytes], bool] | None = None,
    ) -> None:
        self._client_psk = client_psk
        self._tokens = tokens
        self._accept = accept
        self._clock = clock
        self._outcome = outcome
        self._fetch = fetch
        #: kids being fetched -> the identities whose handshakes wait for them
        self._fetching: dict[bytes, set[bytes]] = {}
        #: the kid whose fetch just ended (its lookups do not fetch again)
        self._settling: bytes | None = None
        #: identities (psk_identity bytes) of the sessions keyed by each token kid
        self._bound: dict[bytes, set[bytes]] = {}
        #: identities whose last lookup refused a disabled client's token
        self._disabled: dict[bytes, None] = {}

    def __call__(self, identity: bytes) -> bytes | PskPending | None:
        psk = self._client_psk(identity)
        if psk is not None:
            return psk
        now = self._clock()
        kid = cnf_mod.parse_psk_identity(identity)
        if kid is not None:
            token = self._tokens.peek(kid)
            if token is None:
                return self._fetching_for(kid, identity)
            if token.exp <= now:
                return None
        elif is_token_identity(identity):
            try:
                token = self._accept(identity, now)
            except (TokenError, GatewayError) as exc:
                self._outcome(exc.reason)
                if exc.reason == "client_disabled" and len(self._disabled) < MAX_DISABLED_LOOKUPS:
                    self._disabled[identity] = None
                return None
            self._outcome(None)
        else:
            return None
        if not isinstance(token.pop_key, SymmetricKey):
            return None
        self._bound.setdefault(token.kid, set()).add(identity)
        return token.pop_key.secret

    def _fetching_for(self, kid: bytes, identity: bytes) -> PskPending | None:
        """RFC 9202 §3.3 kid not held here: pending while its token is
        fetched (started here once per kid), else unknown."""
        if self._fetch is None or kid == self._settling:
            return None
        waiting = self._fetching.get(kid)
        if waiting is None:
            if len(self._fetching) >= MAX_FETCHING or not self._fetch(kid):
                return None
            waiting = self._fetching[kid] = set()
        if identity not in waiting:
            if len(waiting) >= MAX_IDENTITIES_PER_KID:
                return None
            waiting.add(identity)
        return PSK_PENDING

    @contextlib.contextmanager
    def settling(self, kid: bytes) -> Iterator[set[bytes]]:
        """The fetch of ``kid`` ended (its token held now, or not): yields the
        identities whose handshakes wait for it. Inside, lookups of the kid
        answer from the tokens held only (the handshakes asked again do not
        fetch again); afterwards a lookup of it may fetch anew."""
        waiting = self._fetching.pop(kid, set())
        self._settling = kid
        try:
            yield waiting
        finally:
            self._settling = None

    def release(self, kid: bytes) -> set[bytes]:
        """Forget the sessions keyed by token ``kid``; their identities."""
        return self._bound.pop(kid, set())

    def bound(self, kid: bytes) -> frozenset[bytes]:
        """The identities of the sessions keyed by token ``kid``."""
        return frozenset(self._bound.get(kid, ()))

    def refused_disabled(self, identity: bytes) -> bool:
        """Whether the last lookup of ``identity`` refused a disabled
        client's token (asked once per handshake: the answer is forgotten)."""
        return self._disabled.pop(identity, False) is None


__all__ = [
    "MAX_DISABLED_LOOKUPS",
    "MAX_FETCHING",
    "MAX_IDENTITIES_PER_KID",
    "PskLookup",
    "is_token_identity",
]
