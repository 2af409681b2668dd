"""Lockout after repeated failures, built so that nobody can turn it against
a device by naming it. Sans-I/O: every call takes ``now``.

The PSK identity travels in clear in the ClientKeyExchange (RFC 4279 §2), so
anyone who saw one handshake can name a device; the cookie exchange
(RFC 6347 §4.2.1) only proves the source *address*. Failures therefore count
against what they prove:

* **the pair (identity, address)**: ``max_failures`` failed handshakes or
  proofs naming one identity from one address within ``window`` seconds ban
  that pair for ``ban_seconds``. The identity keeps working from every other
  address; a device is never banned as a whole, so failures from addresses it
  has not authenticated from cannot lock it out.
* **the address** (credential stuffing): failures naming ``max_identities``
  different identities from one address within ``window`` ban the address
  for ``ban_seconds``. The ban refuses identities that have not completed a
  handshake from that address within ``trust_seconds``; devices behind the
  same NAT that did keep getting in. Failures of such a trusted pair (a
  device with a stale key) do not count towards the address. Trusted pairs
  are kept across a restart (:meth:`Lockout.trusted_pairs`,
  :meth:`Lockout.restore_trust`), so that a few stale devices behind a NAT
  failing right after it cannot lock out the neighbours that had been
  getting in.

Refusals caused by a ban are not failures: they neither extend a ban nor
start one. Bans lift by themselves, or by :meth:`Lockout.lift` (the operator,
``acegw bans lift``).

Memory is bounded by ``max_keys`` per table (failure counts, identities per
address, trusted pairs, bans); the oldest entry goes first.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from enum import StrEnum

from gateway.errors import GatewayError
from tokens.params import CoapCode


class LockedOut(GatewayError):
    """The identity is banned from this address, or the address for
    identities it has not authenticated (4.01)."""

    coap_code = CoapCode.UNAUTHORIZED
    reason = "locked_out"


class BanScope(StrEnum):
    """What a ban refuses (metrics label, audit field)."""

    #: One identity from one address.
    PAIR = "pair"
    #: One address, for identities not trusted there.
    ADDRESS = "address"


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban in force. ``identity`` is None for an address ban."""

    scope: BanScope
    address: str
    identity: bytes | None
    since: float
    until: float


#: A pair key: (identity, address).
_Pair = tuple[bytes, str]


