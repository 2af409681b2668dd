"""Helpers shared by the benchmarks: candidates checked for correctness before
they are timed, an interleaved timing loop, and table / ratio formatting.

Timing: each candidate is calibrated to a batch of about ``batch_seconds``,
then all candidates run one batch each per round, round-robin (the starting
candidate rotates every round), with the garbage collector off during a
batch. So load from other processes hits every candidate alike. A batch's
inputs are built just before it, outside the timed region. Per candidate we
keep the per-operation time of every batch; the tables show the best batch
(least disturbed), the JSON also has the median.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Candidate",
    "Rejected",
    "fixed",
    "fmt_ratio",
    "fmt_us",
    "measure",
    "print_table",
]

_MAX_BATCH = 200_000


class Rejected(Exception):
    """Raised by a candidate wrapper when a peer API answers "invalid" with a
    return value (e.g. ``False``) instead of an exception."""


def fixed(value: Any) -> Callable[[int], Sequence[Any]]:
    """A batch maker that feeds the same input ``n`` times."""
    return lambda n: [value] * n


@dataclass
class Candidate:
    """One implementation of one operation.

    ``fn(item)`` performs the operation on one input and raises on failure;
    ``batch(n)`` returns ``n`` inputs for the next batch (fresh ones where the
    operation consumes them, e.g. proofs with increasing sequence numbers);
    ``tampered()`` returns one input that must be refused with one of
    ``rejects``; ``expect(result)`` tells whether a valid input gave the right
    result. ``skipped`` holds the reason a candidate cannot run.
    """

    name: str
    fn: Callable[[Any], Any] | None = None
    batch: Callable[[int], Sequence[Any]] | None = None
    tampered: Callable[[], Any] | None = None
    expect: Callable[[Any], bool] = lambda result: True
    rejects: tuple[type[BaseException], ...] = (Exception,)
    skipped: str | None = None
    n: int = 0
    samples_us: list[float] = field(default_factory=list)

    @classmethod
    def unavailable(cls, name: str, exc: BaseException) -> Candidate:
        return cls(name, skipped=f"{type(exc).__name__}: {exc}"[:160])

    def check(self) -> str | None:
        """Run once on a valid and once on a tampered input; ``None`` if both
        behave, else what went wrong. This makes sure no no-op gets timed."""
        if self.fn is None or self.batch is None or self.tampered is None:
            return self.skipped or "not set up"
        try:
            result = self.fn(self.batch(1)[0])
        except Exception as exc:
            return f"refused a valid input: {type(exc).__name__}: {exc}"[:160]
        if not self.expect(result):
            return "wrong result for a valid input"
        try:
            self.fn(self.tampered())
        except self.rejects:
            return None
        except Exception as exc:
            return f"tampered input: unexpected {type(exc).__name__}: {exc}"[:160]
        return "accepted a tampered input"

    @property
    def best_us(self) -> float:
        return min(self.samples_us) if self.samples_us else float("nan")

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us) if self.samples_us else float("nan")

    def summary(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {
            "best_us": round(self.best_us, 3),
            "median_us": round(self.median_us, 3),
            "per_batch": self.n,
            "batches": len(self.samples_us),
            "checked": True,
        }


def _run_batch(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        return time.perf_counter() - t0
    finally:
        if gc_was_on:
            gc.enable()


def measure(candidates: Sequence[Candidate], *, rounds: int, batch_seconds: float) -> None:
    """Check, calibrate and time ``candidates`` interleaved (see the module
    docstring). A candidate that fails its check is marked skipped with the
    reason; the caller decides whether that is fatal."""
    live: list[Candidate] = []
    for c in candidates:
        if c.skipped is None:
            problem = c.check()
            if problem is not None:
                c.skipped = f"failed correctness check: {problem}"
                continue
            live.append(c)
    for c in live:
        assert c.fn is not None and c.batch is not None
        probe = c.batch(3)
        per_op = max(_run_batch(c.fn, probe) / len(probe), 1e-8)
        c.n = max(1, min(_MAX_BATCH, int(batch_seconds / per_op)))
    for r in range(rounds):
        k = r % len(live) if live else 0
        for c in live[k:] + live[:k]:
            assert c.fn is not None and c.batch is not None
            items = c.batch(c.n)
            c.samples_us.append(_run_batch(c.fn, items) / len(items) * 1e6)


def fmt_us(us: float) -> str:
    if us != us:  # NaN
        return "n/a"
    if us >= 1000:
        return f"{us:,.0f}"
    if us >= 100:
        return f"{us:.0f}"
    return f"{us:.1f}"


def fmt_ratio(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.0f}x" if x >= 100 else f"{x:.2f}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> None:
    """Aligned columns: the first ``left`` ones left-aligned, the others right;
    cells beyond the headers (a note) are printed as they are."""
    n = len(headers)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        head = cells[:n]
        out = [
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(head, widths, strict=True))
        ]
        return "  ".join(out + list(cells[n:])).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
