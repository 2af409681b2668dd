"""The tokens the embedded AS issued, kept until they expire, so that a
revocation by ``cti`` or a client's cut-off (``clients disable``) can be put
on the Token Revocation List as token hashes (RFC 9770 §5.1): the hash is
over the token bytes as sent in the AS response (RFC 9770 §4.2.1), which
only the AS saw.

A SQLite file of its own next to the registry (WAL; every worker and the CLI
see the same rows), holding per token: its hash, cti, subject, audience,
iat and exp; never the token itself. On a PostgreSQL registry the same rows
live in the registry store (:class:`SharedIssuedTokens`), so every
instance's TRL lists a revoked token whatever instance issued it;
:func:`issued_ledger` picks one.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.authorization_server.revocation_list import Entry, token_hash
from gateway.authorization_server.token_endpoint import (
    AuthorizationServer,
    ClientPolicy,
    IssuedToken,
)
from gateway.config import Config
from gateway.errors import GatewayError
from tokens.ace import TokenRequest

log = logging.getLogger(__name__)

#: File name of the ledger, in the registry's directory.
LEDGER_FILE = "issued-tokens.sqlite"
#: Seconds between writes of the shared ledger's queue.
FLUSH_INTERVAL = 0.25
#: Seconds after which a shared ledger's TRL is computed again even without a
#: registry change (a token another instance wrote after the change was seen).
SHARED_RESYNC = 5.0
#: One issued token: hash, cti, client id, audience, iat, exp.
Row = tuple[bytes, bytes, str, str, float, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued (
    hash      BLOB PRIMARY KEY,
    cti       BLOB NOT NULL,
    client_id TEXT NOT NULL,
    audience  TEXT NOT NULL,
    iat       REAL NOT NULL,
    exp       REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS issued_cti ON issued (cti);
CREATE INDEX IF NOT EXISTS issued_exp ON issued (exp);
"""


