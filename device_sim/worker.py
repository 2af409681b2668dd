"""One simulator worker: drives a slice of the devices on one asyncio loop.

The :class:`Worker` owns the DTLS client pool (one tinydtls context, one UDP
socket per device), one timer per device (``loop.call_at`` at the device's
:attr:`~device_sim.device.Device.deadline`), and a monitor that once per
second samples the connected-device gauge, the worker's own CPU use, RSS and
event-loop lag, and hands a progress snapshot to a callback. When the run's
duration is over, every device closes its session (close_notify) and the
worker returns its report (:meth:`device_sim.stats.Recorder.report`).

The worker is saturated (and says so in the report) when, in a second, it
used more than :data:`SATURATED_CPU` of a core or its event loop ran more than
:data:`SATURATED_LAG` late: then latencies measure the simulator, not the
gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import resource
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from .device import Device
from .device_state import RequestMix
from .dtls_client import Connection, DtlsClientPool
from .histogram import Histogram
from .scenario import DeviceSpec, Scenario, ScenarioError
from .stats import Recorder

__all__ = ["Worker", "expand_addresses", "open_files_needed", "raise_open_files"]

log = logging.getLogger(__name__)

#: CPU share of one core above which a second counts as saturated.
SATURATED_CPU = 0.90
#: Event-loop lag (seconds) above which a second counts as saturated.
SATURATED_LAG = 0.10
#: File descriptors a worker needs besides one per device.
FD_RESERVE = 64
_LAG_TICK = 0.05


def open_files_needed(devices: int, roles: Sequence[str | None] = ()) -> int:
    """Descriptors one worker needs: a socket per device (a flooding device
    may briefly hold two) plus a reserve."""
    return devices + sum(1 for r in roles if r == "handshake_flood") + FD_RESERVE


def raise_open_files(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (never above it) and
    return ``(soft, hard)``; the caller compares with ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft, hard


def expand_addresses(items: Sequence[str]) -> list[str]:
    """Source addresses from addresses and networks (``127.0.1.0/24`` gives
    its hosts), each checked to be a loopback address of this machine."""
    out: list[str] = []
    for item in items:
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ScenarioError(f"source address {item!r} is not an address or network") from None
        hosts: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = (
            [net.network_address] if net.num_addresses == 1 else list(net.hosts())
        )
        for addr in hosts[:65536]:
            if not addr.is_loopback:
                raise ScenarioError(f"source address {addr} is not a loopback address")
            out.append(str(addr))
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Slot:
    """The driver's side of one device: its connection, kept socket, raw
    (flood) connection and timer."""

    __slots__ = ("bind", "conn", "dev", "handle", "handle_at", "kept", "raw")

    def __init__(self, dev: Device, bind: str | None) -> None:
        self.dev = dev
        self.bind = bind
        self.conn: Connection | None = None
        self.kept: socket.socket | None = None
        self.raw: Connection | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.handle_at = math.inf


Progress = Callable[[dict[str, Any]], None]


class Worker:
    """Runs ``devices`` (with their ``roles``) of ``scenario`` until its
    duration is over or :meth:`stop` is called."""

    def __init__(
        self,
        scenario: Scenario,
        devices: Sequence[DeviceSpec],
        roles: Sequence[str | None],
        *,
        worker_id: int = 0,
        shard: str = "1/1",
        progress: Progress | None = None,
        start_at: float | None = None,
    ) -> None:
        self.sc = scenario
        self.specs = list(devices)
        self.roles = list(roles)
        self.worker_id = worker_id
        self.shard = shard
        self.progress = progress
        self.start_at_epoch = start_at
        self.sources = expand_addresses(scenario.source_addresses)
        self.slots: list[_Slot] = []
        self.pool: DtlsClientPool | None = None
        self.rec = Recorder()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lag = Histogram()
        self._lag_second = 0.0
        self.saturated_seconds = 0
        self.cpu_seconds = 0.0
        self.rss_peak = 0
        self.warnings: list[str] = []
        self.send_dropped = 0

    def stop(self) -> None:
        """End the run early (e.g. on Ctrl-C); :meth:`run` then reports."""
        if self._stop is not None:
            self._stop.set()

    # --- SessionEvents ---------------------------------------------------------------

    def dtls_connected(self, conn: Connection) -> None:
        slot: _Slot = conn.owner
        if slot.conn is conn:
            slot.dev.connected(self._now())
            self._sync(slot)

    def dtls_data(self, conn: Connection, data: bytes) -> None:
        slot: _Slot = conn.owner
        if slot.conn is conn:
            slot.dev.datagram(data, self._now())
            self._sync(slot)

    def dtls_closed(self, conn: Connection, reason: str) -> None:
        slot: _Slot = conn.owner
        if slot.conn is conn:
            slot.conn = None
            if slot.kept is None:  # reconnect from the same source port
                slot.kept = conn.sock
            else:
                conn.sock.close()
            slot.dev.closed(self._now(), reason)
            self._sync(slot)

    def raw_datagram(self, conn: Connection, data: bytes) -> None:
        slot: _Slot = conn.owner
        if slot.raw is conn:
            slot.dev.raw_datagram(data, self._now())
            self._sync(slot)

    # --- driving devices -------------------------------------------------------------

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _sync(self, slot: _Slot) -> None:
        """Carry out the device's actions, then (re)arm its timer."""
        dev = slot.dev
        while dev.actions:
            actions, dev.actions = dev.actions, []
            for action in actions:
                self._perform(slot, action)
        deadline = dev.deadline
        if deadline != slot.handle_at:
            if slot.handle is not None:
                slot.handle.cancel()
                slot.handle = None
            slot.handle_at = deadline
            if deadline != math.inf:
                assert self._loop is not None
                slot.handle = self._loop.call_at(deadline, self._fire, slot)

    def _fire(self, slot: _Slot) -> None:
        slot.handle = None
        slot.handle_at = math.inf
        slot.dev.timer(self._now())
        self._sync(slot)

    def _perform(self, slot: _Slot, action: tuple[Any, ...]) -> None:
        pool = self.pool
        assert pool is not None
        kind = action[0]
        dev = slot.dev
        if kind == "send":
            conn = slot.conn
            if conn is None or not pool.send(conn, action[1]):
                self.send_dropped += 1
        elif kind == "connect":
            if slot.conn is not None:
                pool.close(slot.conn)
                slot.conn = None
            sock = slot.kept
            slot.kept = None
            if action[1] and sock is not None:
                sock.close()
                sock = None
            try:
                if sock is None:
                    sock = pool.new_socket(slot.bind)
                slot.conn = pool.open(slot, dev.identity, dev.psk, sock=sock)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                reason = "emfile" if exc.errno in (23, 24) else "error"
                dev.connect_error(self._now(), reason)
        elif kind == "close":
            _, abrupt, keep = action
            if slot.conn is not None:
                conn = slot.conn
                slot.conn = None
                pool.close(conn, abrupt=abrupt, keep_socket=keep)
                if keep:
                    slot.kept = conn.sock
            if slot.raw is not None:
                pool.close(slot.raw)
                slot.raw = None
        elif kind == "raw_open":
            if slot.raw is not None:
                pool.close(slot.raw)
                slot.raw = None
            try:
                slot.raw = pool.open(slot, b"", b"", sock=pool.new_socket(slot.bind), raw=True)
            except OSError:
                dev.rec.error("socket_error")
        elif kind == "raw" and slot.raw is not None:
            pool.send_raw(slot.raw, action[1])

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        """Run the devices; return this worker's report."""
        loop = self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.start_at_epoch is not None:
            delay = self.start_at_epoch - time.time()
            if delay > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        self.rec.epoch_offset = time.time() - loop.time()
        started_epoch = time.time()
        self.pool = DtlsClientPool((self.sc.host, self.sc.port), self)
        t0 = loop.time()
        mix = RequestMix(self.sc.requests)
        n = len(self.specs)
        sources = self.sources
        for j, (spec, role) in enumerate(zip(self.specs, self.roles, strict=True)):
            start = t0 + (self.sc.ramp_up * j / n if n else 0.0)
            dev = Device(spec, self.sc, self.rec, role=role, start_at=start, mix=mix)
            slot = _Slot(dev, sources[spec.index % len(sources)] if sources else None)
            self.slots.append(slot)
            dev.start(t0)
            self._sync(slot)
        monitor = asyncio.create_task(self._monitor(t0, started_epoch))
        lag = asyncio.create_task(self._lag_probe())
        try:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.sc.duration)
        finally:
            for task in (monitor, lag):
                task.cancel()
            for task in (monitor, lag):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._shutdown()
        ended_epoch = time.time()
        await asyncio.sleep(0)  # let close_notify datagrams leave
        return self._report(started_epoch, ended_epoch)

    def _shutdown(self) -> None:
        now = self._now()
        for slot in self.slots:
            slot.dev.stop(now)
            self._sync(slot)
            if slot.handle is not None:
                slot.handle.cancel()
                slot.handle = None
            if slot.kept is not None:
                slot.kept.close()
                slot.kept = None
        if self.pool is not None:
            self.pool.shutdown()

    async def _lag_probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(_LAG_TICK)
            late = loop.time() - before - _LAG_TICK
            self.lag.record(int(late * 1_000_000))
            self._lag_second = max(self._lag_second, late)

    async def _monitor(self, t0: float, started_epoch: float) -> None:
        loop = asyncio.get_running_loop()
        cpu_before = time.process_time()
        cpu_start = cpu_before
        wall_before = loop.time()
        tick = 1
        while True:
            await asyncio.sleep(max(0.0, t0 + tick - loop.time()))
            tick += 1
            now = loop.time()
            cpu = time.process_time()
            share = (cpu - cpu_before) / max(1e-6, now - wall_before)
            cpu_before, wall_before = cpu, now
            self.cpu_seconds = cpu - cpu_start
            rss = _rss_bytes()
            self.rss_peak = max(self.rss_peak, rss)
            saturated = share > SATURATED_CPU or self._lag_second > SATURATED_LAG
            self._lag_second = 0.0
            if saturated:
                self.saturated_seconds += 1
            connected = sum(1 for s in self.slots if s.dev.session)
            self.rec.connected(now - 0.5, connected)
            if self.progress is not None:
                self.progress(self._snapshot(now - t0, connected, share, rss, saturated))

    def _snapshot(
        self, elapsed: float, connected: int, cpu: float, rss: int, saturated: bool
    ) -> dict[str, Any]:
        rec = self.rec
        return {
            "worker": self.worker_id,
            "elapsed": round(elapsed, 3),
            "duration": self.sc.duration,
            "devices": len(self.slots),
            "connected": connected,
            "counters": dict(rec.counters),
            "errors": dict(rec.errors),
            "findings": sum(c.get("finding", 0) for c in rec.attack_outcomes.values()),
            "request_histogram": rec.histograms["request"].to_dict(),
            "cpu": round(cpu, 3),
            "rss_mb": round(rss / 2**20, 1),
            "saturated": saturated,
        }

    def _report(self, started: float, ended: float) -> dict[str, Any]:
        attackers: dict[str, int] = {}
        for role in self.roles:
            if role is not None:
                attackers[role] = attackers.get(role, 0) + 1
        normal = [s.dev for s in self.slots if s.dev.role is None]
        devices = {
            "simulated": len(self.slots),
            "normal": len(normal),
            "attackers": attackers,
            "normal_connected": sum(1 for d in normal if d.ever_connected),
            "normal_with_token": sum(1 for d in normal if d.got_token),
            "normal_with_success": sum(1 for d in normal if d.succeeded),
        }
        if self.saturated_seconds:
            self.warnings.append(
                f"worker {self.worker_id} was saturated for {self.saturated_seconds} s "
                f"(CPU > {SATURATED_CPU:.0%} of a core or event loop > "
                f"{SATURATED_LAG * 1000:.0f} ms late): latencies include simulator delay; "
                "use more --workers"
            )
        pool = self.pool
        simulator = {
            "workers": [
                {
                    "worker": self.worker_id,
                    "shard": self.shard,
                    "pid": os.getpid(),
                    "devices": len(self.slots),
                    "cpu_seconds": round(self.cpu_seconds, 3),
                    "cpu_share": round(self.cpu_seconds / max(1e-6, ended - started), 3),
                    "rss_peak_mb": round(self.rss_peak / 2**20, 1),
                    "loop_lag_p99_ms": self.lag.percentile(99) / 1000,
                    "loop_lag_max_ms": self.lag.max / 1000,
                    "saturated_seconds": self.saturated_seconds,
                    "datagrams_sent": pool.datagrams_sent if pool else 0,
                    "datagrams_received": pool.datagrams_received if pool else 0,
                    "sends_without_session": self.send_dropped,
                }
            ],
            "warnings": list(self.warnings),
        }
        return self.rec.report(
            scenario=self.sc.summary(),
            shard=self.shard,
            started=started,
            ended=ended,
            devices=devices,
            simulator=simulator,
        )
