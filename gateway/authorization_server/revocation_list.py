"""The Token Revocation List of RFC 9770, sans-I/O: token hashes, the TRL
and each requester's update collection, the TRL endpoint's queries and
responses, and the parsing of those responses on the receiving side.

- Token hash (RFC 9770 §4): HASH_INPUT is the UTF-8 of the base64url text
  (no padding) of BYTES, the value of the ``access_token`` byte string in the
  AS's CBOR response (§4.2.1); an RS receiving a CWT takes TOKEN_INFO (the
  /authz-info payload or the psk_identity) for BYTES (§4.3.1 step 3). The
  hash is the RFC 6920 §6 binary form: the suite id byte (1 = sha-256,
  mandatory to implement) then the 32-byte SHA-256 digest (§4.4).
- TRL (§5): a set of token hashes, added when a token not yet expired is
  revoked and removed when it expires (§5.1).
- Queries (§6.3): ``diff=N`` asks for a diff query (§8), ``cursor=P`` with
  it for the "Cursor" extension (§6.2.1, §9); none asks for the full query
  (§7). Responses are CBOR maps with ``full_set`` (0), ``diff_set`` (1),
  ``cursor`` (2) and ``more`` (3) (§12), Content-Format
  application/ace-trl+cbor; errors are RFC 9290 concise problem details with
  the ``ace-trl-error`` entry (§6.1, §13).
- Requesters (§7 step 1): an administrator sees the whole TRL, a registered
  resource server the tokens issued for its audiences, a device its own.
  Each requester's update collection (§6.2) keeps its MAX_N most recent
  pertaining updates, indexed 0, 1, ... modulo MAX_INDEX + 1.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import cbor2

from gateway.errors import GatewayError
from tokens.params import CoapCode
from tokens.token_hash import HASH_NAME, SHA256_SUITE, token_hash

#: CoAP Content-Format of application/ace-trl+cbor (RFC 9770 §15.2).
CONTENT_FORMAT_ACE_TRL_CBOR = 262
#: CoAP Content-Format of application/concise-problem-details+cbor (RFC 9290 §6.3).
CONTENT_FORMAT_PROBLEM_DETAILS = 257
#: Custom Problem Detail key of 'ace-trl-error' (RFC 9770 §15.3).
ACE_TRL_ERROR = 1
#: TRL response parameters (RFC 9770 §12).
FULL_SET, DIFF_SET, CURSOR, MORE = 0, 1, 2, 3
#: Error identifiers (RFC 9770 §13).
INVALID_PARAMETER_VALUE, INVALID_SET_OF_PARAMETERS, OUT_OF_BOUND_CURSOR = 0, 1, 2
#: Update collection size per requester (MAX_N, RFC 9770 §6.2).
MAX_N = 32
#: Diff entries in one response with "Cursor" (MAX_DIFF_BATCH, RFC 9770 §6.2.1).
MAX_DIFF_BATCH = 16
#: Largest 'index' value (MAX_INDEX, RFC 9770 §6.2.1: at least 2^32 - 1 recommended).
MAX_INDEX = 2**32 - 1
#: Requesters whose update collection is kept (the least recently asking go first).
MAX_REQUESTERS = 20_000
#: Token hashes accepted in one TRL response by a receiver (hostile-input bound).
MAX_RESPONSE_HASHES = 100_000
#: Default url-path of the TRL endpoint (the RFC's examples use it).
TRL_PATH = ("revoke", "trl")


class TrlError(GatewayError):
    """A TRL query the AS refuses (RFC 9770 §6.3): 4.00 with problem details."""

    coap_code = CoapCode.BAD_REQUEST
    reason = "trl_bad_query"

    def __init__(self, description: str, error_id: int, cursor: Any = ...) -> None:
        super().__init__(description)
        self.error_id = error_id
        self.cursor = cursor

    def problem_details(self) -> bytes:
        """The RFC 9290 payload: title, detail and 'ace-trl-error' (RFC 9770 §6.1)."""
        entry: dict[int, Any] = {0: self.error_id}
        if self.cursor is not ...:
            entry[1] = self.cursor
        titles = {
            INVALID_PARAMETER_VALUE: "Invalid parameter value",
            INVALID_SET_OF_PARAMETERS: "Invalid set of parameters",
            OUT_OF_BOUND_CURSOR: "Out of bound cursor value",
        }
        return cbor2.dumps(
            {-1: titles[self.error_id], -2: str(self), ACE_TRL_ERROR: entry}, canonical=True
        )


class TrlResponseError(GatewayError):
    """A TRL response a receiver cannot use (malformed, wrong types, too big)."""

    coap_code = CoapCode.BAD_GATEWAY
    reason = "trl_bad_response"


@dataclass(frozen=True, slots=True)
class Entry:
    """A revoked token on the TRL: its hash and whom it pertains to."""

    hash: bytes
    cti: bytes
    client_id: str
    audience: str
    exp: float


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks (RFC 9770 §7 step 1), as its DTLS identity authenticates it:
    ``admin`` sees all; ``rs`` the tokens for ``audiences``; ``device`` its own."""

    kind: str  # "admin" | "rs" | "device"
    client_id: str
    audiences: tuple[str, ...] = ()

    def pertains(self, entry: Entry) -> bool:
        if self.kind == "admin":
            return True
        if self.kind == "rs":
            return entry.audience in self.audiences
        return entry.client_id == self.client_id


