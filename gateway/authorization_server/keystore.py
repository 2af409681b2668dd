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
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from gateway.config import Config
from gateway.errors import ConfigError, KeystoreError, UnknownKid
from gateway.registry.masterkey import insecure_mode_problem, write_private_file
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


class Keystore:
    """The keys of one key directory, loaded in memory."""

    def __init__(
        self,
        directory: str | Path,
        *,
        signing_alg: Alg = Alg.ES256,
        create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if signing_alg not in _SIGNING_ALGS:
            raise KeystoreError(f"signing algorithm must be ES256 or EdDSA, not {signing_alg!r}")
        self.dir = Path(directory)
        self._signing_alg = signing_alg
        self._clock = clock
        self._entries: list[KeyInfo] = []
        self._keys: dict[bytes, CoseKey] = {}
        self._stamp: tuple[int, int, int] | None = None
        if not (self.dir / MANIFEST).exists():
            if not create:
                raise KeystoreError(f"key directory {self.dir} has no {MANIFEST}")
            self._initialise()
        self._load()

    @classmethod
    def from_config(cls, config: Config, **kw: Any) -> Keystore:
        """The key directory ``config.keys.dir``, new keys with ``config.as_.alg``."""
        return cls(config.keys.dir, signing_alg=config.as_.alg, **kw)

    def __repr__(self) -> str:
        return f"<Keystore {self.dir} keys={len(self._entries)}>"

    # --- files ----------------------------------------------------------------

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
        key: CoseKey
        if alg == Alg.ES256:
            key = Ec2Key.generate(kid)
        elif alg == Alg.EDDSA:
            key = OkpKey.generate(kid)
        else:
            key = SymmetricKey.generate(kid, alg)
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
        for kind in _PREFIX:
            current = [e for e in entries if e.kind == kind and e.status == "current"]
            if len(current) != 1:
                raise KeystoreError(f"{path}: need exactly one current {kind} key")
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

    def _load(self) -> None:
        self._check_dir()
        entries, stamp = self._read_manifest()
        keys = {e.kid: self._load_key(e) for e in entries if e.status != "retired"}
        self._entries, self._keys, self._stamp = entries, keys, stamp

    def refresh(self) -> bool:
        """Reload if another process changed the manifest; True if reloaded."""
        try:
            st = os.stat(self.dir / MANIFEST)
        except OSError as exc:
            raise KeystoreError(f"cannot read {self.dir / MANIFEST}: {exc.strerror}") from None
        if (st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp:
            return False
        self._load()
        return True

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
        """All manifest entries (current, active and retired)."""
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
        with self._locked():
            entries, _ = self._read_manifest()
            new = self._new_key(kind, alg, self._clock(), {e.kid for e in entries})
            entries = [
                replace(e, status="active") if e.kind == kind and e.status == "current" else e
                for e in entries
            ]
            self._write_manifest([*entries, new])
        self._load()
        return new

    def retire(self, kid: bytes) -> KeyInfo:
        """Stop trusting a non-current key: tokens under it no longer verify."""
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
            entries[i] = e = replace(e, status="retired", retired_at=self._clock())
            self._write_manifest(entries)
        self._load()
        return e

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
