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

Source addresses (:class:`SourcePlan`): the scenario's ``[target]
source_addresses``, or, when none are given and the gateway is on an IPv4
loopback address, one address of ``127.128.0.0/9`` per device (so a gateway
that limits or locks out per address sees a fleet, not one peer); the
report says which were used. The worker also gives attackers what their
kind needs: a victim to steal a token from, devices to name in wrong-PSK
handshakes (with another address than the attacker's), a second address
for the honest handshakes during a half-open flood.
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
from .device_state import LockoutWatch, RequestMix
from .dtls_client import Connection, DtlsClientPool
from .flood import MAX_OPEN, HalfOpenFlood
from .histogram import Histogram
from .scenario import DeviceSpec, Scenario, ScenarioError
from .stats import Recorder

__all__ = [
    "SourcePlan",
    "Worker",
    "expand_addresses",
    "open_files_needed",
    "raise_open_files",
    "resolve_target",
]

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
    flooding = sum(1 for r in roles if r == "handshake_flood")
    half_open = sum(MAX_OPEN + 1 for r in roles if r == "half_open_flood")
    return devices + flooding + half_open + FD_RESERVE


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


#: The default source network on an IPv4 loopback target: one address per device.
DEFAULT_LOOPBACK_SOURCES = ipaddress.IPv4Network("127.128.0.0/9")


def resolve_target(host: str, port: int) -> tuple[int, Any]:
    """``(family, sockaddr)`` of the gateway; ScenarioError (a one-line
    message) when the host does not resolve."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise ScenarioError(f"target host {host!r} does not resolve: {reason}") from None
    return info[0], info[4]


class SourcePlan:
    """Which local address each device sends from (see module doc)."""

    def __init__(self, scenario: Scenario) -> None:
        family, sockaddr = resolve_target(scenario.host, scenario.port)
        self.explicit = expand_addresses(scenario.source_addresses)
        self.spread = False
        if self.explicit:
            self.mode = "configured ([target] source_addresses)"
        elif family == socket.AF_INET and ipaddress.ip_address(sockaddr[0]).is_loopback:
            self.spread = True
            self.mode = f"one per device from {DEFAULT_LOOPBACK_SOURCES} (default on loopback)"
        else:
            self.mode = "chosen by the kernel (one address)"

    @property
    def distinct(self) -> int:
        """How many different addresses the plan can give (1: all share one)."""
        if self.spread:
            return DEFAULT_LOOPBACK_SOURCES.num_addresses - 2
        return max(1, len(set(self.explicit)))

    def address(self, index: int) -> str | None:
        """The source address of devices.csv row ``index`` (None: the kernel's)."""
        if self.spread:
            span = DEFAULT_LOOPBACK_SOURCES.num_addresses - 2
            return str(DEFAULT_LOOPBACK_SOURCES.network_address + 1 + index % span)
        if self.explicit:
            return self.explicit[index % len(self.explicit)]
        return None

    def other(self, index: int) -> str | None:
        """An address other than ``address(index)`` (None: the plan has one)."""
        if self.distinct < 2:
            return None
        mine = self.address(index)
        for step in (1, 2, 3):
            if self.spread:
                candidate = self.address(index + DEFAULT_LOOPBACK_SOURCES.num_addresses // 2)
            else:
                candidate = self.address(index + step)
            if candidate != mine:
                return candidate
        return None

    def describe(self, used: Sequence[str | None]) -> dict[str, Any]:
        """The report's ``sources``: mode, number of addresses, ranges."""
        addrs = sorted({int(ipaddress.ip_address(a)) for a in used if a is not None})
        ranges: list[str] = []
        start = prev = None
        for a in addrs:
            if prev is not None and a == prev + 1:
                prev = a
                continue
            if start is not None:
                ranges.append(_range(start, prev))
            start = prev = a
        if start is not None:
            ranges.append(_range(start, prev))
        return {"mode": self.mode, "count": max(1, len(addrs)), "ranges": ranges}


def _range(a: int, b: int | None) -> str:
    first = str(ipaddress.ip_address(a))
    return first if b is None or b == a else f"{first}-{ipaddress.ip_address(b)}"


def _rows(indices: Sequence[int]) -> list[list[int]]:
    """Contiguous ``[first, last]`` ranges of devices.csv rows."""
    out: list[list[int]] = []
    for i in sorted(indices):
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
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

    __slots__ = ("bind", "conn", "dev", "flood", "flood_bind", "handle", "handle_at", "kept", "raw")

    def __init__(self, dev: Device, bind: str | None, flood_bind: str | None = None) -> None:
        self.dev = dev
        self.bind = bind
        self.flood_bind = flood_bind
        self.flood: HalfOpenFlood | None = None
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
        keep_samples: bool = False,
    ) -> None:
        self.sc = scenario
        self.specs = list(devices)
        self.roles = list(roles)
        self.worker_id = worker_id
        self.shard = shard
        self.progress = progress
        self.start_at_epoch = start_at
        self.plan = SourcePlan(scenario)
        self.slots: list[_Slot] = []
        self.pool: DtlsClientPool | None = None
        self.rec = Recorder(interval=int(scenario.timeline_interval), keep_samples=keep_samples)
        self.stopped_by: str | None = None
        self._normal: list[int] = []
        self._named_so_far = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lag = Histogram()
        self._lag_second = 0.0
        self.saturated_seconds = 0
        self.cpu_seconds = 0.0
        self.rss_peak = 0
        self.warnings: list[str] = []
        self.send_dropped = 0

    def stop(self, reason: str = "stopped") -> None:
        """End the run early (e.g. ``"SIGINT"``); :meth:`run` then reports
        the run as interrupted, with ``reason``."""
        if self.stopped_by is None:
            self.stopped_by = reason
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
        elif kind == "flood_start":
            if slot.flood is None:
                slot.flood = HalfOpenFlood(
                    pool.server, pool.family, slot.flood_bind, self.sc.half_open_rate, self.rec
                )
            slot.flood.start()
        elif kind == "flood_stop" and slot.flood is not None:
            slot.flood.stop()

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
        ramp_up = self.sc.ramp_up_for(n)
        self._normal = [k for k, r in enumerate(self.roles) if r is None]
        self._named_so_far = 0
        watch = LockoutWatch()
        for j, (spec, role) in enumerate(zip(self.specs, self.roles, strict=True)):
            start = t0 + (ramp_up * j / n if n else 0.0)
            victims, unable, bind, flood_bind = self._equip(j, spec, role)
            dev = Device(
                spec,
                self.sc,
                self.rec,
                role=role,
                start_at=start,
                mix=mix,
                run_start=t0,
                run_end=t0 + self.sc.duration,
                victims=victims,
                watch=watch,
                unable=unable,
            )
            slot = _Slot(dev, bind, flood_bind)
            self.slots.append(slot)
        row = {spec.index: j for j, spec in enumerate(self.specs)}
        for slot in self.slots:
            for victim in slot.dev.victims if slot.dev.role == "lockout_abuse" else ():
                watch.devices[victim.client_id] = self.slots[row[victim.index]].dev
            slot.dev.start(t0)
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

    def _equip(
        self, j: int, spec: DeviceSpec, role: str | None
    ) -> tuple[list[DeviceSpec], str | None, str | None, str | None]:
        """What device ``j`` needs for its role: victims, why it cannot
        attack (or None), its source address and its flood address."""
        plan = self.plan
        bind = plan.address(spec.index)
        if role is None:
            return [], None, bind, None
        normal = self._normal
        if role == "token_theft":
            if not normal:
                return [], "no normal device in this worker to steal a token from", bind, None
            return [self.specs[normal[j % len(normal)]]], None, bind, None
        if role == "lockout_abuse":
            if not normal:
                return [], "no normal device in this worker to name", bind, None
            if plan.distinct < 2:
                why = (
                    "every device sends from the attacker's address: give [target] "
                    "source_addresses more than one address"
                )
                return [], why, bind, None
            picked: list[DeviceSpec] = []
            step = 0
            for step in range(len(normal)):  # the next normal devices on other addresses
                spec_k = self.specs[normal[(self._named_so_far + step) % len(normal)]]
                if plan.address(spec_k.index) != bind:
                    picked.append(spec_k)
                    if len(picked) == self.sc.lockout_victims:
                        break
            self._named_so_far += step + 1
            if not picked:
                return [], "no normal device on another address than the attacker's", bind, None
            return picked, None, bind, None
        if role == "half_open_flood":
            other = plan.other(spec.index)
            if other is None:
                why = "needs a second source address for its honest handshakes"
                return [], why, bind, None
            return [], None, other, bind
        return [], None, bind, None

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
            if slot.flood is not None:
                slot.flood.stop()
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

    def _served(self) -> tuple[int, int]:
        """Normal devices, and those served (handshake, token, upload and a
        successful request)."""
        normal = served = 0
        for s in self.slots:
            if s.dev.role is None:
                normal += 1
                served += s.dev.succeeded
        return normal, served

    def _snapshot(
        self, elapsed: float, connected: int, cpu: float, rss: int, saturated: bool
    ) -> dict[str, Any]:
        rec = self.rec
        normal, served = self._served()
        return {
            "normal": normal,
            "served": served,
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
            "rows": _rows([spec.index for spec in self.specs]),
            "simulated": len(self.slots),
            "normal": len(normal),
            "attackers": attackers,
            "normal_connected": sum(1 for d in normal if d.ever_connected),
            "normal_with_token": sum(1 for d in normal if d.got_token),
            "normal_with_success": sum(1 for d in normal if d.succeeded),
        }
        if self.sc.observe_trl:  # which devices saw their token revoked, and re-tokened
            devices["trl"] = {
                "revoked": sorted(d.spec.client_id for d in normal if d.trl_revoked),
                "retokened": sorted(d.spec.client_id for d in normal if d.trl_retokens),
                "fetched_several_tokens": sorted(
                    d.spec.client_id for d in normal if d.tokens_fetched > 1
                ),
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
        used = [s.bind for s in self.slots] + [s.flood_bind for s in self.slots if s.flood_bind]
        report = self.rec.report(
            scenario=self.sc.summary(),
            shard=self.shard,
            started=started,
            ended=ended,
            devices=devices,
            simulator=simulator,
            run={
                "planned_duration": self.sc.duration,
                "completed": self.stopped_by is None,
                "interrupted": self.stopped_by,
            },
            sources=self.plan.describe(used),
            thresholds=self.sc.thresholds(),
        )
        if self.rec.samples is not None:
            report["samples"] = self.rec.samples
        return report
