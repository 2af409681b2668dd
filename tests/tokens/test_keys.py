"""COSE keys (RFC 9052 §7, RFC 9053): encoding, alg pinning, key sets."""

from __future__ import annotations

import pytest

from tokens import cbor
from tokens.errors import (
    AlgorithmMismatch,
    BadSignature,
    MalformedError,
    TokenError,
    UnknownKey,
    UnsupportedPopKey,
)
from tokens.keys import Ec2Key, KeySet, OkpKey, SymmetricKey, key_from_cose
from tokens.params import Alg, CoapCode


@pytest.mark.parametrize("make", [Ec2Key.generate, OkpKey.generate])
def test_asymmetric_round_trip_and_sign(make):
    key = make(b"dev-1")
    pub = key_from_cose(key.public().encode())
    assert pub.kid == b"dev-1" and pub.alg == key.alg and not pub.has_private
    sig = key.sign(b"message")
    pub.verify(b"message", sig)
    with pytest.raises(BadSignature) as info:
        pub.verify(b"messagE", sig)
    assert info.value.coap_code == CoapCode.UNAUTHORIZED
    with pytest.raises(AlgorithmMismatch):
        pub.sign(b"x")  # public half cannot sign
    priv = key_from_cose(key.encode(include_private=True))
    pub.verify(b"again", priv.sign(b"again"))


def test_es256_signature_is_raw_r_s():
    key = Ec2Key.generate(b"k")
    assert len(key.sign(b"m")) == 64
    with pytest.raises(BadSignature):
        key.verify(b"m", b"\x00" * 63)


def test_symmetric_mac_lengths_and_alg_pinning():
    k64 = SymmetricKey(b"a", b"\x01" * 32, Alg.HMAC_256_64)
    k256 = SymmetricKey(b"a", b"\x01" * 32, Alg.HMAC_256_256)
    assert len(k64.mac(b"x")) == 8
    assert len(k256.mac(b"x")) == 32
    assert k256.mac(b"x")[:8] == k64.mac(b"x")
    with pytest.raises(BadSignature):
        k64.verify_mac(b"y", k64.mac(b"x"))
    with pytest.raises(AlgorithmMismatch):
        k64.check_alg(int(Alg.HMAC_256_256))
    with pytest.raises(AlgorithmMismatch):
        k64.encrypt(b"\x00" * 13, b"p", b"")
    aead = SymmetricKey(b"e", b"\x02" * 16, Alg.AES_CCM_16_64_128)
    with pytest.raises(AlgorithmMismatch):
        aead.mac(b"x")


def test_aead_round_trip_and_tamper():
    key = SymmetricKey.generate(b"e", Alg.AES_CCM_16_64_128)
    nonce = b"\x00" * 13
    ct = key.encrypt(nonce, b"plain", b"aad")
    assert key.decrypt(nonce, ct, b"aad") == b"plain"
    with pytest.raises(BadSignature):
        key.decrypt(nonce, ct, b"AAD")
    with pytest.raises(MalformedError):
        key.decrypt(b"\x00" * 12, ct, b"aad")


def test_symmetric_key_rules():
    with pytest.raises(UnsupportedPopKey):
        SymmetricKey(b"a", b"short", Alg.HMAC_256_64)
    with pytest.raises(UnsupportedPopKey):
        SymmetricKey(b"a", b"\x00" * 32, Alg.AES_CCM_16_64_128)
    with pytest.raises(UnsupportedPopKey):
        SymmetricKey(b"a", b"\x00" * 32, Alg.ES256)
    k = SymmetricKey(b"a", b"\x07" * 32)
    again = key_from_cose(k.encode(include_private=True))
    assert again.alg == Alg.HMAC_256_64 and again.mac(b"z") == k.mac(b"z")
    assert -1 not in k.to_cose()  # k only with include_private


def test_repr_never_shows_key_material():
    k = SymmetricKey(b"kid", b"\xaa" * 32)
    assert "aa" * 4 not in repr(k)
    e = Ec2Key.generate(b"kid")
    d = e.to_cose(include_private=True)[-4]
    assert d.hex() not in repr(e)


@pytest.mark.parametrize(
    "value, error",
    [
        (b"\xa0", UnsupportedPopKey),  # {}
        (cbor.encode({1: 2, -1: 1, -2: b"x" * 32, -3: b"y"}), MalformedError),
        (cbor.encode({1: 2, -1: 1, -2: b"\x01" * 32, -3: b"\x02" * 32}), MalformedError),
        (cbor.encode({1: 2, -1: 8, -2: b"x" * 32, -3: b"y" * 32}), UnsupportedPopKey),
        (cbor.encode({1: 1, -1: 6, -2: "text"}), MalformedError),
        (cbor.encode({1: 4, -1: b"k" * 32}), UnsupportedPopKey),  # symmetric without alg
        (cbor.encode({1: 4, 3: 999, -1: b"k" * 32}), UnsupportedPopKey),
        (cbor.encode({1: 2, 2: "text-kid"}), MalformedError),
        (cbor.encode([1, 2]), MalformedError),
        (b"\xff", MalformedError),
    ],
)
def test_bad_cose_keys(value, error):
    with pytest.raises(error):
        key_from_cose(value)


def test_key_set_lookup_is_by_kid_only():
    a, b = SymmetricKey(b"a", b"\x01" * 32), SymmetricKey(b"b", b"\x02" * 32)
    ks = KeySet([a, b])
    assert ks.get(b"a") is a and ks.get(b"b") is b and len(ks) == 2
    with pytest.raises(UnknownKey) as info:
        ks.get(b"c")
    assert info.value.coap_code == CoapCode.UNAUTHORIZED
    with pytest.raises(UnknownKey):
        ks.get("a")  # a text kid is not the byte-string kid
    ks.remove(b"a")
    with pytest.raises(UnknownKey):
        ks.get(b"a")
    with pytest.raises(MalformedError):
        ks.add(SymmetricKey(b"", b"\x01" * 32))


def test_public_key_set_excludes_private_and_symmetric():
    sign = Ec2Key.generate(b"as-1")
    ks = KeySet([sign, SymmetricKey(b"rs", b"\x01" * 32)])
    published = cbor.decode(ks.encode_public())
    assert len(published) == 1 and -4 not in published[0] and published[0][2] == b"as-1"


def test_errors_share_one_root():
    for exc in (UnknownKey(), BadSignature(), MalformedError(), AlgorithmMismatch()):
        assert isinstance(exc, TokenError)
