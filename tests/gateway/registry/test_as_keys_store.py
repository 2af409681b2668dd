"""The AS key set in the registry store, the same tests on each backend
(``store_location``: a SQLite file, a PostgreSQL database): import only into
an empty store, rotation keeps exactly one current key per kind (also when
two writers rotate at once), retire refuses the current key and unknown
kids, every change appends a ``keys`` change; and the key store over it
seals private keys under the master key (kind and kid bound). Also the
SQLite schema steps: a file written before versioned steps is upgraded on
open with its data kept."""

from __future__ import annotations

import concurrent.futures
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.authorization_server.keystore import KeyDirectory, Keystore, RegistryKeys
from gateway.errors import ClientExists, KeystoreError, RegistryError, UnknownKid
from gateway.registry.masterkey import MasterKey
from gateway.registry.registry import Registry
from gateway.registry.sqlite import SCHEMA_VERSION, SqliteStore
from gateway.registry.store import KeyRecord, open_store


def _refreshed(ks: Keystore) -> None:
    """Announce a change and wait for the backend's thread to read it."""
    ks.reload_soon()
    deadline = time.monotonic() + 10
    while not ks.refresh():
        assert time.monotonic() < deadline, "the key set was not read again"
        time.sleep(0.01)


def _key(kid: bytes, kind: str = "signing", status: str = "current", at: float = 1.0) -> KeyRecord:
    return KeyRecord(kid, kind, "ES256", status, at, None, b"sealed-" + kid)


def test_key_clash_names_as_keys_not_a_client(store_location: str | Path) -> None:
    """Two current keys of one kind, or one kid twice, clash on ``as_keys``:
    a RegistryError naming that table, not "a client id already exists",
    and without the rows' values."""
    store = open_store(store_location)
    try:
        for records in ([_key(b"s1"), _key(b"s2")], [_key(b"s1"), _key(b"s1", status="active")]):
            with pytest.raises(RegistryError) as err:
                store.import_as_keys(records, at=2.0)
            assert not isinstance(err.value, ClientExists)
            message = str(err.value)
            assert "as_keys" in message and "client" not in message
            assert "sealed-" not in message and "s1" not in message
            assert store.as_keys() == []  # nothing of the batch stayed
    finally:
        store.close()


def test_import_rotate_retire(store_location: str | Path) -> None:
    store = open_store(store_location)
    try:
        assert store.as_keys() == []
        stamp = store.change_stamp()
        first = [_key(b"s1"), _key(b"a1", "as_rs")]
        assert store.import_as_keys(first, at=2.0)
        assert not store.import_as_keys([_key(b"s9")], at=3.0)  # not empty any more
        assert [r.kid for r in store.as_keys()] == [b"a1", b"s1"]
        changes = store.changes_since(stamp)
        assert changes.keys and changes.kinds == (("keys", None),)

        stamp = changes.stamp
        store.rotate_as_key(_key(b"s2", at=5.0), at=5.0)
        status = {r.kid: r.status for r in store.as_keys()}
        assert status == {b"s1": "active", b"a1": "current", b"s2": "current"}
        with pytest.raises(KeystoreError, match="taken"):
            store.rotate_as_key(_key(b"s1", at=6.0), at=6.0)
        assert store.changes_since(stamp).keys

        with pytest.raises(KeystoreError, match="current"):
            store.retire_as_key(b"s2", at=7.0)
        with pytest.raises(UnknownKid):
            store.retire_as_key(b"nope", at=7.0)
        stamp = store.change_stamp()
        retired = store.retire_as_key(b"s1", at=8.0)
        assert (retired.status, retired.retired_at, retired.sealed) == (
            "retired",
            8.0,
            b"sealed-s1",
        )
        assert store.changes_since(stamp).keys
        stamp = store.change_stamp()
        assert store.retire_as_key(b"s1", at=9.0).retired_at == 8.0  # already retired: unchanged
        assert not store.changes_since(stamp).keys
        assert "sealed" not in repr(retired)
    finally:
        store.close()


def _rotate_many(location: str, seed: int, count: int) -> None:
    store = open_store(location)
    try:
        for n in range(count):
            store.rotate_as_key(_key(bytes([seed, n]), at=float(n)), at=float(n))
    finally:
        store.close()


def test_concurrent_rotations_leave_one_current_key(store_location: str | Path) -> None:
    store = open_store(store_location)
    try:
        store.import_as_keys([_key(b"s0"), _key(b"a0", "as_rs")], at=1.0)
        # two writers, each with its own store (connection), as two CLIs
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = [pool.submit(_rotate_many, str(store_location), seed, 10) for seed in (1, 2)]
            for f in done:
                f.result(timeout=60)
        records = store.as_keys()
        assert len(records) == 22
        current = [r for r in records if r.status == "current"]
        assert sorted(r.kind for r in current) == ["as_rs", "signing"]
    finally:
        store.close()


