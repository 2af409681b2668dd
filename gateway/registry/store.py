"""What the registry keeps, and the interface of the store that keeps it.

:class:`RegistryStore` is everything the gateway asks of its storage: client
rows with their PSKs *sealed* (the store never sees a PSK in clear, nor the
master key), the revocation list, the change log read with a cursor (the
change stamp), lockout lifts, token cut-offs, the operators' audit trail
and the AS key set (private keys sealed like PSKs).
:class:`gateway.registry.registry.Registry` adds validation, sealing and the
in-memory view over any store; :func:`open_store` picks the implementation
(SQLite, :mod:`gateway.registry.sqlite`, or PostgreSQL,
:mod:`gateway.registry.postgres`). Every write is one transaction and appends to the change
log in it; reads never write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from gateway.errors import InvalidArgument, KeystoreError, UnknownKid

#: Change kinds after which a client's live sessions may go on.
NO_CUT = frozenset({"add", "enable"})
#: Client columns :meth:`RegistryStore.update_client` may set.
CLIENT_FIELDS = frozenset(
    {"psk", "scope", "default_scope", "audiences", "public_key", "enabled", "rotated_at"}
)


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """One client row as stored: ``psk`` sealed under the master key
    (:mod:`gateway.registry.masterkey`, the client id as associated data)."""

    client_id: str
    psk: bytes
    scope: str
    default_scope: str | None
    audiences: tuple[str, ...]
    public_key: bytes | None
    enabled: bool
    created_at: float
    rotated_at: float | None
    generation: int


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a change stamp (:meth:`RegistryStore.changes_since`).

    ``complete`` is false when the change log no longer reaches back to the
    given stamp; the caller must then treat every client as changed.
    ``cut_off``: the clients among ``client_ids`` whose live sessions must
    end (updated, disabled, re-keyed or deleted; not added or enabled).
    """

    stamp: int
    client_ids: frozenset[str]
    revocations: bool
    complete: bool
    cut_off: frozenset[str] = frozenset()
    #: Operator lifts of lockout bans, in order: ``(address, identity)``,
    #: None meaning any (``acegw lockouts lift``).
    lifts: tuple[tuple[str | None, bytes | None], ...] = ()
    #: Every change in order: ``(kind, client_id)`` (``disable``, ``revoke``, ...).
    kinds: tuple[tuple[str, str | None], ...] = ()
    #: Whether the AS key set changed (a ``keys`` change: rotate, retire, import).
    keys: bool = False


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One AS key as stored (:mod:`gateway.authorization_server.keystore`):
    ``kind`` ``signing`` or ``as_rs``, ``alg`` the COSE algorithm's name,
    ``status`` ``current``, ``active`` or ``retired``; ``sealed`` the private
    COSE_Key sealed under the master key (kind and kid as associated data)."""

    kid: bytes
    kind: str
    alg: str
    status: str
    created_at: float
    retired_at: float | None
    sealed: bytes

    def __repr__(self) -> str:  # never the sealed key
        return f"<KeyRecord {self.kind} {self.kid.hex()} {self.status}>"


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One record of the operators' audit trail."""

    seq: int
    at: float
    operator: str
    action: str
    target: str | None
    outcome: str
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "operator": self.operator,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class ActionQuery:
    """Which audit records :meth:`RegistryStore.search_actions` returns:
    every given criterion must match; ``action`` matches itself and its
    sub-commands (``clients`` matches ``clients add``); ``limit``: only the
    newest ``limit``."""

    target: str | None = None
    action: str | None = None
    operator: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int | None = None

    def select(self, mark: str) -> tuple[str, tuple[Any, ...]]:
        """The query and its arguments, ``mark`` being the driver's
        placeholder (``?`` for SQLite, ``%s`` for psycopg)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("target", self.target), ("operator", self.operator)):
            if value is not None:
                where.append(f"{column} = {mark}")
                args.append(value)
        if self.action is not None:
            where.append(f"(action = {mark} OR substr(action, 1, {mark}) = {mark})")
            args += [self.action, len(self.action) + 1, f"{self.action} "]
        if self.since is not None:
            where.append(f"at >= {mark}")
            args.append(self.since)
        if self.until is not None:
            where.append(f"at <= {mark}")
            args.append(self.until)
        sql = f"SELECT {ACTION_COLUMNS} FROM operator_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if self.limit is not None:
            sql += f" LIMIT {int(self.limit)}"
        return sql, tuple(args)


#: The query matching every audit record.
ALL_ACTIONS = ActionQuery()
#: Column order of :func:`client_row` / :func:`client_record`.
CLIENT_COLUMNS = (
    "client_id, psk, scope, default_scope, audiences, public_key, enabled, created_at, "
    "rotated_at, generation"
)
#: Column order of the rows :func:`operator_actions` reads.
ACTION_COLUMNS = "seq, at, operator, action, target, outcome, detail"
#: Column order of :func:`key_row` / :func:`key_record`.
KEY_COLUMNS = "kid, kind, alg, status, created_at, retired_at, sealed"
#: The change kind of every AS key set change.
KEYS_CHANGE = "keys"
#: The change kind telling every instance to compute its token revocation
#: list again (an issued token recorded after its revocation or cut-off).
TRL_CHANGE = "trl"


def key_row(r: KeyRecord) -> tuple[Any, ...]:
    """``r`` as the values of :data:`KEY_COLUMNS`."""
    return (r.kid, r.kind, r.alg, r.status, r.created_at, r.retired_at, r.sealed)


def key_record(r: Sequence[Any]) -> KeyRecord:
    """A row of :data:`KEY_COLUMNS` as a :class:`KeyRecord`."""
    return KeyRecord(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], bytes(r[6]))


def rotate_key_in(conn: Any, record: KeyRecord, mark: str) -> None:
    """:meth:`RegistryStore.rotate_as_key`'s statements on ``conn`` (a
    sqlite3 or psycopg connection inside the caller's write transaction;
    ``mark``: the driver's placeholder)."""
    if conn.execute(f"SELECT 1 FROM as_keys WHERE kid = {mark}", (record.kid,)).fetchone():
        raise KeystoreError(f"kid {record.kid.hex()} is taken; rotate again")
    conn.execute(
        f"UPDATE as_keys SET status = 'active' WHERE kind = {mark} AND status = 'current'",
        (record.kind,),
    )
    row = key_row(replace(record, status="current", retired_at=None))
    conn.execute(f"INSERT INTO as_keys ({KEY_COLUMNS}) VALUES ({', '.join([mark] * 7)})", row)


