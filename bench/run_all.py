"""``make bench``: every benchmark of ``bench/`` in one go, one merged report.

    python -m bench.run_all [--tiny] [--only a,b] [--out DIR] [--json FILE]

Runs each script below as ``python -m bench.<name> [--tiny] --json <tmp>`` in
its own process, one after the other (they all load the same 2 cores, so
never in parallel), shows its output as it comes, and keeps its last
``RESULT`` line and its JSON. A script whose module does not exist yet is
listed as ``not available: <reason>``, never dropped; one that fails, times
out or prints no ``RESULT`` line is listed with the reason.

Writes ``<out>/<date>.json`` (every script's JSON under ``scripts``, the
machine, the load average before and after, the headline ratios) and
``<out>/<date>.md`` (the tables of BENCHMARKS.md); ``--tiny`` writes
``<date>-tiny.*`` instead (not committed); ``--json FILE`` writes the JSON to
FILE and the Markdown next to it instead. The last line printed is
``RESULT`` followed by every headline ratio (``n/a`` where a script did not
give it).

Exit status: 0 when every available script ended with a RESULT line (and,
with ``--tiny``, exit status 0), else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import util
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Script:
    """One benchmark module and what the driver takes from it."""

    name: str
    #: What it measures, for the Markdown table.
    what: str
    #: Keys of its RESULT line that are headline ratios (ours / peer, or
    #: with / without), in the order of the final RESULT line.
    ratios: tuple[str, ...]
    #: Seconds the full run may take before it is stopped (tiny: TINY_LIMIT).
    limit: float
    #: Extra arguments of a full run (to stay within the 15-minute budget).
    full_args: tuple[str, ...] = ()
    #: Run only in tiny mode (the soak has its own target, ``make soak``).
    tiny_only: str = ""


SCRIPTS: tuple[Script, ...] = (
    Script(
        "tokens",
        "token and proof verification, ours vs pycose / python-cwt / bare primitive",
        ("vs_pycose", "vs_cwt"),
        limit=180,
    ),
    Script(
        "gateway_dtls",
        "DTLS-PSK CoAP server: ours vs aiocoap tinydtls_server vs libcoap (server CPU/request)",
        ("vs_aiocoap", "vs_libcoap"),
        limit=360,
    ),
    Script(
        "authz",
        "authorization cost: Mac0 / ES256 proofs vs no authorization (throughput ratio)",
        ("authz_mac0_ratio", "authz_es256_ratio"),
        limit=180,
    ),
    Script(
        "proxy",
        "proxied request (DTLS + Mac0 + HTTP upstream) vs trivial resource; p99 at half peak",
        ("proxy_ratio", "proxied_vs_aiocoap_bare"),
        limit=180,
    ),
    Script(
        "scale",
        "worker processes (SO_REUSEPORT): 2 workers vs 1",
        ("workers2_speedup", "cpu_per_req_ratio"),
        limit=240,
    ),
    Script(
        "sim",
        "device simulator: one worker's request loop vs the raw DtlsProbe loop (req/s)",
        ("vs_raw",),
        limit=240,
    ),
    Script(
        "fleet",
        "fleet on PostgreSQL behind nginx stream: 2 instances vs 1 (req/s); failover, revocation",
        ("fleet_speedup",),
        limit=420,
    ),
    Script(
        "backends",
        "registry backend off the request path: authz and proxy ratios, PostgreSQL vs SQLite",
        ("backends_authz_mac0_pg_vs_sqlite", "backends_proxy_ratio_pg_vs_sqlite"),
        limit=900,
    ),
    Script(
        "soak",
        "soak: many devices at a low steady rate, gateway memory / errors / p99 over time",
        (),
        limit=0,
        tiny_only="runs only with --tiny here; the real soak is `make soak DURATION=...`",
    ),
)
#: Seconds any script may take in tiny mode.
TINY_LIMIT = 180.0
#: Last lines of a script's output kept for the Markdown report.
OUTPUT_LINES = 40


@dataclass
class Outcome:
    """What one script gave."""

    script: Script
    status: str = "not run"
    reason: str = ""
    seconds: float = 0.0
    exit_code: int | None = None
    result_line: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    output: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.status in ("ok", "failed")


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else None


def _clean(value: Any) -> Any:
    """Strict JSON: NaN and infinities (which json.loads accepts) -> null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def parse_result(line: str) -> dict[str, Any]:
    """``RESULT a=1 b=0.5`` -> ``{"a": 1.0, "b": 0.5}`` (NaN -> None)."""
    items = line.split()[1:]
    return {k: _number(v) for k, v in (item.split("=", 1) for item in items if "=" in item)}


