"""The registry store interface: both stores satisfy it (the contract tests
run on SQLite and on PostgreSQL, ``store_location``), callers reach SQLite
only through it, and the store holds sealed PSKs only."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from gateway.errors import ClientExists, ClientNotFound, InvalidArgument
from gateway.registry.masterkey import MasterKey
from gateway.registry.registry import Registry
from gateway.registry.sqlite import SqliteStore
from gateway.registry.store import ActionQuery, ClientRecord, RegistryStore, open_store

ROOT = Path(__file__).resolve().parents[3]


def _record(client_id: str, at: float = 1.0) -> ClientRecord:
    return ClientRecord(client_id, b"sealed", "/a:GET", None, ("aud",), None, True, at, None, 0)


def test_sqlite_store_is_a_registry_store(tmp_path: Path) -> None:
    store = open_store(tmp_path / "r.db")
    try:
        assert isinstance(store, SqliteStore) and isinstance(store, RegistryStore)
        assert store.location == str(tmp_path / "r.db")
    finally:
        store.close()


def test_only_the_store_module_names_the_sqlite_store() -> None:
    """Callers use the interface: nothing outside gateway/registry/store.py
    imports gateway.registry.sqlite (a PostgreSQL store adds a module there)."""
    importers = []
    for base in ("gateway", "bench", "examples", "device_sim"):
        for path in (ROOT / base).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                if "gateway.registry.sqlite" in names:
                    importers.append(str(path.relative_to(ROOT)))
    assert importers == ["gateway/registry/store.py"]


def test_store_rows_change_log_and_cursor(store_location: str | Path) -> None:
    with_store = open_store(store_location)
    other = open_store(store_location)  # a second process's connection
    try:
        stamp = other.change_stamp()
        with_store.add_clients([_record("a"), _record("b")])
        with pytest.raises(ClientExists):
            with_store.add_clients([_record("c"), _record("a")])  # all or none
        assert [r.client_id for r in other.clients()] == ["a", "b"]
        with_store.update_client("a", "disable", {"enabled": False}, at=5.0, cut=True)
        with pytest.raises(ClientNotFound):
            with_store.update_client("zz", "update", {"scope": "/b:GET"}, at=5.0, cut=False)
        with pytest.raises(InvalidArgument):
            with_store.update_client("a", "update", {"generation": 7}, at=5.0, cut=False)
        with_store.revoke(b"\x01", 100.0, at=6.0)
        seq = with_store.lift_bans("192.0.2.1", None, at=7.0)
        changes = other.changes_since(stamp)
        assert changes.stamp == seq == other.change_stamp()
        assert changes.client_ids == {"a", "b"} and changes.cut_off == {"a"}
        assert changes.revocations and changes.lifts == (("192.0.2.1", None),)
        a = other.client("a")
        assert a is not None and not a.enabled and a.generation == 1 and a.audiences == ("aud",)
        assert other.cutoffs() == {"a": 5.0} and other.cutoffs(["b"]) == {}
        assert other.changes_since(changes.stamp).kinds == ()
        n = with_store.record_action(8.0, "alice", "clients disable", "a", "ok", "{}")
        assert [x.seq for x in other.search_actions(ActionQuery(action="clients"))] == [n]
    finally:
        other.close()
        with_store.close()


def test_the_store_sees_sealed_psks_only(store_location: str | Path) -> None:
    key = MasterKey(os.urandom(32))
    with Registry(store_location, key) as reg:
        psk = reg.add("dev", scope="/a:GET", psk=b"p" * 32)
        record = reg.store.client("dev")
        assert record is not None and psk not in record.psk
        assert reg.psk_for("dev") == psk
