"""``acegw-sim``: run a scenario against a gateway, merge reports, render a
report, list the shipped scenarios.

::

    acegw-sim [run] --devices-csv devices.csv [--scenario NAME|FILE] [--workers N]
              [--shard K/N] [--report out.json] [--csv out.csv] [--html out.html]
              [--samples raw.csv] [--slo-served R] [--slo-error-rate R]
              [--slo-p99-ms MS] [--strict-attacks] ...
    acegw-sim merge a.json b.json ... [--force] [--report all.json] [--csv] [--html] [--slo-...]
    acegw-sim report run.json [more.json ... [--force]] [--html out.html] [--csv out.csv]
    acegw-sim scenarios

Exit status: 0 when the verdict passes (every check of
:mod:`device_sim.verdict` holds), 1 when it fails (including a run cut short
by SIGINT/SIGTERM or a crashed worker), 2 on a usage or configuration error
(a target host that does not resolve, a device count that does not fit the
open-files limit, reports that do not belong together). ``report`` exits 0
once it has rendered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import json
import multiprocessing
import queue
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from .display import LiveView, print_report, write_csv
from .scenario import (
    DeviceSpec,
    Scenario,
    ScenarioError,
    assign_roles,
    load_devices,
    load_scenario,
    parse_duration,
    parse_shard,
    resolve_scenario,
    scenario_names,
    split,
    unassigned_attacks,
)
from .stats import merge_problems, merge_reports, missing_shards
from .verdict import Thresholds, evaluate
from .worker import Worker, open_files_needed, raise_open_files, resolve_target

PROG = "acegw-sim"
#: Seconds between spawning workers and their common start.
START_DELAY = 1.5


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ScenarioError(message)


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="JSON", help="write the report as JSON")
    p.add_argument("--csv", metavar="CSV", help="write the timeline (per interval) as CSV")
    p.add_argument("--html", metavar="HTML", help="write a self-contained HTML report")
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress, no final table")


def _slo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slo-served",
        type=float,
        metavar="R",
        help="share of normal devices that must be served (default 0.99)",
    )
    p.add_argument(
        "--slo-error-rate",
        type=float,
        metavar="R",
        help="failed/finished operations of normal devices must be <= R (default 0.01)",
    )
    p.add_argument("--slo-p99-ms", type=float, metavar="MS", help="request p99 must be <= MS")
    p.add_argument(
        "--strict-attacks",
        action="store_true",
        help="also fail when an attack was refused with another code than expected "
        "or an attack kind was not exercised",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="ACE gateway device simulator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a scenario (the default command)")
    run.add_argument("--devices-csv", required=True, metavar="CSV", help="id,psk_hex,scope rows")
    run.add_argument(
        "--scenario",
        metavar="NAME|TOML",
        help=f"a scenario file, or one shipped: {', '.join(scenario_names())}",
    )
    run.add_argument("--devices", type=int, help="use the first N devices")
    run.add_argument("--duration", help="e.g. 60s, 5m")
    run.add_argument("--ramp-up", help="spread device starts over this time")
    run.add_argument("--rate", type=float, help="requests per second per device")
    run.add_argument("--target", metavar="HOST:PORT", help="gateway address")
    run.add_argument("--seed", type=int)
    run.add_argument(
        "--no-ace",
        action="store_true",
        help="no /token, /authz-info or Proof option: plain CoAP requests over DTLS",
    )
    run.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    run.add_argument("--shard", default="1/1", help="K/N: run the K-th of N device slices")
    run.add_argument(
        "--samples", metavar="CSV", help="also write every normal request as a raw sample"
    )
    _output_args(run)
    _slo_args(run)
    run.set_defaults(func=cmd_run)
    merge = sub.add_parser("merge", help="combine reports of shards (histograms merged)")
    merge.add_argument("reports", nargs="+", metavar="REPORT.json")
    merge.add_argument(
        "--force", action="store_true", help="merge even reports that do not belong together"
    )
    _output_args(merge)
    _slo_args(merge)
    merge.set_defaults(func=cmd_merge)
    report = sub.add_parser("report", help="render saved (or merged) reports: HTML, CSV, text")
    report.add_argument("reports", nargs="+", metavar="REPORT.json")
    report.add_argument("--force", action="store_true", help="as for merge")
    report.add_argument("--html", metavar="HTML", help="write a self-contained HTML report")
    report.add_argument("--csv", metavar="CSV", help="write the timeline as CSV")
    report.add_argument("--quiet", "-q", action="store_true", help="no text report")
    report.set_defaults(func=cmd_report)
    names = sub.add_parser("scenarios", help="list the scenarios shipped with acegw-sim")
    names.set_defaults(func=cmd_scenarios)
    return parser


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ScenarioError(f"--target {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _scenario(args: argparse.Namespace) -> Scenario:
    sc = load_scenario(resolve_scenario(args.scenario)) if args.scenario else Scenario()
    changes: dict[str, Any] = {
        "devices": args.devices,
        "seed": args.seed,
        "duration": parse_duration(args.duration, "--duration") if args.duration else None,
        "ramp_up": parse_duration(args.ramp_up, "--ramp-up") if args.ramp_up else None,
        "auth": "none" if args.no_ace else None,
    }
    if args.rate is not None:
        sc = dataclasses.replace(sc, rate=args.rate, think_time=None)
    if args.target:
        changes["host"], changes["port"] = _target(args.target)
    return sc.with_overrides(**changes)


def _thresholds(args: argparse.Namespace, stored: dict[str, Any] | None) -> Thresholds:
    for name in ("slo_served", "slo_error_rate"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= 1:
            raise ScenarioError(f"--{name.replace('_', '-')}: a share between 0 and 1")
    return Thresholds.of(
        stored,
        served_ratio=args.slo_served,
        error_rate=args.slo_error_rate,
        p99_ms=args.slo_p99_ms,
        strict_attacks=args.strict_attacks,
    )


def _write_outputs(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if getattr(args, "report", None):
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.csv:
        with open(args.csv, "w", encoding="utf-8", newline="") as f:
            write_csv(report, f)
    if args.html:
        from .html_report import write_html  # matplotlib: only when asked

        write_html(report, args.html)


def _finish(
    args: argparse.Namespace, report: dict[str, Any], console: Console, th: Thresholds
) -> int:
    evaluate(report, th)
    _write_outputs(args, report)
    if not args.quiet:
        print_report(report, console)
    return 0 if report["verdict"]["pass"] else 1


def _read_reports(paths: Sequence[str], force: bool) -> dict[str, Any]:
    reports = []
    for path in paths:
        try:
            reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"cannot read report {path}: {exc}") from None
        if not isinstance(reports[-1], dict):
            raise ScenarioError(f"{path} is not an acegw-sim report")
    if len(reports) > 1 and not force:
        problems = merge_problems(reports, list(paths))
        if problems:
            raise ScenarioError(
                "refusing to merge: " + "; ".join(problems) + " (--force merges anyway)"
            )
    try:
        merged = merge_reports(reports)
    except (ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"cannot merge: {exc}") from None
    missing = missing_shards(reports) if len(reports) > 1 else []
    if missing:  # only with --force: the figures cover part of the fleet
        merged["run"]["completed"] = False
        merged["run"]["missing_shards"] = missing
    return merged


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    merged = _read_reports(args.reports, args.force)
    return _finish(args, merged, console, _thresholds(args, merged.get("thresholds")))


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    merged = _read_reports(args.reports, args.force)
    evaluate(merged)
    _write_outputs(args, merged)
    if not args.quiet:
        print_report(merged, console)
    return 0


def cmd_scenarios(args: argparse.Namespace, console: Console) -> int:
    from .scenario import LIBRARY

    for name in scenario_names():
        sc = load_scenario(LIBRARY / f"{name}.toml")
        console.print(f"{name:14} {sc.description}", highlight=False, markup=False)
    return 0


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    sc = _scenario(args)
    th = _thresholds(args, sc.thresholds())
    resolve_target(sc.host, sc.port)  # a one-line error before anything starts
    devices = load_devices(args.devices_csv, limit=sc.devices)
    if sc.devices is not None and len(devices) < sc.devices:
        raise ScenarioError(
            f"{args.devices_csv} has {len(devices)} devices, scenario wants {sc.devices}"
        )
    # the ramp-up over the whole device list, so every shard agrees on it
    sc = sc.with_overrides(ramp_up=sc.ramp_up_for(len(devices)))
    roles = assign_roles(len(devices), sc.attacks, sc.seed)
    k, n = parse_shard(args.shard)
    indices = split(range(len(devices)), k, n)
    if args.workers < 1:
        raise ScenarioError("--workers must be >= 1")
    parts = [split(indices, w, args.workers) for w in range(1, args.workers + 1)]
    need = max(open_files_needed(len(p), [roles[i] for i in p]) for p in parts)
    soft, hard = raise_open_files(need)
    if soft < need:
        raise ScenarioError(
            f"{max(len(p) for p in parts)} devices per worker need {need} open files, but the "
            f"limit is {soft} (hard limit {hard}); use more --workers, or raise the hard limit "
            "(ulimit -Hn) before starting"
        )
    if not args.quiet:
        console.print(
            f"open-files limit raised to {soft} (hard {hard}); {len(indices)} devices "
            f"in {args.workers} worker(s), shard {k}/{n}",
            highlight=False,
        )
    shard = f"{k}/{n}"
    jobs = [([devices[i] for i in p], [roles[i] for i in p]) for p in parts]
    keep = bool(args.samples)
    with LiveView(console, quiet=args.quiet) as view:
        if args.workers == 1:
            reports, interrupted = asyncio.run(_run_inline(sc, jobs[0], shard, view, keep))
        else:
            reports, interrupted = _run_processes(sc, jobs, shard, view, keep)
    samples = [s for r in reports for s in r.pop("samples", None) or []]
    merged = merge_reports(reports or [_empty_report(sc, shard)])
    for kind, why in unassigned_attacks(roles, sc.attacks).items():
        merged["not_exercised"].setdefault(kind, {})[why] = 1
    if interrupted:
        merged["run"]["completed"] = False
        merged["run"]["interrupted"] = interrupted
    if args.samples:
        _write_samples(args.samples, samples)
    return _finish(args, merged, console, th)


def _write_samples(path: str, samples: list[tuple[float, str, str, int | None]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["epoch", "route", "outcome", "latency_us"])
        for epoch, route, outcome, us in sorted(samples):
            w.writerow([f"{epoch:.6f}", route, outcome, "" if us is None else us])


def _empty_report(sc: Scenario, shard: str) -> dict[str, Any]:
    """The report of a run whose every worker failed before reporting."""
    from .stats import Recorder

    now = time.time()
    return Recorder().report(
        scenario=sc.summary(),
        shard=shard,
        started=now,
        ended=now,
        devices={"simulated": 0, "normal": 0, "attackers": {}, "rows": []},
        simulator={"workers": [], "warnings": []},
        run={"planned_duration": sc.duration, "completed": False, "interrupted": None},
        thresholds=sc.thresholds(),
    )


async def _run_inline(
    sc: Scenario,
    job: tuple[list[DeviceSpec], list[str | None]],
    shard: str,
    view: LiveView,
    keep: bool,
) -> tuple[list[dict[str, Any]], str | None]:
    worker = Worker(sc, job[0], job[1], shard=shard, progress=view.update, keep_samples=keep)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, worker.stop, "SIGINT")
        loop.add_signal_handler(signal.SIGTERM, worker.stop, "SIGTERM")
    try:
        return [await worker.run()], worker.stopped_by
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)


def _worker_main(
    worker_id: int,
    sc: Scenario,
    specs: list[DeviceSpec],
    roles: list[str | None],
    shard: str,
    start_at: float,
    out: Any,
    stop: Any,
    keep: bool,
) -> None:
    """Entry point of a worker process: run, send snapshots and the report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def main() -> dict[str, Any]:
        worker: Worker

        def progress(snapshot: dict[str, Any]) -> None:
            out.put(("progress", worker_id, snapshot))
            if stop.is_set():
                worker.stop("stopped by the main process")

        worker = Worker(
            sc,
            specs,
            roles,
            worker_id=worker_id,
            shard=shard,
            progress=progress,
            start_at=start_at,
            keep_samples=keep,
        )
        return await worker.run()

    try:
        out.put(("report", worker_id, asyncio.run(main())))
    except BaseException:
        out.put(("error", worker_id, traceback.format_exc()))


