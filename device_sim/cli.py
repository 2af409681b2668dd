"""``acegw-sim``: run a scenario against a gateway, or merge reports.

::

    acegw-sim [run] --devices-csv devices.csv [--scenario s.toml] [--workers N]
              [--shard K/N] [--report out.json] [--csv out.csv]
              [--slo-p99-ms MS] [--slo-error-rate R] [--strict-attacks] ...
    acegw-sim merge a.json b.json ... [--report all.json] [--csv all.csv] [--slo-...]

Exit status: 0 when the verdict passes (every SLO given holds and no attack
was accepted), 1 when it fails, 2 on a usage or configuration error (including
a device count that does not fit the open-files limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    split,
)
from .stats import Slo, evaluate, merge_reports
from .worker import Worker, open_files_needed, raise_open_files

PROG = "acegw-sim"
#: Seconds between spawning workers and their common start.
START_DELAY = 1.5


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise ScenarioError(message)


def _slo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="JSON", help="write the report as JSON")
    p.add_argument("--csv", metavar="CSV", help="write the per-second time series as CSV")
    p.add_argument("--slo-p99-ms", type=float, metavar="MS", help="request p99 must be <= MS")
    p.add_argument(
        "--slo-error-rate", type=float, metavar="R", help="failed/finished requests must be <= R"
    )
    p.add_argument(
        "--strict-attacks",
        action="store_true",
        help="also fail when an attack was refused with another code than expected",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no live progress, no final table")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="ACE gateway device simulator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run a scenario (the default command)")
    run.add_argument("--devices-csv", required=True, metavar="CSV", help="id,psk_hex,scope rows")
    run.add_argument("--scenario", metavar="TOML", help="scenario file (default: built-in)")
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
    _slo_args(run)
    run.set_defaults(func=cmd_run)
    merge = sub.add_parser("merge", help="combine reports of shards (histograms merged)")
    merge.add_argument("reports", nargs="+", metavar="REPORT.json")
    _slo_args(merge)
    merge.set_defaults(func=cmd_merge)
    return parser


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ScenarioError(f"--target {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _scenario(args: argparse.Namespace) -> Scenario:
    sc = load_scenario(args.scenario) if args.scenario else Scenario()
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


def _finish(args: argparse.Namespace, report: dict[str, Any], console: Console) -> int:
    slo = Slo(
        p99_ms=args.slo_p99_ms, error_rate=args.slo_error_rate, strict_attacks=args.strict_attacks
    )
    evaluate(report, slo)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if args.csv:
        with open(args.csv, "w", encoding="utf-8", newline="") as f:
            write_csv(report, f)
    if not args.quiet:
        print_report(report, console)
    return 0 if report["verdict"]["pass"] else 1


def cmd_merge(args: argparse.Namespace, console: Console) -> int:
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ScenarioError(f"cannot read report {path}: {exc}") from None
    try:
        merged = merge_reports(reports)
    except (ValueError, KeyError, TypeError) as exc:
        raise ScenarioError(f"cannot merge: {exc}") from None
    return _finish(args, merged, console)


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    sc = _scenario(args)
    devices = load_devices(args.devices_csv, limit=sc.devices)
    if sc.devices is not None and len(devices) < sc.devices:
        raise ScenarioError(
            f"{args.devices_csv} has {len(devices)} devices, scenario wants {sc.devices}"
        )
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
    with LiveView(console, quiet=args.quiet) as view:
        if args.workers == 1:
            reports = asyncio.run(_run_inline(sc, jobs[0], shard, view))
        else:
            reports = _run_processes(sc, jobs, shard, view)
    return _finish(args, merge_reports(reports), console)


async def _run_inline(
    sc: Scenario, job: tuple[list[DeviceSpec], list[str | None]], shard: str, view: LiveView
) -> list[dict[str, Any]]:
    worker = Worker(sc, job[0], job[1], shard=shard, progress=view.update)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, worker.stop)
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
    try:
        return [await worker.run()]
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
) -> None:
    """Entry point of a worker process: run, send snapshots and the report."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def main() -> dict[str, Any]:
        worker: Worker

        def progress(snapshot: dict[str, Any]) -> None:
            out.put(("progress", worker_id, snapshot))
            if stop.is_set():
                worker.stop()

        worker = Worker(
            sc,
            specs,
            roles,
            worker_id=worker_id,
            shard=shard,
            progress=progress,
            start_at=start_at,
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
) -> list[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    stop = ctx.Event()
    start_at = time.time() + START_DELAY + 0.3 * len(jobs)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(i, sc, specs, roles, shard, start_at, out, stop),
            name=f"acegw-sim-worker-{i}",
        )
        for i, (specs, roles) in enumerate(jobs)
    ]
    for p in procs:
        p.start()
    reports: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    deadline = start_at + sc.duration + 30.0
    try:
        while len(reports) + len(errors) < len(procs):
            try:
                kind, wid, payload = out.get(timeout=0.25)
            except queue.Empty:
                gone = time.time() > deadline or not any(p.is_alive() for p in procs)
                if gone and out.empty():
                    break
                continue
            except KeyboardInterrupt:
                stop.set()
                continue
            if kind == "progress":
                view.update(payload)
            elif kind == "report":
                reports[wid] = payload
            else:
                errors.append(f"worker {wid}: {payload}")
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    if errors or len(reports) < len(procs):
        raise RuntimeError("worker(s) failed: " + ("\n".join(errors) or "no report"))
    return [reports[i] for i in sorted(reports)]


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] not in ("run", "merge", "-h", "--help"):
        args_list.insert(0, "run")
    console = Console(file=out or sys.stdout, highlight=False)
    try:
        args = build_parser().parse_args(args_list)
        return int(args.func(args, console))
    except ScenarioError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
