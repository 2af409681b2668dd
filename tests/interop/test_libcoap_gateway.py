"""libcoap's command-line client (Debian libcoap3-bin) against the gateway:
DTLS-PSK handshake, POST /token with a CBOR payload file (-t 19), the token
then verifies; the RFC 9202 session whose psk_identity is the token's kid
``{8: {1: {1: 4, 2: kid}}}`` and whose PSK is the PoP key; and a device with
a 128-byte client id and a generated printable 32-byte-class PSK (43
base64url characters) through the whole flow: /token, /authz-info, an
authorized GET with its Proof option."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from firmware_notes import recipe, walkthrough
from gateway.registry.registry import GENERATED_PSK_CHARS, MAX_CLIENT_ID_LEN
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


async def libcoap_token(
    binary: str,
    gw,
    tmp_path: Path,
    scope: str | None = None,
    client_id: str = DEVICE_ID,
    psk: bytes = DEVICE_PSK,
) -> TokenResponse:
    port = gw.address[1]
    request = tmp_path / "token-request.cbor"
    request.write_bytes(TokenRequest(scope=scope).encode())
    out = tmp_path / "token-response.cbor"
    rc, log = await coap_client(
        binary,
        "-m", "post",
        "-u", client_id,
        "-k", psk.decode(),
        "-t", "19",
        "-f", str(request),
        "-o", str(out),
        "-B", "10",
        f"coaps://127.0.0.1:{port}/token",
    )  # fmt: skip
    assert rc == 0, log.decode(errors="replace")
    return TokenResponse.decode(out.read_bytes())


def audit_records(gw) -> list[dict]:
    lines = (gw.config.base_dir / "audit.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


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
    records = audit_records(gateway)
    bound = [r for r in records if r["event"] == "handshake" and r.get("kid") == pop.kid.hex()]
    assert [r["decision"] for r in bound] == ["established"]
    accepted = [r for r in records if r["event"] == "authz-info" and r["decision"] == "accept"]
    assert len(accepted) == 2
    assert gateway.dtls.stats().handshakes_failed == 0


#: A 128-byte client id (RFC 4279 §5.3's identity length), the registry's longest.
LONG_ID = ("meter-" + "0123456789abcdef" * 8)[:MAX_CLIENT_ID_LEN]


@pytest.mark.parametrize("binary", CLIENTS)
async def test_libcoap_long_identity_printable_psk_token_upload_and_proof(
    gateway,  # noqa: F811
    tmp_path,
    binary,
):
    """The gateway on its own DTLS engine with what tinydtls could not take:
    a 128-byte identity and a generated printable PSK of 43 characters."""
    assert len(LONG_ID) == 128
    psk = gateway.registry.add(LONG_ID, scope="/whoami:GET", printable=True)
    assert len(psk) == GENERATED_PSK_CHARS == 43
    tr = await libcoap_token(binary, gateway, tmp_path, client_id=LONG_ID, psk=psk)
    port = gateway.address[1]
    token_file = tmp_path / "token.cwt"
    token_file.write_bytes(tr.access_token)
    rc, log = await coap_client(
        binary, "-m", "post", "-u", LONG_ID, "-k", psk.decode(), "-t", "19",
        "-f", str(token_file), "-B", "10", f"coaps://127.0.0.1:{port}/authz-info",
    )  # fmt: skip
    assert rc == 0, log
    pop = cnf_mod.decode(tr.cnf).key
    assert pop.kid in gateway.tokens
    whoami = f"coaps://127.0.0.1:{port}/whoami"
    session = ["-u", LONG_ID, "-k", psk.decode(), "-B", "10", "-v", "7"]

    def proof(piv: int, echo: bytes | None = None) -> list[str]:
        value = recipe.hmac_proof(pop.kid, pop.secret, 1, ["whoami"], piv=piv, echo=echo)
        return ["-O", f"{recipe.PROOF_OPTION},0x{value.hex()}"]

    # no replay window for a new PoP key yet: 4.01 with an Echo (RFC 9175)
    rc, log = await coap_client(binary, "-m", "get", *session, *proof(1), whoami)
    first = [p for p in walkthrough.parse_pdus(log.decode(errors="replace")) if p.is_response]
    assert first and first[0].code == "4.01" and first[0].echo, log
    echo = first[0].echo
    # the Echo in the option and under the proof, next piv: 2.05 from /whoami
    out = tmp_path / "whoami.json"
    rc, log = await coap_client(
        binary, "-m", "get", *session, "-O", f"{recipe.ECHO_OPTION},0x{echo.hex()}",
        *proof(2, echo), "-o", str(out), whoami,
    )  # fmt: skip
    assert rc == 0, log
    body = json.loads(out.read_bytes())
    assert body["client_id"] == LONG_ID and body["kid"] == pop.kid.hex()
    # the window is open: a new DTLS session, the next piv, no Echo
    again = tmp_path / "whoami-2.json"
    rc, log = await coap_client(binary, "-m", "get", *session, *proof(3), "-o", str(again), whoami)
    assert rc == 0, log
    assert json.loads(again.read_bytes())["client_id"] == LONG_ID
    records = audit_records(gateway)
    decisions = [r["reason"] for r in records if r["event"] == "request"]
    assert decisions[0] == "echo_required" and decisions[-2:] == ["ok", "ok"], decisions
    handshakes = [r for r in records if r["event"] == "handshake"]
    assert len(handshakes) == 5 and {r["decision"] for r in handshakes} == {"established"}
    assert gateway.dtls.stats().handshakes_failed == 0