class IssuedTokens:
    """The ledger of issued tokens (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
        self._lock = threading.Lock()
        with contextlib.suppress(sqlite3.OperationalError):
            self._db.execute("PRAGMA journal_mode=WAL")
        # /token records each token on the event loop: with WAL a commit need
        # not wait for fsync (measured 0.44 -> 0.05 ms per token). A power loss
        # may lose the last rows: a later revocation of those tokens would be
        # missing from the TRL observers read (this gateway still refuses them:
        # it checks the registry's revocation list).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    @classmethod
    def beside(cls, registry_path: Path) -> IssuedTokens:
        return cls(Path(registry_path).with_name(LEDGER_FILE))

    def close(self) -> None:
        self._db.close()

    def record(
        self, token: bytes, *, cti: bytes, client_id: str, audience: str, iat: float, exp: float
    ) -> bytes:
        """Keep an issued token's hash (RFC 9770 §4.2.1: the CBOR response's
        ``access_token`` bytes); returns the hash."""
        th = token_hash(token)
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO issued VALUES (?, ?, ?, ?, ?, ?)",
                (th, cti, client_id, audience, float(iat), float(exp)),
            )
        return th

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def revoked(
        self,
        now: float,
        revoked_ctis: Iterable[bytes],
        cutoff: Callable[[str], float | None],
    ) -> list[Entry]:
        """Tokens not expired at ``now`` that are revoked by cti, or whose
        client was cut off (disabled or deleted) at or after their ``iat``."""
        out: dict[bytes, Entry] = {}
        ctis = list(revoked_ctis)
        for i in range(0, len(ctis), 500):
            chunk = ctis[i : i + 500]
            marks = ",".join("?" * len(chunk))
            for h, cti, cid, aud, exp in self._rows(
                f"SELECT hash, cti, client_id, audience, exp FROM issued "
                f"WHERE exp > ? AND cti IN ({marks})",
                (now, *chunk),
            ):
                out[bytes(h)] = Entry(bytes(h), bytes(cti), cid, aud, exp)
        clients = [r[0] for r in self._rows("SELECT DISTINCT client_id FROM issued", ())]
        for cid in clients:
            at = cutoff(cid)
            if at is None:
                continue
            for h, cti, aud, exp in self._rows(
                "SELECT hash, cti, audience, exp FROM issued "
                "WHERE client_id = ? AND exp > ? AND iat <= ?",
                (cid, now, at),
            ):
                out[bytes(h)] = Entry(bytes(h), bytes(cti), cid, aud, exp)
        return list(out.values())

    def purge(self, now: float) -> int:
        """Forget expired tokens (they left the TRL too, RFC 9770 §5.1)."""
        with self._lock, self._db:
            return self._db.execute("DELETE FROM issued WHERE exp <= ?", (now,)).rowcount


class IssuedTokenStore(Protocol):
    """What :class:`SharedIssuedTokens` needs of a store
    (:class:`gateway.registry.postgres.PostgresStore`)."""

    def record_issued(self, rows: Sequence[Row], *, at: float) -> int: ...

    def issued_revoked(self, now: float) -> list[tuple[bytes, bytes, str, str, float]]: ...

    def purge_issued(self, now: float) -> int: ...


class SharedIssuedTokens:
    """The ledger in a registry store shared by every instance.

    :meth:`record` (on the /token request path) only queues the row in
    memory; a thread writes the queue every :data:`FLUSH_INTERVAL` seconds
    (bounded: beyond ``max_queued`` rows a token is counted dropped and
    logged, it would be missing from the TRL). The event loop never waits
    for the store: :meth:`request_read` wakes that thread to :meth:`read`
    the revoked rows (one query, revocations and cut-offs joined there),
    :meth:`revoked` lists the rows read last plus the rows still queued,
    and :meth:`take_fresh` tells that a newer read arrived. When the store
    does not answer, the last rows read stay (the TRL stays as it was)."""

    #: :class:`TrlPublisher` computes the TRL again after this many seconds.
    resync = SHARED_RESYNC

    def __init__(
        self,
        store: IssuedTokenStore,
        *,
        max_queued: int = 100_000,
        interval: float = FLUSH_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._clock = clock
        self.max_queued = max_queued
        self.interval = interval
        self._queued: list[Row] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._read_wanted = False
        self._rows: list[tuple[bytes, bytes, str, str, float]] = []
        self._fresh = False
        self.written = 0
        self.dropped = 0
        self.write_errors = 0
        self._thread = threading.Thread(target=self._run, name="acegw-issued-tokens", daemon=True)
        self._thread.start()

    def record(
        self, token: bytes, *, cti: bytes, client_id: str, audience: str, iat: float, exp: float
    ) -> bytes:
        """Queue an issued token's hash (RFC 9770 §4.2.1); returns the hash."""
        th = token_hash(token)
        with self._lock:
            if len(self._queued) >= self.max_queued:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("issued-token ledger full: %d tokens not recorded", self.dropped)
                return th
            self._queued.append((th, cti, client_id, audience, float(iat), float(exp)))
        return th

    def flush(self) -> int:
        """Write the queued rows (from the caller's thread); how many. On a
        store error they stay queued for the next round."""
        with self._lock:
            rows, self._queued = self._queued, []
        if not rows:
            return 0
        try:
            n = self.store.record_issued(rows, at=self._clock())
        except GatewayError as exc:
            self.write_errors += 1
            log.debug("issued tokens not written yet: %s", exc.reason)
            with self._lock:
                self._queued = (rows + self._queued)[: self.max_queued]
            return 0
        self.written += n
        return n

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.flush()
            with self._lock:
                wanted, self._read_wanted = self._read_wanted, False
            if wanted:
                self.read(self._clock())

    def request_read(self) -> None:
        """Have the writer thread :meth:`read` the store soon (never waits)."""
        with self._lock:
            self._read_wanted = True
        self._wake.set()

    def read(self, now: float) -> bool:
        """Read the revoked rows from the store (in the caller's thread: the
        writer thread's, or a test's); False, keeping the last rows, when
        the store does not answer."""
        try:
            rows = self.store.issued_revoked(now)
        except GatewayError as exc:
            log.debug("issued tokens not read: %s", exc.reason)
            return False
        with self._lock:
            self._rows, self._fresh = rows, True
        return True

    def take_fresh(self) -> bool:
        """Whether a :meth:`read` finished since the last call."""
        with self._lock:
            fresh, self._fresh = self._fresh, False
        return fresh

    def revoked(
        self,
        now: float,
        revoked_ctis: Iterable[bytes],
        cutoff: Callable[[str], float | None],
    ) -> list[Entry]:
        """As :meth:`IssuedTokens.revoked`, over every instance's tokens: the
        rows the last :meth:`read` found plus the queued ones (memory only)."""
        with self._lock:
            rows = list(self._rows)
            queued = list(self._queued)
        out = {h: Entry(h, cti, cid, aud, exp) for h, cti, cid, aud, exp in rows if exp > now}
        ctis = set(revoked_ctis)
        for h, cti, cid, aud, iat, exp in queued:
            at = cutoff(cid)
            if exp > now and (cti in ctis or (at is not None and iat <= at)):
                out[h] = Entry(h, cti, cid, aud, exp)
        return list(out.values())

    def purge(self, now: float) -> int:
        """Forget expired tokens (every instance's)."""
        return self.store.purge_issued(now)

    def close(self) -> None:
        """Stop the writer and write what is queued (best effort)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        self.flush()


def issued_ledger(config: Config, store: object) -> IssuedTokens | SharedIssuedTokens:
    """The ledger of this configuration: in the registry ``store`` when it
    keeps issued tokens for every instance (PostgreSQL), else the SQLite file
    beside ``registry.path``."""
    if callable(getattr(store, "record_issued", None)):
        return SharedIssuedTokens(store)  # type: ignore[arg-type]
    return IssuedTokens.beside(config.registry.path)


class RecordingIssuer:
    """The AS's token endpoint, recording each issued token in the ledger."""

    def __init__(
        self, server: AuthorizationServer, ledger: IssuedTokens | SharedIssuedTokens
    ) -> None:
        self._server = server
        self._ledger = ledger

    def issue(self, request: TokenRequest, client: ClientPolicy, now: float) -> IssuedToken:
        issued = self._server.issue(request, client, now)
        claims = issued.claims
        self._ledger.record(
            issued.response.access_token,
            cti=issued.cti,
            client_id=client.client_id,
            audience=str(claims.aud),
            iat=float(claims.iat if claims.iat is not None else now),
            exp=float(claims.exp if claims.exp is not None else now),
        )
        return issued


__all__ = [
    "LEDGER_FILE",
    "IssuedTokenStore",
    "IssuedTokens",
    "RecordingIssuer",
    "SharedIssuedTokens",
    "issued_ledger",
]
