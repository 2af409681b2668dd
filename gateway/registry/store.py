"""What the registry keeps, and the interface of the store that keeps it.

:class:`RegistryStore` is everything the gateway asks of its storage: client
rows with their PSKs *sealed* (the store never sees a PSK in clear, nor the
master key), the revocation list, the change log read with a cursor (the
change stamp), lockout lifts, token cut-offs and the operators' audit trail.
:class:`gateway.registry.registry.Registry` adds validation, sealing and the
in-memory view over any store; :func:`open_store` picks the implementation
(SQLite, :mod:`gateway.registry.sqlite`, or PostgreSQL,
:mod:`gateway.registry.postgres`). Every write is one transaction and appends to the change
log in it; reads never write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

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

    def search_actions(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        operator: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[OperatorAction]:
        """Matching records, oldest first (``limit``: the newest ``limit``);
        ``action`` matches itself and its sub-commands (``clients`` matches
        ``clients add``)."""
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
    "CLIENT_FIELDS",
    "NO_CUT",
    "Changes",
    "ClientRecord",
    "OperatorAction",
    "RegistryStore",
    "open_store",
    "redact",
]
