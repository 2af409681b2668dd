"""Following an external AS (``[[rs.issuers]]`` with ``as_uri``): this
gateway, registered at that AS as a resource server with its own PSK
identity, keeps a DTLS session to it and

- observes its Token Revocation List (RFC 9770 §11: a full query with
  Observe: 0, §7) and hands every token hash of each response or
  notification to ``on_revoked`` at once; after a lost session it
  registers again with a full query, so revocations made meanwhile arrive
  with the first response;
- fetches its key set (``/.well-known/ace-keys`` over the same session, or an
  http(s) URL) every ``keys_refresh`` seconds and, rate-limited to one per
  ``keys_min_interval``, when a token names an unknown kid;
- polls the TRL with a full query when the AS answers without Observe;
- introspects a token (RFC 9200 §5.9) on its first use while the TRL is
  not followed (the gateway waits for it on upload, bounded; a token
  carried as PSK identity is introspected in the background and its
  handshake refused until then); results cached by token hash until the
  token's exp or a TRL notification. Only verified tokens are
  introspected (a stranger's bytes never reach the AS); at most
  ``MAX_INTROSPECTING`` at once per worker, and after a failure none for
  ``INTROSPECT_BACKOFF`` seconds: the staleness rules decide meanwhile;
- knows how stale its view is: the TRL is *followed* while the observation
  lives; otherwise stale after ``max_staleness`` seconds, when ``on_stale``
  decides (fail-closed: this issuer's tokens are dropped and refused;
  fail-open: accepted, and said so in /readyz and the metrics).

The clock is injected; the network side is :class:`AsSession`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from aiocoap import GET, POST, Message
from aiocoap.numbers.codes import Code

from gateway.authorization_server.revocation_list import (
    TrlResponseError,
    parse_response,
    token_hash,
)
from gateway.config import IssuerConfig
from gateway.errors import ConfigError, GatewayError
from gateway.resource_server.as_client import AsSession, AsUnreachable, coaps_address
from tokens import cbor
from tokens.ace import IntrospectionRequest, IntrospectionResponse
from tokens.errors import TokenError
from tokens.keys import KeySet, SymmetricKey, key_from_cose
from tokens.params import CONTENT_FORMAT_ACE_CBOR, CoapCode

log = logging.getLogger(__name__)

#: Seconds between attempts to reach an AS that cannot be reached (doubling to this).
MAX_RETRY = 5.0
#: Largest key set accepted from the AS.
MAX_KEY_SET = 64 * 1024
#: Introspection results kept.
MAX_INTROSPECTED = 50_000
#: Introspections in flight at once (per worker); more tokens are not introspected.
MAX_INTROSPECTING = 64
#: Introspection requests to one AS at once.
INTROSPECT_PARALLEL = 8
#: Seconds an upload waits for its introspection before the staleness rules decide.
INTROSPECT_WAIT = 3.0
#: Seconds without introspection attempts after one failed.
INTROSPECT_BACKOFF = 5.0


class TrlRefused(AsUnreachable):
    """The AS answered the TRL query with an error (the session stays)."""


class IntrospectionNeeded(GatewayError):
    """A verified token of a followed issuer whose TRL is not followed and
    that has no introspection result yet: introspect it, then admit it."""

    coap_code = CoapCode.SERVICE_UNAVAILABLE
    reason = "introspection_pending"

    def __init__(self, issuer: str, token: bytes, exp: float) -> None:
        super().__init__("the token is being introspected at its AS")
        self.issuer = issuer
        self.token = token
        self.exp = exp


class IssuerStale(GatewayError):
    """A followed issuer's revocation list is stale past ``max_staleness``
    under fail-closed, and the token could not be introspected (4.01)."""

    coap_code = CoapCode.UNAUTHORIZED
    reason = "issuer_stale"


def read_psk(path: str) -> bytes:
    """The PSK in ``psk_file`` (hex text); the file must not be readable by others."""
    p = Path(path)
    if p.stat().st_mode & 0o077:
        raise ConfigError(f"{p} must not be readable by group or others (chmod 600)")
    try:
        psk = bytes.fromhex(p.read_text().strip())
    except ValueError:
        raise ConfigError(f"{p}: the PSK must be hex text") from None
    if not psk:
        raise ConfigError(f"{p} is empty")
    return psk


@dataclass
class FollowerState:
    """What /readyz and the metrics say about one followed issuer."""

    following: bool = False
    #: when the TRL was last known complete (a response, a notification, or
    #: the observation alive); None: never
    synced_at: float | None = None
    trl_size: int = 0
    notifications: int = 0
    bad_responses: int = 0
    key_fetches: int = 0
    key_fetch_failures: int = 0
    keys_fetched_at: float | None = None
    introspections: int = 0
    introspection_failures: int = 0
    polls: int = 0
    last_error: str = ""
    reconnects: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class IssuerFollower:
    """One followed issuer (see the module docstring)."""

    def __init__(
        self,
        config: IssuerConfig,
        *,
        on_revoked: Callable[[str, frozenset[bytes]], None],
        on_keys: Callable[[str, KeySet], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.name = config.name
        self._on_revoked = on_revoked
        self._on_keys = on_keys
        self._clock = clock
        self._address = coaps_address(config.as_uri)
        self._psk = read_psk(config.psk_file)
        self.state = FollowerState()
        #: token hashes on the AS's TRL pertaining to this RS, as last known
        self.revoked: frozenset[bytes] = frozenset()
        self._session: AsSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._keys_wanted = asyncio.Event()
        self._last_kid_fetch = -1e18
        self._introspected: dict[bytes, tuple[bool, float]] = {}
        self._connecting = asyncio.Lock()
        self.introspecting = asyncio.Semaphore(INTROSPECT_PARALLEL)
        self._introspect_after = -1e18
        #: False after a connection attempt failed, until one succeeds
        self._reachable = True

    # --- state ---

    def stale(self, now: float) -> bool:
        """Whether the TRL view is older than ``max_staleness`` (not followed)."""
        if self.state.following:
            return False
        synced = self.state.synced_at
        return synced is None or now - synced > self.config.max_staleness

    @property
    def fail_closed(self) -> bool:
        return self.config.on_stale == "fail-closed"

    def readiness(self, now: float) -> dict[str, Any]:
        s = self.state
        stale = self.stale(now)
        detail: dict[str, Any] = {
            "following": s.following,
            "stale": stale,
            "on_stale": self.config.on_stale,
            "trl_size": s.trl_size,
            "synced_age": None if s.synced_at is None else round(now - s.synced_at, 3),
            "keys_age": None if s.keys_fetched_at is None else round(now - s.keys_fetched_at, 3),
        }
        if s.last_error:
            detail["last_error"] = s.last_error
        if stale:
            detail["why"] = (
                f"revocation list of {self.name} not followed for more than "
                f"{self.config.max_staleness:g} s ({s.last_error or 'no response yet'}); "
                + ("its tokens are refused" if self.fail_closed else "its tokens are accepted")
            )
        return detail

    def introspected(self, th: bytes, now: float) -> bool | None:
        """A cached introspection result for a token hash, if still valid."""
        hit = self._introspected.get(th)
        if hit is None:
            return None
        active, until = hit
        if until <= now:
            self._introspected.pop(th, None)
            return None
        return active

    def may_introspect(self, now: float) -> bool:
        """False while the AS cannot be reached (the last connection attempt
        failed) and for ``INTROSPECT_BACKOFF`` s after a failed introspection."""
        return self._reachable and now >= self._introspect_after

    # --- life cycle ---

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"follow {self.name}"),
            asyncio.create_task(self._keys_loop(), name=f"keys {self.name}"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            self._session.close()
            self._session = None

    async def _connected(self) -> AsSession:
        async with self._connecting:  # the TRL, key and introspection tasks share one
            session = self._session
            if session is not None and not session.closed.is_set():
                return session
            session = AsSession(self._address, self.config.identity.encode(), self._psk)
            try:
                await session.connect()
            except (GatewayError, OSError):
                self._reachable = False
                raise
            self._reachable = True
            self._session = session
            return session

    # --- the TRL (RFC 9770 §11) ---

    async def _follow(self) -> None:
        delay = 0.25
        while True:
            try:
                session = await self._connected()
                first = await session.observe(self.config.trl_path, (), self._notified)
                if first.code != Code.CONTENT:
                    raise TrlRefused(f"TRL answered {first.code}")
                self._apply(bytes(first.payload))
                self.state.following = first.opt.observe is not None
                delay = 0.25
                if self.state.following:
                    await session.closed.wait()
                    self.state.last_error = "session to the AS ended"
                else:
                    self.state.last_error = "the AS does not offer Observe on its TRL (polled)"
                    await self._poll(session)
            except asyncio.CancelledError:
                raise
            except (GatewayError, OSError) as exc:
                self.state.last_error = getattr(exc, "description", None) or str(exc)
                if isinstance(exc, TrlRefused):
                    self.state.following = False
                    await asyncio.sleep(delay)  # the session serves keys and introspection
                    delay = min(delay * 2, MAX_RETRY)
                    continue
            except Exception:
                log.exception("following %s failed", self.name)
                self.state.last_error = "internal error"
            if self.state.following:
                self.state.synced_at = self._clock()  # it was live until now
            self.state.following = False
            self.state.reconnects += 1
            if self._session is not None:
                self._session.close()
                self._session = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY)

    async def _poll(self, session: AsSession) -> None:
        """Full queries every third of ``max_staleness`` (an AS without
        Observe), until the session ends or the AS answers an error."""
        interval = max(1.0, self.config.max_staleness / 3)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.closed.wait(), interval)
                return
            message = Message(code=GET)
            message.opt.uri_path = tuple(s for s in self.config.trl_path.split("/") if s)
            response = await session.request(message)
            if response.code != Code.CONTENT:
                raise TrlRefused(f"TRL answered {response.code}")
            self.state.polls += 1
            self._apply(bytes(response.payload))

    def _notified(self, message: Message) -> None:
        if message.code != Code.CONTENT:
            self.state.last_error = f"TRL notification {message.code}"
            if self._session is not None:
                self._session.close()  # the observation ended; register again
            return
        self.state.notifications += 1
        self._apply(bytes(message.payload))

    def _apply(self, payload: bytes) -> None:
        try:
            response = parse_response(payload)
        except TrlResponseError as exc:
            self.state.bad_responses += 1
            self.state.last_error = exc.description
            log.warning("TRL of %s: %s", self.name, exc.description)
            return
        if response.full is not None:
            revoked = response.full
        else:  # a diff (we ask for full queries; handled all the same)
            current = set(self.revoked)
            for removed, added in reversed(response.diffs):
                current -= removed
                current |= added
            revoked = frozenset(current)
        new = revoked - self.revoked
        self.revoked = revoked
        self.state.trl_size = len(revoked)
        self.state.synced_at = self._clock()
        for th in new:
            self._introspected.pop(th, None)
        if new:
            self._on_revoked(self.name, frozenset(new))

    # --- the key set ---

    def unknown_kid(self) -> None:
        """A token named a kid no trusted key has: fetch the key set soon,
        at most once per ``keys_min_interval``."""
        now = self._clock()
        if now - self._last_kid_fetch >= self.config.keys_min_interval:
            self._last_kid_fetch = now
            self._keys_wanted.set()

    async def _keys_loop(self) -> None:
        while True:
            try:
                await self.fetch_keys()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.state.key_fetch_failures += 1
                self.state.last_error = f"key set: {getattr(exc, 'description', None) or exc}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keys_wanted.wait(), self.config.keys_refresh)
            self._keys_wanted.clear()

    async def fetch_keys(self) -> KeySet:
        url = self.config.keys_url or self.config.as_uri + "/.well-known/ace-keys"
        if url.startswith("coaps://"):
            session = await self._connected()
            message = Message(code=GET)
            message.opt.uri_path = tuple(s for s in url.split("/", 3)[3].split("/") if s)
            response = await session.request(message)
            if response.code != Code.CONTENT:
                raise AsUnreachable(f"key set answered {response.code}")
            data = bytes(response.payload)
        else:
            data = await asyncio.to_thread(_http_get, url)
        if len(data) > MAX_KEY_SET:
            raise AsUnreachable("key set too large")
        keys = decode_public_key_set(data)
        self.state.key_fetches += 1
        self.state.keys_fetched_at = self._clock()
        self._on_keys(self.name, keys)
        return keys

    # --- introspection (RFC 9200 §5.9) ---

    async def introspect(self, token: bytes, th: bytes, exp: float) -> bool:
        """Ask the AS whether ``token`` is active; cached by hash until exp
        or a TRL notification naming it. Raises AsUnreachable."""
        now = self._clock()
        cached = self.introspected(th, now)
        if cached is not None:
            return cached
        session = await self._connected()
        message = Message(
            code=POST,
            payload=IntrospectionRequest(token=token).encode(),
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )
        message.opt.uri_path = tuple(s for s in self.config.introspect_path.split("/") if s)
        response = await session.request(message)
        if response.code != Code.CONTENT:
            raise AsUnreachable(f"introspection answered {response.code}")
        try:
            result = IntrospectionResponse.decode(bytes(response.payload))
        except (TokenError, cbor2.CBORDecodeError):
            raise AsUnreachable("introspection response unusable") from None
        self.state.introspections += 1
        result_active = result.active and th not in self.revoked  # the TRL may have said so
        if len(self._introspected) >= MAX_INTROSPECTED:
            self._introspected.clear()
        self._introspected[th] = (result_active, exp)
        return result_active

    def introspection_failed(self, why: str) -> None:
        """An introspection failed: none for ``INTROSPECT_BACKOFF`` seconds."""
        self.state.introspection_failures += 1
        self.state.last_error = f"introspection: {why}"
        self._introspect_after = self._clock() + INTROSPECT_BACKOFF


def decode_public_key_set(data: bytes) -> KeySet:
    """A fetched COSE_KeySet (RFC 9052 §7): its public keys; symmetric keys
    (never published) and private parts are ignored. Raises AsUnreachable."""
    out = KeySet()
    try:
        items = cbor.as_list(cbor.decode(data, what="COSE_KeySet", limit=MAX_KEY_SET), "keys")
        for item in items[:64]:
            key = key_from_cose(cbor.as_map(item, "COSE_Key"))
            if not isinstance(key, SymmetricKey) and key.kid:
                out.add(key.public())
    except TokenError as exc:
        raise AsUnreachable(f"key set unusable: {exc.description}") from None
    if not len(out):
        raise AsUnreachable("key set holds no usable key")
    return out


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        data: bytes = response.read(MAX_KEY_SET + 1)
        return data


class FollowedIssuers:
    """Every followed issuer of one gateway worker, and the token hashes of
    the tokens it holds from them (RFC 9770 §11.1: a held token whose hash
    the TRL names is expunged; a token whose hash is on it is not accepted).

    ``drop(ctis, cause)`` is the gateway's: it removes held tokens by cti and
    closes their sessions, like a local revocation does."""

    def __init__(
        self,
        configs: tuple[IssuerConfig, ...],
        *,
        drop: Callable[[list[bytes], str], int],
        on_keys: Callable[[str, KeySet], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._drop = drop
        self._clock = clock
        self.followers: dict[str, IssuerFollower] = {
            c.name: IssuerFollower(c, on_revoked=self._revoked, on_keys=on_keys, clock=clock)
            for c in configs
            if c.as_uri
        }
        #: token hash -> (issuer, cti, exp) of held tokens of followed issuers
        self._held: dict[bytes, tuple[str, bytes, float]] = {}
        #: ctis revoked through a TRL (refused at once, before housekeeping)
        self.revoked_ctis: set[bytes] = set()
        #: bumped at each change (the authorizer's cache key)
        self.version = 0
        self._stale_dropped: set[str] = set()
        #: introspections in flight by token hash (one per token, bounded)
        self._introspecting: dict[bytes, asyncio.Task[None]] = {}

    def __bool__(self) -> bool:
        return bool(self.followers)

    def start(self) -> None:
        for f in self.followers.values():
            f.start()

    async def stop(self) -> None:
        for task in list(self._introspecting.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for f in self.followers.values():
            await f.stop()

    def is_revoked(self, cti: bytes) -> bool:
        return cti in self.revoked_ctis

    def admit(
        self, issuer: str, token: bytes, cti: bytes, exp: float, *, introspect: bool = True
    ) -> str | None:
        """Check a verified token of ``issuer`` before it is stored; remember
        its hash. Returns a refusal reason: ``revoked`` (its hash is on the
        TRL, or introspection said inactive), ``issuer_stale`` (fail-closed,
        TRL stale, not introspected) or, with ``introspect``, ``introspect``
        (TRL not followed and no introspection result yet: RFC 9200 §5.9
        first, then admit again with ``introspect=False``)."""
        follower = self.followers.get(issuer)
        if follower is None:
            return None
        th = token_hash(token)
        now = self._clock()
        cached = follower.introspected(th, now)
        if th in follower.revoked or cached is False:
            return "revoked"
        if (
            introspect
            and cached is None
            and not follower.state.following
            and follower.may_introspect(now)
        ):
            return "introspect"
        if follower.stale(now) and follower.fail_closed and not cached:
            return "issuer_stale"
        if len(self._held) > 200_000:
            self._forget_expired(now)
        self._held[th] = (issuer, cti, exp)
        return None

    def needs_introspection(self, issuer: str, token: bytes) -> IssuerFollower | None:
        """The follower to introspect with, when the TRL is not followed."""
        follower = self.followers.get(issuer)
        if follower is None or follower.state.following:
            return None
        if follower.introspected(token_hash(token), self._clock()) is not None:
            return None
        return follower

    def introspect_later(self, need: IntrospectionNeeded) -> asyncio.Task[None] | None:
        """Start introspecting ``need.token`` at its AS in the background (one
        task per token hash, at most ``MAX_INTROSPECTING``); None when over
        the bound or nothing to do. Failures back off (see the module)."""
        follower = self.needs_introspection(need.issuer, need.token)
        if follower is None:
            return None
        th = token_hash(need.token)
        task = self._introspecting.get(th)
        if task is not None:
            return task
        if len(self._introspecting) >= MAX_INTROSPECTING:
            return None
        task = asyncio.create_task(
            self._introspect(follower, need.token, th, need.exp), name=f"introspect {follower.name}"
        )
        self._introspecting[th] = task
        task.add_done_callback(lambda _: self._introspecting.pop(th, None))
        return task

    async def introspect_now(
        self, need: IntrospectionNeeded, wait: float = INTROSPECT_WAIT
    ) -> None:
        """Introspect ``need.token`` and wait for the result, at most ``wait``
        seconds (the introspection goes on in the background after that)."""
        task = self.introspect_later(need)
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), wait)

    async def _introspect(
        self, follower: IssuerFollower, token: bytes, th: bytes, exp: float
    ) -> None:
        try:
            async with follower.introspecting:
                if not follower.may_introspect(self._clock()):
                    return
                active = await follower.introspect(token, th, exp)
        except asyncio.CancelledError:
            raise
        except (GatewayError, OSError) as exc:
            why = getattr(exc, "description", None) or str(exc)
            log.info("introspection at %s failed: %s", follower.name, why)
            follower.introspection_failed(why)
            return
        except Exception:
            log.exception("introspection at %s failed", follower.name)
            follower.introspection_failed("internal error")
            return
        log.debug("introspection at %s: %s", follower.name, "active" if active else "inactive")

    def _forget_expired(self, now: float) -> None:
        self._held = {h: v for h, v in self._held.items() if v[2] > now}

    def _revoked(self, issuer: str, hashes: frozenset[bytes]) -> None:
        ctis = [v[1] for h, v in self._held.items() if h in hashes and v[0] == issuer]
        for h in hashes:
            self._held.pop(h, None)
        if ctis:
            self.revoked_ctis.update(ctis)
            if len(self.revoked_ctis) > 100_000:
                self.revoked_ctis = set(ctis)
            self.version += 1
            self._drop(ctis, "revoked")

    def unknown_kid(self) -> None:
        for f in self.followers.values():
            f.unknown_kid()

    def housekeeping(self, now: float) -> None:
        """Fail-closed issuers stale past their bound: drop their held tokens
        (refused from then on, sessions closed)."""
        self._forget_expired(now)
        for name, f in self.followers.items():
            if f.stale(now) and f.fail_closed:
                if name not in self._stale_dropped:
                    self._stale_dropped.add(name)
                    ctis = [v[1] for v in self._held.values() if v[0] == name]
                    self._held = {h: v for h, v in self._held.items() if v[0] != name}
                    self.version += 1
                    if ctis:
                        self._drop(ctis, "issuer_stale")
            else:
                self._stale_dropped.discard(name)

    def readiness(self, now: float) -> tuple[bool, dict[str, Any]]:
        """(ready, detail): not ready while a fail-closed issuer is stale."""
        detail = {name: f.readiness(now) for name, f in self.followers.items()}
        ready = not any(f.stale(now) and f.fail_closed for f in self.followers.values())
        return ready, detail

    def families(self, const: dict[str, str]) -> list[Any]:
        from gateway.operations import metrics as m

        now = self._clock()
        fs = list(self.followers.items())

        def each(value: Callable[[IssuerFollower], float]) -> list[tuple[dict[str, str], float]]:
            return [({**const, "issuer": n}, float(value(f))) for n, f in fs]

        return [
            m.family(
                "acegw_issuer_trl_following",
                "gauge",
                "1 while the external AS's revocation list is observed (RFC 9770).",
                each(lambda f: f.state.following),
            ),
            m.family(
                "acegw_issuer_trl_stale",
                "gauge",
                "1 when the revocation list went unfollowed longer than max_staleness.",
                each(lambda f: f.stale(now)),
            ),
            m.family(
                "acegw_issuer_trl_sync_age_seconds",
                "gauge",
                "Seconds since the revocation list was last known complete (-1: never).",
                each(lambda f: -1 if f.state.synced_at is None else now - f.state.synced_at),
            ),
            m.family(
                "acegw_issuer_trl_entries",
                "gauge",
                "Token hashes on the external AS's revocation list for this gateway.",
                each(lambda f: f.state.trl_size),
            ),
            m.family(
                "acegw_issuer_trl_notifications_total",
                "counter",
                "Revocation list notifications received.",
                each(lambda f: f.state.notifications),
            ),
            m.family(
                "acegw_issuer_trl_bad_responses_total",
                "counter",
                "Revocation list responses refused (malformed, wrong types, too large).",
                each(lambda f: f.state.bad_responses),
            ),
            m.family(
                "acegw_issuer_key_fetches_total",
                "counter",
                "Key set fetches from the external AS that succeeded.",
                each(lambda f: f.state.key_fetches),
            ),
            m.family(
                "acegw_issuer_key_fetch_failures_total",
                "counter",
                "Key set fetches from the external AS that failed.",
                each(lambda f: f.state.key_fetch_failures),
            ),
            m.family(
                "acegw_issuer_introspections_total",
                "counter",
                "Tokens introspected at the external AS (TRL not followed).",
                each(lambda f: f.state.introspections),
            ),
            m.family(
                "acegw_issuer_introspection_failures_total",
                "counter",
                "Introspections at the external AS that failed (unreachable, error answer).",
                each(lambda f: f.state.introspection_failures),
            ),
            m.family(
                "acegw_issuer_trl_polls_total",
                "counter",
                "Full TRL queries polled (the AS answered without Observe).",
                each(lambda f: f.state.polls),
            ),
        ]


__all__ = [
    "FollowedIssuers",
    "FollowerState",
    "IntrospectionNeeded",
    "IssuerFollower",
    "IssuerStale",
    "TrlRefused",
    "read_psk",
]
