"""The firmware test vectors: they regenerate byte for byte, every token and
proof verifies with the gateway's own verifiers, any flipped bit breaks them,
the stdlib-only recipe (what firmware does) reproduces them, and the notes
hold no hand-typed hex."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from firmware_notes import generate_vectors as gen
from firmware_notes import recipe
from gateway.authorization_server.token_endpoint import AuthorizationServer, ClientPolicy
from tokens import cnf as cnf_mod
from tokens.ace import TokenRequest, TokenResponse
from tokens.aif import Scope
from tokens.cwt import TokenVerifier
from tokens.echo import EchoIssuer
from tokens.errors import EchoRequired, ReplayError, TokenError
from tokens.keys import CoseKey, KeySet, SymmetricKey, key_from_cose
from tokens.params import PROOF_OPTION, Alg
from tokens.proof import ProofedRequest, detached_content, parse_proof
from tokens.replay import FreshnessGuard

NOTES = Path(gen.__file__).resolve().parent
VECTORS = NOTES / "vectors"


def load(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


INPUTS = load("inputs.json")
SYM = load("token_symmetric.json")
ASYM = load("token_asymmetric.json")
PROOFS = load("proofs.json")["vectors"]
RESPONSES = load("responses.json")
NOW = INPUTS["now"]


def h(s: str | None) -> bytes:
    return bytes.fromhex(s) if s else b""


def keys() -> dict[str, CoseKey]:
    k = INPUTS["keys"]
    return {
        "as_rs": SymmetricKey(h(k["as_rs"]["kid"]), h(k["as_rs"]["k"]), Alg.AES_CCM_16_64_128),
        "as_signing": key_from_cose(h(k["as_signing"]["cose_key_public_hex"])),
        "pop_hmac": SymmetricKey(h(k["pop_hmac"]["kid"]), h(k["pop_hmac"]["k"])),
        "device_es256": key_from_cose(h(k["device_es256"]["cose_key_public_hex"])),
        "device_eddsa": key_from_cose(h(k["device_eddsa"]["cose_key_public_hex"])),
    }


def verifier() -> TokenVerifier:
    k = keys()
    return TokenVerifier(
        audience=INPUTS["audience"],
        keys=KeySet([k["as_signing"]]),
        decryption_keys=KeySet([k["as_rs"]]),
        issuer=INPUTS["issuer"],
    )


def proofed(v: dict[str, Any]) -> ProofedRequest:
    r = v["request"]
    return ProofedRequest(
        code=r["code"],
        path=tuple(r["path"]),
        query=tuple(r["query"]),
        content_format=r["content_format"],
        payload=h(r["payload_hex"]),
    )


def flip(data: bytes, index: int, bit: int) -> bytes:
    b = bytearray(data)
    b[index] ^= 1 << bit
    return bytes(b)


# --- regeneration ---------------------------------------------------------------


def test_vectors_and_notes_regenerate_byte_identically(tmp_path: Path) -> None:
    written = gen.generate(tmp_path)
    assert {p.name for p in (tmp_path / "vectors").iterdir()} | {"wire.json"} == {
        p.name for p in VECTORS.iterdir()
    }, "stale or missing vector files: run python -m firmware_notes.generate_vectors"
    stale = [
        str(p.relative_to(tmp_path))
        for p in written
        if p.read_bytes() != (NOTES / p.relative_to(tmp_path)).read_bytes()
    ]
    assert not stale, f"regenerate (python -m firmware_notes.generate_vectors): {stale}"
    assert len(written) == 5 + len(gen.DOCS)


def test_cryptography_deterministic_ecdsa_is_rfc6979() -> None:
    """The premise of byte-identical ES256 vectors: RFC 6979 A.2.5, P-256,
    SHA-256, message "sample"."""
    x = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
    priv = ec.derive_private_key(x, ec.SECP256R1())
    sig = priv.sign(b"sample", ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    assert decode_dss_signature(sig) == (
        0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716,
        0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8,
    )


# --- tokens ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", [SYM, ASYM], ids=["encrypt0", "sign1"])
def test_token_verifies_with_the_gateway_verifier(vector: dict[str, Any]) -> None:
    token = h(vector["token"]["hex"])
    claims = verifier().verify(token, NOW)
    assert claims.sub == INPUTS["client_id"]
    assert claims.exp == NOW + INPUTS["token_lifetime"]
    assert claims.encode() == h(vector["claims"]["hex"])
    assert Scope.from_scope_param(claims.scope) == Scope.parse(INPUTS["scope_text"])
    response = TokenResponse.decode(h(vector["token_response"]["hex"]))
    assert response.access_token == token
    assert response.expires_in == INPUTS["token_lifetime"]
    pop = claims.cnf.key
    if vector is SYM:
        assert pop.secret == h(SYM["pop_key"]["k_hex"]) == cnf_mod.decode(response.cnf).key.secret
        assert pop.kid == h(SYM["pop_key"]["kid_hex"])
    else:
        # the AS names the device's own key by kid (RFC 8747 §3.4)
        assert cnf_mod.decode(response.cnf) == cnf_mod.CnfKid(pop.kid)
        assert pop.encode() == keys()["device_es256"].encode()


def test_encrypt0_intermediates() -> None:
    t = SYM["token"]
    as_rs = keys()["as_rs"]
    plaintext = as_rs.decrypt(h(t["iv_hex"]), h(t["ciphertext_hex"]), h(t["enc_structure"]["hex"]))
    assert plaintext == h(t["plaintext_hex"]) == h(SYM["claims"]["hex"])
    assert cbor2.loads(h(t["hex"])) == [
        h(t["protected"]["hex"]),
        {4: as_rs.kid, 5: h(t["iv_hex"])},
        h(t["ciphertext_hex"]),
    ]


def test_sign1_intermediates_verify_with_plain_cryptography() -> None:
    t = ASYM["token"]
    sig_structure = h(t["sig_structure"]["hex"])
    assert hashlib.sha256(sig_structure).hexdigest() == t["sig_structure_sha256_hex"]
    assert cbor2.loads(sig_structure) == ["Signature1", h(t["protected"]["hex"]), b"",
                                         h(ASYM["claims"]["hex"])]  # fmt: skip
    a = INPUTS["keys"]["as_signing"]
    _ecdsa_verify(a["x"], a["y"], sig_structure, h(t["signature_hex"]))


def _ecdsa_verify(x: str, y: str, message: bytes, signature: bytes) -> None:
    pub = ec.EllipticCurvePublicNumbers(int(x, 16), int(y, 16), ec.SECP256R1()).public_key()
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    pub.verify(der, message, ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("vector", [SYM, ASYM], ids=["encrypt0", "sign1"])
def test_any_flipped_bit_in_a_token_fails_verification(vector: dict[str, Any]) -> None:
    token = h(vector["token"]["hex"])
    v = verifier()
    accepted = []
    for index, bit in ((i, b) for i in range(len(token)) for b in range(8)):
        try:
            v.verify(flip(token, index, bit), NOW)
        except TokenError:
            continue
        accepted.append((index, bit))
    assert not accepted, f"token still verifies with bits flipped at {accepted}"


def test_the_as_issues_the_vector_token_up_to_its_random_iv() -> None:
    """The gateway's AS, given the same draws, issues the same claims; only
    the Encrypt0 IV (random in production) differs."""
    k = keys()
    draws = iter(h(d) for d in INPUTS["as_random_draws"]["symmetric"])
    as_ = AuthorizationServer(
        issuer=INPUTS["issuer"],
        audiences=(INPUTS["audience"],),
        lifetime=INPUTS["token_lifetime"],
        signing_key=lambda: k["as_signing"],
        as_rs_key=lambda: k["as_rs"],
        random=lambda n: next(draws),
    )
    policy = ClientPolicy(INPUTS["client_id"], Scope.parse(INPUTS["scope_text"]), None, ())
    issued = as_.issue(TokenRequest.decode(h(SYM["token_request"]["hex"])), policy, NOW)
    assert issued.claims.encode() == h(SYM["claims"]["hex"])
    assert issued.response.access_token != h(SYM["token"]["hex"])  # random IV
    assert verifier().verify(issued.response.access_token, NOW).encode() == issued.claims.encode()


def test_asymmetric_request_without_kid_gets_the_thumbprint_kid() -> None:
    """What the notes tell a device that omits the kid in req_cnf: the AS
    derives it as SHA-256 over the deterministic COSE_Key {1, -1, -2, -3}
    (the RFC 9679 thumbprint input), first 8 bytes."""
    d = INPUTS["keys"]["device_es256"]
    cose_key = (
        b"\xa4\x01\x02\x20\x01\x21"
        + recipe.cbor_bstr(h(d["x"]))
        + b"\x22"
        + recipe.cbor_bstr(h(d["y"]))
    )
    private = gen.make_keys()
    as_ = AuthorizationServer(
        issuer="acegw",
        audiences=("acegw",),
        lifetime=60,
        signing_key=lambda: private.as_signing,
        as_rs_key=lambda: private.as_rs,
    )
    policy = ClientPolicy(INPUTS["client_id"], Scope.parse(INPUTS["scope_text"]), None, ())
    issued = as_.issue(TokenRequest(req_cnf={1: cbor2.loads(cose_key)}), policy, NOW)
    assert issued.pop_kid == hashlib.sha256(cose_key).digest()[:8]


# --- proofs ---------------------------------------------------------------------


@pytest.mark.parametrize("v", PROOFS, ids=[v["name"] for v in PROOFS])
def test_proof_verifies_with_the_gateway_verifier(v: dict[str, Any]) -> None:
    option = h(v["option_value"]["hex"])
    parsed = parse_proof(option)
    key = keys()[v["key"]]
    assert (parsed.kid, parsed.piv, parsed.alg) == (key.kid, v["piv"], int(key.alg))
    echo = h(v["echo_hex"]) if v["echo_hex"] else None
    parsed.verify(key, proofed(v), echo)
    steps = v["steps"]
    content = detached_content(proofed(v), v["piv"], echo)
    assert content.hex() == steps["detached_content"]["hex"]
    assert parsed.protected.hex() == steps["protected_hex"]
    assert recipe.piv_bytes(v["piv"]).hex() == steps["piv_hex"]
    if "mac_structure" in steps:
        assert parsed.tag.hex() == steps["tag_hex"] == steps["hmac_sha256_hex"][:16]
    else:
        assert parsed.tag.hex() == steps["signature_hex"]


@pytest.mark.parametrize("v", PROOFS, ids=[v["name"] for v in PROOFS])
def test_any_flipped_bit_in_a_proof_fails_verification(v: dict[str, Any]) -> None:
    option = h(v["option_value"]["hex"])
    ring = KeySet(keys().values())
    echo = h(v["echo_hex"]) if v["echo_hex"] else None

    def verifies(value: bytes, request: ProofedRequest, echo_value: bytes | None) -> bool:
        try:
            parsed = parse_proof(value)
            parsed.verify(ring.get(parsed.kid), request, echo_value)
        except TokenError:
            return False
        return True

    assert verifies(option, proofed(v), echo)
    accepted = [
        (i, bit)
        for i in range(len(option))
        for bit in range(8)
        if verifies(flip(option, i, bit), proofed(v), echo)
    ]
    assert not accepted, f"proof still verifies with bits flipped at {accepted}"
    # ... and so does any change to the request it covers
    request = proofed(v)
    changed = [
        ProofedRequest(request.code ^ 1, request.path, request.query, request.content_format,
                       request.payload),
        ProofedRequest(request.code, (*request.path, "x"), request.query,
                       request.content_format, request.payload),
        ProofedRequest(request.code, request.path, (*request.query, "a=1"),
                       request.content_format, request.payload),
        ProofedRequest(request.code, request.path, request.query,
                       60 if request.content_format != 60 else 50, request.payload),
        ProofedRequest(request.code, request.path, request.query, request.content_format,
                       flip(request.payload, 0, 0) if request.payload else b"\x00"),
    ]  # fmt: skip
    assert not [r for r in changed if verifies(option, r, echo)]
    other_echo = flip(echo, len(echo) - 1, 0) if echo else b"\x00" * 14
    assert not verifies(option, proofed(v), other_echo)
    if echo:
        assert not verifies(option, proofed(v), None)


@pytest.mark.parametrize("sequence", ["hmac", "es256"])
def test_echo_recovery_sequence_through_the_freshness_guard(sequence: str) -> None:
    """Each sequence, replayed against the gateway's replay window with the
    vectors' Echo secret and clock, gets exactly the answers it records."""
    guard = FreshnessGuard(EchoIssuer(h(INPUTS["keys"]["echo_secret"]["hex"])))
    ring = KeySet(keys().values())
    run = [v for v in PROOFS if v["sequence"] == sequence]
    assert len(run) >= 3
    for v in run:
        parsed = parse_proof(h(v["option_value"]["hex"]))
        echo = h(v["echo_hex"]) if v["echo_hex"] else None
        parsed.verify(ring.get(parsed.kid), proofed(v), echo)
        if v["gateway_answer"]["code"] == "4.01":
            with pytest.raises(EchoRequired) as info:
                guard.commit(parsed.kid, parsed.piv, echo, v["gateway_now"])
            assert info.value.echo.hex() == v["gateway_answer"]["echo_hex"]
        else:
            guard.commit(parsed.kid, parsed.piv, echo, v["gateway_now"])
    replayed = parse_proof(h(run[1]["option_value"]["hex"]))
    with pytest.raises(ReplayError):
        guard.commit(replayed.kid, replayed.piv, h(run[1]["echo_hex"]), run[-1]["gateway_now"])


