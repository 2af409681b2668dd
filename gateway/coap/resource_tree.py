"""The gateway's resources by Uri-Path, and the dispatch of a request to one.

Owned rather than aiocoap's ``Site``: the request object the authorizing
site holds is the one the resource receives (the authorized context rides
on it), without the per-request copy of every option and the request URI
that ``Site`` builds. A resource at a path serves that path; a subtree
resource (a proxy route) also serves every path below it, the longest
prefix winning. A path nobody serves is 4.04 (RFC 7252 §5.9.2.5).
"""

from __future__ import annotations

from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.resource

Path = tuple[str, ...]


class ResourceTree:
    """Exact paths and subtrees (prefixes) -> resources with an async
    ``render(request)``."""

    def __init__(self) -> None:
        self._exact: dict[Path, Any] = {}
        self._subtrees: dict[Path, Any] = {}
        self._longest = 0

    def add_resource(
        self, path: Path | list[str], resource: Any, *, subtree: bool | None = None
    ) -> None:
        """Serve ``path`` (and, with ``subtree``, everything below it; by
        default a subtree for aiocoap's path-capable resources)."""
        key = tuple(path)
        if subtree is None:
            subtree = isinstance(resource, aiocoap.resource.PathCapable)
        if subtree:
            self._subtrees[key] = resource
            self._longest = max(self._longest, len(key))
        else:
            self._exact[key] = resource

    def find(self, path: Path) -> Any | None:
        """The resource serving ``path``, or None."""
        resource = self._exact.get(path)
        if resource is not None or not self._subtrees:
            return resource
        for n in range(min(len(path), self._longest), -1, -1):
            resource = self._subtrees.get(path[:n])
            if resource is not None:
                return resource
        return None

    async def render(self, request: aiocoap.Message, path: Path | None = None) -> aiocoap.Message:
        """Render ``request`` at the resource its path names (4.04 if none)."""
        resource = self.find(tuple(request.opt.uri_path) if path is None else path)
        if resource is None:
            raise aiocoap.error.NotFound()
        response: aiocoap.Message = await resource.render(request)
        return response


__all__ = ["ResourceTree"]
