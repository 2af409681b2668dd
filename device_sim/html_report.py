"""The HTML report: one self-contained file (inline SVG charts drawn by
matplotlib, inline CSS, no script, nothing fetched) that opens offline.

Sections, each with a stable ``id`` (tests parse them): ``verdict`` (checks
and causes), ``summary``, ``chart-throughput`` (requests/s and failures/s
over time), ``chart-latency`` (p50/p90/p99/p99.9 per interval),
``chart-codes`` (request outcomes per interval, stacked),
``chart-phases`` (handshakes, tokens, uploads and requests per second) and
``chart-phase-latency`` (percentiles per phase), ``routes`` (per-route
table), ``diagnosis`` (dominant error per phase), ``attacks`` (table and
``chart-attacks``), ``findings``, ``simulator``.

matplotlib draws the charts with its object API (``Figure``, no pyplot
state), SVG text kept as text, ids salted per chart so several SVGs can sit
in one page; every data series is an SVG group ``series-NAME`` and every
bar ``bar-NAME`` (so a reader, or a test, can find the data in a chart).
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .display import interval_histogram
from .stats import PHASES, TIMELINE_COLUMNS

__all__ = ["CHARTS", "render_html", "write_html"]

#: Chart ids, in page order.
CHARTS = (
    "chart-throughput",
    "chart-latency",
    "chart-codes",
    "chart-phases",
    "chart-phase-latency",
    "chart-attacks",
)
_COL = {name: i for i, name in enumerate(TIMELINE_COLUMNS)}
_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2}td.n{text-align:right}.pass{color:#080}.fail{color:#c00}
figure{margin:1em 0}figcaption{font-weight:bold}svg{max-width:100%;height:auto}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _svg(fig: Any, salt: str) -> str:
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    return re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)


def _figure(chart_id: str, caption: str, draw: Any) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.2))
    ax = fig.add_subplot()
    draw(ax)
    ax.grid(True, alpha=0.3)
    return (
        f'<figure id="{chart_id}"><figcaption>{_e(caption)}</figcaption>'
        f"{_svg(fig, chart_id)}</figure>"
    )


def _times(report: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    keys = sorted(int(k) for k in report.get("timeline", {}))
    start = report.get("started", keys[0] if keys else 0)
    return keys, [k - start for k in keys]


def _charts(report: Mapping[str, Any]) -> list[str]:
    timeline = report.get("timeline", {})
    keys, t = _times(report)
    iv = report.get("interval", 1) or 1

    def series(col: str) -> list[float]:
        return [timeline[str(k)][_COL[col]] / iv for k in keys]

    def empty(ax: Any, what: str) -> None:
        ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)

    def throughput(ax: Any) -> None:
        if not keys:
            return empty(ax, "requests")
        ax.plot(t, series("requests_ok"), label="requests ok/s", color="tab:green", gid="series-ok")
        ax.plot(
            t, series("requests_failed"), label="requests failed/s", color="tab:red",
            gid="series-failed",
        )  # fmt: skip
        ax.plot(
            t, series("timeouts"), label="timeouts/s", color="tab:orange", lw=0.8,
            gid="series-timeouts",
        )  # fmt: skip
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("per second")
        ax.legend(loc="upper left", fontsize="small")
        return None

    def latency(ax: Any) -> None:
        lat = report.get("timeline_latency", {})
        points = [
            (x, interval_histogram(lat[str(k)]))
            for k, x in zip(keys, t, strict=True)
            if str(k) in lat
        ]
        if not points:
            return empty(ax, "successful request")
        for q, color in (
            (50, "tab:blue"),
            (90, "tab:green"),
            (99, "tab:orange"),
            (99.9, "tab:red"),
        ):
            ax.plot(
                [x for x, _ in points],
                [h.percentile(q) / 1000 for _, h in points],
                label=f"p{q:g}",
                color=color,
                marker=".",
                gid=f"series-p{q:g}",
            )
        ax.set_yscale("log")
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("ms (log)")
        ax.legend(loc="upper left", fontsize="small")
        return None

    def codes(ax: Any) -> None:
        per = report.get("timeline_codes", {})
        names = sorted({c for v in per.values() for c in v})
        if not names or not keys:
            return empty(ax, "request outcome")
        stacks = [[per.get(str(k), {}).get(c, 0) / iv for k in keys] for c in names]
        for code, poly in zip(
            names, ax.stackplot(t, stacks, labels=names, alpha=0.85), strict=True
        ):
            poly.set_gid(f"series-{code}")
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("requests per second")
        ax.legend(loc="upper left", fontsize="small", ncol=4)
        return None

    def phases(ax: Any) -> None:
        if not keys:
            return empty(ax, "activity")
        for col, label in (
            ("handshakes", "handshakes/s"),
            ("tokens", "tokens/s"),
            ("uploads", "uploads/s"),
            ("requests_ok", "requests ok/s"),
        ):
            ax.plot(t, series(col), label=label, gid=f"series-{col}")
        connected = [timeline[str(k)][_COL["connected"]] for k in keys]
        ax.plot(t, connected, label="connected", ls=":", gid="series-connected")
        ax.set_xlabel("seconds into the run")
        ax.legend(loc="upper left", fontsize="small", ncol=5)
        return None

    def phase_latency(ax: Any) -> None:
        lat = report.get("latency_ms", {})
        present = [p for p in PHASES if lat.get(p, {}).get("count")]
        if not present:
            return empty(ax, "phase")
        width = 0.2
        for i, q in enumerate(("p50", "p90", "p99", "p99.9")):
            xs = [j + (i - 1.5) * width for j in range(len(present))]
            bars = ax.bar(xs, [lat[p][q] for p in present], width, label=q)
            for p, bar in zip(present, bars, strict=True):
                bar.set_gid(f"bar-{q}-{p}")
        ax.set_xticks(range(len(present)), present)
        ax.set_ylabel("ms")
        ax.legend(loc="upper left", fontsize="small", ncol=4)
        return None

    def attacks(ax: Any) -> None:
        data = report.get("attacks", {})
        if not data:
            return empty(ax, "attack in this scenario")
        kinds = sorted(data)
        left = [0] * len(kinds)
        for outcome, color in (
            ("expected", "tab:green"),
            ("finding", "tab:red"),
            ("deviated", "tab:orange"),
            ("inconclusive", "tab:gray"),
        ):
            values = [data[k].get(outcome, 0) for k in kinds]
            bars = ax.barh(kinds, values, left=left, label=outcome, color=color)
            for kind, bar in zip(kinds, bars, strict=True):
                bar.set_gid(f"bar-{outcome}-{kind}")
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlabel("attempts")
        ax.legend(loc="lower right", fontsize="small")
        return None

    return [
        _figure("chart-throughput", "Requests and errors per second", throughput),
        _figure("chart-latency", "Request latency percentiles per interval", latency),
        _figure("chart-codes", "Request outcomes per interval", codes),
        _figure("chart-phases", "Phases over time", phases),
        _figure("chart-phase-latency", "Latency per phase", phase_latency),
        _figure("chart-attacks", "Attack attempts by judgement", attacks),
    ]


def _table(table_id: str, head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = [f'<table id="{table_id}"><thead><tr>']
    out += [f"<th>{_e(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="n">{_e(c)}</td>' if isinstance(c, int | float) else f"<td>{_e(c)}</td>"
            for c in row
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render_html(report: Mapping[str, Any]) -> str:
    """The page for an evaluated report (see module doc)."""
    sc = report.get("scenario", {})
    verdict = report.get("verdict", {"pass": False, "checks": [], "causes": []})
    ok = verdict.get("pass")
    dev = report.get("devices", {})
    src = report.get("sources", {})
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>acegw-sim report: {_e(sc.get('name', ''))}</title><style>{_CSS}</style>",
        "</head><body>",
        f"<h1>acegw-sim report: {_e(sc.get('name', ''))}</h1>",
        '<section id="verdict"><h2>Verdict: '
        f'<span class="{"pass" if ok else "fail"}">{"PASS" if ok else "FAIL"}</span></h2>',
        _table(
            "checks",
            ("check", "value", "limit", "result"),
            [
                (c["name"], c["value"], c["limit"], "ok" if c["ok"] else "FAIL")
                for c in verdict.get("checks", [])
            ],
        ),
        '<ul id="causes">',
        *(f"<li>{_e(c)}</li>" for c in verdict.get("causes", [])),
        "</ul></section>",
        '<section id="summary"><h2>Run</h2>',
        _table(
            "summary-table",
            ("what", "value"),
            [
                ("target", sc.get("target", "")),
                ("shards", ", ".join(report.get("shards", []))),
                ("duration (s)", report.get("duration", 0)),
                ("interrupted", report.get("run", {}).get("interrupted") or "no"),
                ("devices", dev.get("simulated", 0)),
                (
                    "normal devices served",
                    f"{dev.get('normal_with_success', 0)} / {dev.get('normal', 0)}",
                ),
                ("requests ok/s", report.get("throughput", {}).get("requests_ok_per_s", 0)),
                (
                    "source addresses",
                    f"{src.get('count', '?')}: {src.get('mode', '')} "
                    f"{' '.join(src.get('ranges', [])[:6])}",
                ),
                ("timeline interval (s)", report.get("interval", 1)),
            ],
        ),
        "</section>",
        "<section id='charts'><h2>Over time</h2>",
        *_charts(report),
        "</section>",
        '<section id="per-route"><h2>Requests per route</h2>',
        "<p>Normal devices; latency of answered requests in ms.</p>",
        _table(
            "routes",
            ("route", "count", "codes", "p50", "p90", "p99", "p99.9", "max"),
            [
                (
                    route,
                    r["count"],
                    ", ".join(f"{c}: {n}" for c, n in r["codes"].items()),
                    *(r.get("latency_ms", {}).get(k, 0) for k in ("p50", "p90", "p99", "p99.9")),
                    r.get("latency_ms", {}).get("max", 0),
                )
                for route, r in report.get("routes", {}).items()
            ],
        ),
        "</section>",
        '<section id="diagnosis"><h2>Errors by phase</h2>',
        _table(
            "diagnosis-table",
            ("phase", "ok", "failed", "top error", "count", "hint"),
            [
                (
                    p,
                    d.get("ok", 0),
                    d.get("failed", 0),
                    d.get("top_error", ""),
                    d.get("count", ""),
                    d.get("hint") or "",
                )
                for p, d in report.get("diagnosis", {}).items()
            ],
        ),
        "</section>",
        '<section id="attack-results"><h2>Attacks</h2>',
        _table(
            "attacks",
            (
                "kind",
                "devices",
                "attempts",
                "expected",
                "findings",
                "other",
                "inconclusive",
                "expected answer",
                "answers",
                "not exercised",
            ),
            [
                (
                    k,
                    a.get("devices", 0),
                    a.get("attempts", 0),
                    a.get("expected", 0),
                    a.get("finding", 0),
                    a.get("deviated", 0),
                    a.get("inconclusive", 0),
                    a.get("expected_answer", ""),
                    ", ".join(f"{x} x{n}" for x, n in a.get("answers", {}).items()),
                    report.get("attacks_not_exercised", {}).get(k, ""),
                )
                for k, a in report.get("attacks", {}).items()
            ],
        ),
        _table(
            "findings",
            ("attack", "device", "route", "request", "answer", "expected"),
            [
                (
                    f["attack"],
                    f["device"],
                    f.get("route", ""),
                    f.get("request", ""),
                    f["answer"],
                    f["expected"],
                )
                for f in report.get("findings", [])
            ],
        ),
        "</section>",
        '<section id="simulator"><h2>Simulator</h2>',
        _table(
            "workers",
            ("worker", "devices", "CPU share", "RSS peak MB", "loop lag p99 ms", "saturated s"),
            [
                (
                    w["worker"],
                    w["devices"],
                    w["cpu_share"],
                    w["rss_peak_mb"],
                    w["loop_lag_p99_ms"],
                    w["saturated_seconds"],
                )
                for w in report.get("simulator", {}).get("workers", [])
            ],
        ),
        *(f"<p>warning: {_e(w)}</p>" for w in report.get("simulator", {}).get("warnings", [])),
        "</section></body></html>",
    ]
    return "\n".join(parts)


def write_html(report: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")