def test_authorized_vectors_are_in_the_tokens_scope() -> None:
    scope = Scope.from_scope_param(verifier().verify(h(SYM["token"]["hex"]), NOW).scope)
    for v in PROOFS:
        r = v["request"]
        scope.check(tuple(r["path"]), r["code"])


@pytest.mark.parametrize("v", PROOFS, ids=[v["name"] for v in PROOFS])
def test_coap_message_carries_the_proof(v: dict[str, Any]) -> None:
    raw = h(v["coap_request"]["hex"])
    msg = aiocoap.Message.decode(raw)
    (opt,) = msg.opt.get_option(PROOF_OPTION)
    assert opt.value.hex() == v["option_value"]["hex"]
    assert tuple(msg.opt.uri_path) == tuple(v["request"]["path"])
    assert tuple(msg.opt.uri_query) == tuple(v["request"]["query"])
    assert msg.opt.echo == (h(v["echo_hex"]) if v["echo_hex"] else None)
    assert bytes(msg.payload) == h(v["request"]["payload_hex"])
    # the option header the recipe tells firmware to write, right before the value
    previous = max(int(o.number) for o in msg.opt.option_list() if int(o.number) < PROOF_OPTION)
    value = h(v["option_value"]["hex"])
    header = recipe.coap_option_header(PROOF_OPTION - previous, len(value))
    assert header + value in raw


