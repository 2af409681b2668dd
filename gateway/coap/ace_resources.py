"""CoAP resources of the ACE endpoints: /token and /introspect (the embedded
AS, RFC 9200 §5.8, §5.9) and /authz-info (the RS, RFC 9200 §5.10.1).

Resources only decode, call the sans-I/O decision code and encode; errors
become CoAP responses through :func:`gateway.coap.responses.error_response`. Every decision is
reported to an ``audit`` callable (no secret and no whole token in it).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import aiocoap
import aiocoap.resource
import cbor2
from aiocoap.numbers.codes import Code

from gateway.authorization_server.token_endpoint import AuthorizationServer, ClientPolicy
from gateway.coap.authorizing_site import authorized, peer_of
from gateway.coap.responses import error_response
from gateway.errors import GatewayError, RequestTooLarge
from tokens import cbor
from tokens.ace import IntrospectionRequest, IntrospectionResponse, TokenRequest
from tokens.errors import InvalidClient, MalformedError, TokenError
from tokens.params import CONTENT_FORMAT_ACE_CBOR, AceError, CoapCode

log = logging.getLogger(__name__)

#: Largest payload accepted on the ACE endpoints (a token request or a token).
MAX_ACE_PAYLOAD = 2048

Audit = Callable[..., None]


class UnsupportedContentFormat(GatewayError):
    """The ACE endpoints speak application/ace+cbor only (RFC 9200 §5.8: 4.15)."""

    coap_code = CoapCode.UNSUPPORTED_CONTENT_FORMAT
    reason = "unsupported_content_format"


class NotAuthenticated(GatewayError):
    """The request did not come over a DTLS session authenticated with a
    registered client's PSK (RFC 9200 §5.8: the AS authenticates the client)."""

    coap_code = CoapCode.UNAUTHORIZED
    ace_error = AceError.INVALID_CLIENT
    reason = "not_authenticated"


def ace_payload(request: aiocoap.Message) -> bytes:
    """The payload of an ACE request after the Content-Format and size checks."""
    cf = request.opt.content_format
    if cf is not None and int(cf) != CONTENT_FORMAT_ACE_CBOR:
        raise UnsupportedContentFormat("use Content-Format 19 (application/ace+cbor)")
    if len(request.payload) > MAX_ACE_PAYLOAD:
        raise RequestTooLarge(f"payload above {MAX_ACE_PAYLOAD} bytes")
    if not request.payload:
        raise MalformedError("empty payload")
    return bytes(request.payload)


class Clients(Protocol):
    """What the AS needs from the registry."""

    def client_for_identity(self, identity: bytes) -> ClientPolicy | None: ...


class AceResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """Shared by the ACE endpoints: audit a refusal and answer it."""

    event = "ace"

    def __init__(self, clock: Callable[[], float], audit: Audit) -> None:
        super().__init__()
        self._clock = clock
        self._audit = audit

    def _deny(
        self,
        request: aiocoap.Message,
        exc: TokenError | GatewayError,
        client_id: str | None = None,
        *,
        ace_body: bool = True,
    ) -> aiocoap.Message:
        self._audit(
            event=self.event,
            decision="deny",
            reason=exc.reason,
            peer=peer_of(request),
            client_id=client_id,
        )
        # 4.13 names the largest payload accepted (RFC 7959 §2.9.3)
        size1 = MAX_ACE_PAYLOAD if isinstance(exc, RequestTooLarge) else None
        return error_response(exc, ace_body=ace_body, size1=size1)


class TokenResource(AceResource):
    """``POST /token`` (RFC 9200 §5.8): client_credentials grant for the
    client authenticated by its DTLS PSK identity."""

    event = "token"

    def __init__(
        self,
        server: AuthorizationServer,
        clients: Clients,
        clock: Callable[[], float],
        audit: Audit,
    ) -> None:
        super().__init__(clock, audit)
        self._server = server
        self._clients = clients

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        identity = getattr(request.remote, "psk_identity", None)
        client_id = None
        try:
            client = self._clients.client_for_identity(identity) if identity else None
            if client is None:
                raise NotAuthenticated("token requests need a DTLS session with a client PSK")
            client_id = client.client_id
            token_request = TokenRequest.decode(ace_payload(request))
            issued = self._server.issue(token_request, client, self._clock())
        except (TokenError, GatewayError) as exc:
            return self._deny(request, exc, client_id)
        self._audit(
            event="token",
            decision="issue",
            reason="ok",
            peer=peer_of(request),
            client_id=client.client_id,
            kid=issued.pop_kid.hex(),
            cti=issued.cti.hex(),
        )
        return aiocoap.Message(
            code=Code.CREATED,
            payload=issued.response.encode(),
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )


