"""Settings of one DTLS server socket (bind address, session limits, timeouts).

The gateway builds this from its ``[server]`` and ``[dtls]`` configuration
tables; tests build it directly with small timeouts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gateway.errors import ConfigError

#: The coaps default port (RFC 7252 §12.7).
COAPS_PORT = 5684


@dataclass(frozen=True)
class DtlsServerConfig:
    """Where to listen and how many sessions to keep (RFC 6347 §4.2.1 cookie
    exchange is always on)."""

    #: IP literal to bind; ``"::"`` is dual-stack, ``"0.0.0.0"`` IPv4 only.
    host: str = "::"
    #: UDP port, bound exactly (0: any free port, read back from the server).
    port: int = COAPS_PORT
    #: Set SO_REUSEPORT so several worker processes can share the port.
    reuse_port: bool = False
    #: Sessions (established + handshaking) kept; beyond it the longest-idle
    #: established session is evicted.
    max_sessions: int = 10_000
    #: Half-open handshakes allowed at once; further ClientHellos that carry a
    #: cookie are dropped (the peer retransmits later).
    max_handshakes: int = 500
    #: Share of ``max_handshakes`` one source address may hold half-open at
    #: once (at least 1): one address cannot fill the table.
    address_handshake_share: float = 0.2
    #: Seconds after which a half-open handshake whose peer sent nothing
    #: since the server's first flight may be displaced by a new one when
    #: ``max_handshakes`` are half-open (None: a quarter of
    #: ``handshake_timeout``).
    handshake_stall: float | None = None
    #: Bytes a peer may send while its handshake is half-open (tinydtls
    #: transport: more are dropped before tinydtls; an honest PSK handshake
    #: needs well under 2 kB, retransmissions included). The engine buffers at
    #: most ``min(handshake_bytes, 4096)`` bytes of future handshake messages
    #: per peer and processes the rest record by record.
    handshake_bytes: int = 16 * 1024
    #: Length of the Connection IDs the server assigns to peers that offer the
    #: extension (RFC 9146); 0 turns it off. A session then survives a change
    #: of the peer's address (NAT rebinding) without a new handshake.
    cid_length: int = 6
    #: The worker that owns this socket's sessions, written as the first CID
    #: byte, so a datagram the kernel delivers to another worker of the same
    #: port can be handed to the owner (None: one process).
    cid_owner: int | None = None
    #: Datagrams per second (and burst) this worker passes to the worker its
    #: CID names; more are dropped and counted (``hand_over_limit``). The CID
    #: of a record cannot be checked before the owner decrypts it, so a peer
    #: sending records with random CIDs must not make workers forward
    #: unbounded traffic through the supervisor.
    hand_over_rate: float = 2000.0
    hand_over_burst: int = 2000
    #: Seconds without an authenticated datagram before a session is closed.
    idle_timeout: float = 300.0
    #: Seconds a handshake may take before its state is dropped.
    handshake_timeout: float = 10.0
    #: SO_RCVBUF to request in bytes (0: the OS default; Linux caps it at
    #: net.core.rmem_max). Bursts of handshakes or close_notify need room.
    receive_buffer: int = 4 << 20
    #: Outgoing datagrams queued while the socket is full; more are dropped.
    send_queue_limit: int = 4096
    #: File descriptor of an already bound UDP socket to serve on instead of
    #: binding one (a worker supervisor keeps the socket open across worker
    #: restarts, so its place in the SO_REUSEPORT group and the peers the
    #: kernel hashes to it stay). The server uses a duplicate of it; ``host``
    #: must name the socket's address family and wildcard-ness.
    inherited_fd: int | None = None

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            raise ConfigError("not an IP address literal", key="server.bind") from None
        checks = (
            ("server.port", 0 <= self.port <= 65535),
            ("dtls.max_sessions", self.max_sessions >= 1),
            ("dtls.max_handshakes", 1 <= self.max_handshakes <= self.max_sessions),
            ("dtls.address_handshake_share", 0 < self.address_handshake_share <= 1),
            ("dtls.handshake_bytes", self.handshake_bytes >= 1024),
            ("dtls.idle_timeout", self.idle_timeout > 0),
            ("dtls.handshake_timeout", self.handshake_timeout > 0),
            ("dtls.receive_buffer", self.receive_buffer >= 0),
            ("dtls.send_queue_limit", self.send_queue_limit >= 0),
            (
                "dtls.cid_length",
                self.cid_length == 0
                or (4 if self.cid_owner is not None else 1) <= self.cid_length <= 32,
            ),
            ("server.workers", self.cid_owner is None or 0 <= self.cid_owner <= 255),
            ("dtls.hand_over_rate", self.hand_over_rate > 0),
            ("dtls.hand_over_burst", self.hand_over_burst >= 1),
        )
        for key, ok in checks:
            if not ok:
                raise ConfigError("value out of range", key=key)

    @property
    def max_handshakes_per_address(self) -> int:
        """Half-open handshakes one source address may hold at once."""
        return max(1, int(self.max_handshakes * self.address_handshake_share))

    @property
    def is_wildcard(self) -> bool:
        """True for ``::`` and ``0.0.0.0``: replies must then be sent from the
        address each request was sent to (IP_PKTINFO / IPV6_PKTINFO)."""
        return ipaddress.ip_address(self.host).is_unspecified
