"""Who is asking: the authorization context of one request.

The authorization layer (``gateway.resource_server.authorizer``) verifies a request before
the site dispatches it and sets :data:`CURRENT` for the duration of the
render; protected resources (the proxy, /whoami) read it with
:func:`current_auth`. Policy stays in the layer, resources only use the
result (aiocoap's OSCORE site wrapper pattern).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Literal

from gateway.errors import GatewayError
from gateway.resource_server.token_store import AccessToken
from tokens.aif import Scope


@dataclass(frozen=True, slots=True)
class AuthContext:
    """The verified facts about one authorized request. Holds no secret."""

    client_id: str  # the token's sub
    kid: bytes  # the PoP key id
    cti: bytes  # the token id
    scope: Scope
    issuer: str
    #: ``proof``: a valid Proof option; ``session``: an RFC 9202 token-bound session.
    via: Literal["proof", "session"]
    token: AccessToken

    def headers_fields(self) -> dict[str, str]:
        """Values for templated upstream headers (``{client_id}`` ...)."""
        return {
            "client_id": self.client_id,
            "sub": self.client_id,
            "scope": str(self.scope),
            "cti": self.cti.hex(),
            "kid": self.kid.hex(),
        }


class NotAuthorized(GatewayError):
    """A protected resource was rendered without an authorization context
    (a wiring error, never a peer's fault)."""

    reason = "no_auth_context"


CURRENT: contextvars.ContextVar[AuthContext | None] = contextvars.ContextVar(
    "acegw_auth", default=None
)


def current_auth() -> AuthContext:
    """The authorization context of the request being rendered."""
    auth = CURRENT.get()
    if auth is None:
        raise NotAuthorized("protected resource rendered outside the authorization layer")
    return auth