def test_key_store_over_the_registry_seals_and_shares(
    store_location: str | Path, tmp_path: Path
) -> None:
    master = MasterKey(bytes(range(32)))
    registry = Registry(store_location, master)
    try:
        kdir = tmp_path / "keys"
        local = Keystore(kdir)  # the directory an instance had before
        ks = Keystore(backend=RegistryKeys(registry.store, master, directory=kdir))
        assert ks.note is not None and "imported 2 keys" in ks.note
        assert {e.kid for e in ks.list()} == {e.kid for e in local.list()}
        assert ks.signing_key().kid == local.signing_key().kid
        # private keys are sealed: no row holds the COSE_Key in clear
        for record in registry.store.as_keys():
            assert local.signing_key().encode(include_private=True) not in record.sealed
        # a second instance: the store wins over its own, different directory
        other_dir = tmp_path / "other"
        Keystore(other_dir)
        other = Keystore(backend=RegistryKeys(registry.store, master, directory=other_dir))
        assert other.note is not None and "different ones" in other.note
        assert other.signing_key().kid == ks.signing_key().kid
        private = other.signing_key().encode(include_private=True).hex()
        assert private[-32:] not in other.note  # counts and places, no key material

        old = ks.signing_key().kid
        new = other.rotate().kid  # on "another machine"
        _refreshed(ks)
        assert ks.signing_key().kid == new and old in {k.kid for k in ks.verification_keys()}
        other.retire(old)
        _refreshed(ks)
        assert old not in {k.kid for k in ks.verification_keys()}

        # a row moved onto another kid does not open
        rec = registry.store.as_keys()[-1]
        with pytest.raises(KeystoreError, match="does not open"):
            RegistryKeys(registry.store, master)._open(replace(rec, kind="as_rs"))
        with pytest.raises(KeystoreError, match="does not open"):
            RegistryKeys(registry.store, MasterKey(bytes(32)))._open(rec)
        ks.close()
        other.close()
    finally:
        registry.close()


def test_a_store_without_keys_and_no_directory_makes_a_new_set_or_refuses(
    store_location: str | Path, tmp_path: Path
) -> None:
    master = MasterKey(bytes(range(32)))
    with Registry(store_location, master) as registry:
        with pytest.raises(KeystoreError, match="holds no AS keys"):
            RegistryKeys(registry.store, master, directory=tmp_path / "none", create=False)
        backend = RegistryKeys(registry.store, master, directory=tmp_path / "none")
        assert backend.note is not None and "new key set" in backend.note
        assert not (tmp_path / "none").exists()
        ks = Keystore(backend=backend)
        assert ks.signing_key().has_private and ks.as_rs_key().has_private
        assert sorted((e.kind, e.status) for e in ks.list()) == [
            ("as_rs", "current"),
            ("signing", "current"),
        ]
        ks.close()


# --- SQLite schema steps ------------------------------------------------------------------

#: The schema acegw wrote before versioned steps, frozen here as released
#: (not the live first step, which could drift and still pass).
_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clients (
    client_id     TEXT PRIMARY KEY,
    psk           BLOB NOT NULL,              -- sealed under the master key
    scope         TEXT NOT NULL,              -- allowed scope, text form as given
    default_scope TEXT,
    audiences     TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    public_key    BLOB,                       -- COSE_Key (public) or NULL
    enabled       INTEGER NOT NULL DEFAULT 1,
    created_at    REAL NOT NULL,
    rotated_at    REAL,
    generation    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
    cti BLOB PRIMARY KEY,
    exp REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_exp ON revoked (exp);
CREATE TABLE IF NOT EXISTS changelog (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT NOT NULL,
    client_id TEXT,
    at        REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS client_cutoffs (
    client_id TEXT PRIMARY KEY,
    at        REAL NOT NULL     -- last disable or delete: older tokens stay refused
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ban_lifts (
    seq      INTEGER PRIMARY KEY,  -- the changelog row of the lift ('lift')
    address  TEXT,                 -- NULL: any address
    identity BLOB                  -- NULL: any identity
);
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


def test_a_sqlite_registry_from_before_versioned_steps_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_V1_SCHEMA)  # the first schema, as acegw wrote it before
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute(
        "INSERT INTO clients (client_id, psk, scope, created_at) VALUES ('dev', x'01', '/a:GET', 1)"
    )
    db.execute("INSERT INTO revoked VALUES (x'0a', 99.0)")
    db.execute("INSERT INTO changelog (kind, client_id, at) VALUES ('add', 'dev', 1)")
    db.commit()
    db.close()

    store = SqliteStore(path)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 2
        assert [r.client_id for r in store.clients()] == ["dev"]
        assert store.revoked() == [(b"\x0a", 99.0)]
        assert store.change_stamp() == 1
        assert store.as_keys() == []
        assert store.import_as_keys([_key(b"s1"), _key(b"a1", "as_rs")], at=2.0)
    finally:
        store.close()
    again = SqliteStore(path)  # opening again applies nothing twice
    try:
        assert again.schema_version() == 2 and len(again.as_keys()) == 2
        rows = again._read("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [1, 2]
    finally:
        again.close()
    # an acegw from before versioned steps refuses the newer file
    db = sqlite3.connect(path)
    assert db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone() == ("2",)
    db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
    db.commit()
    db.close()
    with pytest.raises(RegistryError, match="schema version 99"):
        SqliteStore(path)


def test_directory_backend_is_the_default(tmp_path: Path) -> None:
    ks = Keystore(tmp_path / "k")
    assert isinstance(ks.backend, KeyDirectory)
    assert ks.note is None
