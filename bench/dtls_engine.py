"""The DTLS engine's server costs next to tinydtls (DTLSSocket 0.2.3), in one
process, in memory (no sockets: only the server side is timed).

- handshakes/s per core: server CPU for a whole PSK handshake (cookie
  exchange included), clients driven in memory, only the server's calls
  timed;
- server CPU per record: one application_data record in (authenticate,
  replay check, decrypt, event) and one out (encrypt);
- bytes per idle session: RSS growth over many established sessions divided
  by their number (C allocations included), and the Python heap share from
  tracemalloc. Not measured for tinydtls here: its peers come from malloc
  arenas its freed handshake buffers left, so RSS growth reads as ~0.

The engine uses a 32-byte PSK and a 128-byte identity, tinydtls a 16-byte PSK
and a 16-byte identity (its limits).

Last line: ``RESULT engine_handshakes_per_s=<n> engine_us_per_record=<x>
engine_kb_per_session=<x> vs_tinydtls_handshake=<ours/theirs CPU>
vs_tinydtls_record=<ours/theirs CPU>``.

Usage: ``python -m bench.dtls_engine [--tiny] [--handshakes N] [--records N]
[--sessions N]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from DTLSSocket import dtls

from dtls12 import ApplicationData, DtlsServerEngine, EngineConfig
from dtls12.client import DtlsClient

PSK = b"0123456789abcdef0123456789abcdef"
IDENTITY = b"device-" + b"i" * 121
TINY_PSK = b"0123456789abcdef"
TINY_IDENTITY = b"tiny-device-0001"
GET = bytes((0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD, 0xB1)) + b"x"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class EngineBench:
    """Server engine + in-memory clients; ``timed`` accumulates server CPU."""

    def __init__(self) -> None:
        config = EngineConfig(max_sessions=1_000_000, max_handshakes=1_000_000)
        self.engine = DtlsServerEngine(config, {IDENTITY: PSK}.get, now=0.0)
        self.timed = 0.0
        self.clients: list[tuple[DtlsClient, tuple[str, int]]] = []

    def _server(self, datagrams: list[bytes], address: tuple[str, int]) -> list[bytes]:
        start = time.process_time()
        for datagram in datagrams:
            self.engine.receive_datagram(datagram, address, 1.0)
        out = self.engine.datagrams_to_send()
        self.timed += time.process_time() - start
        return [d for d, _ in out]

    def handshake(self, n: int, *, cid: bool = False) -> None:
        port = len(self.clients)
        client = DtlsClient(IDENTITY, PSK, cid=b"" if cid else None)
        address = (f"10.{(port >> 16) & 255}.{(port >> 8) & 255}.{port & 255}", 5000)
        out = client.connect(1.0)
        while out:
            replies = self._server(out, address)
            out = []
            for datagram in replies:
                out += client.receive(datagram, 1.0)
        if not client.established:
            raise RuntimeError("engine handshake failed")
        self.clients.append((client, address))

    def records(self, n: int) -> float:
        """Server CPU per record (one in, one out), in seconds."""
        client, address = self.clients[0]
        session = self.engine.sessions()[0]
        inputs = [client.send(GET) for _ in range(n)]
        self.engine.events()
        start = time.process_time()
        for datagram in inputs:
            self.engine.receive_datagram(datagram, address, 2.0)
            for event in self.engine.events():
                assert isinstance(event, ApplicationData)
                self.engine.send(session, b"reply")
            self.engine.datagrams_to_send()
        return (time.process_time() - start) / n


class TinyBench:
    """A tinydtls server context and a tinydtls client context wired in
    memory; ``timed`` accumulates the server context's CPU."""

    def __init__(self) -> None:
        self.to_client: list[bytes] = []
        self.to_server: list[bytes] = []
        self.events: list[tuple[int, int]] = []
        self.received = 0
        self.server = dtls.DTLS(
            read=self._server_read,
            write=lambda _a, d: self.to_client.append(d) or len(d),
            event=lambda *_: None,
            pskId=b"",
            pskStore={TINY_IDENTITY: TINY_PSK},
        )
        self.client = dtls.DTLS(
            read=lambda _a, d: len(d),
            write=lambda _a, d: self.to_server.append(d) or len(d),
            event=lambda level, code: self.events.append((level, code)),
            pskId=TINY_IDENTITY,
            pskStore={TINY_IDENTITY: TINY_PSK},
        )
        self.server_session = dtls.Session("::1", 5684)
        self.timed = 0.0
        self.peers: list[Any] = []

    def _server_read(self, _address: object, data: bytes) -> int:
        self.received += 1
        return len(data)

    def handshake(self, n: int) -> None:
        peer = dtls.Session(f"fd00::{n >> 16:x}:{n & 0xFFFF:x}", 5000)
        before = len(self.events)
        self.client.resetPeer(self.server_session)
        self.client.write(self.server_session, b"")
        for _ in range(10):
            batch, self.to_server = self.to_server, []
            start = time.process_time()
            for datagram in batch:
                self.server.handleMessage(peer, datagram)
            self.timed += time.process_time() - start
            replies, self.to_client = self.to_client, []
            for datagram in replies:
                self.client.handleMessage(self.server_session, datagram)
            if not self.to_server:
                break
        if (0, 0x01DE) not in self.events[before:]:
            raise RuntimeError("tinydtls handshake failed")
        self.peers.append(peer)

    def records(self, n: int) -> float:
        peer = self.peers[-1]
        inputs = []
        for _ in range(n):
            self.client.write(self.server_session, GET)
            inputs.append(self.to_server.pop())
        start = time.process_time()
        for datagram in inputs:
            self.server.handleMessage(peer, datagram)
            self.server.write(peer, b"reply")
        elapsed = time.process_time() - start
        self.to_client.clear()
        if self.received < n:
            raise RuntimeError("tinydtls dropped records")
        return elapsed / n


