"""The benchmarks' HTTP upstream: a bare asyncio HTTP/1.1 responder on
127.0.0.1 that answers every request on a keep-alive connection with one
fixed 200 response (request bodies framed by Content-Length). No framework:
it shares the 2 cores with the gateway and the load generator, so the less
it costs, the more the figures measure the gateway.

``python -m bench._upstream CONTENT_TYPE BODY_HEX`` prints ``READY <port>``
and runs until its standard input is closed; :func:`start_upstream` starts
one.
"""

from __future__ import annotations

import asyncio
import sys

from bench._gateway import start_ready

__all__ = ["Responder", "response", "start_upstream"]


def response(content_type: str, body: bytes) -> bytes:
    """The one answer: ``200 OK`` with ``body``, keep-alive."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


class Responder(asyncio.Protocol):
    """Answers each complete request (head plus Content-Length body) with
    ``answer``."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self._buf[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buf) < end + 4 + length:
                return
            self._buf = self._buf[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(self._answer)


async def start_upstream(content_type: str, body: bytes) -> tuple[asyncio.subprocess.Process, int]:
    """Start ``python -m bench._upstream``; returns it and its port."""
    return await start_ready(
        ["-m", "bench._upstream", content_type, body.hex()], what="upstream", timeout=30
    )


def _serve(answer: bytes) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Responder(answer), "127.0.0.1", 0)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await loop.run_in_executor(None, sys.stdin.read)
        server.close()
        await server.wait_closed()

    asyncio.run(main())


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench._upstream CONTENT_TYPE BODY_HEX")
    _serve(response(sys.argv[1], bytes.fromhex(sys.argv[2])))
