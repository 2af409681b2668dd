"""Bounded reassembly of handshake messages (RFC 6347 §4.2.3).

Messages are accepted for a small window of message_seq values starting at the
next expected one; a fragment outside it, one that would push the peer's
buffered bytes over the budget, or one past the per-message fragment count is
dropped (the peer retransmits). Whole messages with the expected message_seq
take the fast path without a copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import AlertDescription, AlertError
from .wire import HandshakeFragment

#: Fragments one message may arrive in before further ones are dropped.
MAX_FRAGMENTS = 32


@dataclass(slots=True)
class _Partial:
    msg_type: int
    length: int
    buffer: bytearray
    # Sorted, disjoint, non-adjacent [start, end) ranges received so far.
    ranges: list[list[int]] = field(default_factory=list)
    fragments: int = 0

    def add(self, offset: int, body: bytes) -> None:
        end = offset + len(body)
        self.buffer[offset:end] = body
        self.fragments += 1
        merged: list[list[int]] = []
        placed = False
        for start, stop in self.ranges:
            if stop < offset:
                merged.append([start, stop])
            elif end < start:
                if not placed:
                    merged.append([offset, end])
                    placed = True
                merged.append([start, stop])
            else:
                offset, end = min(offset, start), max(end, stop)
        if not placed:
            merged.append([offset, end])
            merged.sort()
        self.ranges = merged

    @property
    def complete(self) -> bool:
        return self.ranges == [[0, self.length]]


class Reassembler:
    """Handshake messages of one peer, delivered whole and in order."""

    __slots__ = (
        "_buffered",
        "_dropped",
        "_max_bytes",
        "_max_message",
        "_partials",
        "_window",
        "next_seq",
    )

    def __init__(
        self,
        next_seq: int,
        *,
        max_bytes: int,
        max_message: int,
        window: int,
        dropped: Callable[[str], None] | None = None,
    ) -> None:
        """``dropped(reason)`` is told of every fragment refused:
        ``handshake_window`` (message_seq beyond the window) or
        ``handshake_bytes`` (over the byte budget, an over-long message, too
        many fragments, or fragments that disagree)."""
        #: message_seq of the next message to deliver.
        self.next_seq = next_seq
        self._dropped = dropped
        self._max_bytes = max_bytes
        self._max_message = max_message
        self._window = window
        self._partials: dict[int, _Partial] = {}
        self._buffered = 0

    @property
    def buffered_bytes(self) -> int:
        return self._buffered

    def add(self, fragment: HandshakeFragment) -> list[tuple[int, int, bytes]]:
        """Take one fragment; return the ``(msg_type, message_seq, body)``
        messages now deliverable in order (possibly none). A message longer
        than any a PSK handshake needs raises AlertError when it is the next
        expected one; ahead of it, it is dropped like one over the budget
        (RFC 6347 §4.1.2.7: invalid records are discarded), so future
        messages never cost more than the budget."""
        seq = fragment.message_seq
        if seq < self.next_seq:
            return []
        if seq >= self.next_seq + self._window:
            return self._drop("handshake_window")
        if fragment.length > self._max_message:
            if seq == self.next_seq:
                raise AlertError(AlertDescription.HANDSHAKE_FAILURE, "handshake message too long")
            return self._drop("handshake_bytes")
        ready: list[tuple[int, int, bytes]] = []
        if seq == self.next_seq and fragment.is_whole:
            stale = self._partials.pop(seq, None)
            if stale is not None:
                self._buffered -= stale.length
            ready.append((fragment.msg_type, seq, fragment.body))
            self.next_seq += 1
            if not self._partials:
                return ready
        elif fragment.body or not fragment.length:
            partial = self._partials.get(seq)
            if partial is None:
                if self._buffered + fragment.length > self._max_bytes:
                    return self._drop("handshake_bytes")
                partial = _Partial(fragment.msg_type, fragment.length, bytearray(fragment.length))
                self._partials[seq] = partial
                self._buffered += fragment.length
            elif partial.msg_type != fragment.msg_type or partial.length != fragment.length:
                return self._drop("handshake_bytes")
            if partial.fragments >= MAX_FRAGMENTS:
                return self._drop("handshake_bytes")
            partial.add(fragment.fragment_offset, fragment.body)
        while True:
            head = self._partials.get(self.next_seq)
            if head is None or not head.complete:
                break
            del self._partials[self.next_seq]
            self._buffered -= head.length
            ready.append((head.msg_type, self.next_seq, bytes(head.buffer)))
            self.next_seq += 1
        return ready

    def _drop(self, reason: str) -> list[tuple[int, int, bytes]]:
        if self._dropped is not None:
            self._dropped(reason)
        return []