class Lockout:
    """Failure counts and bans by (identity, address) and by address."""

    __slots__ = (
        "_bans",
        "_failures",
        "_spread",
        "_trusted",
        "ban_end",
        "ban_seconds",
        "bans_total",
        "max_failures",
        "max_identities",
        "max_keys",
        "trust_seconds",
        "window",
    )

    def __init__(
        self,
        *,
        max_failures: int = 10,
        max_identities: int = 5,
        window: float = 60.0,
        ban_seconds: float = 300.0,
        trust_seconds: float = 86400.0,
        max_keys: int = 100_000,
    ) -> None:
        if min(max_failures, max_identities, max_keys) < 1 or window <= 0 or ban_seconds <= 0:
            raise ValueError("lockout thresholds must be positive")
        self.max_failures = max_failures
        self.max_identities = max_identities
        self.window = window
        self.ban_seconds = ban_seconds
        self.trust_seconds = trust_seconds
        self.max_keys = max_keys
        #: pair -> times of its recent failures (at most max_failures)
        self._failures: OrderedDict[_Pair, deque[float]] = OrderedDict()
        #: address -> identity -> time of its last failure there
        self._spread: OrderedDict[str, dict[bytes, float]] = OrderedDict()
        #: pair -> time of its last completed handshake
        self._trusted: OrderedDict[_Pair, float] = OrderedDict()
        #: pair or address -> its ban (some may have lifted by time)
        self._bans: dict[_Pair | str, Ban] = {}
        #: the end of the last ban to lift: from then on nothing is banned and
        #: no lookup is needed (one comparison on every request's path)
        self.ban_end = float("-inf")
        self.bans_total: dict[BanScope, int] = {BanScope.PAIR: 0, BanScope.ADDRESS: 0}

    # --- questions ------------------------------------------------------------------

    def refuses(self, identity: bytes, address: str, now: float) -> Ban | None:
        """The ban that refuses a handshake naming ``identity`` from
        ``address``, or None: the pair's ban, or the address's unless the
        pair is trusted."""
        if now >= self.ban_end:
            return None
        ban = self._active((identity, address), now)
        if ban is not None:
            return ban
        ban = self._active(address, now)
        if ban is not None and not self.trusted(identity, address, now):
            return ban
        return None

    def banned(self, identity: bytes, address: str | None, now: float) -> bool:
        """Whether a request inside a session of ``identity`` from
        ``address`` is refused: its pair is banned (the session proves the
        pair authenticated: an address ban does not apply)."""
        return address is not None and self._active((identity, address), now) is not None

    def check(self, identity: bytes, address: str | None, now: float) -> None:
        """Raise :class:`LockedOut` when :meth:`banned` says so."""
        if self.banned(identity, address, now):
            raise LockedOut("temporarily locked out after repeated failures")

    def trusted(self, identity: bytes, address: str, now: float) -> bool:
        """Whether ``identity`` completed a handshake from ``address`` within
        ``trust_seconds``."""
        at = self._trusted.get((identity, address))
        return at is not None and now - at < self.trust_seconds

    def bans(self, now: float) -> list[Ban]:
        """Bans in force, soonest to lift first."""
        self._purge(now)
        return sorted(self._bans.values(), key=lambda b: (b.until, b.address))

    def active_bans(self, now: float) -> dict[BanScope, int]:
        """Bans in force by scope."""
        counts = {BanScope.PAIR: 0, BanScope.ADDRESS: 0}
        for ban in self.bans(now):
            counts[ban.scope] += 1
        return counts

    def trusted_pairs(self, now: float) -> list[tuple[bytes, str, float]]:
        """The trusted pairs still within ``trust_seconds``, as
        ``(identity, address, time)``, oldest first (kept across a restart,
        :mod:`gateway.resource_server.trust_file`)."""
        return [
            (identity, address, at)
            for (identity, address), at in self._trusted.items()
            if now - at < self.trust_seconds
        ]

    def restore_trust(self, pairs: list[tuple[bytes, str, float]], now: float) -> int:
        """Trust pairs kept from before a restart (the later time wins);
        those older than ``trust_seconds`` or in the future are left out.
        How many were taken."""
        taken = 0
        for identity, address, at in sorted(pairs, key=lambda p: p[2]):
            if not 0 <= now - at < self.trust_seconds:
                continue
            pair = (identity, address)
            if self._trusted.get(pair, float("-inf")) < at:
                self._trusted[pair] = at
                self._trusted.move_to_end(pair)
                taken += 1
        while len(self._trusted) > self.max_keys:
            self._trusted.popitem(last=False)
        return taken

    # --- events ---------------------------------------------------------------------

    def success(self, identity: bytes, address: str, now: float) -> None:
        """``identity`` completed a handshake from ``address``: the pair is
        trusted there and its failure count starts again."""
        pair = (identity, address)
        self._trusted[pair] = now
        self._trusted.move_to_end(pair)
        while len(self._trusted) > self.max_keys:
            self._trusted.popitem(last=False)
        self._failures.pop(pair, None)

    def failure(self, identity: bytes, address: str, now: float) -> list[Ban]:
        """A failed handshake or proof naming ``identity`` from ``address``;
        returns the bans it started (none, the pair's, the address's, or
        both)."""
        started: list[Ban] = []
        pair = (identity, address)
        times = self._failures.get(pair)
        if times is None:
            times = self._failures[pair] = deque(maxlen=self.max_failures)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(pair)
        times.append(now)
        if len(times) >= self.max_failures and times[0] > now - self.window:
            times.clear()
            ban = self._ban(BanScope.PAIR, pair, address, identity, now)
            if ban is not None:
                started.append(ban)
        if not self.trusted(identity, address, now):
            spread = self._spread.get(address)
            if spread is None:
                spread = self._spread[address] = {}
                while len(self._spread) > self.max_keys:
                    self._spread.popitem(last=False)
            else:
                self._spread.move_to_end(address)
            spread[identity] = now
            if len(spread) >= self.max_identities:
                horizon = now - self.window
                for name in [n for n, at in spread.items() if at <= horizon]:
                    del spread[name]
            if len(spread) >= self.max_identities:
                del self._spread[address]
                ban = self._ban(BanScope.ADDRESS, address, address, None, now)
                if ban is not None:
                    started.append(ban)
        return started

    def lift(
        self, now: float, *, address: str | None = None, identity: bytes | None = None
    ) -> list[Ban]:
        """Lift the bans matching ``address`` and/or ``identity`` (both None:
        every ban) and forget their failures; returns the bans lifted. An
        address alone lifts its address ban and every pair ban there; an
        identity alone, its pair bans at every address."""
        self._purge(now)
        lifted = [
            ban
            for ban in self._bans.values()
            if (address is None or ban.address == address)
            and (identity is None or ban.identity == identity)
        ]
        for ban in lifted:
            key: _Pair | str = ban.address if ban.identity is None else (ban.identity, ban.address)
            del self._bans[key]
            if ban.identity is None:
                self._spread.pop(ban.address, None)
            else:
                self._failures.pop((ban.identity, ban.address), None)
        self.ban_end = max((b.until for b in self._bans.values()), default=float("-inf"))
        return lifted

    # --- internals ------------------------------------------------------------------

    def _active(self, key: _Pair | str, now: float) -> Ban | None:
        ban = self._bans.get(key)
        if ban is None:
            return None
        if ban.until <= now:
            del self._bans[key]
            return None
        return ban

    def _ban(
        self,
        scope: BanScope,
        key: _Pair | str,
        address: str,
        identity: bytes | None,
        now: float,
    ) -> Ban | None:
        if self._active(key, now) is not None:
            return None
        if len(self._bans) >= self.max_keys:
            self._purge(now)
            if len(self._bans) >= self.max_keys:
                return None  # the table is full of bans in force: keep those
        ban = self._bans[key] = Ban(scope, address, identity, now, now + self.ban_seconds)
        self.ban_end = max(self.ban_end, ban.until)
        self.bans_total[scope] += 1
        return ban

    def _purge(self, now: float) -> None:
        for key in [k for k, ban in self._bans.items() if ban.until <= now]:
            del self._bans[key]


__all__ = ["Ban", "BanScope", "LockedOut", "Lockout"]
