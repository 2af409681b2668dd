"""The client registry on a real SQLite file: CRUD, PSKs sealed at rest,
transactions, bulk registration, change stamps across connections and the
revocation list."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.errors import (
    ClientExists,
    ClientNotFound,
    CorruptRecord,
    InvalidArgument,
    MasterKeyError,
    RegistryError,
)
from gateway.registry.masterkey import MasterKey
from gateway.registry.registry import (
    CHANGELOG_RETENTION,
    FULL_RELOAD_CHANGES,
    GENERATED_PSK_BYTES,
    GENERATED_PSK_CHARS,
    MAX_CLIENT_ID_LEN,
    MAX_PSK_LEN,
    Registry,
    generate_psk,
)
from tokens.keys import Ec2Key, SymmetricKey

KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
OTHER_KEY_HEX = "ff" * 32
B64URL = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Clock:
    """A settable clock for wall time and monotonic time."""

    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def key() -> MasterKey:
    return MasterKey(bytes.fromhex(KEY_HEX))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.sqlite3"


@pytest.fixture
def reg(db_path: Path, key: MasterKey):
    r = Registry(db_path, key, clock=Clock(), monotonic=Clock())
    yield r
    r.close()


def test_add_get_list_roundtrip(reg: Registry) -> None:
    pub = Ec2Key.generate(b"k1").public().encode()
    psk = reg.add(
        "dev-1",
        scope="/temp:GET /cfg:GET,PUT",
        default_scope="/temp:GET",
        audiences=["acegw", "other"],
        public_key=pub,
    )
    reg.add("dev-0", scope="/temp:GET", psk=b"given-psk")
    c = reg.get("dev-1")
    assert c.client_id == "dev-1"
    assert c.scope == "/temp:GET /cfg:GET,PUT"
    assert c.default_scope == "/temp:GET"
    assert c.audiences == ("acegw", "other")
    assert c.public_key == pub
    assert c.enabled and c.generation == 0 and c.rotated_at is None
    assert c.created_at == 1_000_000.0
    assert [x.client_id for x in reg.list()] == ["dev-0", "dev-1"]
    assert reg.count() == 2
    assert reg.psk_for("dev-1") == psk == reg.psk("dev-1")
    assert reg.psk_for(b"dev-0") == b"given-psk"
    assert "PSK" not in repr(c) and psk.hex() not in repr(c) and repr(psk) not in repr(c)


def test_generated_psks_are_256_bits_printable_on_request_and_distinct() -> None:
    psks = {generate_psk(printable=True) for _ in range(500)}
    assert len(psks) == 500
    for p in psks:
        assert len(p) == GENERATED_PSK_CHARS <= MAX_PSK_LEN
        assert set(p) <= B64URL
    assert GENERATED_PSK_CHARS * 6 >= 256
    binary = {generate_psk() for _ in range(500)}
    assert len(binary) == 500 and {len(p) for p in binary} == {32}


def test_unknown_client(reg: Registry) -> None:
    assert reg.psk_for("nobody") is None
    assert reg.psk_for(b"\xff\xfe") is None
    assert reg.psk_for("x" * 40) is None
    with pytest.raises(ClientNotFound) as exc:
        reg.get("nobody")
    assert exc.value.coap_code.dotted == "4.01"
    for op in (reg.disable, reg.enable, reg.delete, reg.rotate_psk):
        with pytest.raises(ClientNotFound):
            op("nobody")


def test_a_128_byte_client_id_is_a_client(reg: Registry) -> None:
    """RFC 4279 §5.3 identities of 128 bytes (the DTLS engine takes them)."""
    assert MAX_CLIENT_ID_LEN == 128
    long_id = "d" + "0123456789abcdef" * 7 + "x" * 15
    assert len(long_id) == MAX_CLIENT_ID_LEN
    psk = reg.add(long_id, scope="/a:GET")
    assert reg.psk_for(long_id) == psk and reg.get(long_id).client_id == long_id


def test_duplicate_add_keeps_original(reg: Registry) -> None:
    psk = reg.add("dev", scope="/a:GET")
    with pytest.raises(ClientExists):
        reg.add("dev", scope="/b:GET", psk=b"other")
    assert reg.get("dev").scope == "/a:GET"
    assert reg.psk_for("dev") == psk


@pytest.mark.parametrize(
    "kwargs",
    [
        {"client_id": "x" * (MAX_CLIENT_ID_LEN + 1)},
        {"client_id": ""},
        {"client_id": "-dash"},
        {"client_id": "has space"},
        {"client_id": "comma,id"},
        {"psk": b""},
        {"psk": b"p" * (MAX_PSK_LEN + 1)},
        {"scope": ""},
        {"scope": "/temp:BREW"},
        {"scope": "temp:GET"},
        {"default_scope": "/x:NOPE"},
        {"audiences": [""]},
        {"public_key": b"\x01\x02"},
        {"public_key": Ec2Key.generate(b"k").encode(include_private=True)},
        {"public_key": SymmetricKey.generate(b"k").encode(include_private=True)},
    ],
)
def test_invalid_input_is_refused(reg: Registry, kwargs: dict) -> None:
    args = {"client_id": "dev", "scope": "/a:GET", **kwargs}
    cid = args.pop("client_id")
    with pytest.raises(InvalidArgument):
        reg.add(cid, **args)
    assert reg.count() == 0


def test_disable_enable_rotate_update_delete(reg: Registry) -> None:
    psk = reg.add("dev", scope="/a:GET")
    reg.disable("dev")
    assert reg.psk_for("dev") is None
    assert reg.get("dev").enabled is False
    assert reg.generation("dev") == 1
    reg.enable("dev")
    assert reg.psk_for("dev") == psk
    new = reg.rotate_psk("dev")
    assert new != psk and len(new) == GENERATED_PSK_BYTES
    assert reg.psk_for("dev") == new
    c = reg.get("dev")
    assert c.rotated_at == 1_000_000.0 and c.generation == 3
    assert reg.rotate_psk("dev", b"chosen") == b"chosen"
    c = reg.update("dev", scope="/b:PUT", audiences=["x"])
    assert (c.scope, c.audiences, c.generation) == ("/b:PUT", ("x",), 5)
    with pytest.raises(InvalidArgument):
        reg.update("dev")
    reg.delete("dev")
    assert reg.generation("dev") is None
    assert reg.psk_for("dev") is None
    with pytest.raises(ClientNotFound):
        reg.get("dev")


def test_psk_is_encrypted_at_rest(reg: Registry, db_path: Path) -> None:
    secret = b"Zq9-psk-marker-7"
    reg.add("dev", scope="/a:GET", psk=secret)
    generated = reg.add("dev2", scope="/a:GET")
    rotated = reg.rotate_psk("dev2")
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert any(p.name.endswith("-wal") for p in files)  # WAL mode, data still in the log
    for p in files:
        raw = p.read_bytes()
        for s in (secret, generated, rotated, secret.hex().encode()):
            assert s not in raw, f"plaintext PSK found in {p.name}"
    reg.close()
    raw = db_path.read_bytes()  # after checkpoint on close
    assert secret not in raw and rotated not in raw


def test_database_files_are_private(reg: Registry, db_path: Path) -> None:
    reg.add("dev", scope="/a:GET")
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert len(files) == 3  # database, -wal, -shm
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, p.name


def test_wal_mode(reg: Registry, db_path: Path) -> None:
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_wrong_master_key_is_a_clear_error(reg: Registry, db_path: Path) -> None:
    reg.add("dev", scope="/a:GET")
    reg.close()
    wrong = MasterKey(bytes.fromhex(OTHER_KEY_HEX), source="file /etc/wrong.key")
    with pytest.raises(MasterKeyError) as exc:
        Registry(db_path, wrong)
    msg = str(exc.value)
    assert "not the key" in msg and "/etc/wrong.key" in msg and str(db_path) in msg
    assert OTHER_KEY_HEX not in msg and KEY_HEX not in msg
    assert exc.value.exit_status == 2


def test_swapped_psk_records_do_not_decrypt(reg: Registry, db_path: Path, key: MasterKey) -> None:
    psk_a = reg.add("a", scope="/a:GET")
    reg.add("b", scope="/a:GET")
    reg.close()
    with sqlite3.connect(db_path) as raw:  # an attacker with write access to the file
        raw.execute(
            "UPDATE clients SET psk = (SELECT psk FROM clients WHERE client_id = 'a') "
            "WHERE client_id = 'b'"
        )
    r = Registry(db_path, key)
    try:
        assert r.psk_for("a") == psk_a
        with pytest.raises(CorruptRecord) as exc:
            r.psk_for("b")
        assert psk_a.hex() not in str(exc.value) and repr(psk_a) not in str(exc.value)
        with pytest.raises(CorruptRecord):
            r.psk("b")
    finally:
        r.close()


def test_tampered_psk_record_does_not_decrypt(reg: Registry, db_path: Path, key: MasterKey) -> None:
    reg.add("a", scope="/a:GET")
    reg.close()
    with sqlite3.connect(db_path) as raw:
        (sealed,) = raw.execute("SELECT psk FROM clients").fetchone()
        flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
        raw.execute("UPDATE clients SET psk = ?", (flipped,))
    with Registry(db_path, key) as r, pytest.raises(CorruptRecord):
        r.psk_for("a")


def test_failure_inside_transaction_rolls_back(
    reg: Registry, db_path: Path, key: MasterKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    psk = reg.add("dev", scope="/a:GET")
    stamp = reg.change_stamp()

    def boom(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reg.store, "_log_change", boom)  # fails after the UPDATE ran
    with pytest.raises(RuntimeError):
        reg.rotate_psk("dev")
    with pytest.raises(RuntimeError):
        reg.delete("dev")
    monkeypatch.undo()
    with Registry(db_path, key) as other:
        assert other.psk_for("dev") == psk
        assert other.generation("dev") == 0
        assert other.change_stamp() == stamp
    assert reg.psk_for("dev") == psk
    reg.disable("dev")  # the connection is usable after the rollback
    assert reg.generation("dev") == 1


def test_crash_mid_write_leaves_old_record(reg: Registry, db_path: Path, key: MasterKey) -> None:
    """A process that dies inside the write transaction (after the UPDATE)
    leaves the previous record: SQLite's WAL never exposes the half-done write."""
    psk = reg.add("dev", scope="/a:GET")
    reg.close()
    code = f"""
import os
from gateway.registry.masterkey import MasterKey
from gateway.registry.registry import Registry
r = Registry({str(db_path)!r}, MasterKey(bytes.fromhex({KEY_HEX!r})))
def crash(*a):
    os._exit(3)
r.store._log_change = crash
r.rotate_psk("dev")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr.decode()
    with Registry(db_path, key) as r:
        assert r.psk_for("dev") == psk
        assert r.get("dev").generation == 0
        assert r.get("dev").rotated_at is None


def test_bulk_add_two_thousand_quickly(reg: Registry) -> None:
    t0 = time.perf_counter()
    created = reg.bulk_add(2000, "d-", "/temp:GET", audiences=["acegw"])
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"bulk_add of 2000 took {elapsed:.2f}s"
    ids = [cid for cid, _ in created]
    assert ids[0] == "d-0000" and ids[-1] == "d-1999"
    assert len(set(ids)) == 2000 and len({p for _, p in created}) == 2000
    assert reg.count() == 2000
    for cid, psk in created[::250]:
        assert reg.psk_for(cid) == psk
        assert reg.get(cid).audiences == ("acegw",)
    more = reg.bulk_add(3, "d-", "/temp:GET")
    assert [cid for cid, _ in more] == ["d-2000", "d-2001", "d-2002"]


def test_bulk_add_is_all_or_nothing(reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    reg.add("keep", scope="/a:GET")
    real = reg.store._db  # type: ignore[attr-defined]

    class Crashing:
        """The connection, failing at the change log once the rows are in."""

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

        def executemany(self, sql: str, rows: object) -> object:
            if "changelog" in sql:
                raise OSError("crash")
            return real.executemany(sql, rows)

    monkeypatch.setattr(reg.store, "_db", Crashing())
    with pytest.raises(OSError):
        reg.bulk_add(50, "x-", "/a:GET")
    monkeypatch.undo()
    assert [c.client_id for c in reg.list()] == ["keep"]


def test_bulk_add_refuses_bad_arguments(reg: Registry) -> None:
    with pytest.raises(InvalidArgument):
        reg.bulk_add(0, "d-", "/a:GET")
    with pytest.raises(InvalidArgument):
        reg.bulk_add(10, "p" * (MAX_CLIENT_ID_LEN - 2), "/a:GET")  # ids would exceed the limit
    assert reg.count() == 0


def test_change_seen_by_second_connection(db_path: Path, key: MasterKey) -> None:
    mono = Clock(0.0)
    admin = Registry(db_path, key)
    worker = Registry(db_path, key, monotonic=mono, poll_interval=0.5)
    try:
        psk = admin.add("dev", scope="/a:GET")
        assert worker.poll() is not None
        assert worker.psk_for("dev") == psk  # now in memory
        stamp = worker.change_stamp()
        admin.disable("dev")
        assert worker.change_stamp() > stamp  # visible at once to a direct query
        changes = worker.changes_since(stamp)
        assert changes.client_ids == {"dev"} and changes.complete and not changes.revocations
        assert worker.psk_for("dev") == psk  # memory holds until the next poll
        assert worker.poll() is None  # not due yet
        assert worker.psk_for("dev") == psk
        mono.t += 0.5
        assert worker.poll() is not None  # within one poll interval
        assert worker.psk_for("dev") is None
        admin.enable("dev")
        new = admin.rotate_psk("dev")
        worker.refresh()
        assert worker.psk_for("dev") == new
        admin.delete("dev")
        worker.refresh()
        assert worker.psk_for("dev") is None
        assert worker.generation("dev") is None
    finally:
        worker.close()
        admin.close()


def test_negative_cache_is_invalidated_by_add_elsewhere(db_path: Path, key: MasterKey) -> None:
    mono = Clock(0.0)
    with Registry(db_path, key) as admin, Registry(db_path, key, monotonic=mono) as worker:
        assert worker.psk_for("late") is None
        psk = admin.add("late", scope="/a:GET")
        assert worker.psk_for("late") is None  # memory only, until the change log is applied
        worker.refresh()
        assert worker.psk_for("late") == psk


def test_revocation_list(db_path: Path, key: MasterKey) -> None:
    mono = Clock(0.0)
    with Registry(db_path, key) as admin, Registry(db_path, key, monotonic=mono) as worker:
        mono.t += 1
        assert not worker.is_revoked(b"\x01\x02")
        stamp = worker.change_stamp()
        admin.revoke(b"\x01\x02", exp=1000.0)
        admin.revoke(b"\x01\x02", exp=500.0)  # never shortens
        admin.revoke(b"\x03", exp=100.0)
        assert admin.is_revoked(b"\x01\x02")
        assert worker.changes_since(stamp).revocations
        worker.refresh()
        assert worker.is_revoked(b"\x01\x02") and worker.is_revoked(b"\x03")
        assert admin.revoked() == [(b"\x03", 100.0), (b"\x01\x02", 1000.0)]
        assert admin.purge_expired(now=99.0) == 0
        assert admin.purge_expired(now=101.0) == 1
        assert admin.revoked() == [(b"\x01\x02", 1000.0)]
        assert not admin.is_revoked(b"\x03")
        worker.refresh()
        assert not worker.is_revoked(b"\x03") and worker.is_revoked(b"\x01\x02")
        with pytest.raises(InvalidArgument):
            admin.revoke(b"", 1.0)


def test_changes_since_reports_pruned_log(db_path: Path, key: MasterKey) -> None:
    clock = Clock(1000.0)
    with Registry(db_path, key, clock=clock) as r:
        r.add("a", scope="/a:GET")
        r.add("b", scope="/a:GET")
        old = r.change_stamp()
        clock.t += CHANGELOG_RETENTION + 10
        r.add("c", scope="/a:GET")
        r.purge_expired(clock.t)
        assert not r.changes_since(0).complete
        recent = r.changes_since(old)
        assert recent.complete and recent.client_ids == {"c"}
        assert r.change_stamp() >= old + 1


def test_not_a_registry_file(tmp_path: Path, key: MasterKey) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError):
        Registry(bogus, key)
    with pytest.raises(RegistryError):
        Registry(tmp_path / "missing.db", key, create=False)


def test_psk_for_is_cheap(reg: Registry) -> None:
    reg.add("dev", scope="/a:GET")
    reg.psk_for("dev")
    t0 = time.perf_counter()
    for _ in range(20_000):
        reg.psk_for("dev")
    per_call = (time.perf_counter() - t0) / 20_000
    assert per_call < 50e-6, f"psk_for took {per_call * 1e6:.1f} us"


def test_change_stamps_chain_without_gaps(db_path: Path, key: MasterKey) -> None:
    with Registry(db_path, key) as admin, Registry(db_path, key) as worker:
        admin.add("a", scope="/a:GET")
        admin.add("b", scope="/a:GET")
        first = worker.changes_since(0)
        assert first.client_ids == {"a", "b"} and first.stamp == worker.change_stamp()
        assert first.cut_off == frozenset()  # added clients' sessions go on
        admin.disable("a")
        second = worker.changes_since(first.stamp)
        assert second.client_ids == {"a"} and second.stamp > first.stamp
        assert second.cut_off == {"a"}
        assert worker.changes_since(second.stamp).client_ids == frozenset()
        admin.revoke(b"\x07", 10.0)
        third = worker.changes_since(second.stamp)
        assert third.revocations and third.client_ids == frozenset()
        admin.enable("a")
        admin.rotate_psk("b")
        fourth = worker.changes_since(third.stamp)
        assert fourth.client_ids == {"a", "b"} and fourth.cut_off == {"b"}


def test_ban_lifts_travel_through_the_change_log(reg: Registry, db_path: Path, key: MasterKey):
    """``acegw bans lift`` in one process reaches the workers in others:
    each finds the lift, in order, after its change stamp."""
    stamp = reg.change_stamp()
    with Registry(db_path, key) as other:
        other.lift_bans("192.0.2.7", None)
        other.lift_bans(None, b"acc-0001")
        other.add("late", psk=b"k" * 16, scope="/a:GET")
    changes = reg.changes_since(stamp)
    assert changes.lifts == (("192.0.2.7", None), (None, b"acc-0001"))
    assert changes.client_ids == frozenset({"late"})
    assert reg.changes_since(changes.stamp).lifts == ()


def test_a_bulk_add_elsewhere_is_applied_in_one_pass(db_path: Path, key: MasterKey) -> None:
    """More than FULL_RELOAD_CHANGES changed clients: the view is read again
    at once, not one query per client (housekeeping must not stall)."""
    with Registry(db_path, key) as admin, Registry(db_path, key) as worker:
        assert worker.psk_for("bulk-0000") is None  # the view is loaded
        added = admin.bulk_add(FULL_RELOAD_CHANGES + 1, "bulk-", "/a:GET", psk_bytes=16)
        statements: list[str] = []
        worker.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        changes = worker.refresh()
        worker.store._db.set_trace_callback(None)  # type: ignore[attr-defined]
        assert len(changes.client_ids) == len(added)
        assert len(statements) < 10, statements[:20]
        assert all(worker.psk_for(cid) == psk for cid, psk in added)


def test_store_connected_reports_a_failed_read(reg: Registry, db_path: Path) -> None:
    """/readyz and ``acegw_registry_connected`` read ``store_connected``: it
    turns false when the refresh cannot read the store, and true again once
    a read succeeds (SQLite has no feed to ask)."""
    reg.refresh()
    assert reg.store_connected
    other = sqlite3.connect(db_path, isolation_level=None)
    try:
        other.execute("ALTER TABLE changelog RENAME TO changelog_away")
        with pytest.raises(RegistryError):
            reg.refresh()
        assert not reg.store_connected
        other.execute("ALTER TABLE changelog_away RENAME TO changelog")
    finally:
        other.close()
    reg.refresh()
    assert reg.store_connected
