"""Prometheus metrics of the gateway, in the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/), written here
rather than with ``prometheus_client`` so that a supervisor can merge the
snapshots of several worker processes into one scrape.

Two kinds of value:

* pushed: :class:`Counter`, :class:`Gauge` and :class:`Histogram` objects the
  hot path updates (requests by route and code, proofs, upstream latency);
* pulled: numbers other modules already count (DTLS server stats, the
  authorizer's decisions, lockout bans) turned into :class:`Family` objects at
  scrape time.

Every sample of a worker carries a ``worker`` label. Label values are only
ever names from a closed set (route prefixes from the configuration, CoAP
codes, reasons defined in code): never an identity, a key id, a secret or a
token.
"""

from __future__ import annotations

import bisect
import math
import os
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["counter", "gauge", "histogram"]
#: The Content-Type of the text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upstream latency buckets in seconds (loopback upstreams answer in < 1 ms,
#: remote ones in tens of ms; the route timeout caps the top).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

Labels = dict[str, str]


@dataclass
class Family:
    """One metric family: its samples share the name, HELP and TYPE."""

    name: str
    kind: Kind
    help: str
    #: ``(sample name, labels, value)``; sample names add ``_bucket`` etc.
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> None:
        self.samples.append((self.name + suffix, dict(labels or {}), float(value)))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "help": self.help, "samples": self.samples}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Family:
        samples = [
            (str(n), {str(k): str(v) for k, v in lb.items()}, float(x)) for n, lb, x in d["samples"]
        ]
        return cls(str(d["name"]), d["kind"], str(d["help"]), samples)


class Counter:
    """A counter with fixed label names; values keyed by the label tuple."""

    __slots__ = ("help", "labelnames", "name", "values")

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0.0)

    def family(self, const: Labels) -> Family:
        f = Family(self.name, "counter", self.help)
        values = self.values if self.values or self.labelnames else {(): 0.0}
        for key, value in sorted(values.items()):
            f.add(value, {**const, **dict(zip(self.labelnames, key, strict=True))})
        return f


class Gauge(Counter):
    """A value that goes up and down."""

    __slots__ = ()

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = float(value)

    def family(self, const: Labels) -> Family:
        f = super().family(const)
        f.kind = "gauge"
        return f


class Histogram:
    """Cumulative buckets, sum and count per label tuple."""

    __slots__ = ("bounds", "help", "labelnames", "name", "series")

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(buckets))
        #: label tuple -> [count per bucket (+Inf last), sum]
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *labels: str) -> None:
        entry = self.series.get(labels)
        if entry is None:
            entry = self.series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        entry[0][bisect.bisect_left(self.bounds, value)] += 1
        entry[1][0] += value

    def count(self, *labels: str) -> int:
        entry = self.series.get(labels)
        return sum(entry[0]) if entry else 0

    def family(self, const: Labels) -> Family:
        f = Family(self.name, "histogram", self.help)
        for key, (counts, total) in sorted(self.series.items()):
            labels = {**const, **dict(zip(self.labelnames, key, strict=True))}
            running = 0
            for bound, n in zip((*self.bounds, math.inf), counts, strict=True):
                running += n
                f.add(running, {**labels, "le": _number(bound)}, "_bucket")
            f.add(total[0], labels, "_sum")
            f.add(running, labels, "_count")
        return f


def family(name: str, kind: Kind, help: str, values: Iterable[tuple[Labels, float]]) -> Family:
    """A pulled family from ``(labels, value)`` pairs."""
    f = Family(name, kind, help)
    for labels, value in values:
        f.add(value, labels)
    return f


def process_families(const: Labels) -> list[Family]:
    """The standard process metrics of this process."""
    t = os.times()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = _rss_bytes()
    return [
        family(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent in seconds.",
            [(const, t.user + t.system)],
        ),
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            [(const, rss if rss is not None else usage.ru_maxrss * 1024)],
        ),
        family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            [(const, _START_TIME)],
        ),
    ]


_START_TIME = time.time()


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --- rendering and merging --------------------------------------------------------


def merge(snapshots: Iterable[Iterable[Family]]) -> list[Family]:
    """One family per name with the samples of all snapshots (workers carry
    distinct ``worker`` labels, so samples never collide)."""
    out: dict[str, Family] = {}
    for snapshot in snapshots:
        for f in snapshot:
            have = out.get(f.name)
            if have is None:
                out[f.name] = Family(f.name, f.kind, f.help, list(f.samples))
            else:
                have.samples.extend(f.samples)
    return list(out.values())


def render(families: Iterable[Family]) -> str:
    """The text exposition format (one HELP and TYPE line per family)."""
    lines: list[str] = []
    for f in families:
        lines.append(f"# HELP {f.name} {_escape_help(f.help)}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for name, labels, value in f.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
                lines.append(f"{name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of an exposition (for tests and the benchmark): ``(name,
    frozenset(labels)) -> value``. Understands what :func:`render` writes."""
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        labels: list[tuple[str, str]] = []
        name = head
        if head.endswith("}"):
            name, _, inner = head[:-1].partition("{")
            i = 0
            while i < len(inner):
                eq = inner.index("=", i)
                key = inner[i:eq].lstrip(",")
                j = eq + 2
                chars: list[str] = []
                while inner[j] != '"':
                    if inner[j] == "\\":
                        j += 1
                        chars.append("\n" if inner[j] == "n" else inner[j])
                    else:
                        chars.append(inner[j])
                    j += 1
                labels.append((key, "".join(chars)))
                i = j + 1
        out[(name, frozenset(labels))] = float(value)
    return out


def sample(
    samples: Mapping[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, lb), v in samples.items() if n == name and want <= lb)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "Counter",
    "Family",
    "Gauge",
    "Histogram",
    "family",
    "merge",
    "parse",
    "process_families",
    "render",
    "sample",
]
