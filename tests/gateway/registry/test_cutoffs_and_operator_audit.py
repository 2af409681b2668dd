"""The registry's token cut-off per client (disable means disable) and the
operators' audit trail next to it, on a real SQLite file, seen from a
second connection as another process would."""

from __future__ import annotations

import getpass
import os

import pytest

from gateway.registry.masterkey import MasterKey
from gateway.registry.operator_audit import OperatorAudit, operator_name
from gateway.registry.registry import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.25

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> MasterKey:
    return MasterKey(os.urandom(32))


def test_disable_records_a_cut_off_that_outlives_enable_and_delete(tmp_path, key):
    clock = Clock()
    path = tmp_path / "registry.db"
    with Registry(path, key, clock=clock) as reg:
        reg.add("dev-1", scope="/t:GET")
        assert reg.status("dev-1").cutoff is None and not reg.status("dev-1").refuses(1)
        assert reg.status("nobody") is None
        with Registry(path, key) as other:
            assert other.status("dev-1").enabled  # in the other process's memory
            reg.disable("dev-1")
            assert other.status("dev-1").enabled  # until it applies the change log
            other.refresh()
            status = other.status("dev-1")
            assert (status.exists, status.enabled, status.cutoff) == (True, False, clock.now)
        clock.now += 5
        reg.enable("dev-1")
        status = reg.status("dev-1")
        assert status.enabled and status.cutoff == clock.now - 5
        assert status.refuses(int(clock.now - 5)) and status.refuses(None)
        assert not status.refuses(int(clock.now))
        changes = reg.changes_since(0)
        assert [k for k, _ in changes.kinds] == ["add", "disable", "enable"]
        clock.now += 5
        reg.delete("dev-1")
        gone = reg.status("dev-1")
        assert (gone.exists, gone.enabled, gone.cutoff) == (False, False, clock.now)
        reg.add("dev-1", scope="/t:GET")  # the id again: its old tokens stay refused
        assert reg.status("dev-1").refuses(int(clock.now))


def test_operator_actions_are_kept_and_searched(tmp_path, key):
    clock = Clock()
    path = tmp_path / "registry.db"
    Registry(path, key).close()
    with OperatorAudit(path, clock=clock) as trail:
        trail.record("clients disable", "dev-1", "ok", operator="alice")
        clock.now += 60
        trail.record("clients enable", "dev-1", "ok", {"note": "x"}, operator="bob")
        clock.now += 60
        trail.record("tokens revoke", "ab01", "refused: bad", operator="alice")
        with pytest.raises(TypeError):
            trail.record("clients add", "dev-2", "ok", {"psk": b"secret"})
    with OperatorAudit(path) as other:  # another connection, as another process
        assert [a.action for a in other.search(target="dev-1")] == [
            "clients disable",
            "clients enable",
        ]
        assert [a.target for a in other.search(action="clients")] == ["dev-1", "dev-1"]
        assert [a.operator for a in other.search(since=clock.now - 90)] == ["bob", "alice"]
        assert [a.action for a in other.search(limit=1)] == ["tokens revoke"]
        assert other.search(operator="alice", until=clock.now - 100)[0].outcome == "ok"
        assert other.search(target="dev-1")[1].detail == {"note": "x"}
    user = getpass.getuser()
    assert operator_name({}) == user
    assert operator_name({"SUDO_USER": "carol"}) == f"{user} (sudo by carol)"
