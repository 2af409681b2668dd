"""A PSK lookup that answers pending (the key is being fetched elsewhere,
RFC 9202 §3.3): the engine holds the handshake without an alert, so the
client retransmits its flight (RFC 6347 §4.2.4); the handshake completes
when the driver retries or the retransmission finds the key, and fails as an
unknown identity (bad_record_mac, RFC 4279 §5.1) when none comes."""

from __future__ import annotations

from dtls12 import (
    PSK_PENDING,
    DtlsServerEngine,
    EngineConfig,
    HandshakeFailed,
    HandshakeFailure,
    PskPending,
    wire,
)
from dtls12.client import DtlsClient
from dtls12.errors import AlertDescription
from dtls12.wire import ContentType, HandshakeType

from .conftest import PSK, Pair

IDENTITY = b"kid-identity"


class Lookup:
    """Answers pending until ``key`` is set (then the key, or None for b"")."""

    def __init__(self) -> None:
        self.key: bytes | None = None
        self.asked = 0

    def __call__(self, identity: bytes) -> bytes | PskPending | None:
        self.asked += 1
        if identity != IDENTITY:
            return None
        if self.key is None:
            return PSK_PENDING
        return self.key or None


def held_pair(config: EngineConfig | None = None) -> tuple[Pair, Lookup]:
    """A pair whose client's flight five reached the server and is held."""
    lookup = Lookup()
    engine = DtlsServerEngine(config or EngineConfig(), lookup, now=0.0)
    pair = Pair(engine, DtlsClient(IDENTITY, PSK, initial_retransmit=1.0))
    pair.to_server(pair.client.connect(pair.now))
    pair.to_server(pair.deliver())  # ClientHello with cookie
    pair.to_server(pair.deliver())  # ClientKeyExchange, CCS, Finished
    assert lookup.asked == 1 and engine.counters["psk_held"] == 1
    assert pair.to_client == [] and not pair.of_type(HandshakeFailed)  # no alert
    return pair, lookup


def test_a_held_handshake_completes_when_the_driver_retries_without_a_retransmission() -> None:
    pair, lookup = held_pair()
    pair.now = 0.2
    assert pair.engine.retry_held(b"another", pair.now) == 0
    assert pair.engine.retry_held(IDENTITY, pair.now) == 1  # still pending: waits on
    assert pair.to_client == [] and pair.engine.handshaking_count == 1
    lookup.key = PSK
    assert pair.engine.retry_held(IDENTITY, pair.now) == 1
    pair.collect()
    assert pair.deliver() == [] and pair.client.established
    assert pair.client.retransmissions == 0 and pair.client.alerts == []
    [established] = pair.established()
    assert established.session.identity == IDENTITY


def test_the_clients_retransmitted_flight_finds_the_key() -> None:
    pair, lookup = held_pair()
    # the server does not resend its own flight while held (the peer has it)
    pair.tick(1.0)
    assert pair.to_client == []
    lookup.key = PSK
    deadline = pair.client.next_deadline()
    assert deadline is not None and deadline <= 1.0
    pair.now = deadline
    pair.to_server(pair.client.handle_timer(pair.now))  # flight five again
    assert pair.client.retransmissions == 1
    assert pair.deliver() == [] and pair.client.established and pair.established()


def test_a_key_found_absent_fails_like_an_unknown_identity() -> None:
    pair, lookup = held_pair()
    lookup.key = b""  # the fetch found nothing
    pair.engine.retry_held(IDENTITY, 0.1)
    pair.collect()
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.UNKNOWN_IDENTITY and failed.identity == IDENTITY
    pair.deliver()
    assert pair.client.alerts == [(2, AlertDescription.BAD_RECORD_MAC)]
    assert pair.engine.handshaking_count == 0 and pair.engine.session_count == 0


def test_a_hold_ends_after_psk_hold_seconds_as_an_unknown_identity() -> None:
    pair, lookup = held_pair(EngineConfig(psk_hold=2.5, handshake_timeout=30.0))
    for t in (1.0, 2.0):  # the client retransmits; the lookup still answers pending
        pair.tick(t)
        pair.to_server(pair.client.handle_timer(t))
        assert pair.to_client == [] and not pair.of_type(HandshakeFailed)
    assert lookup.asked == 2 and pair.client.retransmissions == 1  # 1 s, then 3 s
    deadline = pair.engine.next_deadline()
    assert deadline == 2.5
    pair.tick(deadline)
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.UNKNOWN_IDENTITY
    assert pair.engine.counters["psk_hold_expired"] == 1
    assert pair.engine.handshaking_count == 0


def test_a_record_packing_many_retransmitted_fragments_asks_the_lookup_once() -> None:
    """A peer without a key may pack a record with copies of its
    ClientKeyExchange header: the held handshake asks the lookup once for
    the record, not once per fragment (no cost amplification)."""
    pair, lookup = held_pair()
    key_exchange_seq = 2  # ClientHello 0, ClientHello with cookie 1
    copies = wire.handshake_message(HandshakeType.CLIENT_KEY_EXCHANGE, key_exchange_seq, b"") * 100
    record = wire.plaintext_record(ContentType.HANDSHAKE, 0, 50, copies)
    pair.now = 0.5
    pair.to_server([record, record])
    assert lookup.asked == 1 + 2  # the first answer, then once per record
    assert pair.to_client == [] and pair.engine.handshaking_count == 1


def test_server_shutdown_releases_a_held_handshake() -> None:
    pair, lookup = held_pair()
    pair.engine.shutdown()
    pair.collect()
    [failed] = pair.of_type(HandshakeFailed)
    assert failed.reason is HandshakeFailure.CLOSED
    assert pair.engine.handshaking_count == 0 and pair.engine.session_count == 0
    lookup.key = PSK  # a fetch that ends after the stop finds nothing to resume
    assert pair.engine.retry_held(IDENTITY, 0.5) == 0
    assert pair.engine.next_deadline() is None
