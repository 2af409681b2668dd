"""The client registry: devices (client id, PSK, allowed scope, audiences,
optional public key), the revocation list and token cut-offs, over any
:class:`gateway.registry.store.RegistryStore`.

* Input is checked here (ids, PSK sizes, scopes in the AIF text form of
  :mod:`tokens.aif`, COSE public keys); stores keep what they are given.
* PSKs are sealed under the master key before they reach the store
  (:mod:`gateway.registry.masterkey`, AES-GCM, the client id as associated
  data): the store alone reveals no PSK, a sealed PSK copied onto another
  row does not open, and a wrong master key fails at open.
* The DTLS PSK callback (RFC 4279 §2, RFC 9202 §3.1) and the per-request
  checks (:meth:`Registry.psk_for`, :meth:`Registry.status`,
  :meth:`Registry.is_revoked`, :meth:`Registry.current_version`) read an
  in-memory view and never the store: :meth:`Registry.refresh` (the
  gateway's housekeeping) applies the change log to it.
"""

from __future__ import annotations

import builtins
import functools
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.dtls import MAX_PSK_LENGTH
from gateway.errors import (
    ClientNotFound,
    CorruptRecord,
    InvalidArgument,
    MasterKeyError,
    RegistryError,
)
from gateway.registry.masterkey import MasterKey, load_master_key
from gateway.registry.store import Changes, ClientRecord, RegistryStore, open_store
from tokens.aif import Scope
from tokens.errors import TokenError
from tokens.keys import key_from_cose
from tokens.params import KeyParam, KeyType

