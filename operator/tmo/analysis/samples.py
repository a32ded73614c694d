"""Request samples as Prometheus keeps them: counts per histogram bucket, or per outcome.

The mannWhitney judge compares the canary's requests with the stable revision's. Prometheus has
no per-request values, but the gateway's latency histogram has per-bucket counts, and a rank
test needs only the order of the values: a request in bucket i is slower than one in bucket
i - 1 and tied with every other request in bucket i. So the counts of
`sum by (le) (increase(tmo_request_duration_seconds_bucket{...}[W]))` are the sample, at the
buckets' resolution. Errors are the same with two buckets: answered (0) and 5xx (1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Rank tests need every observation as a value: beyond this many requests on one side the
# counts are scaled down (keeping their proportions). That loses power, never adds false alarms,
# and keeps one test in milliseconds at any request rate.
MAX_EXPANDED = 50_000


class BadCounts(ValueError):
    """Counts Prometheus sent that are no sample: NaN, or `le` labels that are no numbers."""


@dataclass(frozen=True)
class Binned:
    """How many requests fell in each bin, bins in ascending order of the value.

    `bounds` are the bins' upper bounds (a histogram's `le`, the last may be +Inf); for
    outcomes they are 0 (answered) and 1 (5xx).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    mean: float | None = None
    """The exact mean value where it is known (a histogram's _sum / _count), else None."""

    @property
    def total(self) -> int:
        return sum(self.counts)

    def expanded(self, limit: int = MAX_EXPANDED) -> npt.NDArray[np.int64]:
        """One value per request: the bin's index (rank tests need only the order)."""
        counts = np.asarray(self.counts, dtype=np.float64)
        total = counts.sum()
        if total > limit:
            counts = np.floor(counts * (limit / total))
        return np.repeat(np.arange(len(self.counts), dtype=np.int64), counts.astype(np.int64))

    def quantile(self, q: float) -> float | None:
        """The q-quantile the way Prometheus' histogram_quantile() estimates it: linear within
        the bucket, 0 as the first bucket's lower bound, the highest finite bound when the rank
        falls in the +Inf bucket. None without requests."""
        total = self.total
        if total == 0:
            return None
        rank = q * total
        below = 0
        for i, (bound, count) in enumerate(zip(self.bounds, self.counts, strict=True)):
            if below + count >= rank and count > 0:
                if math.isinf(bound):
                    return self.bounds[i - 1] if i > 0 else None
                lower = self.bounds[i - 1] if i > 0 else 0.0
                return lower + (bound - lower) * (rank - below) / count
            below += count
        finite = [b for b in self.bounds if math.isfinite(b)]
        return finite[-1] if finite else None

    def share_of_last(self) -> float | None:
        """The fraction of requests in the last bin (for outcomes: the error rate)."""
        total = self.total
        return self.counts[-1] / total if total else None


def _count(value: float) -> int:
    if math.isnan(value):
        raise BadCounts("Prometheus counted NaN requests")
    # increase() extrapolates to the window's edges: fractional, and with a counter reset at a
    # bucket boundary a bucket can even come out a little below the one before it.
    return max(0, round(value))


def from_buckets(buckets: Iterable[tuple[str, float]], mean: float | None = None) -> Binned:
    """Per-bucket counts from cumulative (`le`, count) pairs as Prometheus returns them."""
    parsed: list[tuple[float, float]] = []
    for le, value in buckets:
        try:
            parsed.append((float(le), value))
        except ValueError:
            raise BadCounts(f"histogram bucket le={le!r} is not a number") from None
    parsed.sort()
    bounds: list[float] = []
    counts: list[int] = []
    previous = 0
    for bound, cumulative in parsed:
        current = max(_count(cumulative), previous)
        bounds.append(bound)
        counts.append(current - previous)
        previous = current
    if mean is not None and not math.isfinite(mean):
        mean = None  # 0/0: no request
    return Binned(tuple(bounds), tuple(counts), mean)


def outcomes(total: float, errors: float) -> Binned:
    """Answered and failed (5xx) requests as a two-bin sample."""
    n, bad = _count(total), _count(errors)
    bad = min(bad, n)
    return Binned((0.0, 1.0), (n - bad, bad), bad / n if n else None)


def from_values(values: Sequence[float], bounds: Sequence[float]) -> Binned:
    """Bin raw values into histogram buckets like a Prometheus client does (value <= le):
    for tests and for the judges' benchmark, which replays recorded latencies."""
    edges = np.asarray(bounds, dtype=np.float64)
    raw = np.asarray(values, dtype=np.float64)
    index = np.searchsorted(edges, raw, side="left")
    counts = np.bincount(index, minlength=len(edges))[: len(edges)]
    mean = float(raw.mean()) if len(raw) else None
    return Binned(tuple(float(b) for b in edges), tuple(int(c) for c in counts), mean)
