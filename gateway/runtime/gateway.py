"""One gateway worker: wires the registry, the key store, the embedded AS,
the RS token intake, the proxy and the DTLS transport into one CoAP server.

``Gateway(config)`` is started with :meth:`Gateway.start`, drained with
:meth:`Gateway.drain` and stopped with :meth:`Gateway.stop`;
:mod:`gateway.runtime.serve` runs it under signals. :meth:`Gateway.reload`
applies routes, limits and the log level without touching DTLS sessions,
tokens or replay windows. The AS key set is also served over CoAP at
``/.well-known/ace-keys`` (unprotected).

The DTLS PSK callback is :class:`gateway.resource_server.psk_lookup.PskLookup`;
sessions keyed by a token are closed when the token expires or is
superseded, revoked, or its client disabled (RFC 9202 §5). Requests and
handshakes read the registry's memory only; :meth:`Gateway.housekeeping`
applies its change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource

from gateway import native
from gateway.authorization_server.introspection import Introspection
from gateway.authorization_server.issued_tokens import RecordingIssuer, issued_ledger
from gateway.authorization_server.keystore import Keystore, load_key_set
from gateway.authorization_server.revocation_list import TRL_PATH
from gateway.authorization_server.token_endpoint import (
    AuthorizationServer,
    ClientPolicy,
    client_policy,
)
from gateway.authorization_server.trl_publisher import TrlPublisher
from gateway.coap.ace_resources import (
    AuthzInfoResource,
    IntrospectResource,
    TokenResource,
    WhoAmIResource,
)
from gateway.coap.authorizing_site import AuthorizingSite
from gateway.coap.resource_tree import ResourceTree
from gateway.coap.service_site import ServiceSite
from gateway.config import SECTIONS, Config
from gateway.dtls import (
    CloseReason,
    DtlsRemote,
    DtlsServer,
    DtlsServerConfig,
    HandOver,
    HandshakeFailure,
    HandshakeOutcome,
    create_server_context,
)
from gateway.errors import GatewayError
from gateway.operations import metrics as m
from gateway.operations.audit import AuditLog
from gateway.operations.gateway_events import GatewayEvents
from gateway.operations.gateway_metrics import (
    GatewayMetrics,
    MeteredAudit,
    RouteLabels,
    collect,
    time_upstream,
)
from gateway.proxy import Proxy
from gateway.registry.registry import Registry
from gateway.registry.shared_tokens import SharedTokens, shares_tokens
from gateway.resource_server import trust_file
from gateway.resource_server.authorizer import UNPROTECTED, Authorizer, RequestView
from gateway.resource_server.issuer_follower import (
    FollowedIssuers,
    IntrospectionNeeded,
    IssuerStale,
)
from gateway.resource_server.lockout import Ban, Lockout
from gateway.resource_server.psk_lookup import PskLookup
from gateway.resource_server.rate_limits import RateLimiter
from gateway.resource_server.token_intake import TokenIntake, TrustedIssuer
from gateway.resource_server.token_store import AccessToken, TokenStore
from tokens import cnf as cnf_mod
from tokens.ace import CreationHints
from tokens.cwt import decode_unverified
from tokens.echo import EchoIssuer
from tokens.errors import Revoked, TokenError, UnknownKey
from tokens.keys import KeySet, SymmetricKey
from tokens.proof import parse_proof
from tokens.replay import FreshnessGuard

log = logging.getLogger(__name__)

#: Seconds between housekeeping rounds (registry changes, token expiry).
HOUSEKEEPING_INTERVAL = 0.25
#: Seconds between purges of what has expired in the registry (revocations,
#: change-log rows past their retention, shared held tokens) and the AS's
#: issued-token ledger; worker 0 of each instance does it, in a thread
#: (deletes of expired rows: instances sharing a database may both run it).
PURGE_INTERVAL = 600.0
#: Seconds between writes of the lockout's trusted pairs (also written at stop).
TRUST_SAVE_INTERVAL = 300.0
#: CoAP path of the AS verification key set (unprotected, GET).
KEYS_PATH = (".well-known", "ace-keys")
#: CoAP Content-Format of application/cose-key-set (RFC 9052 §11.2).
CONTENT_FORMAT_COSE_KEY_SET = 102
#: Configuration sections a SIGHUP applies; changes elsewhere need a restart.
RELOADABLE = ("routes", "limits", "logging")
#: Called with an accepted token and its exp, to share it with other workers.
TokenShare = Callable[[bytes, float], None]


class KeySetResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """``GET /.well-known/ace-keys``: the AS's token verification keys as a
    COSE_KeySet (RFC 9052 §7), public parts only, for resource servers that
    verify this AS's signed tokens. A rotated-in key appears here as it starts
    signing; a retired one disappears."""

    def __init__(self, key_set: Callable[[], bytes]) -> None:
        super().__init__()
        self._key_set = key_set

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(
            code=aiocoap.CONTENT,
            payload=self._key_set(),
            content_format=CONTENT_FORMAT_COSE_KEY_SET,
            max_age=60,
        )


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
        worker: int = 0,
        udp_fd: int | None = None,
        share_token: TokenShare | None = None,
        hand_over: HandOver | None = None,
    ) -> None:
        """``worker``: this worker's index (the metrics ``worker`` label);
        ``udp_fd``: an already bound UDP socket to serve on (from the
        supervisor); ``share_token``: told about every token this worker
        accepts, so other workers can hold it too."""
        self.config = config
        self.clock = clock
        self.worker = worker
        self._udp_fd = udp_fd
        self.share_token = share_token
        #: Several workers on one port: this worker's index goes into the CIDs
        #: it assigns, and datagrams with another worker's CID go here.
        self.hand_over = hand_over
        #: told after housekeeping applied a changed AS key set (a worker
        #: passes the public set to its supervisor, which serves ``/keys``)
        self.on_keys: Callable[[], None] | None = None
        self.metrics = GatewayMetrics()
        self.registry = registry or Registry.from_config(config)
        #: the AS keys: the key directory, or the registry store when it is
        #: PostgreSQL (shared by every instance)
        self.keystore = keystore or Keystore.from_config(config, registry=self.registry)
        if self.keystore.note and worker == 0:
            log.warning("%s", self.keystore.note)
        self._audit_sink: Callable[..., None] = audit or AuditLog(
            config.audit.path, sample_success=config.audit.sample_success, clock=clock
        )
        #: operational events (docs/operations.md "Events")
        self.events = GatewayEvents()
        self.audit: Callable[..., None] = MeteredAudit(
            self._audit_sink,
            self.metrics,
            observe=lambda fields: self.events.audit_record(fields, self.clock()),
        )
        self.tokens = TokenStore(max_per_client=config.rs.max_tokens_per_client)
        #: PostgreSQL: accepted tokens written for the other instances, and
        #: looked up when a proof names a kid not held here (off the loop)
        self.shared_tokens: SharedTokens | None = (
            SharedTokens(self.registry.store, clock=clock)  # type: ignore[arg-type]
            if shares_tokens(self.registry.store)
            else None
        )
        #: external ASes followed (RFC 9770 TRL, key set, introspection)
        self.followed = FollowedIssuers(
            config.rs.issuers, drop=self._drop_ctis, on_keys=self._issuer_keys, clock=clock
        )
        #: keys fetched from followed issuers: name -> key set
        self._fetched_keys: dict[str, KeySet] = {}
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
        self.echo = EchoIssuer(os.urandom(32))
        self.guard = FreshnessGuard(self.echo)
        self.lockout = Lockout(
            max_failures=limits.lockout_failures,
            max_identities=limits.lockout_identities,
            window=limits.lockout_window,
            ban_seconds=limits.lockout_seconds,
            trust_seconds=limits.lockout_trust,
        )
        # pairs trusted before a restart stay trusted (lockout docstring)
        self.lockout.restore_trust(trust_file.load_all(config.base_dir), self.clock())
        self._next_trust_save: float | None = None
        self.ace_limits = RateLimiter(limits.ace_rate, limits.ace_burst)
        self.device_limits = RateLimiter(limits.device_rate, limits.device_burst)
        self.authorizer = Authorizer(
            tokens=self.tokens,
            guard=self.guard,
            is_revoked=self._is_revoked,
            client_enabled=self._client_enabled,
            cut_off=self._cut_off,
            device_limits=self.device_limits,
            device_rate=lambda client_id: self.config.limits.client_rates.get(client_id),
            version=lambda: self.registry.version + self.followed.version,  # polled; read
            lockout=self.lockout,
            ace_limits=self.ace_limits,
            hints=CreationHints(audience=config.rs.audience),
            unprotected=self.unprotected,
        )
        self.proxy = self._build_proxy(config)
        self.psk_lookup = PskLookup(
            client_psk=self.registry.psk_for,
            tokens=self.tokens,
            accept=self.accept_identity,
            clock=self.clock,
            outcome=self._psk_identity_token,
            fetch=self._fetch_for_handshake if self.shared_tokens is not None else None,
        )
        #: fetches of tokens named by a handshake's kid identity (RFC 9202 §3.3)
        self._handshake_fetches: set[asyncio.Task[None]] = set()
        self.introspect = Introspection(
            issuer=config.as_.issuer,
            audiences=lambda: self.config.audiences,
            keys=self.keystore.verification_keys,
            decryption_keys=self.keystore.decryption_keys,
            is_revoked=self.registry.is_revoked,
            leeway=lambda: self.config.rs.leeway,
        )
        self._policies: dict[str, tuple[int, ClientPolicy]] = {}
        #: the embedded AS's token revocation list (RFC 9770)
        self.trl: TrlPublisher | None = None
        if config.as_.enabled:
            self.trl = TrlPublisher(
                issued_ledger(config, self.registry.store),
                client_for_identity=self.client_for_identity,
                admins=lambda: self.config.as_.trl_admins,
                audiences=lambda: self.config.audiences,
                revoked=self.registry.revoked,
                cutoff=self._cutoff_at,
                audit=self.audit,
            )
        #: the registry change :meth:`housekeeping` has applied up to
        self._applied_stamp = self.registry.change_stamp()
        #: kid of the AS key that signed or encrypted each held token (by PoP kid)
        self._token_key: dict[bytes, bytes] = {}
        #: when each established session started: (address, identity) -> epoch
        self._started: dict[tuple[Any, bytes], float] = {}
        #: the key manifest as last applied: kid -> (kind, status)
        self._key_view = self._keys_now()
        self.context: aiocoap.Context | None = None
        self.dtls: DtlsServer | None = None
        self.root: ServiceSite | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        #: when the next purge is due (set by the first housekeeping) and the running one
        self._next_purge: float | None = None
        self._purging: asyncio.Future[tuple[int, int]] | None = None

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
            keys = KeySet(load_key_set(Path(ext.keys_file)) if ext.keys_file else ())
            for key in self._fetched_keys.get(ext.name, ()):
                if key.kid not in keys:
                    keys.add(key)
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
            is_revoked=self._is_revoked,
            is_client_enabled=self._client_enabled,
            cut_off=self._cut_off,
        )

    def _is_revoked(self, cti: bytes) -> bool:
        """Revoked here (registry) or at a followed AS (its TRL)."""
        return self.registry.is_revoked(cti) or self.followed.is_revoked(cti)

    def _cutoff_at(self, client_id: str) -> float | None:
        status = self.registry.status(client_id)
        return None if status is None else status.cutoff

    def _issuer_keys(self, issuer: str, keys: KeySet) -> None:
        """A key set fetched from a followed AS: rebuild the intake when it
        brings a kid not trusted yet or drops one."""
        old = self._fetched_keys.get(issuer)
        if old is not None and {k.kid for k in old} == {k.kid for k in keys}:
            return
        self._fetched_keys[issuer] = keys
        self.intake = self._build_intake()

    def _drop_ctis(self, ctis: list[bytes], cause: str) -> int:
        """Drop held tokens by cti and close their sessions (a revocation
        at a followed AS, or its TRL stale under fail-closed)."""
        wanted = set(ctis)
        sessions = 0
        dropped: list[str] = []
        for token in self.tokens.all():
            if token.cti in wanted:
                self.tokens.remove_cti(token.cti)
                sessions += self._drop(token, cause)
                dropped.append(token.cti.hex())
        if cause == "revoked":
            self.events.revoked(dropped, sessions)
        for cti in dropped:
            self.audit(event="revocation", decision="drop", reason=cause, cti=cti)
        return len(dropped)

    def _build_proxy(self, config: Config) -> Proxy:
        proxy = Proxy.from_config(config, clock=self.clock)
        for route in proxy.routes:
            time_upstream(route.upstream, route.config.prefix, self.metrics)
        return proxy

    def _client_enabled(self, client_id: str) -> bool:
        """Per-request check (hot path): served from the registry's memory."""
        if not self.config.as_.enabled:
            return True  # external AS: its subjects are not in our registry
        return self.registry.psk_for(client_id) is not None

    def _cut_off(self, client_id: str, iat: float | None) -> bool:
        """Whether a token issued to ``client_id`` at ``iat`` predates its last
        disable or delete ("disable means disable": refused after an enable)."""
        if not self.config.as_.enabled:
            return False
        status = self.registry.status(client_id)
        cutoff = None if status is None else status.cutoff
        return cutoff is not None and (iat is None or iat <= cutoff)

    def _client_disabled(self, identity: bytes) -> bool:
        """Whether ``identity`` names a registered client that is disabled."""
        try:
            client_id = identity.decode("utf-8")
        except UnicodeDecodeError:
            return False
        status = self.registry.status(client_id) if len(client_id) <= 64 else None
        return status is not None and status.exists and not status.enabled

    #: Paths served without authorization (the ACE endpoints, the key set).
    unprotected: frozenset[tuple[str, ...]] = UNPROTECTED | {KEYS_PATH, TRL_PATH}

    def resource_tree(self) -> ResourceTree:
        """The resources, before the authorizing site."""
        site = ResourceTree()
        site.add_resource(["whoami"], WhoAmIResource())
        if self.config.as_.enabled:
            site.add_resource(
                ["token"],
                TokenResource(
                    RecordingIssuer(self.authorization_server, self.trl.ledger)
                    if self.trl is not None
                    else self.authorization_server,
                    self,
                    self.clock,
                    self.audit,
                ),
            )
            site.add_resource(
                ["introspect"], IntrospectResource(self.introspect, self, self.clock, self.audit)
            )
            site.add_resource(list(KEYS_PATH), KeySetResource(self.keystore.export_public))
        if self.trl is not None:
            site.add_resource(list(self.trl.resource.path), self.trl.resource)
        upload = AuthzInfoResource(self.accept_upload, self.clock, self.audit)
        site.add_resource(["authz-info"], upload)
        for path, resource in self.proxy.site_entries():
            site.add_resource(path, resource)
        return site

    def site(self) -> AuthorizingSite:
        """The resource tree behind the authorizing site."""
        return AuthorizingSite(
            self.resource_tree(),
            self.authorizer,
            self.audit,
            clock=self.clock,
            on_failure=self._request_failed,
            as_uri=self._as_uri,
            find_token=self.find_shared if self.shared_tokens is not None else None,
            max_body=self.config.limits.max_body,
            body_limit=self.proxy.body_limit,
        )

    def _as_uri(self, request: aiocoap.Message) -> str | None:
        """The AS's /token URI for Request Creation Hints (RFC 9200 §5.3):
        on the address the request came to, when the AS is embedded."""
        if not self.config.as_.enabled:
            return None
        base = getattr(request.remote, "uri_base_local", None)
        return f"{base}/token" if base else None

    def _request_failed(self, view: RequestView, reason: str) -> None:
        """A failed proof counts towards the lockout of the session's
        (identity, address) pair (:mod:`gateway.resource_server.lockout`),
        except a bad MAC on a request carrying an Echo value this process
        issued for that very kid: a client library repeating a 4.01 + Echo on
        its own with the old proof (libcoap does), not a forger."""
        now = self.clock()
        if reason == "bad_signature" and self._echoed_by_us(view, now):
            return
        if view.identity is not None and view.address:
            self._failed(view.identity, view.address, reason, now)

    def _failed(self, identity: bytes, address: str, reason: str, now: float) -> None:
        for ban in self.lockout.failure(identity, address, now):
            self.audit(
                event="lockout",
                decision="ban",
                reason=reason,
                scope=str(ban.scope),
                until=round(ban.until, 3),
                **ban_label(ban),
            )
            self.events.ban(ban_label(ban), str(ban.scope), ban.until - ban.since, reason)

    def admit_identity(self, identity: bytes, sockaddr: Any) -> bool:
        """Whether a handshake naming ``identity`` from ``sockaddr`` may go on
        to its PSK lookup: not if the lockout refuses the pair."""
        return self.lockout.refuses(identity, str(sockaddr[0]), self.clock()) is None

    def bans(self) -> list[dict[str, Any]]:
        """The bans in force on this worker, for ``acegw bans list``."""
        now = self.clock()
        return [
            {
                "scope": str(ban.scope),
                **ban_label(ban),
                "since": round(ban.since, 3),
                "until": round(ban.until, 3),
                "worker": self.worker,
            }
            for ban in self.lockout.bans(now)
        ]

    def lift_bans(self, address: str | None, identity: bytes | None, by: str) -> int:
        """Lift matching bans (an operator's ``acegw bans lift``); audited."""
        lifted = self.lockout.lift(self.clock(), address=address, identity=identity)
        for ban in lifted:
            self.audit(
                event="lockout", decision="lift", reason=by, scope=str(ban.scope), **ban_label(ban)
            )
        self.events.lift([{"scope": str(b.scope), **ban_label(b)} for b in lifted], by)
        return len(lifted)

    def _echoed_by_us(self, view: RequestView, now: float) -> bool:
        if view.echo is None or not view.proofs:
            return False
        try:
            self.echo.verify(view.echo, parse_proof(view.proofs[0]).kid, now)
        except TokenError:
            return False
        return True

    # --- what the resources and the transport call --------------------------

    def client_for_identity(self, identity: bytes) -> ClientPolicy | None:
        """The enabled registered client with this psk_identity, or None."""
        try:
            client_id = identity.decode("utf-8")
        except UnicodeDecodeError:
            return None
        c = self.registry.cached(client_id)  # memory only
        if c is None or not c.enabled:
            return None  # unknown or disabled
        cached = self._policies.get(client_id)
        if cached is not None and cached[0] == c.generation:
            return cached[1]
        try:
            policy = client_policy(c.client_id, c.scope, c.default_scope, c.audiences, c.public_key)
        except TokenError:
            log.error("client %s has an unusable scope or key in the registry", client_id)
            return None
        self._policies[client_id] = (c.generation, policy)
        return policy

    def accept(
        self, token: bytes, now: float, remote: Any = None, *, introspect: bool = True
    ) -> AccessToken:
        """Verify and store an uploaded token (RFC 9200 §5.10.1), and share
        it with the other workers. Raises IntrospectionNeeded for a token of
        a followed issuer whose TRL is not followed (see accept_upload)."""
        access = self._store(token, now, introspect=introspect)
        if self.share_token is not None:
            self.share_token(token, access.exp)
        if self.shared_tokens is not None:
            self.shared_tokens.publish(access.kid, token, access.exp)  # queued, written later
        return access

    async def find_shared(self, kid: bytes) -> bool:
        """A proof named ``kid``, which no token held here has: look it up
        among the tokens other instances accepted (awaited, the query runs
        in a worker thread, bounded: :mod:`gateway.registry.shared_tokens`),
        verify it here as if uploaded, hold it and share it with this
        instance's other workers. True if the request may be authorized again."""
        assert self.shared_tokens is not None
        return self._hold_shared(kid, await self.shared_tokens.find(kid))

    def _hold_shared(self, kid: bytes, token: bytes | None) -> bool:
        """Hold ``token`` found in the shared store for ``kid`` (see
        :meth:`find_shared`); a refused one is not asked for again for a while."""
        assert self.shared_tokens is not None
        if token is None:
            return False
        if kid in self.tokens:
            return True  # another request of the same device brought it meanwhile
        access = self.accept_shared(token, self.clock())
        if access is None or access.kid != kid:
            self.shared_tokens.refused(kid)
            return False
        self.metrics.tokens_accepted.inc("shared_store")
        if self.share_token is not None:
            self.share_token(token, access.exp)
        return True

    def _fetch_for_handshake(self, kid: bytes) -> bool:
        """A handshake's RFC 9202 §3.3 kid identity names a token not held
        here: start looking it up in the shared store (the same bounds and
        negative cache as proofs); False when it is not asked. The handshake
        is held meanwhile and asks again when the lookup ends."""
        assert self.shared_tokens is not None
        asked = self.shared_tokens.ask(kid)
        if asked is None:
            return False
        task = asyncio.create_task(self._fetched_for_handshake(kid, asked))
        self._handshake_fetches.add(task)
        task.add_done_callback(self._handshake_fetches.discard)
        return True

    async def _fetched_for_handshake(self, kid: bytes, asked: asyncio.Future[bytes | None]) -> None:
        assert self.shared_tokens is not None
        try:
            self._hold_shared(kid, await self.shared_tokens.answer(asked))
        finally:
            with self.psk_lookup.settling(kid) as waiting:
                for identity in waiting:
                    if self.dtls is not None:
                        self.dtls.retry_held(identity)

    async def accept_upload(self, token: bytes, now: float, remote: Any = None) -> AccessToken:
        """``/authz-info``: :meth:`accept`, introspecting first (RFC 9200
        §5.9, bounded wait) when the token's issuer's TRL is not followed.
        Tokens already known to this worker never wait."""
        try:
            return self.accept(token, now, remote)
        except IntrospectionNeeded as need:
            await self.followed.introspect_now(need)
        return self.accept(token, self.clock(), remote, introspect=False)

    def accept_identity(self, token: bytes, now: float) -> AccessToken:
        """A token carried as PSK identity (RFC 9202 §3.2.1): the handshake
        cannot wait, so a token needing introspection is introspected in
        the background and this handshake refused (the retry finds it)."""
        try:
            return self.accept(token, now)
        except IntrospectionNeeded as need:
            self.followed.introspect_later(need)
            raise

    def accept_shared(self, token: bytes, now: float) -> AccessToken | None:
        """A token another worker accepted: verified here again (it may have
        been revoked, or its key retired, since) and stored; None if refused."""
        try:
            access = self._store(token, now, introspect=False)
        except (TokenError, GatewayError) as exc:
            log.debug("shared token refused: %s", exc.reason)
            return None
        self.metrics.tokens_accepted.inc("shared")
        return access

    def _store(self, token: bytes, now: float, *, introspect: bool = True) -> AccessToken:
        try:
            access = self.intake.accept(token, now)
        except UnknownKey:
            self.followed.unknown_kid()  # fetch the key set (rate-limited)
            raise
        if self.followed:
            refusal = self.followed.admit(
                access.issuer, token, access.cti, access.exp, introspect=introspect
            )
            if refusal == "revoked":
                raise Revoked("token revoked")
            if refusal == "introspect":
                raise IntrospectionNeeded(access.issuer, token, access.exp)
            if refusal is not None:
                raise IssuerStale("the issuer's revocation list is stale (fail-closed)")
        key_kid = decode_unverified(token).kid
        if key_kid is not None:
            self._token_key[access.kid] = key_kid
        for old in self.tokens.add(access):
            if old.kid != access.kid:
                self._token_key.pop(old.kid, None)
                self._close_bound(old.kid)
        return access

    def _psk_identity_token(self, reason: str | None) -> None:
        """A token carried as PSK identity: accepted (None) or refused."""
        if reason is None:
            self.metrics.tokens_accepted.inc("psk_identity")
        else:
            self.metrics.tokens_rejected.inc("psk_identity", reason)

    # --- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        dtls_config = DtlsServerConfig(
            host=self.config.server.bind,
            port=self.config.server.port,
            reuse_port=self.config.server.workers != 1,
            max_sessions=self.config.dtls.max_sessions,
            max_handshakes=min(self.config.dtls.max_handshakes, self.config.dtls.max_sessions),
            address_handshake_share=self.config.dtls.address_handshake_share,
            idle_timeout=self.config.dtls.idle_timeout,
            handshake_timeout=self.config.dtls.handshake_timeout,
            inherited_fd=self._udp_fd,
            cid_owner=self.worker if self.hand_over is not None else None,
        )
        await self.proxy.start()
        self.root = ServiceSite(
            self.site(),
            self.metrics,
            self._route_labels(self.config),
            max_in_flight=self.config.limits.max_in_flight,
        )
        self.context, self.dtls = await create_server_context(
            self.root,
            dtls_config,
            self.psk_lookup,
            on_session_closed=self._session_closed,
            on_handshake=self._handshake_done,
            admit_identity=self.admit_identity,
            hand_over=self.hand_over,
        )
        self.registry.load()  # the view requests and handshakes read
        self.registry.watch()  # PostgreSQL: changes pushed (LISTEN/NOTIFY)
        self._housekeeping = asyncio.create_task(self._housekeep())
        if self.shared_tokens is not None:
            self.shared_tokens.start()
        if self.trl is not None:
            self.root.observable = self.trl.resource
            self.trl.refresh(self.clock(), changed=True)
        self.followed.start()
        host, port = self.dtls.address
        log.info("gateway listening on coaps://[%s]:%d", host, port)
        native.log_choices()

    @property
    def address(self) -> tuple[str, int]:
        assert self.dtls is not None, "gateway not started"
        return self.dtls.address

    @property
    def draining(self) -> bool:
        return self.root is not None and self.root.draining

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """For /readyz: serving and not draining."""
        serving = self.dtls is not None and not self.draining
        if self.followed:
            followed_ok, issuers = self.followed.readiness(self.clock())
            serving = serving and followed_ok
        detail: dict[str, Any] = {"worker": self.worker, "draining": self.draining}
        # an unreachable shared registry: served from memory, changes refused
        detail["registry"] = "connected" if self.registry.store_connected else "unreachable"
        if self.dtls is not None:
            detail["sessions"] = self.dtls.stats().sessions
        if self.followed:
            detail["issuers"] = issuers
        if self.trl is not None:
            detail["trl"] = self.trl.stats()
        return serving, detail

    async def drain(self, timeout: float) -> bool:
        """Graceful shutdown, first half: refuse new handshakes (ClientHellos
        are dropped, the peer retries elsewhere or later), answer new requests
        5.03 with Max-Age, and wait up to ``timeout`` seconds for the requests
        in flight. True if none is left."""
        if self.dtls is not None:
            self.dtls.accepting = False
        if self.root is None:
            return True
        self.root.draining = True
        left = await self.root.until_idle(timeout)
        if left:
            log.warning("drain deadline passed with %d request(s) in flight", left)
        return left == 0

    async def stop(self) -> None:
        """Stop serving: close_notify to every peer, close the socket, the
        upstream clients and the audit log."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        if self.trl is not None:
            self.trl.resource.close()
            await asyncio.sleep(0)  # observations answer 5.03 and end
        if self.context is not None:
            await self.context.shutdown()
            self.context = None
            self.dtls = None
        for task in [*self._retiring, *self._handshake_fetches]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._purging is not None:
            await self._purging  # a thread: it ends by itself; the stores close after it
        self._keep_trust(self.lockout.trusted_pairs(self.clock()))
        await self.followed.stop()
        if self.shared_tokens is not None:
            await self.shared_tokens.stop()
        if self.trl is not None:
            self.trl.ledger.close()
        self.keystore.close()
        await self.proxy.close()
        if isinstance(self._audit_sink, AuditLog):
            self._audit_sink.close()

    async def reload(self, config: Config) -> list[str]:
        """Apply the routes, limits and log level of ``config`` (SIGHUP).
        Sessions, tokens and replay windows stay; requests already handed to
        the old routes finish on them. Returns the sections that changed but
        need a restart (not applied). A bad route raises ConfigError and
        changes nothing."""
        proxy = self._build_proxy(config)
        try:
            await proxy.start()
        except BaseException:
            await proxy.close()
            raise
        old_proxy, self.proxy = self.proxy, proxy
        old = self.config
        self.config = dataclasses.replace(
            old, routes=config.routes, limits=config.limits, logging=config.logging
        )
        limits = config.limits
        self.device_limits.rate, self.device_limits.burst = limits.device_rate, limits.device_burst
        self.ace_limits.rate, self.ace_limits.burst = limits.ace_rate, limits.ace_burst
        self.lockout.max_failures = limits.lockout_failures
        self.lockout.max_identities = limits.lockout_identities
        self.lockout.window = limits.lockout_window
        self.lockout.ban_seconds = limits.lockout_seconds
        self.lockout.trust_seconds = limits.lockout_trust
        self.authorizer.forget()  # per-client rates may have changed
        logging.getLogger().setLevel(getattr(logging, config.logging.level, logging.INFO))
        if self.root is not None:
            self.root.inner = self.site()
            self.root.routes = self._route_labels(self.config)
            self.root.max_in_flight = self.config.limits.max_in_flight
        # requests on the old routes end within their timeout
        grace = max((r.timeout for r in old.routes), default=0.0) + 1.0
        task = asyncio.create_task(_close_later(old_proxy, grace))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        attrs = {"as": "as_"}
        restart = [
            name
            for name in SECTIONS
            if name not in RELOADABLE
            and getattr(old, attrs.get(name, name)) != getattr(config, attrs.get(name, name))
        ]
        self.metrics.reloads.inc("ok")
        applied = [
            name
            for name in RELOADABLE
            if getattr(old, name) != getattr(config, name)
            and (name != "routes" or old.routes != config.routes)
        ]
        self.events.reloaded(len(config.routes), applied, restart)
        return restart

    @staticmethod
    def _route_labels(config: Config) -> RouteLabels:
        return RouteLabels([r.prefix for r in config.routes])

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
        address = str(outcome.address[0])
        reason = "ok" if outcome.failure is None else str(outcome.failure)
        now = self.clock()
        if identity is not None:
            if outcome.ok:
                self.lockout.success(identity, address, now)
                if len(self._started) > 2 * self.config.dtls.max_sessions + 1024:
                    self._started.clear()  # moved peers' leftovers; ages become unknown
                self._started[(outcome.address, identity)] = now
            elif outcome.failure is not HandshakeFailure.LOCKED_OUT:
                # a refusal by a ban is no new failure; a handshake that failed
                # before naming anyone guessed no credential
                self._failed(identity, address, reason, now)
            looked_up = self.psk_lookup.refused_disabled(identity)  # token of one
            if outcome.failure is HandshakeFailure.UNKNOWN_IDENTITY and (
                looked_up or self._client_disabled(identity)
            ):
                reason = "client_disabled"  # the peer sees an unknown identity alike
                self.metrics.handshakes_client_disabled += 1
        if not outcome.ok:
            self.events.handshake_failed(address, reason, now)
        self.audit(
            event="handshake",
            decision="established" if outcome.ok else "deny",
            reason=reason,
            peer=f"{outcome.address[0]}:{outcome.address[1]}",
            **fields,
        )

    def _session_closed(self, remote: DtlsRemote, reason: CloseReason) -> None:
        log.debug("session closed: %r (%s)", remote, reason)
        self._started.pop((remote.address, remote.psk_identity), None)

    def session_started(self, remote: DtlsRemote) -> float | None:
        """When the session of ``remote`` was established (epoch seconds),
        if known (a session moved by its Connection ID is not)."""
        return self._started.get((remote.address, remote.psk_identity))

    def token_key(self, token: AccessToken) -> bytes | None:
        """The kid of the AS key that signed or encrypted a held token."""
        return self._token_key.get(token.kid)

    def _keys_now(self) -> dict[str, tuple[str, str]]:
        return {e.kid.hex(): (e.kind, e.status) for e in self.keystore.list()}

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
        that ended (RFC 9202 §5).

        Its own cursor into the change log, apart from the registry's view
        (which :meth:`Registry.refresh` moves), so no change is missed."""
        self.registry.refresh()
        changes = self.registry.changes_since(self._applied_stamp)
        self._applied_stamp = changes.stamp
        for address, identity in changes.lifts:
            self.lift_bans(address, identity, "operator")
        if changes.client_ids or not changes.complete:
            affected = (
                set(changes.client_ids)
                if changes.complete
                else set(self._policies) | {t.client_id for t in self.tokens.all()}
            )
            last_kind = {cid: kind for kind, cid in changes.kinds if cid is not None}
            for client_id in affected:
                self._policies.pop(client_id, None)
                cut = client_id in changes.cut_off or not changes.complete
                sessions = 0
                if cut and self.dtls is not None:
                    sessions = self.dtls.close_identity(client_id.encode())
                gone = []
                if self.client_for_identity(client_id.encode()) is None:
                    gone = self.tokens.remove_client(client_id)
                else:  # enabled again: its tokens from before the disable stay refused
                    for token in self.tokens.for_client(client_id):
                        if self._cut_off(client_id, token.claims.iat):
                            self.tokens.remove_cti(token.cti)
                            gone.append(token)
                for token in gone:
                    sessions += self._drop(token, "client")
                if changes.complete:
                    self.events.client_change(
                        last_kind.get(client_id, ""), client_id, sessions, len(gone)
                    )
        if changes.revocations or not changes.complete:
            revoked: list[str] = []
            sessions = 0
            for token in self.tokens.all():
                if self.registry.is_revoked(token.cti):
                    self.tokens.remove_cti(token.cti)
                    sessions += self._drop(token, "revoked")
                    revoked.append(token.cti.hex())
            if any(kind == "revoke" for kind, _ in changes.kinds):
                self.events.revoked(revoked, sessions)
        for token in self.tokens.expire(now):
            self._drop(token, "expired")
        if self.trl is not None:
            self.trl.refresh(
                now, changed=bool(changes.revocations or changes.client_ids or not changes.complete)
            )
        self.followed.housekeeping(now)
        if changes.keys or not changes.complete:
            self.keystore.reload_soon()  # read in the key store's thread, applied below
        if self.keystore.refresh():
            # new tokens are signed with the new current key (the AS reads the
            # key store at each request); retired keys stop verifying here
            self.intake = self._build_intake()
            dropped = self._drop_untrusted_tokens()
            before, self._key_view = self._key_view, self._keys_now()
            current = {
                kind: kid for kid, (kind, status) in self._key_view.items() if status == "current"
            }
            retired = [
                kid
                for kid, (_, status) in self._key_view.items()
                if status == "retired" and before.get(kid, ("", ""))[1] != "retired"
            ]
            self.events.keys_changed(current, retired, dropped)
            if self.on_keys is not None:
                self.on_keys()
        if self.dtls is not None:
            self.events.dtls_drops(self.dtls.stats().dropped, now, self.dtls.take_cap_drops())
        self.events.breakers(
            (route.config.prefix, route.upstream.breaker.state.value) for route in self.proxy.routes
        )
        self.events.tick(now)
        if self.worker == 0:
            self._purge_when_due(now)
        if self._next_trust_save is None or now >= self._next_trust_save:
            if self._next_trust_save is not None:
                # the table is read here, on the loop; the file is written in a thread
                pairs = self.lockout.trusted_pairs(now)
                asyncio.get_running_loop().run_in_executor(None, self._keep_trust, pairs)
            self._next_trust_save = now + TRUST_SAVE_INTERVAL

    def _keep_trust(self, pairs: list[tuple[bytes, str, float]]) -> None:
        """Write this worker's trusted pairs (kept across a restart)."""
        trust_file.save(trust_file.trust_path(self.config.base_dir, self.worker), pairs)

    def _purge_when_due(self, now: float) -> None:
        """Every :data:`PURGE_INTERVAL` (the first one interval after start),
        :meth:`purge_expired` in a thread, never on the event loop."""
        if self._next_purge is None:
            self._next_purge = now + PURGE_INTERVAL
        if now < self._next_purge or (self._purging is not None and not self._purging.done()):
            return
        self._next_purge = now + PURGE_INTERVAL
        self._purging = asyncio.get_running_loop().run_in_executor(None, self.purge_expired, now)

    def purge_expired(self, now: float) -> tuple[int, int]:
        """Drop expired revocations, old change-log rows and expired shared
        held tokens from the registry, and expired tokens from the issued-token
        ledger (they left the TRL, RFC 9770 §5.1); returns (revocations,
        ledger rows). A store that cannot be reached is retried next time."""
        revocations = issued = 0
        try:
            revocations = self.registry.purge_expired(now)
            if self.trl is not None:
                issued = self.trl.purge(now)
        except GatewayError as exc:
            log.warning("purging expired registry rows failed (retried later): %s", exc)
        except Exception:  # a maintenance job: never the reason a worker stops
            log.exception("purging expired registry rows failed (retried later)")
        if revocations or issued:
            log.info("purged %d expired revocations, %d expired issued tokens", revocations, issued)
        return revocations, issued

    def _drop_untrusted_tokens(self) -> int:
        """Drop held tokens of this AS whose signing or AS-RS key was retired:
        their proofs then get 4.01 (unknown_kid), a re-upload 4.01 too.
        Returns how many."""
        dropped = 0
        trusted = {k.kid for k in self.keystore.verification_keys()}
        trusted |= {k.kid for k in self.keystore.decryption_keys()}
        for token in self.tokens.all():
            key_kid = self._token_key.get(token.kid)
            if token.issuer == self.config.as_.issuer and key_kid not in trusted:
                self.tokens.remove_cti(token.cti)
                self._drop(token, "key_retired")
                dropped += 1
        return dropped

    def _drop(self, token: AccessToken, cause: str) -> int:
        """Count a dropped token; close its RFC 9202 sessions (how many)."""
        self.metrics.token_retirements.inc(cause)
        return self._close_bound(token.kid)

    def _close_bound(self, kid: bytes) -> int:
        self._token_key.pop(kid, None)
        closed = 0
        for identity in self.psk_lookup.release(kid):
            if self.dtls is not None:
                closed += self.dtls.close_identity(identity)
        return closed

    # --- metrics --------------------------------------------------------------

    def collect(self) -> list[m.Family]:
        """Every metric of this worker, labelled ``worker``."""
        families = collect(self)
        const = {"worker": str(self.worker)}
        families.append(
            m.family(
                "acegw_registry_connected",
                "gauge",
                "1 while the registry's store answers: its last change-log read succeeded"
                " (and on PostgreSQL, its notification connection is up).",
                [(const, 1.0 if self.registry.store_connected else 0.0)],
            )
        )
        if self.shared_tokens is not None:
            families += self.shared_tokens.families(const)
        if self.followed:
            families += self.followed.families({"worker": str(self.worker)})
        return families

    async def metrics_text(self) -> str:
        return m.render(self.collect())