# --- the stdlib-only recipe reproduces the vectors ----------------------------


@pytest.mark.parametrize("v", PROOFS, ids=[v["name"] for v in PROOFS])
def test_recipe_reproduces_every_proof(v: dict[str, Any]) -> None:
    r = v["request"]
    echo = h(v["echo_hex"]) if v["echo_hex"] else None
    content = recipe.detached_content(
        r["code"], r["path"], r["query"], r["content_format"], h(r["payload_hex"]), v["piv"], echo
    )
    steps = v["steps"]
    assert content.hex() == steps["detached_content"]["hex"]
    assert recipe.decode(content) == cbor2.loads(content)
    alg = {"HMAC_256_64": recipe.ALG_HMAC_256_64, "ES256": recipe.ALG_ES256,
           "EDDSA": recipe.ALG_EDDSA}[v["alg"]]  # fmt: skip
    protected = recipe.protected_header(alg)
    assert protected.hex() == steps["protected_hex"]
    kid = h(v["kid_hex"])
    if "mac_structure" in steps:
        assert recipe.mac_structure(protected, content).hex() == steps["mac_structure"]["hex"]
        k = h(INPUTS["keys"]["pop_hmac"]["k"])
        value = recipe.hmac_proof(kid, k, r["code"], r["path"], r["query"], r["content_format"],
                                  h(r["payload_hex"]), v["piv"], echo)  # fmt: skip
    else:
        to_sign = recipe.sig_structure(protected, content)
        assert to_sign.hex() == steps["sig_structure"]["hex"]
        signature = h(steps["signature_hex"])
        d = INPUTS["keys"][v["key"]]
        if v["alg"] == "ES256":
            assert hashlib.sha256(to_sign).hexdigest() == steps["sig_structure_sha256_hex"]
            _ecdsa_verify(d["x"], d["y"], to_sign, signature)
        else:
            ed25519.Ed25519PublicKey.from_public_bytes(h(d["x"])).verify(signature, to_sign)
        value = recipe.proof_option(protected, kid, v["piv"], signature)
    assert value.hex() == v["option_value"]["hex"]


