"""The gateway service: wires the registry, the key store, the embedded AS,
the RS token intake and the DTLS transport into one aiocoap server.

``Gateway(config)`` is started with :meth:`Gateway.start` and stopped with
:meth:`Gateway.stop` (tests do this); :func:`serve` runs it until SIGINT or
SIGTERM (``acegw serve``).

PSK lookup for DTLS (RFC 4279 §2, RFC 9202 §3.3): a psk_identity is, in this
order, a registered client id (the registry's PSK), an RFC 9202 kid identity
``{8: {1: {1: 4, 2: kid}}}`` naming an uploaded token's PoP key, or a whole
access token, verified and stored as if uploaded to /authz-info; the PoP key
is then the PSK. Sessions bound to a token are closed when the token expires
or is superseded, revoked, or its client disabled (RFC 9202 §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.resource

from tokens import cnf as cnf_mod
from tokens.ace import CreationHints, IntrospectionResponse
from tokens.cwt import TokenVerifier
from tokens.echo import EchoIssuer
from tokens.errors import TokenError, WrongAudience
from tokens.keys import KeySet, SymmetricKey
from tokens.replay import FreshnessGuard

from .audit import AuditLog
from .authorization import UNPROTECTED, Authorizer, AuthorizingSite
from .authorization_server import AuthorizationServer, ClientPolicy, client_policy
from .config import Config
from .dtls import (
    CloseReason,
    DtlsRemote,
    DtlsServer,
    DtlsServerConfig,
    HandshakeOutcome,
    create_server_context,
)
from .errors import GatewayError
from .keystore import Keystore, load_key_set
from .limits import Lockout, RateLimiter
from .proxy import Proxy
from .registry import Registry
from .resource_server import TokenIntake, TrustedIssuer
from .resources import (
    AuthzInfoResource,
    IntrospectResource,
    TokenResource,
    WhoAmIResource,
)
from .token_store import AccessToken, TokenStore

log = logging.getLogger(__name__)

#: Seconds between housekeeping rounds (registry changes, token expiry).
HOUSEKEEPING_INTERVAL = 0.25


class Gateway:
    """One gateway worker: a DTLS-PSK CoAP server with the ACE endpoints."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
        registry: Registry | None = None,
        keystore: Keystore | None = None,
        audit: Callable[..., None] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.registry = registry or Registry.from_config(config)
        self.keystore = keystore or Keystore.from_config(config)
        self.audit: Callable[..., None] = audit or AuditLog(
            config.audit.path, sample_success=config.audit.sample_success, clock=clock
        )
        self.tokens = TokenStore(max_per_client=config.rs.max_tokens_per_client)
        self.authorization_server = AuthorizationServer(
            issuer=config.as_.issuer,
            audiences=config.audiences,
            lifetime=config.as_.token_lifetime,
            signing_key=self.keystore.signing_key,
            as_rs_key=self.keystore.as_rs_key,
        )
        self.intake = self._build_intake()
        limits = config.limits
        # A new Echo secret per process: Echo values (and so proofs) from
        # before a restart are refused after it (tokens/replay.py).
        self.guard = FreshnessGuard(EchoIssuer(os.urandom(32)))
        self.lockout = Lockout(
            max_failures=limits.lockout_failures,
            window=limits.lockout_window,
            ban_seconds=limits.lockout_seconds,
        )
        self.ace_limits = RateLimiter(limits.ace_rate, limits.ace_burst)
        self.authorizer = Authorizer(
            tokens=self.tokens,
            guard=self.guard,
            is_revoked=self.registry.is_revoked,
            client_enabled=self._client_enabled,
            session_client=self._session_client,
            device_limits=RateLimiter(limits.device_rate, limits.device_burst),
            device_rate=lambda client_id: limits.client_rates.get(client_id),
            lockout=self.lockout,
            hints=self._creation_hints,
            clock=clock,
        )
        self.proxy = Proxy.from_config(config, clock=clock)
        #: identities (psk_identity bytes) of sessions bound to each token kid
        self._bound: dict[bytes, set[bytes]] = {}
        self._policies: dict[str, tuple[int, ClientPolicy]] = {}
        self.context: aiocoap.Context | None = None
        self.dtls: DtlsServer | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    # --- wiring -------------------------------------------------------------

    def _build_intake(self) -> TokenIntake:
        issuers: list[TrustedIssuer] = []
        if self.config.as_.enabled:
            issuers.append(
                TrustedIssuer(
                    name=self.config.as_.issuer,
                    keys=self.keystore.verification_keys(),
                    decryption_keys=self.keystore.decryption_keys(),
                )
            )
        for ext in self.config.rs.issuers:
            keys = load_key_set(ext.keys_file)
            issuers.append(
                TrustedIssuer(
                    name=ext.name,
                    keys=KeySet(k for k in keys if not isinstance(k, SymmetricKey)),
                    decryption_keys=KeySet(k for k in keys if isinstance(k, SymmetricKey)),
                )
            )
        return TokenIntake(
            audience=self.config.rs.audience,
            issuers=issuers,
            leeway=self.config.rs.leeway,
            is_revoked=self.registry.is_revoked,
            is_client_enabled=self._client_enabled,
        )

    def _client_enabled(self, client_id: str) -> bool:
        """Per-request check (hot path): served from the registry's memory."""
        if not self.config.as_.enabled:
            return True  # external AS: its subjects are not in our registry
        return self.registry.psk_for(client_id) is not None

    #: Paths served without authorization (the ACE endpoints).
    unprotected: frozenset[tuple[str, ...]] = UNPROTECTED

    def resource_tree(self) -> aiocoap.resource.Site:
        """The resources, before the authorization layer."""
        site = aiocoap.resource.Site()
        site.add_resource(["whoami"], WhoAmIResource())
        if self.config.as_.enabled:
            site.add_resource(
                ["token"],
                TokenResource(self.authorization_server, self, self.clock, self.audit),
            )
            site.add_resource(
                ["introspect"], IntrospectResource(self.introspect, self, self.clock, self.audit)
            )
        site.add_resource(["authz-info"], AuthzInfoResource(self.accept, self.clock, self.audit))
        for path, resource in self.proxy.site_entries():
            site.add_resource(path, resource)
        return site

    def site(self) -> AuthorizingSite:
        """The resource tree behind the authorization layer."""
        return AuthorizingSite(
            self.resource_tree(),
            self.authorizer,
            self.audit,
            max_in_flight=self.config.limits.max_in_flight,
            on_failure=self._request_failed,
            ace_limit=self._ace_limit,
            unprotected=self.unprotected,
        )

    def _creation_hints(self, request: aiocoap.Message) -> CreationHints:
        """AS Request Creation Hints (RFC 9200 §5.3) for a 4.01 answer."""
        as_uri = None
        if self.config.as_.enabled:
            base = getattr(request.remote, "uri_base_local", None)
            as_uri = f"{base}/token" if base else None
        return CreationHints(as_uri=as_uri, audience=self.config.rs.audience)

    def _session_client(self, identity: bytes) -> str | None:
        try:
            return identity.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _ace_limit(self, request: aiocoap.Message) -> None:
        """Per-peer rate limit of the ACE endpoints (4.29)."""
        address = getattr(request.remote, "address", None)
        key = address[0] if address else None
        self.ace_limits.take(("ace", key), self.clock())

    def _request_failed(self, request: aiocoap.Message, reason: str) -> None:
        """A failed proof counts towards the lockout of identity and address."""
        now = self.clock()
        identity = getattr(request.remote, "psk_identity", None)
        address = getattr(request.remote, "address", None)
        for key in (("identity", identity), ("address", address[0] if address else None)):
            if key[1] is not None and self.lockout.failure(key, now):
                self.audit(event="lockout", decision="ban", reason=reason, **_lock_label(key))

    # --- what the resources and the transport call --------------------------

    def client_for_identity(self, identity: bytes) -> ClientPolicy | None:
        """The enabled registered client with this psk_identity, or None."""
        try:
            client_id = identity.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.registry.psk_for(client_id) is None:
            return None  # unknown or disabled
        generation = self.registry.generation(client_id)
        cached = self._policies.get(client_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        c = self.registry.get(client_id)
        try:
            policy = client_policy(c.client_id, c.scope, c.default_scope, c.audiences, c.public_key)
        except TokenError:
            log.error("client %s has an unusable scope or key in the registry", client_id)
            return None
        self._policies[client_id] = (c.generation, policy)
        return policy

    def accept(self, token: bytes, now: float, remote: Any = None) -> AccessToken:
        """Verify and store an uploaded token (RFC 9200 §5.10.1)."""
        access = self.intake.accept(token, now)
        for old in self.tokens.add(access):
            if old.kid != access.kid:
                self._close_bound(old.kid)
        return access

    def introspect(self, token: bytes, now: float) -> IntrospectionResponse:
        """Introspection of this AS's own tokens (RFC 9200 §5.9.2): inactive
        unless the token verifies for one of the AS audiences and is not
        revoked."""
        keys = self.keystore.verification_keys()
        dec = self.keystore.decryption_keys()
        for audience in self.config.audiences:
            verifier = TokenVerifier(
                audience=audience,
                keys=keys,
                decryption_keys=dec,
                issuer=self.config.as_.issuer,
                leeway=self.config.rs.leeway,
            )
            try:
                claims = verifier.verify(token, now)
            except WrongAudience:
                continue
            except TokenError:
                return IntrospectionResponse.inactive()
            if claims.cti is not None and self.registry.is_revoked(claims.cti):
                return IntrospectionResponse.inactive()
            cnf_value = claims.cnf
            if isinstance(cnf_value, cnf_mod.CnfKey) and isinstance(cnf_value.key, SymmetricKey):
                # the RS needs the PoP key; introspection runs over DTLS
                cnf_map = cnf_value.to_cbor()
            else:
                cnf_map = cnf_value.to_cbor() if cnf_value is not None else None
            return IntrospectionResponse(
                active=True,
                iss=claims.iss,
                sub=claims.sub,
                aud=claims.aud,
                exp=claims.exp,
                iat=claims.iat,
                cti=claims.cti,
                scope=claims.scope,
                cnf=cnf_map,
            )
        return IntrospectionResponse.inactive()

    def psk_lookup(self, identity: bytes) -> bytes | None:
        """PSK for a DTLS psk_identity (see the module docstring); None for
        unknown identities and for ones locked out after repeated failures."""
        if self.lockout.banned_until(("identity", identity), self.clock()) is not None:
            return None
        psk = self.registry.psk_for(identity)
        if psk is not None:
            return psk
        now = self.clock()
        kid = cnf_mod.parse_psk_identity(identity)
        if kid is not None:
            token = self.tokens.peek(kid)
            if token is None or token.exp <= now:
                return None
        elif identity[:1] and identity[0] >> 5 in (4, 6):  # CBOR array or tag
            try:
                token = self.accept(identity, now)
            except (TokenError, GatewayError):
                return None
        else:
            return None
        if not isinstance(token.pop_key, SymmetricKey):
            return None
        self._bound.setdefault(token.kid, set()).add(identity)
        return token.pop_key.secret

    # --- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        dtls_config = DtlsServerConfig(
            host=self.config.server.bind,
            port=self.config.server.port,
            reuse_port=self.config.server.workers != 1,
            max_sessions=self.config.dtls.max_sessions,
            max_handshakes=min(self.config.dtls.max_handshakes, self.config.dtls.max_sessions),
            idle_timeout=self.config.dtls.idle_timeout,
            handshake_timeout=self.config.dtls.handshake_timeout,
        )
        await self.proxy.start()
        self.context, self.dtls = await create_server_context(
            self.site(),
            dtls_config,
            self.psk_lookup,
            on_session_closed=self._session_closed,
            on_handshake=self._handshake_done,
        )
        self.registry.refresh()
        self._housekeeping = asyncio.create_task(self._housekeep())
        host, port = self.dtls.address
        log.info("gateway listening on coaps://[%s]:%d", host, port)

    @property
    def address(self) -> tuple[str, int]:
        assert self.dtls is not None, "gateway not started"
        return self.dtls.address

    async def stop(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
            self.dtls = None
        await self.proxy.close()
        if isinstance(self.audit, AuditLog):
            self.audit.close()

    def _handshake_done(self, outcome: HandshakeOutcome) -> None:
        """Audit record for every DTLS authentication decision."""
        identity = outcome.identity
        fields: dict[str, Any] = {}
        if identity is not None:
            kid = cnf_mod.parse_psk_identity(identity)
            if kid is not None:
                fields["kid"] = kid.hex()
            else:
                try:
                    fields["client_id"] = identity.decode("utf-8")
                except UnicodeDecodeError:
                    fields["identity_len"] = len(identity)
        if not outcome.ok:
            now = self.clock()
            for key in (("identity", identity), ("address", outcome.address[0])):
                if key[1] is not None and self.lockout.failure(key, now):
                    self.audit(
                        event="lockout", decision="ban", reason="handshake", **_lock_label(key)
                    )
        self.audit(
            event="handshake",
            decision="established" if outcome.ok else "deny",
            reason="ok" if outcome.failure is None else str(outcome.failure),
            peer=f"{outcome.address[0]}:{outcome.address[1]}",
            **fields,
        )

    def _session_closed(self, remote: DtlsRemote, reason: CloseReason) -> None:
        log.debug("session closed: %r (%s)", remote, reason)

    async def _housekeep(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL)
            try:
                self.housekeeping(self.clock())
            except Exception:  # keep serving; the next round retries
                log.exception("housekeeping failed")

    def housekeeping(self, now: float) -> None:
        """Apply registry changes from any process and expire tokens: close
        the sessions of disabled, deleted or re-keyed clients and of tokens
        that ended (RFC 9202 §5)."""
        changes = self.registry.refresh()
        if changes.client_ids or not changes.complete:
            affected = (
                set(changes.client_ids)
                if changes.complete
                else set(self._policies) | {t.client_id for t in self.tokens.all()}
            )
            for client_id in affected:
                self._policies.pop(client_id, None)
                if self.dtls is not None:
                    self.dtls.close_identity(client_id.encode())
                if self.client_for_identity(client_id.encode()) is None:
                    for token in self.tokens.remove_client(client_id):
                        self._close_bound(token.kid)
        if changes.revocations or not changes.complete:
            for token in self.tokens.all():
                if self.registry.is_revoked(token.cti):
                    self.tokens.remove_cti(token.cti)
                    self._close_bound(token.kid)
        for token in self.tokens.expire(now):
            self._close_bound(token.kid)
        if self.keystore.refresh():
            self.intake = self._build_intake()

    def _close_bound(self, kid: bytes) -> None:
        for identity in self._bound.pop(kid, ()):
            if self.dtls is not None:
                self.dtls.close_identity(identity)


def _lock_label(key: tuple[str, Any]) -> dict[str, str]:
    """Audit fields naming a lockout key (identity as text or length only)."""
    kind, value = key
    if kind == "address":
        return {"address": str(value)}
    kid = cnf_mod.parse_psk_identity(value)
    if kid is not None:
        return {"kid": kid.hex()}
    try:
        return {"client_id": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"identity_len": str(len(value))}


async def run(config: Config, *, ready: Callable[[Gateway], None] | None = None) -> None:
    """Run one gateway until SIGINT/SIGTERM."""
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    if ready is not None:
        ready(gateway)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve(config: Config) -> int:
    """``acegw serve``: run the gateway in this process until stopped."""
    logging.basicConfig(
        level=getattr(logging, config.logging.level, logging.INFO),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
        if config.logging.json
        else "%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(config))
    return 0


__all__ = ["Gateway", "run", "serve"]
