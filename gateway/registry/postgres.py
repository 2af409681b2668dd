"""The registry store on PostgreSQL, shared by gateway instances on several
machines (:class:`gateway.registry.store.RegistryStore`).

psycopg 3 with its connection pool (docs/decisions.md). The schema is
versioned (:mod:`gateway.registry.migrations`) and brought up to date when
the store opens. Every write is one transaction that first takes one
transaction-scoped advisory lock: writes are rare (operator commands), and
serialising them makes the change log's sequence numbers commit in order,
so a reader's cursor (the change stamp) never passes a row that commits
later. Each change also sends ``NOTIFY acegw_registry`` (delivered at
commit, https://www.postgresql.org/docs/current/sql-notify.html), which
:class:`ChangeFeed` turns into a prompt refresh on every instance.

PSKs arrive sealed under the master key, as with SQLite; the URL's password
(better: ``PGPASSWORD`` or ``~/.pgpass``) never appears in a message.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from gateway.errors import ClientExists, ClientNotFound, RegistryError
from gateway.registry.migrations import LATEST, MIGRATIONS
from gateway.registry.store import (
    ALL_ACTIONS,
    CLIENT_COLUMNS,
    KEY_COLUMNS,
    KEYS_CHANGE,
    TRL_CHANGE,
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
    redact,
    retire_key_in,
    rotate_key_in,
)

log = logging.getLogger(__name__)

#: URL schemes naming a PostgreSQL registry.
SCHEMES = ("postgresql://", "postgres://")
#: The NOTIFY channel every change is announced on.
CHANNEL = "acegw_registry"
#: Advisory lock keys (any constant bigint the database does not use otherwise).
_MIGRATE_LOCK = 0x61636567_77_0001
_WRITE_LOCK = 0x61636567_77_0002
_INSERT = f"INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})"
_INSERT_KEY = f"INSERT INTO as_keys ({KEY_COLUMNS}) VALUES ({', '.join(['%s'] * 7)})"


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEMES)


def _clash(exc: pg_errors.UniqueViolation, location: str) -> RegistryError:
    """The error for a unique-key violation, by the table and constraint the
    server names (never by the values: its DETAIL line quotes them): a
    clash on ``clients`` is :class:`ClientExists`, any other names what
    clashed."""
    table, constraint = exc.diag.table_name, exc.diag.constraint_name
    if table == "clients":
        return ClientExists("a client id given already exists")
    where = f"table {table}" if table else "a table"
    key = f" (unique key {constraint})" if constraint else ""
    return RegistryError(
        f"registry database {location}: a row clashes with a stored one in {where}{key}"
    )


class PostgresStore:
    """:class:`gateway.registry.store.RegistryStore` on a PostgreSQL database.

    ``create``: apply pending migrations (``acegw init``/``serve``); without
    it a database that has no registry schema is an error. ``timeout``:
    seconds to wait for a connection before :class:`RegistryError`.
    """

    def __init__(
        self, url: str, *, create: bool = True, timeout: float = 5.0, max_size: int = 4
    ) -> None:
        self.url = url
        self.location = redact(url)
        self._timeout = timeout
        # one direct attempt first: a stopped server fails the command at
        # once with libpq's reason, not after the pool's retries
        try:
            psycopg.connect(url, connect_timeout=max(1, int(timeout))).close()
        except psycopg.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RegistryError(
                f"registry database {self.location} is unreachable ({reason})"
            ) from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout))},
            check=ConnectionPool.check_connection,
            open=False,
            name="acegw-registry",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout:
            self._pool.close()
            raise RegistryError(f"cannot reach registry database {self.location}") from None
        try:
            self._migrate(create)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"<PostgresStore {self.location}>"

    def close(self) -> None:
        self._pool.close()

    def change_feed(
        self, on_change: Callable[[], None], on_state: Callable[[bool], None] = lambda up: None
    ) -> ChangeFeed:
        """A :class:`ChangeFeed` on this database (not started)."""
        return ChangeFeed(self.url, on_change, on_state=on_state)

    # --- connections and transactions -------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise RegistryError(f"registry database {self.location} is unreachable") from None
        except pg_errors.UniqueViolation as exc:
            raise _clash(exc, self.location) from None
        except psycopg.Error as exc:
            # a server error: its primary message only (its DETAIL line may quote
            # row values); a client-side one (connection lost): libpq's first line
            text = str(exc).strip()
            reason = (
                exc.diag.message_primary
                if exc.sqlstate
                else (text.splitlines()[0] if text else None)
            ) or type(exc).__name__
            raise RegistryError(f"registry database {self.location}: {reason}") from None

    @contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction, serialised with every other writer."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
            yield conn

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._connection() as conn:
            return conn.execute(sql, args).fetchall()

    @staticmethod
    def _log_change(conn: psycopg.Connection[Any], kind: str, client_id: str | None, at: float):
        row = conn.execute(
            "INSERT INTO changelog (kind, client_id, at) VALUES (%s, %s, %s) RETURNING seq",
            (kind, client_id, at),
        ).fetchone()
        seq = int(row[0]) if row else 0
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(seq)))
        return seq

    @staticmethod
    def _cut(conn: psycopg.Connection[Any], client_id: str, at: float) -> None:
        conn.execute(
            "INSERT INTO client_cutoffs VALUES (%s, %s) "
            "ON CONFLICT (client_id) DO UPDATE SET at = excluded.at",
            (client_id, at),
        )

    # --- schema -------------------------------------------------------------------

    def schema_version(self) -> int:
        """The newest migration applied (0: none)."""
        with self._connection() as conn:
            return self._version(conn)

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return 0
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, create: bool) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            version = self._version(conn)
            if version > LATEST:
                raise RegistryError(
                    f"registry {self.location} has schema version {version}; "
                    f"this acegw knows up to {LATEST}"
                )
            if version == LATEST:
                return
            if version == 0 and not create:
                raise RegistryError(
                    f"registry {self.location} has no acegw schema (run 'acegw init', "
                    "or check registry.url)"
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version integer PRIMARY KEY, name text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for step in MIGRATIONS:
                if step.version <= version:
                    continue
                for statement in step.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (step.version, step.name),
                )
                log.info("registry schema migrated to version %d (%s)", step.version, step.name)

    def key_check(self, seal: Any) -> bytes:
        with self._write() as conn:
            row = conn.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
            if row is not None:
                return bytes(row[0])
            check = bytes(seal())
            conn.execute("INSERT INTO meta VALUES ('key_check', %s)", (check,))
        return check

    # --- clients ----------------------------------------------------------------

    def add_clients(self, records: Sequence[ClientRecord]) -> None:
        if not records:
            return
        ids = [r.client_id for r in records]
        with self._write() as conn:
            taken = conn.execute(
                "SELECT client_id FROM clients WHERE client_id = ANY(%s) LIMIT 1", (ids,)
            ).fetchone()
            if taken is not None or len(set(ids)) != len(ids):
                if len(records) == 1:
                    raise ClientExists(f"client {ids[0]!r} already exists")
                raise ClientExists(f"some of the ids {ids[0]}..{ids[-1]} already exist")
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [client_row(r) for r in records])
                cur.executemany(
                    "INSERT INTO changelog (kind, client_id, at) VALUES ('add', %s, %s)",
                    [(r.client_id, r.created_at) for r in records],
                )
            conn.execute("SELECT pg_notify(%s, 'add')", (CHANNEL,))

    def update_client(
        self, client_id: str, kind: str, fields: Mapping[str, Any], *, at: float, cut: bool
    ) -> None:
        sets, values = client_update(fields, "%s")
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE clients SET {sets}, generation = generation + 1 WHERE client_id = %s",
                (*values, client_id),
            )
            if cur.rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            if cut:
                self._cut(conn, client_id, at)
            self._log_change(conn, kind, client_id, at)

    def delete_client(self, client_id: str, *, at: float) -> None:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM clients WHERE client_id = %s", (client_id,))
            if cur.rowcount == 0:
                raise ClientNotFound(f"no client {client_id!r}")
            self._cut(conn, client_id, at)
            self._log_change(conn, "delete", client_id, at)

    def client(self, client_id: str) -> ClientRecord | None:
        rows = self._read(
            f"SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = %s", (client_id,)
        )
        return client_record(rows[0]) if rows else None

    def clients(self, prefix: str | None = None) -> list[ClientRecord]:
        if prefix is None:
            rows = self._read(f"SELECT {CLIENT_COLUMNS} FROM clients ORDER BY client_id")
        else:
            rows = self._read(
                f"SELECT {CLIENT_COLUMNS} FROM clients WHERE left(client_id, %s) = %s "
                "ORDER BY client_id",
                (len(prefix), prefix),
            )
        return [client_record(r) for r in rows]

    def count_clients(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM clients")[0][0])

    def cutoffs(self, client_ids: Iterable[str] | None = None) -> dict[str, float]:
        if client_ids is None:
            return dict(self._read("SELECT client_id, at FROM client_cutoffs"))
        ids = list(client_ids)
        return dict(
            self._read("SELECT client_id, at FROM client_cutoffs WHERE client_id = ANY(%s)", (ids,))
        )

    # --- revocations and lockout lifts ----------------------------------------

    def revoke(self, cti: bytes, exp: float, *, at: float) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO revoked VALUES (%s, %s) ON CONFLICT (cti) "
                "DO UPDATE SET exp = GREATEST(revoked.exp, excluded.exp)",
                (cti, float(exp)),
            )
            self._log_change(conn, "revoke", None, at)

    def revoked(self) -> list[tuple[bytes, float]]:
        return [(bytes(c), e) for c, e in self._read("SELECT cti, exp FROM revoked ORDER BY exp")]

    def purge(self, now: float, retention: float) -> int:
        with self._write() as conn:
            n = conn.execute("DELETE FROM revoked WHERE exp < %s", (now,)).rowcount
            conn.execute("DELETE FROM held_tokens WHERE exp < %s", (now,))
            row = conn.execute(
                "SELECT MAX(seq) FROM changelog WHERE at < %s "
                "AND seq < (SELECT MAX(seq) FROM changelog)",
                (now - retention,),
            ).fetchone()
            if row is not None and row[0] is not None:
                conn.execute("DELETE FROM changelog WHERE seq <= %s", (row[0],))
                conn.execute("DELETE FROM ban_lifts WHERE seq <= %s", (row[0],))
                conn.execute(
                    "INSERT INTO meta VALUES ('pruned_through', %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (str(row[0]).encode(),),
                )
            if n:
                self._log_change(conn, "purge", None, now)
        return n

    def lift_bans(self, address: str | None, identity: bytes | None, *, at: float) -> int:
        with self._write() as conn:
            seq = self._log_change(conn, "lift", None, at)
            conn.execute("INSERT INTO ban_lifts VALUES (%s, %s, %s)", (seq, address, identity))
        return seq

    # --- tokens accepted by /authz-info, shared by instances ----------------------

    def hold_tokens(self, rows: Sequence[tuple[bytes, bytes, float]], *, at: float) -> int:
        """Store ``(kid, token, exp)`` rows (a newer token for a kid replaces
        the older one, RFC 9200 §5.10.1); not a registry change (no change
        log, no NOTIFY: other instances look tokens up when a proof names
        one). How many rows."""
        if not rows:
            return 0
        with self._connection() as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO held_tokens (kid, token, exp, stored_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (kid) DO UPDATE SET token = excluded.token, exp = excluded.exp, "
                "stored_at = excluded.stored_at",
                [(kid, token, float(exp), at) for kid, token, exp in rows],
            )
        return len(rows)

    def held_tokens(self, kids: Sequence[bytes], *, now: float) -> dict[bytes, bytes]:
        """The live tokens held for ``kids`` (one query): kid -> token."""
        if not kids:
            return {}
        rows = self._read(
            "SELECT kid, token FROM held_tokens WHERE kid = ANY(%s) AND exp > %s",
            (list(kids), now),
        )
        return {bytes(k): bytes(t) for k, t in rows}

    # --- the AS key set -----------------------------------------------------------

    def as_keys(self) -> list[KeyRecord]:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM as_keys ORDER BY created_at, kid")
        return [key_record(r) for r in rows]

    def import_as_keys(self, records: Sequence[KeyRecord], *, at: float) -> bool:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM as_keys LIMIT 1").fetchone() is not None:
                return False
            with conn.cursor() as cur:
                cur.executemany(_INSERT_KEY, [key_row(r) for r in records])
            self._log_change(conn, KEYS_CHANGE, None, at)
        return True

    def rotate_as_key(self, record: KeyRecord, *, at: float) -> None:
        with self._write() as conn:
            rotate_key_in(conn, record, "%s")
            self._log_change(conn, KEYS_CHANGE, None, at)

    def retire_as_key(self, kid: bytes, *, at: float) -> KeyRecord:
        with self._write() as conn:
            record, changed = retire_key_in(conn, kid, at, "%s")
            if changed:
                self._log_change(conn, KEYS_CHANGE, None, at)
        return record

    # --- tokens issued by the embedded AS, shared by instances (RFC 9770) ----------

    def record_issued(
        self, rows: Sequence[tuple[bytes, bytes, str, str, float, float]], *, at: float
    ) -> int:
        """Store ``(hash, cti, client_id, audience, iat, exp)`` rows of issued
        tokens. Not a registry change, except when one of them is already
        revoked or cut off (the operator was quicker than this write): then
        a ``trl`` change tells every instance to compute its TRL again. Under
        the write lock, so a revocation commits either before (seen here) or
        after (its readers see these rows). How many rows."""
        if not rows:
            return 0
        with self._write() as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO issued_tokens (hash, cti, client_id, audience, iat, exp) "
                    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (hash) DO NOTHING",
                    [(h, c, cid, aud, float(iat), float(exp)) for h, c, cid, aud, iat, exp in rows],
                )
            hashes = [r[0] for r in rows]
            late = conn.execute(
                "SELECT 1 FROM issued_tokens i JOIN revoked r ON r.cti = i.cti "
                "WHERE i.hash = ANY(%s) "
                "UNION ALL SELECT 1 FROM issued_tokens i "
                "JOIN client_cutoffs c ON c.client_id = i.client_id "
                "WHERE i.hash = ANY(%s) AND i.iat <= c.at LIMIT 1",
                (hashes, hashes),
            ).fetchone()
            if late is not None:
                self._log_change(conn, TRL_CHANGE, None, at)
        return len(rows)

    def issued_revoked(self, now: float) -> list[tuple[bytes, bytes, str, str, float]]:
        """``(hash, cti, client_id, audience, exp)`` of the issued tokens not
        expired at ``now`` that are revoked by cti, or whose client was cut
        off (disabled or deleted) at or after their ``iat``; one query."""
        rows = self._read(
            "SELECT i.hash, i.cti, i.client_id, i.audience, i.exp FROM issued_tokens i "
            "JOIN revoked r ON r.cti = i.cti WHERE i.exp > %s "
            "UNION "
            "SELECT i.hash, i.cti, i.client_id, i.audience, i.exp FROM issued_tokens i "
            "JOIN client_cutoffs c ON c.client_id = i.client_id "
            "WHERE i.exp > %s AND i.iat <= c.at",
            (now, now),
        )
        return [(bytes(h), bytes(c), cid, aud, exp) for h, c, cid, aud, exp in rows]

    def purge_issued(self, now: float) -> int:
        """Forget issued tokens expired at ``now``; how many."""
        with self._connection() as conn:
            return conn.execute("DELETE FROM issued_tokens WHERE exp <= %s", (now,)).rowcount

    # --- change log -------------------------------------------------------------

    def _pruned_through(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = 'pruned_through'").fetchone()
        return int(bytes(row[0])) if row else 0

    def change_stamp(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changelog").fetchone()
            return max(int(row[0]) if row else 0, self._pruned_through(conn))

    def changes_since(self, stamp: int) -> Changes:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT seq, kind, client_id FROM changelog WHERE seq > %s ORDER BY seq", (stamp,)
            ).fetchall()
            return assemble_changes(
                stamp,
                rows,
                self._pruned_through(conn),
                lambda after, through: conn.execute(
                    "SELECT address, identity FROM ban_lifts WHERE seq > %s AND seq <= %s "
                    "ORDER BY seq",
                    (after, through),
                ).fetchall(),
            )

    # --- operators' audit trail -------------------------------------------------

    def record_action(
        self, at: float, operator: str, action: str, target: str | None, outcome: str, detail: str
    ) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "INSERT INTO operator_audit (at, operator, action, target, outcome, detail) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
                (at, operator, action, target, outcome, detail),
            ).fetchone()
        return int(row[0]) if row else 0

    def search_actions(self, query: ActionQuery = ALL_ACTIONS) -> list[OperatorAction]:
        return operator_actions(self._read(*query.select("%s")))

    # --- copying a registry -------------------------------------------------------

    def import_rows(
        self,
        *,
        key_check: bytes,
        clients: Sequence[ClientRecord],
        cutoffs: Mapping[str, float],
        revoked: Sequence[tuple[bytes, float]],
        kinds: Sequence[tuple[str, str | None]],
        actions: Sequence[OperatorAction],
        at: float,
        keys: Sequence[KeyRecord] = (),
    ) -> int:
        """Copy a whole registry into this empty one in one transaction
        (``acegw registry migrate``): the rows as they are (PSKs and AS keys
        stay sealed under the same master key), one ``import`` change; the
        change stamp. The AS ``keys`` replace none: the target must hold no key."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM clients LIMIT 1").fetchone() is not None:
                raise RegistryError(f"registry {self.location} already has clients")
            if keys and conn.execute("SELECT 1 FROM as_keys LIMIT 1").fetchone() is not None:
                raise RegistryError(f"registry {self.location} already has AS keys")
            row = conn.execute("SELECT value FROM meta WHERE name = 'key_check'").fetchone()
            if row is not None and bytes(row[0]) != key_check:
                raise RegistryError(f"registry {self.location} was created with another master key")
            conn.execute(
                "INSERT INTO meta VALUES ('key_check', %s) ON CONFLICT (name) DO NOTHING",
                (key_check,),
            )
            with conn.cursor() as cur:
                cur.executemany(_INSERT, [client_row(r) for r in clients])
                cur.executemany(_INSERT_KEY, [key_row(r) for r in keys])
                cur.executemany("INSERT INTO client_cutoffs VALUES (%s, %s)", list(cutoffs.items()))
                cur.executemany(
                    "INSERT INTO revoked VALUES (%s, %s) ON CONFLICT (cti) DO NOTHING",
                    [(c, float(e)) for c, e in revoked],
                )
                cur.executemany(
                    "INSERT INTO changelog (kind, client_id, at) VALUES (%s, %s, %s)",
                    [(kind, cid, at) for kind, cid in kinds],
                )
                cur.executemany(
                    "INSERT INTO operator_audit (at, operator, action, target, outcome, detail) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (a.at, a.operator, a.action, a.target, a.outcome, json.dumps(a.detail))
                        for a in actions
                    ],
                )
            return self._log_change(conn, "import", None, at)


