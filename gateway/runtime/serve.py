"""Running a gateway: ``acegw serve`` as one process or as a supervisor with
worker processes, the signal handling of a serving process (SIGTERM/SIGINT
drain then stop, SIGHUP reload) and its garbage-collector settings.

Life cycle (docs/operations.md): SIGTERM/SIGINT drains (:meth:`Gateway.drain`:
no new handshakes, new requests 5.03, in-flight requests finish within
``server.drain_timeout``), then :meth:`Gateway.stop` sends close_notify to
every peer. SIGHUP re-reads the configuration file and applies routes,
limits and the log level (:meth:`Gateway.reload`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.config import Config, load_config
from gateway.errors import GatewayError
from gateway.operations import live_state
from gateway.operations.admin_access import admin_token_path
from gateway.operations.admin_http import AdminHttp
from gateway.operations.events import EventLog
from gateway.operations.logs import setup_logging
from gateway.runtime.gateway import Gateway
from gateway.runtime.port_claim import PortClaim
from gateway.runtime.supervisor import supervise

log = logging.getLogger(__name__)


async def serve_gateway(
    gateway: Gateway,
    *,
    admin: bool = True,
    ready: Callable[[Gateway], None] | None = None,
    exiting: bool = True,
    hup: bool = True,
) -> None:
    """Start ``gateway``, serve until SIGINT/SIGTERM, drain, stop. SIGHUP
    reloads the configuration file (unless ``hup`` is false: a worker gets
    its reloads from its supervisor); a second SIGINT/SIGTERM skips the rest
    of the drain. ``admin``: also serve the metrics HTTP port (``[metrics]
    listen``) from this process. ``exiting``: the process ends afterwards, so
    SIGTERM is ignored from then on."""
    config = gateway.config
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second SIGTERM/SIGINT: skip the drain wait
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()
    lock = asyncio.Lock()

    def on_hup() -> None:
        task = asyncio.create_task(reload_from_file(gateway, lock))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def term() -> None:
        (hurry if stop.is_set() else stop).set()

    handled = [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hup else [])]
    for sig in handled:
        loop.add_signal_handler(sig, on_hup if sig == signal.SIGHUP else term)
    http: AdminHttp | None = None
    # a worker's start and stop are announced by its supervisor
    events = EventLog() if admin else _silent
    sessions = cut_off = 0
    try:
        await gateway.start()
        if exiting:
            tune_gc(config.server.gc_threshold)
        if admin and config.metrics.enabled:
            http = AdminHttp(
                metrics=gateway.metrics_text,
                ready=gateway.readiness,
                key_set=gateway.keystore.export_public,
                live=_local_live(gateway),
                token_file=admin_token_path(config),
            )
            await http.start(config.metrics.host, config.metrics.port)
        if admin:
            coaps = "coaps://{}:{}".format(*_shown(gateway.address))
            shown = None if http is None or http.address is None else _shown(http.address)
            events(
                "gateway_started",
                f"gateway listening on {coaps}"
                + (f"; admin and metrics on http://{shown[0]}:{shown[1]}" if shown else ""),
                coaps=coaps,
                admin=None if shown is None else f"http://{shown[0]}:{shown[1]}",
                workers=1,
            )
        if ready is not None:
            ready(gateway)
        await stop.wait()
        events(
            "gateway_stopping",
            f"stopping: draining for up to {gateway.config.server.drain_timeout:g} s",
            drain_timeout=gateway.config.server.drain_timeout,
        )
        drain = asyncio.create_task(gateway.drain(gateway.config.server.drain_timeout))
        hurried = asyncio.create_task(hurry.wait())
        await asyncio.wait({drain, hurried}, return_when=asyncio.FIRST_COMPLETED)
        for waiter in (drain, hurried):
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    finally:
        for reload in list(reloads):
            reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload
        try:
            if gateway.dtls is not None:
                sessions = gateway.dtls.stats().sessions
            if gateway.root is not None:
                cut_off = gateway.root.in_flight  # the drain deadline passed, or was skipped
            await gateway.stop()
            if http is not None:
                await http.stop()
        finally:
            # only now: a signal during the shutdown must not kill the process
            for sig in handled:
                loop.remove_signal_handler(sig)
            if exiting:
                # the process ends now; a late SIGTERM must not turn exit 0 into -15
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
        events(
            "gateway_stopped",
            f"gateway stopped; {sessions} session(s) closed"
            + (f"; {cut_off} request(s) still in flight were cut off" if cut_off else ""),
            level=logging.WARNING if cut_off else None,
            sessions_closed=sessions,
            requests_cut_off=cut_off,
        )


def _silent(event: str, message: str, **fields: Any) -> None:
    log.info("%s", message)


def _local_live(gateway: Gateway) -> Callable[[str, dict[str, Any]], Awaitable[list[Any]]]:
    """The live-state answers of a single process: its own."""

    async def live(query: str, args: dict[str, Any]) -> list[Any]:
        return live_state.answer(gateway, query, args)

    return live


def _shown(address: tuple[str, int]) -> tuple[str, int]:
    host, port = address
    return (f"[{host}]" if ":" in host else host, port)


def tune_gc(threshold: int) -> None:
    """Process-wide garbage collector settings for a serving process: what
    exists after start-up (modules, configuration, caches) is frozen out of
    collections, and young collections run every ``threshold`` allocations
    instead of Python's 700. Requests leave no garbage cycles and remembered
    exchanges are compact (:mod:`gateway.dtls.exchanges`), so collections are
    rare and short either way; a higher threshold keeps them rarer still."""
    if threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


async def reload_from_file(gateway: Gateway, lock: asyncio.Lock | None = None) -> bool:
    """SIGHUP: read the configuration file again and apply what can be
    applied live; a bad file is logged and changes nothing."""
    source = gateway.config.source
    if source is None:
        log.warning("SIGHUP ignored: the configuration was not read from a file")
        return False
    return await apply_config(gateway, lambda: load_config(source), lock)


async def apply_config(
    gateway: Gateway, load: Callable[[], Config], lock: asyncio.Lock | None = None
) -> bool:
    """Apply what can be applied live of the configuration ``load`` returns
    (:meth:`Gateway.reload`); one that does not load or apply is logged,
    counted, and changes nothing."""
    async with lock or asyncio.Lock():
        try:
            await gateway.reload(load())
        except GatewayError as exc:
            gateway.metrics.reloads.inc("error")
            EventLog()(
                "config_reload_refused",
                f"configuration reload refused, keeping the old one: {exc.description}",
                error=exc.description,
            )
            return False
    return True


async def run(config: Config, *, ready: Callable[[Gateway], None] | None = None) -> None:
    """Run one gateway process (with its metrics port) until SIGINT/SIGTERM."""
    await serve_gateway(Gateway(config), admin=True, ready=ready)


def worker_count(config: Config) -> int:
    """``server.workers``, 0 meaning one per CPU."""
    return config.server.workers or os.cpu_count() or 1


def serve(config: Config, *, log_level: str | None = None) -> int:
    """``acegw serve``: run the gateway until stopped; one process, or a
    supervisor with ``server.workers`` worker processes."""
    setup_logging(log_level or config.logging.level, json_lines=config.logging.json)
    workers = worker_count(config)
    # one instance per port: refused (PortInUse, exit 2) before anything binds
    with PortClaim(config.server.bind, config.server.port):
        if workers == 1:
            asyncio.run(run(config))
            return 0
        return supervise(config, workers, log_level=log_level)


__all__ = [
    "apply_config",
    "reload_from_file",
    "run",
    "serve",
    "serve_gateway",
    "tune_gc",
    "worker_count",
]