@dataclass(frozen=True, slots=True)
class Query:
    """A GET's query (RFC 9770 §6.3): ``diff`` None = full query."""

    diff: int | None = None
    cursor: int | None = None


def parse_query(uri_query: Iterable[str]) -> Query:
    """The 'diff' and 'cursor' parameters; unknown ones are ignored (§6.3)."""
    diff: int | None = None
    cursor: int | None = None
    cursor_text: str | None = None
    for item in uri_query:
        name, _, value = item.partition("=")
        if name == "diff":
            if not value.isdigit():  # neither 0 nor a positive integer
                raise TrlError(f"Invalid value for 'diff': {value[:20]}", INVALID_PARAMETER_VALUE)
            diff = int(value)
        elif name == "cursor":
            cursor_text = value
    if cursor_text is not None:
        if diff is None:
            raise TrlError("'cursor' without 'diff'", INVALID_SET_OF_PARAMETERS)
        cursor = int(cursor_text) if cursor_text.isdigit() else -1
    return Query(diff, cursor)


@dataclass
class _Item:
    """A series item of an update collection (RFC 9770 §6.2 step 4)."""

    index: int
    removed: list[bytes]
    added: list[bytes]


@dataclass
class _Collection:
    """One requester's update collection (RFC 9770 §6.2, §6.2.1)."""

    items: deque[_Item] = field(default_factory=lambda: deque(maxlen=MAX_N))
    added_ever: int = 0  # series items added; last_index = (added_ever - 1) % (MAX_INDEX + 1)

    @property
    def last_index(self) -> int | None:
        return None if not self.added_ever else (self.added_ever - 1) % (MAX_INDEX + 1)

    def add(self, removed: list[bytes], added: list[bytes]) -> None:
        self.items.append(_Item(self.added_ever % (MAX_INDEX + 1), removed, added))
        self.added_ever += 1


class RevocationList:
    """The TRL of the embedded AS (RFC 9770 §5) and its update collections.

    :meth:`update` takes the current set of revoked, unexpired tokens (the
    registry's revocations and cut-offs joined with the issued tokens) and
    records what changed; :meth:`respond` answers a GET; :meth:`affected`
    says which requesters an update concerned (whom to notify)."""

    def __init__(self) -> None:
        self.entries: dict[bytes, Entry] = {}
        self._collections: OrderedDict[Requester, _Collection] = OrderedDict()
        #: incremented at every change of the TRL
        self.version = 0

    def _collection(self, requester: Requester) -> _Collection:
        coll = self._collections.get(requester)
        if coll is None:
            coll = self._collections[requester] = _Collection()
            while len(self._collections) > MAX_REQUESTERS:
                self._collections.popitem(last=False)
        else:
            self._collections.move_to_end(requester)
        return coll

    def update(self, current: Iterable[Entry]) -> tuple[list[Entry], list[Entry]]:
        """Replace the TRL with ``current``; one update (§5.1) recorded in
        every known requester's collection it pertains to (§6.2 steps 1-6).
        Returns (removed, added)."""
        new = {e.hash: e for e in current}
        removed = [e for h, e in self.entries.items() if h not in new]
        added = [e for h, e in new.items() if h not in self.entries]
        if not removed and not added:
            return [], []
        self.entries = new
        self.version += 1
        for requester, coll in self._collections.items():
            r = [e.hash for e in removed if requester.pertains(e)]
            a = [e.hash for e in added if requester.pertains(e)]
            if r or a:
                coll.add(r, a)
        return removed, added

    def pertaining(self, requester: Requester) -> list[bytes]:
        return [h for h, e in self.entries.items() if requester.pertains(e)]

    def respond(self, requester: Requester, query: Query) -> bytes:
        """The 2.05 payload for a GET (RFC 9770 §7, §8, §9: diff queries and
        the "Cursor" extension are supported); raises :class:`TrlError`."""
        coll = self._collection(requester)
        if query.diff is None:
            return cbor2.dumps({FULL_SET: self.pertaining(requester), CURSOR: coll.last_index})
        num = MAX_N if query.diff == 0 or query.diff > MAX_N else query.diff
        if query.cursor is not None and (query.cursor < 0 or query.cursor > MAX_INDEX):
            raise TrlError(
                f"Invalid value for 'cursor': {query.cursor}",
                INVALID_PARAMETER_VALUE,
                cursor=coll.last_index,
            )
        items = list(coll.items)
        if not items:  # §9.2.1
            return cbor2.dumps({DIFF_SET: [], CURSOR: None, MORE: False})
        if query.cursor is None:  # §9.2.2
            chosen = items[-min(num, len(items)) :]
        else:
            p = query.cursor
            last = coll.last_index
            assert last is not None
            wrapped = coll.added_ever > MAX_INDEX + 1
            if not wrapped and p > last:
                raise TrlError(f"Out of bound cursor value: {p}", OUT_OF_BOUND_CURSOR)
            indexes = [i.index for i in items]
            following = (p + 1) % (MAX_INDEX + 1)
            if p in indexes:
                after = items[indexes.index(p) + 1 :]
            elif following in indexes:
                after = items[indexes.index(following) :]
            else:  # §9.2.3 case A: items lost
                return cbor2.dumps({DIFF_SET: [], CURSOR: None, MORE: True})
            chosen = after[-min(num, len(after)) :] if after else []
            if not chosen:
                return cbor2.dumps({DIFF_SET: [], CURSOR: last, MORE: False})
        more = len(chosen) > MAX_DIFF_BATCH
        batch = chosen[:MAX_DIFF_BATCH]  # the eldest L of them
        diff_set = [[i.removed, i.added] for i in reversed(batch)]
        return cbor2.dumps({DIFF_SET: diff_set, CURSOR: batch[-1].index, MORE: more})

    def expire(self, now: float) -> list[Entry]:
        """Entries whose token expired leave the TRL (§5.1); returns them."""
        gone = [e for e in self.entries.values() if e.exp <= now]
        if gone:
            self.update(e for e in self.entries.values() if e.exp > now)
        return gone


