"""The Proof option (docs/design.md "Wire formats"): detached content, COSE_Mac0 /
COSE_Sign1 with detached payload (RFC 9052 §4.4, §6.3), the parse rules and
every way a proof must fail."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Any, NamedTuple

import cbor2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokens import cose
from tokens.errors import (
    AlgorithmMismatch,
    BadSignature,
    CriticalHeaderError,
    MalformedError,
    TokenError,
)
from tokens.keys import Ec2Key, OkpKey, SymmetricKey
from tokens.params import Alg, CoapCode, Method
from tokens.proof import (
    ACCELERATED,
    MAX_PIV,
    MAX_PROOF_SIZE,
    MacProofVerifier,
    ParsedProof,
    ProofedRequest,
    _parse_canonical,
    _parse_general,
    build_proof,
    detached_content,
    encode_piv,
    mac_proof_check,
    parse_proof,
)

HMAC = SymmetricKey(b"dev-1", b"\x11" * 32, Alg.HMAC_256_64)
HMAC_OTHER = SymmetricKey(b"dev-1", b"\x12" * 32, Alg.HMAC_256_64)
HMAC_256 = SymmetricKey(b"dev-1", b"\x11" * 32, Alg.HMAC_256_256)
EC = Ec2Key.generate(b"dev-ec")
ED = OkpKey.generate(b"dev-ed")
KEYS = {"mac0": HMAC, "es256": EC, "eddsa": ED}

REQ = ProofedRequest(
    code=Method.PUT,
    path=("sensors", "temp", "1"),
    query=("unit=c", "x"),
    content_format=60,
    payload=b"\xa1\x01\x18\x2a",
)


def verifier(key: Any) -> Any:
    return key.public() if key.kty != HMAC.kty else key


def content_via_cbor2(req: ProofedRequest, piv: int, echo: bytes | None) -> bytes:
    digest = hashlib.sha256(req.payload).digest()[:16] if req.payload else b""
    return cbor2.dumps(
        [1, req.code, list(req.path), list(req.query), req.content_format, digest, piv, echo]
    )


# --- detached content ------------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), max_size=30)


@settings(max_examples=300)
@given(
    code=st.integers(1, 7),
    path=st.lists(texts, max_size=30).map(tuple),
    query=st.lists(texts, max_size=3).map(tuple),
    cf=st.none() | st.integers(0, 65535),
    payload=st.binary(max_size=64),
    piv=st.integers(0, MAX_PIV),
    echo=st.none() | st.binary(max_size=40),
)
@example(code=1, path=("a" * 300,), query=(), cf=24, payload=b"", piv=24, echo=b"e" * 24)
def test_detached_content_is_cbor2_identical(code, path, query, cf, payload, piv, echo):
    req = ProofedRequest(code, path, query, cf, payload)
    assert detached_content(req, piv, echo) == content_via_cbor2(req, piv, echo)


def test_detached_content_layout():
    empty = ProofedRequest(Method.GET)
    assert detached_content(empty, 0, None) == bytes.fromhex("8801018080f64000f6")
    assert (
        cbor2.loads(detached_content(REQ, 7, b"\x01"))[5]
        == (hashlib.sha256(REQ.payload).digest()[:16])
    )


@pytest.mark.parametrize(
    ("req", "piv"),
    [
        (ProofedRequest(0), 1),
        (ProofedRequest(8), 1),
        (ProofedRequest(1, ("\udcff",)), 1),
        (ProofedRequest(1, (), ("\ud800",)), 1),
        (ProofedRequest(1), -1),
        (ProofedRequest(1), MAX_PIV + 1),
    ],
)
def test_detached_content_refuses_what_cannot_be_a_request(req, piv):
    with pytest.raises(MalformedError):
        detached_content(req, piv, None)


@pytest.mark.parametrize(
    ("piv", "encoded"),
    [(0, b"\x00"), (1, b"\x01"), (255, b"\xff"), (256, b"\x01\x00"), (MAX_PIV, b"\xff" * 5)],
)
def test_encode_piv_is_shortest(piv, encoded):
    assert encode_piv(piv) == encoded


@pytest.mark.parametrize("piv", [-1, MAX_PIV + 1])
def test_encode_piv_range(piv):
    with pytest.raises(ValueError):
        encode_piv(piv)


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KEYS))
@pytest.mark.parametrize("echo", [None, b"\x00\x01echo-value"])
@pytest.mark.parametrize("piv", [0, 23, 24, 65536, MAX_PIV])
def test_round_trip(name, echo, piv):
    key = KEYS[name]
    option = build_proof(key, REQ, piv, echo)
    parsed = parse_proof(option)
    assert (parsed.kid, parsed.piv, parsed.alg) == (key.kid, piv, int(key.alg))
    parsed.verify(verifier(key), REQ, echo)


@pytest.mark.parametrize("name", sorted(KEYS))
def test_wire_shape(name):
    key = KEYS[name]
    option = build_proof(key, REQ, 300)
    protected, unprotected, payload, tag = cbor2.loads(option)
    assert option[0] == 0x84  # untagged 4-element array
    assert cbor2.loads(protected) == {1: int(key.alg)}
    assert unprotected == {4: key.kid, 6: b"\x01\x2c"}
    assert payload is None
    assert len(tag) == (8 if key is HMAC else 64)
    # The same bytes as tokens.cose would produce for this detached payload.
    content = detached_content(REQ, 300, None)
    if key is HMAC:
        assert option == cose.mac0(
            key, content, unprotected={6: b"\x01\x2c"}, detached=True, with_kid=True
        )


def test_mac0_option_size():
    option = build_proof(HMAC, REQ, 1000)
    assert len(option) == 1 + 4 + 1 + (1 + 6) + (1 + 3) + 1 + 9  # 27 bytes


def test_proof_repr_has_no_tag():
    parsed = parse_proof(build_proof(HMAC, REQ, 1))
    assert parsed.tag.hex() not in repr(parsed)


def test_build_needs_a_kid():
    with pytest.raises(ValueError):
        build_proof(SymmetricKey(b"", b"\x11" * 32), REQ, 1)


# --- every change to the request breaks the proof ---------------------------

TAMPERED = {
    "method": dataclasses.replace(REQ, code=Method.POST),
    "path": dataclasses.replace(REQ, path=("sensors", "temp", "2")),
    "path-split": dataclasses.replace(REQ, path=("sensors", "temp/1")),
    "path-extra": dataclasses.replace(REQ, path=(*REQ.path, "")),
    "query": dataclasses.replace(REQ, query=("unit=f", "x")),
    "query-order": dataclasses.replace(REQ, query=("x", "unit=c")),
    "query-to-path": dataclasses.replace(REQ, path=(*REQ.path, "x"), query=("unit=c",)),
    "payload": dataclasses.replace(REQ, payload=b"\xa1\x01\x18\x2b"),
    "payload-empty": dataclasses.replace(REQ, payload=b""),
    "content-format": dataclasses.replace(REQ, content_format=50),
    "content-format-absent": dataclasses.replace(REQ, content_format=None),
}


def assert_unauthorized(exc_info: pytest.ExceptionInfo[TokenError], cls: type) -> None:
    assert type(exc_info.value) is cls
    assert exc_info.value.coap_code == CoapCode.UNAUTHORIZED


@pytest.mark.parametrize("name", sorted(KEYS))
@pytest.mark.parametrize("change", sorted(TAMPERED))
def test_tampered_request_fails(name, change):
    key = KEYS[name]
    parsed = parse_proof(build_proof(key, REQ, 5))
    with pytest.raises(BadSignature) as exc_info:
        parsed.verify(verifier(key), TAMPERED[change], None)
    assert_unauthorized(exc_info, BadSignature)


@pytest.mark.parametrize("name", sorted(KEYS))
@pytest.mark.parametrize(
    ("sent", "received"), [(None, b"e"), (b"e", None), (b"e", b"f"), (b"", None)]
)
def test_tampered_echo_fails(name, sent, received):
    key = KEYS[name]
    parsed = parse_proof(build_proof(key, REQ, 5, sent))
    with pytest.raises(BadSignature) as exc_info:
        parsed.verify(verifier(key), REQ, received)
    assert_unauthorized(exc_info, BadSignature)


def rebuild_with_piv(option: bytes, piv_bytes: bytes) -> bytes:
    protected, unprotected, payload, tag = cbor2.loads(option)
    unprotected[6] = piv_bytes
    return cbor2.dumps([protected, unprotected, payload, tag])


@pytest.mark.parametrize("name", sorted(KEYS))
@pytest.mark.parametrize("new_piv", [b"\x06", b"\x04", b"\x01\x05"])
def test_changed_piv_fails(name, new_piv):
    key = KEYS[name]
    option = rebuild_with_piv(build_proof(key, REQ, 5), new_piv)
    parsed = parse_proof(option)
    assert parsed.piv == int.from_bytes(new_piv, "big")
    with pytest.raises(BadSignature) as exc_info:
        parsed.verify(verifier(key), REQ, None)
    assert_unauthorized(exc_info, BadSignature)


@pytest.mark.parametrize(
    ("signer", "other"),
    [
        (HMAC, HMAC_OTHER),
        (EC, Ec2Key.generate(b"dev-ec")),
        (ED, OkpKey.generate(b"dev-ed")),
    ],
)
def test_other_devices_key_fails(signer, other):
    parsed = parse_proof(build_proof(signer, REQ, 5))
    with pytest.raises(BadSignature) as exc_info:
        parsed.verify(verifier(other), REQ, None)
    assert_unauthorized(exc_info, BadSignature)


@pytest.mark.parametrize(
    ("signer", "wrong"),
    [
        (HMAC, HMAC_256),  # same secret, other MAC algorithm
        (HMAC, EC),
        (EC, ED),
        (ED, EC),
        (EC, HMAC),
        (HMAC, SymmetricKey(b"dev-1", b"\x11" * 16, Alg.AES_CCM_16_64_128)),
    ],
)
def test_key_of_wrong_alg_fails(signer, wrong):
    parsed = parse_proof(build_proof(signer, REQ, 5))
    with pytest.raises(AlgorithmMismatch) as exc_info:
        parsed.verify(verifier(wrong), REQ, None)
    assert_unauthorized(exc_info, AlgorithmMismatch)


def test_aead_key_cannot_verify_even_with_its_alg():
    aead = SymmetricKey(b"dev-1", b"\x11" * 16, Alg.AES_CCM_16_64_128)
    option = custom_proof(HMAC, REQ, 5, protected={1: int(Alg.AES_CCM_16_64_128)})
    with pytest.raises(AlgorithmMismatch):
        parse_proof(option).verify(aead, REQ, None)


def test_truncated_mac_tag_fails():
    protected, unprotected, payload, tag = cbor2.loads(build_proof(HMAC, REQ, 5))
    parsed = parse_proof(cbor2.dumps([protected, unprotected, payload, tag[:4]]))
    with pytest.raises(BadSignature):
        parsed.verify(HMAC, REQ, None)


# --- parsing: other valid layouts, and garbage ------------------------------


def custom_proof(
    key: Any,
    req: ProofedRequest,
    piv: int,
    *,
    protected: dict[int, Any] | None = None,
    unprotected: Any = None,
    payload: Any = None,
    echo: bytes | None = None,
    tag: int | None = None,
) -> bytes:
    """A proof laid out by cbor2 from the given header maps, MACed correctly."""
    prot = cbor2.dumps({1: int(key.alg)} if protected is None else protected)
    unprot = {4: key.kid, 6: encode_piv(piv)} if unprotected is None else unprotected
    mac = key.mac(cose.mac_structure(prot, b"", detached_content(req, piv, echo)))
    items = [prot, unprot, payload, mac]
    return cbor2.dumps(cbor2.CBORTag(tag, items) if tag is not None else items)


@pytest.mark.parametrize(
    "layout",
    [
        {"unprotected": {6: b"\x05", 4: HMAC.kid}},  # other map order
        {"protected": {1: 4, 4: HMAC.kid}, "unprotected": {6: b"\x05"}},  # kid protected
        {"protected": {1: 4, 6: b"\x05"}, "unprotected": {4: HMAC.kid}},  # piv protected
        {"unprotected": {4: HMAC.kid, 6: b"\x05", 99: "ignored"}},  # unknown, not critical
        {"protected": {1: 4, 2: [1]}},  # crit of an understood label
    ],
)
def test_other_valid_layouts_verify(layout):
    option = custom_proof(HMAC, REQ, 5, **layout)
    assert _parse_canonical(option) is None  # taken by the general parser
    parsed = parse_proof(option)
    assert (parsed.kid, parsed.piv) == (HMAC.kid, 5)
    parsed.verify(HMAC, REQ, None)


def test_long_kid_and_non_preferred_lengths():
    key = SymmetricKey(b"k" * 40, b"\x11" * 32)
    option = build_proof(key, REQ, 1)
    assert _parse_canonical(option) == parse_proof(option)
    # bstr length 5 written in the 1-byte-argument form (not preferred).
    protected, _, _, tag = cbor2.loads(option)
    raw = b"\x84" + b"\x43" + protected + b"\xa2\x04\x58\x28" + key.kid + b"\x06\x41\x01\xf6"
    raw += b"\x58\x08" + tag
    assert _parse_canonical(raw) is None
    parse_proof(raw).verify(key, REQ, None)


G = {1: 4}  # protected header of a valid HMAC proof

GARBAGE: dict[str, bytes] = {
    "empty": b"",
    "not-cbor": b"\xff\xff",
    "int": b"\x01",
    "map": cbor2.dumps({1: 2}),
    "three-items": cbor2.dumps([cbor2.dumps(G), {4: b"k", 6: b"\x01"}, None]),
    "five-items": cbor2.dumps([cbor2.dumps(G), {4: b"k", 6: b"\x01"}, None, b"t" * 8, b""]),
    "tagged-mac0": custom_proof(HMAC, REQ, 5, tag=17),
    "tagged-sign1": custom_proof(HMAC, REQ, 5, tag=18),
    "no-kid": custom_proof(HMAC, REQ, 5, unprotected={6: b"\x05"}),
    "no-piv": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid}),
    "kid-text": custom_proof(HMAC, REQ, 5, unprotected={4: "dev-1", 6: b"\x05"}),
    "piv-int": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid, 6: 5}),
    "piv-empty": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid, 6: b""}),
    "piv-6-bytes": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid, 6: b"\x01" * 6}),
    "piv-leading-zero": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid, 6: b"\x00\x05"}),
    "payload-attached": custom_proof(HMAC, REQ, 5, payload=b"x"),
    "payload-empty-bstr": custom_proof(HMAC, REQ, 5, payload=b""),
    "no-alg": custom_proof(HMAC, REQ, 5, protected={}),
    "alg-text": custom_proof(HMAC, REQ, 5, protected={1: "HS256"}),
    "protected-not-map": cbor2.dumps([cbor2.dumps([1, 4]), {4: b"k", 6: b"\x01"}, None, b"t"]),
    "protected-not-bstr": cbor2.dumps([G, {4: b"k", 6: b"\x01"}, None, b"t" * 8]),
    "unprotected-not-map": cbor2.dumps([cbor2.dumps(G), [4, b"k"], None, b"t" * 8]),
    "tag-not-bstr": cbor2.dumps([cbor2.dumps(G), {4: b"k", 6: b"\x01"}, None, "t"]),
    "label-in-both": custom_proof(
        HMAC, REQ, 5, protected={1: 4, 4: HMAC.kid}, unprotected={4: HMAC.kid, 6: b"\x05"}
    ),
    "crit-unknown": custom_proof(HMAC, REQ, 5, protected={1: 4, 2: [99], 99: 1}),
    "crit-unprotected": custom_proof(HMAC, REQ, 5, unprotected={4: HMAC.kid, 6: b"\x05", 2: [4]}),
    "trailing-byte": build_proof(HMAC, REQ, 5) + b"\x00",
    "truncated": build_proof(HMAC, REQ, 5)[:-1],
    "too-long": cbor2.dumps([cbor2.dumps(G), {4: b"k" * MAX_PROOF_SIZE, 6: b"\x01"}, None, b""]),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_malformed(name):
    with pytest.raises(MalformedError) as exc_info:
        parse_proof(GARBAGE[name])
    assert exc_info.value.coap_code == CoapCode.BAD_REQUEST
    if name == "crit-unknown":
        assert isinstance(exc_info.value, CriticalHeaderError)


def test_alg_only_unprotected_is_refused():
    option = custom_proof(HMAC, REQ, 5, protected={}, unprotected={1: 4, 4: HMAC.kid, 6: b"\x05"})
    with pytest.raises(AlgorithmMismatch):
        parse_proof(option)


def test_non_bytes_input_is_malformed():
    with pytest.raises(MalformedError):
        parse_proof(bytearray(build_proof(HMAC, REQ, 5)))


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_any_bytes_parse_or_raise_token_error(data):
    with contextlib.suppress(TokenError):
        parse_proof(data)


def option_bytes() -> st.SearchStrategy[bytes]:
    """Valid proofs of varied shape, with single bytes changed."""

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        kid = draw(st.binary(min_size=0, max_size=40))
        alg = draw(st.sampled_from([4, 5, -7, -8, 0, 23, -24, 24, -25]))
        piv = draw(
            st.binary(min_size=0, max_size=6)
            | st.sampled_from([b"", b"\x00", b"\x00\x01", b"\x00" * 5, b"\x01" * 6])
        )
        tag = draw(st.binary(max_size=70))
        prot = cbor2.dumps({1: alg})
        data = bytearray(cbor2.dumps([prot, {4: kid, 6: piv}, None, tag]))
        for _ in range(draw(st.integers(0, 2))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        return bytes(data)

    return build()


@settings(max_examples=500)
@given(option_bytes())
def test_fast_parser_agrees_with_general_parser(data):
    fast = _parse_canonical(data)
    try:
        general: ParsedProof | TokenError = _parse_general(data)
    except TokenError as exc:
        general = exc
    if fast is not None:
        assert fast == general
    # and the public entry point agrees with the general parser either way
    try:
        public: ParsedProof | TokenError = parse_proof(data)
    except TokenError as exc:
        public = exc
    if isinstance(general, ParsedProof):
        assert public == general
    else:
        assert type(public) is type(general)


@pytest.mark.parametrize(
    "base",
    [
        build_proof(HMAC, REQ, 5),
        build_proof(SymmetricKey(b"k" * 24, b"\x11" * 32), REQ, 2**32),
        build_proof(EC, REQ, 0),
    ],
    ids=["mac0", "long-kid", "es256"],
)
def test_fast_parser_agrees_on_every_single_byte_change(base):
    """Exhaustive: each byte of a canonical proof replaced by each value."""
    for i in range(len(base)):
        for value in range(256):
            data = base[:i] + bytes((value,)) + base[i + 1 :]
            fast = _parse_canonical(data)
            if fast is None:
                continue
            try:
                general: ParsedProof | TokenError = _parse_general(data)
            except TokenError as exc:
                general = exc
            assert fast == general, (i, value)


# --- the one-call verifier of canonical Mac0 proofs ------------------------------------


def _general_piv(key: SymmetricKey, data: bytes, req: ProofedRequest, echo: bytes | None) -> Any:
    """What parse + verify say: the piv, or None for any refusal."""
    try:
        proof = parse_proof(data)
        if proof.kid != key.kid:
            return None
        proof.verify(key, req, echo)
    except TokenError:
        return None
    return proof.piv


#: The two implementations of the one-call check: the Python reference and
#: the C extension the gateway uses (tokens._mac0).
CHECKS = {"python": MacProofVerifier, "c": mac_proof_check}


class _Option(NamedTuple):
    value: Any


def _options(
    query: tuple[str, ...], content_format: int | None, echo: bytes | None
) -> dict[int, list[_Option]]:
    """An option dict as aiocoap keeps it (number -> options), with an
    option no proof covers."""
    options = {11: [_Option("ignored")]}
    if query:
        options[15] = [_Option(q) for q in query]
    if content_format is not None:
        options[12] = [_Option(content_format)]
    if echo is not None:
        options[252] = [_Option(echo)]
    return options


def _fast_piv(
    key: SymmetricKey,
    data: bytes,
    req: ProofedRequest,
    echo: bytes | None,
    impl: str = "python",
) -> Any:
    options = _options(req.query, req.content_format, echo)
    return CHECKS[impl](key).check_options(data, req.code, req.path, options, req.payload)


def test_the_c_check_is_built_and_used():
    """`pip install` builds tokens._mac0; without it the gateway would run
    the Python check, correct but slower, so a build that lost it fails here."""
    assert ACCELERATED
    assert type(mac_proof_check(HMAC)).__module__ == "tokens._mac0"


@pytest.mark.parametrize("impl", sorted(CHECKS))
@pytest.mark.parametrize("echo", [None, b"\x00\x01echo-value"])
@pytest.mark.parametrize("piv", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, MAX_PIV])
def test_mac_verifier_accepts_what_build_proof_makes(echo, piv, impl):
    data = build_proof(HMAC, REQ, piv, echo)
    assert _fast_piv(HMAC, data, REQ, echo, impl) == piv


@pytest.mark.parametrize("impl", sorted(CHECKS))
@pytest.mark.parametrize("key", [HMAC, SymmetricKey(b"k" * 24, b"\x13" * 32), HMAC_256])
def test_mac_verifier_agrees_on_every_single_byte_change(key, impl):
    """Exhaustive: each byte of a canonical proof replaced by each value, and
    the proof truncated at each length; the one-call check accepts exactly
    what parse + verify accept, with the same piv."""
    base = build_proof(key, REQ, 300)
    variants = [base[:i] for i in range(len(base))]
    for i in range(len(base)):
        variants += [base[:i] + bytes((v,)) + base[i + 1 :] for v in range(256)]
    variants += [base + b"\x00", b"", base * 2]
    accepted = 0
    for data in variants:
        fast = _fast_piv(key, data, REQ, None, impl)
        assert fast == _general_piv(key, data, REQ, None), data.hex()
        accepted += fast is not None
    assert accepted == len(base)  # the original, once per position


@pytest.mark.parametrize("impl", sorted(CHECKS))
@pytest.mark.parametrize("change", sorted(TAMPERED))
def test_mac_verifier_refuses_tampered_requests(change, impl):
    data = build_proof(HMAC, REQ, 9)
    assert _fast_piv(HMAC, data, TAMPERED[change], None, impl) is None
    assert _fast_piv(HMAC_OTHER, data, REQ, None, impl) is None


@settings(max_examples=300, deadline=None)
@given(
    code=st.integers(1, 7),
    path=st.lists(texts, max_size=4).map(tuple),
    query=st.lists(texts, max_size=3).map(tuple),
    content_format=st.none() | st.integers(0, 65535),
    payload=st.binary(max_size=300),
    echo=st.none() | st.binary(max_size=300),
    piv=st.integers(0, MAX_PIV),
    secret=st.binary(min_size=16, max_size=130),
    alg=st.sampled_from([Alg.HMAC_256_64, Alg.HMAC_256_256]),
    flip=st.none() | st.integers(0, 10_000),
)
def test_c_and_python_checks_agree(
    code, path, query, content_format, payload, echo, piv, secret, alg, flip
):
    """Any request, Echo, piv and key (keys longer than the SHA-256 block
    are hashed first, RFC 2104 §2), intact or with one byte changed: the C
    check says what the Python check says, and the intact one verifies."""
    key = SymmetricKey(b"kid", secret, alg)
    req = ProofedRequest(code, path, query, content_format, payload)
    data = build_proof(key, req, piv, echo)
    if flip is not None:
        at = flip % len(data)
        data = data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1 :]
    python = _fast_piv(key, data, req, echo, "python")
    assert _fast_piv(key, data, req, echo, "c") == python
    assert python == (piv if flip is None else _general_piv(key, data, req, echo))


@pytest.mark.parametrize("impl", sorted(CHECKS))
def test_check_options_reads_query_content_format_and_echo(impl):
    """check_options finds the covered parts in the option dict: with all
    of them it verifies; without any one of them, or with one changed, not."""
    check = CHECKS[impl](HMAC)
    data = build_proof(HMAC, REQ, 77, b"ech")
    options = _options(REQ.query, REQ.content_format, b"ech")
    assert check.check_options(data, Method.PUT, REQ.path, options, REQ.payload) == 77
    for number in (12, 15, 252):
        partial = {n: o for n, o in options.items() if n != number}
        assert check.check_options(data, Method.PUT, REQ.path, partial, REQ.payload) is None
    swapped = {**options, 15: list(reversed(options[15]))}
    assert check.check_options(data, Method.PUT, REQ.path, swapped, REQ.payload) is None
    plain = build_proof(HMAC, ProofedRequest(code=1, path=("a",)), 5)
    assert check.check_options(plain, 1, ("a",), {}, b"") == 5


@pytest.mark.parametrize("impl", sorted(CHECKS))
def test_mac_verifier_long_content_and_unencodable_requests(impl):
    """Detached content over 65,535 bytes (4-byte bstr head); a method code
    or Uri-Path that has no detached content is refused, not raised."""
    long = ProofedRequest(code=2, path=("x" * 70_000,), payload=b"p")
    data = build_proof(HMAC, long, 7, b"e" * 300)
    assert _fast_piv(HMAC, data, long, b"e" * 300, impl) == 7
    for bad in (dataclasses.replace(REQ, code=0), dataclasses.replace(REQ, code=8)):
        assert _fast_piv(HMAC, build_proof(HMAC, REQ, 1), bad, None, impl) is None
    surrogate = dataclasses.replace(REQ, path=("\ud800",))
    assert _fast_piv(HMAC, build_proof(HMAC, REQ, 1), surrogate, None, impl) is None


def test_c_check_refuses_wrong_argument_types():
    check_options = mac_proof_check(HMAC).check_options
    with pytest.raises(TypeError):
        check_options(bytearray(b"x"), 1, (), {}, b"")
    with pytest.raises(TypeError):
        check_options(b"x", 1, (), {}, "payload")
    with pytest.raises(TypeError):
        check_options(b"x", 1, (), {252: [_Option("not bytes")]}, b"")
    with pytest.raises(TypeError):
        check_options(b"x", 1, ())
    with pytest.raises(TypeError):
        check_options(b"x", 1, (), [], b"")
    with pytest.raises(TypeError):
        check_options(b"x", 1, (), {12: "not a list"}, b"")
    with pytest.raises(AttributeError):
        check_options(b"x", 1, (), {15: [object()]}, b"")
    bare = type(mac_proof_check(HMAC))
    with pytest.raises(ValueError):  # made without __init__: refused, not a crash
        bare.__new__(bare).check_options(b"x", 1, (), {}, b"")


def test_mac_verifier_needs_an_hmac_key_with_a_kid():
    with pytest.raises(ValueError):
        MacProofVerifier(SymmetricKey(b"", b"\x11" * 32))
    with pytest.raises(ValueError):
        MacProofVerifier(SymmetricKey(b"aead", b"\x11" * 16, Alg.AES_CCM_16_64_128))
