"""libcoap's command-line clients (OpenSSL and GnuTLS builds, Debian package
libcoap3-bin) against the gateway's DTLS server: real foreign DTLS-PSK peers."""

from __future__ import annotations

import asyncio

import pytest

from gateway.dtls import CloseReason

from .conftest import DTLS_PSKS, DtlsHarnessFactory, dtls_wait_for

pytestmark = pytest.mark.interop

CLIENTS = ["coap-client-openssl", "coap-client-gnutls"]


async def _coap_get(client: str, uri: str, identity: bytes, psk: bytes) -> str:
    """Run ``client -m get`` (waiting at most 5 s for a response)."""
    process = await asyncio.create_subprocess_exec(
        client,
        "-B",
        "5",
        "-u",
        identity.decode(),
        "-k",
        psk.decode(),
        "-m",
        "get",
        uri,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return out.decode(errors="replace")


@pytest.mark.parametrize("client", CLIENTS)
async def test_libcoap_client_completes_the_handshake_and_gets_the_response(
    dtls_harness: DtlsHarnessFactory, client: str
) -> None:
    h = await dtls_harness()
    uri = f"coaps://127.0.0.1:{h.port}/whoami"
    out = await _coap_get(client, uri, b"dev-1", DTLS_PSKS[b"dev-1"])
    assert out.startswith("dev-1|127.0.0.1:"), out
    assert out.rstrip().endswith(f"|127.0.0.1:{h.port}")
    # libcoap says close_notify when it exits.
    await dtls_wait_for(lambda: h.server.stats().sessions == 0)
    assert [reason for _, reason in h.closed] == [CloseReason.PEER_CLOSED]
    assert h.server.stats().handshakes_ok == 1


@pytest.mark.parametrize("client", CLIENTS)
async def test_libcoap_with_a_wrong_key_gets_nothing_and_the_server_goes_on(
    dtls_harness: DtlsHarnessFactory, client: str
) -> None:
    h = await dtls_harness()
    uri = f"coaps://127.0.0.1:{h.port}/whoami"
    wrong = await _coap_get(client, uri, b"dev-1", b"not-the-right-k")
    unknown = await _coap_get(client, uri, b"nobody", b"whatever")
    assert "dev-1|" not in wrong and "|" not in unknown
    assert h.server.stats().handshake_failures == {"bad_finished": 1, "unknown_identity": 1}
    out = await _coap_get(client, uri, b"dev-2", DTLS_PSKS[b"dev-2"])
    assert out.startswith("dev-2|"), out


@pytest.mark.parametrize(("client", "target"), [(CLIENTS[0], "127.0.0.1"), (CLIENTS[1], "[::1]")])
async def test_libcoap_reaches_a_dual_stack_wildcard_bind(
    dtls_harness: DtlsHarnessFactory, client: str, target: str
) -> None:
    h = await dtls_harness(host="::")
    out = await _coap_get(
        client, f"coaps://{target}:{h.port}/whoami", b"dev-3", DTLS_PSKS[b"dev-3"]
    )
    assert out.startswith("dev-3|"), out
    assert out.rstrip().endswith(f"|{target}:{h.port}")
