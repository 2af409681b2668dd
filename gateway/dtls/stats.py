"""Counters of the DTLS server, snapshot for metrics and health checks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class DtlsStats:
    """One consistent snapshot of :meth:`DtlsServer.stats`."""

    #: Established sessions now.
    sessions: int
    #: Half-open handshakes now.
    handshaking: int
    #: Handshakes completed since start.
    handshakes_ok: int
    #: Handshakes that did not complete since start (sum of the reasons).
    handshakes_failed: int
    #: Stalled half-open handshakes dropped to admit a new one at the cap.
    handshakes_displaced: int
    #: Failed handshakes by :class:`~gateway.dtls.session.HandshakeFailure`.
    handshake_failures: Mapping[str, int]
    #: Ended sessions by :class:`~gateway.dtls.session.CloseReason`.
    sessions_closed: Mapping[str, int]
    datagrams_received: int
    datagrams_sent: int
    #: Datagrams dropped, by reason (``unknown_peer``: not a ClientHello from
    #: an address without session; ``handshake_cap``: ClientHello with cookie
    #: while at ``max_handshakes``; ``send_queue``/``send_error``: outgoing
    #: datagrams lost; ``closed_session``: message for an ended session;
    #: ``coap_unparsable``: decrypted payload not a CoAP message;
    #: ``not_accepting``: ClientHello while the server drains;
    #: ``address_handshake_cap``: ClientHello with cookie from an address that
    #: holds its share of ``max_handshakes``; ``handshake_window``,
    #: ``handshake_bytes``, ``malformed``: screened out while half-open, see
    #: :func:`gateway.dtls.records.screen_half_open`; on the engine:
    #: ``handshake_window`` / ``handshake_bytes`` for handshake messages
    #: beyond the reassembly window or budget, ``replayed``,
    #: ``bad_record_mac``, ``unknown_cid``, ``foreign_cid`` (another worker's
    #: CID with nobody to hand it to), ``session_cap``).
    dropped: Mapping[str, int]
    #: Sessions moved to a new peer address by an authenticated record with
    #: their Connection ID (RFC 9146 §6: NAT rebinding without a handshake).
    address_changes: int = 0
    #: Datagrams another worker received for a CID this one owns.
    handed_over: int = 0
    #: Handshakes held because their PSK lookup answered pending (an RFC 9202
    #: §3.3 kid identity being fetched from the shared token store).
    handshakes_held: int = 0
    #: Of those, the ones whose hold ended with the lookup still pending
    #: (they fail as ``unknown_identity``).
    holds_expired: int = 0


@dataclass
class Counters:
    """The mutable counters behind :class:`DtlsStats`."""

    handshakes_ok: int = 0
    handshakes_displaced: int = 0
    handshake_failures: Counter[str] = field(default_factory=Counter)
    sessions_closed: Counter[str] = field(default_factory=Counter)
    datagrams_received: int = 0
    datagrams_sent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    address_changes: int = 0
    handed_over: int = 0
    handshakes_held: int = 0
    holds_expired: int = 0

    def snapshot(
        self, *, sessions: int, handshaking: int, dropped: Counter[str] | None = None
    ) -> DtlsStats:
        return DtlsStats(
            sessions=sessions,
            handshaking=handshaking,
            handshakes_ok=self.handshakes_ok,
            handshakes_failed=sum(self.handshake_failures.values()),
            handshakes_displaced=self.handshakes_displaced,
            handshake_failures=MappingProxyType(dict(self.handshake_failures)),
            sessions_closed=MappingProxyType(dict(self.sessions_closed)),
            datagrams_received=self.datagrams_received,
            datagrams_sent=self.datagrams_sent,
            dropped=MappingProxyType(dict(self.dropped if dropped is None else dropped)),
            address_changes=self.address_changes,
            handed_over=self.handed_over,
            handshakes_held=self.handshakes_held,
            holds_expired=self.holds_expired,
        )