def identity_fields(identity: bytes) -> dict[str, str]:
    """Fields naming a PSK identity without its bytes: the client id, the
    kid of an RFC 9202 identity, or (a whole token, anything else) its length
    only."""
    kid = cnf_mod.parse_psk_identity(identity)
    if kid is not None:
        return {"kid": kid.hex()}
    if identity[:1] and identity[0] >> 5 in (4, 6):  # a CBOR array or tag: a token
        return {"identity_len": str(len(identity))}
    try:
        return {"client_id": identity.decode("utf-8")}
    except UnicodeDecodeError:
        return {"identity_len": str(len(identity))}


def ban_label(ban: Ban) -> dict[str, str]:
    """Audit and listing fields naming a ban: its address and, for a pair,
    the identity (:func:`identity_fields`)."""
    fields = {"address": ban.address}
    if ban.identity is not None:
        fields.update(identity_fields(ban.identity))
    return fields


def describe_ban(ban: Ban) -> str:
    label = ban_label(ban)
    who = label.get("client_id") or label.get("kid") or label.get("identity_len")
    return f"{who} from {ban.address}" if ban.identity is not None else f"address {ban.address}"


async def _close_later(proxy: Proxy, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        await proxy.close()


__all__ = ["Gateway", "KeySetResource", "ban_label", "describe_ban", "identity_fields"]
