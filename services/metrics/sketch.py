"""A mergeable latency sketch: log-scaled bins with 24 bins a decade (relative error <= 5 %).

A sketch is a plain ``dict[bin, count]``: two sketches merge by adding counts, so windows,
tenants and partitions combine exactly (a sorted list of samples would not). Bin ``j`` holds
durations in ``(10**((j-1)/24), 10**(j/24)]`` milliseconds; its value is read at the
geometric middle. Upper-inclusive bins make the Prometheus bounds (every 8th boundary,
``shared.DURATION_BOUNDS_S``) exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from math import ceil, log10

from shared import DURATION_BOUNDS_S, SKETCH_BINS_PER_DECADE

SCALE = float(SKETCH_BINS_PER_DECADE)
MIN_MS = 0.001  # everything at or below 1 µs shares the lowest bin
MIN_BIN = ceil(log10(MIN_MS) * SCALE)
# The sketch bin at each Prometheus bound (bound k = 10**(k/3) ms = bin 8k).
BOUND_BINS: tuple[int, ...] = tuple(
    round(log10(bound * 1000) * SCALE) for bound in DURATION_BOUNDS_S
)

Sketch = dict[int, int]


def bin_of(duration_ms: float) -> int:
    return ceil(log10(duration_ms) * SCALE) if duration_ms > MIN_MS else MIN_BIN


def value_of(bin_: int) -> float:
    if bin_ <= MIN_BIN:
        return 0.0
    return float(10 ** ((bin_ - 0.5) / SCALE))


def merge_into(target: Sketch, source: Mapping[int, int]) -> Sketch:
    get = target.get
    for bin_, count in source.items():
        target[bin_] = get(bin_, 0) + count
    return target


def merged(sketches: Iterable[Mapping[int, int]]) -> Sketch:
    out: Sketch = {}
    for sketch in sketches:
        merge_into(out, sketch)
    return out


def quantiles(sketch: Mapping[int, int], qs: Sequence[float]) -> list[float | None]:
    """Nearest-rank quantiles (``qs`` ascending), ``None`` for an empty sketch."""
    total = sum(sketch.values())
    if total <= 0:
        return [None for _ in qs]
    out: list[float | None] = []
    items = sorted(sketch.items())
    position, seen = 0, items[0][1]
    for q in qs:
        rank = max(1, ceil(q * total))
        while seen < rank and position + 1 < len(items):
            position += 1
            seen += items[position][1]
        out.append(round(value_of(items[position][0]), 3))
    return out


def cumulative_buckets(sketch: Mapping[int, int]) -> list[int]:
    """Counts of durations <= each Prometheus bound (exact: bounds are bin edges)."""
    counts = [0] * len(BOUND_BINS)
    for bin_, count in sketch.items():
        for index, bound in enumerate(BOUND_BINS):
            if bin_ <= bound:
                counts[index] += count
                break
    running = 0
    for index, count in enumerate(counts):
        running += count
        counts[index] = running
    return counts
