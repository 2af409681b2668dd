"""Hostile DTLS peers for the availability tests and the benchmark: raw
records (RFC 6347 §4.1, §4.2.2) and a half-open flood from one address, built
by hand so that they can do what no DTLS library would (complete the cookie
exchange and stop, send handshake messages out of order).

Not used by the gateway itself.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time

from .records import HandshakeType, first_handshake_type


def client_hello(cookie: bytes = b"", *, seq: int = 0, random: bytes | None = None) -> bytes:
    """A DTLS 1.2 ClientHello as tinydtls' own client sends it: PSK suites,
    the renegotiation SCSV, extended_master_secret."""
    body = (
        b"\xfe\xfd"
        + (random or os.urandom(32))
        + b"\x00"
        + bytes([len(cookie)])
        + cookie
        + b"\x00\x06\xc0\xa8\xc0\xa4\x00\xff\x01\x00\x00\x04\x00\x17\x00\x00"
    )
    return handshake_record(HandshakeType.CLIENT_HELLO, body, seq=seq)


def handshake_record(msg_type: int, body: bytes, *, seq: int, record_seq: int = 0) -> bytes:
    length = len(body).to_bytes(3, "big")
    message = bytes([msg_type]) + length + seq.to_bytes(2, "big") + b"\0\0\0" + length + body
    header = b"\x16\xfe\xfd\x00\x00" + record_seq.to_bytes(6, "big")
    return header + len(message).to_bytes(2, "big") + message


def cookie_of(hello_verify: bytes) -> bytes:
    at = 13 + 12 + 2
    return hello_verify[at + 1 : at + 1 + hello_verify[at]]


def half_open_flood(
    target: tuple[str, int],
    source: str,
    *,
    sockets: int,
    rounds: int,
    duration: float,
    stop: threading.Event | None = None,
) -> int:
    """Cookie-completing ClientHellos from ``sockets`` ports of ``source``,
    ``rounds`` times within ``duration`` seconds (or until ``stop`` is set);
    returns how many were sent. Blocking: run it in a thread."""
    socks = []
    selector = selectors.DefaultSelector()
    sent = 0
    try:
        for _ in range(sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((source, 0))
            s.connect(target)
            s.setblocking(False)
            socks.append(s)
            selector.register(s, selectors.EVENT_READ)
        started = time.monotonic()
        for _ in range(rounds):
            if stop is not None and stop.is_set():
                break
            randoms = {}
            for s in socks:
                randoms[s] = os.urandom(32)
                s.send(client_hello(random=randoms[s]))
            waiting = set(socks)
            until = time.monotonic() + duration / rounds
            while time.monotonic() < until and not (stop is not None and stop.is_set()):
                for key, _ in selector.select(0.02):
                    s = key.fileobj  # type: ignore[assignment]
                    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                        while True:
                            data = s.recv(2048)
                            kind = first_handshake_type(data)
                            if s in waiting and kind == HandshakeType.HELLO_VERIFY_REQUEST:
                                waiting.discard(s)
                                s.send(client_hello(cookie_of(data), seq=1, random=randoms[s]))
                                sent += 1
            if time.monotonic() - started > duration * 1.5:
                break
    finally:
        selector.close()
        for s in socks:
            s.close()
    return sent


__all__ = ["client_hello", "cookie_of", "half_open_flood", "handshake_record"]
