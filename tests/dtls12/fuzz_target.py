"""Fuzz target shared by the hypothesis tests and the coverage-guided run:
feeds one input to every parser and to engines in each handshake phase. Any
exception other than the engine's own ParseError escaping a parser, or any
exception at all escaping the engine, is a failure.

Run it with atheris: ``python -m tests.dtls12.fuzz_target -max_total_time=5``.
"""

from __future__ import annotations

import contextlib
import sys

from dtls12 import DtlsServerEngine, EngineConfig, wire
from dtls12.client import DtlsClient
from dtls12.errors import ParseError

PSK = b"0123456789abcdef0123456789abcdef"
IDENTITY = b"fuzz-device"
ADDRESS = ("192.0.2.1", 40000)


def parsers(data: bytes) -> None:
    """Every wire parser on ``data``: a value or ParseError."""
    for cid_length in (0, 6):
        records, _ = wire.parse_records(data, cid_length)
        for record in records:
            assert record.header + record.fragment in data
    for parse in (
        wire.parse_handshake_fragments,
        wire.parse_client_hello,
        wire.parse_client_key_exchange,
        wire.parse_connection_id_extension,
    ):
        with contextlib.suppress(ParseError):
            parse(data)


def stages() -> list[tuple[DtlsServerEngine, list[bytes]]]:
    """Engines stopped at each phase of a handshake (fresh, half-open after
    the cookie, after the key exchange, established with CID), each with the
    datagrams a client sent to reach it (seeds for mutation)."""
    result = []
    for stop in range(4):
        engine = DtlsServerEngine(EngineConfig(), {IDENTITY: PSK}.get, now=0.0)
        client = DtlsClient(IDENTITY, PSK, cid=b"" if stop == 3 else None)
        sent: list[bytes] = []
        out = client.connect(0.0)
        for _ in range(stop + 1):
            sent += out
            for datagram in out:
                engine.receive_datagram(datagram, ADDRESS, 0.0)
            out = []
            for datagram, _ in engine.datagrams_to_send():
                out += client.receive(datagram, 0.0)
        if client.established:
            sent.append(client.send(b"coap"))
        engine.events()
        result.append((engine, sent))
    return result


def engine_input(engine: DtlsServerEngine, data: bytes, now: float = 1.0) -> None:
    """One datagram into an engine, from the known peer and a stranger; the
    engine must not raise, and its timers must run."""
    engine.receive_datagram(data, ADDRESS, now)
    engine.receive_datagram(data, ("198.51.100.1", 1), now)
    engine.handle_timer(now + 100.0)
    engine.datagrams_to_send()
    engine.events()


def main() -> None:  # pragma: no cover - run under atheris in a subprocess
    import atheris

    prepared = stages()
    # The engine's modules are already imported: instrument what is loaded.
    atheris.instrument_all()

    def target(data: bytes) -> None:
        parsers(data)
        for engine, seeds in prepared:
            engine_input(engine, data)
            if seeds and data:
                # Splice the input into a real datagram of this phase.
                seed = seeds[data[0] % len(seeds)]
                cut = data[-1] % (len(seed) + 1)
                engine_input(engine, seed[:cut] + data[1:])

    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
