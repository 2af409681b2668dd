"""The verdict of a run: checks that always apply (k6-style thresholds
with defaults, overridable in the scenario's ``[thresholds]`` and on the
command line), the diagnosis that names what went wrong, and the cause of
every failed check.

Checks (all must hold for PASS):

* **served devices**: the share of normal devices that completed the
  handshake, got a token, uploaded it and had at least one successful
  request is at least ``served_ratio`` (default 0.99), and at least one was
  (a run without normal devices, or that served none, fails whatever the
  limit);
* **normal error rate**: failed / finished operations of normal devices
  (handshakes, token requests, uploads and requests; an Echo round trip is
  part of its request) is at most ``error_rate`` (default 0.01), and at
  least one operation finished;
* **ran the whole duration**: not stopped by SIGINT/SIGTERM, no worker
  crashed;
* **no attack accepted**: no finding;
* with ``observe_trl``: the Token Revocation List was observed (at least one
  registration, failed ones at most ``error_rate``), and no request made
  with a token after it listed the token was answered 2.xx;
* with ``p99_ms``: request p99 (normal devices, successful requests);
* with ``strict_attacks``: no attack answered other than expected and every
  attack kind of the scenario exercised.

The diagnosis gives, per phase, the operations that succeeded and failed and
the dominant error with its count and, where one is known, a hint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .attacks import DEVIATED, EXPECTED, FINDING
from .histogram import Histogram
from .stats import PHASES

__all__ = ["Slo", "Thresholds", "error_phase", "evaluate", "hint_for"]

#: Error kinds by phase: the prefix of the kind (``token_4.29``) names it.
_PHASE_PREFIXES = (
    ("authz_info_", "authz_info"),
    ("handshake_", "handshake"),
    ("token_", "token"),
    ("request_", "request"),
    ("session_", "session"),
    ("socket_", "socket"),
)


@dataclass(frozen=True)
class Thresholds:
    """The limits the verdict checks (None: not checked)."""

    served_ratio: float = 0.99
    error_rate: float = 0.01
    p99_ms: float | None = None
    strict_attacks: bool = False

    @classmethod
    def of(cls, stored: Mapping[str, Any] | None, **overrides: Any) -> Thresholds:
        """Thresholds stored in a report (the scenario's), then ``overrides``
        that are given (the command line: None and a False flag mean not given)."""
        values = cls().to_dict()
        for key, value in (stored or {}).items():
            if key in values:
                values[key] = value
        for key, value in overrides.items():
            if value is not None and value is not False:
                values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: The older name (``--slo-*`` options).
Slo = Thresholds


def error_phase(kind: str) -> str:
    """The phase an error kind belongs to (``token_4.29`` -> ``token``)."""
    for prefix, phase in _PHASE_PREFIXES:
        if kind.startswith(prefix):
            return phase
    return "other"


def hint_for(kind: str, report: Mapping[str, Any]) -> str | None:
    """What a load tester can do about error ``kind`` in ``report``."""
    sc = report.get("scenario", {})
    target = sc.get("target", "the target")
    one_source = report.get("sources", {}).get("count", 1) <= 1
    code = kind.split("_")[-1].split(" ")[0] if "_" in kind else ""
    if kind.startswith(("token_4.29", "authz_info_4.29")):
        path = sc.get("token_path" if kind.startswith("token") else "authz_info_path", "")
        if one_source:
            return (
                f"4.29 on {path} with every device on one source address: the gateway "
                "limits it per address; spread [target] source_addresses (e.g. "
                '["127.0.1.0/24"]) or raise the gateway\'s [limits] ace_rate / ace_burst'
            )
        return (
            f"4.29 on {path}: the gateway's [limits] ace_rate / ace_burst is below the "
            "rate the devices ask at; raise it or spread the ramp-up"
        )
    hints = {
        "handshake_port_unreachable": (
            f"nothing listens on {target} (ICMP port unreachable): is the gateway "
            "running, on this address and port?"
        ),
        "handshake_wrong_psk": (
            "the gateway refused the key: devices.csv and the gateway's registry "
            "disagree (export it again with acegw clients bulk-add --out), or the "
            "identities are not registered (a gateway answers an unknown identity "
            "like a wrong key, RFC 4279 §2)"
        ),
        "handshake_unknown_identity": (
            "the gateway does not know these identities (or they are disabled): "
            "register them (acegw clients bulk-add) or check --devices-csv"
        ),
        "handshake_locked_out": (
            "the identity and key had worked, then were refused: locked out after "
            "[limits] lockout_failures failures, disabled or re-keyed on the gateway"
        ),
        "handshake_timeout": (
            "no handshake within [device] handshake_timeout: the gateway is down, "
            "filtered, overloaded or its half-open handshake table is full"
        ),
        "request_timeout": (
            "requests unanswered after the CoAP retransmissions: the gateway is overloaded or down"
        ),
        "token_timeout": "token requests unanswered: the gateway is overloaded or down",
        "request_4.29": (
            "devices ask faster than the gateway's [limits] device_rate / device_burst: "
            "lower [device] rate or raise the limit"
        ),
        "request_4.03": "the devices' scope (devices.csv) does not cover the request mix",
        "request_4.05": "the devices' scope does not allow this method on the path",
        "request_4.04": "the request mix names a path the gateway does not serve",
        "request_4.15": (
            "the upstream refused the body's Content-Format: give [[requests]] a body "
            'template with format = "json" or "cbor" (or content_format)'
        ),
        "request_4.00": "the gateway or upstream found the request malformed",
        "request_5.02": "the gateway could not reach the route's upstream",
        "request_5.04": "the route's upstream did not answer in time",
        "request_5.03": "the gateway is overloaded ([limits] max_in_flight) or draining",
        "token_4.00": "the gateway refused the token request (see the reason)",
        "token_4.01": "the gateway's AS does not know or refuses the client",
    }
    if "locked out" in kind:
        return (
            "the gateway locked the identity or address out after repeated failures "
            "([limits] lockout_failures, lockout_seconds)"
        )
    base = kind.split(" ")[0]
    if base in hints:
        return hints[base]
    if code.startswith("5."):
        return "the gateway or its upstream failed"
    return None


def _diagnosis(report: Mapping[str, Any]) -> dict[str, Any]:
    errors: dict[str, int] = report.get("errors", {})
    by_phase: dict[str, list[tuple[str, int]]] = {}
    for kind, n in errors.items():
        by_phase.setdefault(error_phase(kind), []).append((kind, n))
    traffic = report.get("normal_traffic", {})
    out: dict[str, Any] = {}
    for phase in (*PHASES, "session", "socket", "other"):
        t = traffic.get(phase, {})
        kinds = sorted(by_phase.get(phase, []), key=lambda kv: (-kv[1], kv[0]))
        if not t and not kinds:
            continue
        entry: dict[str, Any] = {"ok": t.get("ok", 0), "failed": t.get("failed", 0)}
        if kinds:
            top, n = kinds[0]
            entry.update({"top_error": top, "count": n, "hint": hint_for(top, report)})
            entry["errors"] = dict(kinds[:8])
        out[phase] = entry
    return out


def _top_errors(diagnosis: Mapping[str, Any]) -> str:
    parts = []
    for phase in PHASES:
        d = diagnosis.get(phase, {})
        if d.get("top_error") and d.get("failed"):
            text = f"{phase}: {d['top_error']} x{d['count']}"
            if d.get("hint"):
                text += f" ({d['hint']})"
            parts.append(text)
    return "; ".join(parts) or "no error recorded"


def _not_exercised(report: Mapping[str, Any]) -> dict[str, str]:
    """Attack kinds of the scenario that got no conclusive answer, and why."""
    out: dict[str, str] = {}
    notes = report.get("not_exercised", {})
    attacks = report.get("attacks", {})
    for kind in sorted(set(attacks) | set(notes)):
        tally = attacks.get(kind, {})
        if not tally.get("devices") and not notes.get(kind):
            continue
        if tally.get(EXPECTED, 0) + tally.get(FINDING, 0) + tally.get(DEVIATED, 0):
            continue
        reasons = notes.get(kind, {})
        if reasons:
            out[kind] = max(reasons.items(), key=lambda kv: kv[1])[0]
        elif tally.get("attempts"):
            answers = ", ".join(f"{a} x{n}" for a, n in tally.get("answers", {}).items())
            out[kind] = f"no attempt got a conclusive answer ({answers})"
        else:
            out[kind] = "no attempt was made (its devices never got that far)"
    return out


def evaluate(report: dict[str, Any], thresholds: Thresholds | None = None) -> dict[str, Any]:
    """Add ``latency_ms`` (per phase and per route), ``duration``,
    ``throughput``, ``diagnosis``, ``attacks_not_exercised`` and
    ``verdict`` to a (merged) report and return it. ``thresholds`` defaults
    to those stored in the report."""
    th = thresholds or Thresholds.of(report.get("thresholds"))
    report["thresholds"] = th.to_dict()
    hists = {p: Histogram.from_dict(d) for p, d in report.get("histograms", {}).items()}
    report["latency_ms"] = {p: h.summary() for p, h in hists.items()}
    for data in report.get("routes", {}).values():
        data["latency_ms"] = Histogram.from_dict(data["histogram"]).summary()
    span = max(0.0, report["ended"] - report["started"])
    report["duration"] = round(span, 3)
    ok = report.get("counters", {}).get("requests_ok", 0)
    report["throughput"] = {"requests_ok_per_s": round(ok / span, 2) if span else 0.0}
    diagnosis = report["diagnosis"] = _diagnosis(report)
    not_exercised = report["attacks_not_exercised"] = _not_exercised(report)
    checks: list[dict[str, Any]] = []

    def check(name: str, limit: Any, value: Any, passed: bool, cause: str = "") -> None:
        entry = {"name": name, "limit": limit, "value": value, "ok": passed}
        if not passed:
            entry["cause"] = cause
        checks.append(entry)

    dev = report.get("devices", {})
    normal = dev.get("normal", 0)
    served = dev.get("normal_with_success", 0)
    share = served / normal if normal else 0.0
    flow = (
        "a handshake and a successful request"
        if report.get("scenario", {}).get("auth") == "none"
        else "handshake, token, upload and a successful request"
    )
    if not normal:
        served_cause = (
            f"no normal device in this run ({dev.get('simulated', 0)} simulated, attackers "
            f"{dev.get('attackers') or 'none'}): nothing shows that the gateway serves devices"
        )
    else:
        served_cause = (
            f"{served} of {normal} normal devices completed {flow} ({share:.1%}"
            f"{'; at least one is needed' if not served else ''}); {_top_errors(diagnosis)}"
        )
    # one served device at least, whatever the limit: a run that served none measured nothing
    check(
        "served devices",
        f">= {th.served_ratio:.2%}",
        round(share, 4),
        served > 0 and share >= th.served_ratio,
        served_cause,
    )
    traffic = report.get("normal_traffic", {})
    failed = sum(t.get("failed", 0) for t in traffic.values())
    total = failed + sum(t.get("ok", 0) for t in traffic.values())
    rate = failed / total if total else 0.0
    check(
        "normal error rate",
        f"<= {th.error_rate:.2%}",
        round(rate, 6),
        total > 0 and rate <= th.error_rate,
        f"{failed} of {total} operations of normal devices failed ({rate:.1%}); "
        f"{_top_errors(diagnosis)}"
        if total
        else "no operation of a normal device finished: the rate measures nothing",
    )
    run = report.get("run", {})
    completed = bool(run.get("completed"))
    missing = run.get("missing_shards")
    if missing:
        gap = f"shards missing: {', '.join(missing)}"
        cause = f"{gap}; the merged figures cover only the shards present"
    else:
        gap = f"interrupted: {run.get('interrupted') or 'unknown'}"
        cause = (
            f"the run was interrupted ({run.get('interrupted') or 'unknown'}) after "
            f"{span:.1f} s; its figures cover only that part"
        )
    check(
        "ran the whole duration",
        f"{run.get('planned_duration')} s",
        "yes" if completed else gap,
        completed and not missing,
        cause,
    )
    attacks = report.get("attacks", {})
    findings = sum(t.get(FINDING, 0) for t in attacks.values())
    examples = report.get("findings", [])
    check(
        "attacks accepted",
        0,
        findings,
        findings == 0,
        f"{findings} attack attempt(s) accepted: "
        + "; ".join(f"{k} x{t[FINDING]}" for k, t in sorted(attacks.items()) if t.get(FINDING))
        + (
            f" (e.g. device {examples[0]['device']}, {examples[0]['route']}"
            f"{' ' + examples[0]['request'] if examples[0].get('request') else ''}: "
            f"got {examples[0]['answer']}, expected {examples[0]['expected']})"
            if examples
            else ""
        ),
    )
    if report.get("scenario", {}).get("observe_trl"):
        counters = report.get("counters", {})
        observed = counters.get("trl_observations", 0)
        trl_errors = {
            k: v
            for k, v in report.get("errors", {}).items()
            if k.startswith("trl_") and not k.startswith("trl_revoked_token_accepted")
        }
        trl_failed = sum(trl_errors.values())
        trl_rate = trl_failed / (observed + trl_failed) if observed + trl_failed else 0.0
        top_trl = max(trl_errors.items(), key=lambda kv: kv[1], default=None)
        # registrations that never took: no revocation could reach a device
        check(
            "revocation list observed",
            f"<= {th.error_rate:.2%} failed",
            round(trl_rate, 6) if observed else "none",
            observed > 0 and trl_rate <= th.error_rate,
            f"{observed} TRL observations registered, {trl_failed} registrations or "
            "notifications failed"
            + (f" (top: {top_trl[0]} x{top_trl[1]})" if top_trl else "")
            + (": no device followed the revocation list" if not observed else ""),
        )
        tried = counters.get("trl_revoked_token_requests", 0)
        accepted = counters.get("trl_revoked_token_accepted", 0)
        check(
            "revoked tokens refused",
            0,
            accepted,
            accepted == 0,
            f"{accepted} of {tried} requests made with a token after the TRL listed it "
            "were answered 2.xx",
        )
    if th.p99_ms is not None:
        req = hists.get("request", Histogram())
        value = req.percentile(99) / 1000.0
        check(
            "request p99 (ms)",
            th.p99_ms,
            value,
            req.count > 0 and value <= th.p99_ms,
            f"request p99 {value:.1f} ms > {th.p99_ms} ms"
            if req.count
            else "no successful request to measure",
        )
    deviated = sum(t.get(DEVIATED, 0) for t in attacks.values())
    if th.strict_attacks:
        check(
            "attacks answered as expected",
            0,
            deviated,
            deviated == 0,
            "; ".join(
                f"{k}: {t[DEVIATED]} answered other than {t.get('expected_answer')} "
                f"({', '.join(f'{a} x{n}' for a, n in t.get('answers', {}).items())})"
                for k, t in sorted(attacks.items())
                if t.get(DEVIATED)
            ),
        )
    check(
        "attack kinds exercised",
        "all" if th.strict_attacks else "(reported)",
        len(set(attacks) | set(not_exercised)) - len(not_exercised),
        not (th.strict_attacks and not_exercised),
        "; ".join(f"{k} not exercised: {why}" for k, why in sorted(not_exercised.items())),
    )
    causes = [c["cause"] for c in checks if not c["ok"]]
    report["verdict"] = {"pass": not causes, "checks": checks, "causes": causes}
    return report