@dataclass(frozen=True, slots=True)
class TrlResponse:
    """A parsed TRL response: ``full`` the full set (full query) or None;
    ``diffs`` (removed, added) pairs, most recent first (diff query)."""

    full: frozenset[bytes] | None
    diffs: tuple[tuple[frozenset[bytes], frozenset[bytes]], ...] = ()
    cursor: int | None = None
    more: bool = False


def _hashes(value: object, what: str, budget: list[int]) -> frozenset[bytes]:
    if not isinstance(value, list):
        raise TrlResponseError(f"{what} is not an array")
    budget[0] -= len(value)
    if budget[0] < 0:
        raise TrlResponseError(f"more than {MAX_RESPONSE_HASHES} token hashes")
    for h in value:
        if not isinstance(h, bytes) or not 2 <= len(h) <= 65:
            raise TrlResponseError(f"{what}: a token hash is not a byte string of 2..65 bytes")
    return frozenset(value)


def parse_response(payload: bytes, *, max_bytes: int = 8 * 1024 * 1024) -> TrlResponse:
    """Decode a TRL response payload (RFC 9770 §7, §8, §9) defensively:
    malformed CBOR, wrong types or more than :data:`MAX_RESPONSE_HASHES`
    hashes raise :class:`TrlResponseError`."""
    if len(payload) > max_bytes:
        raise TrlResponseError("TRL response too large")
    try:
        value = cbor2.loads(payload)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise TrlResponseError(f"TRL response is not CBOR ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise TrlResponseError("TRL response is not a map")
    budget = [MAX_RESPONSE_HASHES]
    cursor = value.get(CURSOR)
    if cursor is not None and (
        not isinstance(cursor, int) or isinstance(cursor, bool) or cursor < 0
    ):
        raise TrlResponseError("'cursor' is neither null nor an unsigned integer")
    more = value.get(MORE, False)
    if not isinstance(more, bool):
        raise TrlResponseError("'more' is not a boolean")
    if FULL_SET in value:
        return TrlResponse(_hashes(value[FULL_SET], "full_set", budget), (), cursor, more)
    if DIFF_SET in value:
        entries = value[DIFF_SET]
        if not isinstance(entries, list):
            raise TrlResponseError("diff_set is not an array")
        diffs = []
        for entry in entries:
            if not isinstance(entry, list) or len(entry) != 2:
                raise TrlResponseError("a diff entry is not [removed, added]")
            diffs.append((_hashes(entry[0], "removed", budget), _hashes(entry[1], "added", budget)))
        return TrlResponse(None, tuple(diffs), cursor, more)
    raise TrlResponseError("TRL response has neither full_set nor diff_set")


def registration_info(path: tuple[str, ...] = TRL_PATH) -> dict[str, Any]:
    """What a registered device or administrator is told at registration
    (RFC 9770 §10): the TRL url-path, the hash function, MAX_N, MAX_DIFF_BATCH."""
    return {
        "trl_path": "/" + "/".join(path),
        "trl_hash": HASH_NAME,
        "max_n": MAX_N,
        "max_diff_batch": MAX_DIFF_BATCH,
    }


__all__ = [
    "CONTENT_FORMAT_ACE_TRL_CBOR",
    "CONTENT_FORMAT_PROBLEM_DETAILS",
    "HASH_NAME",
    "MAX_N",
    "SHA256_SUITE",
    "TRL_PATH",
    "Entry",
    "Query",
    "Requester",
    "RevocationList",
    "TrlError",
    "TrlResponse",
    "TrlResponseError",
    "parse_query",
    "parse_response",
    "registration_info",
    "token_hash",
]
