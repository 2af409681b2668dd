"""A minimal sans-I/O DTLS 1.2 PSK client on the engine's record layer, with
Connection ID (RFC 6347, RFC 4279, RFC 6655, RFC 7627, RFC 9146).

For tests, benchmarks and the rebinding relay: no foreign client installable
here speaks RFC 9146. It handles whole (unfragmented) server messages,
retransmits its flights on a doubling timer and keeps a replay window; it is
not meant to face hostile servers.
"""

from __future__ import annotations

import hmac
import os

from . import crypto, wire
from .errors import AlertDescription, AlertLevel, EngineError, ParseError
from .replay import ReplayWindow
from .wire import ContentType, ExtensionType, HandshakeType


class ClientError(EngineError):
    """The server answered with an alert or something the client cannot use."""


class DtlsClient:
    """One client association. Datagrams to send are returned by each call."""

    def __init__(
        self,
        identity: bytes,
        psk: bytes,
        *,
        cid: bytes | None = None,
        cipher_suites: tuple[int, ...] = (crypto.TLS_PSK_WITH_AES_128_CCM_8.code,),
        extended_master_secret: bool = True,
        initial_retransmit: float = 1.0,
    ) -> None:
        #: ``cid``: None offers no CID extension; b"" offers one asking the
        #: server not to put a CID on its records; bytes: that CID.
        self._identity = identity
        self._psk = psk
        self._own_cid = cid
        self._suites = cipher_suites
        self._ems = extended_master_secret
        self._initial_retransmit = initial_retransmit
        self._random = os.urandom(32)
        self._transcript = crypto.Transcript()
        self._write_seq = [0, 0]
        self._epoch = 0
        self._message_seq = 0
        self._flight: list[tuple[int, int, bytes]] = []
        self._retransmit_at: float | None = None
        self._timeout = initial_retransmit
        self._keys: crypto.KeyBlock | None = None
        self._master = b""
        self._suite = crypto.TLS_PSK_WITH_AES_128_CCM_8
        self._window = ReplayWindow()
        self._expect_seq = 0
        self._server_random = b""
        self._client_finished_hash = b""
        self._server_ccs = False
        #: The CID the server asked us to put on our records (b"": none).
        self.server_cid = b""
        self.established = False
        self.closed = False
        #: Alerts received: (level, description).
        self.alerts: list[tuple[int, int]] = []
        #: Application data received, in order.
        self.received: list[bytes] = []
        #: Flights retransmitted by the timer.
        self.retransmissions = 0

    # --- driver interface ---------------------------------------------------------------

    def connect(self, now: float) -> list[bytes]:
        """The first ClientHello (no cookie)."""
        return self._send_hello(b"", now, in_transcript=False)

    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        """Process a datagram from the server; returns datagrams to send."""
        out: list[bytes] = []
        records, _ = wire.parse_records(datagram, len(self._own_cid or b""))
        for record in records:
            out += self._record(record, now)
        return out

    def send(self, data: bytes) -> bytes:
        """One application_data record."""
        if not self.established or self.closed:
            raise ClientError("no session")
        return self._seal(ContentType.APPLICATION_DATA, data)

    def close(self) -> bytes:
        """close_notify."""
        self.closed = True
        return self._seal(ContentType.ALERT, bytes((AlertLevel.WARNING, 0)))

    def next_deadline(self) -> float | None:
        return self._retransmit_at

    def handle_timer(self, now: float) -> list[bytes]:
        """Retransmit the last flight if its timer ran out (RFC 6347 §4.2.4)."""
        if self._retransmit_at is None or now < self._retransmit_at:
            return []
        self._timeout = min(self._timeout * 2, 60.0)
        self.retransmissions += 1
        return self._transmit(now)

    # --- handshake ------------------------------------------------------------------------

    def _send_hello(self, cookie: bytes, now: float, *, in_transcript: bool) -> list[bytes]:
        extensions = []
        if self._ems:
            extensions.append(wire.extension(ExtensionType.EXTENDED_MASTER_SECRET, b""))
        extensions.append(wire.extension(ExtensionType.RENEGOTIATION_INFO, b"\x00"))
        if self._own_cid is not None:
            cid = self._own_cid
            extensions.append(wire.extension(ExtensionType.CONNECTION_ID, bytes((len(cid),)) + cid))
        ext = b"".join(extensions)
        suites = b"".join(s.to_bytes(2, "big") for s in self._suites)
        body = b"".join(
            (
                wire.DTLS_1_2.to_bytes(2, "big"),
                self._random,
                b"\x00",
                bytes((len(cookie),)),
                cookie,
                len(suites).to_bytes(2, "big"),
                suites,
                b"\x01\x00",
                len(ext).to_bytes(2, "big"),
                ext,
            )
        )
        message = wire.handshake_message(HandshakeType.CLIENT_HELLO, self._message_seq, body)
        self._message_seq += 1
        if in_transcript:
            # The transcript starts with the ClientHello that carries the
            # accepted cookie (RFC 6347 §4.2.1); a new cookie restarts it.
            self._transcript = crypto.Transcript()
            self._transcript.add(message)
        self._flight = [(ContentType.HANDSHAKE, 0, message)]
        self._timeout = self._initial_retransmit
        return self._transmit(now)

    def _record(self, record: wire.Record, now: float) -> list[bytes]:
        if record.epoch == 0:
            if record.content_type == ContentType.HANDSHAKE:
                return self._handshake(record.fragment, now)
            if record.content_type == ContentType.CHANGE_CIPHER_SPEC:
                self._server_ccs = True
            elif record.content_type == ContentType.ALERT and not self.established:
                self.alerts.append((record.fragment[0], record.fragment[1]))
                self.closed = True
                self._retransmit_at = None
            return []
        if self._keys is None or not self._window.is_fresh(record.sequence):
            return []
        opened = self._keys.server.open(
            record.content_type,
            record.version,
            record.epoch,
            record.sequence,
            record.fragment,
            record.cid,
        )
        if opened is None:
            return []
        self._window.commit(record.sequence)
        content_type, plaintext = opened
        if content_type == ContentType.HANDSHAKE:
            return self._handshake(plaintext, now)
        if content_type == ContentType.APPLICATION_DATA:
            self.received.append(plaintext)
        elif content_type == ContentType.ALERT:
            self.alerts.append((plaintext[0], plaintext[1]))
            if plaintext[1] == AlertDescription.CLOSE_NOTIFY or plaintext[0] == AlertLevel.FATAL:
                self.closed = True
        return []

    def _handshake(self, payload: bytes, now: float) -> list[bytes]:
        out: list[bytes] = []
        for fragment in wire.parse_handshake_fragments(payload):
            if not fragment.is_whole or fragment.message_seq < self._expect_seq:
                continue
            out += self._message(fragment, now)
        return out

    def _message(self, fragment: wire.HandshakeFragment, now: float) -> list[bytes]:
        kind, body = fragment.msg_type, fragment.body
        whole = wire.handshake_message(kind, fragment.message_seq, body)
        self._expect_seq = fragment.message_seq + 1
        if kind == HandshakeType.HELLO_VERIFY_REQUEST:
            reader = wire.Reader(body)
            reader.uint(2)
            return self._send_hello(reader.vector(1), now, in_transcript=True)
        if kind == HandshakeType.SERVER_HELLO:
            self._transcript.add(whole)
            self._server_hello(body)
            return []
        if kind == HandshakeType.SERVER_HELLO_DONE:
            self._transcript.add(whole)
            return self._key_exchange(now)
        if kind == HandshakeType.FINISHED and self._server_ccs:
            expected = crypto.finished_verify_data(
                self._master, b"server finished", self._transcript.digest()
            )
            if not hmac.compare_digest(body, expected):
                raise ClientError("server Finished does not verify")
            self.established = True
            self._retransmit_at = None
            self._flight = []
            return []
        raise ParseError(f"unexpected handshake message {kind}")

    def _server_hello(self, body: bytes) -> None:
        reader = wire.Reader(body)
        reader.uint(2)
        self._server_random = reader.take(32)
        reader.vector(1)
        self._suite = crypto.CIPHER_SUITES[reader.uint(2)]
        reader.uint(1)
        seen = set()
        if reader.remaining:
            ext_reader = wire.Reader(reader.vector(2))
            while ext_reader.remaining:
                ext_type = ext_reader.uint(2)
                data = ext_reader.vector(2)
                seen.add(ext_type)
                if ext_type == ExtensionType.CONNECTION_ID:
                    self.server_cid = wire.parse_connection_id_extension(data)
        if self._ems and ExtensionType.EXTENDED_MASTER_SECRET not in seen:
            raise ClientError("server did not agree to the extended master secret")

    def _key_exchange(self, now: float) -> list[bytes]:
        identity = len(self._identity).to_bytes(2, "big") + self._identity
        cke = wire.handshake_message(HandshakeType.CLIENT_KEY_EXCHANGE, self._message_seq, identity)
        self._transcript.add(cke)
        session_hash = self._transcript.digest()
        premaster = crypto.psk_premaster_secret(self._psk)
        if self._ems:
            self._master = crypto.extended_master_secret(premaster, session_hash)
        else:
            self._master = crypto.prf(
                premaster, b"master secret", self._random + self._server_random, 48
            )
        self._keys = crypto.key_block(self._suite, self._master, self._random, self._server_random)
        verify = crypto.finished_verify_data(self._master, b"client finished", session_hash)
        finished = wire.handshake_message(HandshakeType.FINISHED, self._message_seq + 1, verify)
        self._transcript.add(finished)
        self._message_seq += 2
        self._flight = [
            (ContentType.HANDSHAKE, 0, cke),
            (ContentType.CHANGE_CIPHER_SPEC, 0, b"\x01"),
            (ContentType.HANDSHAKE, 1, finished),
        ]
        self._timeout = self._initial_retransmit
        return self._transmit(now)

    # --- records ----------------------------------------------------------------------------

    def _transmit(self, now: float) -> list[bytes]:
        datagram = b""
        for content_type, epoch, payload in self._flight:
            if epoch:
                datagram += self._seal(content_type, payload)
            else:
                sequence = self._write_seq[0]
                self._write_seq[0] += 1
                datagram += wire.plaintext_record(content_type, 0, sequence, payload)
        self._retransmit_at = now + self._timeout
        return [datagram]

    def _seal(self, content_type: int, payload: bytes) -> bytes:
        if self._keys is None:
            raise ClientError("no keys")
        sequence = self._write_seq[1]
        self._write_seq[1] += 1
        return self._keys.client.seal(content_type, 1, sequence, payload, self.server_cid)

    def jump_sequence(self, sequence: int) -> None:
        """Continue epoch 1 at ``sequence`` (tests: huge sequence gaps)."""
        self._write_seq[1] = sequence
