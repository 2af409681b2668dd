"""AIF REST scopes (RFC 9237): codec, text form, matching, subset, intersection."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens.aif import (
    ALL_METHODS,
    MAX_ENTRIES,
    MAX_SCOPE_BYTES,
    MAX_TOID_LENGTH,
    Scope,
    format_methods,
    format_toid,
    method_bit,
    parse_toid,
    request_segments,
)
from tokens.errors import (
    InvalidScope,
    MalformedError,
    MethodNotAllowed,
    ScopeDenied,
    TokenError,
)
from tokens.params import AceError, CoapCode, Method

GET, POST, PUT, DELETE, FETCH, PATCH, IPATCH = 1, 2, 4, 8, 16, 32, 64


# --- text form ----------------------------------------------------------------


def test_parse_text_form() -> None:
    scope = Scope.parse("/temp:GET /cfg:GET,PUT")
    assert scope.entries == (("/cfg", GET | PUT), ("/temp", GET))
    assert str(scope) == "/cfg:GET,PUT /temp:GET"


def test_methods_case_insensitive_and_star() -> None:
    assert Scope.parse("/a:get,Put,iPATCH") == Scope([("/a", GET | PUT | IPATCH)])
    assert Scope.parse("/a:*").entries == (("/a", ALL_METHODS),)
    assert str(Scope([("/a", ALL_METHODS)])) == "/a:*"
    assert format_methods(ALL_METHODS & ~GET) == "POST,PUT,DELETE,FETCH,PATCH,IPATCH"


def test_text_whitespace_and_empty() -> None:
    assert Scope.parse("  /a:GET\n\t/b:POST ") == Scope([("/a", GET), ("/b", POST)])
    assert len(Scope.parse("")) == 0
    assert str(Scope()) == ""


def test_text_path_may_contain_colon() -> None:
    scope = Scope.parse("/a:b:GET")
    assert scope.entries == (("/a:b", GET),)
    assert Scope.parse(str(scope)) == scope


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("/temp", "'/temp'"),
        (":GET", "':GET'"),
        ("temp:GET", "'temp'"),
        ("/a:GETT", "'GETT'"),
        ("/a:", "''"),
        ("/a:GET,,PUT", "''"),
        ("/ok:GET /a?x=1:GET", "'/a?x=1'"),
        ("/a#f:GET", "'/a#f'"),
        ("/%zz:GET", "'/%zz'"),
        ("/%ff:GET", "'/%ff'"),
        ("/é:GET", "'/é'"),
    ],
)
def test_text_parse_errors_name_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(InvalidScope) as info:
        Scope.parse(text)
    assert named in info.value.description
    assert info.value.coap_code == CoapCode.BAD_REQUEST
    assert info.value.ace_error == AceError.INVALID_SCOPE


# --- CBOR codec -----------------------------------------------------------------


def test_encode_exact_bytes() -> None:
    # [["/temp", 1]] (RFC 9237 §3 shape)
    assert Scope.parse("/temp:GET").encode() == bytes.fromhex("8182652f74656d7001")
    assert Scope().encode() == b"\x80"


def test_decode_from_bytes_and_value() -> None:
    scope = Scope.parse("/cfg:GET,PUT /temp:GET /api/*:POST")
    assert Scope.decode(scope.encode()) == scope
    assert Scope.decode(scope.to_cbor()) == scope
    assert Scope.decode(cbor2.dumps([["/temp", 1], ["/cfg", 5], ["/api/*", 2]])) == scope


def test_canonical_order_merge_and_normalization() -> None:
    a = Scope([("/b", GET), ("/a", PUT), ("/b", POST)])
    b = Scope([("/a", PUT), ("/b", GET | POST)])
    assert a == b and hash(a) == hash(b) and a.encode() == b.encode()
    # Percent-encoding is normalized (RFC 3986 §6.2.2), so equal paths encode once.
    assert Scope([("/%41", GET)]) == Scope([("/A", GET)])
    assert Scope([("/a%2fb", GET)]).entries == (("/a%2Fb", GET),)
    assert Scope([("/x/%2a", GET)]).entries == (("/x/%2A", GET),)
    assert Scope([("/a", GET)]) != Scope([("/a", PUT)])
    assert len({a, b}) == 1


@pytest.mark.parametrize(
    "value",
    [
        {"/a": 1},
        "not an array",
        [["/a"]],
        [["/a", 1, 2]],
        ["/a", 1],
        [[1, 1]],
        [[b"/a", 1]],
        [["a", 1]],
        [["", 1]],
        [["/a", 0]],
        [["/a", 128]],
        [["/a", 1 << 32]],
        [["/a", -1]],
        [["/a", True]],
        [["/a", 1.0]],
        [["/a", None]],
        [["/a b", 1]],
        [["/" + "a" * MAX_TOID_LENGTH, 1]],
        [[f"/{i}", 1] for i in range(MAX_ENTRIES + 1)],
    ],
)
def test_decode_rejects_bad_structure(value: object) -> None:
    with pytest.raises(InvalidScope):
        Scope.decode(cbor2.dumps(value))


def test_decode_limits_and_garbage() -> None:
    assert len(Scope.decode([[f"/{i}", 1] for i in range(MAX_ENTRIES)])) == MAX_ENTRIES
    for data in (b"", b"\xff", b"\x81", b"\x80\x00", b"\x5f", b"\x00" * (MAX_SCOPE_BYTES + 1)):
        with pytest.raises(InvalidScope) as info:
            Scope.decode(data)
        assert info.value.coap_code == CoapCode.BAD_REQUEST


def test_from_scope_param() -> None:
    scope = Scope.parse("/temp:GET")
    assert Scope.from_scope_param(scope.encode()) == scope
    assert Scope.from_scope_param("/temp:get") == scope
    for bad in (b"\x80", "", "   ", 7, None, [["/temp", 1]]):
        with pytest.raises(InvalidScope):
            Scope.from_scope_param(bad)


def test_repr_and_iteration() -> None:
    scope = Scope.parse("/a:GET /b:PUT")
    assert eval(repr(scope), {"Scope": Scope}) == scope
    assert list(scope) == [("/a", GET), ("/b", PUT)]
    assert bool(scope) and not Scope()


# --- paths ------------------------------------------------------------------------


def test_toid_parsing() -> None:
    assert parse_toid("/") == ((), False)
    assert parse_toid("/*") == ((), True)
    assert parse_toid("/a/b") == (("a", "b"), False)
    assert parse_toid("/a/") == (("a", ""), False)
    assert parse_toid("/api/*") == (("api",), True)
    assert parse_toid("/a%2Fb") == (("a/b",), False)
    assert parse_toid("/x/%2A") == (("x", "*"), False)
    assert parse_toid("/*/x") == (("*", "x"), False)
    assert format_toid(("x", "*")) == "/x/%2A"
    assert format_toid(("a b", "é")) == "/a%20b/%C3%A9"


def test_request_segments() -> None:
    assert request_segments("/") == ()
    assert request_segments("/a/b") == ("a", "b")
    assert request_segments("/a%2Fb") == ("a/b",)
    assert request_segments(["a", "b"]) == ("a", "b")
    assert request_segments([""]) == ()
    with pytest.raises(MalformedError):
        request_segments("a/b")


def test_method_bit() -> None:
    assert [method_bit(m) for m in Method] == [1, 2, 4, 8, 16, 32, 64]
    assert method_bit("fetch") == FETCH
    assert method_bit(0) == method_bit(8) == method_bit(-1) == method_bit("HEAD") == 0


# --- matching -------------------------------------------------------------------------


SCOPE = Scope.parse("/temp:GET /cfg:GET,PUT /api/*:GET,POST /api/admin:DELETE /a%2Fb:FETCH /:GET")


@pytest.mark.parametrize(
    ("path", "mask"),
    [
        (("temp",), GET),
        ("/temp", GET),
        (("cfg",), GET | PUT),
        ((), GET),
        (("",), GET),
        ("/", GET),
        (("api",), GET | POST),
        (("api", ""), GET | POST),
        (("api", "x"), GET | POST),
        ("/api/x/y", GET | POST),
        (("api", "admin"), GET | POST | DELETE),  # union of exact and wildcard
        (("api", "admin", "z"), GET | POST),
        (("apix",), 0),
        (("ap",), 0),
        (("temp", "x"), 0),
        (("temp", ""), 0),
        (("a/b",), FETCH),
        ("/a%2Fb", FETCH),
        (("a", "b"), 0),  # two segments: not the same resource as "a/b"
        ("/a/b", 0),
        (("TEMP",), 0),
    ],
)
def test_allowed_methods(path: object, mask: int) -> None:
    assert SCOPE.allowed_methods(path) == mask  # type: ignore[arg-type]
    if isinstance(path, tuple):
        assert SCOPE.allowed_methods(list(path)) == mask


def test_root_wildcard_matches_everything() -> None:
    scope = Scope.parse("/*:GET")
    for path in ((), ("",), ("a",), ("a", "b", "c")):
        assert scope.allows(path, Method.GET)
        assert not scope.allows(path, Method.PUT)


def test_literal_star_is_not_a_wildcard() -> None:
    scope = Scope.parse("/x/%2A:GET")
    assert scope.allows(("x", "*"), Method.GET)
    assert not scope.allows(("x", "y"), Method.GET)
    assert not scope.allows(("x",), Method.GET)


def test_check_codes() -> None:
    SCOPE.check(("temp",), Method.GET)
    SCOPE.check("/cfg", "put")
    with pytest.raises(ScopeDenied) as denied:
        SCOPE.check(("nope",), Method.GET)
    assert denied.value.coap_code == CoapCode.FORBIDDEN
    with pytest.raises(MethodNotAllowed) as method:
        SCOPE.check(("temp",), Method.PUT)
    assert method.value.coap_code == CoapCode.METHOD_NOT_ALLOWED
    assert "GET" in method.value.description
    with pytest.raises(MethodNotAllowed):
        SCOPE.check(("temp",), 0)
    with pytest.raises(ScopeDenied):
        Scope().check((), Method.GET)


def test_allows() -> None:
    assert SCOPE.allows(("api", "q"), Method.POST)
    assert not SCOPE.allows(("api", "q"), Method.DELETE)
    assert not SCOPE.allows(("nope",), Method.GET)


# --- subset and intersection ------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    [
        ("/a:GET", "/a:GET,PUT", True),
        ("/a:GET,PUT", "/a:GET", False),
        ("/a:GET", "/b:GET", False),
        ("", "/b:GET", True),
        ("/a:GET", "", False),
        ("/api/x:GET", "/api/*:GET", True),
        ("/api:GET", "/api/*:GET", True),
        ("/api/*:GET", "/api/*:GET,PUT", True),
        ("/api/x/*:GET", "/api/*:GET", True),
        ("/api/x/*:GET", "/*:GET", True),
        ("/api/*:GET", "/api/x/*:GET", False),
        ("/api/*:GET", "/api:GET /api/x:GET", False),
        ("/api/*:GET,PUT", "/api/*:GET /*:PUT", True),
        ("/api/*:GET", "/api/*:PUT", False),
        ("/api/x:GET,PUT", "/api/*:GET /api/x:PUT", True),
        ("/*:GET", "/api/*:GET", False),
    ],
)
def test_is_subset_of(requested: str, allowed: str, expected: bool) -> None:
    assert Scope.parse(requested).is_subset_of(Scope.parse(allowed)) is expected


def test_intersection_examples() -> None:
    asked = Scope.parse("/temp:GET,PUT /cfg:GET /api/x/*:* /other:GET")
    may = Scope.parse("/temp:GET /cfg:GET,PUT /api/*:GET /api/x/y:PUT")
    granted = asked.intersection(may)
    assert granted == Scope.parse("/temp:GET /cfg:GET /api/x/*:GET /api/x/y:PUT")
    assert granted.is_subset_of(asked) and granted.is_subset_of(may)
    assert not Scope.parse("/a:GET").intersection(Scope.parse("/a:PUT"))


# --- properties ---------------------------------------------------------------------


segment = st.text(alphabet="ab*%/ :@é", max_size=3)
segments = st.lists(segment, max_size=3).map(tuple)
entries = st.tuples(segments, st.booleans(), st.integers(1, ALL_METHODS))
scopes = st.lists(entries, max_size=6).map(
    lambda items: Scope([(format_toid(s, wildcard=w), m) for s, w, m in items])
)
FRESH = "\x00fresh"  # a segment no generated scope names


def _norm(segs: tuple[str, ...]) -> tuple[str, ...]:
    return () if segs == ("",) else segs


def _probes(*scope_list: Scope) -> set[tuple[str, ...]]:
    """Paths where any difference between the scopes must show: every exact
    toid, every wildcard prefix, and a fresh path just below each prefix."""
    out: set[tuple[str, ...]] = {(), (FRESH,)}
    for scope in scope_list:
        for toid, _ in scope:
            segs, wild = parse_toid(toid)
            out.add(segs)
            if wild:
                out.add((*segs, FRESH))
    return out


@given(segments, st.booleans())
def test_toid_format_parse_round_trip(segs: tuple[str, ...], wild: bool) -> None:
    assert parse_toid(format_toid(segs, wildcard=wild)) == (_norm(segs), wild)


@given(scopes)
def test_scope_round_trips(scope: Scope) -> None:
    assert Scope.decode(scope.encode()) == scope
    assert Scope.decode(scope.encode()).encode() == scope.encode()
    assert Scope.parse(str(scope)) == scope
    if scope:
        assert Scope.from_scope_param(scope.encode()) == scope
        assert Scope.from_scope_param(str(scope)) == scope


@given(scopes)
def test_subset_reflexive(scope: Scope) -> None:
    assert scope.is_subset_of(scope)


@given(scopes, scopes, scopes)
def test_subset_transitive(a: Scope, b: Scope, c: Scope) -> None:
    # Chains built by intersection are subsets by construction...
    b2 = c.intersection(b)
    a2 = b2.intersection(a)
    assert a2.is_subset_of(b2) and b2.is_subset_of(c) and a2.is_subset_of(c)
    # ...and any chain that happens to hold must compose.
    if a.is_subset_of(b) and b.is_subset_of(c):
        assert a.is_subset_of(c)


@given(scopes, scopes)
def test_subset_agrees_with_per_path_semantics(a: Scope, b: Scope) -> None:
    per_path = all(a.allowed_methods(p) & ~b.allowed_methods(p) == 0 for p in _probes(a, b))
    assert a.is_subset_of(b) is per_path


@given(scopes, scopes)
def test_intersection_is_per_path_and(a: Scope, b: Scope) -> None:
    both = a.intersection(b)
    assert both == b.intersection(a)
    for path in _probes(a, b, both):
        assert both.allowed_methods(path) == a.allowed_methods(path) & b.allowed_methods(path)
    assert both.is_subset_of(a) and both.is_subset_of(b)


@given(scopes, st.sampled_from(sorted({*Method, 0, 8})))
def test_check_matches_allows(scope: Scope, method: int) -> None:
    for path in _probes(scope):
        try:
            scope.check(path, method)
            assert scope.allows(path, method)
        except ScopeDenied:
            assert scope.allowed_methods(path) == 0
        except MethodNotAllowed:
            assert scope.allowed_methods(path) != 0 and not scope.allows(path, method)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_raises_only_token_errors(data: bytes) -> None:
    try:
        Scope.decode(data)
    except TokenError as exc:
        assert isinstance(exc, InvalidScope)


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**65), 2**65)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@settings(max_examples=300)
@given(st.lists(st.lists(cbor_values, max_size=3), max_size=4) | cbor_values)
def test_decode_arbitrary_values_raises_only_invalid_scope(value: object) -> None:
    for attempt in (lambda: Scope.decode(value), lambda: Scope.decode(cbor2.dumps(value))):
        try:
            attempt()
        except TokenError as exc:
            assert isinstance(exc, InvalidScope)


@settings(max_examples=300)
@given(st.text(max_size=60) | st.binary(max_size=60))
def test_from_scope_param_arbitrary_input(value: str | bytes) -> None:
    try:
        Scope.from_scope_param(value)
    except TokenError as exc:
        assert isinstance(exc, InvalidScope)
