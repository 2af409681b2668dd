"""The client registry: devices (client id, PSK, allowed scope, audiences,
optional public key) and the list of revoked token ids, in SQLite (WAL mode).

* Scopes are stored in the text form given (``"/temp:GET /cfg:GET,PUT"``,
  :mod:`tokens.aif`), after checking that they parse.
* PSKs are sealed at rest under the master key (:mod:`gateway.registry.masterkey`,
  AES-GCM, random nonce per record, the client id as associated data), so the
  database file alone reveals no PSK and a sealed PSK copied onto another
  client's row does not open. A check value sealed at creation makes a wrong
  master key fail at open, with a clear message.
* Every write is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``): a failure
  or crash in the middle leaves the previous record intact.
* Every write appends to a change log whose highest sequence number is the
  *change stamp*. Worker processes poll it (``poll_interval``, default 0.5 s)
  to drop cached PSKs and revocations, and :meth:`Registry.changes_since`
  tells the server which clients changed so it can end their DTLS sessions.
  Each client row also has a ``generation`` that moves on every change.
* :meth:`Registry.psk_for` (the DTLS PSK callback, RFC 4279 §2 / RFC 9202
  §3.1) answers from an in-memory cache; :meth:`Registry.is_revoked` from an
  in-memory set. Both are refreshed from the change log.

Limits: PSKs of 1..64 bytes (what the gateway's DTLS engine takes, RFC 4279
§5.3). Generated PSKs are 32 random bytes (256 bits), or with ``printable``
43 characters of the base64url alphabet (258 bits) so that libcoap's
``coap-client -k`` (text only) can use them. Client ids are at most 32 bytes:
the id is the token's ``sub`` and the notes for device makers bound the size
of a token by it (RFC 9202 access tokens as identities are not client ids).

The API is synchronous (calls take microseconds); an ``RLock`` guards the one
connection so the server may also call it from a thread.
"""

from __future__ import annotations

import builtins
import functools
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.dtls import MAX_PSK_LENGTH
from gateway.errors import (
    ClientExists,
    ClientNotFound,
    CorruptRecord,
    InvalidArgument,
    MasterKeyError,
    RegistryError,
)
from gateway.registry.masterkey import MasterKey, load_master_key
from tokens.aif import Scope
from tokens.errors import TokenError
from tokens.keys import key_from_cose
from tokens.params import KeyParam, KeyType

SCHEMA_VERSION = 1
#: Longest client id: it is the tokens' ``sub`` claim, and the device notes
#: bound a token's size with it.
MAX_CLIENT_ID_LEN = 32
#: Longest PSK the DTLS engine takes (RFC 4279 §5.3: up to 64 bytes).
MAX_PSK_LEN = MAX_PSK_LENGTH
#: Bytes of a generated PSK (256 bits).
GENERATED_PSK_BYTES = 32
#: Characters of a generated printable PSK (base64url alphabet, 6 bits each:
#: 258 bits), for libcoap's ``-k``, which takes text only.
GENERATED_PSK_CHARS = 43
_PSK_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+\-]*")
_KEY_CHECK = b"acegw registry key check"
_KEY_CHECK_AAD = b"acegw:key-check"
#: Change-log rows older than this are pruned by :meth:`Registry.purge_expired`.
CHANGELOG_RETENTION = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    client_id     TEXT PRIMARY KEY,
    psk           BLOB NOT NULL,              -- sealed under the master key
    scope         TEXT NOT NULL,              -- allowed scope, text form as given
    default_scope TEXT,
    audiences     TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    public_key    BLOB,                       -- COSE_Key (public) or NULL
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL,
    rotated_at    REAL,
    generation    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
    cti BLOB PRIMARY KEY,
    exp REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_exp ON revoked (exp);