def _best(rounds: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(rounds))


def handshake_cost(bench: EngineBench | TinyBench, n: int) -> float:
    """Server CPU per handshake over ``n`` handshakes (GC off)."""
    gc.disable()
    try:
        for i in range(n):
            bench.handshake(i)
    finally:
        gc.enable()
    return bench.timed / n


def engine_memory(sessions: int) -> tuple[float, float]:
    """(bytes per idle session from RSS, Python-heap bytes from tracemalloc)."""
    bench = EngineBench()
    bench.handshake(0)
    gc.collect()
    tracemalloc.start()
    heap_before = tracemalloc.get_traced_memory()[0]
    rss_before = _rss()
    for i in range(1, sessions + 1):
        bench.handshake(i)
        client, address = bench.clients[-1]
        bench._server([client.send(GET)], address)  # first data: final flight released
        bench.engine.events()
        bench.clients[-1] = (None, address)  # type: ignore[assignment]
    gc.collect()
    heap = tracemalloc.get_traced_memory()[0] - heap_before
    tracemalloc.stop()
    rss = _rss() - rss_before
    # The clients list keeps one tuple per session: not the server's.
    return rss / sessions, heap / sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small counts (about 10 s)")
    parser.add_argument("--handshakes", type=int, default=2000)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.tiny:
        args.handshakes, args.records, args.sessions, args.rounds = 300, 3000, 1000, 2
    hs_engine = _best(args.rounds, lambda: handshake_cost(EngineBench(), args.handshakes))
    hs_tiny = _best(args.rounds, lambda: handshake_cost(TinyBench(), args.handshakes))

    engine = EngineBench()
    engine.handshake(0)
    tiny = TinyBench()
    tiny.handshake(0)
    rec_engine = _best(args.rounds, lambda: engine.records(args.records))
    rec_tiny = _best(args.rounds, lambda: tiny.records(args.records))
    rss_engine, heap_engine = engine_memory(args.sessions)

    rows = [
        ("server CPU per handshake", f"{hs_engine * 1e3:.3f} ms", f"{hs_tiny * 1e3:.3f} ms",
         hs_engine / hs_tiny),
        ("handshakes/s per core", f"{1 / hs_engine:,.0f}", f"{1 / hs_tiny:,.0f}", None),
        ("server CPU per record (in+out)", f"{rec_engine * 1e6:.1f} us",
         f"{rec_tiny * 1e6:.1f} us", rec_engine / rec_tiny),
        ("RSS per idle session", f"{rss_engine / 1024:.2f} kB", "-", None),
        ("Python heap per idle session", f"{heap_engine / 1024:.2f} kB", "-", None),
    ]  # fmt: skip
    print(f"{'':34} {'engine':>12} {'tinydtls':>12} {'ratio':>7}")
    for name, ours, theirs, ratio in rows:
        shown = f"{ratio:.2f}" if ratio is not None else ""
        print(f"{name:34} {ours:>12} {theirs:>12} {shown:>7}")
    kb = max(rss_engine, heap_engine) / 1024
    print(
        f"RESULT engine_handshakes_per_s={1 / hs_engine:.0f} "
        f"engine_us_per_record={rec_engine * 1e6:.1f} engine_kb_per_session={kb:.2f} "
        f"vs_tinydtls_handshake={hs_engine / hs_tiny:.2f} "
        f"vs_tinydtls_record={rec_engine / rec_tiny:.2f}"
    )


if __name__ == "__main__":
    main()
