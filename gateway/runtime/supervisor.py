"""Several gateway worker processes on one UDP port, and their supervisor
(``[server] workers = N``; 0 = one per CPU).

The supervisor (the ``acegw serve`` process):

* opens N UDP sockets on the configured address with SO_REUSEPORT (the
  first one picks the port when it is 0) and starts one worker per socket,
  ``python -m gateway.runtime.worker``, handing it its socket. The kernel spreads
  datagrams over the sockets of a SO_REUSEPORT group by a hash of the
  4-tuple, so a peer stays on one worker and its DTLS session is local to
  that worker. The supervisor keeps every socket open, also while its worker
  is down: the socket keeps its place in the group, so no other worker's
  peers move when a worker dies or comes back;
* restarts a worker that exits (with a back-off while it keeps crashing);
  its peers' datagrams queue in its socket meanwhile, and they handshake
  again with the new worker;
* serves the HTTP port (``[metrics] listen``): ``/metrics`` asks every worker
  for its samples over its control channel and merges them into one scrape
  (each sample labelled ``worker``), plus its own ``acegw_worker_*``
  metrics; ``/readyz`` asks every worker for its readiness and is 200
  while at least one says ready; ``/keys`` is the public AS key set its
  workers last reported (each at ready and whenever its key store changed:
  the key directory, or the PostgreSQL registry's ``keys`` changes they
  follow), 503 until one has;
* relays tokens: a worker that accepts a token (``/authz-info`` or an RFC
  9202 identity) sends it to the supervisor, which passes it to the other
  workers and replays the unexpired ones to a restarted worker. A device whose
  4-tuple changes (NAT rebinding, reconnect) and lands on another worker then
  needs a new DTLS handshake but not a new token; that worker has no replay
  window for its key yet, so its first proof gets one Echo challenge;
* passes on datagrams with a Connection ID (RFC 9146): each worker writes its
  index into the CIDs it assigns, and a datagram that reaches another worker
  after a NAT rebinding is sent to the owner (``cid``), so a device with a
  CID keeps its session, with no new handshake and no Echo;
* on SIGTERM/SIGINT sends SIGTERM to every worker (each drains: no new
  handshakes, in-flight requests finish within ``server.drain_timeout``,
  close_notify to its peers) and waits;
* on SIGHUP reads and checks the configuration file; the text it accepts is
  what every worker runs on from then on: it goes to every ready worker over
  the control channel (``reload``: routes, limits, log level applied live),
  to a worker still starting once it reports ready, and to every worker
  started or restarted later (an inherited memfd, ``--config-fd``). A file
  edited afterwards, or refused at a SIGHUP, therefore never reaches a worker
  the supervisor restarts. Workers ignore SIGHUP themselves (from their
  first instruction: the supervisor decides), so a reload never kills a
  worker that has not yet installed its handlers.

Registry changes (disable, revoke, PSK rotation) and key changes reach every
worker within a second without the supervisor: each worker polls the
registry's change log and the key directory's manifest every 0.25 s.

The control channel is a Unix socket pair per worker carrying JSON lines:
``hello`` / ``synced`` (the held tokens, before the worker serves),
``ready``, ``reload`` (the accepted configuration text), ``keys`` (the
public AS key set), ``token`` (both ways), ``cid`` (worker to supervisor to
the owning worker), ``metrics`` and ``ask``/``answer`` (the live state an
operator asks for, and each worker's readiness for ``/readyz``,
:mod:`gateway.operations.live_state`). It never leaves the host; no message
is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import Config, parse_config
from gateway.errors import ConfigError, GatewayError, InvalidArgument, KeystoreError
from gateway.operations import metrics as m
from gateway.operations.admin_access import admin_token_path
from gateway.operations.admin_http import AdminHttp
from gateway.operations.events import EventLog

log = logging.getLogger(__name__)

#: Largest control message (a metrics snapshot) in bytes.
LINE_LIMIT = 16 << 20
#: Tokens the supervisor keeps for restarted workers.
MAX_SHARED_TOKENS = 200_000
#: Seconds a worker may take to report ready before it is killed and restarted.
START_TIMEOUT = 60.0
#: Restart back-off: first delay, cap, and how long a worker must have run for
#: the delay to reset.
BACKOFF_FIRST, BACKOFF_MAX, BACKOFF_RESET = 0.1, 5.0, 10.0
#: Seconds a worker is given to answer a metrics request.
METRICS_TIMEOUT = 2.0


# --- the supervisor -----------------------------------------------------------------


@dataclass
class WorkerSlot:
    """One worker position: its socket lives as long as the supervisor."""

    index: int
    sock: socket.socket
    process: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: bool = False
    #: set when the worker reports ready (a new one per start)
    became_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: which accepted configuration the worker runs (see ``Supervisor.generation``)
    generation: int = 0
    #: the worker got the shared tokens and receives new ones
    synced: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST
    #: requests awaiting the worker's answer, by id (``metrics?``, ``ask``);
    #: an error answer to ``ask`` is a one-item list ``[{"error": ...}]``
    pending: dict[int, asyncio.Future[list[Any]]] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")


def open_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` UDP sockets in one SO_REUSEPORT group on ``host:port``."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            port = sock.getsockname()[1]
    except OSError as exc:
        for sock in socks:
            sock.close()
        raise GatewayError(f"cannot bind UDP {host} port {port}: {exc.strerror}") from None
    return socks


def parse_config_text(text: str, path: Path) -> Config:
    """The configuration in ``text``, read from the file ``path`` (relative
    paths resolve against its directory; environment overrides apply)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=path.parent, source=path)