class IntrospectResource(AceResource):
    """``POST /introspect`` (RFC 9200 §5.9) for resource servers that
    authenticate with their own PSK identity and whose registered scope allows
    ``POST /introspect``."""

    event = "introspect"

    def __init__(
        self,
        introspect: Callable[[bytes, float], IntrospectionResponse],
        clients: Clients,
        clock: Callable[[], float],
        audit: Audit,
    ) -> None:
        super().__init__(clock, audit)
        self._introspect = introspect
        self._clients = clients

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        identity = getattr(request.remote, "psk_identity", None)
        client = self._clients.client_for_identity(identity) if identity else None
        try:
            if client is None:
                raise NotAuthenticated("introspection needs a DTLS session with a client PSK")
            if not client.allowed_scope.allows(("introspect",), "POST"):
                raise InvalidClient("this client may not introspect")
            req = IntrospectionRequest.decode(ace_payload(request))
            result = self._introspect(req.token, self._clock())
        except (TokenError, GatewayError) as exc:
            return self._deny(request, exc, client.client_id if client else None)
        self._audit(
            event="introspect",
            decision="active" if result.active else "inactive",
            reason="ok",
            peer=peer_of(request),
            client_id=client.client_id,
        )
        return aiocoap.Message(
            code=Code.CONTENT, payload=result.encode(), content_format=CONTENT_FORMAT_ACE_CBOR
        )


def token_from_authz_info(payload: bytes) -> bytes:
    """The access token in an /authz-info payload (RFC 9200 §5.10.1).

    Accepted, so that clients of the ACE profiles interoperate: the CWT itself
    (a COSE array, tagged or not), the CWT wrapped in a CBOR byte string, or an
    ace+cbor map ``{1 (access_token): bstr}``.
    """
    value = cbor.decode(payload, what="authz-info payload", limit=MAX_ACE_PAYLOAD)
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict):
        token = value.get(1)
        if isinstance(token, bytes):
            return token
        raise MalformedError("authz-info map without access_token")
    if isinstance(value, list | cbor2.CBORTag):
        return payload
    raise MalformedError("authz-info payload is not a token")


class AuthzInfoResource(AceResource):
    """``POST /authz-info`` (RFC 9200 §5.10.1): token upload. 2.01 on
    success; errors with the codes of §5.10.1.1."""

    event = "authz-info"

    def __init__(
        self,
        accept: Callable[[bytes, float, Any], Any],
        clock: Callable[[], float],
        audit: Audit,
    ) -> None:
        super().__init__(clock, audit)
        self._accept = accept

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            token_bytes = token_from_authz_info(ace_payload(request))
            token = self._accept(token_bytes, self._clock(), request.remote)
            if inspect.isawaitable(token):  # the gateway's may introspect first
                token = await token
        except (TokenError, GatewayError) as exc:
            return self._deny(request, exc, ace_body=False)
        self._audit(
            event="authz-info",
            decision="accept",
            reason="ok",
            peer=peer_of(request),
            client_id=token.client_id,
            kid=token.kid.hex(),
            cti=token.cti.hex(),
        )
        return aiocoap.Message(code=Code.CREATED)


class WhoAmIResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """``GET /whoami``: echoes the authenticated client, its scope and how the
    request was authorized (a protected resource, for tests and bring-up).
    JSON (Content-Format 50)."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        auth = authorized(request)
        body = {
            "client_id": auth.client_id,
            "scope": str(auth.scope),
            "kid": auth.kid.hex(),
            "cti": auth.cti.hex(),
            "via": auth.via,
            "exp": int(auth.token.exp),
        }
        return aiocoap.Message(
            code=Code.CONTENT,
            payload=json.dumps(body, separators=(",", ":")).encode(),
            content_format=50,
        )
