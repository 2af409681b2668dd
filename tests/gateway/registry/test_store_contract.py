"""The store contract, the same tests on each backend (``store_location``:
a SQLite file, a PostgreSQL database): ordering, all-or-nothing bulk adds,
revocation expiry, the pruned change log, the audit trail's filters, the
master-key check, and a Registry over the store seeing another process's
disable through its refresh."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import ClientExists, ClientNotFound, MasterKeyError, RegistryError
from gateway.registry.masterkey import MasterKey
from gateway.registry.migrations import LATEST
from gateway.registry.postgres import PostgresStore, redact
from gateway.registry.registry import Registry
from gateway.registry.store import ActionQuery, ClientRecord, KeyRecord, open_store


def _record(client_id: str, at: float = 1.0) -> ClientRecord:
    return ClientRecord(client_id, b"sealed", "/a:GET", None, ("aud",), None, True, at, None, 0)


def test_clients_ordered_by_id_bytes_and_prefix(store_location: str | Path) -> None:
    store = open_store(store_location)
    try:
        ids = ["b", "B", "a-2", "a-10", "a_1", "Z", "é"]
        store.add_clients([_record(i) for i in ids])
        assert [r.client_id for r in store.clients()] == sorted(ids)
        assert [r.client_id for r in store.clients("a-")] == ["a-10", "a-2"]
        assert store.count_clients() == len(ids)
        with pytest.raises(ClientExists):
            store.add_clients([_record("new"), _record("new")])  # duplicate inside the batch
        assert store.client("new") is None
        store.delete_client("b", at=3.0)
        with pytest.raises(ClientNotFound):
            store.delete_client("b", at=3.0)
        assert store.cutoffs(["b", "a-2"]) == {"b": 3.0}
    finally:
        store.close()


def test_revocations_never_shorten_and_purge(store_location: str | Path) -> None:
    store = open_store(store_location)
    try:
        store.revoke(b"\x01", 100.0, at=1.0)
        store.revoke(b"\x01", 50.0, at=2.0)
        store.revoke(b"\x02", 10.0, at=3.0)
        assert store.revoked() == [(b"\x02", 10.0), (b"\x01", 100.0)]
        stamp = store.change_stamp()
        assert store.purge(now=20.0, retention=5.0) == 1
        assert store.revoked() == [(b"\x01", 100.0)]
        changes = store.changes_since(0)
        assert not changes.complete  # log rows older than 15.0 are gone
        assert changes.stamp > stamp and changes.revocations
        assert store.changes_since(changes.stamp).kinds == ()
    finally:
        store.close()


def test_audit_trail_filters(store_location: str | Path) -> None:
    store = open_store(store_location)
    try:
        store.record_action(1.0, "alice", "clients add", "d1", "ok", '{"n": 1}')
        store.record_action(2.0, "bob", "clients disable", "d1", "ok", "{}")
        store.record_action(3.0, "bob", "clientsx", None, "error", "{}")
        store.record_action(4.0, "alice", "tokens revoke", None, "ok", "{}")
        assert [a.action for a in store.search_actions(ActionQuery(action="clients"))] == [
            "clients add",
            "clients disable",
        ]
        assert [a.seq for a in store.search_actions(ActionQuery(operator="bob"))] == [2, 3]
        assert [a.at for a in store.search_actions(ActionQuery(since=2.0, until=3.0))] == [2.0, 3.0]
        assert [a.at for a in store.search_actions(ActionQuery(limit=2))] == [3.0, 4.0]
        assert store.search_actions(ActionQuery(target="d1"))[0].detail == {"n": 1}
        # the sub-command match is exact on both backends: no case folding, no wildcards
        store.record_action(5.0, "carol", "Clients add", None, "ok", "{}")
        store.record_action(6.0, "carol", "c%_ients add", None, "ok", "{}")
        assert [a.at for a in store.search_actions(ActionQuery(action="clients"))] == [1.0, 2.0]
        assert [a.at for a in store.search_actions(ActionQuery(action="c%_ients"))] == [6.0]
    finally:
        store.close()


def test_master_key_check_and_registry_refresh(store_location: str | Path) -> None:
    key = MasterKey(os.urandom(32))
    with Registry(store_location, key) as mine, Registry(store_location, key) as theirs:
        theirs.load()
        psk = mine.add("dev-1", scope="/a:GET")
        assert theirs.psk_for("dev-1") is None  # loaded before the add
        theirs.refresh()
        assert theirs.psk_for("dev-1") == psk
        mine.disable("dev-1")
        assert theirs.psk_for("dev-1") == psk  # memory until refreshed
        changes = theirs.refresh()
        assert "dev-1" in changes.cut_off and theirs.psk_for("dev-1") is None
    with pytest.raises(MasterKeyError):
        Registry(store_location, MasterKey(os.urandom(32)))


def test_postgres_schema_is_versioned(pg_url: str) -> None:
    with pytest.raises(RegistryError, match="no acegw schema"):
        PostgresStore(pg_url, create=False)
    store = PostgresStore(pg_url)
    try:
        assert store.schema_version() == LATEST
    finally:
        store.close()
    again = PostgresStore(pg_url, create=False)  # migrations run once
    again.close()


def test_postgres_import_clash_by_table(pg_url: str) -> None:
    """``import_rows``' unique-key clashes, told apart by the table the
    server names: a client id twice is ClientExists, two current keys of one
    kind a RegistryError naming ``as_keys`` and its index."""
    rows = {"key_check": b"check", "cutoffs": {}, "revoked": [], "kinds": [], "actions": []}
    store = PostgresStore(pg_url)
    try:
        with pytest.raises(ClientExists):
            store.import_rows(clients=[_record("c1"), _record("c1")], at=1.0, **rows)
        keys = [
            KeyRecord(kid, "signing", "ES256", "current", 1.0, None, b"sealed")
            for kid in (b"k1", b"k2")
        ]
        with pytest.raises(RegistryError) as err:
            store.import_rows(clients=[_record("c1")], keys=keys, at=1.0, **rows)
        assert not isinstance(err.value, ClientExists)
        assert "as_keys" in str(err.value) and "as_keys_current" in str(err.value)
        assert store.count_clients() == 0
    finally:
        store.close()


def test_postgres_errors_never_quote_row_values(pg_url: str) -> None:
    """A server error's DETAIL line ("Failing row contains (...)") can
    quote a row's values, sealed keys among them; the store's error gives
    the primary message only."""
    store = PostgresStore(pg_url)
    try:
        with pytest.raises(RegistryError) as err, store._connection() as conn:
            conn.execute(
                "INSERT INTO clients (client_id, psk, scope, created_at) VALUES (%s, NULL, %s, 1)",
                ("row-marker-id", "row-marker-scope"),
            )
        assert "null value" in str(err.value) and "psk" in str(err.value)
        assert "row-marker" not in str(err.value)
    finally:
        store.close()


def test_postgres_unreachable_is_a_clear_error_without_password(tmp_path: Path) -> None:
    url = f"postgresql://acegw:s3cret@/acegw?host={tmp_path}"
    with pytest.raises(RegistryError) as err:
        PostgresStore(url, timeout=1.0)
    assert "s3cret" not in str(err.value) and "unreachable" in str(err.value)
    assert redact(url) == f"postgresql://acegw:***@/acegw?host={tmp_path}"


def test_watched_registry_reads_only_after_an_announcement(pg_url: str) -> None:
    """On PostgreSQL a watched registry's refresh reads nothing until a
    NOTIFY (or a reconnect) announces a change; then it applies it."""
    import time

    key = MasterKey(os.urandom(32))
    with Registry(pg_url, key) as admin, Registry(pg_url, key) as watched:
        admin.add("dev-1", scope="/a:GET")
        watched.load()
        assert watched.watch()
        deadline = time.monotonic() + 10
        while not watched.store_connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watched.store_connected
        watched.refresh()  # the catch-up after connecting
        reads: list[int] = []
        real = watched.store.changes_since
        watched.store.changes_since = lambda stamp: reads.append(stamp) or real(stamp)  # type: ignore[method-assign]
        for _ in range(20):
            assert not watched.refresh().client_ids
        assert reads == []  # nothing announced: memory only
        admin.disable("dev-1")
        deadline = time.monotonic() + 5
        changes = watched.refresh()
        while "dev-1" not in changes.cut_off and time.monotonic() < deadline:
            time.sleep(0.01)
            changes = watched.refresh()
        assert "dev-1" in changes.cut_off and watched.psk_for("dev-1") is None
        assert len(reads) >= 1