def retire_key_in(conn: Any, kid: bytes, at: float, mark: str) -> tuple[KeyRecord, bool]:
    """:meth:`RegistryStore.retire_as_key`'s statements on ``conn``; the
    record and whether it changed."""
    row = conn.execute(f"SELECT {KEY_COLUMNS} FROM as_keys WHERE kid = {mark}", (kid,)).fetchone()
    if row is None:
        raise UnknownKid(f"no key with kid {kid.hex()}")
    record = key_record(row)
    if record.status == "current":
        raise KeystoreError(
            f"key {kid.hex()} is the current {record.kind} key; rotate first, then retire it"
        )
    if record.status == "retired":
        return record, False
    conn.execute(
        f"UPDATE as_keys SET status = 'retired', retired_at = {mark} WHERE kid = {mark}",
        (at, kid),
    )
    return replace(record, status="retired", retired_at=at), True


def client_row(r: ClientRecord) -> tuple[Any, ...]:
    """``r`` as the values of :data:`CLIENT_COLUMNS` (audiences as JSON text)."""
    return (
        r.client_id,
        r.psk,
        r.scope,
        r.default_scope,
        json.dumps(list(r.audiences)),
        r.public_key,
        bool(r.enabled),
        r.created_at,
        r.rotated_at,
        r.generation,
    )


