"""What a run measured: the per-worker :class:`Recorder` the devices write
into, the JSON report built from it, merging of reports (histograms merged,
never averaged) and the verdict against the SLOs.

Report layout (``format`` ``acegw-sim-report/1``; ``docs/simulator.md`` has
the reference): ``scenario``, ``shards``, ``started``/``ended``, ``devices``,
``histograms`` (one per phase, :class:`~device_sim.histogram.Histogram`
JSON), ``latency_ms`` (percentiles derived from them), ``codes`` (CoAP
response codes per phase), ``counters``, ``errors`` (by kind), ``timeline``
(per second: requests ok, requests failed, handshakes, tokens, connected
devices, retransmissions, timeouts), ``attacks`` (per kind: attempts and
their judgement, answers), ``findings`` (examples), ``simulator`` (own CPU,
RSS, event-loop lag per worker, warnings) and ``verdict``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .attacks import DEVIATED, EXPECTED, FINDING, INCONCLUSIVE, KINDS, judge
from .histogram import Histogram

__all__ = ["PHASES", "REPORT_FORMAT", "Recorder", "Slo", "evaluate", "merge_reports"]

REPORT_FORMAT = "acegw-sim-report/1"
#: Latency phases, in the order a device goes through them.
PHASES = ("handshake", "token", "authz_info", "request")
#: Timeline columns after the time.
TIMELINE_COLUMNS = (
    "requests_ok",
    "requests_failed",
    "handshakes",
    "tokens",
    "connected",
    "retransmissions",
    "timeouts",
)
_OK, _FAILED, _HANDSHAKES, _TOKENS, _CONNECTED, _RETRANSMISSIONS, _TIMEOUTS = range(7)
#: Findings kept as examples per attack kind.
MAX_FINDING_EXAMPLES = 20


class Recorder:
    """Counters and histograms of one worker. Devices call it with their
    monotonic ``now``; ``epoch_offset`` turns that into wall-clock seconds
    for the timeline, so timelines of several workers and shards line up."""

    def __init__(self, epoch_offset: float = 0.0) -> None:
        self.epoch_offset = epoch_offset
        self.histograms = {p: Histogram() for p in PHASES}
        self.codes: dict[str, Counter[str]] = {
            p: Counter() for p in ("token", "authz_info", "request")
        }
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.attack_outcomes: dict[str, Counter[str]] = {}
        self.attack_answers: dict[str, Counter[str]] = {}
        self.findings: list[dict[str, Any]] = []
        self._finding_counts: Counter[str] = Counter()
        self.timeline: dict[int, list[int]] = {}

    def _slot(self, now: float) -> list[int]:
        second = int(now + self.epoch_offset)
        slot = self.timeline.get(second)
        if slot is None:
            slot = self.timeline[second] = [0] * len(TIMELINE_COLUMNS)
        return slot

    # --- what devices report ----------------------------------------------------------

    def latency(self, phase: str, seconds: float) -> None:
        self.histograms[phase].record(round(seconds * 1_000_000))

    def code(self, phase: str, code: str) -> None:
        self.codes[phase][code] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def request_done(self, now: float, ok: bool) -> None:
        self._slot(now)[_OK if ok else _FAILED] += 1
        self.counters["requests_ok" if ok else "requests_failed"] += 1

    def handshake_done(self, now: float) -> None:
        self._slot(now)[_HANDSHAKES] += 1
        self.counters["handshakes_ok"] += 1

    def token_done(self, now: float) -> None:
        self._slot(now)[_TOKENS] += 1
        self.counters["tokens_ok"] += 1

    def retransmission(self, now: float) -> None:
        self._slot(now)[_RETRANSMISSIONS] += 1
        self.counters["retransmissions"] += 1

    def timeout(self, now: float) -> None:
        self._slot(now)[_TIMEOUTS] += 1
        self.counters["timeouts"] += 1

    def connected(self, now: float, n: int) -> None:
        """Gauge: devices with an established session at the end of a second."""
        self._slot(now)[_CONNECTED] = n

    def attack(self, kind: str, answer: str, device: str, now: float) -> str:
        """Record one attempt of ``kind`` answered with ``answer``; returns
        its judgement (:func:`device_sim.attacks.judge`)."""
        outcome = judge(kind, answer)
        self.attack_outcomes.setdefault(kind, Counter())[outcome] += 1
        self.attack_answers.setdefault(kind, Counter())[answer] += 1
        if outcome == FINDING and self._finding_counts[kind] < MAX_FINDING_EXAMPLES:
            self._finding_counts[kind] += 1
            self.findings.append(
                {
                    "attack": kind,
                    "device": device,
                    "answer": answer,
                    "expected": KINDS[kind].expected_text,
                    "at": round(now + self.epoch_offset, 3),
                }
            )
        return outcome

    # --- report -------------------------------------------------------------------

    def report(
        self,
        *,
        scenario: Mapping[str, Any],
        shard: str,
        started: float,
        ended: float,
        devices: Mapping[str, Any],
        simulator: Mapping[str, Any],
    ) -> dict[str, Any]:
        """This worker's report (see module doc); ``verdict`` is added by
        :func:`evaluate`."""
        attacks: dict[str, Any] = {}
        for kind in sorted(set(self.attack_outcomes) | set(devices.get("attackers", {}))):
            outcomes = self.attack_outcomes.get(kind, Counter())
            attacks[kind] = {
                "devices": devices.get("attackers", {}).get(kind, 0),
                "attempts": sum(outcomes.values()),
                **{o: outcomes.get(o, 0) for o in (EXPECTED, FINDING, DEVIATED, INCONCLUSIVE)},
                "answers": dict(sorted(self.attack_answers.get(kind, Counter()).items())),
                "expected_answer": KINDS[kind].expected_text,
            }
        return {
            "format": REPORT_FORMAT,
            "scenario": dict(scenario),
            "shards": [shard],
            "started": round(started, 3),
            "ended": round(ended, 3),
            "devices": dict(devices),
            "histograms": {p: h.to_dict() for p, h in self.histograms.items()},
            "codes": {p: dict(sorted(c.items())) for p, c in self.codes.items()},
            "counters": dict(sorted(self.counters.items())),
            "errors": dict(sorted(self.errors.items())),
            "timeline": {str(k): v for k, v in sorted(self.timeline.items())},
            "attacks": attacks,
            "findings": list(self.findings),
            "simulator": dict(simulator),
        }


def _add_counts(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping):
            _add_counts(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        else:
            into.setdefault(key, value)


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine reports of workers or shards of one scenario: histograms are
    merged bucket by bucket (so percentiles are those of the union, within
    the histogram's 0.8 % precision), counts and timelines are added, the
    time span is the union. Raises ValueError on a foreign report."""
    items = list(reports)
    if not items:
        raise ValueError("nothing to merge")
    for r in items:
        if r.get("format") != REPORT_FORMAT:
            raise ValueError("not an acegw-sim report (format differs)")
    out: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "scenario": dict(items[0]["scenario"]),
        "shards": list(dict.fromkeys(s for r in items for s in r.get("shards", []))),
        "started": min(r["started"] for r in items),
        "ended": max(r["ended"] for r in items),
    }
    hists: dict[str, Histogram] = {}
    for r in items:
        for phase, data in r.get("histograms", {}).items():
            hists.setdefault(phase, Histogram()).merge(Histogram.from_dict(data))
    out["histograms"] = {p: h.to_dict() for p, h in hists.items()}
    for key in ("devices", "codes", "counters", "errors"):
        acc: dict[str, Any] = {}
        for r in items:
            _add_counts(acc, r.get(key, {}))
        out[key] = acc
    timeline: dict[str, list[int]] = {}
    for r in items:
        for second, row in r.get("timeline", {}).items():
            slot = timeline.setdefault(second, [0] * len(TIMELINE_COLUMNS))
            for i, v in enumerate(row):
                slot[i] += v
    out["timeline"] = dict(sorted(timeline.items(), key=lambda kv: int(kv[0])))
    attacks: dict[str, Any] = {}
    for r in items:
        for kind, tally in r.get("attacks", {}).items():
            acc = attacks.setdefault(kind, {"expected_answer": tally.get("expected_answer")})
            _add_counts(acc, {k: v for k, v in tally.items() if k != "expected_answer"})
    out["attacks"] = attacks
    out["findings"] = [f for r in items for f in r.get("findings", [])]
    workers = [w for r in items for w in r.get("simulator", {}).get("workers", [])]
    warnings = [w for r in items for w in r.get("simulator", {}).get("warnings", [])]
    out["simulator"] = {"workers": workers, "warnings": warnings}
    return out