def test_recipe_token_requests_and_response() -> None:
    scope = recipe.aif_scope(str(Scope.parse(INPUTS["scope_text"])))
    assert scope.hex() == INPUTS["scope_aif"]["hex"]
    assert recipe.token_request(scope).hex() == SYM["token_request"]["hex"]
    assert recipe.token_request("/whoami:GET") == TokenRequest(scope="/whoami:GET").encode()
    device_cose_key = h(INPUTS["keys"]["device_es256"]["cose_key_public_hex"])
    assert recipe.token_request(scope, device_cose_key).hex() == ASYM["token_request"]["hex"]
    fields = recipe.parse_token_response(h(SYM["token_response"]["hex"]))
    assert fields.access_token.hex() == SYM["token"]["hex"]
    assert fields.expires_in == INPUTS["token_lifetime"]
    assert (fields.kid.hex(), fields.k.hex()) == (
        SYM["pop_key"]["kid_hex"],
        SYM["pop_key"]["k_hex"],
    )
    assert fields.alg == recipe.ALG_HMAC_256_64
    asym = recipe.parse_token_response(h(ASYM["token_response"]["hex"]))
    assert asym.kid is None and asym.access_token.hex() == ASYM["token"]["hex"]


def test_recipe_decoder_agrees_with_cbor2_and_refuses_junk() -> None:
    items = [SYM["token_response"], ASYM["token_response"], RESPONSES["creation_hints"],
             RESPONSES["token_error"], SYM["claims"], ASYM["token"]]  # fmt: skip
    for node in items:
        data = h(node["hex"])
        assert recipe.decode(data) == cbor2.loads(data)
    for junk in (b"\xa1\x01", b"\x5f\x41\x00\xff", b"\xf9\x3c\x00", b"\x01\x02", b"\x62a"):
        with pytest.raises((ValueError, IndexError)):
            recipe.decode(junk)


