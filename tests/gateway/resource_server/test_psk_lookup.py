"""The DTLS PSK callback (RFC 4279 §2, RFC 9202 §3.3) without sockets:
client ids, RFC 9202 kid identities of held tokens (and of tokens being
fetched from the shared store), whole tokens as identity, and the sessions
remembered per token kid."""

from __future__ import annotations

from collections.abc import Callable

from dtls12 import PSK_PENDING
from gateway.resource_server import psk_lookup as psk_lookup_module
from gateway.resource_server.psk_lookup import (
    MAX_DISABLED_LOOKUPS,
    MAX_IDENTITIES_PER_KID,
    PskLookup,
    is_token_identity,
)
from gateway.resource_server.token_intake import TokenIntake, TrustedIssuer
from gateway.resource_server.token_store import TokenStore
from tests.gateway.embedded_as import AS_RS, NOW, SIGNING, issue
from tokens.cnf import psk_identity_for_kid
from tokens.keys import KeySet, SymmetricKey

CLIENT_PSKS = {b"sensor-1": b"p" * 32}


def mint(lifetime: float = 600) -> bytes:
    return issue(lifetime=lifetime).response.access_token


class Harness:
    def __init__(
        self, *, enabled: bool = True, fetch: Callable[[bytes], bool] | None = None
    ) -> None:
        self.now = NOW
        self.tokens = TokenStore()
        issuer = TrustedIssuer(name="as", keys=KeySet([SIGNING]), decryption_keys=KeySet([AS_RS]))
        self.intake = TokenIntake(
            audience="rs", issuers=[issuer], leeway=0, is_client_enabled=lambda cid: enabled
        )
        self.outcomes: list[str | None] = []
        self.lookup = PskLookup(
            client_psk=CLIENT_PSKS.get,
            tokens=self.tokens,
            accept=self.accept,
            clock=lambda: self.now,
            outcome=self.outcomes.append,
            fetch=fetch,
        )

    def accept(self, token: bytes, now: float):
        access = self.intake.accept(token, now)
        self.tokens.add(access)
        return access


def test_a_registered_client_id_gets_its_psk():
    h = Harness()
    assert h.lookup(b"sensor-1") == b"p" * 32
    assert h.lookup(b"sensor-9") is None and h.lookup(b"\xff\xfe") is None
    assert h.outcomes == []


def test_a_token_as_identity_is_verified_stored_and_its_pop_key_is_the_psk():
    h = Harness()
    token = mint()
    assert is_token_identity(token) and not is_token_identity(b"sensor-1")
    psk = h.lookup(token)
    held = h.tokens.all()
    assert len(held) == 1 and isinstance(held[0].pop_key, SymmetricKey)
    assert psk == held[0].pop_key.secret and h.outcomes == [None]
    assert h.lookup.bound(held[0].kid) == {token}


def test_a_kid_identity_names_a_held_token_until_it_expires():
    h = Harness()
    h.lookup(mint(lifetime=60))
    held = h.tokens.all()[0]
    identity = psk_identity_for_kid(held.kid)
    assert h.lookup(identity) == held.pop_key.secret
    assert h.lookup(psk_identity_for_kid(b"unknown-kid")) is None
    assert identity in h.lookup.bound(held.kid)
    h.now = held.exp
    assert h.lookup(identity) is None  # expired: no session on it


def test_sessions_per_kid_are_released_once():
    h = Harness()
    token = mint()
    h.lookup(token)
    kid = h.tokens.all()[0].kid
    identity = psk_identity_for_kid(kid)
    h.lookup(identity)
    assert h.lookup.release(kid) == {token, identity}
    assert h.lookup.release(kid) == set() and h.lookup.bound(kid) == frozenset()


def test_a_refused_token_identity_reports_its_reason_and_a_disabled_client_is_remembered():
    h = Harness(enabled=False)
    token = mint()
    assert h.lookup(token) is None and h.tokens.all() == []
    assert h.outcomes == ["client_disabled"]
    assert h.lookup.refused_disabled(token)
    assert not h.lookup.refused_disabled(token)  # asked once per handshake
    garbled = b"\x84" + b"\x00" * 10  # a CBOR array that is no token
    assert h.lookup(garbled) is None and h.outcomes[-1] not in (None, "client_disabled")
    assert not h.lookup.refused_disabled(garbled)
    assert MAX_DISABLED_LOOKUPS >= 1024


class Fetches:
    """The injected ``fetch``: records the kids asked; refuses when ``full``."""

    def __init__(self) -> None:
        self.kids: list[bytes] = []
        self.full = False

    def __call__(self, kid: bytes) -> bool:
        if self.full:
            return False
        self.kids.append(kid)
        return True


