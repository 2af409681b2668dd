"""The CoAP side of authorization: build the authorizer's view of a request,
apply its verdict (docs/design.md "Request path").

:class:`AuthorizingSite` sits between the root resource
(:class:`~gateway.coap.service_site.ServiceSite`) and the resource tree. For
every request it refuses a body above the limits (4.13 with Size1, RFC 7959
§2.9.3) and unknown critical options (4.02, RFC 7252 §5.4.1), asks the
:class:`~gateway.resource_server.authorizer.Authorizer` with a
:class:`~gateway.resource_server.authorizer.RequestView`, and then either
puts the authorized context on the request and dispatches it, or renders the
refusal (:func:`gateway.coap.responses.error_response`). NON requests that
fail a security check get no response (RFC 7967 No-Response semantics,
docs/design.md "Errors"). Block-wise requests reach it reassembled: the proof
covers the whole body (docs/authorization.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import aiocoap
from aiocoap.numbers.codes import Code
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.numbers.types import Type

from gateway.coap.aiocoap_adapter import auth_of, options_of, set_auth, uri_path
from gateway.coap.resource_tree import ResourceTree
from gateway.coap.responses import error_response
from gateway.errors import GatewayError
from gateway.resource_server.auth_context import AuthContext, NotAuthorized
from gateway.resource_server.authorizer import (
    Authorizer,
    Refuse,
    RequestView,
    client_label,
)
from tokens.errors import TokenError
from tokens.params import (
    CONTENT_FORMAT_OPTION,
    ECHO_OPTION,
    PROOF_OPTION,
    URI_QUERY_OPTION,
    CoapCode,
)
from tokens.proof import parse_proof

#: Largest request body (after Block1 reassembly) accepted on any path.
DEFAULT_MAX_BODY = 1024 * 1024
#: Block1 and Size1 (RFC 7959 §2.1, §4): where a body ends, its announced size.
_BLOCK1 = int(OptionNumber.BLOCK1)
_SIZE1 = int(OptionNumber.SIZE1)
#: Option numbers aiocoap knows; others that are critical get 4.02.
_KNOWN_OPTIONS = frozenset(int(o) for o in OptionNumber.__members__.values()) | {PROOF_OPTION}


class BadOption(GatewayError):
    """An unrecognised critical option (RFC 7252 §5.4.1: 4.02)."""

    coap_code = CoapCode.BAD_OPTION
    reason = "bad_option"


def authorized(request: aiocoap.Message) -> AuthContext:
    """Who is asking, for a protected resource: the context the authorizing
    site put on ``request``."""
    auth = auth_of(request)
    if not isinstance(auth, AuthContext):
        raise NotAuthorized("protected resource rendered outside the authorizing site")
    return auth


def peer_of(request: aiocoap.Message) -> str:
    """The peer's address for audit records (never the identity bytes)."""
    try:
        return str(request.remote.hostinfo)
    except Exception:  # pragma: no cover - remotes always have hostinfo
        return "?"


def request_view(request: aiocoap.Message, path: tuple[str, ...]) -> RequestView:
    """The authorizer's view of ``request`` (as received)."""
    options = options_of(request)
    query = options.get(URI_QUERY_OPTION)
    cf = options.get(CONTENT_FORMAT_OPTION)
    echo = options.get(ECHO_OPTION)
    proofs = options.get(PROOF_OPTION)
    remote = request.remote
    address = getattr(remote, "address", None)
    return RequestView(
        method=int(request.code),
        path=path,
        query=() if query is None else tuple([o.value for o in query]),
        content_format=None if cf is None else int(cf[0].value),
        payload=request.payload,
        proofs=() if proofs is None else tuple([o.value for o in proofs]),
        echo=None if echo is None else echo[0].value,
        identity=getattr(remote, "psk_identity", None),
        address=str(address[0]) if address else None,
    )


