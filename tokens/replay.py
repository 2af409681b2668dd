"""Replay protection for the Proof option: per-PoP-key sliding windows over the
device's sequence numbers (like OSCORE's, RFC 8613 §7.4) and the Echo-based
start of a window (RFC 9175 §2.4 item 3; RFC 8613 Appendix B.1.2).

The gateway's flow, after the proof's MAC/signature verified
(docs/design.md "Wire formats"; order of checks in docs/authorization.md)::

    guard.check(kid, piv, echo, now)    # EchoRequired / ReplayError, 4.01
    ... token exp / revocation, scope ...
    guard.commit(kid, piv, echo, now)   # marks piv; re-checks, so an await
                                         # between check and commit is safe

``echo`` is the Echo option value as received, ``None`` if the request had
none; it is inside the verified proof, so it cannot have been added or changed
by anyone but the key holder.

* A window exists for ``kid``: only the window rule applies (the Echo, if any,
  is ignored). A piv seen before or below the window -> :class:`ReplayError`.
* No window (new token, eviction, gateway restart): the request must carry an
  Echo value that this process issued for this kid within the freshness
  period; otherwise :class:`EchoRequired` carrying a new Echo value. With a
  valid Echo, ``commit`` opens the window at this piv, which counts as seen
  together with every lower piv.

Why this refuses a proof replayed after a restart without persisting any
counter: the Echo secret is new per process, so a captured proof either has
no Echo or one from the old process, and is answered with EchoRequired. The
honest device repeats with the new Echo and its next piv, which opens the
window above every piv it used before; the captured proof is then below the
window or marked seen.

Bounded memory: at most ``max_windows`` windows; when one more is opened,
the oldest window not used since it was last passed over goes (a second
chance, "CLOCK": a window used since is kept and becomes the newest), which
is least-recently-used eviction without reordering anything per request.

Evicting (or :meth:`FreshnessGuard.forget`-ing) a window that was opened
with a still-fresh Echo would let that opening request be replayed to open a
new window; so each eviction raises an "echo floor" for the kid's bucket
(one of 64, by a per-process hash): Echo values issued at or before the
evicted window's opening Echo are refused from then on. An honest device hit
by this only sees one more EchoRequired.

The gateway commits a piv on every request: when ``pip install`` built
``tokens._window`` (:data:`ACCELERATED`), the windows and the guard's base
are its ``Window`` and ``Windows``, C twins of :class:`ReplayWindow` and
:class:`Windows` that the tests hold to the same answers.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from .echo import EchoIssuer
from .errors import EchoRequired, InvalidEcho, ReplayError

__all__ = [
    "ACCELERATED",
    "DEFAULT_MAX_WINDOWS",
    "WINDOW_SIZE",
    "FreshnessGuard",
    "ReplayWindow",
    "Windows",
]

#: Sequence numbers a window remembers (RFC 8613 §7.4 asks for at least 32).
WINDOW_SIZE = 64
_FULL = (1 << WINDOW_SIZE) - 1
#: Default upper bound on windows (one per PoP key) a guard keeps.
DEFAULT_MAX_WINDOWS = 100_000
_FLOOR_BUCKETS = 64


class ReplayWindow:
    """Sliding window over one PoP key's sequence numbers (RFC 8613 §7.4).

    ``top`` is the highest piv committed; bit ``d`` of the bitmask is set when
    ``top - d`` was seen. A window starts at a piv that was just proven fresh
    (by an Echo): that piv and all lower ones count as seen (like aiocoap's
    ``initialize_from_freshlyseen``).
    """

    __slots__ = ("_seen", "_top", "opened_at", "used")

    def __init__(self, initial_piv: int, opened_at: float = 0.0) -> None:
        if initial_piv < 0:
            raise ValueError("piv must not be negative")
        self._top = initial_piv
        self._seen = _FULL
        #: When the Echo that opened this window was issued.
        self.opened_at = opened_at
        #: a piv was committed since the guard last passed over this window
        self.used = False

    def __repr__(self) -> str:
        return f"<ReplayWindow top={self._top}>"

    @property
    def top(self) -> int:
        """Highest sequence number committed so far."""
        return self._top

    def check(self, piv: int) -> None:
        """Raise :class:`ReplayError` (4.01) if ``piv`` was seen or is below the
        window (RFC 8613 §7.4); do not mark it."""
        top = self._top
        if piv > top:
            return
        distance = top - piv
        if distance >= WINDOW_SIZE:
            raise ReplayError("sequence number below the replay window")
        if (self._seen >> distance) & 1:
            raise ReplayError("sequence number already seen")

    def commit(self, piv: int) -> None:
        """Mark ``piv`` as seen, sliding the window forward if it is the new
        highest. Call only after the proof verified. Re-checks first, so the
        same piv is never committed twice."""
        if not self.accept(piv):
            self.check(piv)  # raises the ReplayError that says why
            raise AssertionError("unreachable: the window refused a fresh piv")

    def accept(self, piv: int) -> bool:
        """:meth:`commit` without the exception: False (and nothing marked)
        when ``piv`` was seen or is below the window."""
        top = self._top
        if piv > top:
            shift = piv - top
            self._seen = ((self._seen << shift) | 1) & _FULL if shift < WINDOW_SIZE else 1
            self._top = piv
            self.used = True
            return True
        distance = top - piv
        if distance >= WINDOW_SIZE or (self._seen >> distance) & 1:
            return False
        self._seen |= 1 << distance
        self.used = True
        return True


class Windows:
    """Replay windows by kid, oldest first, and the commit a
    request on an open window needs (:meth:`accept`): the base of
    :class:`FreshnessGuard`. ``tokens._window.Windows`` is its C twin."""

    __slots__ = ("_windows",)

    def __init__(self) -> None:
        self._windows: OrderedDict[bytes, ReplayWindow] = OrderedDict()

    def accept(self, kid: bytes, piv: int) -> bool:
        """Commit a verified proof's ``piv`` to the open window of ``kid``;
        False, with nothing changed, when there is no window or the window
        refuses it (then :meth:`FreshnessGuard.commit` raises the error that
        says why)."""
        window = self._windows.get(kid)
        return window is not None and window.accept(piv)


if TYPE_CHECKING:
    _Window = ReplayWindow
    _Windows = Windows
else:
    try:
        from ._window import Window as _Window
        from ._window import Windows as _Windows
    except ImportError:  # built by `pip install` (setup.py); Python stands in
        _Window, _Windows = ReplayWindow, Windows

#: Whether :class:`FreshnessGuard` keeps its windows in C (``tokens._window``,
#: the twin of :class:`ReplayWindow` and :class:`Windows`, which the tests
#: hold it to).
ACCELERATED = _Window is not ReplayWindow


class FreshnessGuard(_Windows):
    """Replay windows by kid, started by Echo (see the module docstring for the
    flow). Sans-I/O: ``now`` is passed in, on the same clock as the
    :class:`EchoIssuer`'s."""

    __slots__ = ("_echo", "_floors", "_max_windows")

    def __init__(self, echo: EchoIssuer, *, max_windows: int = DEFAULT_MAX_WINDOWS) -> None:
        if max_windows < 1:
            raise ValueError("max_windows must be at least 1")
        super().__init__()
        self._echo = echo
        self._max_windows = max_windows
        self._floors = [float("-inf")] * _FLOOR_BUCKETS

    def __repr__(self) -> str:
        return f"<FreshnessGuard windows={len(self._windows)}/{self._max_windows}>"

    def __len__(self) -> int:
        return len(self._windows)

    def __contains__(self, kid: object) -> bool:
        return kid in self._windows

    def check(self, kid: bytes, piv: int, echo: bytes | None, now: float) -> None:
        """Would this verified proof be accepted? Raises :class:`ReplayError`
        or :class:`EchoRequired` (both 4.01); changes nothing."""
        window = self._windows.get(kid)
        if window is not None:
            window.check(piv)
        else:
            self._fresh_echo(kid, echo, now)

    def commit(self, kid: bytes, piv: int, echo: bytes | None, now: float) -> None:
        """Accept this verified proof: mark ``piv`` in the kid's window, or open
        the window at ``piv`` when the Echo is valid. Applies the same checks
        as :meth:`check` again and raises the same errors."""
        windows = self._windows
        window = windows.get(kid)
        if window is not None:
            window.commit(piv)
            return
        issued = self._fresh_echo(kid, echo, now)
        while len(windows) >= self._max_windows:
            old_kid, old = windows.popitem(last=False)
            if old.used:  # used since last passed over: a second chance
                old.used = False
                windows[old_kid] = old
            else:
                self._retire(old_kid, old, now)
        windows[kid] = _Window(piv, issued)

    def forget(self, kid: bytes, now: float) -> None:
        """Drop the window of ``kid`` (e.g. its token was superseded or
        revoked); the next request of that key needs a new Echo."""
        window = self._windows.pop(kid, None)
        if window is not None:
            self._retire(kid, window, now)

    def _retire(self, kid: bytes, window: ReplayWindow, now: float) -> None:
        # The Echo that opened the window may still be fresh: refuse it (and
        # older ones) for this bucket from now on, so the opening request
        # cannot open a new window.
        if now - window.opened_at <= self._echo.freshness:
            bucket = hash(kid) % _FLOOR_BUCKETS
            if window.opened_at > self._floors[bucket]:
                self._floors[bucket] = window.opened_at

    def _fresh_echo(self, kid: bytes, echo: bytes | None, now: float) -> float:
        """Issue time of a valid Echo for ``kid``; else :class:`EchoRequired`
        with a new value (RFC 9175 §2.4 item 3)."""
        if echo is None:
            raise EchoRequired(self._echo.issue(kid, now), "no replay window: repeat with Echo")
        try:
            issued = self._echo.verify(echo, kid, now)
        except InvalidEcho as exc:
            raise EchoRequired(self._echo.issue(kid, now), exc.description) from exc
        if issued <= self._floors[hash(kid) % _FLOOR_BUCKETS]:
            raise EchoRequired(self._echo.issue(kid, now), "echo: superseded")
        return issued
