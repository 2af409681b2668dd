"""RFC 9770 token hashes, TRL responses (full, diff, "Cursor") and their
defensive parsing."""

from __future__ import annotations

import base64
import hashlib

import cbor2
import pytest

from gateway.authorization_server.revocation_list import (
    Entry,
    Query,
    Requester,
    RevocationList,
    TrlError,
    TrlResponseError,
    parse_query,
    parse_response,
    token_hash,
)

# RFC 9770 §4.2.1 figure 3: the access_token byte string of a CBOR AS response
RFC_BYTES = bytes.fromhex(
    "d83dd0835820a3010a044c53796d6d6574726963313238054d99a0d7846e762c49ffe8a63e0ba05858"
    "b918a11fd81e438b7f973d9e2e119bcb22424ba0f38a80f27562f400ee1d0d6c0fdb559c02421fd384"
    "fc2ebe22d7071378b0ea7428fff157444d45f7e6afcda1aae5f6495830c58627087fc5b4974f319a87"
    "07a635dd643b"
)


def test_token_hash_of_the_rfc_example() -> None:
    # HASH_INPUT = UTF-8 of base64url (no padding) of BYTES; RFC 6920 §6: suite 1 + sha-256
    text = base64.urlsafe_b64encode(RFC_BYTES).decode().rstrip("=")
    assert "=" not in text and text.startswith("2D3Q")
    th = token_hash(RFC_BYTES)
    assert th == b"\x01" + hashlib.sha256(text.encode()).digest()
    assert len(th) == 33
    # the example CWT is tag 61 around tag 16 (COSE_Encrypt0), unprotected {} (RFC 9770 §3)
    item = cbor2.loads(RFC_BYTES)
    assert item.tag == 61 and item.value.tag == 16 and item.value.value[1] == {}


def _entry(n: int, client: str = "dev-1", aud: str = "rs-a", exp: float = 100.0) -> Entry:
    return Entry(bytes([1, n]) * 16 + b"\x00", bytes([n]), client, aud, exp)


def test_full_query_filters_per_requester() -> None:
    trl = RevocationList()
    admin = Requester("admin", "ops")
    rs = Requester("rs", "rs-a", ("rs-a",))
    dev = Requester("device", "dev-2")
    trl.update([_entry(1), _entry(2, "dev-2", "rs-b")])
    full = lambda r: cbor2.loads(trl.respond(r, Query()))  # noqa: E731
    assert sorted(full(admin)[0]) == sorted([_entry(1).hash, _entry(2).hash])
    assert full(rs)[0] == [_entry(1).hash]
    assert full(dev)[0] == [_entry(2).hash]
    # RFC 9770 §9.1: the cursor is null while the requester's collection is empty
    assert full(dev)[2] is None
    # the empty TRL is the empty array, byte for byte
    assert RevocationList().respond(admin, Query()) == bytes.fromhex("a2 00 80 02 f6")


def test_diff_query_and_cursor() -> None:
    trl = RevocationList()
    rs = Requester("rs", "rs-a", ("rs-a",))
    # the first query registers the requester's update collection
    assert cbor2.loads(trl.respond(rs, Query(diff=0))) == {1: [], 2: None, 3: False}
    trl.update([_entry(1)])
    trl.update([_entry(1), _entry(2)])
    trl.update([_entry(2)])  # entry 1 expired
    out = cbor2.loads(trl.respond(rs, Query(diff=0)))
    # most recent first: [removed, added]
    assert out[1] == [[[_entry(1).hash], []], [[], [_entry(2).hash]], [[], [_entry(1).hash]]]
    assert out[2] == 2 and out[3] is False
    out = cbor2.loads(trl.respond(rs, Query(diff=1)))
    assert out[1] == [[[_entry(1).hash], []]]
    # after cursor 0: the two later items
    out = cbor2.loads(trl.respond(rs, Query(diff=0, cursor=0)))
    assert len(out[1]) == 2 and out[2] == 2
    # cursor at the last item: nothing new
    assert cbor2.loads(trl.respond(rs, Query(diff=0, cursor=2))) == {1: [], 2: 2, 3: False}
    with pytest.raises(TrlError) as exc:
        trl.respond(rs, Query(diff=0, cursor=7))
    assert cbor2.loads(exc.value.problem_details())[1] == {0: 2}


def test_query_errors() -> None:
    assert parse_query(["diff=3", "x=y"]) == Query(3, None)
    with pytest.raises(TrlError) as exc:
        parse_query(["diff=-1"])
    assert exc.value.error_id == 0
    with pytest.raises(TrlError) as exc:
        parse_query(["cursor=1"])
    assert exc.value.error_id == 1
    details = cbor2.loads(exc.value.problem_details())
    assert details[1] == {0: 1} and details[-1] == "Invalid set of parameters"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\x00",  # not CBOR
        cbor2.dumps([1, 2]),  # not a map
        cbor2.dumps({0: "x"}),  # full_set not an array
        cbor2.dumps({0: [1]}),  # a hash not bytes
        cbor2.dumps({1: [[[]]]}),  # diff entry not a pair
        cbor2.dumps({0: [], 2: -1}),  # cursor negative
        cbor2.dumps({0: [], 3: 1}),  # more not boolean
        cbor2.dumps({5: []}),  # neither full_set nor diff_set
        cbor2.dumps({0: [b"\x01" * 33] * 100_001}),  # a huge list
    ],
)
def test_hostile_responses_are_refused(payload: bytes) -> None:
    with pytest.raises(TrlResponseError):
        parse_response(payload)


def test_responses_parse_back() -> None:
    trl = RevocationList()
    admin = Requester("admin", "ops")
    trl.respond(admin, Query())
    trl.update([_entry(1)])
    assert parse_response(trl.respond(admin, Query())).full == {_entry(1).hash}
    diff = parse_response(trl.respond(admin, Query(diff=0)))
    assert diff.diffs == ((frozenset(), frozenset({_entry(1).hash})),) and diff.cursor == 0