class ChangeFeed:
    """Calls ``on_change`` when another process commits a registry change
    (LISTEN on :data:`CHANNEL`), from its own thread and connection.

    Notifications sent while the connection is down are lost, so after every
    (re)connect ``on_change`` is called once too: the caller then reads the
    change log from its cursor (catch-up). ``on_state(connected)`` reports
    the connection's state. Reconnects every ``retry`` seconds.
    """

    def __init__(
        self,
        url: str,
        on_change: Callable[[], None],
        *,
        on_state: Callable[[bool], None] = lambda up: None,
        retry: float = 0.5,
    ) -> None:
        self.url = url
        self.on_change = on_change
        self.on_state = on_state
        self.retry = retry
        self.connected = False
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._run, name="acegw-change-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _set_state(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self.on_state(up)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.on_change()  # catch up on what passed while disconnected
                    self._set_state(True)
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            self.on_change()
                        if conn.closed or conn.broken:
                            break
                        conn.execute("SELECT 1")  # notices a server that went away
            except psycopg.Error as exc:
                if self.connected:
                    log.warning("registry change feed lost its connection: %s", type(exc).__name__)
            self._set_state(False)
            self._stop.wait(self.retry)


__all__ = ["CHANNEL", "SCHEMES", "ChangeFeed", "PostgresStore", "is_postgres_url", "redact"]
