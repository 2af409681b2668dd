"""The CoAP -> HTTP reverse proxy: ``[[routes]]`` forward authorized device
requests to HTTP upstreams (docs/proxy.md).

The server wires it in three calls::

    proxy = Proxy.from_config(config, clock=clock)       # at construction
    for path, resource in proxy.site_entries():          # when building the Site
        site.add_resource(path, resource)
    await proxy.start()   # in Gateway.start (a running loop is needed)
    await proxy.close()   # in Gateway.stop

Modules: :mod:`.mapping` (RFC 8075 / RFC 7252 §10.1 tables and functions),
:mod:`.headers` (header rules), :mod:`.upstream_auth` (how the gateway
authenticates itself upstream, per-device JWT), :mod:`.upstream` (the
route's client: queue, circuit breaker, error translation), :mod:`.pool` and
:mod:`.http1` (persistent HTTP/1.1 connections, sans-I/O parser), :mod:`.cache`
(response cache), :mod:`.resource` (the aiocoap resources).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import aiocoap.interfaces

from gateway.config import Config, RouteConfig
from gateway.proxy.mapping import Segments
from gateway.proxy.resource import (
    InFlightLimit,
    ProxyRoute,
    RouteResource,
    RouteSubtree,
    site_entries,
)


class Proxy:
    """Every route of a configuration, sharing one in-flight limit."""

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        *,
        base_dir: Path = Path("."),
        max_in_flight: int | None = None,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Build the routes (reads secrets and keys, checks files: a problem
        is a :class:`~gateway.errors.ConfigError`). ``env`` defaults to
        ``os.environ``; ``clock`` is the wall clock (JWT times, HTTP dates),
        ``monotonic`` drives breakers and caches."""
        self.in_flight = InFlightLimit(max_in_flight) if max_in_flight else None
        self.routes = [
            ProxyRoute(
                route,
                key=f"routes[{i}]",
                base_dir=base_dir,
                env=env,
                clock=clock,
                monotonic=monotonic,
                in_flight=self.in_flight,
            )
            for i, route in enumerate(routes)
        ]

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Proxy:
        """The proxy for ``config.routes`` with ``limits.max_in_flight``."""
        return cls(
            config.routes,
            base_dir=config.base_dir,
            max_in_flight=config.limits.max_in_flight,
            env=env,
            clock=clock,
            monotonic=monotonic,
        )

    def site_entries(self) -> list[tuple[Segments, aiocoap.interfaces.Resource]]:
        """``(path segments, resource)`` pairs for ``Site.add_resource``: two
        per route (the prefix and its subtree)."""
        return [entry for route in self.routes for entry in site_entries(route)]

    def body_limit(self, path: Segments) -> int | None:
        """The ``max_body`` of the route that serves Uri-Path ``path`` (the
        longest matching prefix, as the Site dispatches); None when no route
        does. The root refuses a larger body before block-wise assembly
        spools it (RFC 7959 §2.9.3, :class:`gateway.resource_server.authorizer.AuthorizingSite`)."""
        best: ProxyRoute | None = None
        for route in self.routes:
            n = len(route.prefix)
            if path[:n] == route.prefix and (best is None or n > len(best.prefix)):
                best = route
        return None if best is None else best.config.max_body

    async def start(self) -> None:
        """Create the HTTP client sessions (needs the running loop)."""
        for route in self.routes:
            await route.upstream.start()

    async def close(self) -> None:
        """Close every HTTP client session."""
        for route in self.routes:
            await route.upstream.close()


__all__ = ["Proxy", "ProxyRoute", "RouteResource", "RouteSubtree"]
