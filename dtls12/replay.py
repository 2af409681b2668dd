"""Anti-replay window of one epoch (RFC 6347 §4.1.2.6, RFC 4303 §3.4.3).

A 64-record sliding bitmap: checked before a record is decrypted, committed
only after it authenticated. The shift for a newer record is capped at the
window width, so any sequence gap (up to 2^48) costs the same constant time
and never allocates a larger integer.
"""

from __future__ import annotations

#: Records tracked behind the newest one.
WINDOW_WIDTH = 64
_MASK = (1 << WINDOW_WIDTH) - 1


class ReplayWindow:
    """Which sequence numbers of one epoch were already received."""

    __slots__ = ("_bits", "newest")

    def __init__(self) -> None:
        #: Highest authenticated sequence number (-1: none yet).
        self.newest = -1
        # Bit i set: sequence number newest - i was received.
        self._bits = 0

    def is_fresh(self, sequence: int) -> bool:
        """False for a duplicate or a record older than the window."""
        if sequence > self.newest:
            return True
        behind = self.newest - sequence
        return behind < WINDOW_WIDTH and not (self._bits >> behind) & 1

    def commit(self, sequence: int) -> bool:
        """Mark ``sequence`` received (after it authenticated). Returns True
        if it is newer than every record seen so far (RFC 9146 §6: only such
        a record may move a session to a new address)."""
        if sequence > self.newest:
            shift = sequence - self.newest
            self._bits = 1 if shift >= WINDOW_WIDTH else ((self._bits << shift) | 1) & _MASK
            self.newest = sequence
            return True
        self._bits |= 1 << (self.newest - sequence)
        return False