def read_config(path: Path) -> tuple[Config, str]:
    """The configuration file at ``path`` checked, and the very text checked
    (what workers are then handed, whatever the file holds later)."""
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return parse_config_text(text, path), text


def config_fd(text: str) -> int:
    """An anonymous file (memfd) holding ``text``, at offset 0, for a worker
    to inherit."""
    fd = os.memfd_create("acegw.toml")
    try:
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


class Supervisor:
    """Starts, watches and stops the workers; serves the HTTP port."""

    def __init__(self, config: Config, workers: int, *, log_level: str | None = None) -> None:
        if config.source is None:
            raise ConfigError("several workers need the configuration in a file")
        self.source: Path = config.source
        #: the configuration last accepted (at start or at a SIGHUP), and its text
        self.config, self._config_text = read_config(self.source)
        #: bumped at each accepted reload; a slot's ``generation`` says which one its worker runs
        self.generation = 0
        self.count = workers
        self.log_level = log_level
        self.slots: list[WorkerSlot] = []
        self.stopping = False
        self.port = 0
        self._stop = asyncio.Event()
        self._shared: dict[bytes, float] = {}
        self._next_id = 0
        #: the public AS key set (COSE_KeySet) a worker last reported
        self._key_set: bytes | None = None
        self._http: AdminHttp | None = None
        self.events = EventLog()

    # --- life cycle -------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        server = self.config.server
        socks = open_sockets(server.bind, server.port, self.count)
        self.port = socks[0].getsockname()[1]
        self.slots = [WorkerSlot(i, s) for i, s in enumerate(socks)]
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_stop_signal)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        try:
            if self.config.metrics.enabled:
                self._http = AdminHttp(
                    metrics=self.metrics_text,
                    ready=self.readiness,
                    key_set=self.key_set,
                    live=self.live,
                    token_file=admin_token_path(self.config),
                )
                await self._http.start(self.config.metrics.host, self.config.metrics.port)
            for slot in self.slots:
                await self._spawn(slot)
            coaps = f"coaps://{_shown((server.bind, self.port))[0]}:{self.port}"
            admin = None
            if self._http is not None and self._http.address is not None:
                admin = "http://{}:{}".format(*_shown(self._http.address))
            self.events(
                "gateway_started",
                f"supervisor: {self.count} workers on {coaps}"
                + (f"; admin and metrics on {admin}" if admin else ""),
                coaps=coaps,
                admin=admin,
                workers=self.count,
            )
            await self._stop.wait()
            self.events(
                "gateway_stopping",
                f"stopping: {self.count} workers drain for up to "
                f"{self.config.server.drain_timeout:g} s",
                drain_timeout=self.config.server.drain_timeout,
            )
        finally:
            self.stopping = True
            try:
                await self._stop_workers()
                if self._http is not None:
                    await self._http.stop()
                for slot in self.slots:
                    slot.sock.close()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # exiting now
        self.events("gateway_stopped", "supervisor stopped", workers=self.count)
        return 0

    async def _spawn(self, slot: WorkerSlot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # the accepted text, not the file: it may have been edited since
            text = config_fd(self._config_text)
        except BaseException:
            ours.close()
            theirs.close()
            raise
        slot.generation = self.generation
        args = [
            sys.executable,
            "-m",
            "gateway.runtime.worker",
            "--config",
            str(self.source),
            "--index",
            str(slot.index),
            "--udp-fd",
            str(slot.sock.fileno()),
            "--control-fd",
            str(theirs.fileno()),
            "--config-fd",
            str(text),
        ]
        if self.log_level:
            args += ["--log-level", self.log_level]
        try:
            slot.process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(slot.sock.fileno(), theirs.fileno(), text),
            )
        except BaseException:
            ours.close()  # no worker to talk to: its end would leak
            raise
        finally:
            theirs.close()
            os.close(text)
        reader, slot.writer = await asyncio.open_unix_connection(sock=ours, limit=LINE_LIMIT)
        slot.ready = slot.synced = False
        slot.became_ready = asyncio.Event()
        slot.started_at = time.monotonic()
        self.events(
            "worker_started",
            f"worker {slot.index} started (pid {slot.process.pid})"
            + (f", restart {slot.restarts}" if slot.restarts else ""),
            index=slot.index,
            pid=slot.process.pid,
            restarts=slot.restarts,
        )
        self._task(slot, self._read(slot, reader))
        self._task(slot, self._watch(slot, slot.process))

    def _task(self, slot: WorkerSlot, coro: Any) -> None:
        task = asyncio.create_task(coro)
        slot.tasks.add(task)
        task.add_done_callback(slot.tasks.discard)

    async def _watch(self, slot: WorkerSlot, process: asyncio.subprocess.Process) -> None:
        exited = asyncio.ensure_future(process.wait())
        started = asyncio.ensure_future(slot.became_ready.wait())
        done, _ = await asyncio.wait(
            {exited, started}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        started.cancel()
        if not done:
            log.error("worker %d did not start within %g s; killing it", slot.index, START_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        code = await exited
        slot.ready = slot.synced = False
        if slot.writer is not None:
            slot.writer.close()
            slot.writer = None
        for future in slot.pending.values():
            if not future.done():
                future.set_result([])
        slot.pending.clear()
        if self.stopping:
            return
        ran = time.monotonic() - slot.started_at
        if ran >= BACKOFF_RESET:
            slot.backoff = BACKOFF_FIRST
        delay, slot.backoff = slot.backoff, min(slot.backoff * 2, BACKOFF_MAX)
        slot.restarts += 1
        self.events(
            "worker_exited",
            f"worker {slot.index} (pid {process.pid}) exited with {_exit_text(code)} after "
            f"{ran:.1f} s; restarting in {delay:.1f} s",
            index=slot.index,
            pid=process.pid,
            exit=_exit_text(code),
            ran=round(ran, 1),
            restart_in=delay,
        )
        await self._restart(slot, delay)

    async def _restart(self, slot: WorkerSlot, delay: float) -> None:
        """Start the slot's worker again after ``delay``; a start that fails
        (the executable gone after an upgrade, no descriptors left) is tried
        again with the backoff, never given up: the slot would stay empty."""
        while True:
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                await self._spawn(slot)
                return
            except OSError as exc:
                delay, slot.backoff = slot.backoff, min(slot.backoff * 2, BACKOFF_MAX)
                log.error(
                    "worker %d could not be started (%s); trying again in %.1f s",
                    slot.index,
                    exc.strerror or exc,
                    delay,
                )

    async def _stop_workers(self) -> None:
        live = [s.process for s in self.slots if s.process and s.process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        grace = self.config.server.drain_timeout + 10.0
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in live)), grace)
        except TimeoutError:
            for process in live:
                if process.returncode is None:
                    log.error("worker pid %d did not stop in %g s; killing it", process.pid, grace)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in live))
        for slot in self.slots:
            for task in list(slot.tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _on_stop_signal(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            return
        # a second one: workers skip their drain wait
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGTERM)

    def _reload(self) -> None:
        """SIGHUP: check the file; once accepted, its text goes to every
        ready worker now and to each starting one when it reports ready
        (:meth:`_send_config`). No signal goes to a worker: one still
        starting has no handler yet."""
        try:
            self.config, self._config_text = read_config(self.source)
        except GatewayError as exc:
            self.events(
                "config_reload_refused",
                f"SIGHUP: configuration refused, workers keep theirs: {exc.description}",
                error=exc.description,
            )
            return
        self.generation += 1
        for slot in self.slots:
            if slot.ready:
                self._send_config(slot)

    def _send_config(self, slot: WorkerSlot) -> None:
        """Bring a ready worker to the configuration last accepted."""
        if slot.generation != self.generation:
            slot.generation = self.generation
            slot.send({"t": "reload", "config": self._config_text})

    # --- control channel ------------------------------------------------------------

    async def _read(self, slot: WorkerSlot, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, ConnectionError):
                return
            if not line:
                return
            try:
                self._handle(slot, json.loads(line))
            except (ValueError, KeyError, TypeError):
                log.error("worker %d sent an unreadable control message", slot.index)

    def _handle(self, slot: WorkerSlot, message: dict[str, Any]) -> None:
        kind = message["t"]
        if kind == "hello":
            now = time.time()
            for token, exp in list(self._shared.items()):
                if exp > now:
                    slot.send({"t": "token", "v": token.hex()})
            slot.send({"t": "synced"})
            slot.synced = True
        elif kind == "ready":
            slot.ready = True
            slot.became_ready.set()
            log.info("worker %d ready", slot.index)
            self._send_config(slot)  # a reload accepted while it started
        elif kind == "keys":
            self._key_set = bytes.fromhex(message["v"])
        elif kind == "token":
            self._share(slot, bytes.fromhex(message["v"]), float(message["exp"]))
        elif kind == "cid":
            # A datagram for a session another worker owns (the first byte of
            # its Connection ID): passed on as it came, dropped if that
            # worker is not serving.
            owner = int(message["w"])
            if 0 <= owner < len(self.slots) and owner != slot.index and self.slots[owner].ready:
                self.slots[owner].send(message)
        elif kind == "metrics":
            future = slot.pending.pop(int(message["id"]), None)
            if future is not None and not future.done():
                future.set_result([m.Family.from_json(f) for f in message["families"]])
        elif kind == "answer":
            answered = slot.pending.pop(int(message["id"]), None)
            if answered is not None and not answered.done():
                if "error" in message:
                    answered.set_result([{"error": str(message["error"])}])
                else:
                    answered.set_result(list(message["v"]))

    def _share(self, origin: WorkerSlot, token: bytes, exp: float) -> None:
        if len(self._shared) >= MAX_SHARED_TOKENS:
            now = time.time()
            self._shared = {t: e for t, e in self._shared.items() if e > now}
            while len(self._shared) >= MAX_SHARED_TOKENS:
                del self._shared[next(iter(self._shared))]
        self._shared[token] = exp
        for slot in self.slots:
            if slot is not origin and slot.synced:
                slot.send({"t": "token", "v": token.hex()})

    # --- what the HTTP port shows -----------------------------------------------------

    async def _ask_ready(self, message: dict[str, Any]) -> list[list[Any]]:
        """Send ``message`` (with a fresh ``id``) to every ready worker; their
        answers in worker order. A worker that does not answer within
        ``METRICS_TIMEOUT`` is left out (and its request forgotten)."""
        loop = asyncio.get_running_loop()
        waits: list[tuple[WorkerSlot, int, asyncio.Future[list[Any]]]] = []
        for slot in self.slots:
            if slot.ready:
                self._next_id += 1
                future: asyncio.Future[list[Any]] = loop.create_future()
                slot.pending[self._next_id] = future
                slot.send({**message, "id": self._next_id})
                waits.append((slot, self._next_id, future))
        if waits:
            await asyncio.wait([f for _, _, f in waits], timeout=METRICS_TIMEOUT)
        answers: list[list[Any]] = []
        for slot, ident, future in waits:
            if future.done():
                answers.append(future.result())
            else:
                future.cancel()
                slot.pending.pop(ident, None)
        return answers

    async def metrics_text(self) -> str:
        snapshots = await self._ask_ready({"t": "metrics?"})
        return m.render(m.merge([*snapshots, self.collect()]))

    async def live(self, query: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Every ready worker's answer to a live-state query
        (:mod:`gateway.operations.live_state`), concatenated; a worker that
        does not answer in time is left out."""
        found: list[dict[str, Any]] = []
        for items in await self._ask_ready({"t": "ask", "q": query, "a": args}):
            if len(items) == 1 and set(items[0]) == {"error"}:
                raise InvalidArgument(str(items[0]["error"]))
            found += items
        return found

    def collect(self) -> list[m.Family]:
        const = {"worker": "supervisor"}
        return [
            m.family(
                "acegw_worker_up",
                "gauge",
                "1 while the worker serves, 0 while it starts or restarts.",
                [({"worker": str(s.index)}, 1 if s.ready else 0) for s in self.slots],
            ),
            m.family(
                "acegw_worker_restarts_total",
                "counter",
                "Times the supervisor restarted a worker that had exited.",
                [({"worker": str(s.index)}, s.restarts) for s in self.slots],
            ),
            m.family(
                "acegw_shared_tokens",
                "gauge",
                "Tokens the supervisor holds for workers that (re)start.",
                [(const, len(self._shared))],
            ),
            *m.process_families(const),
        ]

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """For /readyz: every started worker is asked for its own readiness
        (:meth:`gateway.runtime.gateway.Gateway.readiness`: serving, not
        draining, followed issuers' revocation lists fresh). Ready while at
        least one worker is; a worker that is starting or does not answer
        within ``METRICS_TIMEOUT`` counts as not ready. ``by_worker`` holds
        each worker's detail."""
        answered: dict[int, dict[str, Any]] = {}
        for items in await self._ask_ready({"t": "ask", "q": "ready", "a": {}}):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("worker"), int):
                    answered[item["worker"]] = item
        by_worker: list[dict[str, Any]] = []
        for slot in self.slots:
            state = answered.get(slot.index)
            if state is None:
                why = "no answer" if slot.ready else "starting"
                state = {"worker": slot.index, "ready": False, "reason": why}
            by_worker.append(state)
        ready = sum(1 for state in by_worker if state.get("ready") is True)
        return (
            ready > 0 and not self.stopping,
            {
                "workers": self.count,
                "ready_workers": ready,
                "draining": self.stopping,
                "by_worker": by_worker,
            },
        )

    def key_set(self) -> bytes:
        """For /keys: the public AS key set as the workers hold it (they
        follow key changes; the supervisor reads no key store itself)."""
        if self._key_set is None:
            raise KeystoreError("no worker has reported the AS key set yet")
        return self._key_set


def _shown(address: tuple[str, int]) -> tuple[str, int]:
    host, port = address
    return (f"[{host}]" if ":" in host else host, port)


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"status {code}"


def supervise(config: Config, workers: int, *, log_level: str | None = None) -> int:
    """Run the supervisor until SIGTERM/SIGINT (``acegw serve`` with workers)."""
    return asyncio.run(Supervisor(config, workers, log_level=log_level).run())


__all__ = ["Supervisor", "open_sockets", "parse_config_text", "read_config", "supervise"]
