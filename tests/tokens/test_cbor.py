"""The strict CBOR decoder (RFC 8949 §5.1: one well-formed item, nothing after
it) and its fast path: reused, read-ahead cbor2 decoders whose end-of-item test
must agree with a byte-exact reading on every input."""

from __future__ import annotations

import io
import threading
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokens import cbor
from tokens.errors import MalformedError
from tokens.params import CoapCode


def reference(data: bytes) -> tuple[bool, Any]:
    """Byte-exact reading with a fresh decoder: (is one complete item, value)."""
    fp = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(fp).decode()
    except Exception:
        return False, None
    return fp.tell() == len(data), value


def same(a: Any, b: Any) -> bool:
    """Equality that also holds for NaN (a float NaN is a valid CBOR item)."""
    return a == b or repr(a) == repr(b)


leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.binary(max_size=300),
    st.text(max_size=30),
)
value = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.integers(-30, 30), st.text(max_size=3)), inner, max_size=5),
        st.builds(cbor2.CBORTag, st.sampled_from([16, 17, 18, 61, 96, 1000]), inner),
    ),
    max_leaves=25,
)


def test_the_read_ahead_fast_path_is_in_use() -> None:
    """With the pinned cbor2 the import-time check passes, so the tests below
    exercise the fast path (if this fails, decoding is strict but slow)."""
    assert cbor._READ_AHEAD is True


@settings(max_examples=400, deadline=None)
@given(value, st.binary(max_size=40))
def test_one_item_decodes_and_any_trailing_bytes_are_refused(v: Any, tail: bytes) -> None:
    data = cbor2.dumps(v)
    assert same(cbor.decode(data), cbor2.loads(data))
    if tail:
        with pytest.raises(MalformedError) as info:
            cbor.decode(data + tail)
        assert info.value.coap_code == CoapCode.BAD_REQUEST


@settings(max_examples=600, deadline=None)
@given(st.binary(min_size=1, max_size=120))
def test_agrees_with_byte_exact_reading_on_arbitrary_bytes(data: bytes) -> None:
    complete, expected = reference(data)
    if complete:
        assert same(cbor.decode(data), expected)
    else:
        with pytest.raises(MalformedError):
            cbor.decode(data)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 23, 24, 25, 255, 256, 300])
def test_trailing_bytes_at_every_read_ahead_boundary(n: int) -> None:
    """An item that ends 1, 2, ... bytes before the end of the input (the
    read-ahead is len - 1 bytes, so the first of these is the edge case)."""
    item = cbor2.dumps(bytes(n))
    assert cbor.decode(item) == bytes(n)
    for extra in (b"\x00", b"\x00\x00", b"\xff", item):
        with pytest.raises(MalformedError, match=f"{len(extra)} trailing bytes"):
            cbor.decode(item + extra)
    with pytest.raises(MalformedError):
        cbor.decode(item[:-1])


def test_long_byte_string_beyond_cbor2_chunks() -> None:
    big = bytes(range(256)) * 300  # 76,800 bytes: read by cbor2 in 64 KiB chunks
    data = cbor2.dumps(big)
    assert cbor.decode(data, limit=len(data)) == big
    with pytest.raises(MalformedError, match="1 trailing bytes"):
        cbor.decode(data + b"\x00", limit=len(data) + 1)
    with pytest.raises(MalformedError):
        cbor.decode(data[:-1], limit=len(data))


def test_limit_and_input_types() -> None:
    with pytest.raises(MalformedError, match="exceed the limit"):
        cbor.decode(cbor2.dumps(bytes(100)), limit=50)
    with pytest.raises(MalformedError, match="exceed the limit"):
        cbor.decode(memoryview(bytes(100)), limit=50)
    with pytest.raises(MalformedError, match="empty"):
        cbor.decode(b"")
    with pytest.raises(MalformedError, match="expected bytes"):
        cbor.decode("text")  # type: ignore[arg-type]
    data = cbor2.dumps([1, b"ab"])
    assert cbor.decode(bytearray(data)) == [1, b"ab"]
    assert cbor.decode(memoryview(data)) == [1, b"ab"]
    with pytest.raises(MalformedError):
        cbor.decode(bytearray(data + b"\x00"))


def test_a_reused_decoder_leaks_nothing_between_inputs() -> None:
    # shared references (tags 28/29) and string references (tags 256/25) are
    # per item: a later input cannot point into an earlier one
    assert cbor.decode(bytes.fromhex("d81c8101")) == [1]
    with pytest.raises(MalformedError):
        cbor.decode(bytes.fromhex("d81d00"))
    assert cbor.decode(bytes.fromhex("d901008263616263d81900")) == ["abc", "abc"]
    with pytest.raises(MalformedError):
        cbor.decode(bytes.fromhex("d81900"))
    # a failure half-way through an item of the same size leaves nothing behind
    good = cbor2.dumps([b"x" * 10, 1])
    with pytest.raises(MalformedError):
        cbor.decode(good[:-1] + b"\x1f")  # reserved additional info
    assert cbor.decode(good) == [b"x" * 10, 1]
    with pytest.raises(MalformedError):
        cbor.decode(b"\x82\x01\x02\x03" + bytes(len(good) - 4))
    assert cbor.decode(good) == [b"x" * 10, 1]


def test_many_distinct_sizes_and_threads() -> None:
    inputs = [cbor2.dumps({1: bytes(n), 2: "t" * (n % 7)}) for n in range(80)]
    expected = [cbor2.loads(d) for d in inputs]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for round_ in range(30):
                for i in range(len(inputs)):
                    j = (i + offset + round_) % len(inputs)
                    assert cbor.decode(inputs[j]) == expected[j]
                    with pytest.raises(MalformedError):
                        cbor.decode(inputs[j] + b"\x00")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k * 13,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # what this thread keeps is bounded in number and in buffer size
    big = cbor2.dumps(bytes(5000))
    assert cbor.decode(big, limit=len(big)) == bytes(5000)
    kept = cbor._local.decoders
    assert 0 < len(kept) <= cbor._MAX_DECODERS
    assert max(kept) <= cbor._MAX_KEPT_SIZE


def test_deep_nesting_is_malformed_not_recursion_error() -> None:
    with pytest.raises(MalformedError):
        cbor.decode(b"\x81" * 100_000 + b"\x00", limit=200_000)


def test_the_import_time_check_notices_a_broken_end_of_item_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cbor._read_ahead_works()
    # a read-ahead that covers the whole input hides trailing bytes: refused
    monkeypatch.setattr(cbor, "_read_size", lambda n: n + 10)
    assert not cbor._read_ahead_works()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=60))
def test_the_exact_reading_fallback_is_strict_too(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cbor, "_READ_AHEAD", False)
        mp.setattr(cbor, "_local", threading.local())
        complete, expected = reference(data)
        if complete:
            assert same(cbor.decode(data), expected)
            with pytest.raises(MalformedError, match="1 trailing bytes"):
                cbor.decode(data + b"\x00")
        else:
            with pytest.raises(MalformedError):
                cbor.decode(data)
        assert set(cbor._local.decoders) <= {1}  # exact reads only