@dataclass(frozen=True)
class Slo:
    """Service-level objectives from the command line (None: not checked)."""

    p99_ms: float | None = None
    error_rate: float | None = None
    strict_attacks: bool = False


def error_rate(report: Mapping[str, Any]) -> float:
    """Failed requests over finished requests (normal requests only; attack
    attempts are judged separately)."""
    c = report.get("counters", {})
    ok, failed = c.get("requests_ok", 0), c.get("requests_failed", 0)
    return failed / (ok + failed) if ok + failed else 0.0


def evaluate(report: dict[str, Any], slo: Slo) -> dict[str, Any]:
    """Add ``latency_ms``, ``duration``, ``throughput`` and ``verdict`` to a
    (merged) report and return it. The verdict passes only if every given SLO
    holds and no attack was accepted (and, with ``strict_attacks``, none was
    answered other than expected)."""
    hists = {p: Histogram.from_dict(d) for p, d in report.get("histograms", {}).items()}
    report["latency_ms"] = {p: h.summary() for p, h in hists.items()}
    span = max(0.0, report["ended"] - report["started"])
    report["duration"] = round(span, 3)
    ok = report.get("counters", {}).get("requests_ok", 0)
    report["throughput"] = {"requests_ok_per_s": round(ok / span, 2) if span else 0.0}
    checks: list[dict[str, Any]] = []
    req = hists.get("request", Histogram())
    if slo.p99_ms is not None:
        value = req.percentile(99) / 1000.0
        checks.append(
            {
                "name": "request p99 (ms)",
                "limit": slo.p99_ms,
                "value": value,
                "ok": req.count > 0 and value <= slo.p99_ms,
            }
        )
    if slo.error_rate is not None:
        rate = error_rate(report)
        checks.append(
            {
                "name": "request error rate",
                "limit": slo.error_rate,
                "value": round(rate, 6),
                "ok": rate <= slo.error_rate,
            }
        )
    findings = sum(t.get(FINDING, 0) for t in report.get("attacks", {}).values())
    checks.append({"name": "attacks accepted", "limit": 0, "value": findings, "ok": findings == 0})
    if slo.strict_attacks:
        deviated = sum(t.get(DEVIATED, 0) for t in report.get("attacks", {}).values())
        checks.append(
            {
                "name": "attacks answered other than expected",
                "limit": 0,
                "value": deviated,
                "ok": deviated == 0,
            }
        )
    report["verdict"] = {"pass": all(c["ok"] for c in checks), "checks": checks}
    return report
