"""``request.remote`` for CoAP requests that arrived over a DTLS-PSK session.

An aiocoap :class:`~aiocoap.interfaces.EndpointAddress` (RFC 7252 §9.1: the
security context is part of the endpoint). One object exists per session
epoch, and it compares by identity, so message deduplication, block-wise
assembly and observations never mix two sessions of the same address
(aiocoap's EndpointAddress contract, RFC 7252 §9.1.2). When a Connection ID
moves a session to another address (RFC 9146 §6) the object stays and its
``address`` follows, so deduplication, tokens and replay windows carry over.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiocoap import error, interfaces
from aiocoap.numbers.constants import MAX_REGULAR_BLOCK_SIZE_EXP
from aiocoap.util import hostportjoin

from dtls12.events import identity_label

from .config import COAPS_PORT

if TYPE_CHECKING:
    from .session import CloseReason


class _Transport(Protocol):
    """What a remote asks the transport that made it."""

    def _remote_is_current(self, remote: DtlsRemote) -> bool: ...

    def _local_hostinfo(self, session: Any) -> str: ...


def hostinfo(host: str, port: int) -> str:
    """URI authority for a coaps peer (RFC 7252 §6.2): IPv4-mapped IPv6
    addresses shown as IPv4, the default port left out."""
    if host[:7].lower() == "::ffff:" and "." in host:
        host = host[7:]
    return str(hostportjoin(host, None if port == COAPS_PORT else port))


@dataclass(frozen=True)
class PskIdentityClaim:
    """What a DTLS-PSK handshake proved: the peer holds the PSK registered for
    ``identity`` (RFC 4279 §2; RFC 9202 §3.3.2 when the identity names an
    access token)."""

    identity: bytes

    def __repr__(self) -> str:
        return f"PskIdentityClaim({identity_label(self.identity)})"


class DtlsSessionClosed(error.NetworkError):  # type: ignore[misc]
    """The DTLS session a message was exchanged on ended (dispatched to
    aiocoap so pending exchanges with that remote stop)."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"DTLS session closed: {reason.value}")
        self.reason = reason


class DtlsRemote(interfaces.EndpointAddress):  # type: ignore[misc]
    """The peer of one established DTLS session, as seen by resources.

    ``psk_identity`` is the authenticated identity, ``address`` the peer's
    socket address, ``authenticated_claims`` a one-element tuple holding a
    :class:`PskIdentityClaim`.
    """

    scheme = "coaps"
    is_multicast = False
    is_multicast_locally = False
    #: Always True: the message came through a DTLS session.
    is_secure = True
    # Class attributes shadow the base class properties so that instances
    # can set them (aiocoap lowers maximum_block_size_exp per remote).
    maximum_block_size_exp: int = MAX_REGULAR_BLOCK_SIZE_EXP
    authenticated_claims: tuple[PskIdentityClaim, ...] = ()

    def __init__(
        self,
        server: _Transport,
        session: Any,
        address: tuple[object, ...],
        psk_identity: bytes,
    ) -> None:
        self._server = server
        self._session = session
        self.address = address
        self.psk_identity = psk_identity
        self.authenticated_claims = (PskIdentityClaim(psk_identity),)

    def __repr__(self) -> str:
        return f"<DtlsRemote {self.hostinfo} as {identity_label(self.psk_identity)}>"

    @property
    def is_open(self) -> bool:
        """True while the session this remote belongs to is established."""
        return self._server._remote_is_current(self)

    @functools.cached_property
    def hostinfo(self) -> str:
        return hostinfo(str(self.address[0]), int(str(self.address[1])))

    def moved(self, address: tuple[object, ...]) -> None:
        """The session now reaches its peer at ``address`` (RFC 9146 §6)."""
        self.address = address
        self.__dict__.pop("hostinfo", None)

    @property
    def hostinfo_local(self) -> str:
        return self._server._local_hostinfo(self._session)

    @property
    def uri_base(self) -> str:
        return "coaps://" + self.hostinfo

    @property
    def uri_base_local(self) -> str:
        return "coaps://" + self.hostinfo_local

    @property
    def blockwise_key(self) -> DtlsRemote:
        # One remote per session epoch: blocks never combine across sessions.
        return self
