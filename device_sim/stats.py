"""What a run measured: the per-worker :class:`Recorder` the devices write
into, the JSON report built from it, and merging of reports (histograms
merged, never averaged; nonsense refused by :func:`merge_problems`). The
verdict is computed by :mod:`device_sim.verdict`.

Report layout (``format`` ``acegw-sim-report/2``; ``docs/simulator.md`` has
the reference): ``scenario``, ``shards``, ``started``/``ended``, ``run``
(planned duration, whether it ran to the end or why not), ``sources``
(source addresses used), ``devices`` (with the row ranges this report
covers), ``histograms`` (one per phase), ``codes`` (CoAP response codes per
phase), ``routes`` (per ``METHOD /path``: count, codes, latency histogram),
``normal_traffic`` (ok/failed per phase), ``counters``, ``errors`` (normal
devices' errors by kind), ``interval`` and the timeline (per interval: counts,
``timeline_latency`` histograms and ``timeline_codes``), ``attacks``,
``findings``, ``not_exercised`` (why an attack kind could not run),
``simulator`` (own CPU, RSS, event-loop lag per worker) and, once evaluated,
``latency_ms``, ``throughput``, ``diagnosis`` and ``verdict``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .attacks import DEVIATED, EXPECTED, FINDING, INCONCLUSIVE, KINDS, judge
from .histogram import Histogram, bucket_index

__all__ = [
    "PHASES",
    "REPORT_FORMAT",
    "TIMELINE_COLUMNS",
    "Recorder",
    "RouteStats",
    "merge_problems",
    "merge_reports",
]

REPORT_FORMAT = "acegw-sim-report/2"
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
    "uploads",
)
_OK, _FAILED, _HANDSHAKES, _TOKENS, _CONNECTED, _RETRANSMISSIONS, _TIMEOUTS, _UPLOADS = range(8)
#: Findings kept as examples per attack kind.
MAX_FINDING_EXAMPLES = 20


class RouteStats:
    """One route's requests (normal devices): how many finished, their
    outcome (response code, or ``timeout``/``reset``/``aborted``) and the
    latency of those answered (any code)."""

    __slots__ = ("codes", "count", "hist", "route")

    def __init__(self, route: str) -> None:
        self.route = route
        self.count = 0
        self.codes: Counter[str] = Counter()
        self.hist = Histogram()

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "codes": dict(sorted(self.codes.items())),
            "histogram": self.hist.to_dict(),
        }


class _Interval:
    """One row of the timeline: counts, successful requests' latencies
    (sparse histogram buckets) and request outcomes."""

    __slots__ = ("codes", "lat", "max", "row")

    def __init__(self) -> None:
        self.row = [0] * len(TIMELINE_COLUMNS)
        self.lat: dict[int, int] = {}
        self.max = 0
        self.codes: dict[str, int] = {}


class Recorder:
    """Counters and histograms of one worker. Devices call it with their
    monotonic ``now``; ``epoch_offset`` turns that into wall-clock seconds
    for the timeline, so timelines of several workers and shards line up.
    ``interval`` is the timeline's row length in whole seconds. With
    ``keep_samples`` every normal request is also kept as a raw sample
    ``(epoch, route, outcome, latency_us or None)`` (``--samples``)."""

    def __init__(
        self, epoch_offset: float = 0.0, *, interval: int = 1, keep_samples: bool = False
    ) -> None:
        self.epoch_offset = epoch_offset
        self.interval = max(1, int(interval))
        self.histograms = {p: Histogram() for p in PHASES}
        self.codes: dict[str, Counter[str]] = {
            p: Counter() for p in ("token", "authz_info", "request")
        }
        self.counters: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.outcomes: dict[str, list[int]] = {p: [0, 0] for p in PHASES}
        self.routes: dict[str, RouteStats] = {}
        self.attack_outcomes: dict[str, Counter[str]] = {}
        self.attack_answers: dict[str, Counter[str]] = {}
        self.not_exercised: dict[str, Counter[str]] = {}
        self.findings: list[dict[str, Any]] = []
        self._finding_counts: Counter[str] = Counter()
        self.timeline: dict[int, _Interval] = {}
        self.samples: list[tuple[float, str, str, int | None]] | None = [] if keep_samples else None

    def _slot(self, now: float) -> _Interval:
        iv = self.interval
        key = int(now + self.epoch_offset) // iv * iv
        slot = self.timeline.get(key)
        if slot is None:
            slot = self.timeline[key] = _Interval()
        return slot

    def route(self, route: str) -> RouteStats:
        """The statistics of ``route`` (``METHOD /path``), created on first use."""
        stats = self.routes.get(route)
        if stats is None:
            stats = self.routes[route] = RouteStats(route)
        return stats

    # --- what devices report ----------------------------------------------------------

    def latency(self, phase: str, seconds: float) -> None:
        self.histograms[phase].record(round(seconds * 1_000_000))

    def code(self, phase: str, code: str) -> None:
        self.codes[phase][code] += 1

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def outcome(self, phase: str, ok: bool) -> None:
        """A normal device's handshake, token request or upload ended."""
        self.outcomes[phase][0 if ok else 1] += 1

    def request(
        self, route: RouteStats, now: float, outcome: str, latency: float | None, ok: bool
    ) -> None:
        """A normal device's request ended: ``outcome`` is the response code
        (or ``timeout``, ``reset``, ``aborted``), ``latency`` the seconds from
        its first transmission to the answer (None without one)."""
        route.count += 1
        route.codes[outcome] += 1
        slot = self._slot(now)
        slot.codes[outcome] = slot.codes.get(outcome, 0) + 1
        us = None
        if latency is not None:
            us = round(latency * 1_000_000)
            route.hist.record(us)
            self.codes["request"][outcome] += 1
        if ok:
            slot.row[_OK] += 1
            self.counters["requests_ok"] += 1
            self.outcomes["request"][0] += 1
            if us is not None:
                self.histograms["request"].record(us)
                b = bucket_index(us)
                slot.lat[b] = slot.lat.get(b, 0) + 1
                if us > slot.max:
                    slot.max = us
        else:
            slot.row[_FAILED] += 1
            self.counters["requests_failed"] += 1
            self.outcomes["request"][1] += 1
        if self.samples is not None:
            self.samples.append((round(now + self.epoch_offset, 6), route.route, outcome, us))

    def request_done(self, now: float, ok: bool) -> None:
        """A request counted in the timeline only (attackers' and tests' use)."""
        self._slot(now).row[_OK if ok else _FAILED] += 1
        self.counters["requests_ok" if ok else "requests_failed"] += 1

    def handshake_done(self, now: float) -> None:
        self._slot(now).row[_HANDSHAKES] += 1
        self.counters["handshakes_ok"] += 1

    def token_done(self, now: float) -> None:
        self._slot(now).row[_TOKENS] += 1
        self.counters["tokens_ok"] += 1

    def upload_done(self, now: float) -> None:
        self._slot(now).row[_UPLOADS] += 1
        self.counters["uploads_ok"] += 1

    def retransmission(self, now: float) -> None:
        self._slot(now).row[_RETRANSMISSIONS] += 1
        self.counters["retransmissions"] += 1

    def timeout(self, now: float) -> None:
        self._slot(now).row[_TIMEOUTS] += 1
        self.counters["timeouts"] += 1

    def connected(self, now: float, n: int) -> None:
        """Gauge: devices with an established session at the end of a second."""
        self._slot(now).row[_CONNECTED] = n

    def attack(
        self,
        kind: str,
        answer: str,
        device: str,
        now: float,
        *,
        route: str = "",
        request: str = "",
    ) -> str:
        """Record one attempt of ``kind`` answered with ``answer``; returns
        its judgement (:func:`device_sim.attacks.judge`). A finding keeps the
        device, the route and request it sent, and the answer it got."""
        outcome = judge(kind, answer)
        self.attack_outcomes.setdefault(kind, Counter())[outcome] += 1
        self.attack_answers.setdefault(kind, Counter())[answer] += 1
        if outcome == FINDING and self._finding_counts[kind] < MAX_FINDING_EXAMPLES:
            self._finding_counts[kind] += 1
            self.findings.append(
                {
                    "attack": kind,
                    "device": device,
                    "route": route or KINDS[kind].route,
                    "request": request,
                    "answer": answer,
                    "expected": KINDS[kind].expected_text,
                    "at": round(now + self.epoch_offset, 3),
                }
            )
        return outcome

    def cannot_attack(self, kind: str, reason: str) -> None:
        """An attacker of ``kind`` could not carry out its attack: why."""
        self.not_exercised.setdefault(kind, Counter())[reason] += 1

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
        run: Mapping[str, Any] | None = None,
        sources: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """This worker's report (see module doc); the verdict is added by
        :func:`device_sim.verdict.evaluate`."""
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
        timeline = sorted(self.timeline.items())
        return {
            "format": REPORT_FORMAT,
            "scenario": dict(scenario),
            "thresholds": dict(thresholds or scenario.get("thresholds", {})),
            "shards": [shard],
            "started": round(started, 3),
            "ended": round(ended, 3),
            "run": dict(run or {}),
            "sources": dict(sources or {}),
            "devices": dict(devices),
            "histograms": {p: h.to_dict() for p, h in self.histograms.items()},
            "codes": {p: dict(sorted(c.items())) for p, c in self.codes.items()},
            "routes": {r: s.to_dict() for r, s in sorted(self.routes.items())},
            "normal_traffic": {p: {"ok": v[0], "failed": v[1]} for p, v in self.outcomes.items()},
            "counters": dict(sorted(self.counters.items())),
            "errors": dict(sorted(self.errors.items())),
            "interval": self.interval,
            "timeline": {str(k): v.row for k, v in timeline},
            "timeline_latency": {
                str(k): {"max": v.max, "buckets": sorted([b, n] for b, n in v.lat.items())}
                for k, v in timeline
                if v.lat
            },
            "timeline_codes": {
                str(k): dict(sorted(v.codes.items())) for k, v in timeline if v.codes
            },
            "attacks": attacks,
            "findings": list(self.findings),
            "not_exercised": {k: dict(v) for k, v in sorted(self.not_exercised.items())},
            "simulator": dict(simulator),
        }


