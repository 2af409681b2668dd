"""Terminal output of ``acegw-sim``: live progress while running (rich) and
the final report; plus the CSV time series.

Live view (a rich ``Live`` table on a terminal; on a pipe one plain line every
:data:`PLAIN_EVERY` seconds): elapsed time, devices connected, the share of
normal devices served so far, req/s over the last second, handshakes,
tokens, retransmissions, timeouts, the top error and errors by kind, request
p50/p99 (since the start), attack findings, and per worker CPU share, RSS
and whether it is saturated.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .histogram import Histogram
from .stats import PHASES, TIMELINE_COLUMNS

__all__ = [
    "CSV_COLUMNS",
    "LiveView",
    "interval_histogram",
    "interval_rows",
    "print_report",
    "write_csv",
]

#: Latency columns of the CSV (successful requests of normal devices, ms).
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p99_9_ms", 99.9))
CSV_COLUMNS = ("t_s", "epoch", *TIMELINE_COLUMNS, *(n for n, _ in PERCENTILES), "max_ms", "codes")

PLAIN_EVERY = 5.0


class LiveView:
    """Collects worker snapshots and renders them (see module doc)."""

    def __init__(self, console: Console, *, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.snapshots: dict[int, dict[str, Any]] = {}
        self._live: Live | None = None
        self._last_ok = 0
        self._last_t = time.monotonic()
        self._rate = 0.0
        self._last_plain = 0.0

    def __enter__(self) -> LiveView:
        if not self.quiet and self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, snapshot: Mapping[str, Any]) -> None:
        self.snapshots[int(snapshot["worker"])] = dict(snapshot)
        now = time.monotonic()
        ok = sum(s["counters"].get("requests_ok", 0) for s in self.snapshots.values())
        if now - self._last_t >= 0.9:
            self._rate = (ok - self._last_ok) / (now - self._last_t)
            self._last_ok, self._last_t = ok, now
        if self._live is not None:
            self._live.update(self.render(), refresh=True)
        elif not self.quiet and now - self._last_plain >= PLAIN_EVERY:
            self._last_plain = now
            self.console.print(self.plain_line(), highlight=False, markup=False, soft_wrap=True)

    def _totals(self) -> tuple[dict[str, int], dict[str, int], Histogram]:
        counters: dict[str, int] = {}
        errors: dict[str, int] = {}
        hist = Histogram()
        for s in self.snapshots.values():
            for k, v in s["counters"].items():
                counters[k] = counters.get(k, 0) + v
            for k, v in s["errors"].items():
                errors[k] = errors.get(k, 0) + v
            hist.merge(Histogram.from_dict(s["request_histogram"]))
        return counters, errors, hist

    def served(self) -> str:
        """``served/normal (share)`` of the normal devices so far."""
        snaps = self.snapshots.values()
        normal = sum(s.get("normal", 0) for s in snaps)
        served = sum(s.get("served", 0) for s in snaps)
        share = served / normal if normal else 0.0
        return f"{served}/{normal} ({share:.0%})"

    @staticmethod
    def top_error(errors: Mapping[str, int]) -> str:
        if not errors:
            return "none"
        kind, n = max(errors.items(), key=lambda kv: kv[1])
        return f"{kind} x{n}"

    def plain_line(self) -> str:
        counters, errors, hist = self._totals()
        snaps = self.snapshots.values()
        elapsed = max((s["elapsed"] for s in snaps), default=0.0)
        return (
            f"t={elapsed:.0f}s connected={sum(s['connected'] for s in snaps)}"
            f"/{sum(s['devices'] for s in snaps)} served={self.served()} "
            f"req/s={self._rate:.0f} "
            f"ok={counters.get('requests_ok', 0)} errors={sum(errors.values())} "
            f"p50={hist.percentile(50) / 1000:.1f}ms p99={hist.percentile(99) / 1000:.1f}ms "
            f"findings={sum(s['findings'] for s in snaps)} top_error={self.top_error(errors)}"
        )

    def render(self) -> Group:
        counters, errors, hist = self._totals()
        snaps = list(self.snapshots.values())
        elapsed = max((s["elapsed"] for s in snaps), default=0.0)
        duration = max((s["duration"] for s in snaps), default=0.0)
        t = Table(title=f"acegw-sim  {elapsed:.0f}/{duration:.0f} s", show_header=False)
        t.add_column(style="bold")
        t.add_column(justify="right")
        t.add_row(
            "devices connected",
            f"{sum(s['connected'] for s in snaps)} / {sum(s['devices'] for s in snaps)}",
        )
        t.add_row("normal devices served", self.served())
        t.add_row("requests/s (last s)", f"{self._rate:.1f}")
        t.add_row(
            "requests ok / failed",
            f"{counters.get('requests_ok', 0)} / {counters.get('requests_failed', 0)}",
        )
        t.add_row(
            "handshakes ok / failed",
            f"{counters.get('handshakes_ok', 0)} / {counters.get('handshakes_failed', 0)}",
        )
        t.add_row("tokens", str(counters.get("tokens_ok", 0)))
        t.add_row(
            "retransmissions / timeouts",
            f"{counters.get('retransmissions', 0)} / {counters.get('timeouts', 0)}",
        )
        t.add_row(
            "request p50 / p99",
            f"{hist.percentile(50) / 1000:.2f} / {hist.percentile(99) / 1000:.2f} ms",
        )
        findings = sum(s["findings"] for s in snaps)
        t.add_row("attack findings", Text(str(findings), style="red" if findings else "green"))
        t.add_row("top error", Text(self.top_error(errors), style="red" if errors else "green"))
        parts: list[Any] = [t]
        if errors:
            e = Table(title="errors by kind")
            e.add_column("kind")
            e.add_column("count", justify="right")
            for kind, n in sorted(errors.items(), key=lambda kv: -kv[1])[:8]:
                e.add_row(kind, str(n))
            parts.append(e)
        w = Table(title="workers")
        for col in ("worker", "devices", "CPU", "RSS MB", "state"):
            w.add_column(col, justify="right")
        for s in sorted(snaps, key=lambda s: s["worker"]):
            state = Text("SATURATED", style="bold red") if s["saturated"] else Text("ok")
            w.add_row(
                str(s["worker"]), str(s["devices"]), f"{s['cpu']:.0%}", f"{s['rss_mb']:.0f}", state
            )
        parts.append(w)
        return Group(*parts)


def interval_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    """The timeline, one row per interval: ``CSV_COLUMNS`` (percentiles in
    ms from the interval's histogram of successful requests; codes as
    ``code:count`` pairs separated by spaces)."""
    timeline = report.get("timeline", {})
    if not timeline:
        return []
    seconds = sorted(int(k) for k in timeline)
    start = int(report.get("started", seconds[0]))
    lat = report.get("timeline_latency", {})
    codes = report.get("timeline_codes", {})
    rows = []
    for sec in seconds:
        h = interval_histogram(lat.get(str(sec)))
        pct = [h.percentile(q) / 1000 if h.count else "" for _, q in PERCENTILES]
        top = h.max / 1000 if h.count else ""
        text = " ".join(f"{c}:{n}" for c, n in sorted(codes.get(str(sec), {}).items()))
        rows.append([sec - start, sec, *timeline[str(sec)], *pct, top, text])
    return rows


def interval_histogram(data: Mapping[str, Any] | None) -> Histogram:
    """A timeline interval's latency histogram from its sparse JSON form."""
    h = Histogram()
    if data:
        for b, n in data["buckets"]:
            h.record_bucket(int(b), int(n))
        h.max = int(data["max"])
    return h


