"""Operational events: what an operator needs to know happened, as log lines
with a stable ``event`` name (docs/operations.md "Events" lists them all).

An event is a ``logging`` record on the ``gateway.events`` logger carrying
``event`` and its fields; :class:`gateway.operations.logs.JsonFormatter`
writes them as top-level JSON keys next to ``msg``. Fields are ids, counts,
addresses and reasons: never a PSK, a key, a PoP key or a whole token (an
identity that is not a client id appears as its kid or its length).

:class:`FloodSummary` turns a stream of per-packet refusals into a few lines
(sans-I/O, the caller passes ``now``): one when a source crosses the
threshold within a window, then at most one per window while it goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Every event name, its level, and what it means (the docs table is checked
#: against this).
EVENTS: dict[str, tuple[int, str]] = {
    "gateway_started": (logging.INFO, "serving: the CoAP/DTLS and admin HTTP addresses"),
    "gateway_stopping": (logging.INFO, "SIGTERM/SIGINT: draining for up to drain_timeout"),
    "gateway_stopped": (logging.INFO, "stopped: sessions closed, requests left in flight"),
    "config_reloaded": (logging.INFO, "SIGHUP applied: what changed, what needs a restart"),
    "config_reload_refused": (logging.ERROR, "SIGHUP refused: the file does not load"),
    "worker_started": (logging.INFO, "supervisor: a worker process started (or restarted)"),
    "worker_exited": (logging.ERROR, "supervisor: a worker exited; when it restarts"),
    "dtls_cap_reached": (logging.WARNING, "ClientHellos dropped at a DTLS table cap"),
    "handshake_flood": (logging.WARNING, "failed handshakes from one address, summarised"),
    "request_flood": (logging.WARNING, "requests refused 4.29 or locked out, per address"),
    "lockout_ban": (logging.WARNING, "an (identity, address) pair or an address banned"),
    "lockout_lift": (logging.INFO, "bans lifted by an operator"),
    "client_disabled": (logging.INFO, "a disable applied: sessions closed, tokens dropped"),
    "client_enabled": (logging.INFO, "an enable applied"),
    "client_deleted": (logging.INFO, "a delete applied: sessions closed, tokens dropped"),
    "client_rekeyed": (logging.INFO, "a PSK rotation applied: sessions closed"),
    "client_updated": (logging.INFO, "a scope/audience/key change applied: sessions closed"),
    "token_revoked": (logging.INFO, "revocations applied: held tokens dropped"),
    "keys_changed": (logging.INFO, "AS key rotation or retirement applied: tokens dropped"),
    "upstream_breaker": (logging.WARNING, "a route's circuit breaker opened, half-opened, closed"),
}

#: The logger events go to.
LOGGER = "gateway.events"


class EventLog:
    """Emits events as log records (see the module docstring)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER)

    def __call__(
        self, event: str, message: str, *, level: int | None = None, **fields: Any
    ) -> None:
        """Log ``event`` with ``message`` (the ``msg``) and ``fields``. Bytes
        are refused: ids go in hex, secrets never."""
        default, _ = EVENTS[event]
        for key, value in fields.items():
            if isinstance(value, bytes | bytearray):
                raise TypeError(f"event field {key!r}: pass hex ids, never bytes")
        self.logger.log(
            default if level is None else level,
            "%s",
            message,
            extra={"event": event, "fields": {k: v for k, v in fields.items() if v is not None}},
        )


@dataclass
class _Source:
    """One source's count in its current window."""

    window_start: float
    count: int = 0
    total: int = 0
    flooding: bool = False
    since: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    #: How lines name it ("from ADDRESS") and its fields (default: key_field).
    label: str = ""
    fields: dict[str, str] | None = None


class FloodSummary:
    """Rate-limited summaries of refusals per source (an address, a cap).

    A source is *flooding* once ``threshold`` refusals fall in one window of
    ``window`` seconds; that emits one line at once (``phase: started``).
    While it floods, :meth:`tick` emits at most one line per window with the
    window's count and the total so far (``phase: ongoing``); a window
    without refusals ends it silently. Refusals below the threshold emit
    nothing: a burst of 1,000 within one window gives two lines. At most
    ``max_sources`` sources are tracked and named; the rest are counted
    under ``other``. Sans-I/O: ``now`` is
    passed in; :meth:`tick` is called periodically (housekeeping)."""

    def __init__(
        self,
        emit: Callable[..., None],
        *,
        event: str,
        what: str,
        key_field: str = "address",
        threshold: int = 20,
        window: float = 10.0,
        max_sources: int = 64,
    ) -> None:
        self._emit = emit
        self.event = event
        self.what = what
        self.key_field = key_field
        self.threshold = threshold
        self.window = window
        self.max_sources = max_sources
        self._sources: dict[str, _Source] = {}

    def __len__(self) -> int:
        return len(self._sources)

    def count(
        self,
        key: str,
        now: float,
        reason: str | None = None,
        n: int = 1,
        *,
        label: str | None = None,
        fields: dict[str, str] | None = None,
    ) -> None:
        """``n`` refusals from ``key`` at ``now``; ``label`` and ``fields``
        name the source in its lines (default ``from KEY`` and
        ``{key_field: KEY}``)."""
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= self.max_sources and key != "other":
                self.count("other", now, reason, n)
                return
            source = self._sources[key] = _Source(
                window_start=now, since=now, label=label or f"from {key}", fields=fields
            )
        source.count += n
        source.total += n
        if reason is not None:
            source.reasons[reason] = source.reasons.get(reason, 0) + n
        if not source.flooding and source.count >= self.threshold:
            source.flooding = True
            source.since = source.window_start
            elapsed = max(now - source.window_start, 0.0)
            self._line(
                key,
                "started",
                f"{source.count} {self.what} {source.label} in {elapsed:.1f} s",
                source,
                count=source.count,
                seconds=round(elapsed, 1),
            )
            source.count = 0
            source.reasons = {}
            source.window_start = now

    def tick(self, now: float) -> None:
        """Close the windows that have run for ``window`` seconds."""
        for key in list(self._sources):
            source = self._sources[key]
            if now - source.window_start < self.window:
                continue
            if not source.flooding or source.count == 0:
                del self._sources[key]  # quiet for a window: over (or never a flood)
                continue
            self._line(
                key,
                "ongoing",
                f"{source.count} {self.what} {source.label} in the last {self.window:g} s",
                source,
                count=source.count,
                seconds=self.window,
                total=source.total,
            )
            source.count = 0
            source.reasons = {}
            source.window_start = now

    def _line(self, key: str, phase: str, message: str, source: _Source, **fields: Any) -> None:
        reasons = dict(sorted(source.reasons.items())) if source.reasons else None
        named = source.fields or {self.key_field: key}
        self._emit(self.event, message, phase=phase, **named, reasons=reasons, **fields)


def event_names() -> Mapping[str, tuple[int, str]]:
    """The catalogue (for docs and tests)."""
    return EVENTS


__all__ = ["EVENTS", "LOGGER", "EventLog", "FloodSummary", "event_names"]
