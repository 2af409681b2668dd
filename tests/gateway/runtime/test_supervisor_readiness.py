"""A supervisor's /readyz asks its workers, over real control socket pairs
served by the worker's own control loop, and is 503 when none of them says
ready (a fail-closed issuer's stale revocation list, draining, no answer),
200 while one does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import load_config
from gateway.operations.admin_http import AdminHttp
from gateway.runtime import supervisor as sup
from gateway.runtime import worker


class WorkerGateway:
    """What a worker's control loop calls for a readiness query."""

    def __init__(self, index: int) -> None:
        self.worker = index
        self.ready = True

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        issuer = {"stale": not self.ready, "on_stale": "fail-closed"}
        return self.ready, {"draining": False, "issuers": {"as": issuer}}


@pytest.fixture
async def supervised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Supervisor with two started workers (real socket pairs, the real
    worker control loop) and its HTTP port; yields (supervisor, gateways, url)."""
    monkeypatch.setattr(sup, "METRICS_TIMEOUT", 0.5)
    # a worker's control loop stops its process when the supervisor goes away
    monkeypatch.setattr(signal, "raise_signal", lambda sig: None)
    (tmp_path / "acegw.toml").write_text("")
    supervisor = sup.Supervisor(load_config(tmp_path / "acegw.toml", env={}), 2)
    gateways = [WorkerGateway(0), WorkerGateway(1)]
    tasks: list[asyncio.Task[Any]] = []
    writers: list[asyncio.StreamWriter] = []
    for index, gateway in enumerate(gateways):
        ours, theirs = socket.socketpair()
        slot = sup.WorkerSlot(index, socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        reader, slot.writer = await asyncio.open_unix_connection(sock=ours)
        w_reader, w_writer = await asyncio.open_unix_connection(sock=theirs)
        writers += [slot.writer, w_writer]
        channel = worker.ControlChannel(w_writer)
        tasks.append(asyncio.create_task(supervisor._read(slot, reader)))
        tasks.append(asyncio.create_task(worker._control(w_reader, channel, gateway)))
        slot.ready = True  # it reported ready at start-up
        supervisor.slots.append(slot)
    http = AdminHttp(metrics=supervisor.metrics_text, ready=supervisor.readiness, key_set=bytes)
    host, port = await http.start("127.0.0.1", 0)
    try:
        yield supervisor, gateways, f"http://{host}:{port}/readyz"
    finally:
        await http.stop()
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in writers:
            writer.close()
        for slot in supervisor.slots:
            slot.sock.close()


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, json.loads(await response.text())


async def test_readyz_follows_the_workers_own_readiness(supervised):
    _, gateways, url = supervised
    status, body = await readyz(url)
    assert status == 200 and body["ready"] is True and body["ready_workers"] == 2
    assert [w["worker"] for w in body["by_worker"]] == [0, 1]
    assert all(w["ready"] is True for w in body["by_worker"])

    gateways[0].ready = False  # one worker's issuer goes stale: still served by the other
    status, body = await readyz(url)
    assert status == 200 and body["ready_workers"] == 1
    assert body["by_worker"][0]["ready"] is False
    assert body["by_worker"][0]["issuers"]["as"]["stale"] is True

    gateways[1].ready = False  # every worker refuses devices: not ready
    status, body = await readyz(url)
    assert status == 503 and body["ready"] is False and body["ready_workers"] == 0
    assert [w["ready"] for w in body["by_worker"]] == [False, False]

    gateways[0].ready = gateways[1].ready = True
    assert (await readyz(url))[0] == 200


async def test_a_worker_that_does_not_answer_is_not_ready(supervised):
    supervisor, gateways, url = supervised
    gateways[1].ready = False
    supervisor.slots[0].writer.close()  # worker 0 can no longer be asked
    status, body = await readyz(url)
    assert status == 503 and body["ready_workers"] == 0
    assert body["by_worker"][0] == {"worker": 0, "ready": False, "reason": "no answer"}
    supervisor.slots[1].ready = False  # restarting: not asked
    status, body = await readyz(url)
    assert body["by_worker"][1] == {"worker": 1, "ready": False, "reason": "starting"}


async def test_keys_before_any_worker_reported_them_is_503_without_a_traceback(tmp_path, caplog):
    (tmp_path / "acegw.toml").write_text("")
    supervisor = sup.Supervisor(load_config(tmp_path / "acegw.toml", env={}), 1)
    http = AdminHttp(metrics=supervisor.metrics_text, ready=supervisor.readiness,
                     key_set=supervisor.key_set)  # fmt: skip
    host, port = await http.start("127.0.0.1", 0)
    try:
        url = f"http://{host}:{port}/keys"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 503
            assert "no worker has reported" in await response.text()
    finally:
        await http.stop()
    assert not [r for r in caplog.records if r.exc_info], "an expected 503 logged a traceback"
