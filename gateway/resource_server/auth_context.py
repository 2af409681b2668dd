"""Who is asking: the authorization context of one authorized request.

The authorizer (:mod:`gateway.resource_server.authorizer`) returns it in its
:class:`~gateway.resource_server.authorizer.Allow` verdict; the CoAP adapter
puts it on the request the resources receive
(:func:`gateway.coap.authorizing_site.authorized` reads it there). Policy
stays in the authorizer; resources only use the result.
"""

from __future__ import annotations

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
