"""The root CoAP resource of a gateway worker: it counts every request by
route and CoAP response code, tracks requests in flight (graceful shutdown
waits for them; beyond ``limits.max_in_flight`` new requests get 5.03 before
any authorization work) and, while draining, answers new requests 5.03 with
Max-Age (RFC 7252 §5.9.3.4). Its ``inner`` (the authorization layer and the
resource tree) is swapped on a configuration reload without touching DTLS
sessions or block-wise state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import aiocoap
import aiocoap.error
from aiocoap.numbers.codes import Code

from gateway.coap.aiocoap_adapter import block1_spool, block2_cache, options_of, uri_path
from gateway.operations.gateway_metrics import GatewayMetrics, RouteLabels, code_label

Path = tuple[str, ...]

#: Option numbers the root looks for (RFC 7641 §2; RFC 7959 §2.1).
_OBSERVE = int(aiocoap.OptionNumber.OBSERVE)
_BLOCK1 = int(aiocoap.OptionNumber.BLOCK1)
_BLOCK2 = int(aiocoap.OptionNumber.BLOCK2)

#: Max-Age of the 5.03 a draining gateway answers (RFC 7252 §5.9.3.4).
DRAINING_MAX_AGE = 5


class ServiceSite:
    """The root resource (see the module docstring); aiocoap's server calls
    its :meth:`render_to_pipe`."""

    def __init__(
        self, inner: Any, metrics: GatewayMetrics, routes: RouteLabels, *, max_in_flight: int = 1024
    ) -> None:
        #: requests in flight beyond which new ones get 5.03 (limits.max_in_flight),
        #: refused before any authorization work is spent on them
        self.max_in_flight = max_in_flight
        self._inner: Any = None
        self._render_inner: Callable[[aiocoap.Message, Path], Awaitable[aiocoap.Message]]
        self._oversized: Callable[[aiocoap.Message, Path], aiocoap.Message | None] | None
        self.inner = inner
        self.routes = routes
        self._metrics = metrics
        self._requests = metrics.requests
        self.in_flight = 0
        self.draining = False
        #: set when the last request in flight ends, while :meth:`until_idle` waits
        self._idle: asyncio.Event | None = None
        self._block1 = block1_spool()
        self._block2 = block2_cache()
        #: a resource serving Observe registrations on its ``path`` itself
        #: (``render_to_pipe``): the TRL endpoint (RFC 9770 §11, RFC 7641)
        self.observable: Any = None

    @property
    def inner(self) -> Any:
        """The authorization layer and resource tree below the root
        (swapped on a reload): an ``AuthorizingSite``, or any resource with
        ``render(request)``."""
        return self._inner

    @inner.setter
    def inner(self, inner: Any) -> None:
        self._inner = inner
        render_at = getattr(inner, "render_at", None)
        if render_at is None:

            def render_at(request: aiocoap.Message, path: Path) -> Awaitable[aiocoap.Message]:
                return inner.render(request)  # type: ignore[no-any-return]

        self._render_inner = render_at
        self._oversized = getattr(inner, "oversized", None)

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        options = options_of(request)
        path = uri_path(request)  # read once: route label, observable, body limit
        observable = self.observable
        if (
            observable is not None
            and _OBSERVE in options
            and request.opt.observe == 0
            and path == observable.path
            and not self.draining
        ):
            await observable.render_to_pipe(pipe)
            return
        oversized = self._oversized
        refusal = oversized(request, path) if oversized is not None else None
        if refusal is not None:  # before block-wise assembly spools the body
            pipe.add_response(refusal, is_last=True)
            return
        # aiocoap's block-wise flow (its resources' Block1 spool and Block2
        # cache, RFC 7959), except that the Block2 cache and its key
        # (every option of the request, encoded) are only used when the
        # request asks for a later block or the response needs cutting into
        # blocks, and a request with neither Block option (most) skips the
        # spool: nothing to assemble, no Block1 to echo.
        plain = _BLOCK1 not in options and _BLOCK2 not in options
        if not plain:
            request = self._block1.feed_and_take(request)
        if plain or request.opt.block2 is None:
            response = await self.render(request, path)
            if len(response.payload) > request.remote.maximum_payload_size:
                response = await self._block2.extract_or_insert(request, _rendered(response))
        else:
            response = await self._block2.extract_or_insert(
                request, lambda: self.render(request, path)
            )
        if not plain:
            response.opt.block1 = request.opt.block1
        elif _BLOCK1 in options_of(response):
            response.opt.block1 = None  # as the request's (none)
        pipe.add_response(response, is_last=True)

    async def render(self, request: aiocoap.Message, path: Path | None = None) -> aiocoap.Message:
        """Count and render one (reassembled) request; ``path`` is its
        Uri-Path when the caller has read it already."""
        if path is None:
            path = uri_path(request)
        route = self.routes(path)
        if self.draining:
            response = aiocoap.Message(
                code=Code.SERVICE_UNAVAILABLE, max_age=DRAINING_MAX_AGE, payload=b"shutting down"
            )
            self._requests.inc(route, "5.03")
            return response
        if self.in_flight >= self.max_in_flight:
            self._requests.inc(route, "5.03")
            return aiocoap.Message(
                code=Code.SERVICE_UNAVAILABLE, max_age=1, payload=b"too many requests in flight"
            )
        self.in_flight += 1
        code = "5.00"
        try:
            response = await self._render_inner(request, path)
            code = code_label(int(response.code))
            return response
        except aiocoap.error.RenderableError as exc:
            # aiocoap renders these (e.g. 4.04 for an unknown path)
            with contextlib.suppress(Exception):
                code = code_label(int(exc.to_message().code))
            raise
        finally:
            self.in_flight -= 1
            self._requests.inc(route, code)
            if self._idle is not None and not self.in_flight:
                self._idle.set()

    async def until_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds until no request is in flight;
        how many still are."""
        if self.in_flight:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                self._idle = None
        return self.in_flight


def _rendered(response: aiocoap.Message) -> Callable[[], Awaitable[aiocoap.Message]]:
    """A response builder for :meth:`aiocoap.blockwise.Block2Cache.extract_or_insert`
    that returns a response already rendered."""

    async def build() -> aiocoap.Message:
        return response

    return build
