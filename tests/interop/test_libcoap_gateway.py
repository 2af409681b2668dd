"""libcoap's command-line client (Debian libcoap3-bin) against the gateway:
DTLS-PSK handshake, POST /token with a CBOR payload file (-t 19), the token
then verifies; and the RFC 9202 session whose psk_identity is the token's kid
``{8: {1: {1: 4, 2: kid}}}`` and whose PSK is the PoP key."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.integration.conftest import DEVICE_ID, DEVICE_PSK, config, gateway, state_dir  # noqa: F401
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.cwt import TokenVerifier

pytestmark = pytest.mark.interop

CLIENTS = ["coap-client-openssl", "coap-client-gnutls"]


async def coap_client(binary: str, *args: str | bytes, timeout: float = 20) -> tuple[int, bytes]:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} not installed: 'make test' installs libcoap3-bin")
    proc = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out


async def libcoap_token(binary: str, gw, tmp_path: Path, scope: str | None = None) -> TokenResponse:
    port = gw.address[1]
    request = tmp_path / "token-request.cbor"
    request.write_bytes(TokenRequest(scope=scope).encode())
    out = tmp_path / "token-response.cbor"
    rc, log = await coap_client(
        binary,
        "-m", "post",
        "-u", DEVICE_ID,
        "-k", DEVICE_PSK.decode(),
        "-t", "19",
        "-f", str(request),
        "-o", str(out),
        "-B", "10",
        f"coaps://127.0.0.1:{port}/token",
    )  # fmt: skip
    assert rc == 0, log.decode(errors="replace")
    return TokenResponse.decode(out.read_bytes())


@pytest.mark.parametrize("binary", CLIENTS)
async def test_libcoap_gets_a_token_that_verifies(gateway, tmp_path, binary):  # noqa: F811
    tr = await libcoap_token(binary, gateway, tmp_path, scope="/temp:GET")
    claims = TokenVerifier(
        audience=gateway.config.rs.audience,
        keys=gateway.keystore.verification_keys(),
        decryption_keys=gateway.keystore.decryption_keys(),
        issuer=gateway.config.as_.issuer,
    ).verify(tr.access_token, gateway.clock())
    assert claims.sub == DEVICE_ID
    assert cnf_mod.decode(tr.cnf).key.secret == claims.cnf.key.secret


@pytest.mark.parametrize("binary", CLIENTS)
async def test_libcoap_rfc9202_kid_identity(gateway, tmp_path, binary):  # noqa: F811
    # libcoap takes identity and key from argv as C strings: the AS mints PoP
    # kids and keys without NUL bytes so that they always can be passed
    tr = await libcoap_token(binary, gateway, tmp_path)
    pop = cnf_mod.decode(tr.cnf).key
    identity = cnf_mod.psk_identity_for_kid(pop.kid)
    assert b"\x00" not in identity + pop.secret
    port = gateway.address[1]
    token_file = tmp_path / "token.cwt"
    token_file.write_bytes(tr.access_token)
    # upload over the device's own session, then open the token-bound session
    rc, log = await coap_client(
        binary, "-m", "post", "-u", DEVICE_ID, "-k", DEVICE_PSK.decode(), "-t", "19",
        "-f", str(token_file), "-B", "10", f"coaps://127.0.0.1:{port}/authz-info",
    )  # fmt: skip
    assert rc == 0, log
    assert pop.kid in gateway.tokens
    out = tmp_path / "again.out"
    rc, log = await coap_client(
        binary, "-m", "post", "-u", identity, "-k", pop.secret, "-t", "19",
        "-f", str(token_file), "-o", str(out), "-B", "10", f"coaps://127.0.0.1:{port}/authz-info",
    )  # fmt: skip
    assert rc == 0, log
    records = [
        json.loads(line)
        for line in (gateway.config.base_dir / "audit.log").read_text().splitlines()
    ]
    bound = [r for r in records if r["event"] == "handshake" and r.get("kid") == pop.kid.hex()]
    assert [r["decision"] for r in bound] == ["established"]
    accepted = [r for r in records if r["event"] == "authz-info" and r["decision"] == "accept"]
    assert len(accepted) == 2
    assert gateway.dtls.stats().handshakes_failed == 0