CREATE TABLE IF NOT EXISTS changelog (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    client_id TEXT,
    at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS client_cutoffs (
    client_id TEXT PRIMARY KEY,
    at        REAL NOT NULL     -- last disable or delete: older tokens stay refused
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ban_lifts (
    seq      INTEGER PRIMARY KEY,  -- the changelog row of the lift ('lift')
    address  TEXT,                 -- NULL: any address
    identity BLOB                  -- NULL: any identity
);
"""

_INSERT = f"INSERT INTO clients VALUES ({', '.join('?' * 10)}) ON CONFLICT (client_id) DO NOTHING"
_COLUMNS = (
    "client_id, scope, default_scope, audiences, public_key, enabled, created_at, "
    "rotated_at, generation"
)


def generate_psk(*, printable: bool = False, size: int = GENERATED_PSK_BYTES) -> bytes:
    """A fresh PSK from ``secrets``: ``size`` random bytes, or with
    ``printable`` :data:`GENERATED_PSK_CHARS` characters drawn uniformly from
    the base64url alphabet (RFC 4648 §5)."""
    if printable:
        return "".join(secrets.choice(_PSK_ALPHABET) for _ in range(GENERATED_PSK_CHARS)).encode()
    if not 16 <= size <= MAX_PSK_LEN:
        raise InvalidArgument(f"generated PSKs are 16..{MAX_PSK_LEN} bytes")
    return secrets.token_bytes(size)


def check_client_id(client_id: str) -> str:
    """Client ids are 1..32 bytes of ``[A-Za-z0-9._:@+-]``, not starting with
    punctuation (they are DTLS PSK identities, RFC 4279 §5.1, and appear in
    logs and CSV files)."""
    if (
        not isinstance(client_id, str)
        or len(client_id) > MAX_CLIENT_ID_LEN
        or not _CLIENT_ID.fullmatch(client_id)
    ):
        raise InvalidArgument(
            f"client id must be 1..{MAX_CLIENT_ID_LEN} characters of A-Z a-z 0-9 . _ : @ + - "
            "starting with a letter or digit"
        )
    return client_id


def _check_psk(psk: bytes) -> bytes:
    if not isinstance(psk, bytes) or not 1 <= len(psk) <= MAX_PSK_LEN:
        raise InvalidArgument(f"PSK must be 1..{MAX_PSK_LEN} bytes (RFC 4279 §5.3)")
    return psk


def _check_public_key(data: bytes | None) -> bytes | None:
    if data is None:
        return None
    try:
        key = key_from_cose(data)
        m = key.to_cose(include_private=True)
    except TokenError as exc:
        raise InvalidArgument(f"public key is not a usable COSE_Key: {exc.description}") from None
    if key.kty == KeyType.SYMMETRIC or int(KeyParam.D) in m:
        raise InvalidArgument("public key must be an EC2 or OKP COSE_Key without private part")
    return bytes(data)


def _check_scope(scope: str, what: str = "scope") -> str:
    """A scope is stored as the text given, after checking that it parses as
    the AIF text form (RFC 9237 §2; :meth:`tokens.aif.Scope.parse`)."""
    if not isinstance(scope, str) or not scope.strip():
        raise InvalidArgument(f"{what} must be a non-empty string")
    problem = _scope_problem(scope)
    if problem:
        raise InvalidArgument(f"{what}: {problem}")
    return scope


@functools.lru_cache(maxsize=256)
def _scope_problem(scope: str) -> str | None:
    try:
        Scope.parse(scope)
    except TokenError as exc:
        return exc.description
    return None


def _psk_aad(client_id: str) -> bytes:
    return b"acegw:psk:" + client_id.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Client:
    """A registered client, without its PSK (see :meth:`Registry.psk`)."""

    client_id: str
    scope: str
    default_scope: str | None
    audiences: tuple[str, ...]
    public_key: bytes | None
    enabled: bool
    created_at: float
    rotated_at: float | None
    generation: int


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """:meth:`Registry.status`: ``exists`` false for a deleted client whose
    cut-off is kept; ``cutoff`` the epoch time of its last disable or delete."""

    exists: bool
    enabled: bool
    cutoff: float | None

    def refuses(self, iat: float | None) -> bool:
        """Whether a token issued at ``iat`` to this client is refused: not
        enabled, or issued at or before the cut-off (no ``iat``: refused once
        there is a cut-off)."""
        if not self.enabled:
            return True
        return self.cutoff is not None and (iat is None or iat <= self.cutoff)


#: Change kinds after which a client's live sessions may go on.
_NO_CUT = frozenset({"add", "enable"})


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed after a change stamp (:meth:`Registry.changes_since`).

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
    #: None meaning any (``acegw bans lift``).
    lifts: tuple[tuple[str | None, bytes | None], ...] = ()
    #: Every change in order: ``(kind, client_id)`` (``disable``, ``revoke``, ...).
    kinds: tuple[tuple[str, str | None], ...] = ()


class Registry:
    """The client registry on one SQLite file. Open one per process (after
    any fork: a SQLite connection must not cross a fork)."""

    def __init__(
        self,
        path: str | Path,
        master_key: MasterKey,
        *,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        cache_size: int = 100_000,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self._key = master_key
        self._clock = clock
        self._monotonic = monotonic
        self._poll_interval = poll_interval
        self._cache_size = cache_size
        self._lock = threading.RLock()
        self._psk_cache: dict[str, bytes | None] = {}
        self._status: dict[str, ClientStatus | None] = {}
        self._revoked: set[bytes] | None = None
        self._seen_stamp = 0
        self._last_poll = -float("inf")
        #: Bumped whenever a client or the revocation list may have changed
        #: (here or, once polled, in another process): callers may cache
        #: answers of :meth:`psk_for` / :meth:`is_revoked` per version.
        self.version = 0
        if not self.path.exists():
            if not create:
                raise RegistryError(
                    f"registry {self.path} does not exist (run 'acegw init', or check "
                    "registry.path)"
                )
            self._create_file()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open registry {self.path}: {exc}") from None
        try:
            self._setup()
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def from_config(
        cls, config: Config, *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> Registry:
        """Open the registry named by ``config.registry`` with the master key
        from ``ACEGW_MASTER_KEY`` or ``config.registry.master_key_file``."""
        key = load_master_key(config.registry.master_key_file, env=env)
        return cls(config.registry.path, key, poll_interval=config.registry.poll_interval, **kw)

    def _create_file(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            os.close(fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RegistryError(f"cannot create registry {self.path}: {exc.strerror}") from None

    def _setup(self) -> None:
        try:
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RegistryError(f"registry {self.path}: cannot switch to WAL mode ({mode})")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            with self._write() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                version = self._meta(db, "schema_version")
                if version is None:
                    db.execute(
                        "INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                    )
                elif int(version) != SCHEMA_VERSION:
                    raise RegistryError(
                        f"registry {self.path} has schema version {int(version)}; "
                        f"this acegw uses {SCHEMA_VERSION}"
                    )
                check = self._meta(db, "key_check")
                if check is None:
                    db.execute(
                        "INSERT INTO meta VALUES ('key_check', ?)",
                        (self._key.seal(_KEY_CHECK, _KEY_CHECK_AAD),),
                    )
                else:
                    try:
                        ok = self._key.open(bytes(check), _KEY_CHECK_AAD) == _KEY_CHECK
                    except CorruptRecord:
                        ok = False
                    if not ok:
                        raise MasterKeyError(
                            f"the master key ({self._key.source}) is not the key registry "
                            f"{self.path} was created with"
                        )
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not a usable acegw registry: {exc}") from None
        self._seen_stamp = self.change_stamp()

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str) -> Any:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Registry {self.path}>"

    # --- transactions --------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed if the block finishes, rolled back
        if it raises (SQLite atomic commit, https://sqlite.org/atomiccommit.html)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise RegistryError(f"registry {self.path} is busy: {exc}") from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise RegistryError(f"registry {self.path}: {exc}") from None
                raise

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise RegistryError(f"registry {self.path}: {exc}") from None

    def _log_change(self, db: sqlite3.Connection, kind: str, client_id: str | None) -> None:
        db.execute(
            "INSERT INTO changelog (kind, client_id, at) VALUES (?, ?, ?)",
            (kind, client_id, self._clock()),
        )

    def _modify(
        self, client_id: str, kind: str, sql: str, args: tuple[Any, ...], *, cut: bool = False
    ) -> None:
        """Update one existing client row, bump its generation, log the change;
        ``cut``: also record the token cut-off (:meth:`status`)."""
        with self._write() as db:
            cur = db.execute(
                f"UPDATE clients SET {sql}, generation = generation + 1 WHERE client_id = ?",
                (*args, client_id),
            )
            if cur.rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            if cut:
                self._cut(db, client_id)
            self._log_change(db, kind, client_id)
        self._forget(client_id)

    def _cut(self, db: sqlite3.Connection, client_id: str) -> None:
        db.execute(
            "INSERT INTO client_cutoffs VALUES (?, ?) "
            "ON CONFLICT (client_id) DO UPDATE SET at = excluded.at",
            (client_id, self._clock()),
        )

    def _forget(self, client_id: str) -> None:
        self._psk_cache.pop(client_id, None)
        self._status.pop(client_id, None)
        self.version += 1

    def status(self, client_id: str) -> ClientStatus | None:
        """Whether the client exists and is enabled, and its token cut-off:
        the time of its last disable or delete. Tokens issued to it at or
        before the cut-off (``iat``) stay refused after an enable, or after
        the id is registered again ("disable means disable"). From memory,
        refreshed with the change log like :meth:`psk_for`."""
        self.current_version()
        if client_id in self._status:
            return self._status[client_id]
        rows = self._read(
            "SELECT (SELECT enabled FROM clients WHERE client_id = ?), "
            "(SELECT at FROM client_cutoffs WHERE client_id = ?)",
            (client_id, client_id),
        )
        enabled, cutoff = rows[0]
        found = (
            None
            if enabled is None and cutoff is None
            else ClientStatus(exists=enabled is not None, enabled=bool(enabled), cutoff=cutoff)
        )
        if len(self._status) >= self._cache_size:
            self._status.clear()
        self._status[client_id] = found
        return found

    # --- administration -------------------------------------------------------

    def add(
        self,
        client_id: str,
        *,
        scope: str,
        psk: bytes | None = None,
        default_scope: str | None = None,
        printable: bool = False,
        audiences: tuple[str, ...] | list[str] = (),
        public_key: bytes | None = None,
        enabled: bool = True,
    ) -> bytes:
        """Register a client; returns its PSK (generated when ``psk`` is None).
        Raises :class:`ClientExists` if the id is taken."""
        check_client_id(client_id)
        psk = generate_psk(printable=printable) if psk is None else _check_psk(psk)
        row = self._row(client_id, psk, scope, default_scope, audiences, public_key, enabled)
        with self._write() as db:
            if db.execute(_INSERT, row).rowcount != 1:
                raise ClientExists(f"client {client_id!r} already exists")
            self._log_change(db, "add", client_id)
        self._forget(client_id)
        return psk

    def _row(
        self,
        client_id: str,
        psk: bytes,
        scope: str,
        default_scope: str | None,
        audiences: tuple[str, ...] | list[str],
        public_key: bytes | None,
        enabled: bool,
    ) -> tuple[Any, ...]:
        _check_scope(scope)
        if default_scope is not None:
            _check_scope(default_scope, "default scope")
        auds = list(audiences)
        if not all(isinstance(a, str) and a for a in auds):
            raise InvalidArgument("audiences must be non-empty strings")
        return (
            client_id,
            self._key.seal(psk, _psk_aad(client_id)),
            scope,
            default_scope,
            json.dumps(auds),
            _check_public_key(public_key),
            int(enabled),
            self._clock(),
            None,
            0,
        )

    def bulk_add(
        self,
        count: int,
        prefix: str,
        scope: str,
        *,
        audiences: tuple[str, ...] | list[str] = (),
        default_scope: str | None = None,
        psk_bytes: int = GENERATED_PSK_BYTES,
    ) -> list[tuple[str, bytes]]:
        """Register ``count`` clients ``<prefix><number>`` with generated PSKs
        in one transaction (all or none). Numbers continue after the highest
        existing ``<prefix><digits>`` id and are zero-padded to at least 4
        digits; PSKs of ``psk_bytes`` random bytes. Returns
        ``[(client_id, psk), ...]``."""
        if not isinstance(count, int) or not 1 <= count <= 1_000_000:
            raise InvalidArgument("count must be between 1 and 1000000")
        start = 0
        for (cid,) in self._read(
            "SELECT client_id FROM clients WHERE substr(client_id, 1, ?) = ?",
            (len(prefix), prefix),
        ):
            suffix = cid[len(prefix) :]
            if suffix.isdigit():
                start = max(start, int(suffix) + 1)
        width = max(4, len(str(start + count - 1)))
        ids = [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]
        check_client_id(ids[0])
        check_client_id(ids[-1])
        out = [(cid, generate_psk(size=psk_bytes)) for cid in ids]
        rows = [
            self._row(cid, psk, scope, default_scope, audiences, None, True) for cid, psk in out
        ]
        with self._write() as db:
            if db.executemany(_INSERT, rows).rowcount != len(rows):
                raise ClientExists(f"some of the ids {ids[0]}..{ids[-1]} already exist")
            now = self._clock()
            db.executemany(
                "INSERT INTO changelog (kind, client_id, at) VALUES ('add', ?, ?)",
                [(cid, now) for cid in ids],
            )
        for cid in ids:
            self._forget(cid)
        return out

    def get(self, client_id: str) -> Client:
        """The client record; :class:`ClientNotFound` if there is none."""
        rows = self._read(f"SELECT {_COLUMNS} FROM clients WHERE client_id = ?", (client_id,))
        if not rows:
            raise ClientNotFound(f"no client {client_id!r}")
        return self._client(rows[0])

    def list(self) -> list[Client]:
        """All clients, ordered by id."""
        return [
            self._client(r)
            for r in self._read(f"SELECT {_COLUMNS} FROM clients ORDER BY client_id")
        ]

    def count(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM clients")[0][0])

    @staticmethod
    def _client(r: Any) -> Client:
        return Client(
            client_id=r[0],
            scope=r[1],
            default_scope=r[2],
            audiences=tuple(json.loads(r[3])),
            public_key=None if r[4] is None else bytes(r[4]),
            enabled=bool(r[5]),
            created_at=r[6],
            rotated_at=r[7],
            generation=r[8],
        )

    def psk(self, client_id: str) -> bytes:
        """The client's PSK, enabled or not (admin use: ``clients show
        --show-psk``). :class:`CorruptRecord` if the sealed PSK does not open."""
        rows = self._read("SELECT psk FROM clients WHERE client_id = ?", (client_id,))
        if not rows:
            raise ClientNotFound(f"no client {client_id!r}")
        return self._open_psk(client_id, rows[0][0])

    def _open_psk(self, client_id: str, sealed: bytes) -> bytes:
        try:
            return self._key.open(bytes(sealed), _psk_aad(client_id))
        except CorruptRecord:
            raise CorruptRecord(
                f"the stored PSK of client {client_id!r} does not authenticate "
                "(record altered or copied from another client)"
            ) from None

    def update(
        self,
        client_id: str,
        *,
        scope: str | None = None,
        default_scope: str | None = None,
        audiences: tuple[str, ...] | builtins.list[str] | None = None,
        public_key: bytes | None = None,
    ) -> Client:
        """Change the given fields (``None`` = keep) of a client."""
        sets: list[str] = []
        args: list[Any] = []
        if scope is not None:
            sets.append("scope = ?")
            args.append(_check_scope(scope))
        if default_scope is not None:
            sets.append("default_scope = ?")
            args.append(_check_scope(default_scope, "default scope"))
        if audiences is not None:
            if not all(isinstance(a, str) and a for a in audiences):
                raise InvalidArgument("audiences must be non-empty strings")
            sets.append("audiences = ?")
            args.append(json.dumps(list(audiences)))
        if public_key is not None:
            sets.append("public_key = ?")
            args.append(_check_public_key(public_key))
        if not sets:
            raise InvalidArgument("nothing to update")
        self._modify(client_id, "update", ", ".join(sets), tuple(args))
        return self.get(client_id)

    def disable(self, client_id: str) -> None:
        """Refuse the client's handshakes and token requests from now on, and
        its tokens issued until now even after an enable (:meth:`status`)."""
        self._modify(client_id, "disable", "enabled = 0", (), cut=True)

    def enable(self, client_id: str) -> None:
        self._modify(client_id, "enable", "enabled = 1", ())

    def rotate_psk(
        self, client_id: str, psk: bytes | None = None, *, printable: bool = False
    ) -> bytes:
        """Replace the client's PSK (generated when ``psk`` is None); returns it."""
        psk = generate_psk(printable=printable) if psk is None else _check_psk(psk)
        sealed = self._key.seal(psk, _psk_aad(client_id))
        self._modify(client_id, "rotate", "psk = ?, rotated_at = ?", (sealed, self._clock()))
        return psk

    def delete(self, client_id: str) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            self._cut(db, client_id)
            self._log_change(db, "delete", client_id)
        self._forget(client_id)

    # --- hot path ---------------------------------------------------------------

    def psk_for(self, client_id: str | bytes) -> bytes | None:
        """The PSK for a DTLS PSK identity (RFC 4279 §2), or ``None`` if the
        client is unknown or disabled. Served from memory; changes made by
        other processes are seen within ``poll_interval``. Raises
        :class:`CorruptRecord` if the stored PSK does not authenticate."""
        if isinstance(client_id, bytes):
            try:
                client_id = client_id.decode("utf-8")
            except UnicodeDecodeError:
                return None
        self.current_version()  # picks up other processes' changes when due
        try:
            return self._psk_cache[client_id]
        except KeyError:
            pass
        if len(client_id) > MAX_CLIENT_ID_LEN:
            return None
        rows = self._read("SELECT psk, enabled FROM clients WHERE client_id = ?", (client_id,))
        psk = self._open_psk(client_id, rows[0][0]) if rows and rows[0][1] else None
        if len(self._psk_cache) >= self._cache_size:
            self._psk_cache.clear()
        self._psk_cache[client_id] = psk
        return psk

    def generation(self, client_id: str) -> int | None:
        """The client's generation, or ``None`` if it does not exist (deleted)."""
        rows = self._read("SELECT generation FROM clients WHERE client_id = ?", (client_id,))
        return rows[0][0] if rows else None

    # --- revocation ------------------------------------------------------------------

    def revoke(self, cti: bytes, exp: float) -> None:
        """Add a token id (RFC 8392 §3.1.7 ``cti``) to the revocation list until
        ``exp`` (the token's expiry; after it the token is refused anyway)."""
        if not isinstance(cti, bytes) or not cti:
            raise InvalidArgument("cti must be non-empty bytes")
        with self._write() as db:
            db.execute(
                "INSERT INTO revoked VALUES (?, ?) ON CONFLICT (cti) "
                "DO UPDATE SET exp = max(exp, excluded.exp)",
                (cti, float(exp)),
            )
            self._log_change(db, "revoke", None)
        if self._revoked is not None:
            self._revoked.add(cti)
        self.version += 1

    def lift_bans(self, address: str | None = None, identity: bytes | None = None) -> int:
        """Record an operator's lift of lockout bans (``acegw bans lift``):
        every running worker lifts the matching bans when it next polls the
        change log. None matches anything. Returns the change stamp."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO changelog (kind, client_id, at) VALUES ('lift', NULL, ?)",
                (self._clock(),),
            )
            seq = int(cur.lastrowid or 0)
            db.execute("INSERT INTO ban_lifts VALUES (?, ?, ?)", (seq, address, identity))
        return seq

    def is_revoked(self, cti: bytes) -> bool:
        """Whether the token id is on the revocation list (from memory)."""
        self.current_version()  # picks up other processes' changes when due
        if self._revoked is None:
            self._revoked = {bytes(r[0]) for r in self._read("SELECT cti FROM revoked")}
        return cti in self._revoked

    def revoked(self) -> builtins.list[tuple[bytes, float]]:
        """The revocation list as ``(cti, exp)``, soonest expiry first."""
        return [(bytes(c), e) for c, e in self._read("SELECT cti, exp FROM revoked ORDER BY exp")]

    def purge_expired(self, now: float) -> int:
        """Drop revocations whose ``exp`` is before ``now`` and change-log rows
        older than :data:`CHANGELOG_RETENTION`; returns how many revocations
        were dropped."""
        with self._write() as db:
            n = db.execute("DELETE FROM revoked WHERE exp < ?", (now,)).rowcount
            cutoff = now - CHANGELOG_RETENTION
            row = db.execute(
                "SELECT MAX(seq) FROM changelog WHERE at < ? "
                "AND seq < (SELECT MAX(seq) FROM changelog)",
                (cutoff,),
            ).fetchone()
            if row[0] is not None:
                db.execute("DELETE FROM changelog WHERE seq <= ?", (row[0],))
                db.execute("DELETE FROM ban_lifts WHERE seq <= ?", (row[0],))
                db.execute(
                    "INSERT INTO meta VALUES ('pruned_through', ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (row[0],),
                )
            if n:
                self._log_change(db, "purge", None)
        self._revoked = None
        self.version += 1
        return n

    # --- change tracking -----------------------------------------------------------

    def change_stamp(self) -> int:
        """A number that grows with every committed change, by any process."""
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'")
        return int(rows[0][0]) if rows else 0

    def changes_since(self, stamp: int) -> Changes:
        """Clients touched and whether the revocation list changed after
        ``stamp`` (from :meth:`change_stamp` or a previous :class:`Changes`).

        The returned stamp is the last change *reported* (never a later one
        committed meanwhile), so passing it back never skips a change."""
        rows = self._read(
            "SELECT seq, kind, client_id FROM changelog WHERE seq > ? ORDER BY seq", (stamp,)
        )
        pruned = self._read("SELECT value FROM meta WHERE name = 'pruned_through'")
        pruned_through = int(pruned[0][0]) if pruned else 0
        complete = pruned_through <= stamp
        new_stamp = max([stamp, *(r[0] for r in rows), 0 if complete else pruned_through])
        lifts: tuple[tuple[str | None, bytes | None], ...] = ()
        if any(r[1] == "lift" for r in rows):
            lifts = tuple(
                (a, None if i is None else bytes(i))
                for a, i in self._read(
                    "SELECT address, identity FROM ban_lifts WHERE seq > ? AND seq <= ? "
                    "ORDER BY seq",
                    (stamp, new_stamp),
                )
            )
        return Changes(
            stamp=new_stamp,
            client_ids=frozenset(r[2] for r in rows if r[2] is not None),
            revocations=any(r[1] in ("revoke", "purge") for r in rows),
            complete=complete,
            cut_off=frozenset(r[2] for r in rows if r[2] is not None and r[1] not in _NO_CUT),
            lifts=lifts,
            kinds=tuple((r[1], r[2]) for r in rows),
        )

    def refresh(self) -> Changes:
        """Apply changes made by other processes to the caches now."""
        with self._lock:
            changes = self.changes_since(self._seen_stamp)
            if not changes.complete:
                self._psk_cache.clear()
                self._status.clear()
                self._revoked = None
                self.version += 1
            else:
                for cid in changes.client_ids:
                    self._psk_cache.pop(cid, None)
                    self._status.pop(cid, None)
                if changes.revocations:
                    self._revoked = None
                if changes.client_ids or changes.revocations:
                    self.version += 1
            self._seen_stamp = changes.stamp
            self._last_poll = self._monotonic()
        return changes

    def current_version(self) -> int:
        """:attr:`version` after polling for other processes' changes when the
        poll interval has passed (the per-request freshness check)."""
        if self._monotonic() - self._last_poll >= self._poll_interval:
            self.refresh()
        return self.version
