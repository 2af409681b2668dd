"""Header rules for upstream requests: which headers the gateway owns, the
route's templated headers (``{client_id}`` ...), and how identity values are
made safe for an HTTP field value (RFC 9110 §5.5).

A device cannot send HTTP headers: the only header values it influences are
the ones :mod:`gateway.proxy.mapping` derives from CoAP options
(:data:`~gateway.proxy.mapping.MAPPED_REQUEST_HEADERS`). Identity headers are
set by the gateway alone, from the verified
:class:`~gateway.resource_server.auth_context.AuthContext`.
A route's ``headers`` may not name a header the gateway derives or sets
itself (checked when the route is built), so nothing can overwrite them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import ConfigError
from gateway.proxy.mapping import MAPPED_REQUEST_HEADERS

#: Headers set by the HTTP client or the proxy itself (framing, routing);
#: a route may not configure them.
TRANSPORT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "accept-encoding",
        "content-encoding",
    }
)

#: Headers that carry who is asking. Never derived from anything the device
#: sends; a route may set them only as templates of the verified identity.
IDENTITY_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-client-id",
        "x-client-scope",
        "x-device-id",
        "x-scope",
        "x-user",
        "x-authenticated-user",
        "x-api-key",
    }
)

#: Template fields (``AuthContext.headers_fields()``).
TEMPLATE_FIELDS = frozenset({"client_id", "sub", "scope", "cti", "kid"})
#: Fields that name one device (a response to a request carrying them may
#: be personal, so the cache keys on the client too).
IDENTITY_FIELDS = frozenset({"client_id", "sub", "cti", "kid"})

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def field_value(text: str) -> str:
    """An identity value made safe for an HTTP field value: characters outside
    visible ASCII and space, and ``%`` itself, are percent-encoded (UTF-8),
    so a client id can never add a line or a header."""
    out = []
    for ch in text:
        if ch == "%" or not (" " <= ch <= "~"):
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
        else:
            out.append(ch)
    return "".join(out).strip()


@dataclass(frozen=True)
class HeaderTemplate:
    """One configured header; ``{field}`` placeholders are filled per request."""

    name: str
    template: str
    fields: frozenset[str]

    def render(self, values: Mapping[str, str]) -> str:
        if not self.fields:
            return self.template
        return _PLACEHOLDER.sub(lambda m: field_value(values[m.group(1)]), self.template)


def compile_headers(
    headers: Mapping[str, str], *, key: str, owned: frozenset[str] = frozenset()
) -> tuple[HeaderTemplate, ...]:
    """Check a route's ``headers`` (at start, :class:`ConfigError` naming
    ``key``): no header the proxy derives from CoAP options or the HTTP
    client sets, none in ``owned`` (the route's upstream credential header),
    no name twice in different case, only known ``{fields}``. The error
    never echoes a value (they may be secrets)."""
    out = []
    seen: set[str] = set()
    for name, template in headers.items():
        lower = name.lower()
        if lower in MAPPED_REQUEST_HEADERS or lower in TRANSPORT_HEADERS:
            raise ConfigError(f"{key}: header {name!r} is set by the proxy itself", key=key)
        if lower in owned:
            raise ConfigError(
                f"{key}: header {name!r} carries the route's upstream credential", key=key
            )
        if lower in seen:
            raise ConfigError(f"{key}: header {name!r} is given twice", key=key)
        seen.add(lower)
        names = frozenset(_PLACEHOLDER.findall(template))
        unknown = names - TEMPLATE_FIELDS
        if unknown or template.count("{") != template.count("}"):
            raise ConfigError(
                f"{key}: header {name!r} uses an unknown placeholder; known: "
                + ", ".join("{" + f + "}" for f in sorted(TEMPLATE_FIELDS)),
                key=key,
            )
        out.append(HeaderTemplate(name=name, template=template, fields=names))
    return tuple(out)


def uses_identity(templates: tuple[HeaderTemplate, ...]) -> bool:
    """Whether any header names the device (see :data:`IDENTITY_FIELDS`)."""
    return any(t.fields & IDENTITY_FIELDS for t in templates)
