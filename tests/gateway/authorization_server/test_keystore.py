"""The key directory: first start, 0600/0700 modes, rotation and retirement,
reload by another process, and COSE_KeySet export/import."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.authorization_server.keystore import MANIFEST, Keystore, load_key_set
from gateway.errors import ConfigError, KeystoreError, UnknownKid
from tokens.errors import UnknownKey
from tokens.keys import Ec2Key, OkpKey, SymmetricKey
from tokens.params import Alg


@pytest.fixture
def kdir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def test_first_start_creates_private_files(kdir: Path) -> None:
    ks = Keystore(kdir)
    assert kdir.stat().st_mode & 0o777 == 0o700
    files = sorted(p.name for p in kdir.iterdir() if not p.name.startswith("."))
    assert MANIFEST in files and len(files) == 3
    for p in kdir.iterdir():
        assert p.stat().st_mode & 0o077 == 0, p.name
    signing = ks.signing_key()
    assert isinstance(signing, Ec2Key) and signing.has_private and len(signing.kid) == 4
    as_rs = ks.as_rs_key()
    assert isinstance(as_rs, SymmetricKey) and as_rs.alg == Alg.AES_CCM_16_64_128
    verify = ks.verification_keys()
    assert len(verify) == 1 and not verify.get(signing.kid).has_private
    assert ks.decryption_keys().get(as_rs.kid) is as_rs
    assert [e.status for e in ks.list()] == ["current", "current"]
    manifest = (kdir / MANIFEST).read_text()
    assert signing.kid.hex() in manifest and "d" not in json.loads(manifest)["keys"][0]


def test_keys_survive_reopen(kdir: Path) -> None:
    first = Keystore(kdir)
    sig = first.signing_key().sign(b"tbs")
    again = Keystore(kdir, create=False)
    assert again.signing_key().kid == first.signing_key().kid
    again.verification_keys().get(first.signing_key().kid).verify(b"tbs", sig)
    nonce = bytes(13)
    ct = first.as_rs_key().encrypt(nonce, b"pt", b"")
    assert again.decryption_keys().get(first.as_rs_key().kid).decrypt(nonce, ct, b"") == b"pt"


def test_missing_directory_without_create(kdir: Path) -> None:
    with pytest.raises(KeystoreError):
        Keystore(kdir, create=False)


def test_eddsa_signing(kdir: Path) -> None:
    ks = Keystore(kdir, signing_alg=Alg.EDDSA)
    assert isinstance(ks.signing_key(), OkpKey)
    new = ks.rotate(alg=Alg.ES256)
    assert new.alg == Alg.ES256 and isinstance(ks.signing_key(), Ec2Key)
    with pytest.raises(KeystoreError):
        ks.rotate(alg=Alg.HMAC_256_64)


def test_rotate_keeps_old_key_for_verification(kdir: Path) -> None:
    ks = Keystore(kdir)
    old = ks.signing_key()
    sig = old.sign(b"token")
    new = ks.rotate()
    assert new.status == "current" and ks.signing_key().kid == new.kid != old.kid
    statuses = {e.kid: e.status for e in ks.list()}
    assert statuses[old.kid] == "active"
    verify = ks.verification_keys()
    assert len(verify) == 2
    verify.get(old.kid).verify(b"token", sig)


def test_retire(kdir: Path) -> None:
    ks = Keystore(kdir)
    old = ks.signing_key().kid
    ks.rotate()
    with pytest.raises(KeystoreError, match="rotate first"):
        ks.retire(ks.signing_key().kid)
    info = ks.retire(old)
    assert info.status == "retired" and info.retired_at is not None
    with pytest.raises(UnknownKey):
        ks.verification_keys().get(old)
    assert len(ks.verification_keys()) == 1
    assert ks.retire(old).status == "retired"  # idempotent
    with pytest.raises(UnknownKid):
        ks.retire(b"\x00\x00\x00\x00")
    assert Keystore(kdir).list() == ks.list()


def test_rotate_and_retire_as_rs_key(kdir: Path) -> None:
    ks = Keystore(kdir)
    old = ks.as_rs_key().kid
    ks.rotate("as_rs")
    assert ks.as_rs_key().kid != old
    assert old in ks.decryption_keys() and len(ks.decryption_keys()) == 2
    ks.retire(old)
    assert old not in ks.decryption_keys()


def test_other_process_sees_rotation_on_refresh(kdir: Path) -> None:
    server = Keystore(kdir)
    admin = Keystore(kdir)
    assert server.refresh() is False
    new = admin.rotate()
    assert server.signing_key().kid != new.kid
    assert server.refresh() is True
    assert server.signing_key().kid == new.kid
    assert server.refresh() is False


def test_group_readable_key_file_is_refused(kdir: Path) -> None:
    ks = Keystore(kdir)
    path = kdir / f"sign-{ks.signing_key().kid.hex()}.cose"
    os.chmod(path, 0o644)
    with pytest.raises(KeystoreError, match="chmod 600"):
        Keystore(kdir)


def test_open_key_directory_is_refused(kdir: Path) -> None:
    Keystore(kdir)
    os.chmod(kdir, 0o755)
    with pytest.raises(KeystoreError, match="chmod 700"):
        Keystore(kdir)


def test_corrupt_manifest_and_mismatched_key_file(kdir: Path) -> None:
    ks = Keystore(kdir)
    manifest = kdir / MANIFEST
    good = manifest.read_bytes()
    manifest.write_bytes(b"{not json")
    with pytest.raises(KeystoreError, match="not valid JSON"):
        Keystore(kdir)
    doc = json.loads(good)
    doc["keys"][0]["status"] = "active"  # no current signing key left
    manifest.write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="exactly one current"):
        Keystore(kdir)
    manifest.write_bytes(good)
    sig_file = kdir / f"sign-{ks.signing_key().kid.hex()}.cose"
    sig_file.unlink()
    sig_file.write_bytes(Ec2Key.generate(b"\x01\x02\x03\x04").encode(include_private=True))
    sig_file.chmod(0o600)
    with pytest.raises(KeystoreError, match="does not match"):
        Keystore(kdir)


def test_export_public_and_load_key_set(kdir: Path, tmp_path: Path) -> None:
    ks = Keystore(kdir)
    ks.rotate()
    pub = tmp_path / "pub.cbor"
    pub.write_bytes(ks.export_public())
    loaded = load_key_set(pub)
    assert {k.kid for k in loaded} == {k.kid for k in ks.verification_keys()}
    assert not any(k.has_private for k in loaded)
    assert ks.as_rs_key().kid not in loaded

    full = tmp_path / "for-rs.cbor"
    full.write_bytes(ks.export_for_rs())
    full.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key_set(full)  # holds a secret AS-RS key
    full.chmod(0o600)
    assert ks.as_rs_key().kid in load_key_set(full)

    bad = tmp_path / "bad.cbor"
    bad.write_bytes(b"\xa1\x01")
    with pytest.raises(ConfigError) as exc:
        load_key_set(bad, config_key="rs.issuers[0].keys_file")
    assert exc.value.key == "rs.issuers[0].keys_file"
    with pytest.raises(ConfigError):
        load_key_set(tmp_path / "absent.cbor")


def test_repr_has_no_key_material(kdir: Path) -> None:
    ks = Keystore(kdir)
    secret = ks.as_rs_key().secret
    assert secret.hex() not in repr(ks) and secret.hex() not in repr(ks.list())
