"""The firmware notes against a live gateway on 127.0.0.1: the libcoap
walk-through (coap-client-openssl only, proofs from the stdlib recipe), the
measured datagram sizes (equal to the vectors' messages plus the DTLS record
overhead, and to the committed vectors/wire.json), the tinydtls handshake
flights, and a lost response answered from the gateway's deduplication."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firmware_notes import measure_wire, recipe, walkthrough
from firmware_notes.relay import Datagram, UdpRelay
from gateway.runtime.cli import main as cli_main
from gateway.runtime.gateway import Gateway
from tests.integration.conftest import gateway_config
from tokens.cwt import TokenVerifier

pytestmark = pytest.mark.interop

VECTORS = Path(measure_wire.__file__).resolve().parent / "vectors"
INPUTS = json.loads((VECTORS / "inputs.json").read_text())
SYM = json.loads((VECTORS / "token_symmetric.json").read_text())
PROOFS = {v["name"]: v for v in json.loads((VECTORS / "proofs.json").read_text())["vectors"]}
RESPONSES = json.loads((VECTORS / "responses.json").read_text())
WIRE = json.loads((VECTORS / "wire.json").read_text())
OVERHEAD = WIRE["dtls_record_overhead"]
CLIENT_ID = INPUTS["client_id"]
PSK = bytes.fromhex(INPUTS["psk"]["hex"])
SCOPE = bytes.fromhex(INPUTS["scope_aif"]["hex"])


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    state = tmp_path / "state"
    assert cli_main(["init", "--dir", str(state)], out=io.StringIO()) == 0
    gw = Gateway(gateway_config(state))
    gw.registry.add(CLIENT_ID, psk=PSK, scope=INPUTS["scope_text"])
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()
        gw.registry.close()


def audit(gw: Gateway) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (gw.config.base_dir / "audit.log").read_text().splitlines()
    ]


def sizes(datagrams: list[dict[str, Any]] | list[Datagram]) -> list[int]:
    return [d["size"] if isinstance(d, dict) else d.size for d in datagrams]


async def test_libcoap_walkthrough_end_to_end(gateway: Gateway, tmp_path: Path) -> None:
    host, port = gateway.address
    walk = await walkthrough.run(
        host, port, CLIENT_ID, PSK.decode(), scope=SCOPE, workdir=tmp_path, measure=True
    )
    by_step = {s.name: s for s in walk.steps}
    assert [s.name for s in walk.steps] == [
        "token", "authz-info", "proof-first", "proof-echo", "proof-steady"
    ]  # fmt: skip
    assert [s.final_code for s in walk.steps] == ["2.01", "2.01", "4.01", "2.05", "2.05"]

    # the token libcoap fetched is the gateway's, bound to this device, with
    # the PoP key the recipe parsed out of the response
    claims = TokenVerifier(
        audience=gateway.config.rs.audience,
        keys=gateway.keystore.verification_keys(),
        decryption_keys=gateway.keystore.decryption_keys(),
        issuer=gateway.config.as_.issuer,
    ).verify(walk.token_response.access_token, gateway.clock())
    assert claims.sub == CLIENT_ID
    assert claims.cnf.key.secret == walk.token_response.k
    assert claims.cnf.key.kid == walk.token_response.kid
    assert walk.token_response.expires_in == gateway.config.as_.token_lifetime

    # the Echo round trip: 4.01 + Echo, then libcoap's own repeat (the Echo
    # copied, the old proof kept) refused, then ours accepted
    first = by_step["proof-first"].responses
    assert first[0].code == "4.01" and first[0].echo == walk.echo and len(walk.echo) == 14
    assert [r.code for r in first] == ["4.01", "4.01"] and first[1].echo is None
    assert walk.whoami["client_id"] == CLIENT_ID and walk.whoami["via"] == "proof"
    assert walk.whoami["kid"] == walk.token_response.kid.hex()
    requests = [r for r in audit(gateway) if r["event"] == "request"]
    assert [(r["decision"], r["reason"]) for r in requests] == [
        ("deny", "echo_required"),
        ("deny", "bad_signature"),
        ("allow", "ok"),
        ("allow", "ok"),
    ]
    assert PSK.decode() not in "\n".join(s.shown_argv() for s in walk.steps)

    # bytes on the wire: every application-data datagram is the vectors'
    # CoAP message plus the DTLS record overhead
    app = {s.name: walkthrough.application_part(s.datagrams) for s in walk.steps}

    def sent(step: str) -> list[int]:
        return [d.size for d in app[step] if d.direction == "c>s"]

    def received(step: str) -> list[int]:
        return [d.size for d in app[step] if d.direction == "s>c"]

    def record(msg: dict[str, Any]) -> int:
        return msg["length"] + OVERHEAD

    assert sent("token") == [record(SYM["token_request"]["coap_request"])]
    assert received("token") == [record(SYM["token_response"]["coap_response"])]
    assert sent("authz-info") == [record(SYM["authz_info"]["coap_request"])]
    assert received("authz-info") == [record(SYM["authz_info"]["coap_response"])]
    assert sent("proof-first")[0] == record(PROOFS["hmac_get_whoami_first"]["coap_request"])
    assert received("proof-first")[0] == record(RESPONSES["echo_challenge"]["coap_response"])
    assert sent("proof-echo") == [record(PROOFS["hmac_get_whoami_echo"]["coap_request"])]
    assert sent("proof-steady") == sent("proof-first")[:1]

    # ... and equal to what vectors/wire.json (the budgets) says
    committed = {e["step"]: e for e in WIRE["libcoap"]["exchanges"]}
    for step in by_step:
        assert sent(step) == sizes(committed[step]["sent"]), step
        if step not in ("proof-echo", "proof-steady"):  # /whoami bodies are not budgets
            assert received(step) == sizes(committed[step]["received"]), step
    # the gateway's handshake flights and the device's ClientKeyExchange
    flights = measure_wire.flights(walk.handshake)["flights"]
    expected = WIRE["libcoap"]["handshake"]["flights"]
    assert [f["direction"] for f in flights] == [f["direction"] for f in expected]
    for got, want in zip(flights, expected, strict=True):
        if got["direction"] == "gateway -> device":
            assert got["datagrams"] == want["datagrams"]
    assert (
        f"ClientKeyExchange({13 + 12 + 2 + len(CLIENT_ID)})"
        in flights[4]["datagrams"][0]["records"]
    )


async def test_tinydtls_handshake_flights_match_the_budget(gateway: Gateway) -> None:
    datagrams = await measure_wire.tinydtls_session(
        gateway.address, CLIENT_ID, PSK, recipe.token_request(SCOPE)
    )
    measured = measure_wire.flights(walkthrough.handshake_part(datagrams))
    assert measured == WIRE["tinydtls"]["handshake"]
    assert [f["direction"] for f in measured["flights"]] == [
        "device -> gateway", "gateway -> device"
    ] * 3  # fmt: skip
    # the /token exchange: the vectors' messages, except that aiocoap picks
    # its own CoAP token (1 to 8 bytes; the vectors use 1)
    app = walkthrough.application_part(datagrams)
    vectors = [
        SYM["token_request"]["coap_request"]["length"] + OVERHEAD,
        SYM["token_response"]["coap_response"]["length"] + OVERHEAD,
    ]
    extra = [d.size - v for d, v in zip(app, vectors, strict=True)]
    assert extra[0] == extra[1] and 0 <= extra[0] <= 7, extra


async def test_lost_response_is_answered_from_deduplication(
    gateway: Gateway, tmp_path: Path
) -> None:
    """The notes tell firmware to retransmit a CON byte for byte (same
    Message ID, same proof) on the same DTLS session: the gateway answers
    the retransmission from its deduplication cache instead of refusing the
    piv as a replay. The relay drops the first response to force it."""
    host, port = gateway.address
    walk = await walkthrough.run(
        host, port, CLIENT_ID, PSK.decode(), scope=SCOPE, workdir=tmp_path, measure=False
    )
    seen_app_responses = 0

    def drop(d: Datagram) -> bool:
        nonlocal seen_app_responses
        if d.direction == "s>c" and d.application_data:
            seen_app_responses += 1
            return seen_app_responses == 1
        return False

    relay = UdpRelay(gateway.address, drop=drop)
    relay_host, relay_port = await relay.start()
    try:
        value = recipe.hmac_proof(
            walk.token_response.kid, walk.token_response.k, 1, ["whoami"], piv=10
        )
        rc, log = await walkthrough.coap_client(
            [
                walkthrough.BINARY, "-v", "7", "-U", "-B", "15", "-u", CLIENT_ID,
                "-k", PSK.decode(), "-m", "get", "-O", f"{recipe.PROOF_OPTION},0x{value.hex()}",
                f"coaps://{relay_host}:{relay_port}/whoami",
            ],
            timeout=30,
        )  # fmt: skip
    finally:
        await relay.close()
    assert rc == 0, log
    pdus = walkthrough.parse_pdus(log)
    assert [p.code for p in pdus if p.is_response] == ["2.05"], log
    app = [d for d in relay.datagrams if d.application_data]
    assert [(d.direction, d.dropped) for d in app] == [
        ("c>s", False), ("s>c", True), ("c>s", False), ("s>c", False)
    ]  # fmt: skip
    assert app[0].size == app[2].size and app[1].size == app[3].size
    requests = [r for r in audit(gateway) if r["event"] == "request"]
    assert requests[-1]["decision"] == "allow"
    assert not [r for r in requests if r["reason"] == "replay"]
