"""The registry backend off the request path: ``bench.authz`` and
``bench.proxy`` run with the SQLite registry and with a PostgreSQL one,
alternating, in one run.

    python -m bench.backends [--tiny] [--pairs N] [--authz-rounds N]
                             [--proxy-rounds N] [--json FILE]

The request and handshake path read the registry from memory only, so the
two backends should give the same ratios within noise. Each pair runs both
benchmarks once per backend, the order alternating between pairs (SQLite
first, then PostgreSQL first, ...), so that a drift of the shared machine's
speed falls on both sides. PostgreSQL is a throwaway cluster
(:func:`bench._fleet.running_cluster`), a new database per run, reached
through ``ACEGW_REGISTRY_URL`` (``acegw init`` and the gateway process both
take it); after each PostgreSQL run the database must hold the benchmark's
devices, or the run counts as failed (the figure would otherwise compare
SQLite with SQLite).

Per pair, the PostgreSQL figure over the SQLite figure of ``authz_mac0_ratio``
and ``proxy_ratio``; the medians over pairs are the result (1.0 = no
difference), with the spread of each backend's own runs next to them, which
says how large a difference the machine can show by itself.

Last line: ``RESULT backends_authz_mac0_pg_vs_sqlite=<x>
backends_proxy_ratio_pg_vs_sqlite=<x>``; exit status 1 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._fleet import running_cluster

BACKENDS = ("sqlite", "postgresql")


class BackendBenchError(RuntimeError):
    """A run failed or did not use the backend it was meant to; the message says which."""


def _run(module: str, args: list[str], url: str | None, out: Path) -> dict[str, Any]:
    """``python -m bench.<module> ARGS --json OUT`` with the registry ``url``
    (None: SQLite); its JSON."""
    env = dict(os.environ)
    env.pop("ACEGW_REGISTRY_URL", None)
    if url is not None:
        env["ACEGW_REGISTRY_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0 or not out.exists():
        raise BackendBenchError(
            f"bench.{module} ({'PostgreSQL' if url else 'SQLite'}) exited {done.returncode}:\n"
            + (done.stdout + done.stderr)[-1500:]
        )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _clients_in(url: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM clients").fetchone()
    return int(row[0]) if row else 0


def _figure(value: Any, what: str, tag: str) -> float:
    """A run's figure as a positive number; a NaN, zero or missing one fails
    the run (a pair with it would silently drop out of the median)."""
    figure = float("nan") if value is None else float(value)
    if not (math.isfinite(figure) and figure > 0):
        raise BackendBenchError(f"{what} not measured in run {tag}: {value!r}")
    return figure


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if values else "-"


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """The pairs; figures per backend and per pair."""
    authz_args = ["--rounds", str(args.authz_rounds)] + (["--tiny"] if args.tiny else [])
    proxy_args = ["--rounds", str(args.proxy_rounds), "--latency-seconds", "2"] + (
        ["--tiny"] if args.tiny else []
    )
    figures: dict[str, dict[str, list[float]]] = {
        b: {"authz_mac0_ratio": [], "proxy_ratio": []} for b in BACKENDS
    }
    with running_cluster() as cluster:
        for pair in range(args.pairs):
            order = BACKENDS if pair % 2 == 0 else BACKENDS[::-1]
            for backend in order:
                url = cluster.create_database() if backend == "postgresql" else None
                tag = f"{pair}-{backend}"
                authz = _run("authz", authz_args, url, work / f"authz-{tag}.json")
                if url is not None and _clients_in(url) == 0:
                    raise BackendBenchError("bench.authz left no clients in PostgreSQL")
                url = cluster.create_database() if backend == "postgresql" else None
                proxy = _run("proxy", proxy_args, url, work / f"proxy-{tag}.json")
                if url is not None and _clients_in(url) == 0:
                    raise BackendBenchError("bench.proxy left no clients in PostgreSQL")
                mac0 = _figure(authz["modes"]["mac0"]["ratio"], "bench.authz mac0 ratio", tag)
                ratio = _figure(proxy["proxy_ratio"], "bench.proxy proxy_ratio", tag)
                figures[backend]["authz_mac0_ratio"].append(mac0)
                figures[backend]["proxy_ratio"].append(ratio)
                print(
                    f"  pair {pair + 1} {backend:10} authz_mac0_ratio={mac0:.2f} "
                    f"proxy_ratio={ratio:.2f}",
                    flush=True,
                )
    pairs: dict[str, list[float]] = {}
    for key in ("authz_mac0_ratio", "proxy_ratio"):
        pairs[key] = [
            pg / lite
            for pg, lite in zip(figures["postgresql"][key], figures["sqlite"][key], strict=True)
        ]
    return {"figures": figures, "pg_vs_sqlite": pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backends", description=__doc__)
    parser.add_argument("--tiny", action="store_true", help="a quick run (CI smoke)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--authz-rounds", type=int, default=24)
    parser.add_argument("--proxy-rounds", type=int, default=8)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if args.tiny:
        args.pairs, args.authz_rounds, args.proxy_rounds = 1, 1, 2
    t0 = time.monotonic()
    print(
        f"bench.backends: {args.pairs} pairs of bench.authz (--rounds {args.authz_rounds}) "
        f"and bench.proxy (--rounds {args.proxy_rounds}), SQLite vs PostgreSQL",
        flush=True,
    )
    error = ""
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="acegw-backends-") as tmp:
        try:
            result = measure(args, Path(tmp))
        except (BackendBenchError, AssertionError, OSError, subprocess.TimeoutExpired) as exc:
            error = f"{type(exc).__name__}: {exc}"
    out: dict[str, float] = {}
    if result:
        print()
        print(f"{'':18}{'SQLite (spread)':>20}{'PostgreSQL (spread)':>22}{'PG/SQLite':>11}")
        for key in ("authz_mac0_ratio", "proxy_ratio"):
            lite = result["figures"]["sqlite"][key]
            pg = result["figures"]["postgresql"][key]
            ratio = statistics.median(result["pg_vs_sqlite"][key] or [math.nan])
            out[key] = ratio
            cells = [f"{statistics.median(v):.2f} ({_spread(v)})" for v in (lite, pg)]
            print(f"{key:18}{cells[0]:>20}{cells[1]:>22}{ratio:11.2f}")
    if error:
        print(f"FAILED: {error}")
    print(f"({time.monotonic() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "error": error}, indent=2) + "\n")

    def fmt(v: float | None) -> str:
        return "nan" if v is None or v != v else f"{v:.2f}"

    print(
        f"RESULT backends_authz_mac0_pg_vs_sqlite={fmt(out.get('authz_mac0_ratio'))} "
        f"backends_proxy_ratio_pg_vs_sqlite={fmt(out.get('proxy_ratio'))}"
    )
    return 1 if error else 0


if __name__ == "__main__":
    raise SystemExit(main())