def client_record(r: Sequence[Any]) -> ClientRecord:
    """A row of :data:`CLIENT_COLUMNS` as a :class:`ClientRecord`."""
    return ClientRecord(
        client_id=r[0],
        psk=bytes(r[1]),
        scope=r[2],
        default_scope=r[3],
        audiences=tuple(json.loads(r[4])),
        public_key=None if r[5] is None else bytes(r[5]),
        enabled=bool(r[6]),
        created_at=r[7],
        rotated_at=r[8],
        generation=r[9],
    )


def client_update(fields: Mapping[str, Any], mark: str) -> tuple[str, list[Any]]:
    """The ``SET`` list and its values for :meth:`RegistryStore.update_client`
    (``mark``: the driver's placeholder); :class:`InvalidArgument` for a
    name outside :data:`CLIENT_FIELDS`, or none."""
    unknown = set(fields) - CLIENT_FIELDS
    if unknown or not fields:
        raise InvalidArgument(f"cannot set client fields {sorted(unknown) or 'none'}")
    values = [
        json.dumps(list(v)) if name == "audiences" else bool(v) if name == "enabled" else v
        for name, v in fields.items()
    ]
    return ", ".join(f"{name} = {mark}" for name in fields), values


def operator_actions(rows: Sequence[Sequence[Any]]) -> list[OperatorAction]:
    """Rows of :data:`ACTION_COLUMNS`, newest first, as records oldest first."""
    return [
        OperatorAction(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in reversed(rows)
    ]


def assemble_changes(
    stamp: int,
    rows: Sequence[Sequence[Any]],
    pruned_through: int,
    lifts_between: Callable[[int, int], Sequence[Sequence[Any]]],
) -> Changes:
    """:class:`Changes` from the change-log rows ``(seq, kind, client_id)``
    after ``stamp``; ``pruned_through``: the newest row purged;
    ``lifts_between(after, through)``: the ``(address, identity)`` rows of
    the lockout lifts in that range (asked only when there is one)."""
    complete = pruned_through <= stamp
    new_stamp = int(max([stamp, *(r[0] for r in rows), 0 if complete else pruned_through]))
    lifts: tuple[tuple[str | None, bytes | None], ...] = ()
    if any(r[1] == "lift" for r in rows):
        lifts = tuple(
            (a, None if i is None else bytes(i)) for a, i in lifts_between(stamp, new_stamp)
        )
    return Changes(
        stamp=new_stamp,
        client_ids=frozenset(r[2] for r in rows if r[2] is not None),
        revocations=any(r[1] in ("revoke", "purge", TRL_CHANGE) for r in rows),
        complete=complete,
        cut_off=frozenset(r[2] for r in rows if r[2] is not None and r[1] not in NO_CUT),
        lifts=lifts,
        kinds=tuple((r[1], r[2]) for r in rows),
        keys=any(r[1] in (KEYS_CHANGE, "import") for r in rows),
    )


@runtime_checkable
class RegistryStore(Protocol):
    """Persistent registry storage, shared by every process and instance
    that opens the same location. Errors are :class:`gateway.errors.RegistryError`
    (or :class:`ClientExists` / :class:`ClientNotFound` where named)."""

    #: Where the store lives, for messages (a file path, a database URL).
    location: str

    def close(self) -> None: ...

    def key_check(self, seal: Any) -> bytes:
        """The stored master-key check value; stores ``seal()`` first when
        there is none (a new registry)."""
        ...

    # --- clients ----------------------------------------------------------------

    def add_clients(self, records: Sequence[ClientRecord]) -> None:
        """Insert all (one transaction, change kind ``add`` each), or none
        with :class:`ClientExists` if an id is taken."""
        ...

    def update_client(
        self, client_id: str, kind: str, fields: Mapping[str, Any], *, at: float, cut: bool
    ) -> None:
        """Set ``fields`` (names from :data:`CLIENT_FIELDS`), move the
        generation, log ``kind``; ``cut``: record the token cut-off ``at``.
        :class:`ClientNotFound` if there is no such client."""
        ...

    def delete_client(self, client_id: str, *, at: float) -> None:
        """Delete the row, record the cut-off, log ``delete``."""
        ...

    def client(self, client_id: str) -> ClientRecord | None: ...

    def clients(self, prefix: str | None = None) -> list[ClientRecord]:
        """All clients (whose id starts with ``prefix``), ordered by id."""
        ...

    def count_clients(self) -> int: ...

    def cutoffs(self, client_ids: Iterable[str] | None = None) -> dict[str, float]:
        """Token cut-offs (last disable or delete) of the given clients, or all."""
        ...

    # --- revocations and lockout lifts ----------------------------------------

    def revoke(self, cti: bytes, exp: float, *, at: float) -> None:
        """Add ``cti`` until ``exp`` (an existing entry's expiry never shortens)."""
        ...

    def revoked(self) -> list[tuple[bytes, float]]:
        """``(cti, exp)``, soonest expiry first."""
        ...

    def purge(self, now: float, retention: float) -> int:
        """Drop revocations expired before ``now`` and change-log rows older
        than ``retention`` seconds (never the newest); how many revocations."""
        ...

    def lift_bans(self, address: str | None, identity: bytes | None, *, at: float) -> int:
        """Log an operator's lift of lockout bans; returns its change stamp."""
        ...

    # --- change log -------------------------------------------------------------

    def change_stamp(self) -> int:
        """A number that grows with every committed change, by any process."""
        ...

    def changes_since(self, stamp: int) -> Changes:
        """The changes after ``stamp``; the returned stamp is the last change
        reported, so passing it back never skips one."""
        ...

    # --- operators' audit trail -------------------------------------------------

    def record_action(
        self, at: float, operator: str, action: str, target: str | None, outcome: str, detail: str
    ) -> int:
        """Append one audit record (``detail``: JSON text); its sequence number."""
        ...

    def search_actions(self, query: ActionQuery = ALL_ACTIONS) -> list[OperatorAction]:
        """The records ``query`` matches, oldest first."""
        ...

    # --- the AS key set ---------------------------------------------------------

    def as_keys(self) -> list[KeyRecord]:
        """Every AS key (retired ones too), oldest first."""
        ...

    def import_as_keys(self, records: Sequence[KeyRecord], *, at: float) -> bool:
        """Store ``records`` as the key set if the store holds no key yet (one
        transaction, one ``keys`` change); False, storing nothing, if it does."""
        ...

    def rotate_as_key(self, record: KeyRecord, *, at: float) -> None:
        """Make ``record`` (status ``current``) its kind's current key; the
        previous current one becomes ``active``. One transaction, serialised
        with every other writer, so two rotations never leave two current
        keys; one ``keys`` change. :class:`KeystoreError` if the kid is taken."""
        ...

    def retire_as_key(self, kid: bytes, *, at: float) -> KeyRecord:
        """Mark a non-current key retired (``at``); the record as stored.
        :class:`UnknownKid` if there is none, :class:`KeystoreError` if it is
        current; an already retired key is returned unchanged."""
        ...


def redact(location: str) -> str:
    """``location`` without a URL's password, for messages."""
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(location: str | Path, *, create: bool = True) -> RegistryStore:
    """The store at ``location``: a ``postgresql://`` URL
    (:class:`gateway.registry.postgres.PostgresStore`) or a SQLite file path
    (:class:`gateway.registry.sqlite.SqliteStore`)."""
    if isinstance(location, str) and location.startswith(("postgresql://", "postgres://")):
        from gateway.registry.postgres import PostgresStore

        return PostgresStore(location, create=create)
    from gateway.registry.sqlite import SqliteStore

    return SqliteStore(location, create=create)


__all__ = [
    "ACTION_COLUMNS",
    "ALL_ACTIONS",
    "CLIENT_COLUMNS",
    "CLIENT_FIELDS",
    "KEYS_CHANGE",
    "KEY_COLUMNS",
    "NO_CUT",
    "TRL_CHANGE",
    "ActionQuery",
    "Changes",
    "ClientRecord",
    "KeyRecord",
    "OperatorAction",
    "RegistryStore",
    "assemble_changes",
    "client_record",
    "client_row",
    "client_update",
    "key_record",
    "key_row",
    "open_store",
    "operator_actions",
    "redact",
    "retire_key_in",
    "rotate_key_in",
]
