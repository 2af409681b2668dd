"""A deliberately permissive fake gateway (test-only): a DTLS-PSK CoAP server
on 127.0.0.1 that accepts everything the simulator's attacks try, so each
attack must show up as a finding.

What it gets wrong on purpose:

* its PSK table may hold, for some identities, the *wrong* key an attacker
  uses (``extra_psks``): the handshake with the wrong key completes;
* a cookie-less ClientHello that offers a single cipher suite (the
  simulator's flood probe; tinydtls clients offer three) is answered with a
  ServerHello instead of a HelloVerifyRequest;
* a new ClientHello from an address with an established session is
  dropped (so a device that rebooted cannot come back);
* it locks a device out when others name it: three PSK lookups of an
  identity from another address than the one it authenticated from ban the
  identity (handshakes fail, requests on its session get 4.01);
* with ``starve_on_flood``, once more than 20 stateful answers to probing
  ClientHellos went out within 2 s, it drops every ClientHello (an honest
  device gets no session during a half-open flood);
* ``/token`` answers 2.01 to anything, including malformed CBOR and
  oversized bodies (Block1 transfers get 2.31 Continue for every block);
* ``/authz-info`` answers 2.01 to any token, expired or not;
* every other path answers 2.05, whatever its Proof option (none checked,
  no replay window, no scope, no Echo, no rate limit, no binding of a token
  to the session it is used on).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Mapping

from DTLSSocket import dtls

from device_sim import coap
from device_sim.coap import CoapMessage, MessageType, OptionNumber
from tokens import cnf as cnf_mod
from tokens.ace import TokenResponse
from tokens.keys import SymmetricKey


def _key(host: str, port: int) -> tuple[str, tuple[str, int]]:
    mapped = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "::ffff:" + host))
    return mapped, (mapped, port)


class FakeGateway:
    """See the module docstring. ``psks`` maps identity -> PSK."""

    def __init__(
        self,
        psks: Mapping[bytes, bytes],
        *,
        extra_psks: Mapping[bytes, bytes] | None = None,
        token_lifetime: int = 2,
        starve_on_flood: bool = False,
    ) -> None:
        self.psks = dict(psks)
        self.psks.update(extra_psks or {})
        self.token_lifetime = token_lifetime
        self.sock: socket.socket | None = None
        self.address: tuple[str, int] = ("127.0.0.1", 0)
        self._peers: dict[tuple[str, int], tuple[str, int]] = {}
        self._sessions: dict[tuple[str, int], object] = {}
        self._connected: set[tuple[str, int]] = set()
        self._current: tuple[str, int] | None = None
        self._replies: list[tuple[tuple[str, int], bytes]] = []
        self.requests: dict[str, int] = {}
        self._ctx: object | None = None
        self.starve_on_flood = starve_on_flood
        self._probes: deque[float] = deque()
        self._asked: dict[tuple[str, int], bytes] = {}
        self._identity_of: dict[tuple[str, int], bytes] = {}
        self._home: dict[bytes, str] = {}
        self._named: dict[bytes, int] = {}
        self.banned: set[bytes] = set()
        self.starved = 0

    # --- tinydtls callbacks -------------------------------------------------------

    def _write(self, addr: tuple[str, int], data: bytes) -> int:
        real = self._peers.get(addr)
        if real is not None and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendto(data, real)
        return len(data)

    def _read(self, addr: tuple[str, int], data: bytes) -> int:
        self._replies.append((addr, bytes(data)))
        return 0

    def _event(self, level: int, code: int) -> None:
        if self._current is not None and level == 0 and code == 0x01DE:
            self._connected.add(self._current)
            identity = self._asked.get(self._current)
            if identity is not None:
                self._identity_of[self._current] = identity
                self._home.setdefault(identity, self._current[0])

    def keys(self) -> FakeGateway:  # the PSK store protocol of DTLSSocket
        return self

    def __contains__(self, identity: object) -> bool:
        return identity in self.psks

    def __getitem__(self, identity: bytes) -> bytes:
        identity = bytes(identity)
        if self._current is not None:
            self._asked[self._current] = identity
            home = self._home.get(identity)
            if home is not None and home != self._current[0]:
                self._named[identity] = self._named.get(identity, 0) + 1
                if self._named[identity] >= 3:
                    self.banned.add(identity)
        if identity in self.banned:
            return os.urandom(16)
        return self.psks.get(identity, os.urandom(16))

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self._ctx = dtls.DTLS(
            read=self._read, write=self._write, event=self._event, pskId=b"", pskStore=self
        )
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    async def stop(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            for session in self._sessions.values():
                with contextlib.suppress(Exception):
                    self._ctx.resetPeer(session)  # type: ignore[attr-defined]
            self.sock.close()
            self.sock = None
        self._ctx = None

    # --- datagrams --------------------------------------------------------------------

    def _readable(self) -> None:
        assert self.sock is not None
        for _ in range(64):
            try:
                data, real = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            mapped, key = _key(real[0], real[1])
            self._peers[key] = real
            if self._client_hello(data, key, real):
                continue
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = dtls.Session(mapped, real[1])
            self._current = key
            self._ctx.handleMessage(session, data)  # type: ignore[attr-defined]
            self._current = None
            replies, self._replies = self._replies, []
            for addr, plaintext in replies:
                answer = self._coap(plaintext, self._identity_of.get(addr))
                if answer is not None:
                    self._ctx.write(self._sessions[addr], answer)  # type: ignore[attr-defined]

    def _client_hello(self, data: bytes, key: tuple[str, int], real: tuple[str, int]) -> bool:
        """Permissive handshake handling; True when the datagram was consumed."""
        if len(data) < 26 or data[0] != 22 or data[3:5] != b"\x00\x00" or data[13] != 1:
            return False
        if key in self._connected:
            return True  # a rebooted device cannot come back
        now = time.monotonic()
        while self._probes and self._probes[0] < now - 2.0:
            self._probes.popleft()
        if self.starve_on_flood and len(self._probes) > 20:
            self.starved += 1
            return True
        body = data[25:]  # version(2) random(32) session_id cookie cipher_suites ...
        at = 35 + body[34]
        cookie_len = body[at]
        suites_at = at + 1 + cookie_len
        suites_len = int.from_bytes(body[suites_at : suites_at + 2], "big")
        if cookie_len == 0 and suites_len == 2 and self.sock is not None:
            hello = b"\xfe\xfd" + os.urandom(32) + b"\x00" + b"\xc0\xa8" + b"\x00"
            n = len(hello)
            hs = (
                bytes((2,))
                + n.to_bytes(3, "big")
                + b"\x00\x00\x00\x00\x00"
                + (n.to_bytes(3, "big") + hello)
            )
            record = b"\x16\xfe\xfd\x00\x00" + bytes(6) + len(hs).to_bytes(2, "big") + hs
            self.sock.sendto(record, real)
            self._probes.append(now)
            return True
        return False

    def _coap(self, data: bytes, identity: bytes | None = None) -> bytes | None:
        try:
            req = coap.decode(data)
        except coap.CoapFormatError:
            return None
        if not req.is_request or req.mtype != MessageType.CON:
            return None
        path = "/" + "/".join(v.decode() for n, v in req.options if n == OptionNumber.URI_PATH)
        self.requests[path] = self.requests.get(path, 0) + 1
        options: list[tuple[int, bytes]] = []
        payload = b""
        block1 = req.uint_option(OptionNumber.BLOCK1)
        if block1 is not None and block1 & 0x08:  # more blocks follow: Continue
            options.append((int(OptionNumber.BLOCK1), coap.encode_uint(block1)))
            code = 0x5F  # 2.31
        elif identity in self.banned:
            code = 0x81  # 4.01
            payload = b"temporarily locked out after repeated failures"
        elif path == "/token":
            kid = os.urandom(6)
            key = SymmetricKey(kid, os.urandom(16))
            payload = TokenResponse(
                access_token=os.urandom(40),
                expires_in=self.token_lifetime,
                cnf=cnf_mod.CnfKey(key).to_cbor(),
            ).encode()
            options.append((int(OptionNumber.CONTENT_FORMAT), b"\x13"))
            code = 0x41  # 2.01
        elif path == "/authz-info":
            code = 0x41
        else:
            code = 0x45  # 2.05
            payload = b"ok"
        reply = CoapMessage(MessageType.ACK, code, req.mid, req.token, options, payload)
        return coap.encode(reply)
