"""The operator's HTTP port (``[metrics] listen``, default 127.0.0.1:9100).

=====================  =========================================================
``GET /metrics``       Prometheus text format (:mod:`gateway.operations.metrics`)
``GET /healthz``       200 while the process serves its event loop
``GET /readyz``        200 when devices can be served, 503 while starting or
                       draining; a JSON body says why
``GET /keys``          the AS verification keys as a COSE_KeySet (RFC 9052 §7,
                       ``application/cose-key-set``): public keys only, for
                       resource servers that verify this AS's tokens
``GET /bans``          the lockout bans in force on every worker, as JSON
                       (``acegw bans list``); lifting goes through the
                       registry (``acegw bans lift``), not this port
=====================  =========================================================

``/.well-known/ace-keys`` is the same key set (the CoAP side serves it at the
same path). Nothing here needs authentication, which is why the default
address is loopback only; no route reveals a secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.errors import ConfigError
from gateway.operations.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

#: RFC 9052 §11.2 media type of a COSE_KeySet.
COSE_KEY_SET_TYPE = "application/cose-key-set"

MetricsText = Callable[[], Awaitable[str]]
Readiness = Callable[[], tuple[bool, dict[str, Any]]]
KeySetBytes = Callable[[], bytes]
BanList = Callable[[], Awaitable[list[dict[str, Any]]]]


class AdminHttp:
    """The HTTP server; the callables supply its answers."""

    def __init__(
        self,
        *,
        metrics: MetricsText,
        ready: Readiness,
        key_set: KeySetBytes,
        bans: BanList | None = None,
    ) -> None:
        self._metrics = metrics
        self._ready = ready
        self._key_set = key_set
        self._bans = bans
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        app.router.add_get("/keys", self._get_keys)
        app.router.add_get("/.well-known/ace-keys", self._get_keys)
        if self._bans is not None:
            app.router.add_get("/bans", self._get_bans)
        return app

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (0: any free port); returns the address."""
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                f"metrics.listen: cannot listen on {host} port {port}: {exc.strerror}",
                key="metrics.listen",
            ) from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.address = (str(bound[0]), int(bound[1]))
        log.info("metrics and health on http://%s:%d", *_shown(self.address))
        return self.address

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _get_metrics(self, request: web.Request) -> web.Response:
        text = await self._metrics()
        return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})

    async def _get_healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _get_readyz(self, request: web.Request) -> web.Response:
        ready, detail = self._ready()
        body = json.dumps({"ready": ready, **detail}, separators=(",", ":")) + "\n"
        return web.Response(
            status=200 if ready else 503, text=body, content_type="application/json"
        )

    async def _get_bans(self, request: web.Request) -> web.Response:
        assert self._bans is not None
        body = json.dumps({"bans": await self._bans()}, separators=(",", ":")) + "\n"
        return web.Response(text=body, content_type="application/json")

    async def _get_keys(self, request: web.Request) -> web.Response:
        try:
            data = self._key_set()
        except Exception:
            log.exception("cannot read the verification keys")
            return web.Response(status=503, text="key set unavailable\n")
        return web.Response(
            body=data, headers={"Content-Type": COSE_KEY_SET_TYPE, "Cache-Control": "max-age=60"}
        )


def _shown(address: tuple[str, int]) -> tuple[str, int]:
    host, port = address
    return (f"[{host}]" if ":" in host else host, port)


__all__ = ["COSE_KEY_SET_TYPE", "AdminHttp"]