def machine() -> dict[str, Any]:
    """The machine, as BENCHMARKS.md describes it."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _git_commit() -> str:
    """The checked-out commit (read only), ``+dirty`` when files differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _stop_group(proc: subprocess.Popen[str]) -> None:
    """End the script we started and whatever it started (its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(5)
            return
        except subprocess.TimeoutExpired:
            continue


def run_script(script: Script, tiny: bool, workdir: Path) -> Outcome:
    """Run one script, echoing its output; never raises for the script's
    own failures."""
    out = Outcome(script)
    if tiny is False and script.tiny_only:
        out.status, out.reason = "not run", script.tiny_only
        return out
    if util.find_spec(f"bench.{script.name}") is None:
        out.status = "not available"
        out.reason = f"bench/{script.name}.py does not exist yet"
        return out
    json_path = workdir / f"{script.name}.json"
    args = ["--tiny"] if tiny else list(script.full_args)
    cmd = [sys.executable, "-m", f"bench.{script.name}", *args, "--json", str(json_path)]
    limit = TINY_LIMIT if tiny else script.limit
    label = " ".join([f"bench.{script.name}", *args])
    print(f"\n=== {label} (limit {limit:.0f} s)", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    timed_out = False

    def on_timeout(_signum: int, _frame: object) -> None:
        nonlocal timed_out
        timed_out = True
        _stop_group(proc)

    previous = signal.signal(signal.SIGALRM, on_timeout)
    signal.setitimer(signal.ITIMER_REAL, limit)
    last_result = ""
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.startswith("RESULT "):
                last_result = line.strip()
            tail = [*tail[-(OUTPUT_LINES - 1) :], line.rstrip()]
        proc.wait()
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    out.seconds = round(time.monotonic() - started, 1)
    out.exit_code = proc.returncode
    out.result_line = last_result
    out.output = [line for line in tail if line.strip()]
    out.result = parse_result(last_result) if last_result else {}
    if json_path.exists():
        try:
            out.data = _clean(json.loads(json_path.read_text()))
        except ValueError:
            out.data = {"unreadable_json": json_path.read_text()[:2000]}
    if timed_out:
        out.status, out.reason = "failed", f"stopped after {limit:.0f} s"
    elif not last_result:
        out.status, out.reason = "failed", f"no RESULT line (exit {proc.returncode})"
    elif proc.returncode != 0:
        out.status = "failed" if tiny else "ok"
        out.reason = f"exit {proc.returncode}"
    else:
        out.status = "ok"
    if out.status == "failed":
        out.data = {**(out.data if isinstance(out.data, dict) else {}), "output_tail": out.output}
    return out


def headline(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Every headline ratio, ``"n/a"`` where its script did not give it."""
    ratios: dict[str, Any] = {}
    for o in outcomes:
        for key in o.script.ratios:
            value = o.result.get(key)
            ratios[key] = value if isinstance(value, float) else "n/a"
    return ratios


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:.0f}"
        return f"{value:.2f}" if value >= 0.01 else f"{value:.3g}"
    return "n/a" if value is None else str(value)


def result_line(ratios: dict[str, Any]) -> str:
    return "RESULT " + " ".join(f"{k}={_fmt(v)}" for k, v in ratios.items())


def markdown(report: dict[str, Any], outcomes: Sequence[Outcome]) -> str:
    """The report as Markdown tables (pasted into BENCHMARKS.md)."""
    m = report["machine"]
    lines = [
        f"# Benchmarks {report['date']} ({report['mode']})",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}; commit {report['commit']}; load average before "
        f"{report['load_before']}, after {report['load_after']}. Absolute numbers are "
        "this machine's, measured while it was shared; compare ratios.",
        "",
        "| script | status | seconds | RESULT |",
        "|---|---|---:|---|",
    ]
    for o in outcomes:
        status = o.status + (f": {o.reason}" if o.reason else "")
        values = " ".join(f"{k}={_fmt(v)}" for k, v in o.result.items()) or "-"
        lines.append(f"| bench.{o.script.name} | {status} | {o.seconds:.0f} | {values} |")
    lines += ["", "| headline ratio | value | script: what |", "|---|---:|---|"]
    for o in outcomes:
        for key in o.script.ratios:
            value = report["headline"][key]
            lines.append(f"| {key} | {_fmt(value)} | {o.script.name}: {o.script.what} |")
    lines += ["", "```", report["result"], "```"]
    for o in outcomes:
        if o.output:
            lines += ["", f"## bench.{o.script.name}", "", "```", *o.output, "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="every script in its tiny mode")
    parser.add_argument("--only", help="comma-separated subset, e.g. authz,proxy")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--json", type=Path, help="write the merged JSON here (and .md beside)")
    args = parser.parse_args(argv)
    names = [s.name for s in SCRIPTS]
    chosen = names if not args.only else args.only.split(",")
    unknown = set(chosen) - set(names)
    if unknown:
        parser.error(f"unknown scripts {sorted(unknown)}; known: {', '.join(names)}")
    mode = "tiny" if args.tiny else "full"
    now = dt.datetime.now().astimezone()
    load_before = [round(x, 2) for x in os.getloadavg()]
    info = machine()
    print(
        f"bench.run_all ({mode}): {', '.join(chosen)}; {info['nproc']} CPUs "
        f"{info['cpu_model']}, Python {info['python']}; load average {load_before}"
    )
    if load_before[0] > 0.5 and not args.tiny:
        print("note: the machine is not idle; absolute numbers will be lower than on a quiet one")
    started = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="acegw-bench-") as tmp:
        for script in SCRIPTS:
            if script.name in chosen:
                outcomes.append(run_script(script, args.tiny, Path(tmp)))
    ratios = headline(outcomes)
    report: dict[str, Any] = {
        "format": "acegw-bench/1",
        "date": now.isoformat(timespec="seconds"),
        "mode": mode,
        "commit": _git_commit(),
        "machine": info,
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.monotonic() - started, 1),
        "headline": ratios,
        "result": result_line(ratios),
        "scripts": {
            o.script.name: {
                "status": o.status,
                "reason": o.reason,
                "seconds": o.seconds,
                "exit": o.exit_code,
                "result_line": o.result_line,
                "result": o.result,
                "data": o.data,
            }
            for o in outcomes
        },
    }
    if args.json:
        json_path = args.json
    else:
        stem = now.strftime("%Y-%m-%d") + ("-tiny" if args.tiny else "")
        json_path = args.out / f"{stem}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    md_path = json_path.with_suffix(".md")
    md_path.write_text(markdown(report, outcomes))
    print(f"\n=== summary ({report['seconds']:.0f} s); written: {json_path}, {md_path}")
    for o in outcomes:
        print(f"  bench.{o.script.name:13} {o.status:14} {o.seconds:6.0f} s  {o.reason}")
    print(report["result"])
    bad = [o for o in outcomes if o.status == "failed"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