#: Longest client id, a DTLS PSK identity (RFC 4279 §5.3 allows 128 bytes of
#: identity; the DTLS engine takes up to 1024): it is also the tokens' ``sub``
#: claim, and the device notes bound a token's size with it.
MAX_CLIENT_ID_LEN = 128
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
#: More changed clients than this in one refresh (a bulk add elsewhere): the
#: view is read again in one pass rather than row by row.
FULL_RELOAD_CHANGES = 512


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
    """Client ids are 1..128 bytes of ``[A-Za-z0-9._:@+-]``, not starting with
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


def _check_audiences(audiences: Any) -> tuple[str, ...]:
    auds = tuple(audiences)
    if not all(isinstance(a, str) and a for a in auds):
        raise InvalidArgument("audiences must be non-empty strings")
    return auds


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

    @classmethod
    def of(cls, r: ClientRecord) -> Client:
        return cls(
            r.client_id,
            r.scope,
            r.default_scope,
            r.audiences,
            r.public_key,
            r.enabled,
            r.created_at,
            r.rotated_at,
            r.generation,
        )


def narrows(client: Client, scope: str | None, audiences: tuple[str, ...] | None) -> bool:
    """Whether changing ``client`` to ``scope`` / ``audiences`` (None: kept)
    takes a right away: the old scope grants a (resource, method) the new one
    does not (RFC 9237 §2), or an audience is no longer allowed (no
    audiences = every audience of the AS). Tokens issued under the old
    rights would otherwise stay valid until they expire."""
    if scope is not None:
        try:
            if not Scope.parse(client.scope).is_subset_of(Scope.parse(scope)):
                return True
        except TokenError:  # a stored scope that no longer parses: be safe
            return True
    if audiences is not None and audiences:
        return not client.audiences or not set(client.audiences) <= set(audiences)
    return False


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


#: Seconds between change-log reads of a watched store without announcements
#: (a safety net; notifications are not expected to go missing while connected).
SAFETY_REFRESH = 5.0


class _View:
    """The in-memory view the request path reads: client records (PSKs
    sealed until first use), cut-offs, revoked token ids."""

    __slots__ = ("clients", "cutoffs", "psks", "revoked")

    def __init__(self, store: RegistryStore) -> None:
        self.clients = {r.client_id: r for r in store.clients()}
        self.cutoffs = store.cutoffs()
        self.revoked = {cti for cti, _ in store.revoked()}
        self.psks: dict[str, bytes] = {}

    def reload_client(self, store: RegistryStore, client_id: str) -> None:
        record = store.client(client_id)
        if record is None:
            self.clients.pop(client_id, None)
        else:
            self.clients[client_id] = record
        self.psks.pop(client_id, None)
        cutoff = store.cutoffs([client_id]).get(client_id)
        if cutoff is None:
            self.cutoffs.pop(client_id, None)
        else:
            self.cutoffs[client_id] = cutoff


class Registry:
    """The client registry over one store. Open one per process (after any
    fork: a database connection must not cross a fork)."""

    def __init__(
        self,
        store: RegistryStore | str | Path,
        master_key: MasterKey,
        *,
        poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        create: bool = True,
    ) -> None:
        """``store``: a :class:`RegistryStore`, or a location for
        :func:`gateway.registry.store.open_store`."""
        self.store = store if isinstance(store, RegistryStore) else open_store(store, create=create)
        self._key = master_key
        self._clock = clock
        self._monotonic = monotonic
        self.poll_interval = poll_interval
        self._lock = threading.RLock()
        self._view: _View | None = None
        self._last_poll = -float("inf")
        #: pushed changes (:meth:`watch`): the store's feed, whether a change
        #: was announced since the last read, whether the last refresh read nothing
        self._feed: Any = None
        self._pending = True
        self._idle = False
        #: whether the last read of the change log succeeded
        self._read_ok = True
        #: Bumped whenever a client or the revocation list may have changed
        #: (here or, once refreshed, in another process): callers may cache
        #: answers of :meth:`psk_for` / :meth:`is_revoked` per version.
        self.version = 0
        try:
            self._check_key()
            self._seen_stamp = self.store.change_stamp()
        except BaseException:
            self.store.close()
            raise

    @classmethod
    def from_config(
        cls, config: Config, *, env: Mapping[str, str] | None = None, **kw: Any
    ) -> Registry:
        """Open the registry named by ``config.registry`` with the master key
        from ``ACEGW_MASTER_KEY`` or ``config.registry.master_key_file``."""
        key = load_master_key(config.registry.master_key_file, env=env)
        return cls(config.registry.location, key, poll_interval=config.registry.poll_interval, **kw)

    def _check_key(self) -> None:
        check = self.store.key_check(lambda: self._key.seal(_KEY_CHECK, _KEY_CHECK_AAD))
        try:
            ok = self._key.open(check, _KEY_CHECK_AAD) == _KEY_CHECK
        except CorruptRecord:
            ok = False
        if not ok:
            raise MasterKeyError(
                f"the master key ({self._key.source}) is not the key registry "
                f"{self.store.location} was created with"
            )

    @property
    def path(self) -> Path:
        return Path(self.store.location)

    @property
    def master_key(self) -> MasterKey:
        """The master key this registry was opened with (checked), for other
        secrets sealed in its store (the AS keys)."""
        return self._key

    def close(self) -> None:
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Registry {self.store.location}>"

    # --- the in-memory view -----------------------------------------------------

    def load(self) -> None:
        """Read the whole view from the store now (a serving gateway does at
        start; otherwise the first read of the view does)."""
        with self._lock:
            self._seen_stamp = self.store.change_stamp()
            self._view = _View(self.store)
            self.version += 1

    def _mirror(self) -> _View:
        view = self._view
        if view is None:
            self.load()
            view = self._view
            assert view is not None
        return view

    def _changed(self, client_id: str) -> None:
        """After a write here: the view sees it at once."""
        with self._lock:
            if self._view is not None:
                self._view.reload_client(self.store, client_id)
            self.version += 1

    def watch(self) -> bool:
        """Follow changes pushed by the store where it offers them (PostgreSQL
        LISTEN/NOTIFY, :class:`gateway.registry.postgres.ChangeFeed`): then
        :meth:`refresh` reads the database only after an announced change, a
        reconnect (catch-up) or :data:`SAFETY_REFRESH` seconds, and not at all
        while the feed is disconnected (the view serves from memory). False
        when the store has no feed (SQLite: refresh reads the change log)."""
        make = getattr(self.store, "change_feed", None)
        if make is None or self._feed is not None:
            return self._feed is not None
        self._feed = make(self._announced)
        self._feed.start()
        return True

    def _announced(self) -> None:
        """From the feed's thread: the next refresh reads the change log."""
        self._pending = True

    @property
    def store_connected(self) -> bool:
        """False while a pushed-changes store's feed has lost its database,
        or when the last :meth:`refresh` could not read the store (any backend)."""
        return self._read_ok and (self._feed is None or bool(self._feed.connected))

    def refresh(self) -> Changes:
        """Apply the change log since the last refresh to the view (changes
        by this and other processes); the gateway's housekeeping calls it."""
        with self._lock:
            feed = self._feed
            if feed is not None:
                due = self._monotonic() - self._last_poll >= SAFETY_REFRESH
                if not feed.connected or not (self._pending or due):
                    self._idle = True
                    return Changes(self._seen_stamp, frozenset(), False, True)
                self._pending = False  # an announcement from now on reads again
            self._idle = False
            try:
                changes = self.store.changes_since(self._seen_stamp)
            except RegistryError:
                self._read_ok = False
                raise
            self._read_ok = True
            view = self._view
            if view is not None and (
                not changes.complete or len(changes.client_ids) > FULL_RELOAD_CHANGES
            ):
                self._view = _View(self.store)
                self.version += 1
            elif view is not None:
                for cid in changes.client_ids:
                    view.reload_client(self.store, cid)
                if changes.revocations:
                    view.revoked = {cti for cti, _ in self.store.revoked()}
                if changes.client_ids or changes.revocations:
                    self.version += 1
            self._seen_stamp = changes.stamp
            self._last_poll = self._monotonic()
        return changes

    def poll(self) -> Changes | None:
        """:meth:`refresh` when ``poll_interval`` has passed since the last
        one (for processes without a housekeeping task); None otherwise."""
        if self._monotonic() - self._last_poll >= self.poll_interval:
            return self.refresh()
        return None

    def current_version(self) -> int:
        """:attr:`version` (memory only; :meth:`refresh` moves it)."""
        return self.version

    # --- hot path: memory only ------------------------------------------------------

    def psk_for(self, client_id: str | bytes) -> bytes | None:
        """The PSK for a DTLS PSK identity (RFC 4279 §2), or ``None`` if the
        client is unknown or disabled. From memory. Raises
        :class:`CorruptRecord` if the stored PSK does not authenticate."""
        if isinstance(client_id, bytes):
            try:
                client_id = client_id.decode("utf-8")
            except UnicodeDecodeError:
                return None
        view = self._mirror()
        psk = view.psks.get(client_id)
        if psk is not None:
            return psk
        record = view.clients.get(client_id)
        if record is None or not record.enabled:
            return None
        psk = self._open_psk(client_id, record.psk)
        view.psks[client_id] = psk
        return psk

    def cached(self, client_id: str) -> Client | None:
        """The client as the view holds it (memory only), or None."""
        record = self._mirror().clients.get(client_id)
        return None if record is None else Client.of(record)

    def generation(self, client_id: str) -> int | None:
        """The client's generation, or ``None`` if it does not exist (deleted)."""
        record = self._mirror().clients.get(client_id)
        return None if record is None else record.generation

    def status(self, client_id: str) -> ClientStatus | None:
        """Whether the client exists and is enabled, and its token cut-off:
        the time of its last disable or delete. Tokens issued to it at or
        before the cut-off (``iat``) stay refused after an enable, or after
        the id is registered again ("disable means disable"). From memory."""
        view = self._mirror()
        record = view.clients.get(client_id)
        cutoff = view.cutoffs.get(client_id)
        if record is None and cutoff is None:
            return None
        return ClientStatus(
            exists=record is not None, enabled=record is not None and record.enabled, cutoff=cutoff
        )

    def is_revoked(self, cti: bytes) -> bool:
        """Whether the token id is on the revocation list (from memory)."""
        return cti in self._mirror().revoked

    # --- administration (reads and writes go to the store) -------------------------

    def _record(
        self,
        client_id: str,
        psk: bytes,
        scope: str,
        default_scope: str | None,
        audiences: Any,
        public_key: bytes | None,
        enabled: bool,
    ) -> ClientRecord:
        _check_scope(scope)
        if default_scope is not None:
            _check_scope(default_scope, "default scope")
        return ClientRecord(
            client_id=client_id,
            psk=self._key.seal(psk, _psk_aad(client_id)),
            scope=scope,
            default_scope=default_scope,
            audiences=_check_audiences(audiences),
            public_key=_check_public_key(public_key),
            enabled=enabled,
            created_at=self._clock(),
            rotated_at=None,
            generation=0,
        )

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
        record = self._record(client_id, psk, scope, default_scope, audiences, public_key, enabled)
        self.store.add_clients([record])
        self._changed(client_id)
        return psk

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
        for record in self.store.clients(prefix):
            suffix = record.client_id[len(prefix) :]
            if suffix.isdigit():
                start = max(start, int(suffix) + 1)
        width = max(4, len(str(start + count - 1)))
        ids = [f"{prefix}{n:0{width}d}" for n in range(start, start + count)]
        check_client_id(ids[0])
        check_client_id(ids[-1])
        out = [(cid, generate_psk(size=psk_bytes)) for cid in ids]
        records = [
            self._record(cid, psk, scope, default_scope, audiences, None, True) for cid, psk in out
        ]
        self.store.add_clients(records)
        with self._lock:
            if self._view is not None:
                for record in records:
                    self._view.clients[record.client_id] = record
            self.version += 1
        return out

    def get(self, client_id: str) -> Client:
        """The client record from the store; :class:`ClientNotFound` if none."""
        record = self.store.client(client_id)
        if record is None:
            raise ClientNotFound(f"no client {client_id!r}")
        return Client.of(record)

    def list(self) -> builtins.list[Client]:
        """All clients, ordered by id."""
        return [Client.of(r) for r in self.store.clients()]

    def count(self) -> int:
        return self.store.count_clients()

    def psk(self, client_id: str) -> bytes:
        """The client's PSK, enabled or not (admin use: ``clients show
        --show-psk``). :class:`CorruptRecord` if the sealed PSK does not open."""
        record = self.store.client(client_id)
        if record is None:
            raise ClientNotFound(f"no client {client_id!r}")
        return self._open_psk(client_id, record.psk)

    def _open_psk(self, client_id: str, sealed: bytes) -> bytes:
        try:
            return self._key.open(bytes(sealed), _psk_aad(client_id))
        except CorruptRecord:
            raise CorruptRecord(
                f"the stored PSK of client {client_id!r} does not authenticate "
                "(record altered or copied from another client)"
            ) from None

    def _modify(
        self, client_id: str, kind: str, fields: dict[str, Any], *, cut: bool = False
    ) -> None:
        self.store.update_client(client_id, kind, fields, at=self._clock(), cut=cut)
        self._changed(client_id)

    def update(
        self,
        client_id: str,
        *,
        scope: str | None = None,
        default_scope: str | None = None,
        audiences: tuple[str, ...] | builtins.list[str] | None = None,
        public_key: bytes | None = None,
    ) -> Client:
        """Change the given fields (``None`` = keep) of a client. A change
        that takes rights away (:func:`narrows`) also cuts its tokens off, as
        a disable does: tokens issued until now are refused and dropped; its
        devices ask for new ones."""
        fields: dict[str, Any] = {}
        if scope is not None:
            fields["scope"] = _check_scope(scope)
        if default_scope is not None:
            fields["default_scope"] = _check_scope(default_scope, "default scope")
        if audiences is not None:
            fields["audiences"] = _check_audiences(audiences)
        if public_key is not None:
            fields["public_key"] = _check_public_key(public_key)
        if not fields:
            raise InvalidArgument("nothing to update")
        narrowed = narrows(self.get(client_id), fields.get("scope"), fields.get("audiences"))
        self._modify(client_id, "update", fields, cut=narrowed)
        return self.get(client_id)

    def disable(self, client_id: str) -> None:
        """Refuse the client's handshakes and token requests from now on, and
        its tokens issued until now even after an enable (:meth:`status`)."""
        self._modify(client_id, "disable", {"enabled": False}, cut=True)

    def enable(self, client_id: str) -> None:
        self._modify(client_id, "enable", {"enabled": True})

    def rotate_psk(
        self, client_id: str, psk: bytes | None = None, *, printable: bool = False
    ) -> bytes:
        """Replace the client's PSK (generated when ``psk`` is None); returns it."""
        psk = generate_psk(printable=printable) if psk is None else _check_psk(psk)
        sealed = self._key.seal(psk, _psk_aad(client_id))
        self._modify(client_id, "rotate", {"psk": sealed, "rotated_at": self._clock()})
        return psk

    def delete(self, client_id: str) -> None:
        self.store.delete_client(client_id, at=self._clock())
        self._changed(client_id)

    # --- revocation and lockout lifts ------------------------------------------------

    def revoke(self, cti: bytes, exp: float) -> None:
        """Add a token id (RFC 8392 §3.1.7 ``cti``) to the revocation list until
        ``exp`` (the token's expiry; after it the token is refused anyway)."""
        if not isinstance(cti, bytes) or not cti:
            raise InvalidArgument("cti must be non-empty bytes")
        self.store.revoke(cti, exp, at=self._clock())
        with self._lock:
            if self._view is not None:
                self._view.revoked.add(cti)
            self.version += 1

    def revoked(self) -> builtins.list[tuple[bytes, float]]:
        """The revocation list as ``(cti, exp)``, soonest expiry first."""
        return self.store.revoked()

    def purge_expired(self, now: float) -> int:
        """Drop revocations whose ``exp`` is before ``now`` and change-log rows
        older than :data:`CHANGELOG_RETENTION`; returns how many revocations
        were dropped."""
        n = self.store.purge(now, CHANGELOG_RETENTION)
        with self._lock:
            if self._view is not None:
                self._view.revoked = {cti for cti, _ in self.store.revoked()}
            self.version += 1
        return n

    def lift_bans(self, address: str | None = None, identity: bytes | None = None) -> int:
        """Record an operator's lift of lockout bans (``acegw lockouts lift``):
        every running worker lifts the matching bans when it next applies the
        change log. None matches anything. Returns the change stamp."""
        return self.store.lift_bans(address, identity, at=self._clock())

    # --- change tracking -----------------------------------------------------------

    def change_stamp(self) -> int:
        """A number that grows with every committed change, by any process."""
        return self.store.change_stamp()

    def changes_since(self, stamp: int) -> Changes:
        """:meth:`RegistryStore.changes_since` (nothing, without a read, when
        the last :meth:`refresh` of a watched store found nothing to read)."""
        if self._idle and stamp == self._seen_stamp:
            return Changes(stamp, frozenset(), False, True)
        return self.store.changes_since(stamp)


__all__ = [
    "CHANGELOG_RETENTION",
    "FULL_RELOAD_CHANGES",
    "GENERATED_PSK_BYTES",
    "GENERATED_PSK_CHARS",
    "MAX_CLIENT_ID_LEN",
    "MAX_PSK_LEN",
    "SAFETY_REFRESH",
    "Changes",
    "Client",
    "ClientStatus",
    "Registry",
    "check_client_id",
    "generate_psk",
]
