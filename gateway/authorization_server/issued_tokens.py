"""The tokens the embedded AS issued, kept until they expire, so that a
revocation by ``cti`` or a client's cut-off (``clients disable``) can be put
on the Token Revocation List as token hashes (RFC 9770 §5.1): the hash is
over the token bytes as sent in the AS response (RFC 9770 §4.2.1), which
only the AS saw.

A SQLite file of its own next to the registry (WAL; every worker and the CLI
see the same rows), holding per token: its hash, cti, subject, audience,
iat and exp; never the token itself.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.authorization_server.revocation_list import Entry, token_hash
from gateway.authorization_server.token_endpoint import (
    AuthorizationServer,
    ClientPolicy,
    IssuedToken,
)
from tokens.ace import TokenRequest

#: File name of the ledger, in the registry's directory.
LEDGER_FILE = "issued-tokens.sqlite"

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


class RecordingIssuer:
    """The AS's token endpoint, recording each issued token in the ledger."""

    def __init__(self, server: AuthorizationServer, ledger: IssuedTokens) -> None:
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


__all__ = ["LEDGER_FILE", "IssuedTokens", "RecordingIssuer"]
