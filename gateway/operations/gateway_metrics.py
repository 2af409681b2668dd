"""What the gateway counts, and where it hooks in (the metric names are
listed in README "Metrics" and docs/operations.md).

* :class:`GatewayMetrics` holds the pushed metrics of one worker; the
  root resource (:class:`gateway.coap.service_site.ServiceSite`) counts every
  request by route and code with it.
* proofs verified / rejected by reason are counted by the authorizer
  itself (:class:`gateway.resource_server.authorizer.Decisions`) and read at scrape time.
* :class:`MeteredAudit` sits in front of the audit log and counts token
  decisions (issued, accepted on upload, rejected by reason).
* :func:`time_upstream` wraps a proxy route's HTTP client to observe the
  upstream latency histogram and count upstream errors.

Labels are closed sets only (see :mod:`gateway.operations.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gateway import native
from gateway.operations import metrics as m
from gateway.operations.metrics import Counter, Histogram

#: Route label of paths that are no configured route and no known endpoint.
OTHER_ROUTE = "other"

_KNOWN_PATHS = {
    ("token",): "/token",
    ("authz-info",): "/authz-info",
    ("introspect",): "/introspect",
    ("whoami",): "/whoami",
    (".well-known", "core"): "/.well-known/core",
    (".well-known", "ace-keys"): "/.well-known/ace-keys",
}


class GatewayMetrics:
    """The pushed metrics of one worker."""

    def __init__(self) -> None:
        self.requests = Counter(
            "acegw_requests_total",
            "CoAP requests answered, by route (configured prefix or endpoint) and response code.",
            ("route", "code"),
        )
        self.tokens_issued = Counter(
            "acegw_tokens_issued_total", "Access tokens issued by the embedded AS (/token)."
        )
        self.tokens_accepted = Counter(
            "acegw_tokens_accepted_total",
            "Access tokens accepted by the RS, by how they arrived (authz-info, psk_identity, "
            "shared = from another worker).",
            ("via",),
        )
        self.tokens_rejected = Counter(
            "acegw_tokens_rejected_total",
            "Token requests refused (/token) and token uploads refused (/authz-info, "
            "psk_identity), by reason.",
            ("endpoint", "reason"),
        )
        self.introspections = Counter(
            "acegw_introspections_total", "Introspection answers by result.", ("result",)
        )
        self.upstream_latency = Histogram(
            "acegw_upstream_request_duration_seconds",
            "Time from handing a request to a route's HTTP client to its complete response "
            "(queueing for a connection included).",
            ("route",),
        )
        self.upstream_errors = Counter(
            "acegw_upstream_errors_total",
            "Upstream exchanges that failed (timeout, connect, bad response), by route and reason.",
            ("route", "reason"),
        )
        self.reloads = Counter(
            "acegw_config_reloads_total", "SIGHUP configuration reloads by outcome.", ("outcome",)
        )
        #: handshakes refused because the identity is a disabled client
        #: (the DTLS server counts them as unknown_identity; collect() moves them)
        self.handshakes_client_disabled = 0
        self.token_retirements = Counter(
            "acegw_tokens_dropped_total",
            "Held tokens dropped by the RS, by cause (expired, revoked, client, key_retired).",
            ("cause",),
        )

    def pushed(self) -> list[Counter | Histogram]:
        return [
            self.requests,
            self.tokens_issued,
            self.tokens_accepted,
            self.tokens_rejected,
            self.introspections,
            self.upstream_latency,
            self.upstream_errors,
            self.reloads,
            self.token_retirements,
        ]


_CODE_LABELS: dict[int, str] = {}


def code_label(code: int) -> str:
    """``"2.05"`` for Content (RFC 7252 §12.1.2 dotted form)."""
    label = _CODE_LABELS.get(code)
    if label is None:
        label = _CODE_LABELS[code] = f"{code >> 5}.{code & 0x1F:02d}"
    return label


class RouteLabels:
    """Maps a request path to its ``route`` label: a known endpoint, the
    longest configured route prefix it falls under, or ``other``."""

    def __init__(self, prefixes: Sequence[str]) -> None:
        self._routes = sorted(
            ((tuple(p.strip("/").split("/")), p) for p in prefixes if p.strip("/")),
            key=lambda item: -len(item[0]),
        )

    def __call__(self, path: tuple[str, ...]) -> str:
        known = _KNOWN_PATHS.get(path)
        if known is not None:
            return known
        for segments, label in self._routes:
            if path[: len(segments)] == segments:
                return label
        return OTHER_ROUTE


class MeteredAudit:
    """An audit sink that counts token decisions, then passes the record on."""

    def __init__(
        self,
        audit: Callable[..., None],
        metrics: GatewayMetrics,
        observe: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """``observe``: also shown every refusal (the event floods)."""
        self.inner = audit
        self._metrics = metrics
        self._observe = observe

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.inner, "enabled", True))

    def __call__(self, **fields: Any) -> None:
        event = fields.get("event")
        decision = fields.get("decision")
        m = self._metrics
        if event == "token":
            if decision == "issue":
                m.tokens_issued.inc()
            else:
                m.tokens_rejected.inc("token", str(fields.get("reason")))
        elif event == "authz-info":
            if decision == "accept":
                m.tokens_accepted.inc("authz-info")
            else:
                m.tokens_rejected.inc("authz-info", str(fields.get("reason")))
        elif event == "introspect":
            m.introspections.inc(str(decision))
        if decision == "deny" and self._observe is not None:
            self._observe(fields)
        self.inner(**fields)


def time_upstream(upstream: Any, route: str, metrics: GatewayMetrics) -> None:
    """Observe every exchange of ``upstream`` (a
    :class:`gateway.proxy.upstream.Upstream`): its latency, and each failure
    counted by reason, under ``route``."""
    latency = metrics.upstream_latency
    errors = metrics.upstream_errors

    def observe(seconds: float, failure: str | None) -> None:
        if failure is None:
            latency.observe(seconds, route)
        else:
            errors.inc(route, failure)

    upstream.observer = observe


def _failures(gateway: Any, stats: Any) -> dict[str, int]:
    """Handshake failures by outcome, with ``client_disabled`` told apart
    from ``unknown_identity`` (the DTLS server cannot tell them apart)."""
    failures = dict(stats.handshake_failures)
    disabled = min(gateway.metrics.handshakes_client_disabled, failures.get("unknown_identity", 0))
    if disabled:
        failures["unknown_identity"] -= disabled
        failures["client_disabled"] = disabled
    return failures


def collect(gateway: Any) -> list[m.Family]:
    """Every metric of one worker (a :class:`gateway.runtime.gateway.Gateway`),
    labelled ``worker``: the pushed ones and those read from the DTLS server,
    the authorizer, the lockout and the token store at scrape time."""
    const = {"worker": str(gateway.worker)}
    out = [metric.family(const) for metric in gateway.metrics.pushed()]
    out.append(
        m.family(
            "acegw_requests_in_flight",
            "gauge",
            "Requests being processed now (graceful shutdown waits for them).",
            [(const, gateway.root.in_flight if gateway.root is not None else 0)],
        )
    )
    if gateway.dtls is not None:
        st = gateway.dtls.stats()
        out += [
            m.family(
                "acegw_dtls_handshakes_total",
                "counter",
                "DTLS handshakes by outcome (ok, or why they failed).",
                [({**const, "outcome": "ok"}, st.handshakes_ok)]
                + [({**const, "outcome": k}, v) for k, v in sorted(_failures(gateway, st).items())],
            ),
            m.family(
                "acegw_dtls_handshakes_displaced_total",
                "counter",
                "Stalled half-open handshakes dropped to admit a new one at dtls.max_handshakes.",
                [(const, st.handshakes_displaced)],
            ),
            m.family(
                "acegw_dtls_handshakes_held_total",
                "counter",
                "Handshakes held while the PSK of their RFC 9202 kid identity was fetched "
                "from the shared token store (started), and holds that ended still pending "
                "(expired; those fail as unknown_identity).",
                [
                    ({**const, "hold": "started"}, st.handshakes_held),
                    ({**const, "hold": "expired"}, st.holds_expired),
                ],
            ),
            m.family(
                "acegw_dtls_sessions",
                "gauge",
                "DTLS sessions now, established or handshaking.",
                [
                    ({**const, "state": "established"}, st.sessions),
                    ({**const, "state": "handshaking"}, st.handshaking),
                ],
            ),
            m.family(
                "acegw_dtls_sessions_closed_total",
                "counter",
                "Established DTLS sessions that ended, by reason.",
                [({**const, "reason": k}, v) for k, v in sorted(st.sessions_closed.items())],
            ),
            m.family(
                "acegw_dtls_datagrams_total",
                "counter",
                "UDP datagrams received and sent.",
                [
                    ({**const, "direction": "in"}, st.datagrams_received),
                    ({**const, "direction": "out"}, st.datagrams_sent),
                ],
            ),
            m.family(
                "acegw_dtls_datagrams_dropped_total",
                "counter",
                "Datagrams dropped, by reason.",
                [({**const, "reason": k}, v) for k, v in sorted(st.dropped.items())],
            ),
            m.family(
                "acegw_dtls_address_changes_total",
                "counter",
                "Sessions moved to a new peer address by their Connection ID (RFC 9146 §6: "
                "a NAT rebinding without a new handshake).",
                [(const, st.address_changes)],
            ),
            m.family(
                "acegw_dtls_handed_over_total",
                "counter",
                "Datagrams another worker received for a Connection ID this worker owns.",
                [(const, st.handed_over)],
            ),
        ]
    decisions = gateway.authorizer.decisions
    now = gateway.clock()
    out += [
        m.family(
            "acegw_native_extension",
            "gauge",
            "1 when the C extension runs, 0 when its Python reference does (gateway.native).",
            [({**const, "module": k}, int(v)) for k, v in sorted(native.choices().items())],
        ),
        m.family(
            "acegw_authorization_decisions_total",
            "counter",
            "Authorization decisions on protected resources (allow, or deny by reason).",
            [({**const, "decision": "allow", "reason": "ok"}, decisions.allowed)]
            + [
                ({**const, "decision": "deny", "reason": k}, v)
                for k, v in sorted(decisions.refused.items())
            ],
        ),
        m.family(
            "acegw_proofs_verified_total",
            "counter",
            "Proof options whose MAC/signature verified and whose sequence number the "
            "replay window accepted.",
            [(const, decisions.proofs_verified)],
        ),
        m.family(
            "acegw_proofs_rejected_total",
            "counter",
            "Requests with a Proof option refused before the proof was accepted, by reason.",
            [({**const, "reason": k}, v) for k, v in sorted(decisions.proofs_rejected.items())],
        ),
        m.family(
            "acegw_rate_limited_total",
            "counter",
            "Requests answered 4.29 by a rate limit (per device or per peer on ACE endpoints).",
            [(const, decisions.refused.get("rate_limited", 0))],
        ),
        m.family(
            "acegw_locked_out_total",
            "counter",
            "Requests refused because their (identity, address) pair is banned.",
            [(const, decisions.refused.get("locked_out", 0))],
        ),
        m.family(
            "acegw_lockout_bans_total",
            "counter",
            "Bans started after repeated failed handshakes or proofs, by scope (pair: one "
            "identity from one address; address: credential stuffing from one address).",
            [({**const, "scope": str(k)}, v) for k, v in gateway.lockout.bans_total.items()],
        ),
        m.family(
            "acegw_lockout_active",
            "gauge",
            "Bans in force now, by scope.",
            [({**const, "scope": str(k)}, v) for k, v in gateway.lockout.active_bans(now).items()],
        ),
        m.family(
            "acegw_upstream_breaker_open",
            "gauge",
            "1 while a route's circuit breaker is open or half-open (probing), else 0.",
            [
                (
                    {**const, "route": r.config.prefix},
                    int(r.upstream.breaker.state.value != "closed"),
                )
                for r in gateway.proxy.routes
            ],
        ),
        m.family(
            "acegw_tokens_held",
            "gauge",
            "Access tokens held by the RS now.",
            [(const, len(gateway.tokens))],
        ),
        m.family(
            "acegw_replay_windows",
            "gauge",
            "Replay windows (PoP keys with an opened window) now.",
            [(const, len(gateway.guard))],
        ),
        m.family(
            "acegw_draining",
            "gauge",
            "1 while the worker drains for shutdown.",
            [(const, 1 if gateway.draining else 0)],
        ),
    ]
    return out + m.process_families(const)


__all__ = [
    "GatewayMetrics",
    "MeteredAudit",
    "RouteLabels",
    "code_label",
    "collect",
    "time_upstream",
]
