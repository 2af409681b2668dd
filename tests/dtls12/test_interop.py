"""Foreign DTLS 1.2 PSK clients against the engine on real UDP loopback:
libcoap's coap-client-openssl and coap-client-gnutls (Debian libcoap3-bin),
``openssl s_client -dtls1_2``, tinydtls (through DTLSSocket, as the simulator
drives it) and Mbed TLS 2.28 (python-mbedtls)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from mbedtls import tls

from device_sim.dtls_client import DtlsClientPool
from dtls12 import (
    ApplicationData,
    CloseReason,
    HandshakeFailed,
    HandshakeFailure,
    SessionClosed,
    SessionEstablished,
)

from .conftest import HEX_PSK, IDENTITY, LONG_IDENTITY, PSK, TINY_IDENTITY, TINY_PSK, wait_for

pytestmark = pytest.mark.interop

LIBCOAP = ["coap-client-openssl", "coap-client-gnutls"]
GET = bytes((0x42, 0x01, 0x12, 0x34, 0xAB, 0xCD, 0xB1)) + b"x"


async def run(*argv: str, stdin: bytes = b"", timeout: float = 20.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(stdin), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(errors="replace")


async def coap_get(client: str, port: int, identity: bytes, psk: bytes) -> str:
    return await run(
        client, "-B", "5", "-u", identity.decode(), "-k", psk.decode(), "-m", "get",
        f"coaps://127.0.0.1:{port}/x",
    )  # fmt: skip


@pytest.mark.parametrize("client", LIBCOAP)
async def test_libcoap_with_a_32_byte_psk_and_a_128_byte_identity(serve, client) -> None:
    served = await serve()
    out = await coap_get(client, served.port, IDENTITY, PSK)
    assert out.strip() == "ok", out
    [established] = served.of_type(SessionEstablished)
    assert established.session.identity == IDENTITY and len(IDENTITY) == 128
    await wait_for(lambda: bool(served.of_type(SessionClosed)))
    assert served.of_type(SessionClosed)[0].reason is CloseReason.PEER_CLOSED


@pytest.mark.parametrize("client", LIBCOAP)
async def test_libcoap_with_a_wrong_key_or_identity_fails_and_the_server_goes_on(
    serve, client
) -> None:
    served = await serve()
    wrong = await coap_get(client, served.port, IDENTITY, b"x" * 32)
    unknown = await coap_get(client, served.port, b"nobody", PSK)
    assert "ok" not in wrong.split() and "ok" not in unknown.split()
    reasons = sorted(e.reason for e in served.of_type(HandshakeFailed))
    assert reasons == [HandshakeFailure.BAD_FINISHED, HandshakeFailure.UNKNOWN_IDENTITY]
    assert (await coap_get(client, served.port, IDENTITY, PSK)).strip() == "ok"


@pytest.mark.parametrize("cipher", ["PSK-AES128-CCM8", "PSK-AES128-CCM"])
async def test_openssl_s_client_with_a_255_byte_identity(serve, cipher) -> None:
    served = await serve()
    out = await run(
        "openssl", "s_client", "-dtls1_2", "-connect", f"127.0.0.1:{served.port}",
        "-psk_identity", LONG_IDENTITY.decode(), "-psk", HEX_PSK.hex(), "-cipher", cipher,
        stdin=b"hello\n",
    )  # fmt: skip
    assert f"Cipher is {cipher}\n" in out and "Extended master secret: yes" in out, out
    await wait_for(lambda: bool(served.of_type(ApplicationData)))
    [data] = served.of_type(ApplicationData)
    assert data.data == b"hello\n" and data.session.identity == LONG_IDENTITY


class _TinyEvents:
    def __init__(self) -> None:
        self.connected = 0
        self.data: list[bytes] = []
        self.closed: list[str] = []

    def dtls_connected(self, conn: object) -> None:
        self.connected += 1

    def dtls_data(self, conn: object, data: bytes) -> None:
        self.data.append(data)

    def dtls_closed(self, conn: object, reason: str) -> None:
        self.closed.append(reason)

    def raw_datagram(self, conn: object, data: bytes) -> None:
        pass


async def test_tinydtls_client_from_dtlssocket(serve) -> None:
    served = await serve()
    events = _TinyEvents()
    pool = DtlsClientPool(("127.0.0.1", served.port), events)
    try:
        conn = pool.open("device", TINY_IDENTITY, TINY_PSK)
        await wait_for(lambda: events.connected == 1)
        assert pool.send(conn, GET)
        await wait_for(lambda: bool(events.data))
        assert events.data[0].endswith(b"\xffok")
        pool.close(conn)
        await wait_for(lambda: bool(served.of_type(SessionClosed)))
    finally:
        pool.shutdown()
    assert served.of_type(SessionEstablished)[0].session.identity == TINY_IDENTITY


def _mbedtls_get(port: int, identity: bytes, psk: bytes) -> tuple[str, bytes]:
    config = tls.DTLSConfiguration(
        pre_shared_key=(identity.decode(), psk),
        ciphers=["TLS-PSK-WITH-AES-128-CCM-8"],
        validate_certificates=False,
        lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
    )
    sock = tls.ClientContext(config).wrap_socket(
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM), server_hostname=None
    )
    try:
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.do_handshake()
        cipher = str(sock.cipher())
        sock.send(GET)
        return cipher, sock.recv(1024)
    finally:
        sock.close()


async def test_mbedtls_client_from_python_mbedtls(serve) -> None:
    served = await serve()
    cipher, reply = await asyncio.to_thread(_mbedtls_get, served.port, IDENTITY, PSK)
    assert cipher == "TLS-PSK-WITH-AES-128-CCM-8" and reply.endswith(b"\xffok")
    assert served.of_type(SessionEstablished)[0].session.identity == IDENTITY
