"""The cnf claim (RFC 8747) and the RFC 9202 §4 psk_identity helpers."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens import cnf
from tokens.cnf import (
    CnfEncryptedKey,
    CnfKey,
    CnfKid,
    CnfRedactedKey,
    parse_psk_identity,
    psk_identity_for_kid,
)
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

DEVICE_EC = Ec2Key.from_private_bytes(b"dev-ec", b"\x03" * 32)
DEVICE_ED = OkpKey.from_private_bytes(b"dev-ed", b"\x04" * 32)
POP = SymmetricKey(b"pop-1", b"\x55" * 16, Alg.HMAC_256_64)
KEK = SymmetricKey(b"as-rs", b"\x66" * 16, Alg.AES_CCM_16_64_128)


# --- COSE_Key (RFC 8747 §3.2) ------------------------------------------------------


@pytest.mark.parametrize("key", [DEVICE_EC, DEVICE_ED])
def test_asymmetric_cose_key_is_encoded_public_only(key: Any) -> None:
    value = cnf.encode(CnfKey(key))
    assert list(value) == [1]
    assert -4 not in value[1]  # no private d
    assert value[1] == key.public().to_cose()
    back = cnf.decode(cbor2.loads(cbor2.dumps(value)))
    assert isinstance(back, CnfKey) and back == CnfKey(key.public())
    assert not back.key.has_private and back.key.alg == key.alg


def test_symmetric_cose_key_carries_k() -> None:
    value = CnfKey(POP).to_cbor()
    assert value == {1: {1: 4, 2: b"pop-1", 3: int(Alg.HMAC_256_64), -1: b"\x55" * 16}}
    back = cnf.decode(value)
    assert isinstance(back, CnfKey) and isinstance(back.key, SymmetricKey)
    assert back.key.secret == b"\x55" * 16 and back == CnfKey(POP)


def test_symmetric_cose_key_without_alg_gets_the_default() -> None:
    value = {1: {1: 4, 2: b"k", -1: b"\x01" * 16}}
    assert cnf.decode(value).key.alg == Alg.HMAC_256_64  # type: ignore[union-attr]
    got = cnf.decode(value, symmetric_alg=Alg.AES_CCM_16_64_128)
    assert isinstance(got, CnfKey) and got.key.alg == Alg.AES_CCM_16_64_128


def test_cnf_key_repr_has_no_secret() -> None:
    assert "55" * 4 not in repr(CnfKey(POP))


def test_cnf_key_equality_compares_key_material() -> None:
    other = SymmetricKey(b"pop-1", b"\x56" * 16, Alg.HMAC_256_64)
    assert CnfKey(POP) != CnfKey(other)
    assert CnfKey(POP) == CnfKey(SymmetricKey(b"pop-1", b"\x55" * 16, Alg.HMAC_256_64))
    assert CnfKey(POP) != CnfKid(b"pop-1")


# --- kid (RFC 8747 §3.4) -------------------------------------------------------------


def test_kid_round_trip() -> None:
    assert cnf.encode(CnfKid(b"\x01\x02")) == {3: b"\x01\x02"}
    assert cnf.decode({3: b"\x01\x02"}) == CnfKid(b"\x01\x02")


# --- Encrypted_COSE_Key (RFC 8747 §3.3) ---------------------------------------------


def test_encrypted_cose_key_seal_and_open() -> None:
    sealed = CnfEncryptedKey.seal(POP, KEK)
    wire = cbor2.loads(cbor2.dumps(sealed.to_cbor()))
    assert list(wire) == [2] and isinstance(wire[2], list) and len(wire[2]) == 3
    assert b"\x55" * 16 not in cbor2.dumps(wire)  # the secret is not in clear
    back = cnf.decode(wire)
    assert isinstance(back, CnfEncryptedKey) and back == sealed
    opened = back.open(KeySet([KEK]))
    assert isinstance(opened, SymmetricKey) and opened.secret == POP.secret
    assert opened.kid == POP.kid and opened.alg == POP.alg
    assert back.open(KEK).kid == POP.kid  # with the key given directly
    assert "55" * 4 not in repr(back)


def test_encrypted_public_key_opens_to_the_public_key() -> None:
    opened = CnfEncryptedKey.seal(DEVICE_EC, KEK).open(KeySet([KEK]))
    assert not opened.has_private and opened.to_cose() == DEVICE_EC.public().to_cose()


def test_encrypted_cose_key_errors() -> None:
    sealed = CnfEncryptedKey.seal(POP, KEK)
    with pytest.raises(UnknownKey) as unknown:
        sealed.open(KeySet([SymmetricKey(b"other", b"\x66" * 16, Alg.AES_CCM_16_64_128)]))
    assert unknown.value.coap_code == CoapCode.UNAUTHORIZED
    wrong = SymmetricKey(b"as-rs", b"\x67" * 16, Alg.AES_CCM_16_64_128)
    with pytest.raises(BadSignature):
        sealed.open(KeySet([wrong]))
    with pytest.raises(AlgorithmMismatch):
        sealed.open(SymmetricKey(b"as-rs", b"\x66" * 32, Alg.HMAC_256_64))
    # no kid in the message: never tries the keys it has
    no_kid = CnfEncryptedKey(sealed.protected, {5: sealed.unprotected[5]}, sealed.ciphertext)
    with pytest.raises(UnknownKey):
        no_kid.open(KeySet([KEK]))


def test_encrypted_cose_key_tagged_accepted() -> None:
    sealed = CnfEncryptedKey.seal(POP, KEK, iv=b"\x09" * 13)
    items = sealed.to_cbor()[2]
    assert cnf.decode({2: cbor2.CBORTag(16, items)}) == sealed
    with pytest.raises(MalformedError):
        cnf.decode({2: cbor2.CBORTag(17, items)})


# --- strict shape checks ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({}, MalformedError),
        ({1: POP.to_cose(include_private=True), 3: b"k"}, MalformedError),  # two methods
        ({4: b"x"}, MalformedError),  # unknown method
        ({-1: b"x"}, MalformedError),
        ({"1": {1: 4}}, MalformedError),
        ({True: {1: 4, 3: 4, -1: b"\x01" * 16}}, MalformedError),  # true is not 1
        ([1, 2], MalformedError),
        (b"\xa1", MalformedError),
        ({3: "text-kid"}, MalformedError),
        ({3: b""}, MalformedError),
        ({1: "not a map"}, MalformedError),
        ({1: {1: 4, 3: 4}}, MalformedError),  # symmetric without k
        ({1: {1: 2, -1: 1, -2: b"\x00" * 32}}, MalformedError),  # EC2 without y
        ({1: DEVICE_EC.to_cose(include_private=True)}, MalformedError),  # private key
        ({1: {1: 99}}, UnsupportedPopKey),
        ({1: {1: 2, -1: 2, -2: b"\x00" * 48, -3: b"\x00" * 48}}, UnsupportedPopKey),  # P-384
        ({2: [b"", {}, b""]}, MalformedError),  # no alg
        ({2: [b"\xa1\x01\x0a", {}, b"", b""]}, MalformedError),  # 4 elements
        ({2: "x"}, MalformedError),
    ],
)
def test_decode_rejects(value: Any, error: type[TokenError]) -> None:
    with pytest.raises(error):
        cnf.decode(value)


def test_redact() -> None:
    assert cnf.redact(CnfKey(POP)) == CnfRedactedKey(4, b"pop-1", int(Alg.HMAC_256_64))
    assert cnf.redact(CnfKid(b"a")) == CnfKid(b"a")
    public = CnfKey(DEVICE_EC.public())
    assert cnf.redact(public) is public
    assert CnfRedactedKey(4, b"pop-1", 4).to_cbor() == {1: {1: 4, 2: b"pop-1", 3: 4}}


# --- RFC 9202 §4 psk_identity ------------------------------------------------------------


def test_psk_identity_for_kid_is_the_rfc9202_structure() -> None:
    ident = psk_identity_for_kid(b"\x01\x02\x03")
    assert ident == cbor2.dumps({8: {1: {1: 4, 2: b"\x01\x02\x03"}}})
    assert cbor2.loads(ident) == {8: {1: {1: 4, 2: b"\x01\x02\x03"}}}
    assert parse_psk_identity(ident) == b"\x01\x02\x03"
    long_kid = bytes(range(200))
    assert parse_psk_identity(psk_identity_for_kid(long_kid)) == long_kid
    with pytest.raises(ValueError):
        psk_identity_for_kid(b"")


def test_parse_psk_identity_other_key_order() -> None:
    other_order = b"\xa1\x08\xa1\x01\xa2\x02\x42ab\x01\x04"  # {8: {1: {2: h'6162', 1: 4}}}
    assert cbor2.loads(other_order) == {8: {1: {2: b"ab", 1: 4}}}
    assert parse_psk_identity(other_order) == b"ab"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"device-17",  # a plain client id
        b"\xd2\x84",  # the start of a signed token
        cbor2.dumps([1, 2]),
        cbor2.dumps({8: {1: {1: 4, 2: b"ab"}}, 9: 1}),  # extra claim
        cbor2.dumps({8: {1: {1: 4, 2: b"ab", 3: 4}}}),  # extra key parameter
        cbor2.dumps({8: {1: {1: 2, 2: b"ab"}}}),  # not symmetric
        cbor2.dumps({8: {3: b"ab"}}),  # cnf kid, not COSE_Key
        cbor2.dumps({8: {1: {1: 4, 2: "ab"}}}),  # text kid
        cbor2.dumps({8: {1: {1: 4, 2: b""}}}),  # empty kid
        cbor2.dumps({8: {1: {True: 4, 2: b"ab"}}}),
        cbor2.dumps({8: {True: {1: 4, 2: b"ab"}}}),
        cbor2.dumps({8: {1: {1: True, 2: b"ab"}}}),
        cbor2.dumps({8: {1: {1: 4, 2: b"ab"}}}) + b"\x00",  # trailing byte
        psk_identity_for_kid(b"ab")[:-1],  # truncated
        psk_identity_for_kid(b"ab") + b"\x00",
        b"\xa1\x08\xa1\x01\xa2\x01\x04\x02\x62ab",  # prefix, then a text kid
        b"\xa1" + b"\x81" * 5000,  # deep nesting
    ],
)
def test_parse_psk_identity_returns_none_for_anything_else(data: Any) -> None:
    assert parse_psk_identity(data) is None


def test_parse_psk_identity_non_bytes() -> None:
    assert parse_psk_identity("text") is None  # type: ignore[arg-type]
    assert parse_psk_identity(None) is None  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_parse_psk_identity_never_raises(data: bytes) -> None:
    result = parse_psk_identity(data)
    assert result is None or (isinstance(result, bytes) and result)
    prefixed = parse_psk_identity(b"\xa1\x08\xa1\x01\xa2\x01\x04\x02" + data)
    assert prefixed is None or prefixed == cbor2.loads(data)


# --- hypothesis: decoder raises only TokenError -------------------------------------------

leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**65), 2**65),
    st.floats(),
    st.binary(max_size=70),
    st.text(max_size=5),
)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.integers(-5, 5), inner, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.integers(0, 4), value, min_size=1, max_size=2))
def test_decode_raises_only_token_errors(data: dict[int, Any]) -> None:
    with contextlib.suppress(TokenError):
        cnf.decode(cbor2.loads(cbor2.dumps(data)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_decode_bytes_raises_only_token_errors(data: bytes) -> None:
    from tokens import cbor

    with contextlib.suppress(TokenError):
        cnf.decode(cbor.decode(data))


# --- the lazy symmetric COSE_Key -------------------------------------------------------


def test_symmetric_key_is_built_on_first_use_only(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    real = cnf.SymmetricKey

    def counting(*args: Any) -> Any:
        built.append(args)
        return real(*args)

    monkeypatch.setattr(cnf, "SymmetricKey", counting)
    value = {1: {1: 4, 2: b"pop-1", 3: int(Alg.AES_CCM_16_64_128), -1: b"\x07" * 16}}
    got = cnf.decode(value)
    assert isinstance(got, CnfKey)
    assert (got.kid, got.alg, got.kty) == (b"pop-1", Alg.AES_CCM_16_64_128, 4)
    assert repr(got) == "CnfKey(key=<SymmetricKey alg=AES_CCM_16_64_128 kid=706f702d31>)"
    assert cnf.redact(got) == CnfRedactedKey(4, b"pop-1", int(Alg.AES_CCM_16_64_128))
    assert hash(got) == hash(CnfKey(real(b"pop-1", b"\x07" * 16, Alg.AES_CCM_16_64_128)))
    assert built == []  # none of the above built the key
    key = got.key
    assert isinstance(key, SymmetricKey) and key.secret == b"\x07" * 16
    assert key.alg == Alg.AES_CCM_16_64_128 and key.kid == b"pop-1"
    assert got.key is key and len(built) == 1  # built once, then kept
    assert repr(got) == f"CnfKey(key={key!r})"
    assert "07" * 4 not in repr(got)
    assert got.to_cbor() == value
    assert got == CnfKey(real(b"pop-1", b"\x07" * 16, Alg.AES_CCM_16_64_128))
    nonce = b"\x00" * 13
    assert key.decrypt(nonce, key.encrypt(nonce, b"m", b""), b"") == b"m"


def test_symmetric_key_without_kid_or_alg() -> None:
    got = cnf.decode({1: {1: 4, -1: b"\x01" * 32}})
    assert isinstance(got, CnfKey)
    assert got.kid == b"" and got.alg == Alg.HMAC_256_64
    assert got.key.kid == b"" and got.key.alg == Alg.HMAC_256_64


sym_kid = st.one_of(st.just(None), st.binary(max_size=4), st.text(max_size=2), st.integers())
sym_alg = st.one_of(
    st.just(None),
    st.sampled_from([int(a) for a in Alg]),
    st.integers(-10, 40),
    st.booleans(),
    st.text(max_size=2),
    st.floats(allow_nan=False),
)
sym_k = st.one_of(
    st.just(None),
    st.binary(min_size=0, max_size=40),
    st.sampled_from([b"\x01" * 16, b"\x02" * 32, b"\x03" * 15]),
    st.text(max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(sym_kid, sym_alg, sym_k, st.sampled_from([Alg.HMAC_256_64, Alg.AES_CCM_16_64_128]))
def test_deferred_symmetric_checks_equal_building_the_key(
    kid: Any, alg: Any, k: Any, default: Alg
) -> None:
    """The checks made before the key is built raise what building it at once
    (key_from_cose, as before the key became lazy) raises, message and all; a
    key that passes them is the same key."""
    m: dict[int, Any] = {1: 4}
    for label, v in ((2, kid), (3, alg), (-1, k)):
        if v is not None:
            m[label] = v
    eager: Any
    try:
        eager = key_from_cose(m, default_alg=default)
    except TokenError as exc:
        eager = exc
    try:
        got = cnf.decode({1: m}, symmetric_alg=default)
    except TokenError as exc:
        assert isinstance(eager, TokenError), f"lazy refused what eager took: {exc!r}"
        assert (type(exc), str(exc)) == (type(eager), str(eager))
        return
    assert not isinstance(eager, TokenError), f"lazy took what eager refused: {eager!r}"
    assert isinstance(got, CnfKey) and isinstance(got.key, SymmetricKey)
    assert (got.kid, got.alg, got.kty) == (eager.kid, eager.alg, eager.kty)
    assert got.key.to_cose(include_private=True) == eager.to_cose(include_private=True)
