"""One peer of the DTLS 1.2 PSK server: its handshake after a valid cookie
(RFC 6347 §4.2, RFC 5246 §7.4, RFC 4279 §2, RFC 7627, RFC 9146 §3), its
record protection and replay window (RFC 6347 §4.1.2), its retransmission
timer (RFC 6347 §4.2.4) and its alerts (RFC 5246 §7.2).

Sans-I/O: methods take ``now``; records to send go to the engine's outgoing
list, events to its event list. The handshake-only state (:class:`_Handshake`)
is dropped once the session is established, so an idle session keeps keys,
addresses, sequence numbers and one replay window.
"""

from __future__ import annotations

import hmac
import logging
import os
from enum import Enum
from typing import TYPE_CHECKING

from . import crypto, wire
from .config import PSK_PENDING
from .errors import AlertDescription, AlertError, AlertLevel, EngineError, ParseError
from .events import (
    Address,
    ApplicationData,
    CloseReason,
    HandshakeFailed,
    HandshakeFailure,
    SessionEstablished,
    identity_label,
)
from .reassembly import Reassembler
from .replay import ReplayWindow
from .wire import ContentType, ExtensionType, HandshakeType

if TYPE_CHECKING:
    from .engine import DtlsServerEngine

log = logging.getLogger(__name__)

#: Largest handshake message a PSK server accepts: a ClientKeyExchange with
#: the longest identity allowed, or a ClientHello with many extensions.
_MESSAGE_OVERHEAD = 64
#: Records of the next epoch kept while its keys are not installed yet
#: (RFC 6347 §4.1: a Finished may overtake the ChangeCipherSpec).
_EARLY_RECORDS = 2
#: Length of a random PSK for an unknown identity (RFC 4279 §5.1).
_DECOY_PSK_LENGTH = 32


class Phase(Enum):
    """Where a session is (RFC 6347 §4.2.4 server flights)."""

    #: ServerHello..ServerHelloDone sent; waiting for ClientKeyExchange.
    AWAIT_KEY_EXCHANGE = "await_key_exchange"
    #: ClientKeyExchange processed; waiting for ChangeCipherSpec + Finished.
    AWAIT_FINISHED = "await_finished"
    ESTABLISHED = "established"
    CLOSED = "closed"


class _Handshake:
    """State that only exists while the handshake runs."""

    __slots__ = (
        "ccs_received",
        "client_random",
        "deadline",
        "early_records",
        "ems",
        "finished_hash",
        "flight",
        "held_until",
        "identity_known",
        "keys",
        "locked_out",
        "master",
        "peer_flight_last",
        "reassembler",
        "retransmit_at",
        "retransmit_timeout",
        "server_random",
        "transcript",
    )

    def __init__(self, reassembler: Reassembler, client_random: bytes, now: float) -> None:
        self.transcript = crypto.Transcript()
        self.reassembler = reassembler
        self.client_random = client_random
        self.server_random = os.urandom(32)
        self.deadline = now
        self.retransmit_at = now
        self.retransmit_timeout = 0.0
        #: Our last flight: (content_type, epoch, payload) for each record.
        self.flight: list[tuple[int, int, bytes]] = []
        #: message_seq of the last message of the peer's previous flight.
        self.peer_flight_last = -1
        self.identity_known = False
        #: While the PSK lookup answers pending: when the hold ends (else None).
        self.held_until: float | None = None
        self.locked_out = False
        self.master = b""
        self.keys: crypto.KeyBlock | None = None
        self.finished_hash = b""
        self.ccs_received = False
        self.early_records: list[tuple[wire.Record, Address]] = []
        self.ems = False


