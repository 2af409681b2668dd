"""The audit trail: one JSON record per authentication and authorization
decision (time, peer, client_id, kid, cti, resource, method, decision,
reason). Records never hold a secret or a whole token: callers pass key ids
and token ids (cti) in hex, and :class:`AuditLog` refuses byte values.
"""

from __future__ import annotations

import json
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

#: Decisions that count as success for sampling purposes.
SUCCESS = frozenset({"issue", "accept", "allow", "active", "established"})


class AuditLog:
    """Writes audit records as JSON lines to a stream or a file.

    ``sample_success`` (0..1) thins out successful decisions under load;
    failures are always written.
    """

    def __init__(
        self,
        sink: str = "stdout",
        *,
        sample_success: float = 1.0,
        clock: Callable[[], float],
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self.sample_success = sample_success
        self._lock = threading.Lock()
        self._own: TextIO | None = None
        self._stream: TextIO | None
        if sink == "off":
            self._stream = None
        elif sink == "stdout":
            self._stream = sys.stdout
        elif sink == "stderr":
            self._stream = sys.stderr
        else:
            path = Path(sink)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._own = path.open("a", encoding="utf-8", buffering=1)
            self._stream = self._own
        self.records = 0

    @property
    def enabled(self) -> bool:
        """False when records go nowhere: callers on hot paths skip building them."""
        return self._stream is not None

    def __call__(self, **fields: Any) -> None:
        if self._stream is None:
            return
        sampled_out = self.sample_success < 1.0 and self._rng() >= self.sample_success
        if sampled_out and fields.get("decision") in SUCCESS:
            return
        record: dict[str, Any] = {"ts": round(self._clock(), 3)}
        for key, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bytes | bytearray):
                raise TypeError(f"audit field {key!r}: pass hex ids, never bytes")
            record[key] = value
        line = json.dumps(record, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self.records += 1

    def close(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None
            self._stream = None
