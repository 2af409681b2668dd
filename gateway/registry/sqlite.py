"""The registry store on one SQLite file (WAL mode): clients with sealed
PSKs, revocations, token cut-offs, lockout lifts, the change log, the
operators' audit trail and an AS key table
(:class:`gateway.registry.store.RegistryStore`).

The schema is versioned like PostgreSQL's (:data:`MIGRATIONS`, recorded in
``schema_migrations``) and brought up to date when the file opens, in one
``BEGIN IMMEDIATE`` transaction, so processes opening the file together
apply each step once. A file from before versioned steps (``meta``
``schema_version`` 1, no ``schema_migrations``) is version 1; a file of a
newer acegw is refused. ``meta`` ``schema_version`` follows the newest step,
so an acegw from before versioned steps refuses a newer file.

Every write is one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``) that also
appends to the change log, so a failure or crash in the middle leaves the
previous record intact and every process sharing the file sees the change
through :meth:`SqliteStore.changes_since`. An ``RLock`` guards the one
connection; open one store per process, after any fork.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.errors import ClientExists, ClientNotFound, RegistryError
from gateway.registry.migrations import Migration
from gateway.registry.store import (
    ALL_ACTIONS,
    CLIENT_COLUMNS,
    KEY_COLUMNS,
    KEYS_CHANGE,
    ActionQuery,
    Changes,
    ClientRecord,
    KeyRecord,
    OperatorAction,
    assemble_changes,
    client_record,
    client_row,
    client_update,
    key_record,
    key_row,
    operator_actions,
    retire_key_in,
    rotate_key_in,
)

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
CREATE TABLE IF NOT EXISTS operator_audit (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at       REAL NOT NULL,
    operator TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT,
    outcome  TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS operator_audit_target ON operator_audit (target, at);
"""

#: The versioned schema steps (:class:`gateway.registry.migrations.Migration`).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "clients, revocations, change log, cut-offs, lockout lifts, operator audit",
        tuple(st.strip() for st in _SCHEMA.split(";") if st.strip()),
    ),
    Migration(
        2,
        "AS keys, private parts sealed under the master key",
        (
            """CREATE TABLE as_keys (
                kid        BLOB PRIMARY KEY,
                kind       TEXT NOT NULL CHECK (kind IN ('signing', 'as_rs')),
                alg        TEXT NOT NULL,
                status     TEXT NOT NULL CHECK (status IN ('current', 'active', 'retired')),
                created_at REAL NOT NULL,
                retired_at REAL,
                sealed     BLOB NOT NULL
            ) WITHOUT ROWID""",
            "CREATE UNIQUE INDEX as_keys_current ON as_keys (kind) WHERE status = 'current'",
        ),
    ),
)
#: The schema version this acegw writes.
SCHEMA_VERSION = MIGRATIONS[-1].version

_INSERT = (
    f"INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ({', '.join('?' * 10)}) "
    "ON CONFLICT (client_id) DO NOTHING"
)