def test_a_kid_identity_not_held_is_pending_while_fetched_then_answers_from_the_store():
    """RFC 9202 §3.3 kid of a token another instance accepted: the lookup
    starts one fetch per kid and answers pending (the engine holds the
    handshake); inside :meth:`settling` the held token's key is the PSK."""
    fetches = Fetches()
    h = Harness(fetch=fetches)
    lookup = h.lookup
    token = mint()
    access = h.intake.accept(token, h.now)  # verified, not held here yet
    identity = psk_identity_for_kid(access.kid)
    assert lookup(identity) is PSK_PENDING
    assert lookup(identity) is PSK_PENDING  # the peer's retransmission: no second fetch
    assert fetches.kids == [access.kid]
    assert lookup(b"sensor-1") == b"p" * 32  # other identities unaffected
    assert lookup.bound(access.kid) == frozenset()  # no session keyed yet

    h.tokens.add(access)  # the fetch found it and held it
    with lookup.settling(access.kid) as waiting:
        assert waiting == {identity}
        assert lookup(identity) == access.pop_key.secret  # the held handshake asks again
    with lookup.settling(access.kid) as waiting:
        assert waiting == set()
    assert lookup.bound(access.kid) == {identity}
    assert fetches.kids == [access.kid]


def test_a_kid_identity_the_fetch_will_not_ask_is_unknown_at_once():
    """Known absent or over the fetch bounds: None (the handshake fails at
    the Finished as for any unknown identity); without ``fetch`` (SQLite
    registry) nothing is fetched."""
    fetches = Fetches()
    fetches.full = True
    h = Harness(fetch=fetches)
    lookup = h.lookup
    assert lookup(psk_identity_for_kid(b"made-up")) is None
    assert Harness().lookup(psk_identity_for_kid(b"made-up")) is None  # no fetch: unknown

    fetches.full = False
    kid = b"absent-kid"
    identity = psk_identity_for_kid(kid)
    assert lookup(identity) is PSK_PENDING
    with lookup.settling(kid) as waiting:  # the fetch found nothing
        assert waiting == {identity}
        assert lookup(identity) is None  # no second fetch for the held handshake
    assert fetches.kids == [kid]
    assert lookup(identity) is PSK_PENDING  # a later handshake may fetch again
    assert fetches.kids == [kid, kid]


def test_two_encodings_of_one_kid_share_one_fetch():
    """Another key order of the RFC 9202 structure names the same kid: both
    identities wait for one fetch (at most MAX_IDENTITIES_PER_KID do)."""
    fetches = Fetches()
    h = Harness(fetch=fetches)
    lookup = h.lookup
    kid = b"k1"
    other_order = bytes.fromhex("a108a101a20242") + kid + bytes.fromhex("0104")  # {2: kid, 1: 4}
    answers = [lookup(other_order), lookup(psk_identity_for_kid(kid))]
    assert answers == [PSK_PENDING, PSK_PENDING] and fetches.kids == [kid]
    with lookup.settling(kid) as waiting:
        assert len(waiting) == 2
    assert MAX_IDENTITIES_PER_KID >= 2


def test_identities_and_kids_waiting_for_fetches_are_bounded(monkeypatch):
    """A peer without a key may spell one kid many ways (non-preferred CBOR
    integers) or name many kids: beyond MAX_IDENTITIES_PER_KID spellings of
    one kid, and beyond MAX_FETCHING kids fetched at once, the identity is
    unknown at once (no hold, no further fetch)."""
    fetches = Fetches()
    lookup = Harness(fetch=fetches).lookup
    kid = b"k1"
    spellings = [
        bytes.fromhex("a1" + label + "a101a2010402") + bytes((0x40 + len(kid),)) + kid
        for label in ("08", "1808", "190008", "1a00000008", "1b0000000000000008")
    ]
    assert len(spellings) - 1 == MAX_IDENTITIES_PER_KID
    answers = [lookup(identity) for identity in spellings]
    assert answers == [PSK_PENDING] * MAX_IDENTITIES_PER_KID + [None]
    assert lookup(spellings[0]) is PSK_PENDING  # one already waiting still waits
    assert fetches.kids == [kid]

    monkeypatch.setattr(psk_lookup_module, "MAX_FETCHING", 2)
    assert lookup(psk_identity_for_kid(b"k2")) is PSK_PENDING
    assert lookup(psk_identity_for_kid(b"k3")) is None
    assert fetches.kids == [kid, b"k2"]
    with lookup.settling(kid):
        pass
    assert lookup(psk_identity_for_kid(b"k3")) is PSK_PENDING  # room again
    assert fetches.kids == [kid, b"k2", b"k3"]
