"""CWT claims, minting and verification (RFC 8392; RFC 9200 §5.10.1.1 codes)."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens import cbor, cose
from tokens.cnf import CnfKey, CnfKid, CnfRedactedKey
from tokens.cwt import DEFAULT_LEEWAY, Claims, TokenVerifier, decode_unverified, mint, nest
from tokens.errors import (
    AlgorithmMismatch,
    BadSignature,
    CriticalHeaderError,
    Expired,
    MalformedError,
    NotYetValid,
    TokenError,
    UnknownKey,
    WrongAudience,
    WrongIssuer,
)
from tokens.keys import CoseKey, Ec2Key, KeySet, OkpKey, SymmetricKey
from tokens.params import Alg, CoapCode, CoseTag

from .conftest import Rfc8392

NOW = 1_800_000_000.0
ES_D, ED_D = b"\x01" * 32, b"\x02" * 32  # fixed private keys, so tests can reuse them
ES = Ec2Key.from_private_bytes(b"as-es", ES_D)
ED = OkpKey.from_private_bytes(b"as-ed", ED_D)
MAC = SymmetricKey(b"as-mac", bytes(range(32)), Alg.HMAC_256_64)
AES = SymmetricKey(b"as-rs", bytes(range(16)), Alg.AES_CCM_16_64_128)

BASE = Claims(iss="as", aud="gw", exp=int(NOW) + 600, iat=int(NOW), cti=b"\x01" * 8)

UNAUTHORIZED = CoapCode.UNAUTHORIZED
BAD_REQUEST = CoapCode.BAD_REQUEST
FORBIDDEN = CoapCode.FORBIDDEN


def make_verifier(**kw: Any) -> TokenVerifier:
    args: dict[str, Any] = dict(
        audience="gw",
        issuer="as",
        keys=KeySet([ES.public(), ED.public(), MAC]),
        decryption_keys=KeySet([AES]),
    )
    args.update(kw)
    return TokenVerifier(**args)


def expect(exc: type[TokenError], code: CoapCode, token: Any, now: float = NOW, **kw: Any) -> None:
    with pytest.raises(exc) as info:
        make_verifier(**kw).verify(token, now)
    assert type(info.value) is exc, f"got {type(info.value).__name__}: {info.value}"
    assert info.value.coap_code == code


def raw_message(
    tag: int | None,
    key: CoseKey,
    protected: dict[int, Any],
    unprotected: dict[int, Any],
    payload: bytes,
) -> bytes:
    """A Sign1/Mac0 built by hand, correctly signed/MACed over whatever headers."""
    prot = cbor2.dumps(protected) if protected else b""
    if key.alg in (Alg.ES256, Alg.EDDSA):
        last = key.sign(cose.sig_structure(prot, b"", payload))
    else:
        last = key.mac(cose.mac_structure(prot, b"", payload))
    items = [prot, unprotected, payload, last]
    return cbor2.dumps(cbor2.CBORTag(tag, items) if tag is not None else items)


# --- RFC 8392 Appendix A --------------------------------------------------------


def rfc_verifier(rfc8392: Rfc8392, **kw: Any) -> TokenVerifier:
    k = rfc8392.keys
    args: dict[str, Any] = dict(
        audience="coap://light.example.com",
        issuer="coap://as.example.com",
        keys=KeySet([k["AsymmetricECDSA256"].public(), k["Symmetric256"]]),
        decryption_keys=KeySet([k["Symmetric128"]]),
    )
    args.update(kw)
    return TokenVerifier(**args)


def rfc_claims(rfc8392: Rfc8392) -> Claims:
    return Claims.decode(rfc8392.bytes_of("A.1"))


def test_a1_claims_set(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.1"]
    claims = rfc_claims(rfc8392)
    want = dict(vec["claims"], cti=bytes.fromhex(vec["claims"]["cti"]))
    assert claims == Claims(**want)
    assert claims.encode() == rfc8392.bytes_of("A.1")  # byte-exact re-encoding


def test_a3_signed_cwt_verifies(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.3"]
    token = rfc8392.bytes_of("A.3")
    assert rfc_verifier(rfc8392).verify(token, vec["now"]) == rfc_claims(rfc8392)
    # The same message untagged and with the CWT tag in front verifies as well.
    items = cbor2.loads(token).value
    assert rfc_verifier(rfc8392).verify(cbor2.dumps(items), vec["now"]) == rfc_claims(rfc8392)
    assert rfc_verifier(rfc8392).verify(b"\xd8\x3d" + token, vec["now"]).sub == "erikw"


def test_a3_signed_cwt_fails_with_a_flipped_signature_bit(rfc8392: Rfc8392) -> None:
    token = bytearray(rfc8392.bytes_of("A.3"))
    token[-1] ^= 1
    with pytest.raises(BadSignature):
        rfc_verifier(rfc8392).verify(bytes(token), rfc8392.examples["A.3"]["now"])


def test_a4_maced_cwt_reproduced_and_verifies(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.4"]
    key = rfc8392.keys[vec["key"]]
    assert mint(rfc_claims(rfc8392), key, cwt_tag=True) == rfc8392.bytes_of("A.4")
    assert rfc_verifier(rfc8392).verify(rfc8392.bytes_of("A.4"), vec["now"]).iss == (
        "coap://as.example.com"
    )


def test_a5_encrypted_cwt_reproduced_and_verifies(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.5"]
    key = rfc8392.keys[vec["key"]]
    iv = bytes.fromhex(vec["iv"])
    assert mint(rfc_claims(rfc8392), key, tagged=True, iv=iv) == rfc8392.bytes_of("A.5")
    assert rfc_verifier(rfc8392).verify(rfc8392.bytes_of("A.5"), vec["now"]) == rfc_claims(rfc8392)


def test_a6_nested_cwt_reproduced_and_verifies(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.6"]
    iv = bytes.fromhex(vec["iv"])
    nested = nest(rfc8392.bytes_of("A.3"), rfc8392.keys[vec["key"]], tagged=True, iv=iv)
    assert nested == rfc8392.bytes_of("A.6")
    assert rfc_verifier(rfc8392).verify(nested, vec["now"]) == rfc_claims(rfc8392)
    # The inner signature is checked with the signing keys: without them, UnknownKey.
    no_sign = rfc_verifier(rfc8392, keys=KeySet([rfc8392.keys["Symmetric256"]]))
    with pytest.raises(UnknownKey):
        no_sign.verify(nested, vec["now"])


def test_a7_float_numericdate_reproduced(rfc8392: Rfc8392) -> None:
    vec = rfc8392.examples["A.7"]
    claims = Claims(iat=vec["claims"]["iat"])
    assert mint(claims, rfc8392.keys[vec["key"]], tagged=True) == rfc8392.bytes_of("A.7")
    # MAC and claim types check out; the example names no audience, which is last.
    verifier = rfc_verifier(rfc8392, issuer=None, accept_any_issuer=True, require_exp=False)
    with pytest.raises(WrongAudience):
        verifier.verify(rfc8392.bytes_of("A.7"), vec["now"])


def test_a3_expiry_edge_with_leeway(rfc8392: Rfc8392) -> None:
    exp = rfc_claims(rfc8392).exp
    assert exp is not None
    token = rfc8392.bytes_of("A.3")
    rfc_verifier(rfc8392).verify(token, exp + DEFAULT_LEEWAY - 0.001)
    with pytest.raises(Expired):
        rfc_verifier(rfc8392).verify(token, exp + DEFAULT_LEEWAY)


# --- minting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind"),
    [(ES, CoseTag.SIGN1), (ED, CoseTag.SIGN1), (MAC, CoseTag.MAC0), (AES, CoseTag.ENCRYPT0)],
)
def test_mint_picks_the_message_type_by_key(key: CoseKey, kind: CoseTag) -> None:
    untagged = mint(BASE, key)
    assert isinstance(cbor2.loads(untagged), list)
    tagged = cbor2.loads(mint(BASE, key, tagged=True))
    assert tagged.tag == kind
    both = cbor2.loads(mint(BASE, key, cwt_tag=True))
    assert both.tag == CoseTag.CWT and both.value.tag == kind
    header = cbor2.loads(untagged)[1]
    assert header[4] == key.kid  # kid unprotected
    assert cbor2.loads(cbor2.loads(untagged)[0]) == {1: int(key.alg)}
    for token in (untagged, mint(BASE, key, tagged=True), mint(BASE, key, cwt_tag=True)):
        assert make_verifier().verify(token, NOW) == BASE


def test_mint_iv_only_for_aead() -> None:
    with pytest.raises(ValueError):
        mint(BASE, MAC, iv=b"\x00" * 13)
    with pytest.raises(ValueError):
        nest(mint(BASE, ES), MAC)


def test_encrypted_token_random_iv_differs() -> None:
    assert mint(BASE, AES) != mint(BASE, AES)


# --- claims -----------------------------------------------------------------------


def test_claims_audience_array() -> None:
    token = mint(Claims(iss="as", aud=("rs1", "gw"), exp=NOW + 60), ES)
    assert make_verifier().verify(token, NOW).aud == ("rs1", "gw")
    expect(WrongAudience, FORBIDDEN, mint(Claims(iss="as", aud=("rs1", "rs2"), exp=NOW + 60), ES))


def test_claims_full_round_trip() -> None:
    c = Claims(
        iss="as",
        sub="dev-1",
        aud="gw",
        exp=NOW + 1.5,
        nbf=int(NOW),
        iat=int(NOW),
        cti=b"abc",
        cnf=CnfKey(SymmetricKey(b"pop", b"\x05" * 16, Alg.HMAC_256_64)),
        scope=b"\x81\x82\x61/\x01",
        exi=300,
        ace_profile=1,
        cnonce=b"n",
        extra={-70000: "x", "priv": [1, 2]},
    )
    back = Claims.decode(c.encode())
    assert back == c
    assert isinstance(back.cnf, CnfKey) and back.cnf.key.alg == Alg.HMAC_256_64


def test_claims_extra_cannot_shadow_registered_claims() -> None:
    with pytest.raises(ValueError):
        Claims(extra={1: "iss twice"})
    with pytest.raises(ValueError):
        Claims(extra={b"k": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "claims_map",
    [
        {1: b"bytes-iss"},
        {2: 5},
        {3: 7},
        {3: []},
        {3: ["gw", 1]},
        {4: "soon"},
        {4: True},
        {4: math.inf},
        {4: math.nan},
        {5: None},
        {6: [1]},
        {7: "text-cti"},
        {8: {3: "kid-as-text"}},
        {8: {1: {1: 4}}},
        {9: 5},
        {38: "coap_dtls"},
        {39: "nonce"},
        {40: -1},
        {40: 1.5},
        {b"bytes-key": 1},
        {1.5: 1},
    ],
)
def test_claim_types_rfc8392_3_1(claims_map: dict[Any, Any]) -> None:
    with pytest.raises(MalformedError):
        Claims.decode(cbor2.dumps(claims_map))
    expect(MalformedError, BAD_REQUEST, mint_raw_claims(ES, claims_map))


def mint_raw_claims(key: CoseKey, claims_map: Any) -> bytes:
    return cose.sign1(key, cbor2.dumps(claims_map))


def test_claims_describe_hides_symmetric_key() -> None:
    secret = b"\x42" * 16
    c = Claims(iss="as", cnf=CnfKey(SymmetricKey(b"pop", secret, Alg.HMAC_256_64)))
    shown = repr(c.describe()) + repr(c)
    assert secret.hex() not in shown and "4242" not in shown
    assert c.describe()["cnf"]["cose_key"]["kid"] == b"pop".hex()


# --- verification: negative cases, each with its error class and CoAP code ---------


def test_wrong_audience() -> None:
    expect(WrongAudience, FORBIDDEN, mint(Claims(iss="as", aud="other", exp=NOW + 60), ES))
    expect(WrongAudience, FORBIDDEN, mint(Claims(iss="as", exp=NOW + 60), ES))  # no aud


def test_wrong_issuer() -> None:
    expect(WrongIssuer, UNAUTHORIZED, mint(Claims(iss="evil", aud="gw", exp=NOW + 60), ES))
    expect(WrongIssuer, UNAUTHORIZED, mint(Claims(aud="gw", exp=NOW + 60), ES))  # no iss


def test_issuer_check_is_on_unless_explicitly_off() -> None:
    with pytest.raises(ValueError):
        TokenVerifier(audience="gw", keys=KeySet())
    with pytest.raises(ValueError):
        TokenVerifier(audience="", issuer="as", keys=KeySet())
    token = mint(Claims(iss="anyone", aud="gw", exp=NOW + 60), ES)
    assert make_verifier(issuer=None, accept_any_issuer=True).verify(token, NOW).iss == "anyone"


def test_expired_leeway_edges() -> None:
    token = mint(Claims(iss="as", aud="gw", exp=1000), MAC)
    v = make_verifier(leeway=30)
    assert v.verify(token, 1029.999).exp == 1000
    with pytest.raises(Expired) as info:
        v.verify(token, 1030)
    assert info.value.coap_code == UNAUTHORIZED
    expect(Expired, UNAUTHORIZED, token, now=1001, leeway=0)
    make_verifier(leeway=0).verify(token, 999.999)


def test_not_yet_valid_leeway_edges() -> None:
    token = mint(Claims(iss="as", aud="gw", exp=5000, nbf=1000), MAC)
    v = make_verifier(leeway=30)
    assert v.verify(token, 970).nbf == 1000
    with pytest.raises(NotYetValid) as info:
        v.verify(token, 969.999)
    assert info.value.coap_code == UNAUTHORIZED
    expect(NotYetValid, UNAUTHORIZED, token, now=999, leeway=0)


def test_exp_required_by_default() -> None:
    token = mint(Claims(iss="as", aud="gw"), MAC)
    expect(Expired, UNAUTHORIZED, token)
    assert make_verifier(require_exp=False).verify(token, NOW).aud == "gw"


def test_unknown_kid() -> None:
    stranger = Ec2Key.generate(b"stranger")
    expect(UnknownKey, UNAUTHORIZED, mint(BASE, stranger))
    # An Encrypt0 is looked up among the decryption keys only, and vice versa.
    expect(UnknownKey, UNAUTHORIZED, mint(BASE, AES), decryption_keys=KeySet())
    expect(UnknownKey, UNAUTHORIZED, mint(BASE, MAC), keys=KeySet([ES]), decryption_keys=KeySet())


def test_no_kid() -> None:
    expect(UnknownKey, UNAUTHORIZED, cose.sign1(ES, BASE.encode(), with_kid=False))
    expect(UnknownKey, UNAUTHORIZED, cose.encrypt0(AES, BASE.encode(), with_kid=False))


def test_kid_in_protected_header() -> None:
    token = cose.sign1(ES, BASE.encode(), protected={4: ES.kid}, with_kid=False)
    assert make_verifier().verify(token, NOW) == BASE


def test_alg_in_unprotected_header_only() -> None:
    token = raw_message(18, ES, {}, {1: -7, 4: ES.kid}, BASE.encode())
    expect(AlgorithmMismatch, UNAUTHORIZED, token)


def test_alg_header_disagrees_with_key() -> None:
    # Signed by an ES256 key that claims the HMAC key's kid: the kid names an
    # HMAC key, so the message is a Mac0 whose protected alg (ES256) is wrong.
    impostor = Ec2Key.from_private_bytes(MAC.kid, ES_D)  # the HMAC key's kid
    expect(AlgorithmMismatch, UNAUTHORIZED, mint(BASE, impostor))
    # The protected alg says HMAC 256/64 but the kid names the ES256 key.
    token = raw_message(None, MAC, {1: int(Alg.HMAC_256_64)}, {4: ES.kid}, BASE.encode())
    expect(AlgorithmMismatch, UNAUTHORIZED, token)


def test_eddsa_token_against_es256_key() -> None:
    ed_impostor = OkpKey.from_private_bytes(ES.kid, ED_D)
    expect(AlgorithmMismatch, UNAUTHORIZED, mint(BASE, ed_impostor))
    expect(AlgorithmMismatch, UNAUTHORIZED, mint(BASE, ed_impostor, tagged=True))


def test_accepted_algorithms_restrict_keys() -> None:
    expect(AlgorithmMismatch, UNAUTHORIZED, mint(BASE, ED), algorithms=[Alg.ES256])
    assert make_verifier(algorithms=[Alg.ES256]).verify(mint(BASE, ES), NOW) == BASE


def test_aead_key_among_signature_keys_does_not_fit_a_sign1() -> None:
    rogue = SymmetricKey(ES.kid, b"\x00" * 16, Alg.AES_CCM_16_64_128)
    expect(AlgorithmMismatch, UNAUTHORIZED, mint(BASE, ES), keys=KeySet([rogue]))


def test_truncated_and_trailing_bytes() -> None:
    token = mint(BASE, ES)
    for cut in (1, 10, len(token) // 2, len(token) - 1):
        expect(MalformedError, BAD_REQUEST, token[:cut])
    expect(MalformedError, BAD_REQUEST, token + b"\x00")
    expect(MalformedError, BAD_REQUEST, b"")


def test_wrong_cbor_tags() -> None:
    items = cbor2.loads(mint(BASE, ES))
    # tag 17 (Mac0) on a message whose kid names an ES256 key
    expect(AlgorithmMismatch, UNAUTHORIZED, cbor2.dumps(cbor2.CBORTag(17, items)))
    # tag 16 (Encrypt0) on a 4-element array
    expect(MalformedError, BAD_REQUEST, cbor2.dumps(cbor2.CBORTag(16, items)))
    # tag 98 (COSE_Sign), tag 96 (COSE_Encrypt), an unrelated tag, a doubled CWT tag
    for tag in (98, 96, 1, 24):
        expect(MalformedError, BAD_REQUEST, cbor2.dumps(cbor2.CBORTag(tag, items)))
    doubled = cbor2.CBORTag(61, cbor2.CBORTag(61, cbor2.CBORTag(18, items)))
    expect(MalformedError, BAD_REQUEST, cbor2.dumps(doubled))
    # tag 61 directly on an untagged message is accepted
    assert make_verifier().verify(cbor2.dumps(cbor2.CBORTag(61, items)), NOW) == BASE


@pytest.mark.parametrize("key", [ES, ED, MAC, AES])
def test_tampered_claim_byte(key: CoseKey) -> None:
    token = mint(BASE, key)
    if key is AES:
        tampered = bytearray(token)
        tampered[-12] ^= 0x01  # inside the ciphertext
    else:
        at = token.index(b"bgw")  # the aud text "gw"
        tampered = bytearray(token)
        tampered[at + 2] = ord("x")  # still valid CBOR, aud "gx"
    expect(BadSignature, UNAUTHORIZED, bytes(tampered))


@pytest.mark.parametrize("key", [ES, MAC])
def test_tampered_protected_header(key: CoseKey) -> None:
    token = cose.sign1(key, BASE.encode()) if key is ES else cose.mac0(key, BASE.encode())
    items = cbor2.loads(token)
    items[0] = cbor2.dumps({1: int(key.alg), 3: 0})  # add a content type: not signed
    expect(BadSignature, UNAUTHORIZED, cbor2.dumps(items))


def test_unknown_critical_header() -> None:
    token = cose.sign1(ES, BASE.encode(), protected={2: [99], 99: 1})
    with pytest.raises(CriticalHeaderError) as info:
        make_verifier().verify(token, NOW)
    assert info.value.coap_code == BAD_REQUEST


def test_non_bytes_and_non_map_payloads() -> None:
    expect(MalformedError, BAD_REQUEST, "a string")
    expect(MalformedError, BAD_REQUEST, mint_raw_claims(ES, [1, 2, 3]))
    expect(MalformedError, BAD_REQUEST, mint_raw_claims(ES, "claims"))
    items = cbor2.loads(mint(BASE, ES))
    items[2] = BASE.to_cbor()  # claims map not wrapped in a bstr
    expect(MalformedError, BAD_REQUEST, cbor2.dumps(items))
    detached = cose.sign1(ES, BASE.encode(), detached=True)
    expect(MalformedError, BAD_REQUEST, detached)
    items = cbor2.loads(mint(BASE, ES))
    expect(MalformedError, BAD_REQUEST, cbor2.dumps(items[:2]))
    expect(MalformedError, BAD_REQUEST, cbor2.dumps({"not": "cose"}))


def test_encrypt0_without_iv() -> None:
    token = cbor2.loads(mint(BASE, AES))
    del token[1][5]
    expect(MalformedError, BAD_REQUEST, cbor2.dumps(token))


def test_nested_one_level_only() -> None:
    inner = mint(BASE, ES, tagged=True)
    assert make_verifier().verify(nest(inner, AES), NOW) == BASE
    assert make_verifier().verify(nest(mint(BASE, MAC), AES), NOW) == BASE  # untagged inner
    twice = nest(nest(inner, AES, tagged=True), AES)
    expect(MalformedError, BAD_REQUEST, twice)
    # the inner layer is verified: a bad inner signature fails
    bad = bytearray(inner)
    bad[-1] ^= 1
    expect(BadSignature, UNAUTHORIZED, nest(bytes(bad), AES))


def test_check_order_signature_before_claims() -> None:
    # A forged token with every claim wrong reports the signature, not the claims.
    forged = bytearray(mint(Claims(iss="evil", aud="x", exp=1), ES))
    forged[-1] ^= 1
    expect(BadSignature, UNAUTHORIZED, bytes(forged))
    # issuer before expiry before audience
    expect(WrongIssuer, UNAUTHORIZED, mint(Claims(iss="evil", aud="x", exp=1), ES))
    expect(Expired, UNAUTHORIZED, mint(Claims(iss="as", aud="x", exp=1), ES))
    expect(NotYetValid, UNAUTHORIZED, mint(Claims(iss="as", aud="x", exp=NOW * 2, nbf=NOW * 2), ES))


# --- key rotation ---------------------------------------------------------------------


def test_key_rotation() -> None:
    old, new = Ec2Key.generate(b"2026-01"), Ec2Key.generate(b"2026-02")
    keys = KeySet([old.public(), new.public()])
    v = TokenVerifier(audience="gw", issuer="as", keys=keys)
    t_old, t_new = mint(BASE, old), mint(BASE, new)
    assert v.verify(t_old, NOW) == BASE and v.verify(t_new, NOW) == BASE
    keys.remove(old.kid)
    with pytest.raises(UnknownKey):
        v.verify(t_old, NOW)
    assert v.verify(t_new, NOW) == BASE


# --- token size ------------------------------------------------------------------------


def test_symmetric_pop_token_size() -> None:
    aif = cbor2.dumps([["/s/temp", 1], ["/a/led", 5]])  # AIF, RFC 9237: GET; GET|PUT
    pop = SymmetricKey(b"p1", b"\x07" * 16, Alg.HMAC_256_64)
    claims = Claims(
        iss="as",
        aud="gw",
        exp=int(NOW) + 3600,
        iat=int(NOW),
        cti=b"\x08" * 8,
        cnf=CnfKey(pop),
        scope=aif,
    )
    token = mint(claims, AES)
    print(f"symmetric-PoP Encrypt0 token: {len(token)} bytes")
    assert len(token) <= 160
    got = make_verifier().verify(token, NOW)
    assert isinstance(got.cnf, CnfKey) and got.cnf.key.kid == b"p1" and got.scope == aif


# --- decode_unverified ------------------------------------------------------------------


def test_decode_unverified_signed() -> None:
    pop = SymmetricKey(b"pop", b"\x33" * 16, Alg.HMAC_256_64)
    token = mint(Claims(iss="as", aud="gw", cnf=CnfKey(pop)), MAC)
    info = decode_unverified(token)
    assert info.kind is CoseTag.MAC0 and info.kid == MAC.kid and info.alg == Alg.HMAC_256_64
    assert not info.cose_tag and not info.cwt_tag and info.size == len(token)
    assert info.claims is not None and info.claims.iss == "as"
    assert info.claims.cnf == CnfRedactedKey(4, b"pop", int(Alg.HMAC_256_64))
    assert "33" * 16 not in repr(info.describe()) + repr(info)
    revealed = decode_unverified(token, reveal_keys=True).claims
    assert revealed is not None and isinstance(revealed.cnf, CnfKey)
    assert isinstance(revealed.cnf.key, SymmetricKey) and revealed.cnf.key.secret == b"\x33" * 16


def test_decode_unverified_encrypted_shows_headers_only() -> None:
    info = decode_unverified(mint(BASE, AES, cwt_tag=True))
    assert info.kind is CoseTag.ENCRYPT0 and info.cwt_tag and info.cose_tag
    assert info.claims is None and info.kid == AES.kid and 5 in info.unprotected
    assert info.describe()["type"] == "ENCRYPT0"


def test_decode_unverified_keeps_cnf_kid_and_public_key() -> None:
    token = mint(Claims(iss="as", cnf=CnfKid(b"k1")), ES)
    info = decode_unverified(token)
    assert info.kind is CoseTag.SIGN1 and info.claims is not None
    assert info.claims.cnf == CnfKid(b"k1")
    dev = Ec2Key.generate(b"dev")
    info = decode_unverified(mint(Claims(cnf=CnfKey(dev)), ED))
    assert info.claims is not None and info.claims.cnf == CnfKey(dev.public())


def test_decode_unverified_rejects_garbage() -> None:
    for bad in (b"", b"\xff", cbor2.dumps([1, 2, 3, 4]), cbor2.dumps(cbor2.CBORTag(98, []))):
        with pytest.raises(MalformedError):
            decode_unverified(bad)


# --- hypothesis --------------------------------------------------------------------------

VERIFIER = make_verifier()

cbor_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.text(max_size=20),
)
cbor_value = st.recursive(
    cbor_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.integers(-5, 45), st.text(max_size=3)), inner, max_size=5),
    ),
    max_leaves=20,
)
kids = st.sampled_from([ES.kid, ED.kid, MAC.kid, AES.kid, b"nope"])


@st.composite
def cose_shaped(draw: st.DrawFn) -> bytes:
    """Arrays that look like COSE messages, with real kids and algs."""
    prot = draw(
        st.one_of(
            st.just(b""),
            st.builds(
                cbor2.dumps,
                st.dictionaries(st.integers(-2, 8), st.one_of(st.integers(-10, 12), cbor_value)),
            ),
            st.binary(max_size=8),
        )
    )
    unprot = draw(st.dictionaries(st.integers(1, 6), st.one_of(kids, cbor_value), max_size=3))
    payload = draw(st.one_of(st.builds(cbor2.dumps, cbor_value), st.binary(max_size=60)))
    items: list[Any] = [prot, unprot, payload, draw(st.binary(max_size=64))]
    if draw(st.booleans()):
        items = items[:3]
    tag = draw(st.sampled_from([None, 16, 17, 18, 61, 98]))
    return cbor2.dumps(cbor2.CBORTag(tag, items) if tag else items)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), cose_shaped()))
def test_verify_arbitrary_bytes_raises_only_token_errors(data: bytes) -> None:
    with contextlib.suppress(TokenError):
        VERIFIER.verify(data, NOW)
    with contextlib.suppress(TokenError):
        decode_unverified(data)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=100), st.builds(cbor2.dumps, cbor_value)))
def test_claims_decoder_raises_only_token_errors(data: bytes) -> None:
    with contextlib.suppress(TokenError):
        Claims.decode(data)


numeric_date = st.one_of(
    st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False, allow_infinity=False)
)
extra_keys = st.one_of(st.integers(-(2**20), 2**20), st.text(max_size=5)).filter(
    lambda k: not (type(k) is int and k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 38, 39, 40))
)
extra_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.binary(max_size=8), st.text()
    ),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
claims_strategy = st.builds(
    Claims,
    iss=st.none() | st.text(max_size=20),
    sub=st.none() | st.text(max_size=20),
    aud=st.none()
    | st.text(max_size=10)
    | st.lists(st.text(max_size=5), min_size=1, max_size=3).map(tuple),
    exp=st.none() | numeric_date,
    nbf=st.none() | numeric_date,
    iat=st.none() | numeric_date,
    cti=st.none() | st.binary(max_size=16),
    cnf=st.none()
    | st.binary(min_size=1, max_size=8).map(CnfKid)
    | st.binary(min_size=16, max_size=32).map(
        lambda k: CnfKey(SymmetricKey(b"pop", k, Alg.HMAC_256_64))
    ),
    scope=st.none() | st.text(max_size=10) | st.binary(max_size=10),
    exi=st.none() | st.integers(0, 2**32),
    ace_profile=st.none() | st.integers(-5, 5),
    cnonce=st.none() | st.binary(max_size=8),
    extra=st.dictionaries(extra_keys, extra_values, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(claims_strategy)
def test_claims_round_trip(claims: Claims) -> None:
    encoded = claims.encode()
    back = Claims.decode(encoded)
    assert back == claims
    assert back.encode() == encoded
    assert cbor.decode(encoded) == claims.to_cbor()


# --- strictness kept on the fast paths ---------------------------------------------------


@pytest.mark.parametrize("key", [ES, MAC, AES], ids=["sign1", "mac0", "encrypt0"])
def test_trailing_bytes_refused_in_every_layer(key: CoseKey) -> None:
    """Trailing bytes after the message, inside the protected header and
    after the (authenticated or decrypted) claims are all malformed (4.00),
    even though the signature / MAC / AEAD tag over them is valid."""
    claims = BASE.encode()
    prot = cose.encode_protected(key)
    if key is AES:
        good = cose.encrypt0(key, claims)
        bad_claims = cose.encrypt0(key, claims + b"\x00")
        bad_prot = cose.encrypt0(key, claims, protected=None)
        items = cbor2.loads(bad_prot)
        iv = items[1][5]
        items[0] = prot + b"\x00"
        items[2] = key.encrypt(iv, claims, cose.enc_structure(items[0], b""))
        bad_prot = cbor2.dumps(items)
    else:
        good = mint(BASE, key)
        bad_claims = (cose.sign1 if key is ES else cose.mac0)(key, claims + b"\x00")
        bad_prot = raw_message(None, key, {}, {4: key.kid}, claims)
        items = cbor2.loads(bad_prot)
        items[0] = prot + b"\x00"
        structure = cose.sig_structure if key is ES else cose.mac_structure
        last = key.sign if key is ES else key.mac
        items[3] = last(structure(items[0], b"", claims))
        bad_prot = cbor2.dumps(items)
    assert make_verifier().verify(good, NOW) == BASE
    for token in (good + b"\x00", bad_claims, bad_prot):
        expect(MalformedError, BAD_REQUEST, token)


def test_claims_from_cbor_builds_a_normal_frozen_instance() -> None:
    import dataclasses

    full = Claims(
        iss="as",
        sub="dev",
        aud=("gw", "gw2"),
        exp=10,
        nbf=1.5,
        iat=2,
        cti=b"c",
        cnf=CnfKid(b"k"),
        scope="s",
        exi=5,
        ace_profile=1,
        cnonce=b"n",
        extra={100: "x", "t": [1]},
    )
    back = Claims.from_cbor(cbor2.loads(full.encode()))
    assert back == full and repr(back) == repr(full)
    assert dataclasses.asdict(back).keys() == dataclasses.asdict(full).keys()
    assert Claims.from_cbor({}) == Claims() and Claims.from_cbor({}).extra == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        back.iss = "evil"  # type: ignore[misc]


def test_claims_from_cbor_on_a_subclass_runs_its_init() -> None:
    import dataclasses

    seen: list[Any] = []

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Audited(Claims):
        def __post_init__(self) -> None:
            super(Audited, self).__post_init__()
            seen.append(self.iss)

    got = Audited.from_cbor({1: "as", 4: 5, 77: "x"})
    assert type(got) is Audited and got.iss == "as" and got.exp == 5
    assert dict(got.extra) == {77: "x"} and seen == ["as"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (1, 1),  # iss: the exact-type shortcut must not take other types
        (3, b"gw"),
        (3, []),
        (4, True),
        (4, "10"),
        (4, float("inf")),
        (6, None),
        (7, "cti"),
        (9, 1),
        (38, 1.0),
        (38, False),
        (39, "n"),
        (40, -1),
        (40, True),
    ],
)
def test_claim_type_checks_kept(key: int, value: Any) -> None:
    with pytest.raises(MalformedError) as info:
        Claims.from_cbor({key: value})
    assert info.value.coap_code == BAD_REQUEST
