"""COSE_Sign1 / COSE_Mac0 / COSE_Encrypt0 (RFC 9052 §4, §5, §6) and the
header rules of RFC 9052 §3."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokens import cbor, cose
from tokens.errors import (
    AlgorithmMismatch,
    BadSignature,
    CriticalHeaderError,
    MalformedError,
    TokenError,
)
from tokens.keys import Ec2Key, OkpKey, SymmetricKey
from tokens.params import Alg, CoapCode, CoseTag

HMAC = SymmetricKey(b"hk", b"\x11" * 32, Alg.HMAC_256_64)
AEAD = SymmetricKey(b"ek", b"\x22" * 16, Alg.AES_CCM_16_64_128)
EC = Ec2Key.generate(b"ec")
ED = OkpKey.generate(b"ed")


def test_structures_match_general_encoder():
    prot, aad, payload = b"\xa1\x01\x26", b"", b"p" * 300
    assert cose.sig_structure(prot, aad, payload) == cbor2.dumps(["Signature1", prot, aad, payload])
    assert cose.mac_structure(prot, aad, payload) == cbor2.dumps(["MAC0", prot, aad, payload])
    assert cose.enc_structure(prot, b"x" * 70000) == cbor2.dumps(["Encrypt0", prot, b"x" * 70000])


@pytest.mark.parametrize("tagged", [False, True])
def test_round_trips(tagged):
    for key in (EC, ED):
        msg = cose.sign1(key, b"hello", tagged=tagged)
        assert cose.decode(msg, CoseTag.SIGN1).verify_signature(key.public()) == b"hello"
    msg = cose.mac0(HMAC, b"hello", tagged=tagged)
    assert cose.decode(msg, CoseTag.MAC0).verify_mac(HMAC) == b"hello"
    msg = cose.encrypt0(AEAD, b"hello", tagged=tagged)
    assert cose.decode(msg, CoseTag.ENCRYPT0).decrypt(AEAD) == b"hello"


def test_untagged_is_default_and_smaller():
    assert cose.mac0(HMAC, b"x")[0] == 0x84
    assert cose.mac0(HMAC, b"x", tagged=True)[0] == 0xD1  # tag 17


def test_detached_payload():
    msg = cose.mac0(HMAC, b"content", detached=True)
    parsed = cose.decode(msg, CoseTag.MAC0)
    assert parsed.payload is None
    parsed.verify_mac(HMAC, detached_payload=b"content")
    with pytest.raises(BadSignature):
        parsed.verify_mac(HMAC, detached_payload=b"Content")
    with pytest.raises(MalformedError):
        parsed.verify_mac(HMAC)


def test_external_aad_is_bound():
    msg = cose.sign1(EC, b"p", external_aad=b"ctx")
    cose.decode(msg, CoseTag.SIGN1).verify_signature(EC, external_aad=b"ctx")
    with pytest.raises(BadSignature):
        cose.decode(msg, CoseTag.SIGN1).verify_signature(EC, external_aad=b"other")


def test_wrong_tag_and_wrong_type():
    msg = cose.mac0(HMAC, b"x", tagged=True)
    with pytest.raises(MalformedError):
        cose.decode(msg, CoseTag.SIGN1)
    with pytest.raises(MalformedError):
        inner = cbor2.loads(cose.mac0(HMAC, b"x"))
        cose.decode(cbor2.dumps(cbor2.CBORTag(98, inner)), CoseTag.MAC0)
    parsed = cose.decode(cose.mac0(HMAC, b"x"), CoseTag.MAC0)
    with pytest.raises(MalformedError):
        parsed.verify_signature(EC)


def test_alg_pinned_to_key():
    msg = cose.decode(cose.sign1(EC, b"x"), CoseTag.SIGN1)
    with pytest.raises(AlgorithmMismatch) as info:
        msg.verify_signature(ED.public())
    assert info.value.coap_code == CoapCode.UNAUTHORIZED


def _rebuild(protected: dict, unprotected: dict, payload=b"x", last=b"\x00" * 8) -> bytes:
    return cbor2.dumps([cbor2.dumps(protected) if protected else b"", unprotected, payload, last])


def test_header_rules():
    with pytest.raises(AlgorithmMismatch):  # alg only unprotected
        cose.decode(_rebuild({}, {1: 4}), CoseTag.MAC0)
    with pytest.raises(MalformedError):  # no alg at all
        cose.decode(_rebuild({}, {4: b"k"}), CoseTag.MAC0)
    with pytest.raises(MalformedError):  # label in both buckets
        cose.decode(_rebuild({1: 4, 4: b"a"}, {4: b"b"}), CoseTag.MAC0)
    with pytest.raises(CriticalHeaderError):
        cose.decode(_rebuild({1: 4, 2: [99], 99: 1}, {}), CoseTag.MAC0)
    with pytest.raises(MalformedError):  # crit names an absent label
        cose.decode(_rebuild({1: 4, 2: [4]}, {}), CoseTag.MAC0)
    with pytest.raises(MalformedError):  # crit unprotected
        cose.decode(_rebuild({1: 4}, {2: [1]}), CoseTag.MAC0)
    # understood critical label present: fine
    cose.decode(_rebuild({1: 4, 2: [4], 4: b"k"}, {}), CoseTag.MAC0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x84",
        cose.mac0(HMAC, b"x")[:-1],
        cose.mac0(HMAC, b"x") + b"\x00",
        cbor2.dumps([b"\xa1\x01\x04", {}, b"x"]),
        cbor2.dumps([b"\xa1\x01", {}, b"x", b"t"]),
        cbor2.dumps([{1: 4}, {}, b"x", b"t"]),
        cbor2.dumps([b"\x80", {}, b"x", b"t"]),
        cbor2.dumps([b"\xa1\x01\x04", [], b"x", b"t"]),
        cbor2.dumps([b"\xa1\x01\x04", {}, "text", b"t"]),
        cbor2.dumps([b"\xa1\x01\x04", {}, b"x", None]),
    ],
)
def test_malformed_messages(data):
    with pytest.raises(MalformedError):
        cose.decode(data, CoseTag.MAC0)


def test_tampered_signature_and_ciphertext():
    raw = bytearray(cose.sign1(EC, b"x"))
    raw[-1] ^= 1
    with pytest.raises(BadSignature):
        cose.decode(bytes(raw), CoseTag.SIGN1).verify_signature(EC)
    raw = bytearray(cose.encrypt0(AEAD, b"secret"))
    raw[-1] ^= 1
    with pytest.raises(BadSignature):
        cose.decode(bytes(raw), CoseTag.ENCRYPT0).decrypt(AEAD)


def test_encrypt0_needs_iv():
    msg = cbor2.loads(cose.encrypt0(AEAD, b"x"))
    del msg[1][5]
    with pytest.raises(MalformedError):
        cose.decode(cbor2.dumps(msg), CoseTag.ENCRYPT0).decrypt(AEAD)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_our_errors(data):
    for tag in (CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0):
        try:
            msg = cose.decode(data, tag)
            if tag == CoseTag.ENCRYPT0:
                msg.decrypt(AEAD)
            else:
                msg.verify(HMAC if tag == CoseTag.MAC0 else EC, detached_payload=None)
        except TokenError:
            pass


def test_decoder_limit_and_trailing():
    with pytest.raises(MalformedError):
        cbor.decode(b"\x00" * (cbor.MAX_INPUT + 1))
    with pytest.raises(MalformedError):
        cbor.decode(b"\x01\x02")
    assert cbor.decode(b"\x01") == 1


# --- the well-known protected headers (looked up, not decoded) ----------------------


@pytest.mark.parametrize("alg", list(Alg))
def test_known_protected_header_gives_what_decoding_gives(alg):
    prot = cbor2.dumps({1: int(alg)})
    items = [prot, {4: b"k"}, b"payload", b"\x00" * 8]
    msg = cose.decode(cbor2.dumps(items), CoseTag.MAC0)
    assert msg.protected == cbor2.loads(prot) == {1: int(alg)}
    assert type(msg.alg) is int and msg.alg == alg
    assert msg.protected_bytes == prot  # what a signature/MAC covers, byte for byte


def test_known_protected_header_map_is_the_callers_own():
    data = cose.mac0(HMAC, b"x")
    first = cose.decode(data, CoseTag.MAC0)
    first.protected[1] = 5
    first.protected[99] = "changed"
    second = cose.decode(data, CoseTag.MAC0)
    assert second.protected == {1: int(Alg.HMAC_256_64)}
    assert second.protected is not first.protected
    second.verify_mac(HMAC)


def test_other_encodings_of_a_known_header_are_decoded_and_kept_as_sent():
    # {1: 4} with a non-shortest integer, and with an extra label: not looked up
    for prot in (b"\xa1\x01\x18\x04", cbor2.dumps({1: 4, 3: 0})):
        items = [prot, {}, b"x"]
        items.append(HMAC.mac(cose.mac_structure(prot, b"", b"x")))
        msg = cose.decode(cbor2.dumps(items), CoseTag.MAC0)
        assert msg.protected == cbor2.loads(prot) and msg.protected_bytes == prot
        assert msg.verify_mac(HMAC) == b"x"
    # a known header followed by a trailing byte is not the known header
    with pytest.raises(MalformedError):
        cose.decode(_rebuild_raw(b"\xa1\x01\x04\x00"), CoseTag.MAC0)
    with pytest.raises(MalformedError):
        cose.decode(_rebuild_raw(b"\xa1\x01"), CoseTag.MAC0)


def _rebuild_raw(prot: bytes) -> bytes:
    return cbor2.dumps([prot, {}, b"x", b"\x00" * 8])


def test_decoded_message_is_a_normal_frozen_dataclass():
    import dataclasses

    data = cose.encrypt0(AEAD, b"secret", iv=b"\x01" * 13)
    msg = cose.decode(data, CoseTag.ENCRYPT0)
    items = cbor2.loads(data)
    built = cose.CoseMessage(CoseTag.ENCRYPT0, items[0], {1: 10}, items[1], None, items[2])
    assert msg == built and hash(msg.tag) == hash(built.tag) and repr(msg) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.last = b""  # type: ignore[misc]
    assert msg.decrypt(AEAD) == b"secret"
