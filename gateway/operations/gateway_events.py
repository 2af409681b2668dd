"""The events one gateway worker emits (:mod:`gateway.operations.events`),
fed from the hooks the wiring (:class:`gateway.runtime.gateway.Gateway`)
already has: the DTLS server's ``on_handshake`` and ``stats()``, the audit
stream, the lockout, housekeeping's registry and key changes, and the proxy
routes' circuit breakers. Sans-I/O: every call takes ``now``.

Floods are summarised (:class:`FloodSummary`): failed handshakes per source
address (``handshake_flood``), requests refused 4.29 or locked out per
source address (``request_flood``), ClientHellos dropped at a DTLS table cap
(``dtls_cap_reached``, per cap and source address as the DTLS server reports
them, :meth:`gateway.dtls.server.DtlsServer.take_cap_drops`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gateway.operations.events import EventLog, FloodSummary

#: DTLS drop reasons (``DtlsStats.dropped``) that are a table cap.
CAPS = {
    "handshake_cap": "half-open handshake table full (dtls.max_handshakes)",
    "address_handshake_cap": "an address's share of the handshake table "
    "(dtls.address_handshake_share)",
    "session_cap": "session table full, nothing idle to evict (dtls.max_sessions)",
}
#: Handshake failures that are not the peer's doing.
_NOT_FLOOD = frozenset({"closed"})
#: Request refusals that count towards a request flood.
_REQUEST_FLOOD = frozenset({"rate_limited", "locked_out"})
#: Registry change kinds and the event that says they were applied.
CLIENT_EVENTS = {
    "disable": ("client_disabled", "disabled"),
    "enable": ("client_enabled", "enabled"),
    "delete": ("client_deleted", "deleted"),
    "rotate": ("client_rekeyed", "re-keyed (PSK rotated)"),
    "update": ("client_updated", "updated"),
}


def host_of(peer: str) -> str:
    """The address part of ``host:port`` / ``[v6]:port``."""
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer
    host, sep, _ = peer.rpartition(":")
    return host if sep and "." in host else peer


class GatewayEvents:
    """One worker's event emitter and flood summaries."""

    def __init__(self, emit: EventLog | None = None, *, window: float = 10.0) -> None:
        self.emit = emit or EventLog()
        self.handshakes = FloodSummary(
            self.emit, event="handshake_flood", what="failed handshakes", window=window
        )
        self.requests = FloodSummary(
            self.emit, event="request_flood", what="refused requests", window=window
        )
        self.caps = FloodSummary(
            self.emit,
            event="dtls_cap_reached",
            what="ClientHellos dropped",
            key_field="cap",
            threshold=1,
            window=window,
        )
        self._dropped: dict[str, int] = {}
        self._breakers: dict[str, str] = {}

    # --- floods -----------------------------------------------------------------

    def handshake_failed(self, address: str, reason: str, now: float) -> None:
        if reason not in _NOT_FLOOD:
            self.handshakes.count(address, now, reason)

    def audit_record(self, fields: Mapping[str, Any], now: float) -> None:
        """Every audit record passes here; refusals feed the request floods."""
        if fields.get("decision") == "deny" and fields.get("reason") in _REQUEST_FLOOD:
            self.requests.count(host_of(str(fields.get("peer", "?"))), now, fields["reason"])

    def dtls_drops(
        self,
        dropped: Mapping[str, int],
        now: float,
        by_address: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        """The DTLS server's drop counters (cumulative), read periodically,
        and the cap drops since the last read by (cap, source address) when
        the server reports them: a line per cap and address then, else per
        cap."""
        for cap in CAPS:
            total = dropped.get(cap, 0)
            delta = total - self._dropped.get(cap, 0)
            self._dropped[cap] = total
            if delta > 0 and by_address is None:
                self.caps.count(cap, now, n=delta, label=f"at {cap}")
        for (cap, address), n in (by_address or {}).items():
            if cap in CAPS and n > 0:
                self.caps.count(
                    f"{cap} {address}",
                    now,
                    n=n,
                    label=f"at {cap} from {address}",
                    fields={"cap": cap, "address": address},
                )

    def tick(self, now: float) -> None:
        for summary in (self.handshakes, self.requests, self.caps):
            summary.tick(now)

    # --- state changes ------------------------------------------------------------

    def breakers(self, states: Iterable[tuple[str, str]]) -> None:
        """The routes' breaker states (``closed``, ``open``, ``half_open``),
        read periodically: each change is an event."""
        for route, state in states:
            before = self._breakers.get(route, "closed")
            self._breakers[route] = state
            if state != before:
                self.emit(
                    "upstream_breaker",
                    f"route {route}: circuit breaker {before} -> {state}",
                    route=route,
                    state=state,
                    previous=before,
                )

    def ban(self, label: Mapping[str, str], scope: str, seconds: float, reason: str) -> None:
        who = label.get("client_id") or label.get("kid") or label.get("identity_len")
        address = label["address"]
        what = f"{who} from {address}" if scope == "pair" else f"address {address}"
        self.emit(
            "lockout_ban",
            f"lockout: {what} banned for {seconds:g} s after repeated failures ({reason})",
            scope=scope,
            seconds=seconds,
            reason=reason,
            **label,
        )

    def lift(self, lifted: list[Mapping[str, str]], by: str) -> None:
        if lifted:
            self.emit(
                "lockout_lift",
                f"lockout: {len(lifted)} ban(s) lifted ({by})",
                count=len(lifted),
                by=by,
                bans=lifted[:20],
            )

    def client_change(self, kind: str, client_id: str, sessions: int, tokens: int) -> None:
        named = CLIENT_EVENTS.get(kind)
        if named is None:
            return
        event, verb = named
        self.emit(
            event,
            f"client {client_id} {verb}: {sessions} session(s) closed, {tokens} token(s) dropped",
            client_id=client_id,
            sessions_closed=sessions,
            tokens_dropped=tokens,
        )

    def revoked(self, ctis: list[str], sessions: int) -> None:
        self.emit(
            "token_revoked",
            f"revocations applied: {len(ctis)} held token(s) dropped, {sessions} session(s) closed",
            ctis=ctis[:20],
            tokens_dropped=len(ctis),
            sessions_closed=sessions,
        )

    def keys_changed(
        self,
        current: Mapping[str, str],
        retired: list[str],
        tokens: int,
    ) -> None:
        self.emit(
            "keys_changed",
            "AS keys changed: current "
            + ", ".join(f"{kind} {kid}" for kind, kid in sorted(current.items()))
            + (f"; retired {', '.join(retired)}" if retired else "")
            + f"; {tokens} held token(s) dropped",
            current=dict(current),
            retired=retired,
            tokens_dropped=tokens,
        )

    def reloaded(self, routes: int, applied: list[str], restart: list[str]) -> None:
        self.emit(
            "config_reloaded",
            f"configuration reloaded: {routes} route(s)"
            + (f"; changed: {', '.join(applied)}" if applied else "; nothing changed")
            + (f"; changes to [{'], ['.join(restart)}] need a restart" if restart else ""),
            routes=routes,
            applied=applied,
            restart_needed=restart,
        )


__all__ = ["CAPS", "CLIENT_EVENTS", "GatewayEvents", "host_of"]
