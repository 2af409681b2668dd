"""The operator's HTTP port (``[metrics] listen``, default 127.0.0.1:9100).

=====================  =========================================================
``GET /metrics``       Prometheus text format (:mod:`gateway.operations.metrics`)
``GET /healthz``       200 while the process serves its event loop
``GET /readyz``        200 when devices can be served, 503 while starting or
                       draining; a JSON body says why
``GET /keys``          the AS verification keys as a COSE_KeySet (RFC 9052 §7,
                       ``application/cose-key-set``): public keys only, for
                       resource servers that verify this AS's tokens
``GET /lockouts``      the lockout bans in force on every worker, as JSON
                       (``acegw lockouts list``; ``/bans`` is the same)
``GET /sessions``      established DTLS sessions on every worker
                       (``?client=ID``: of one client), with the held tokens'
                       cti and exp (``acegw sessions list``)
``GET /tokens``        the tokens every worker holds: cti, client, exp, the
                       AS key they came under (``acegw keys retire`` counts)
``POST /lockouts/lift`` lift bans on every worker now: JSON ``{"address"``,
                       ``"identity"`` (hex), or ``"all": true}``; answers
                       how many each worker lifted (``acegw lockouts lift``)
=====================  =========================================================

``/.well-known/ace-keys`` is the same key set (the CoAP side serves it at the
same path). The default address is loopback only. The live-state routes
answer loopback peers only, and the state change needs the admin token too
(:mod:`gateway.operations.admin_access`); no route reveals a secret.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.errors import ConfigError, GatewayError, KeystoreError
from gateway.operations.admin_access import is_loopback, refusal
from gateway.operations.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)

#: RFC 9052 §11.2 media type of a COSE_KeySet.
COSE_KEY_SET_TYPE = "application/cose-key-set"

MetricsText = Callable[[], Awaitable[str]]
#: ``(ready, detail)``; a supervisor's answer is awaited (it asks its workers).
Readiness = Callable[[], tuple[bool, dict[str, Any]] | Awaitable[tuple[bool, dict[str, Any]]]]
KeySetBytes = Callable[[], bytes]
#: ``query(name, args)``: every worker's answer to a
#: :data:`gateway.operations.live_state.QUERIES` query, items concatenated.
LiveQuery = Callable[[str, dict[str, Any]], Awaitable[list[dict[str, Any]]]]


class AdminHttp:
    """The HTTP server; the callables supply its answers."""

    def __init__(
        self,
        *,
        metrics: MetricsText,
        ready: Readiness,
        key_set: KeySetBytes,
        live: LiveQuery | None = None,
        token_file: Path | None = None,
    ) -> None:
        """``live``: answers the live-state routes (absent: they are not
        served); ``token_file``: the admin token state changes need."""
        self._metrics = metrics
        self._ready = ready
        self._key_set = key_set
        self._live = live
        self._token_file = token_file
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        app.router.add_get("/keys", self._get_keys)
        app.router.add_get("/.well-known/ace-keys", self._get_keys)
        if self._live is not None:
            for path in ("/bans", "/lockouts"):
                app.router.add_get(path, self._get_lockouts)
            app.router.add_get("/sessions", self._get_sessions)
            app.router.add_get("/tokens", self._get_tokens)
            app.router.add_post("/lockouts/lift", self._post_lift)
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
        answer = self._ready()
        ready, detail = await answer if inspect.isawaitable(answer) else answer
        body = json.dumps({"ready": ready, **detail}, separators=(",", ":")) + "\n"
        return web.Response(
            status=200 if ready else 503, text=body, content_type="application/json"
        )

    # --- live state (loopback only; changes need the admin token) ------------

    async def _live_answer(
        self, request: web.Request, query: str, args: dict[str, Any], key: str
    ) -> web.Response:
        assert self._live is not None
        if not is_loopback(request.remote):
            return _json({"error": "live state is served to loopback peers only"}, 403)
        try:
            items = await self._live(query, args)
        except GatewayError as exc:
            return _json({"error": exc.description}, 400)
        return _json({key: items})

    async def _get_lockouts(self, request: web.Request) -> web.Response:
        return await self._live_answer(request, "lockouts", {}, "bans")

    async def _get_sessions(self, request: web.Request) -> web.Response:
        client = request.query.get("client")
        return await self._live_answer(request, "sessions", {"client": client}, "sessions")

    async def _get_tokens(self, request: web.Request) -> web.Response:
        return await self._live_answer(request, "tokens", {}, "tokens")

    async def _post_lift(self, request: web.Request) -> web.Response:
        why = refusal(request.remote, request.headers.get("Authorization"), self._token_file)
        if why is not None:
            log.warning("admin: lift refused for %s: %s", request.remote, why)
            return _json({"error": why}, 403)
        try:
            body = await request.json()
        except ValueError:
            return _json({"error": "the body must be a JSON object"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "the body must be a JSON object"}, 400)
        args = {k: body[k] for k in ("address", "identity", "all") if k in body}
        return await self._live_answer(request, "lift", args, "lifted")

    async def _get_keys(self, request: web.Request) -> web.Response:
        try:
            data = self._key_set()
        except KeystoreError as exc:  # expected: e.g. no worker ready yet
            return web.Response(status=503, text=f"key set unavailable: {exc}\n")
        except Exception:
            log.exception("cannot read the verification keys")
            return web.Response(status=503, text="key set unavailable\n")
        return web.Response(
            body=data, headers={"Content-Type": COSE_KEY_SET_TYPE, "Cache-Control": "max-age=60"}
        )


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    text = json.dumps(body, separators=(",", ":")) + "\n"
    return web.Response(status=status, text=text, content_type="application/json")


def _shown(address: tuple[str, int]) -> tuple[str, int]:
    host, port = address
    return (f"[{host}]" if ":" in host else host, port)


__all__ = ["COSE_KEY_SET_TYPE", "AdminHttp"]
