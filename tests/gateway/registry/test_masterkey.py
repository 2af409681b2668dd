"""The master key: sources (env, 0600 file), formats, and sealing."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from gateway.errors import ConfigError, CorruptRecord, MasterKeyError
from gateway.registry.masterkey import ENV_VAR, MasterKey, create_key_file, load_master_key

RAW = bytes(range(32))


def test_seal_open_roundtrip_and_binding() -> None:
    key = MasterKey(RAW)
    a = key.seal(b"psk", b"aad-1")
    b = key.seal(b"psk", b"aad-1")
    assert a != b  # fresh nonce per record
    assert key.open(a, b"aad-1") == b"psk"
    with pytest.raises(CorruptRecord):
        key.open(a, b"aad-2")
    with pytest.raises(CorruptRecord):
        MasterKey(bytes(32)).open(a, b"aad-1")
    with pytest.raises(CorruptRecord):
        key.open(b"\x02" + a[1:], b"aad-1")
    with pytest.raises(CorruptRecord):
        key.open(a[:10], b"aad-1")


@pytest.mark.parametrize(
    "text",
    [
        RAW.hex(),
        RAW.hex().upper(),
        base64.b64encode(RAW).decode(),
        base64.urlsafe_b64encode(RAW).decode().rstrip("="),
        "  " + RAW.hex() + "\n",
    ],
)
def test_env_var_formats(text: str, tmp_path: Path) -> None:
    key = load_master_key(tmp_path / "absent.key", env={ENV_VAR: text})
    sealed = key.seal(b"x", b"")
    assert MasterKey(RAW).open(sealed, b"") == b"x"
    assert "environment" in key.source
    assert RAW.hex() not in repr(key)


@pytest.mark.parametrize("text", ["not a key!", "abcd", base64.b64encode(bytes(20)).decode()])
def test_bad_env_var(text: str) -> None:
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(None, env={ENV_VAR: text})
    assert ENV_VAR in str(exc.value)
    assert isinstance(exc.value, ConfigError)


def test_key_file_created_private_and_loaded(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    created = create_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = load_master_key(path, env={})
    assert loaded.open(created.seal(b"s", b"a"), b"a") == b"s"
    with pytest.raises(MasterKeyError, match="already exists"):
        create_key_file(path)


def test_env_var_wins_over_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    create_key_file(path)
    key = load_master_key(path, env={ENV_VAR: RAW.hex()})
    assert MasterKey(RAW).open(key.seal(b"v", b""), b"") == b"v"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "master.key"
    create_key_file(path)
    os.chmod(path, mode)
    with pytest.raises(MasterKeyError) as exc:
        load_master_key(path, env={})
    msg = str(exc.value)
    assert "chmod 600" in msg and f"{mode:04o}" in msg
    assert exc.value.key == "registry.master_key_file"
    assert path.read_text().strip() not in msg


def test_missing_and_garbage_key_file(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match=r"not found.*acegw init"):
        load_master_key(tmp_path / "nope.key", env={})
    path = tmp_path / "garbage.key"
    path.write_bytes(b"\xff\xfe binary")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="not hex or base64"):
        load_master_key(path, env={})
    with pytest.raises(MasterKeyError, match="no master key"):
        load_master_key(None, env={})
