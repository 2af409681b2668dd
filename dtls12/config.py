"""Settings of the DTLS engine, checked when built (each error names its key)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .crypto import CIPHER_SUITES, TLS_PSK_WITH_AES_128_CCM, TLS_PSK_WITH_AES_128_CCM_8
from .errors import ConfigurationError

#: RFC 4279 §5.3: identities up to 128 bytes and PSKs up to 64 bytes MUST be
#: supported; RFC 9202 §3.2.2 puts whole access tokens in the identity.
DEFAULT_MAX_IDENTITY = 1024
MAX_PSK_LENGTH = 64


class PskPending(Enum):
    """What ``psk_lookup`` answers for an identity whose key is being
    fetched elsewhere (RFC 9202 §3.3: a kid naming a token another server
    holds). The handshake is held without an alert, so the peer
    retransmits its flight (RFC 6347 §4.2.4) instead of giving up; it asks
    again when a record of the peer arrives, when the driver calls
    :meth:`~dtls12.engine.DtlsServerEngine.retry_held`, and a last time after
    ``EngineConfig.psk_hold`` seconds, then fails as an unknown identity."""

    PENDING = "pending"


PSK_PENDING = PskPending.PENDING


@dataclass(frozen=True)
class EngineConfig:
    """What the engine negotiates, how long it waits and how much it keeps."""

    #: Suites in order of preference (RFC 6655 §4 codes).
    cipher_suites: tuple[int, ...] = (
        TLS_PSK_WITH_AES_128_CCM_8.code,
        TLS_PSK_WITH_AES_128_CCM.code,
    )
    #: Length of the Connection IDs this server assigns (RFC 9146); 0 turns
    #: the extension off (a client's offer is then ignored).
    cid_length: int = 6
    #: If set, the first CID byte: the worker that owns the session, so a
    #: datagram that reaches another worker can be handed over.
    cid_owner: int | None = None
    #: Established and handshaking sessions kept at once; beyond it new
    #: handshakes are refused.
    max_sessions: int = 10_000
    #: Handshakes in progress at once (state exists only after a valid cookie).
    max_handshakes: int = 500
    #: Handshakes in progress at once from one IP address (None: no cap).
    max_handshakes_per_host: int | None = None
    #: Seconds a handshake may take in all.
    handshake_timeout: float = 30.0
    #: At ``max_handshakes``, a new handshake displaces the oldest one whose
    #: peer sent nothing since the server's first flight for this many
    #: seconds (None: a quarter of ``handshake_timeout``), so under a flood
    #: handshakes under way finish and stalled ones make room.
    handshake_stall: float | None = None
    #: Seconds a handshake whose PSK lookup answered pending waits, without
    #: an alert, for the key; then it fails as an unknown identity.
    psk_hold: float = 3.0
    #: RFC 6347 §4.2.4.1: initial retransmission timer and its ceiling.
    initial_retransmit: float = 1.0
    max_retransmit: float = 60.0
    #: How long the final flight is kept for retransmission when the peer
    #: sends no application data (RFC 6347 §4.2.4: twice the TCP MSL).
    final_flight_hold: float = 240.0
    #: Seconds without an authenticated record before a session is closed.
    idle_timeout: float = 300.0
    #: Longest psk_identity looked up (longer ones fail like unknown ones).
    max_identity_length: int = DEFAULT_MAX_IDENTITY
    #: Seconds between cookie secret rotations (RFC 6347 §4.2.1).
    cookie_rotation: float = 30.0
    #: Handshake bytes buffered for reassembly per peer, and how many
    #: message_seq values ahead of the next expected one are accepted.
    max_reassembly_bytes: int = 4096
    reassembly_window: int = 4
    #: Largest datagram the engine sends (handshake flights are packed up to it).
    max_datagram: int = 1200

    @property
    def stall_after(self) -> float:
        """Seconds after which a silent half-open handshake may be displaced."""
        if self.handshake_stall is None:
            return self.handshake_timeout / 4
        return self.handshake_stall

    def __post_init__(self) -> None:
        checks = (
            (
                "cipher_suites",
                bool(self.cipher_suites)
                and all(code in CIPHER_SUITES for code in self.cipher_suites),
            ),
            (
                "cid_length",
                0 <= self.cid_length <= 32 and (self.cid_owner is None or self.cid_length >= 4),
            ),
            ("cid_owner", self.cid_owner is None or 0 <= self.cid_owner <= 255),
            ("max_sessions", self.max_sessions >= 1),
            ("max_handshakes", 1 <= self.max_handshakes <= self.max_sessions),
            (
                "max_handshakes_per_host",
                self.max_handshakes_per_host is None or self.max_handshakes_per_host >= 1,
            ),
            ("handshake_timeout", self.handshake_timeout > 0),
            ("handshake_stall", self.handshake_stall is None or self.handshake_stall > 0),
            ("psk_hold", self.psk_hold > 0),
            ("initial_retransmit", 0 < self.initial_retransmit <= self.max_retransmit),
            ("final_flight_hold", self.final_flight_hold >= 0),
            ("idle_timeout", self.idle_timeout > 0),
            ("max_identity_length", 1 <= self.max_identity_length <= 65535),
            ("cookie_rotation", self.cookie_rotation > 0),
            ("max_reassembly_bytes", self.max_reassembly_bytes >= 256),
            ("reassembly_window", 2 <= self.reassembly_window <= 16),
            ("max_datagram", 256 <= self.max_datagram <= 65507),
        )
        for key, ok in checks:
            if not ok:
                raise ConfigurationError(key, "value out of range")
