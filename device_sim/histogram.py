"""A small HDR-style latency histogram: log-linear buckets, mergeable by
adding counts, serializable as sparse JSON.

Written here instead of depending on the ``hdrhistogram`` package (which
installs, as a wheel with a C extension, but brings ``pbr`` and an encoding
format the report does not need): the simulator needs ``record``,
``merge``, percentiles and a JSON form, about 100 lines.

Buckets follow HdrHistogram's layout with ``sub_bits`` = 7: values below
``2 * 128`` are exact; above, every power-of-two range is cut into 128 equal
buckets, so a bucket's width is at most 1/128 (0.78 %) of its lower bound.
Values are integers (the simulator records microseconds) and are clamped to
``[0, 2**40)``. :meth:`Histogram.percentile` answers like HdrHistogram's
``getValueAtPercentile``: the highest value equivalent to the bucket that
holds the requested rank (never above the largest value recorded).
Merging two histograms is exact: it equals the histogram of the union.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Histogram"]

SUB_BITS = 7
_SUB = 1 << SUB_BITS
_MAX_VALUE = (1 << 40) - 1
#: Bucket count for values up to 2**40.
_BUCKETS = (40 - SUB_BITS) * _SUB + _SUB


def bucket_index(value: int) -> int:
    """The bucket of a non-negative integer ``value`` (clamped to 2**40 - 1)."""
    if value < 2 * _SUB:
        return max(0, value)
    if value > _MAX_VALUE:
        value = _MAX_VALUE
    shift = value.bit_length() - SUB_BITS - 1
    return shift * _SUB + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest and highest value of bucket ``index``."""
    if index < 2 * _SUB:
        return index, index
    shift = index // _SUB - 1
    mantissa = index - shift * _SUB
    low = mantissa << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of integer values in log-linear buckets (see module doc)."""

    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0
        self.min = 0
        self.max = 0

    def record(self, value: int, n: int = 1) -> None:
        """Add ``n`` occurrences of ``value`` (an integer, e.g. microseconds)."""
        if value < 0:
            value = 0
        elif value > _MAX_VALUE:
            value = _MAX_VALUE
        if value < 2 * _SUB:
            self._counts[value] += n
        else:
            shift = value.bit_length() - SUB_BITS - 1
            self._counts[shift * _SUB + (value >> shift)] += n
        if self.count == 0 or value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.count += n
        self.total += value * n

    def record_bucket(self, index: int, n: int = 1) -> None:
        """Add ``n`` counts to bucket ``index`` (rebuilding a histogram from
        sparse buckets, e.g. a timeline interval's): min, max and total are
        taken from the bucket's bounds (its lowest value for the total)."""
        if not 0 <= index < _BUCKETS or n < 0:
            raise ValueError("histogram bucket out of range")
        low, high = bucket_bounds(index)
        self._counts[index] += n
        if self.count == 0 or low < self.min:
            self.min = low
        self.max = max(self.max, high)
        self.count += n
        self.total += low * n

    def record_seconds(self, seconds: float) -> None:
        """Record a duration given in seconds as microseconds."""
        self.record(round(seconds * 1_000_000))

    def merge(self, other: Histogram) -> None:
        """Add every count of ``other`` (exact: the histogram of the union)."""
        if other.count == 0:
            return
        counts = self._counts
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, q: float) -> int:
        """The value at percentile ``q`` (0..100), HdrHistogram-style; 0 when
        empty."""
        if self.count == 0:
            return 0
        rank = max(1, min(self.count, int(q / 100.0 * self.count + 0.5)))
        if q >= 100:
            return self.max
        seen = 0
        for i, c in enumerate(self._counts):
            if c:
                seen += c
                if seen >= rank:
                    return min(bucket_bounds(i)[1], self.max)
        return self.max  # pragma: no cover - counts add up to count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def summary(self, scale: float = 1000.0) -> dict[str, float | int]:
        """count, min, mean, p50, p90, p99, p99.9, max, each divided by
        ``scale`` (microseconds -> milliseconds by default)."""
        return {
            "count": self.count,
            "min": self.min / scale,
            "mean": round(self.mean / scale, 3),
            "p50": self.percentile(50) / scale,
            "p90": self.percentile(90) / scale,
            "p99": self.percentile(99) / scale,
            "p99.9": self.percentile(99.9) / scale,
            "max": self.max / scale,
        }

    def to_dict(self) -> dict[str, Any]:
        """Sparse JSON form: ``buckets`` is a list of ``[index, count]``."""
        return {
            "sub_bucket_bits": SUB_BITS,
            "count": self.count,
            "total": self.total,
            "min": self.min,
            "max": self.max,
            "buckets": [[i, c] for i, c in enumerate(self._counts) if c],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Histogram:
        """Inverse of :meth:`to_dict`; raises ValueError on a foreign layout."""
        if data.get("sub_bucket_bits") != SUB_BITS:
            raise ValueError("histogram with another bucket layout")
        h = cls()
        for i, c in data.get("buckets", []):
            if not (0 <= int(i) < _BUCKETS) or int(c) < 0:
                raise ValueError("histogram bucket out of range")
            h._counts[int(i)] += int(c)
        h.count = int(data.get("count", 0))
        if h.count != sum(h._counts):
            raise ValueError("histogram count does not match its buckets")
        h.total = int(data.get("total", 0))
        h.min = int(data.get("min", 0))
        h.max = int(data.get("max", 0))
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Histogram count={self.count} p50={self.percentile(50)} max={self.max}>"