def _timeline_rows(report: Mapping[str, Any]) -> list[list[Any]]:
    return interval_rows(report)


def write_csv(report: Mapping[str, Any], out: IO[str]) -> None:
    """The timeline, one row per interval (``report["interval"]`` seconds):
    ``t_s, epoch``, the counts of ``TIMELINE_COLUMNS``, request latency
    percentiles ``p50_ms, p90_ms, p99_ms, p99_9_ms, max_ms`` and ``codes``."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    w.writerows(interval_rows(report))


def _bar(value: float, top: float, width: int = 40) -> str:
    n = 0 if top <= 0 else round(width * value / top)
    return "#" * n


def print_report(report: Mapping[str, Any], console: Console) -> None:
    """The final report: throughput over time, latency per phase, CoAP codes,
    counters, errors, attack findings, simulator resources, verdict."""
    dev = report.get("devices", {})
    console.rule(f"acegw-sim report: {report.get('scenario', {}).get('name', '')}")
    console.print(
        f"shards {', '.join(report.get('shards', []))}; {report.get('duration', 0):.1f} s; "
        f"{dev.get('simulated', 0)} devices ({dev.get('normal', 0)} normal: "
        f"{dev.get('normal_connected', 0)} connected, {dev.get('normal_with_token', 0)} "
        f"with a token, {dev.get('normal_with_success', 0)} with a successful request); "
        f"{report.get('throughput', {}).get('requests_ok_per_s', 0)} requests ok/s",
        highlight=False,
    )
    src = report.get("sources", {})
    if src:
        console.print(
            f"source addresses: {src.get('count', 0)}, {src.get('mode', '')}: "
            f"{', '.join(src.get('ranges', [])[:4])}"
            + (" ..." if len(src.get("ranges", [])) > 4 else ""),
            highlight=False,
        )
    interval = report.get("interval", 1) or 1
    rows = _timeline_rows(report)
    if rows:
        buckets = max(1, len(rows) // 20 + (1 if len(rows) % 20 else 0))
        top = max(
            sum(r[2] for r in rows[i : i + buckets]) / buckets / interval
            for i in range(0, len(rows), buckets)
        )
        t = Table(title="throughput over time (requests ok per second)")
        t.add_column("t (s)", justify="right")
        t.add_column("req/s", justify="right")
        t.add_column("")
        for i in range(0, len(rows), buckets):
            chunk = rows[i : i + buckets]
            rate = sum(r[2] for r in chunk) / len(chunk) / interval
            t.add_row(f"{chunk[0][0]}", f"{rate:.1f}", _bar(rate, top))
        console.print(t)
    lat = report.get("latency_ms", {})
    t = Table(title="latency (ms)")
    for col in ("phase", "count", "p50", "p90", "p99", "p99.9", "max"):
        t.add_column(col, justify="right")
    for phase in PHASES:
        s = lat.get(phase)
        if s:
            t.add_row(
                phase,
                str(s["count"]),
                *(f"{s[k]:.2f}" for k in ("p50", "p90", "p99", "p99.9", "max")),
            )
    console.print(t)
    routes = report.get("routes", {})
    if routes:
        t = Table(title="requests per route (normal devices; latency of answered requests, ms)")
        for col in ("route", "count", "codes", "p50", "p90", "p99", "p99.9"):
            t.add_column(col, justify="left" if col in ("route", "codes") else "right")
        for route, r in routes.items():
            lat_r = r.get("latency_ms", {})
            t.add_row(
                route,
                str(r["count"]),
                ", ".join(f"{c}: {n}" for c, n in r["codes"].items()),
                *(f"{lat_r.get(k, 0):.2f}" for k in ("p50", "p90", "p99", "p99.9")),
            )
        console.print(t)
    t = Table(title="CoAP response codes")
    t.add_column("phase")
    t.add_column("codes")
    for phase, codes in report.get("codes", {}).items():
        t.add_row(phase, ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    console.print(t)
    c = report.get("counters", {})
    console.print(
        "retransmissions {}, timeouts {}, Echo challenges {}, renewals {}, "
        "sessions closed by the gateway {}".format(
            c.get("retransmissions", 0),
            c.get("timeouts", 0),
            c.get("echo_challenges", 0),
            c.get("renewals", 0),
            c.get("sessions_closed_by_gateway", 0),
        ),
        highlight=False,
    )
    if report.get("scenario", {}).get("observe_trl"):
        answers = ", ".join(
            f"{k.rsplit('_', 1)[1]} x{v}"
            for k, v in sorted(c.items())
            if k.startswith("trl_revoked_token_answer_")
        )
        console.print(
            f"revocation list: {c.get('trl_observations', 0)} observations, "
            f"{c.get('trl_notifications', 0)} notifications, "
            f"{c.get('trl_revocations_seen', 0)} revocations seen, "
            f"{c.get('trl_retokens', 0)} new tokens after one, "
            f"{c.get('trl_revoked_token_requests', 0)} requests with a revoked token "
            f"({answers or 'none'})",
            highlight=False,
        )
    errors = report.get("errors", {})
    if errors:
        console.print(
            "errors: " + ", ".join(f"{k} {v}" for k, v in sorted(errors.items())),
            highlight=False,
            markup=False,
        )
    attacks = report.get("attacks", {})
    if attacks:
        t = Table(title="attacks and faults (attempts judged)")
        for col in ("kind", "dev", "tries", "as expected", "FINDINGS", "other", "n/a"):
            t.add_column(col, justify="left" if col == "kind" else "right", no_wrap=True)
        for kind, a in sorted(attacks.items()):
            t.add_row(
                kind,
                str(a.get("devices", 0)),
                str(a.get("attempts", 0)),
                str(a.get("expected", 0)),
                Text(str(a.get("finding", 0)), style="bold red" if a.get("finding") else ""),
                str(a.get("deviated", 0)),
                str(a.get("inconclusive", 0)),
            )
        console.print(t)
        for kind, a in sorted(attacks.items()):
            answers = ", ".join(f"{k} x{v}" for k, v in a.get("answers", {}).items())
            console.print(
                f"  {kind}: expected {a.get('expected_answer', '')}; got {answers or 'nothing'}",
                highlight=False,
                markup=False,
            )
    for kind, why in sorted(report.get("attacks_not_exercised", {}).items()):
        console.print(f"[yellow]not exercised:[/] {kind}: {escape(why)}", highlight=False)
    for f in report.get("findings", [])[:10]:
        request = f" ({f['request']})" if f.get("request") else ""
        text = (
            f"{f['attack']}: device {f['device']}, {f.get('route', '')}{request}: "
            f"got {f['answer']} (expected {f['expected']})"
        )
        console.print(f"[bold red]FINDING[/] {escape(text)}", highlight=False)
    sim = report.get("simulator", {})
    for w in sim.get("workers", []):
        console.print(
            f"worker {w['worker']} (shard {w['shard']}): {w['devices']} devices, "
            f"CPU {w['cpu_seconds']:.1f} s ({w['cpu_share']:.0%} of a core), "
            f"RSS peak {w['rss_peak_mb']:.0f} MB, loop lag p99 {w['loop_lag_p99_ms']:.1f} ms, "
            f"saturated {w['saturated_seconds']} s",
            highlight=False,
        )
    for warning in sim.get("warnings", []):
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    verdict = report.get("verdict")
    if verdict:
        for check in verdict["checks"]:
            mark = "[green]ok[/]" if check["ok"] else "[bold red]FAIL[/]"
            console.print(
                f"{mark} {check['name']}: {check['value']} (limit {check['limit']})",
                highlight=False,
            )
        if verdict["pass"]:
            console.print("[bold green]PASS[/]")
        else:
            console.print("[bold red]FAIL[/]")
            for cause in verdict.get("causes", []):
                console.print(f"  cause: {cause}", highlight=False, markup=False)