class Session:
    """One DTLS association with one peer, from the first verified cookie on.

    Public, read-only for the driver: ``identity`` (the authenticated PSK
    identity; None until established), ``address`` (where records are sent),
    ``cid`` (the Connection ID the peer puts on its records, b"" without),
    ``cipher_suite`` and ``established``. ``user`` is the driver's own (the
    engine never reads it).
    """

    __slots__ = (
        "_engine",
        "_hs",
        "_read",
        "_read_epoch",
        "_window",
        "_write",
        "_write_seq",
        "address",
        "cid",
        "cipher_suite",
        "final_flight",
        "final_flight_until",
        "identity",
        "last_activity",
        "peer_cid",
        "phase",
        "progressed",
        "replaces",
        "started",
        "user",
        "wake_at",
    )

    def __init__(self, engine: DtlsServerEngine, address: Address, now: float) -> None:
        self._engine = engine
        self.address = address
        self.phase = Phase.AWAIT_KEY_EXCHANGE
        self.identity: bytes | None = None
        self.cid = b""
        self.peer_cid = b""
        self.cipher_suite = crypto.TLS_PSK_WITH_AES_128_CCM_8
        self._read: crypto.RecordProtection | None = None
        self._read_epoch = 0
        self._window = ReplayWindow()
        self._write: crypto.RecordProtection | None = None
        #: Next sequence number to send in epoch 0 and epoch 1.
        self._write_seq = [0, 0]
        self._hs: _Handshake | None = None
        self.final_flight: list[tuple[int, int, bytes]] | None = None
        self.final_flight_until = 0.0
        self.last_activity = now
        #: An established session at the same address that this handshake
        #: replaces once it completes (RFC 6347 §4.2.8).
        self.replaces: Session | None = None
        #: When the engine's timer heap last scheduled this session.
        self.wake_at: float | None = None
        #: When the handshake started, and whether the peer sent anything
        #: since the server's first flight (stalled handshakes are displaced).
        self.started = now
        self.progressed = False
        self.user: object = None

    def __repr__(self) -> str:
        who = identity_label(self.identity) if self.identity is not None else "?"
        return f"<Session {self.address!r} {who} {self.phase.value}>"

    @property
    def established(self) -> bool:
        return self.phase is Phase.ESTABLISHED

    @property
    def handshaking(self) -> bool:
        return self.phase in (Phase.AWAIT_KEY_EXCHANGE, Phase.AWAIT_FINISHED)

    @property
    def psk_held(self) -> bool:
        """Whether the handshake waits for a PSK its lookup answered pending for."""
        return self._hs is not None and self._hs.held_until is not None

    @property
    def client_random(self) -> bytes | None:
        return self._hs.client_random if self._hs is not None else None

    # --- handshake start (called by the engine after a valid cookie) -------------

    def start(
        self, hello: wire.ClientHello, body: bytes, message_seq: int, record_seq: int, now: float
    ) -> None:
        """Negotiate from the cookie-bearing ClientHello (``body`` as
        received, for the transcript) and send
        ServerHello..ServerHelloDone (RFC 5246 §7.4.1.3). Raises AlertError
        when nothing acceptable is offered."""
        config = self._engine.config
        window = config.reassembly_window
        max_message = config.max_identity_length + _MESSAGE_OVERHEAD
        reassembler = Reassembler(
            message_seq + 1,
            max_bytes=config.max_reassembly_bytes,
            max_message=max(max_message, 1024),
            window=window,
            dropped=self._engine.count,
        )
        hs = self._hs = _Handshake(reassembler, hello.random, now)
        hs.deadline = now + config.handshake_timeout
        hs.peer_flight_last = message_seq
        # Mirror the client's numbers (a stateless HelloVerifyRequest used
        # its message_seq and record sequence number, RFC 6347 §4.2.1).
        self._write_seq[0] = record_seq + 1
        hs.transcript.add(wire.handshake_message(HandshakeType.CLIENT_HELLO, message_seq, body))
        if hello.client_version > wire.DTLS_1_2:
            raise AlertError(AlertDescription.PROTOCOL_VERSION, "client offers only DTLS 1.0")
        if 0 not in hello.compression_methods:
            raise AlertError(AlertDescription.ILLEGAL_PARAMETER, "null compression not offered")
        suite = next((s for s in config.cipher_suites if s in hello.cipher_suites), None)
        if suite is None:
            raise AlertError(AlertDescription.HANDSHAKE_FAILURE, "no common cipher suite")
        self.cipher_suite = crypto.CIPHER_SUITES[suite]
        if ExtensionType.EXTENDED_MASTER_SECRET not in hello.extensions:
            raise AlertError(
                AlertDescription.HANDSHAKE_FAILURE, "extended master secret not offered"
            )
        if hello.extensions[ExtensionType.EXTENDED_MASTER_SECRET]:
            raise ParseError("extended_master_secret extension not empty")
        extensions = [wire.extension(ExtensionType.EXTENDED_MASTER_SECRET, b"")]
        renegotiation = hello.extensions.get(ExtensionType.RENEGOTIATION_INFO)
        if renegotiation is not None and renegotiation != b"\x00":
            # RFC 5746 §3.6: an initial handshake carries an empty
            # renegotiated_connection.
            raise AlertError(AlertDescription.HANDSHAKE_FAILURE, "renegotiation_info not empty")
        if (
            renegotiation is not None
            or wire.TLS_EMPTY_RENEGOTIATION_INFO_SCSV in hello.cipher_suites
        ):
            extensions.append(wire.extension(ExtensionType.RENEGOTIATION_INFO, b"\x00"))
        cid_offer = hello.extensions.get(ExtensionType.CONNECTION_ID)
        if cid_offer is not None and config.cid_length:
            self.peer_cid = wire.parse_connection_id_extension(cid_offer)
            self.cid = self._engine.assign_cid(self)
            extensions.append(
                wire.extension(ExtensionType.CONNECTION_ID, bytes((len(self.cid),)) + self.cid)
            )
        server_hello = wire.handshake_message(
            HandshakeType.SERVER_HELLO,
            message_seq,
            wire.server_hello(hs.server_random, suite, b"".join(extensions)),
        )
        done = wire.handshake_message(HandshakeType.SERVER_HELLO_DONE, message_seq + 1, b"")
        hs.transcript.add(server_hello)
        hs.transcript.add(done)
        hs.flight = [(ContentType.HANDSHAKE, 0, server_hello), (ContentType.HANDSHAKE, 0, done)]
        hs.retransmit_timeout = config.initial_retransmit
        self._send_flight(now)

    # --- records from the peer --------------------------------------------------------

    def receive(self, record: wire.Record, address: Address, now: float) -> None:
        """One record routed here (by address, or by CID for tls12_cid)."""
        if self.phase is Phase.CLOSED:
            return
        if self._hs is not None:
            self.progressed = True
        try:
            if record.epoch == 0:
                self._plaintext(record, now)
            elif record.epoch == 1:
                self._protected(record, address, now)
            else:
                self._engine.count("wrong_epoch")
        except AlertError as error:
            self.fail(HandshakeFailure.PROTOCOL, error.alert, now)
        except ParseError:
            if self.handshaking:
                self.fail(HandshakeFailure.PROTOCOL, AlertDescription.DECODE_ERROR, now)
            else:
                self._engine.count("malformed")

    def _plaintext(self, record: wire.Record, now: float) -> None:
        kind = record.content_type
        if kind == ContentType.HANDSHAKE and self._hs is not None:
            self._handshake_fragments(wire.parse_handshake_fragments(record.fragment), now)
        elif kind == ContentType.CHANGE_CIPHER_SPEC and self._hs is not None:
            if record.fragment != b"\x01":
                raise ParseError("ChangeCipherSpec is not a single 1")
            self._hs.ccs_received = True
            self._install_read_keys(now)
        elif kind == ContentType.ALERT and self.handshaking:
            # Unauthenticated, so only believed while nothing is at stake
            # (an established session ignores plaintext alerts).
            level, description = _parse_alert(record.fragment)
            if level == AlertLevel.FATAL or description == AlertDescription.CLOSE_NOTIFY:
                self.fail(HandshakeFailure.ALERT, None, now)
        else:
            self._engine.count("unexpected_plaintext")

    def _protected(self, record: wire.Record, address: Address, now: float) -> None:
        if self.cid and not record.cid:
            # RFC 9146 §4: once negotiated, the peer MUST use its CID.
            self._engine.count("missing_cid")
            return
        if self._read is None:
            hs = self._hs
            if hs is not None and len(hs.early_records) < _EARLY_RECORDS:
                hs.early_records.append((record, address))
            else:
                self._engine.count("no_read_keys")
            return
        window = self._window
        sequence = record.sequence
        if not window.is_fresh(sequence):
            self._engine.count("replayed")
            return
        opened = self._read.open(
            record.content_type, record.version, 1, sequence, record.fragment, record.cid
        )
        if opened is None:
            if self.phase is Phase.AWAIT_FINISHED:
                # The peer's first protected record does not authenticate:
                # it holds another PSK (or the identity is unknown and the
                # key random). Same alert either way (RFC 4279 §5.1).
                hs = self._hs
                if hs is not None and hs.locked_out:
                    reason = HandshakeFailure.LOCKED_OUT
                elif hs is not None and hs.identity_known:
                    reason = HandshakeFailure.BAD_FINISHED
                else:
                    reason = HandshakeFailure.UNKNOWN_IDENTITY
                self.fail(reason, AlertDescription.BAD_RECORD_MAC, now)
            else:
                self._engine.count("bad_record_mac")
            return
        newest = window.commit(sequence)
        if address != self.address:
            if record.cid and newest:
                self._engine.move(self, address)
            else:
                self._engine.count("stale_address")
        content_type, plaintext = opened
        if content_type == ContentType.APPLICATION_DATA:
            if self.phase is Phase.ESTABLISHED:
                self.last_activity = now
                self.final_flight = None
                self._engine.touch(self)
                self._engine.emit(ApplicationData(self, plaintext))
            else:
                self._engine.count("early_application_data")
        elif content_type == ContentType.HANDSHAKE:
            self._protected_handshake(plaintext, now)
        elif content_type == ContentType.ALERT:
            self._protected_alert(plaintext, now)
        else:
            self._engine.count("unexpected_protected")

    def _protected_handshake(self, plaintext: bytes, now: float) -> None:
        fragments = wire.parse_handshake_fragments(plaintext)
        if self._hs is not None:
            self._handshake_fragments(fragments, now)
            return
        for fragment in fragments:
            if fragment.msg_type == HandshakeType.CLIENT_HELLO:
                # RFC 5746 §4.4 / RFC 5246 §7.2.2: renegotiation refused.
                self._send_alert(AlertLevel.WARNING, AlertDescription.NO_RENEGOTIATION)
                self._engine.count("renegotiation_refused")
                return
            if fragment.msg_type == HandshakeType.FINISHED and self.final_flight is not None:
                # The peer did not get our final flight (RFC 6347 §4.2.4).
                self._transmit(self.final_flight)
                return

    def _protected_alert(self, plaintext: bytes, now: float) -> None:
        level, description = _parse_alert(plaintext)
        if description == AlertDescription.CLOSE_NOTIFY:
            if self.established:
                self._send_alert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY)
                self._engine.end(self, CloseReason.PEER_CLOSED)
            else:
                self.fail(HandshakeFailure.ALERT, None, now)
        elif level == AlertLevel.FATAL:
            if self.established:
                self._engine.end(self, CloseReason.FATAL_ALERT)
            else:
                self.fail(HandshakeFailure.ALERT, None, now)

    # --- handshake messages ----------------------------------------------------------------

    def _handshake_fragments(self, fragments: list[wire.HandshakeFragment], now: float) -> None:
        hs = self._hs
        assert hs is not None
        resent = False
        for fragment in fragments:
            if fragment.message_seq < hs.reassembler.next_seq:
                if hs.held_until is not None:
                    # The peer retransmitted the flight whose PSK is pending:
                    # ask once per record, however many fragments it packs.
                    if not resent:
                        resent = True
                        self.retry_psk(now)
                        if self._hs is None:
                            return
                    continue
                # An earlier flight again: ours was lost (RFC 6347 §4.2.4).
                if fragment.message_seq == hs.peer_flight_last and not resent:
                    resent = True
                    self._transmit(hs.flight)
                continue
            for msg_type, seq, body in hs.reassembler.add(fragment):
                self._handshake_message(msg_type, seq, body, now)
                if self._hs is None:
                    return

    def _handshake_message(self, msg_type: int, seq: int, body: bytes, now: float) -> None:
        hs = self._hs
        assert hs is not None
        if self.phase is Phase.AWAIT_KEY_EXCHANGE and msg_type == HandshakeType.CLIENT_KEY_EXCHANGE:
            hs.transcript.add(wire.handshake_message(msg_type, seq, body))
            self._client_key_exchange(wire.parse_client_key_exchange(body), now)
        elif self.phase is Phase.AWAIT_FINISHED and msg_type == HandshakeType.FINISHED:
            if not hs.ccs_received or self._read is None:
                raise AlertError(AlertDescription.UNEXPECTED_MESSAGE, "Finished before CCS")
            self._finished(seq, body, now)
        else:
            raise AlertError(AlertDescription.UNEXPECTED_MESSAGE, f"handshake type {msg_type}")

    def _client_key_exchange(self, identity: bytes, now: float) -> None:
        """Look up the PSK; an unknown identity, or one the driver refuses
        from this address (lockout), continues with a random key so that it
        fails at the Finished exactly like a wrong PSK (RFC 4279 §5.1). A
        pending one holds the handshake without an alert (:meth:`retry_psk`)."""
        hs = self._hs
        assert hs is not None
        self.identity = identity
        hs.finished_hash = hs.transcript.digest()
        self.phase = Phase.AWAIT_FINISHED
        if not self._engine.admits(identity, self.address):
            hs.locked_out = True
            self._use_psk(None, now)
            return
        psk = self._engine.lookup_psk(identity)
        if psk is PSK_PENDING:
            # Our flight reached the peer (it answered): no retransmission of
            # it while held; the peer's retransmission asks again.
            hs.held_until = hs.retransmit_at = now + self._engine.config.psk_hold
            self._engine.count("psk_held")
            return
        self._use_psk(psk, now)

    def retry_psk(self, now: float, *, final: bool = False) -> None:
        """Ask a held handshake's PSK again: go on with it, or as an unknown
        identity when the lookup now knows none (or still answers pending
        at the end of the hold, or ``final``)."""
        hs = self._hs
        if hs is None or hs.held_until is None:
            return
        assert self.identity is not None
        psk = self._engine.lookup_psk(self.identity)
        if psk is PSK_PENDING:
            if not final and now < hs.held_until:
                return
            self._engine.count("psk_hold_expired")
            psk = None
        self._use_psk(psk, now)

    def _use_psk(self, psk: bytes | None, now: float) -> None:
        """Derive the keys from ``psk`` (a random one if None) and read the
        peer's early records with them."""
        hs = self._hs
        assert hs is not None
        hs.held_until = None
        hs.identity_known = psk is not None
        if psk is None:
            psk = os.urandom(_DECOY_PSK_LENGTH)
        hs.master = crypto.extended_master_secret(
            crypto.psk_premaster_secret(psk), hs.finished_hash
        )
        hs.keys = crypto.key_block(self.cipher_suite, hs.master, hs.client_random, hs.server_random)
        self._install_read_keys(now)

    def _install_read_keys(self, now: float) -> None:
        hs = self._hs
        if hs is None or not hs.ccs_received or hs.keys is None or self._read is not None:
            return
        self._read = hs.keys.client
        self._read_epoch = 1
        early, hs.early_records = hs.early_records, []
        for record, address in early:
            self.receive(record, address, now)
            if self._hs is None:
                return

    def _finished(self, seq: int, body: bytes, now: float) -> None:
        hs = self._hs
        assert hs is not None and hs.keys is not None
        expected = crypto.finished_verify_data(hs.master, b"client finished", hs.finished_hash)
        if not hmac.compare_digest(body, expected):
            raise AlertError(AlertDescription.DECRYPT_ERROR, "client Finished does not verify")
        hs.transcript.add(wire.handshake_message(HandshakeType.FINISHED, seq, body))
        verify = crypto.finished_verify_data(hs.master, b"server finished", hs.transcript.digest())
        # Our message_seq runs in step with the peer's (ServerHello took the
        # ClientHello's), so our Finished has the number of theirs.
        finished = wire.handshake_message(HandshakeType.FINISHED, seq, verify)
        self._write = hs.keys.server
        self.final_flight = [
            (ContentType.CHANGE_CIPHER_SPEC, 0, b"\x01"),
            (ContentType.HANDSHAKE, 1, finished),
        ]
        self.final_flight_until = now + self._engine.config.final_flight_hold
        self.phase = Phase.ESTABLISHED
        self.last_activity = now
        self._hs = None
        self._transmit(self.final_flight)
        self._engine.established(self)
        self._engine.emit(SessionEstablished(self))

    # --- sending ---------------------------------------------------------------------------

    def send_application_data(self, data: bytes) -> None:
        """Protect and queue one application_data record."""
        self._engine.output(self._seal(ContentType.APPLICATION_DATA, data), self.address)

    def _seal(self, content_type: int, payload: bytes) -> bytes:
        assert self._write is not None
        sequence = self._write_seq[1]
        if sequence > wire.MAX_SEQUENCE:
            raise EngineError("sequence numbers of epoch 1 exhausted")
        self._write_seq[1] = sequence + 1
        return self._write.seal(content_type, 1, sequence, payload, self.peer_cid)

    def _plain(self, content_type: int, payload: bytes) -> bytes:
        sequence = self._write_seq[0]
        self._write_seq[0] = sequence + 1
        return wire.plaintext_record(content_type, 0, sequence, payload)

    def _transmit(self, flight: list[tuple[int, int, bytes]]) -> None:
        """Send a flight with fresh record sequence numbers, packed into as
        few datagrams as fit (RFC 6347 §4.1.1, §4.2.4)."""
        limit = self._engine.config.max_datagram
        datagram = b""
        for content_type, epoch, payload in flight:
            record = (
                self._seal(content_type, payload) if epoch else self._plain(content_type, payload)
            )
            if datagram and len(datagram) + len(record) > limit:
                self._engine.output(datagram, self.address)
                datagram = b""
            datagram += record
        if datagram:
            self._engine.output(datagram, self.address)

    def _send_flight(self, now: float) -> None:
        hs = self._hs
        assert hs is not None
        self._transmit(hs.flight)
        hs.retransmit_at = now + hs.retransmit_timeout

    def _send_alert(self, level: AlertLevel, description: AlertDescription) -> None:
        payload = bytes((level, description))
        if self._write is not None:
            self._engine.output(self._seal(ContentType.ALERT, payload), self.address)
        else:
            # The peer reads epoch 0 until our ChangeCipherSpec.
            self._engine.output(self._plain(ContentType.ALERT, payload), self.address)

    def close(self) -> None:
        """Send close_notify (RFC 5246 §7.2.1); the engine forgets the session."""
        if self.established:
            self._send_alert(AlertLevel.WARNING, AlertDescription.CLOSE_NOTIFY)

    def fail(self, reason: HandshakeFailure, alert: AlertDescription | None, now: float) -> None:
        """End a handshake, with a fatal alert unless the peer sent one."""
        if not self.handshaking:
            return
        if alert is not None:
            self._send_alert(AlertLevel.FATAL, alert)
        self._engine.abandon(self, HandshakeFailed(self.address, self.identity, reason))

    def forget_handshake(self) -> None:
        """Drop the handshake state (the engine closed the session)."""
        self.phase = Phase.CLOSED
        self._hs = None
        self.final_flight = None

    # --- timers ----------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When :meth:`on_timer` has something to do."""
        hs = self._hs
        if hs is not None:
            return min(hs.retransmit_at, hs.deadline)
        if self.phase is not Phase.ESTABLISHED:
            return None
        idle = self.last_activity + self._engine.config.idle_timeout
        if self.final_flight is not None:
            return min(idle, self.final_flight_until)
        return idle

    def on_timer(self, now: float) -> None:
        """Retransmit (doubling the timer up to its ceiling, RFC 6347
        §4.2.4.1), give up on a handshake, release the final flight, or close
        an idle session."""
        hs = self._hs
        if hs is not None and hs.held_until is not None and now >= hs.held_until:
            self.retry_psk(now, final=True)  # early records: errors handled by receive()
            hs = self._hs
        if hs is not None:
            if now >= hs.deadline:
                self.fail(HandshakeFailure.TIMEOUT, None, now)
            elif now >= hs.retransmit_at:
                hs.retransmit_timeout = min(
                    hs.retransmit_timeout * 2, self._engine.config.max_retransmit
                )
                self._engine.count("retransmitted_flights")
                self._send_flight(now)
            return
        if self.phase is not Phase.ESTABLISHED:
            return
        if self.final_flight is not None and now >= self.final_flight_until:
            self.final_flight = None
        if now >= self.last_activity + self._engine.config.idle_timeout:
            self.close()
            self._engine.end(self, CloseReason.IDLE_TIMEOUT)


def _parse_alert(payload: bytes) -> tuple[int, int]:
    if len(payload) != 2:
        raise ParseError("alert is not two bytes")
    return payload[0], payload[1]


__all__ = ["EngineError", "Phase", "Session"]