class SqliteStore:
    """:class:`gateway.registry.store.RegistryStore` on one SQLite file."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._lock = threading.RLock()
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
                self._migrate(db)
        except sqlite3.DatabaseError as exc:
            raise RegistryError(f"{self.path} is not a usable acegw registry: {exc}") from None

    def schema_version(self) -> int:
        """The newest schema step applied."""
        rows = self._read("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(rows[0][0])

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Apply the missing steps of :data:`MIGRATIONS` (inside the caller's
        write transaction)."""
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        version = int(
            db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
        )
        has_meta = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
        recorded = self._meta(db, "schema_version") if has_meta else None
        if version == 0 and recorded is not None:
            if int(recorded) != 1:
                raise RegistryError(
                    f"registry {self.path} has schema version {int(recorded)}; "
                    f"this acegw knows up to {SCHEMA_VERSION}"
                )
            version = 1  # written before versioned steps: the first step's tables
            db.execute(
                "INSERT INTO schema_migrations VALUES (1, ?, ?)", (MIGRATIONS[0].name, time.time())
            )
        if version > SCHEMA_VERSION:
            raise RegistryError(
                f"registry {self.path} has schema version {version}; "
                f"this acegw knows up to {SCHEMA_VERSION}"
            )
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            for statement in step.statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                (step.version, step.name, time.time()),
            )
        db.execute(
            "INSERT INTO meta VALUES ('schema_version', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(max(version, SCHEMA_VERSION)),),
        )

    @staticmethod
    def _meta(db: sqlite3.Connection, name: str) -> Any:
        row = db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def key_check(self, seal: Any) -> bytes:
        with self._write() as db:
            check = self._meta(db, "key_check")
            if check is None:
                check = seal()
                db.execute("INSERT INTO meta VALUES ('key_check', ?)", (check,))
        return bytes(check)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"

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

    @staticmethod
    def _log_change(db: sqlite3.Connection, kind: str, client_id: str | None, at: float) -> int:
        cur = db.execute(
            "INSERT INTO changelog (kind, client_id, at) VALUES (?, ?, ?)", (kind, client_id, at)
        )
        return int(cur.lastrowid or 0)

    @staticmethod
    def _cut(db: sqlite3.Connection, client_id: str, at: float) -> None:
        db.execute(
            "INSERT INTO client_cutoffs VALUES (?, ?) "
            "ON CONFLICT (client_id) DO UPDATE SET at = excluded.at",
            (client_id, at),
        )

    # --- clients ----------------------------------------------------------------

    def add_clients(self, records: Sequence[ClientRecord]) -> None:
        if not records:
            return
        with self._write() as db:
            if db.executemany(_INSERT, [client_row(r) for r in records]).rowcount != len(records):
                if len(records) == 1:
                    raise ClientExists(f"client {records[0].client_id!r} already exists")
                raise ClientExists(
                    f"some of the ids {records[0].client_id}..{records[-1].client_id} already exist"
                )
            db.executemany(
                "INSERT INTO changelog (kind, client_id, at) VALUES ('add', ?, ?)",
                [(r.client_id, r.created_at) for r in records],
            )

    def update_client(
        self, client_id: str, kind: str, fields: Mapping[str, Any], *, at: float, cut: bool
    ) -> None:
        sets, values = client_update(fields, "?")
        with self._write() as db:
            cur = db.execute(
                f"UPDATE clients SET {sets}, generation = generation + 1 WHERE client_id = ?",
                (*values, client_id),
            )
            if cur.rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            if cut:
                self._cut(db, client_id, at)
            self._log_change(db, kind, client_id, at)

    def delete_client(self, client_id: str, *, at: float) -> None:
        with self._write() as db:
            if db.execute("DELETE FROM clients WHERE client_id = ?", (client_id,)).rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            self._cut(db, client_id, at)
            self._log_change(db, "delete", client_id, at)

    def client(self, client_id: str) -> ClientRecord | None:
        rows = self._read(f"SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?", (client_id,))
        return client_record(rows[0]) if rows else None

    def clients(self, prefix: str | None = None) -> list[ClientRecord]:
        if prefix is None:
            rows = self._read(f"SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id")
        else:
            rows = self._read(
                f"SELECT {CLIENT_COLUMNS} FROM clients WHERE substr(client_id, 1, ?) = ? "
                "ORDER BY client_id",
                (len(prefix), prefix),
            )
        return [client_record(r) for r in rows]

    def count_clients(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM clients")[0][0])

    def cutoffs(self, client_ids: Iterable[str] | None = None) -> dict[str, float]:
        if client_ids is None:
            return dict(self._read("SELECT client_id, at FROM client_cutoffs"))
        out: dict[str, float] = {}
        for cid in client_ids:
            rows = self._read("SELECT at FROM client_cutoffs WHERE client_id = ?", (cid,))
            if rows:
                out[cid] = rows[0][0]
        return out

    # --- revocations and lockout lifts ----------------------------------------

    def revoke(self, cti: bytes, exp: float, *, at: float) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO revoked VALUES (?, ?) ON CONFLICT (cti) "
                "DO UPDATE SET exp = max(exp, excluded.exp)",
                (cti, float(exp)),
            )
            self._log_change(db, "revoke", None, at)

    def revoked(self) -> list[tuple[bytes, float]]:
        return [(bytes(c), e) for c, e in self._read("SELECT cti, exp FROM revoked ORDER BY exp")]

    def purge(self, now: float, retention: float) -> int:
        with self._write() as db:
            n = db.execute("DELETE FROM revoked WHERE exp < ?", (now,)).rowcount
            row = db.execute(
                "SELECT MAX(seq) FROM changelog WHERE at < ? "
                "AND seq < (SELECT MAX(seq) FROM changelog)",
                (now - retention,),
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
                self._log_change(db, "purge", None, now)
        return n

    def lift_bans(self, address: str | None, identity: bytes | None, *, at: float) -> int:
        with self._write() as db:
            seq = self._log_change(db, "lift", None, at)
            db.execute("INSERT INTO ban_lifts VALUES (?, ?, ?)", (seq, address, identity))
        return seq

    # --- change log -------------------------------------------------------------

    def change_stamp(self) -> int:
        rows = self._read("SELECT seq FROM sqlite_sequence WHERE name = 'changelog'")
        return int(rows[0][0]) if rows else 0

    def changes_since(self, stamp: int) -> Changes:
        rows = self._read(
            "SELECT seq, kind, client_id FROM changelog WHERE seq > ? ORDER BY seq", (stamp,)
        )
        pruned = self._read("SELECT value FROM meta WHERE name = 'pruned_through'")
        return assemble_changes(
            stamp,
            rows,
            int(pruned[0][0]) if pruned else 0,
            lambda after, through: self._read(
                "SELECT address, identity FROM ban_lifts WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, through),
            ),
        )

    # --- operators' audit trail -------------------------------------------------

    def record_action(
        self, at: float, operator: str, action: str, target: str | None, outcome: str, detail: str
    ) -> int:
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO operator_audit (at, operator, action, target, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (at, operator, action, target, outcome, detail),
            )
        return int(cur.lastrowid or 0)

    def search_actions(self, query: ActionQuery = ALL_ACTIONS) -> list[OperatorAction]:
        return operator_actions(self._read(*query.select("?")))

    # --- the AS key set -----------------------------------------------------------

    def as_keys(self) -> list[KeyRecord]:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM as_keys ORDER BY created_at, kid")
        return [key_record(r) for r in rows]

    def import_as_keys(self, records: Sequence[KeyRecord], *, at: float) -> bool:
        with self._write() as db:
            if db.execute("SELECT 1 FROM as_keys LIMIT 1").fetchone() is not None:
                return False
            db.executemany(
                f"INSERT INTO as_keys ({KEY_COLUMNS}) VALUES ({', '.join('?' * 7)})",
                [key_row(r) for r in records],
            )
            self._log_change(db, KEYS_CHANGE, None, at)
        return True

    def rotate_as_key(self, record: KeyRecord, *, at: float) -> None:
        with self._write() as db:
            rotate_key_in(db, record, "?")
            self._log_change(db, KEYS_CHANGE, None, at)

    def retire_as_key(self, kid: bytes, *, at: float) -> KeyRecord:
        with self._write() as db:
            record, changed = retire_key_in(db, kid, at, "?")
            if changed:
                self._log_change(db, KEYS_CHANGE, None, at)
        return record


__all__ = ["SCHEMA_VERSION", "SqliteStore"]
