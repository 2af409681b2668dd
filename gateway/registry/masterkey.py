"""The master key that encrypts secrets at rest (device PSKs in the registry).

The key comes from the environment variable ``ACEGW_MASTER_KEY`` (hex or
base64, 16/24/32 bytes) or else from a key file holding the same text, which
``acegw init`` creates with mode 0600. A key file that group or others can
read is refused. Records are sealed with AES-GCM (NIST SP 800-38D) under a
fresh random 96-bit nonce each, with caller-chosen associated data (the
registry passes the client id, so a sealed record copied onto another client
does not open).

The key never appears in a repr, a log line or an error message.

This module is named ``masterkey`` rather than ``secrets`` so that it does not
shadow the standard library module of that name.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import CorruptRecord, MasterKeyError

#: Environment variable holding the master key itself (not a file name).
ENV_VAR = "ACEGW_MASTER_KEY"
#: Size of a generated master key (AES-256).
KEY_SIZE = 32
_KEY_SIZES = (16, 24, 32)
#: First byte of every sealed record: the format version.
_VERSION = b"\x01"
_NONCE_LEN = 12
_TAG_LEN = 16
_HEX = re.compile(r"[0-9a-fA-F]+")


class MasterKey:
    """An AES-GCM key that seals and opens small records.

    ``seal`` output is ``0x01 || nonce(12) || ciphertext || tag(16)``.
    """

    __slots__ = ("_aead", "source")

    def __init__(self, key: bytes, *, source: str = "memory") -> None:
        if len(key) not in _KEY_SIZES:
            raise MasterKeyError(f"master key from {source} must be 16, 24 or 32 bytes")
        self._aead = AESGCM(bytes(key))
        #: Where the key came from, for messages ("file /etc/acegw/master.key").
        self.source = source

    def __repr__(self) -> str:  # never the key
        return f"<MasterKey from {self.source}>"

    @classmethod
    def generate(cls) -> tuple[MasterKey, bytes]:
        """A fresh random key and its raw bytes (to be stored by the caller)."""
        raw = os.urandom(KEY_SIZE)
        return cls(raw, source="generated"), raw

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` bound to ``aad``
        (AES-GCM, SP 800-38D §7.1) under a fresh random nonce."""
        nonce = os.urandom(_NONCE_LEN)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, sealed: bytes, aad: bytes) -> bytes:
        """Decrypt a record made by :meth:`seal` with the same ``aad``
        (SP 800-38D §7.2). Raises :class:`CorruptRecord` if the record was
        altered, belongs to another ``aad``, or was sealed under another key."""
        if len(sealed) < 1 + _NONCE_LEN + _TAG_LEN or sealed[:1] != _VERSION:
            raise CorruptRecord("sealed record has an unknown format")
        nonce = sealed[1 : 1 + _NONCE_LEN]
        try:
            return self._aead.decrypt(nonce, sealed[1 + _NONCE_LEN :], aad)
        except InvalidTag:
            raise CorruptRecord("sealed record does not authenticate") from None


def parse_key_text(text: str, *, source: str) -> bytes:
    """Decode a master key written as hex (32/48/64 digits) or base64 /
    base64url (padding optional). A string of only hex digits of one of those
    lengths is read as hex."""
    t = "".join(text.split())
    if not t:
        raise MasterKeyError(f"master key from {source} is empty")
    if _HEX.fullmatch(t) and len(t) in (2 * n for n in _KEY_SIZES):
        return bytes.fromhex(t)
    try:
        raw = base64.b64decode(
            t.replace("-", "+").replace("_", "/") + "=" * (-len(t) % 4), validate=True
        )
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"master key from {source} is neither hex nor base64") from None
    if len(raw) not in _KEY_SIZES:
        raise MasterKeyError(
            f"master key from {source} decodes to {len(raw)} bytes; need 16, 24 or 32"
        )
    return raw


def encode_key_text(raw: bytes) -> str:
    """The text form written to key files (standard base64)."""
    return base64.b64encode(raw).decode("ascii")


def insecure_mode_problem(path: Path, st: os.stat_result) -> str | None:
    """Why a secret file with this stat is not private enough, or ``None``."""
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"{path} is accessible by group or others (mode {mode:04o}); run: chmod 600 {path}"
    return None


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data`` durably. Refuses to
    overwrite an existing file (raises ``FileExistsError``)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # in case the umask cleared bits we asked for
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def create_key_file(path: Path) -> MasterKey:
    """Generate a master key and store it in a new 0600 file (``acegw init``)."""
    key, raw = MasterKey.generate()
    try:
        write_private_file(path, (encode_key_text(raw) + "\n").encode("ascii"))
    except FileExistsError:
        raise MasterKeyError(f"master key file {path} already exists; not overwriting") from None
    except OSError as exc:
        raise MasterKeyError(f"cannot create master key file {path}: {exc.strerror}") from None
    key.source = f"file {path}"
    return key


def load_master_key(
    key_file: Path | None,
    *,
    env: Mapping[str, str] | None = None,
    config_key: str = "registry.master_key_file",
) -> MasterKey:
    """The master key from ``ACEGW_MASTER_KEY`` if set, else from ``key_file``.

    Raises :class:`MasterKeyError` (a :class:`ConfigError`) when neither is
    usable, when the file is readable by group/others, or when its content is
    not a key. ``config_key`` names the setting in messages.
    """
    env = os.environ if env is None else env
    text = env.get(ENV_VAR, "")
    if text.strip():
        source = f"environment variable {ENV_VAR}"
        return MasterKey(parse_key_text(text, source=source), source=source)
    if key_file is None:
        raise MasterKeyError(f"no master key: set {ENV_VAR} or {config_key}", key=config_key)
    try:
        fd = os.open(key_file, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MasterKeyError(
            f"{config_key}: master key file {key_file} not found "
            f"(run 'acegw init', or set {ENV_VAR})",
            key=config_key,
        ) from None
    except OSError as exc:
        raise MasterKeyError(
            f"{config_key}: cannot open master key file {key_file}: {exc.strerror}",
            key=config_key,
        ) from None
    with os.fdopen(fd, "rb") as f:
        problem = insecure_mode_problem(key_file, os.fstat(f.fileno()))
        if problem:
            raise MasterKeyError(
                f"{config_key}: refusing master key file: {problem}", key=config_key
            )
        data = f.read(4096)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MasterKeyError(
            f"{config_key}: master key file {key_file} is not hex or base64 text", key=config_key
        ) from None
    source = f"file {key_file}"
    return MasterKey(parse_key_text(text, source=source), source=source)