class AuthorizingSite:
    """Authorizes every request, then hands it to ``inner`` (a
    :class:`~gateway.coap.resource_tree.ResourceTree`).

    ``on_failure(view, reason)``: told of every refusal that counts towards
    the lockout; ``as_uri(request)``: the AS's /token URI for Request
    Creation Hints (None: the hints name none); ``body_limit(path)``: a
    tighter body limit of the resource at a path (a proxy route's);
    ``find_token(kid)``: awaited when a proof names a kid no held token has
    (a device moved from another instance); True: the token is held now and
    the request is authorized again."""

    def __init__(
        self,
        inner: ResourceTree,
        authorizer: Authorizer,
        audit: Callable[..., None],
        *,
        clock: Callable[[], float],
        on_failure: Callable[[RequestView, str], None] | None = None,
        as_uri: Callable[[aiocoap.Message], str | None] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        body_limit: Callable[[tuple[str, ...]], int | None] | None = None,
        find_token: Callable[[bytes], Awaitable[bool]] | None = None,
    ) -> None:
        self.inner = inner
        self._find_token = find_token
        self.authorizer = authorizer
        self._audit = audit
        self._clock = clock
        self._on_failure = on_failure
        self._as_uri = as_uri
        self.max_body = max_body
        self._body_limit = body_limit
        # An audit sink that is off stays off (AuditLog's sink is fixed when
        # it opens; a closed one drops records): no record is built for it.
        self._audit_enabled = bool(getattr(audit, "enabled", True))

    def oversized(
        self, request: aiocoap.Message, path: tuple[str, ...] | None = None
    ) -> aiocoap.Message | None:
        """4.13 with Size1 (RFC 7959 §2.9.3) for a body above ``max_body`` or
        above the limit ``body_limit`` gives its path, judged by Size1 and
        by where the block ends, before block-wise assembly spools it; None
        when it fits. The root resource calls this first (with the request's
        Uri-Path, when it has it already)."""
        options = options_of(request)
        size = len(request.payload)
        block1 = options.get(_BLOCK1)
        if block1 is not None:
            block = block1[0].value
            size += block.block_number * block.size
        size1 = options.get(_SIZE1)
        if size1 is not None:
            size = max(size1[0].value, size)
        if not size:
            return None
        limit = self.max_body
        if self._body_limit is not None:
            tighter = self._body_limit(uri_path(request) if path is None else path)
            if tighter is not None and tighter < limit:
                limit = tighter
        if size > limit:
            return aiocoap.Message(code=Code.REQUEST_ENTITY_TOO_LARGE, size1=limit)
        return None

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        return await self.render_at(request, uri_path(request))

    async def render_at(self, request: aiocoap.Message, path: tuple[str, ...]) -> aiocoap.Message:
        """:meth:`render` for a request whose Uri-Path (``path``) the caller
        has already read (the root resource does, for its route label)."""
        for number in options_of(request):
            if number & 1 and number not in _KNOWN_OPTIONS:
                unknown = min(n for n in options_of(request) if n & 1 and n not in _KNOWN_OPTIONS)
                return error_response(
                    BadOption(f"critical option {unknown} not supported"), ace_body=False
                )
        view = request_view(request, path)
        verdict = self.authorizer.authorize(view, self._clock())
        if (
            self._find_token is not None
            and isinstance(verdict, Refuse)
            and verdict.reason == "unknown_kid"
            and view.proofs
        ):
            # a device moved here from another instance: its token may be
            # in the shared store (awaited off the event loop, bounded)
            kid = parse_proof(view.proofs[0]).kid
            if await self._find_token(kid):
                verdict = self.authorizer.authorize(view, self._clock())
        if isinstance(verdict, Refuse):
            return self._refuse(request, view, verdict)
        auth = verdict.context
        if auth is not None:
            if self._audit_enabled:
                self._audit(
                    event="request",
                    decision="allow",
                    reason="ok",
                    peer=peer_of(request),
                    client_id=auth.client_id,
                    kid=auth.kid.hex(),
                    cti=auth.cti.hex(),
                    resource="/" + "/".join(path),
                    method=str(request.code),
                    via=auth.via,
                )
            set_auth(request, auth)
        return await self.inner.render(request, path)

    def _refuse(self, request: aiocoap.Message, view: RequestView, refusal: Refuse) -> Any:
        kid = None
        if view.proofs:
            try:
                kid = parse_proof(view.proofs[0]).kid.hex()
            except TokenError:
                kid = None
        self._audit(
            event="request",
            decision="deny",
            reason=refusal.reason,
            code=refusal.code.dotted,
            peer=peer_of(request),
            client_id=client_label(view.identity),
            kid=kid,
            resource="/" + "/".join(view.path),
            method=str(request.code),
        )
        if refusal.failed_proof and self._on_failure is not None:
            self._on_failure(view, refusal.reason)
        if request.mtype == Type.NON and not refusal.answer_non:
            # silence for NON requests failing security checks
            return aiocoap.Message(code=Code(int(refusal.code)), no_response=26)
        hints = refusal.hints
        if hints is not None and hints.as_uri is None and self._as_uri is not None:
            hints = dataclasses.replace(hints, as_uri=self._as_uri(request))
        return error_response(
            refusal.error, ace_body=False, echo=refusal.echo, max_age=refusal.max_age, hints=hints
        )


__all__ = [
    "DEFAULT_MAX_BODY",
    "AuthorizingSite",
    "BadOption",
    "authorized",
    "peer_of",
    "request_view",
]