# --- merging ---------------------------------------------------------------------------


def _add_counts(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    for key, value in other.items():
        if isinstance(value, Mapping):
            _add_counts(into.setdefault(key, {}), value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            into[key] = into.get(key, 0) + value
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into.setdefault(key, value)


def _ranges(report: Mapping[str, Any]) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in report.get("devices", {}).get("rows", [])]


def merge_problems(reports: Sequence[Mapping[str, Any]], names: Sequence[str]) -> list[str]:
    """Why ``reports`` (read from ``names``) should not be merged: the same
    shard twice, overlapping device rows, different scenarios, seeds or
    timeline intervals. Empty when they fit together."""
    problems: list[str] = []
    first = reports[0]
    sc0 = first.get("scenario", {})
    for name, r in zip(names[1:], reports[1:], strict=True):
        sc = r.get("scenario", {})
        if (sc.get("name"), sc.get("fingerprint")) != (sc0.get("name"), sc0.get("fingerprint")):
            problems.append(
                f"{name} is a run of scenario {sc.get('name')!r} "
                f"({sc.get('fingerprint')}), {names[0]} of {sc0.get('name')!r} "
                f"({sc0.get('fingerprint')}): different scenarios"
            )
        if sc.get("seed") != sc0.get("seed"):
            problems.append(
                f"{name} ran with seed {sc.get('seed')}, {names[0]} with seed {sc0.get('seed')}: "
                "attack roles and request mixes differ"
            )
        if r.get("interval") != first.get("interval"):
            problems.append(f"{name} has {r.get('interval')} s timeline rows, {names[0]} other")
    seen_shards: dict[str, str] = {}
    seen_rows: list[tuple[int, int, str]] = []
    for name, r in zip(names, reports, strict=True):
        for shard in r.get("shards", []):
            if shard in seen_shards:
                problems.append(f"shard {shard} twice: in {seen_shards[shard]} and in {name}")
            else:
                seen_shards[shard] = name
        for a, b in _ranges(r):
            for c, d, other in seen_rows:
                if a <= d and c <= b:
                    problems.append(
                        f"{name} and {other} both simulated devices.csv rows "
                        f"{max(a, c) + 1}..{min(b, d) + 1}"
                    )
            seen_rows.append((a, b, name))
    missing = missing_shards(reports)
    if missing:
        problems.append(f"shards missing: {', '.join(missing)}")
    return problems


def missing_shards(reports: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ``K/N`` shards of each split ``N`` seen in ``reports`` that none
    of them ran: merging 1/3 and 2/3 alone covers only part of the fleet."""
    seen: set[tuple[int, int]] = set()
    for r in reports:
        for shard in r.get("shards", []):
            k, _, n = str(shard).partition("/")
            if k.isdigit() and n.isdigit():
                seen.add((int(k), int(n)))
    return [
        f"{k}/{n}"
        for n in sorted({n for _, n in seen})
        for k in range(1, n + 1)
        if (k, n) not in seen
    ]


def _merge_rows(rows: list[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, b in sorted(rows):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine reports of workers or shards of one scenario: histograms are
    merged bucket by bucket (so percentiles are those of the union, within
    the histogram's 0.8 % precision), counts and timelines are added, the
    time span is the union. Raises ValueError on a foreign report. The
    caller decides first whether the reports belong together
    (:func:`merge_problems`)."""
    items = list(reports)
    if not items:
        raise ValueError("nothing to merge")
    for r in items:
        if r.get("format") != REPORT_FORMAT:
            raise ValueError(
                f"not an {REPORT_FORMAT} report (format {r.get('format')!r}): "
                "reports of other simulator versions cannot be merged"
            )
    first = items[0]
    out: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "scenario": dict(first["scenario"]),
        "thresholds": dict(first.get("thresholds", {})),
        "shards": list(dict.fromkeys(s for r in items for s in r.get("shards", []))),
        "started": min(r["started"] for r in items),
        "ended": max(r["ended"] for r in items),
        "interval": first.get("interval", 1),
    }
    interrupted = [r["run"]["interrupted"] for r in items if r.get("run", {}).get("interrupted")]
    out["run"] = {
        "planned_duration": first.get("run", {}).get("planned_duration"),
        "completed": all(r.get("run", {}).get("completed", False) for r in items),
        "interrupted": "; ".join(dict.fromkeys(interrupted)) or None,
    }
    sources: dict[str, Any] = {}
    for r in items:
        s = r.get("sources", {})
        if not sources:
            sources = {k: (list(v) if isinstance(v, list) else v) for k, v in s.items()}
        elif s:
            sources["count"] = sources.get("count", 0) + s.get("count", 0)
            sources["ranges"] = list(dict.fromkeys([*sources.get("ranges", []), *s["ranges"]]))
    out["sources"] = sources
    hists: dict[str, Histogram] = {}
    for r in items:
        for phase, data in r.get("histograms", {}).items():
            hists.setdefault(phase, Histogram()).merge(Histogram.from_dict(data))
    out["histograms"] = {p: h.to_dict() for p, h in hists.items()}
    for key in ("devices", "codes", "counters", "errors", "normal_traffic", "not_exercised"):
        acc: dict[str, Any] = {}
        for r in items:
            _add_counts(acc, {k: v for k, v in r.get(key, {}).items() if k != "rows"})
        out[key] = acc
    out["devices"]["rows"] = _merge_rows([x for r in items for x in _ranges(r)])
    routes: dict[str, dict[str, Any]] = {}
    for r in items:
        for route, data in r.get("routes", {}).items():
            acc = routes.setdefault(route, {"count": 0, "codes": {}, "hist": Histogram()})
            acc["count"] += data["count"]
            _add_counts(acc["codes"], data["codes"])
            acc["hist"].merge(Histogram.from_dict(data["histogram"]))
    out["routes"] = {
        route: {
            "count": a["count"],
            "codes": dict(sorted(a["codes"].items())),
            "histogram": a["hist"].to_dict(),
        }
        for route, a in sorted(routes.items())
    }
    timeline: dict[str, list[int]] = {}
    lat: dict[str, Counter[int]] = {}
    lat_max: dict[str, int] = {}
    codes: dict[str, Counter[str]] = {}
    for r in items:
        for second, row in r.get("timeline", {}).items():
            slot = timeline.setdefault(second, [0] * len(TIMELINE_COLUMNS))
            for i, v in enumerate(row):
                slot[i] += v
        for second, data in r.get("timeline_latency", {}).items():
            c = lat.setdefault(second, Counter())
            for b, n in data["buckets"]:
                c[int(b)] += int(n)
            lat_max[second] = max(lat_max.get(second, 0), int(data["max"]))
        for second, per_code in r.get("timeline_codes", {}).items():
            codes.setdefault(second, Counter()).update(per_code)

    def order(kv: tuple[str, Any]) -> int:
        return int(kv[0])

    out["timeline"] = dict(sorted(timeline.items(), key=order))
    out["timeline_latency"] = {
        k: {"max": lat_max[k], "buckets": sorted([b, n] for b, n in v.items())}
        for k, v in sorted(lat.items(), key=order)
    }
    out["timeline_codes"] = {
        k: dict(sorted(v.items())) for k, v in sorted(codes.items(), key=order)
    }
    attacks: dict[str, Any] = {}
    for r in items:
        for kind, tally in r.get("attacks", {}).items():
            acc = attacks.setdefault(kind, {"expected_answer": tally.get("expected_answer")})
            _add_counts(acc, {k: v for k, v in tally.items() if k != "expected_answer"})
    out["attacks"] = dict(sorted(attacks.items()))
    out["findings"] = [f for r in items for f in r.get("findings", [])]
    workers = [w for r in items for w in r.get("simulator", {}).get("workers", [])]
    warnings = [w for r in items for w in r.get("simulator", {}).get("warnings", [])]
    out["simulator"] = {"workers": workers, "warnings": list(dict.fromkeys(warnings))}
    return out


def __getattr__(name: str) -> Any:
    """``Slo`` and ``evaluate`` live in :mod:`device_sim.verdict` (imported
    from here by older callers)."""
    if name in ("Slo", "Thresholds", "evaluate"):
        from . import verdict

        return getattr(verdict, name)
    raise AttributeError(name)
