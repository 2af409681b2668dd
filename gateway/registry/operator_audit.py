"""The operators' audit trail: one record per ``acegw`` command that changes
something (clients, revocations, keys, lockout lifts), with who ran it, when,
on what, and the outcome.

Records live in the registry's SQLite file, next to its change log (table
``operator_audit``), so every process and every instance sharing the
registry sees the same history (``acegw audit tail`` / ``acegw audit
search``). A record is written after the action, in its own transaction,
whether the action succeeded or was refused. It holds ids, counts and
settings, never a PSK, a key or a token (``detail`` refuses bytes).
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import InvalidArgument, RegistryError

_SCHEMA = """
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


def operator_name(env: Mapping[str, str] | None = None) -> str:
    """The OS user running the command; under sudo, also who invoked it."""
    env = os.environ if env is None else env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.geteuid()}"
    sudo = env.get("SUDO_USER")
    return f"{user} (sudo by {sudo})" if sudo and sudo != user else user


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """One audit record."""

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


class OperatorAudit:
    """The ``operator_audit`` table of one registry file."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        if not self.path.exists():
            raise RegistryError(f"registry {self.path} does not exist (run 'acegw init')")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {self.path}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> OperatorAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        action: str,
        target: str | None,
        outcome: str,
        detail: Mapping[str, Any] | None = None,
        *,
        operator: str | None = None,
    ) -> int:
        """Append one record; returns its sequence number."""
        detail = dict(detail or {})
        for key, value in detail.items():
            if isinstance(value, bytes | bytearray):
                raise TypeError(f"audit detail {key!r}: pass hex ids, never bytes")
        try:
            cur = self._db.execute(
                "INSERT INTO operator_audit (at, operator, action, target, outcome, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._clock(),
                    operator or operator_name(),
                    action,
                    target,
                    outcome,
                    json.dumps(detail, separators=(",", ":"), sort_keys=True),
                ),
            )
        except sqlite3.Error as exc:
            raise RegistryError(
                f"registry {self.path}: cannot write the audit record: {exc}"
            ) from None
        return int(cur.lastrowid or 0)

    def search(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        operator: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[OperatorAction]:
        """Matching records, oldest first (``limit``: the newest ``limit``)."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("target", target), ("operator", operator)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if action is not None:
            where.append("(action = ? OR action LIKE ?)")
            args += [action, f"{action} %"]
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        if until is not None:
            where.append("at <= ?")
            args.append(until)
        sql = "SELECT seq, at, operator, action, target, outcome, detail FROM operator_audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            if limit < 1:
                raise InvalidArgument("the number of records must be at least 1")
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {self.path}: {exc}") from None
        return [
            OperatorAction(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]))
            for r in reversed(rows)
        ]


__all__ = ["OperatorAction", "OperatorAudit", "operator_name"]