def test_coap_option_header_examples() -> None:
    """RFC 7252 §3.1 extended deltas: the Proof option after Uri-Path (11),
    after Echo (252), and a 4-byte value."""
    assert recipe.coap_option_header(65001 - 11, 29) == bytes((0xED,)) + (
        65001 - 11 - 269
    ).to_bytes(2, "big") + bytes((29 - 13,))
    assert recipe.coap_option_header(65001 - 252, 12) == b"\xec" + (65001 - 252 - 269).to_bytes(
        2, "big"
    )
    assert recipe.coap_option_header(0, 4) == b"\x04"


# --- the notes ------------------------------------------------------------------

_GENERATED = re.compile(r"<!-- generated: [^ ]+ -->\n.*?<!-- /generated -->", re.DOTALL)


def _all_vector_hex() -> str:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and (key == "hex" or key.endswith("_hex")):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for path in VECTORS.glob("*.json"):
        walk(json.loads(path.read_text()))
    return "|".join(found)


_HEX_SPAN = re.compile(r"`((?:[0-9a-f]{2} )+[0-9a-f]{2})`")


@pytest.mark.parametrize("doc", gen.DOCS)
def test_notes_hold_no_hand_typed_hex_and_no_dead_links(doc: str) -> None:
    text = (NOTES / doc).read_text()
    outside = _GENERATED.sub("", text)
    assert "```hex" not in outside and "```cbor-diag" not in outside, (
        f"{doc}: hex and diagnostic notation belong in generated blocks"
    )
    # byte sequences quoted in the prose are the vectors' bytes
    everything = _all_vector_hex()
    for span in _HEX_SPAN.findall(outside):
        assert span.replace(" ", "") in everything, f"{doc}: `{span}` is in no vector"
    for target, anchor in re.findall(r"\]\(([^)#:]*)(?:#([^)]*))?\)", text):
        path = NOTES / (target or doc)
        assert path.exists(), f"{doc}: dead link {target}"
        if anchor:
            assert anchor in _anchors(path.read_text()), f"{doc}: no #{anchor} in {path.name}"


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors: lower case, punctuation dropped, spaces
    to hyphens."""
    return {
        re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in markdown.splitlines()
        if line.startswith("#")
    }