def _run_processes(
    sc: Scenario,
    jobs: Sequence[tuple[list[DeviceSpec], list[str | None]]],
    shard: str,
    view: LiveView,
    keep: bool,
) -> tuple[list[dict[str, Any]], str | None]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    start_at = time.time() + START_DELAY + 0.3 * len(jobs)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(i, sc, specs, roles, shard, start_at, out, stop, keep),
            name=f"acegw-sim-worker-{i}",
        )
        for i, (specs, roles) in enumerate(jobs)
    ]
    interrupted: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        interrupted.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    for p in procs:
        p.start()
    reports: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    deadline = start_at + sc.duration + 30.0
    try:
        while len(reports) + len(failures) < len(procs):
            try:
                kind, wid, payload = out.get(timeout=0.25)
            except queue.Empty:
                gone = time.time() > deadline or not any(p.is_alive() for p in procs)
                if gone and out.empty():
                    break
                continue
            if kind == "progress":
                view.update(payload)
            elif kind == "report":
                reports[wid] = payload
            else:
                last = payload.strip().splitlines()[-1] if payload.strip() else "?"
                failures.append(f"worker {wid} failed: {last}")
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for i, p in enumerate(procs):
        if i not in reports and not any(f.startswith(f"worker {i} ") for f in failures):
            failures.append(f"worker {i} crashed (exit status {p.exitcode})")
    reasons = [*dict.fromkeys(interrupted), *failures]
    return [reports[i] for i in sorted(reports)], "; ".join(reasons) or None


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    commands = ("run", "merge", "report", "scenarios", "-h", "--help")
    if args_list and args_list[0] not in commands:
        args_list.insert(0, "run")
    console = Console(file=out or sys.stdout, highlight=False)
    try:
        args = build_parser().parse_args(args_list)
        return int(args.func(args, console))
    except ScenarioError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
