"""ACE message codecs (RFC 9200 §5.3, §5.8, §5.9; RFC 9201)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens.ace import (
    MAX_MESSAGE,
    CreationHints,
    ErrorResponse,
    IntrospectionRequest,
    IntrospectionResponse,
    TokenRequest,
    TokenResponse,
)
from tokens.aif import Scope
from tokens.errors import (
    InvalidClient,
    InvalidScope,
    MalformedError,
    ScopeDenied,
    TokenError,
    UnsupportedPopKey,
)
from tokens.params import AceError, CoapCode, GrantType, TokenType

SCOPE = Scope.parse("/temp:GET /cfg:GET,PUT").encode()
COSE_KEY = {1: 2, 2: b"kid1", -1: 1, -2: b"x" * 32, -3: b"y" * 32}

FULL: dict[type, Any] = {
    TokenRequest: TokenRequest(
        grant_type=GrantType.CLIENT_CREDENTIALS,
        client_id="dev-0001",
        scope=SCOPE,
        audience="gw.example",
        req_cnf={1: COSE_KEY},
        cnonce=b"\x01\x02",
        ace_profile=True,
    ),
    TokenResponse: TokenResponse(
        access_token=b"\xd0" + b"t" * 150,
        expires_in=3600,
        cnf={1: {1: 4, 2: b"k1", -1: b"s" * 16}},
        rs_cnf={1: COSE_KEY},
        ace_profile=1,
        token_type=TokenType.POP,
        scope="/temp:GET",
    ),
    ErrorResponse: ErrorResponse(
        error=AceError.INVALID_SCOPE, error_description="no such path", error_uri="urn:x"
    ),
    IntrospectionRequest: IntrospectionRequest(token=b"tok", token_type_hint="access_token"),
    IntrospectionResponse: IntrospectionResponse(
        active=True,
        iss="as",
        sub="dev-0001",
        aud="gw",
        exp=1_800_000_000,
        nbf=1_700_000_000.5,
        iat=1_700_000_000,
        cti=b"\x07",
        scope=SCOPE,
        cnf={3: b"k1"},
        rs_cnf={1: COSE_KEY},
        exi=600,
        ace_profile=1,
        client_id="dev-0001",
        token_type=2,
        cnonce=b"n",
    ),
    CreationHints: CreationHints(
        as_uri="coaps://as.example/token",
        kid=b"k1",
        audience="gw",
        scope=SCOPE,
        cnonce=b"\xe0\xa1\x56\xbb\x3f",
    ),
}
DECODERS: list[Callable[[bytes], Any]] = [cls.decode for cls in FULL]


# --- round trips and exact bytes ------------------------------------------------


@pytest.mark.parametrize("message", FULL.values(), ids=lambda m: type(m).__name__)
def test_round_trip_full(message: Any) -> None:
    data = message.encode()
    assert type(message).decode(data) == message
    assert type(message).decode(data).encode() == data


def test_token_request_minimal_bytes() -> None:
    # {33: 2}: grant_type client_credentials, always sent
    assert TokenRequest().encode() == bytes.fromhex("a1182102")
    # ace_profile asked for: {33: 2, 38: null}
    assert TokenRequest(ace_profile=True).encode() == bytes.fromhex("a21821021826f6")


def test_token_request_rfc9200_figure5_default_grant_type() -> None:
    # RFC 9200 Figure 5: {client_id: "myclient", audience: "tempSensor4711"}
    data = cbor2.dumps({24: "myclient", 5: "tempSensor4711"})
    request = TokenRequest.decode(data)
    assert request.grant_type == GrantType.CLIENT_CREDENTIALS  # §5.8.1 default
    assert request.client_id == "myclient"
    assert request.audience == "tempSensor4711"
    assert request.scope is None and request.req_cnf is None and not request.ace_profile


def test_token_request_unknown_grant_type_kept() -> None:
    request = TokenRequest.decode(cbor2.dumps({33: 77}))
    assert request.grant_type == 77
    assert TokenRequest.decode(cbor2.dumps({33: 0})).grant_type is GrantType.PASSWORD


def test_token_response_bytes() -> None:
    # {1: h'0102', 2: 60}
    assert TokenResponse(access_token=b"\x01\x02", expires_in=60).encode() == bytes.fromhex(
        "a2014201020218 3c".replace(" ", "")
    )


def test_error_response_bytes_and_codes() -> None:
    error = ErrorResponse(error=AceError.INVALID_CLIENT)
    assert error.encode() == bytes.fromhex("a1181e02")  # {30: 2}
    assert error.coap_code == CoapCode.UNAUTHORIZED
    for code in AceError:
        if code != AceError.INVALID_CLIENT:
            assert ErrorResponse(error=code).coap_code == CoapCode.BAD_REQUEST


def test_error_response_unknown_code_kept_as_int() -> None:
    decoded = ErrorResponse.decode(cbor2.dumps({30: 99}))
    assert decoded.error == 99 and decoded.coap_code == CoapCode.BAD_REQUEST
    assert ErrorResponse.decode(cbor2.dumps({30: 6})).error is AceError.INVALID_SCOPE


def test_error_response_from_exception() -> None:
    err = ErrorResponse.from_exception(InvalidClient("unknown client"))
    assert err.error == AceError.INVALID_CLIENT and err.coap_code == CoapCode.UNAUTHORIZED
    assert err.error_description == "unknown client"
    err = ErrorResponse.from_exception(InvalidScope("scope: empty"))
    assert err.error == AceError.INVALID_SCOPE and err.coap_code == CoapCode.BAD_REQUEST
    err = ErrorResponse.from_exception(UnsupportedPopKey())
    assert err.error == AceError.UNSUPPORTED_POP_KEY
    assert err.error_description == "unsupported_pop_key"
    # An error without an ACE code (4.03 at the RS) still answers invalid_request.
    err = ErrorResponse.from_exception(ScopeDenied("x"), with_description=False)
    assert err.error == AceError.INVALID_REQUEST and err.error_description is None
    assert ErrorResponse.decode(err.encode()) == err


def test_introspection_inactive() -> None:
    inactive = IntrospectionResponse.inactive()
    assert inactive.encode() == bytes.fromhex("a10af4")  # {10: false}
    assert IntrospectionResponse.decode(inactive.encode()) == inactive


def test_introspection_request_int_hint() -> None:
    request = IntrospectionRequest(token=b"t", token_type_hint=2)
    assert IntrospectionRequest.decode(request.encode()) == request


def test_aif_scope_helpers() -> None:
    assert FULL[TokenRequest].aif_scope() == Scope.parse("/temp:GET /cfg:GET,PUT")
    assert FULL[TokenResponse].aif_scope() == Scope.parse("/temp:GET")
    assert FULL[IntrospectionResponse].aif_scope() == Scope.decode(SCOPE)
    assert TokenRequest().aif_scope() is None
    with pytest.raises(InvalidScope):
        TokenRequest(scope=b"\x80").aif_scope()


def test_reprs_hold_no_secrets() -> None:
    response = FULL[TokenResponse]
    text = repr(response)
    assert "ttt" not in text and "sss" not in text and "cnf" not in text
    assert "ttt" not in repr(IntrospectionRequest(token=b"ttttt"))
    assert "xxx" not in repr(FULL[TokenRequest])
    assert "kid1" not in repr(FULL[IntrospectionResponse])


# --- lenient where OAuth says so ------------------------------------------------------


def test_unknown_parameters_ignored() -> None:
    data = cbor2.dumps({24: "c", 9999: [1, 2], -70000: {"x": 1}, "vendor_ext": 1, 25: b"s"})
    assert TokenRequest.decode(data) == TokenRequest(client_id="c")


def test_self_describe_tag_accepted() -> None:
    data = b"\xd9\xd9\xf7" + TokenRequest(client_id="c").encode()
    assert TokenRequest.decode(data) == TokenRequest(client_id="c")


def test_indefinite_length_map_accepted() -> None:
    data = b"\xbf\x18\x18\x61c\x18\x21\x02\xff"  # {_ 24: "c", 33: 2}
    assert TokenRequest.decode(data) == TokenRequest(client_id="c")


# --- strict everywhere else -------------------------------------------------------------

BAD_VALUES: dict[str, list[Any]] = {
    "text": [1, b"x", None, ["x"], True],
    "bytes": ["x", 1, None, [b"x"]],
    "int": ["1", 1.0, None, True, b"\x01", 2**64],
    "uint": [-1, "1", 1.5, None, True, 2**64],
    "map": [[], "x", 1, None, b""],
    "scope": [1, None, [["/a", 1]], {}],
    "bool": [0, 1, None, "true"],
    "number": ["1", None, True, b"", float("nan")],
    "text_or_int": [b"x", None, 1.0, []],
    "null": [1, 0, "coap_dtls", False],
}

PARAM_TYPES: list[tuple[type, int, str, str]] = [
    (TokenRequest, 33, "grant_type", "int"),
    (TokenRequest, 24, "client_id", "text"),
    (TokenRequest, 9, "scope", "scope"),
    (TokenRequest, 5, "audience", "text"),
    (TokenRequest, 4, "req_cnf", "map"),
    (TokenRequest, 39, "cnonce", "bytes"),
    (TokenRequest, 38, "ace_profile", "null"),
    (TokenResponse, 1, "access_token", "bytes"),
    (TokenResponse, 2, "expires_in", "uint"),
    (TokenResponse, 8, "cnf", "map"),
    (TokenResponse, 41, "rs_cnf", "map"),
    (TokenResponse, 38, "ace_profile", "int"),
    (TokenResponse, 34, "token_type", "int"),
    (TokenResponse, 9, "scope", "scope"),
    (ErrorResponse, 30, "error", "int"),
    (ErrorResponse, 32, "error_description", "text"),
    (ErrorResponse, 31, "error_uri", "text"),
    (IntrospectionRequest, 11, "token", "bytes"),
    (IntrospectionRequest, 33, "token_type_hint", "text_or_int"),
    (IntrospectionResponse, 10, "active", "bool"),
    (IntrospectionResponse, 1, "iss", "text"),
    (IntrospectionResponse, 2, "sub", "text"),
    (IntrospectionResponse, 3, "aud", "text"),
    (IntrospectionResponse, 4, "exp", "number"),
    (IntrospectionResponse, 5, "nbf", "number"),
    (IntrospectionResponse, 6, "iat", "number"),
    (IntrospectionResponse, 7, "cti", "bytes"),
    (IntrospectionResponse, 9, "scope", "scope"),
    (IntrospectionResponse, 8, "cnf", "map"),
    (IntrospectionResponse, 41, "rs_cnf", "map"),
    (IntrospectionResponse, 40, "exi", "uint"),
    (IntrospectionResponse, 38, "ace_profile", "int"),
    (IntrospectionResponse, 24, "client_id", "text"),
    (IntrospectionResponse, 34, "token_type", "int"),
    (IntrospectionResponse, 39, "cnonce", "bytes"),
    (CreationHints, 1, "as", "text"),
    (CreationHints, 2, "kid", "bytes"),
    (CreationHints, 5, "audience", "text"),
    (CreationHints, 9, "scope", "scope"),
    (CreationHints, 39, "cnonce", "bytes"),
]


def _valid_map(cls: type) -> dict[Any, Any]:
    return dict(cbor2.loads(FULL[cls].encode()))


@pytest.mark.parametrize(
    ("cls", "key", "name", "kind"), PARAM_TYPES, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_wrong_type_names_the_parameter(cls: type, key: int, name: str, kind: str) -> None:
    assert key in _valid_map(cls)  # the fixture sets every parameter under test
    for bad in BAD_VALUES[kind]:
        params = _valid_map(cls)
        params[key] = bad
        with pytest.raises(MalformedError) as info:
            cls.decode(cbor2.dumps(params))
        assert name in info.value.description, (bad, info.value.description)
        assert info.value.coap_code == CoapCode.BAD_REQUEST
        assert info.value.ace_error == AceError.INVALID_REQUEST


@pytest.mark.parametrize(
    ("cls", "key", "name"),
    [
        (TokenResponse, 1, "access_token"),
        (ErrorResponse, 30, "error"),
        (IntrospectionRequest, 11, "token"),
        (IntrospectionResponse, 10, "active"),
    ],
)
def test_missing_required_parameter(cls: type, key: int, name: str) -> None:
    params = _valid_map(cls)
    del params[key]
    with pytest.raises(MalformedError) as info:
        cls.decode(cbor2.dumps(params))
    assert f"{name} is missing" in info.value.description
    assert info.value.coap_code == CoapCode.BAD_REQUEST


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\xa1\x01",  # truncated
        b"\x1c",  # reserved additional information
        cbor2.dumps([1, 2]),
        cbor2.dumps(1),
        cbor2.dumps(b"\xa0"),
        cbor2.dumps("x"),
        cbor2.dumps(None),
        b"\xa0\x00",  # trailing byte
        b"\xa0\xa0",
        cbor2.dumps(cbor2.CBORTag(24, b"\xa0")),  # a map, but tagged
        b"\xa2\x18\x18\x61c\x18\x18\x61d",  # client_id twice
        b"\xbf\x18\x18\x61c\x18\x18\x61d\xff",  # twice, indefinite length
        b"\xa2\x01\x01\xf5\x01",  # 1 and true: equal keys in Python
        cbor2.dumps({b"k": 1}),
        cbor2.dumps({1.5: 1}),
        cbor2.dumps({True: 1}),
        cbor2.dumps({None: 1}),
        b"\xa1\x82\x01\x02\x01",  # array as key
        cbor2.dumps({"scope": b"x"}),  # known name spelled as text
        cbor2.dumps({"access_token": b"x"}),
        cbor2.dumps({"error": 1}),
        b"\xa0" * 2 + b"\x00" * MAX_MESSAGE,
    ],
)
def test_garbage_is_malformed(decode: Callable[[bytes], Any], data: bytes) -> None:
    with pytest.raises(MalformedError) as info:
        decode(data)
    assert info.value.coap_code == CoapCode.BAD_REQUEST


def test_size_limit() -> None:
    big = TokenResponse(access_token=b"t" * (MAX_MESSAGE - 10))
    assert len(big.encode()) <= MAX_MESSAGE
    assert TokenResponse.decode(big.encode()) == big
    bigger = TokenResponse(access_token=b"t" * MAX_MESSAGE)
    with pytest.raises(MalformedError, match="limit"):
        TokenResponse.decode(bigger.encode())
    assert TokenResponse.decode(bigger.encode(), limit=2 * MAX_MESSAGE) == bigger


def test_error_messages_hold_no_values() -> None:
    params = _valid_map(TokenResponse)
    params[8] = "SECRET-KEY-MATERIAL"
    with pytest.raises(MalformedError) as info:
        TokenResponse.decode(cbor2.dumps(params))
    assert "SECRET" not in str(info.value)


# --- Hypothesis -------------------------------------------------------------------------

text = st.text(max_size=12)
blob = st.binary(max_size=24)
opt = st.none
scope_values = st.one_of(opt(), blob, st.just(SCOPE), st.just("/a:GET"))
int64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1)
leaf = st.one_of(st.integers(-(2**64) + 1, 2**64 - 1), text, blob, st.booleans(), st.none())
raw_maps = st.dictionaries(
    st.integers(-24, 24) | text,
    st.recursive(leaf, lambda inner: st.lists(inner, max_size=3), max_leaves=6),
    max_size=4,
)
numbers = st.one_of(int64, st.floats(allow_nan=False, allow_infinity=False))

MESSAGES = {
    TokenRequest: st.builds(
        TokenRequest,
        grant_type=int64,
        client_id=opt() | text,
        scope=scope_values,
        audience=opt() | text,
        req_cnf=opt() | raw_maps,
        cnonce=opt() | blob,
        ace_profile=st.booleans(),
    ),
    TokenResponse: st.builds(
        TokenResponse,
        access_token=blob,
        expires_in=opt() | uint64,
        cnf=opt() | raw_maps,
        rs_cnf=opt() | raw_maps,
        ace_profile=opt() | int64,
        token_type=opt() | int64,
        scope=scope_values,
    ),
    ErrorResponse: st.builds(
        ErrorResponse,
        error=int64,
        error_description=opt() | text,
        error_uri=opt() | text,
    ),
    IntrospectionRequest: st.builds(
        IntrospectionRequest, token=blob, token_type_hint=opt() | int64 | text
    ),
    IntrospectionResponse: st.builds(
        IntrospectionResponse,
        active=st.booleans(),
        iss=opt() | text,
        sub=opt() | text,
        aud=opt() | text,
        exp=opt() | numbers,
        nbf=opt() | numbers,
        iat=opt() | numbers,
        cti=opt() | blob,
        scope=scope_values,
        cnf=opt() | raw_maps,
        rs_cnf=opt() | raw_maps,
        exi=opt() | uint64,
        ace_profile=opt() | int64,
        client_id=opt() | text,
        token_type=opt() | int64,
        cnonce=opt() | blob,
    ),
    CreationHints: st.builds(
        CreationHints,
        as_uri=opt() | text,
        kid=opt() | blob,
        audience=opt() | text,
        scope=scope_values,
        cnonce=opt() | blob,
    ),
}


@settings(max_examples=60)
@given(st.one_of(*MESSAGES.values()))
def test_generated_messages_round_trip(message: Any) -> None:
    data = message.encode()
    decoded = type(message).decode(data, limit=1 << 16)
    assert decoded == message
    assert decoded.encode() == data


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_token_errors(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(TokenError):
            decode(data)


known_keys = st.sampled_from(sorted({key for _, key, _, _ in PARAM_TYPES}))
any_value = st.recursive(
    leaf | st.floats(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.integers(-3, 3), inner),
    max_leaves=8,
)


@settings(max_examples=300)
@given(st.dictionaries(known_keys | st.integers(-100, 100) | text, any_value, max_size=6))
def test_structured_fuzz_raises_only_token_errors(params: dict[Any, Any]) -> None:
    data = cbor2.dumps(params)
    for decode in DECODERS:
        try:
            decode(data)
        except TokenError as exc:
            assert isinstance(exc, MalformedError)


@settings(max_examples=100)
@given(st.one_of(*MESSAGES.values()), st.integers(0, 64), st.binary(min_size=1, max_size=3))
def test_mutated_messages_raise_only_token_errors(message: Any, pos: int, junk: bytes) -> None:
    data = message.encode()
    cut = pos % (len(data) + 1)
    for mutated in (data[:cut], data[:cut] + junk + data[cut:], data + junk):
        with contextlib.suppress(TokenError):
            type(message).decode(mutated)
