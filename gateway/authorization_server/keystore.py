"""The key directory: AS signing keys and AS-RS keys, with rotation.

Layout of the directory (mode 0700, created on first start)::

    manifest.json          which keys exist, their kind, status and times
    sign-<kid hex>.cose    COSE_Key (RFC 9052 §7) with private part, mode 0600
    asrs-<kid hex>.cose    AES-CCM-16-64-128 COSE_Key (RFC 9053 §4.2), mode 0600

Two kinds of key:

* ``signing``: the AS signs tokens with the *current* one (ES256, RFC 9053
  §2.1, or EdDSA, §2.2); every signing key that is not *retired* verifies.
* ``as_rs``: symmetric keys shared by the AS and the RS; a token that carries a
  symmetric PoP key is a COSE_Encrypt0 under the *current* one (RFC 9200
  §5.8.4.3 confidentiality of the PoP key), and every non-retired one decrypts.

``rotate()`` adds a key and makes it current; the previous one stays
*active* (verification/decryption only) until ``retire(kid)``. The current
key cannot be retired. Files of retired keys are kept (for audit) but never
loaded. Manifest updates take an exclusive ``flock`` and replace the file
atomically; other processes notice with :meth:`Keystore.refresh`.

Key files readable by group or others are refused. Key material never
appears in logs, reprs or messages.

Where the keys live is :class:`Keystore`'s backend: the directory above
(:class:`KeyDirectory`, SQLite deployments), or, when the registry is
PostgreSQL, the registry store shared by every instance
(:class:`RegistryKeys`: each private COSE_Key sealed under the master key
with kind and kid as associated data, like PSKs; rotate and retire are one
serialised transaction that appends a ``keys`` change, so every instance's
change feed hears of it). The request and handshake path read memory only:
with the registry backend, :meth:`Keystore.reload_soon` reads the store in
a thread and the next :meth:`Keystore.refresh` applies what it read.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.config import Config
from gateway.errors import ConfigError, CorruptRecord, GatewayError, KeystoreError, UnknownKid
from gateway.registry.masterkey import MasterKey, insecure_mode_problem, write_private_file
from gateway.registry.store import KeyRecord, RegistryStore
from tokens import cbor
from tokens.errors import TokenError
from tokens.keys import CoseKey, Ec2Key, KeySet, OkpKey, SymmetricKey, key_from_cose
from tokens.params import Alg

MANIFEST = "manifest.json"
_LOCK = ".lock"
MANIFEST_VERSION = 1
#: Bytes of random kid; short because the kid travels in every token.
KID_SIZE = 4

KeyKind = Literal["signing", "as_rs"]
KeyStatus = Literal["current", "active", "retired"]
_PREFIX: dict[str, str] = {"signing": "sign", "as_rs": "asrs"}
_SIGNING_ALGS = (Alg.ES256, Alg.EDDSA)
#: Seconds after which the registry backend reads the key set again even
#: without a ``keys`` change (a safety net, like the registry's).
SAFETY_RELOAD = 5.0

if TYPE_CHECKING:
    from gateway.registry.registry import Registry

log = logging.getLogger(__name__)
#: A loaded key set: every entry, and the keys of the non-retired ones.
Loaded = tuple[list["KeyInfo"], dict[bytes, CoseKey]]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One manifest entry (no key material)."""

    kid: bytes
    kind: KeyKind
    alg: Alg
    status: KeyStatus
    created_at: float
    retired_at: float | None = None

    @property
    def file_name(self) -> str:
        return f"{_PREFIX[self.kind]}-{self.kid.hex()}.cose"

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid.hex(),
            "kind": self.kind,
            "alg": self.alg.name,
            "status": self.status,
            "created_at": self.created_at,
            "retired_at": self.retired_at,
        }

    @classmethod
    def from_json(cls, d: Any) -> KeyInfo:
        try:
            kind, status = d["kind"], d["status"]
            if kind not in _PREFIX or status not in ("current", "active", "retired"):
                raise ValueError(f"bad kind/status {kind!r}/{status!r}")
            return cls(
                kid=bytes.fromhex(d["kid"]),
                kind=kind,
                alg=Alg[d["alg"]],
                status=status,
                created_at=float(d["created_at"]),
                retired_at=None if d.get("retired_at") is None else float(d["retired_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"manifest entry is malformed: {exc}") from None


def _generate(kind: KeyKind, alg: Alg, kid: bytes) -> CoseKey:
    if alg == Alg.ES256:
        return Ec2Key.generate(kid)
    if alg == Alg.EDDSA:
        return OkpKey.generate(kid)
    return SymmetricKey.generate(kid, alg)


def _check_set(entries: list[KeyInfo], where: str) -> None:
    for kind in _PREFIX:
        current = [e for e in entries if e.kind == kind and e.status == "current"]
        if len(current) != 1:
            raise KeystoreError(f"{where}: need exactly one current {kind} key")


class KeyBackend(Protocol):
    """Where a :class:`Keystore`'s keys live."""

    #: For messages: a directory, a registry location.
    location: str

    def load(self) -> Loaded:
        """Read the key set now."""
        ...

    def poll(self) -> Loaded | None:
        """A newer key set if one is known without waiting, else None
        (memory or a file stat; never a database read)."""
        ...

    def request(self) -> None:
        """A change was announced: read the key set again soon."""
        ...

    def rotate(self, kind: KeyKind, alg: Alg, now: float) -> KeyInfo: ...

    def retire(self, kid: bytes, now: float) -> KeyInfo: ...

    def close(self) -> None: ...


class KeyDirectory:
    """The key directory backend (see the module docstring)."""

    def __init__(
        self,
        directory: str | Path,
        *,
        signing_alg: Alg = Alg.ES256,
        create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(directory)
        self.location = str(self.dir)
        self._signing_alg = signing_alg
        self._clock = clock
        self._stamp: tuple[int, int, int] | None = None
        if not self.exists():
            if not create:
                raise KeystoreError(f"key directory {self.dir} has no {MANIFEST}")
            self._initialise()

    def exists(self) -> bool:
        return (self.dir / MANIFEST).exists()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.dir / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KeystoreError(f"cannot lock key directory {self.dir}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _initialise(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise KeystoreError(f"cannot create key directory {self.dir}: {exc.strerror}") from None
        with self._locked():
            if (self.dir / MANIFEST).exists():  # another process was first
                return
            now = self._clock()
            entries = [
                self._new_key("signing", self._signing_alg, now, set()),
                self._new_key("as_rs", Alg.AES_CCM_16_64_128, now, set()),
            ]
            self._write_manifest(entries)

    def _check_dir(self) -> None:
        try:
            st = os.stat(self.dir)
        except OSError as exc:
            raise KeystoreError(f"cannot read key directory {self.dir}: {exc.strerror}") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise KeystoreError(
                f"key directory {self.dir} is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 700 {self.dir}"
            )

    def _new_key(self, kind: KeyKind, alg: Alg, now: float, taken: set[bytes]) -> KeyInfo:
        while True:
            kid = os.urandom(KID_SIZE)
            if kid not in taken and not (self.dir / f"{_PREFIX[kind]}-{kid.hex()}.cose").exists():
                break
        key = _generate(kind, alg, kid)
        info = KeyInfo(kid, kind, alg, "current", now)
        try:
            write_private_file(self.dir / info.file_name, key.encode(include_private=True))
        except OSError as exc:
            raise KeystoreError(f"cannot write key file in {self.dir}: {exc.strerror}") from None
        return info

    def _write_manifest(self, entries: list[KeyInfo]) -> None:
        doc = {"version": MANIFEST_VERSION, "keys": [e.to_json() for e in entries]}
        tmp = self.dir / f".{MANIFEST}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            write_private_file(tmp, (json.dumps(doc, indent=2) + "\n").encode())
            os.replace(tmp, self.dir / MANIFEST)
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise KeystoreError(f"cannot write {self.dir / MANIFEST}: {exc.strerror}") from None

    def _read_manifest(self) -> tuple[list[KeyInfo], tuple[int, int, int]]:
        path = self.dir / MANIFEST
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except OSError as exc:
            raise KeystoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            doc = json.loads(raw)
        except ValueError:
            raise KeystoreError(f"{path} is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("version") != MANIFEST_VERSION:
            raise KeystoreError(f"{path}: unsupported manifest version")
        if not isinstance(doc.get("keys"), list):
            raise KeystoreError(f"{path}: 'keys' must be a list")
        entries = [KeyInfo.from_json(d) for d in doc["keys"]]
        _check_set(entries, str(path))
        return entries, (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load_key(self, info: KeyInfo) -> CoseKey:
        path = self.dir / info.file_name
        try:
            with open(path, "rb") as f:
                problem = insecure_mode_problem(path, os.fstat(f.fileno()))
                if problem:
                    raise KeystoreError(f"refusing key file: {problem}")
                data = f.read(4096)
        except OSError as exc:
            raise KeystoreError(f"cannot read key file {path}: {exc.strerror}") from None
        try:
            key = key_from_cose(data)
        except TokenError as exc:
            raise KeystoreError(f"key file {path}: {exc.description}") from None
        if key.kid != info.kid or key.alg != info.alg or not key.has_private:
            raise KeystoreError(f"key file {path} does not match the manifest entry")
        return key

    def load(self) -> Loaded:
        self._check_dir()
        entries, stamp = self._read_manifest()
        keys = {e.kid: self._load_key(e) for e in entries if e.status != "retired"}
        self._stamp = stamp
        return entries, keys

    def every_key(self) -> list[tuple[KeyInfo, CoseKey | None]]:
        """Every entry with its key (retired ones too, when their file is
        still there), to copy the directory into a registry store."""
        entries, _ = self.load()
        out: list[tuple[KeyInfo, CoseKey | None]] = []
        for e in entries:
            try:
                out.append((e, self._load_key(e)))
            except KeystoreError:
                if e.status != "retired":
                    raise
                out.append((e, None))
        return out

    def poll(self) -> Loaded | None:
        """Reload if another process changed the manifest."""
        try:
            st = os.stat(self.dir / MANIFEST)
        except OSError as exc:
            raise KeystoreError(f"cannot read {self.dir / MANIFEST}: {exc.strerror}") from None
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp:
            return None
        return self.load()

    def request(self) -> None:
        """Nothing to do: :meth:`poll` stats the manifest."""

    def rotate(self, kind: KeyKind, alg: Alg, now: float) -> KeyInfo:
        with self._locked():
            entries, _ = self._read_manifest()
            new = self._new_key(kind, alg, now, {e.kid for e in entries})
            entries = [
                replace(e, status="active") if e.kind == kind and e.status == "current" else e
                for e in entries
            ]
            self._write_manifest([*entries, new])
        return new

    def retire(self, kid: bytes, now: float) -> KeyInfo:
        with self._locked():
            entries, _ = self._read_manifest()
            i = next((n for n, e in enumerate(entries) if e.kid == kid), None)
            if i is None:
                raise UnknownKid(f"no key with kid {kid.hex()}")
            e = entries[i]
            if e.status == "current":
                raise KeystoreError(
                    f"key {kid.hex()} is the current {e.kind} key; rotate first, then retire it"
                )
            if e.status == "retired":
                return e
            entries[i] = e = replace(e, status="retired", retired_at=now)
            self._write_manifest(entries)
        return e

    def close(self) -> None:
        pass


def _key_aad(kind: str, kid: bytes) -> bytes:
    return b"acegw:as-key:" + kind.encode("ascii") + b":" + kid


def seal_key(master_key: MasterKey, info: KeyInfo, key: CoseKey) -> KeyRecord:
    """``info`` and its private COSE_Key sealed under the master key (kind
    and kid as associated data: a sealed key copied onto another row does
    not open)."""
    sealed = master_key.seal(key.encode(include_private=True), _key_aad(info.kind, info.kid))
    return KeyRecord(
        info.kid, info.kind, info.alg.name, info.status, info.created_at, info.retired_at, sealed
    )


def _info(r: KeyRecord) -> KeyInfo:
    return KeyInfo.from_json(
        {
            "kid": r.kid.hex(),
            "kind": r.kind,
            "alg": r.alg,
            "status": r.status,
            "created_at": r.created_at,
            "retired_at": r.retired_at,
        }
    )


class RegistryKeys:
    """The registry store backend: the key set shared by every instance of
    a PostgreSQL registry (see the module docstring).

    On a store holding no key yet, the key directory's keys (if it has a
    manifest) are imported, else (``create``) a new key set is made; when
    the store has keys and the directory holds others, the store's are used
    and :attr:`note` says so (no key material). Reads after
    :meth:`request` (and every :data:`SAFETY_RELOAD` seconds) run in this
    backend's own thread; :meth:`poll` hands over a finished read."""

    def __init__(
        self,
        store: RegistryStore,
        master_key: MasterKey,
        *,
        directory: Path | None = None,
        signing_alg: Alg = Alg.ES256,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.location = f"registry {store.location}"
        self._master_key = master_key
        self._clock = clock
        self._monotonic = monotonic
        self._on_close = on_close
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._reading: concurrent.futures.Future[Loaded] | None = None
        self._wanted = False
        self._last_read = monotonic()
        #: one line for the start-up log about where the keys came from
        self.note: str | None = None
        local = KeyDirectory(directory, create=False) if _has_manifest(directory) else None
        records = store.as_keys()
        if not records:
            records = self._first_keys(local, signing_alg, create)
        elif local is not None:
            theirs = {e.kid for e, _ in local.every_key()}
            if theirs != {r.kid for r in records}:
                self.note = (
                    f"AS keys: {self.location} holds {len(records)} keys and is used; "
                    f"key directory {local.dir} holds different ones ({len(theirs)}), not used"
                )

    def _first_keys(
        self, local: KeyDirectory | None, signing_alg: Alg, create: bool
    ) -> list[KeyRecord]:
        now = self._clock()
        if local is not None:
            pairs = local.every_key()
            records = [seal_key(self._master_key, e, k) for e, k in pairs if k is not None]
            source = f"imported {len(records)} keys from key directory {local.dir}"
        elif create:
            kinds: tuple[tuple[KeyKind, Alg], ...] = (
                ("signing", signing_alg),
                ("as_rs", Alg.AES_CCM_16_64_128),
            )
            records = []
            for kind, alg in kinds:
                kid = os.urandom(KID_SIZE)
                info = KeyInfo(kid, kind, alg, "current", now)
                records.append(seal_key(self._master_key, info, _generate(kind, alg, kid)))
            source = "made a new key set"
        else:
            raise KeystoreError(
                f"{self.location} holds no AS keys (start 'acegw serve' or run 'acegw init')"
            )
        if self.store.import_as_keys(records, at=now):
            self.note = f"AS keys: {source} into {self.location}"
            return records
        return self.store.as_keys()  # another instance was first

    def _open(self, r: KeyRecord) -> CoseKey:
        try:
            data = self._master_key.open(r.sealed, _key_aad(r.kind, r.kid))
            key = key_from_cose(data)
        except (CorruptRecord, TokenError):
            raise KeystoreError(
                f"AS key {r.kid.hex()} in {self.location} does not open under the master key"
            ) from None
        if key.kid != r.kid or key.alg.name != r.alg or not key.has_private:
            raise KeystoreError(f"AS key {r.kid.hex()} in {self.location} does not match its row")
        return key

    def load(self) -> Loaded:
        records = self.store.as_keys()
        entries = [_info(r) for r in records]
        _check_set(entries, self.location)
        return entries, {r.kid: self._open(r) for r in records if r.status != "retired"}

    def request(self) -> None:
        self._wanted = True

    def poll(self) -> Loaded | None:
        done: Loaded | None = None
        reading = self._reading
        if reading is not None and reading.done():
            self._reading = None
            try:
                done = reading.result()
            except GatewayError as exc:
                log.warning("AS keys not read from %s: %s", self.location, exc.reason)
                self._wanted = True  # try again at the next round
        due = self._monotonic() - self._last_read >= SAFETY_RELOAD
        if self._reading is None and (self._wanted or due):
            self._wanted = False
            self._last_read = self._monotonic()
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="acegw-as-keys"
                )
            self._reading = self._executor.submit(self.load)
        return done

    def rotate(self, kind: KeyKind, alg: Alg, now: float) -> KeyInfo:
        kid = os.urandom(KID_SIZE)
        info = KeyInfo(kid, kind, alg, "current", now)
        record = seal_key(self._master_key, info, _generate(kind, alg, kid))
        self.store.rotate_as_key(record, at=now)
        return info

    def retire(self, kid: bytes, now: float) -> KeyInfo:
        return _info(self.store.retire_as_key(kid, at=now))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._on_close()


def _has_manifest(directory: Path | None) -> bool:
    return directory is not None and (Path(directory) / MANIFEST).exists()


class Keystore:
    """The AS keys in memory, over a backend: the key directory (default)
    or, when the registry is PostgreSQL, the registry store
    (:meth:`from_config`)."""

    def __init__(
        self,
        directory: str | Path | None = None,
        *,
        signing_alg: Alg = Alg.ES256,
        create: bool = True,
        clock: Callable[[], float] = time.time,
        backend: KeyBackend | None = None,
    ) -> None:
        if signing_alg not in _SIGNING_ALGS:
            raise KeystoreError(f"signing algorithm must be ES256 or EdDSA, not {signing_alg!r}")
        if backend is None:
            if directory is None:
                raise KeystoreError("a key directory or a backend is needed")
            backend = KeyDirectory(directory, signing_alg=signing_alg, create=create, clock=clock)
        self.backend = backend
        self.dir = Path(directory) if directory is not None else None
        self._signing_alg = signing_alg
        self._clock = clock
        self._entries: list[KeyInfo] = []
        self._keys: dict[bytes, CoseKey] = {}
        self._apply(backend.load())

    @classmethod
    def from_config(
        cls, config: Config, *, registry: Registry | None = None, **kw: Any
    ) -> Keystore:
        """The AS keys of ``config``: the key directory ``config.keys.dir``,
        or, when ``config.registry.url`` is PostgreSQL, the registry store
        (``registry`` if given, else one opened here and closed with the
        key store). New keys are made with ``config.as_.alg``."""
        from gateway.registry.postgres import is_postgres_url

        if not is_postgres_url(config.registry.url):
            return cls(config.keys.dir, signing_alg=config.as_.alg, **kw)
        from gateway.registry.registry import Registry

        owned = registry is None
        reg = registry or Registry.from_config(config, create=kw.get("create", True))
        try:
            backend = RegistryKeys(
                reg.store,
                reg.master_key,
                directory=config.keys.dir,
                signing_alg=config.as_.alg,
                on_close=reg.close if owned else lambda: None,
                **kw,
            )
            return cls(config.keys.dir, signing_alg=config.as_.alg, backend=backend, **kw)
        except BaseException:
            if owned:
                reg.close()
            raise

    def __repr__(self) -> str:
        return f"<Keystore {self.backend.location} keys={len(self._entries)}>"

    @property
    def note(self) -> str | None:
        """A line for the start-up log about where the keys came from, if any."""
        return getattr(self.backend, "note", None)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Keystore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _apply(self, loaded: Loaded) -> bool:
        entries, keys = loaded
        changed = [(e.kid, e.status) for e in entries] != [(e.kid, e.status) for e in self._entries]
        self._entries, self._keys = entries, keys
        return changed

    def refresh(self) -> bool:
        """Apply a key set changed by another process (memory or a file
        stat; a database read runs in the backend's thread, see
        :meth:`reload_soon`); True if the key set changed."""
        loaded = self.backend.poll()
        return loaded is not None and self._apply(loaded)

    def reload_soon(self) -> None:
        """A ``keys`` change was announced: the backend reads the key set
        (in its thread) and a later :meth:`refresh` applies it."""
        self.backend.request()

    # --- queries -----------------------------------------------------------------

    def _current(self, kind: KeyKind) -> CoseKey:
        for e in self._entries:
            if e.kind == kind and e.status == "current":
                return self._keys[e.kid]
        raise KeystoreError(f"no current {kind} key")  # pragma: no cover - manifest checked

    def signing_key(self) -> CoseKey:
        """The AS's current signing key (with private part)."""
        return self._current("signing")

    def verification_keys(self) -> KeySet:
        """Public halves of all non-retired signing keys, by kid."""
        return KeySet(
            self._keys[e.kid].public()
            for e in self._entries
            if e.kind == "signing" and e.status != "retired"
        )

    def as_rs_key(self) -> SymmetricKey:
        """The current AS-RS key that encrypts tokens (COSE_Encrypt0)."""
        key = self._current("as_rs")
        assert isinstance(key, SymmetricKey)  # guaranteed: as_rs keys are AES-CCM
        return key

    def decryption_keys(self) -> KeySet:
        """All non-retired AS-RS keys, by kid."""
        return KeySet(
            self._keys[e.kid] for e in self._entries if e.kind == "as_rs" and e.status != "retired"
        )

    def list(self) -> list[KeyInfo]:
        """All entries (current, active and retired)."""
        return list(self._entries)

    # --- changes --------------------------------------------------------------------

    def rotate(self, kind: KeyKind = "signing", *, alg: Alg | None = None) -> KeyInfo:
        """Add a new key of ``kind`` and make it current; the previous current
        key becomes active (still verifies/decrypts). Returns the new entry."""
        if kind not in _PREFIX:
            raise KeystoreError(f"unknown key kind {kind!r}")
        if kind == "signing":
            alg = alg or self._signing_alg
            if alg not in _SIGNING_ALGS:
                raise KeystoreError("signing keys are ES256 or EdDSA")
        else:
            alg = Alg.AES_CCM_16_64_128
        new = self.backend.rotate(kind, alg, self._clock())
        self._apply(self.backend.load())
        return new

    def retire(self, kid: bytes) -> KeyInfo:
        """Stop trusting a non-current key: tokens under it no longer verify."""
        e = self.backend.retire(kid, self._clock())
        self._apply(self.backend.load())
        return e

    def sealed_records(self, master_key: MasterKey) -> list[KeyRecord]:
        """Every key (retired ones whose file is gone excepted) sealed under
        ``master_key``, to copy into a registry store (``acegw registry
        migrate``)."""
        if isinstance(self.backend, KeyDirectory):
            pairs = self.backend.every_key()
        else:
            pairs = [(e, self._keys.get(e.kid)) for e in self._entries]
        return [seal_key(master_key, e, k) for e, k in pairs if k is not None]

    def export_public(self) -> bytes:
        """COSE_KeySet (RFC 9052 §7) of the verification keys, for an RS that
        trusts this AS (``[[rs.issuers]] keys_file``)."""
        return self.verification_keys().encode_public()

    def export_for_rs(self) -> bytes:
        """COSE_KeySet of the verification keys plus the non-retired AS-RS keys
        (secret: store with mode 0600) for an RS in external-AS mode."""
        items = [k.to_cose() for k in self.verification_keys()]
        items += [k.to_cose(include_private=True) for k in self.decryption_keys()]
        return cbor.encode(items)


def load_key_set(path: Path, *, config_key: str = "rs.issuers.keys_file") -> KeySet:
    """Read a COSE_KeySet (CBOR array of COSE_Keys, RFC 9052 §7) file, such as
    an external issuer's keys. Private parts of asymmetric keys are dropped; a
    file holding symmetric (AS-RS) keys must not be readable by group/others."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(1024 * 1024)
    except OSError as exc:
        raise ConfigError(
            f"{config_key}: cannot read {path}: {exc.strerror}", key=config_key
        ) from None
    out = KeySet()
    try:
        items = cbor.as_list(
            cbor.decode(data, what="COSE_KeySet", limit=1024 * 1024), "COSE_KeySet"
        )
        for item in items:
            k = key_from_cose(cbor.as_map(item, "COSE_Key"))
            if isinstance(k, SymmetricKey):
                problem = insecure_mode_problem(path, st)
                if problem:
                    raise ConfigError(f"{config_key}: refusing key file: {problem}", key=config_key)
                out.add(k)
            else:
                out.add(k.public())
    except TokenError as exc:
        raise ConfigError(f"{config_key}: {path}: {exc.description}", key=config_key) from None
    if not len(out):
        raise ConfigError(f"{config_key}: {path} holds no keys", key=config_key)
    return out
