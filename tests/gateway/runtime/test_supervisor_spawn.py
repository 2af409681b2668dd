"""A worker that cannot be started leaves no descriptor behind: the
supervisor's end of the control socket pair, the worker's end and the
configuration memfd are all closed when the executable cannot be run."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.runtime import supervisor as sup


def _open_fds() -> dict[str, str]:
    """Open descriptor -> what it is (without the listing's own, closed by now)."""
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            continue
    return fds


async def test_failed_spawn_closes_its_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "acegw.toml").write_text("")
    supervisor = sup.Supervisor(load_config(tmp_path / "acegw.toml", env={}), 1)
    missing = tmp_path / "no-such-python"
    monkeypatch.setattr(sys, "executable", str(missing))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        slot = sup.WorkerSlot(0, udp)
        before = _open_fds()
        # the errors are kept (as a caller logging or re-raising them does):
        # their frames must not be what holds the descriptors open
        errors = []
        for _ in range(3):  # a restart loop would try again and again
            with pytest.raises(FileNotFoundError) as err:
                await supervisor._spawn(slot)
            errors.append(err)
        after = _open_fds()
        leaked = {fd: what for fd, what in after.items() if before.get(fd) != what}
        assert not leaked, f"descriptors left open: {leaked}"
        assert slot.process is None and slot.writer is None


async def test_a_restart_whose_start_fails_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The executable missing for a while (an upgrade in progress): the
    restart is tried again with the backoff until it starts, instead of the
    watch task ending and the slot staying empty."""
    (tmp_path / "acegw.toml").write_text("")
    supervisor = sup.Supervisor(load_config(tmp_path / "acegw.toml", env={}), 1)
    monkeypatch.setattr(sup, "BACKOFF_MAX", 0.004)
    attempts: list[int] = []

    async def spawn(slot: sup.WorkerSlot) -> None:
        attempts.append(slot.index)
        if len(attempts) < 3:
            raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        slot = sup.WorkerSlot(0, udp)
        slot.backoff = 0.001
        await supervisor._restart(slot, 0.0)
    assert attempts == [0, 0, 0]
    failures = [r.getMessage() for r in caplog.records if "could not be started" in r.getMessage()]
    assert len(failures) == 2 and "No such file" in failures[0]

    supervisor.stopping = True  # stopping: no further attempt
    attempts.clear()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        await supervisor._restart(sup.WorkerSlot(0, udp), 0.0)
    assert attempts == []
