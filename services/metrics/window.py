"""Sliding windows of one scope (a tenant, or everything): 10 s buckets rolled into minutes.

- ``fines``: 10 s buckets (count, 5xx, sum, latency sketch) of the current and previous minute;
  the ``1m`` window is the last six of them, the current one partial.
- ``minutes``: once a 10 s bucket's minute is over and out of the 1 m window, it is rolled into
  its minute bucket; the ``5m`` window is the minute buckets of the last five minutes plus the
  10 s buckets.
- ``ring``: count and 5xx per minute for six hours (two ``array('I')``, allocated on first
  roll-up), for the SLO windows ``30m``/``1h``/``6h``.

Records are added by ``MetricsStore`` (its hot loop touches ``cur``/``cur_idx`` directly);
``roll(now)`` runs on the snapshot tick.
"""

from __future__ import annotations

from array import array

from .sketch import Sketch, merge_into

FINE_S = 10
FINES_PER_MINUTE = 6
MINUTES_KEPT = 5
RING_MINUTES = 360


class Bucket:
    __slots__ = ("count", "errors", "hist", "sum_ms")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.sum_ms = 0.0
        self.hist: Sketch = {}

    def add(self, other: Bucket) -> None:
        self.count += other.count
        self.errors += other.errors
        self.sum_ms += other.sum_ms
        merge_into(self.hist, other.hist)


_NOWHERE = Bucket()


class Window:
    __slots__ = ("cur", "cur_idx", "fines", "minutes", "ring_count", "ring_errors", "ring_head")

    def __init__(self) -> None:
        self.cur_idx = -1
        self.cur = _NOWHERE  # never written: cur_idx -1 matches no bucket
        self.fines: dict[int, Bucket] = {}
        self.minutes: dict[int, Bucket] = {}
        self.ring_count: array[int] | None = None
        self.ring_errors: array[int] | None = None
        self.ring_head = -1  # the newest minute written to the ring

    # ---- adding ------------------------------------------------------------------------------

    def fine(self, idx: int, now_idx: int) -> Bucket | None:
        """The 10 s bucket ``idx`` (created if it is still in the fine range), else ``None``."""
        bucket = self.fines.get(idx)
        if bucket is None:
            if idx // FINES_PER_MINUTE < _first_fine_minute(now_idx):
                return None
            bucket = self.fines[idx] = Bucket()
        self.cur_idx, self.cur = idx, bucket
        return bucket

    def current(self, now_idx: int) -> Bucket:
        """The 10 s bucket of now (it always exists or is created)."""
        if self.cur_idx != now_idx:
            bucket = self.fines.get(now_idx)
            if bucket is None:
                bucket = self.fines[now_idx] = Bucket()
            self.cur_idx, self.cur = now_idx, bucket
        return self.cur

    def add_late(self, minute: int, now_minute: int, duration_ms: float, error: bool, bin_: int
                 ) -> bool:
        """A record older than the 10 s buckets: into its minute bucket and/or the ring."""
        if minute <= now_minute - RING_MINUTES:
            return False
        if minute > now_minute - MINUTES_KEPT:
            bucket = self.minutes.get(minute)
            if bucket is None:
                bucket = self.minutes[minute] = Bucket()
            bucket.count += 1
            bucket.errors += error
            bucket.sum_ms += duration_ms
            bucket.hist[bin_] = bucket.hist.get(bin_, 0) + 1
        self._ring_add(minute, 1, int(error))
        return True

    # ---- rolling up --------------------------------------------------------------------------

    def roll(self, now_idx: int) -> list[Bucket]:
        """Roll finished 10 s buckets into minutes; drop minutes past 5 m. Returns the rolled."""
        rolled: list[Bucket] = []
        first_minute = _first_fine_minute(now_idx)
        for idx in [i for i in self.fines if i // FINES_PER_MINUTE < first_minute]:
            bucket = self.fines.pop(idx)
            minute = idx // FINES_PER_MINUTE
            target = self.minutes.get(minute)
            if target is None:
                target = self.minutes[minute] = Bucket()
            target.add(bucket)
            self._ring_add(minute, bucket.count, bucket.errors)
            rolled.append(bucket)
            if idx == self.cur_idx:
                self.cur_idx, self.cur = -1, _NOWHERE
        now_minute = now_idx // FINES_PER_MINUTE
        for minute in [m for m in self.minutes if m <= now_minute - MINUTES_KEPT]:
            del self.minutes[minute]
        return rolled

    def _ring_add(self, minute: int, count: int, errors: int) -> None:
        if self.ring_count is None or self.ring_errors is None:
            self.ring_count = array("I", bytes(4 * RING_MINUTES))
            self.ring_errors = array("I", bytes(4 * RING_MINUTES))
        if minute > self.ring_head:
            start = max(self.ring_head + 1, minute - RING_MINUTES + 1)
            for m in range(start, minute + 1):
                self.ring_count[m % RING_MINUTES] = 0
                self.ring_errors[m % RING_MINUTES] = 0
            self.ring_head = minute
        elif minute <= self.ring_head - RING_MINUTES:
            return
        slot = minute % RING_MINUTES
        self.ring_count[slot] += count
        self.ring_errors[slot] += errors

    # ---- reading -----------------------------------------------------------------------------

    def fine_range(self, now_idx: int, last: int) -> Bucket:
        """The sum of the last ``last`` 10 s buckets up to ``now_idx``."""
        out = Bucket()
        for idx, bucket in self.fines.items():
            if now_idx - last < idx <= now_idx:
                out.add(bucket)
        return out

    def five_minutes(self, now_idx: int) -> Bucket:
        now_minute = now_idx // FINES_PER_MINUTE
        out = Bucket()
        for idx, bucket in self.fines.items():
            if idx // FINES_PER_MINUTE > now_minute - MINUTES_KEPT:
                out.add(bucket)
        for minute, bucket in self.minutes.items():
            if minute > now_minute - MINUTES_KEPT:
                out.add(bucket)
        return out

    def long_counts(self, now_idx: int, minutes: int) -> tuple[int, int]:
        """(count, 5xx) over the last ``minutes`` minutes: the ring plus unrolled 10 s buckets."""
        count = errors = 0
        for bucket in self.fines.values():
            count += bucket.count
            errors += bucket.errors
        if self.ring_count is None or self.ring_errors is None:
            return count, errors
        now_minute = now_idx // FINES_PER_MINUTE
        low = max(now_minute - minutes + 1, self.ring_head - RING_MINUTES + 1)
        high = min(now_minute, self.ring_head)
        if high < low:
            return count, errors
        start, end = low % RING_MINUTES, high % RING_MINUTES
        # One slice, or two when the range wraps around the ring's end.
        wraps = start > end
        spans = ((start, RING_MINUTES), (0, end + 1)) if wraps else ((start, end + 1),)
        for a, b in spans:
            count += sum(self.ring_count[a:b])
            errors += sum(self.ring_errors[a:b])
        return count, errors

    def idle(self, now_idx: int) -> bool:
        """No data left in any window (the scope can be forgotten)."""
        if self.fines or self.minutes:
            return False
        return self.ring_head <= now_idx // FINES_PER_MINUTE - RING_MINUTES

    def recent(self, now_idx: int) -> bool:
        """Data within the 5 m window."""
        return bool(self.fines) or any(
            m > now_idx // FINES_PER_MINUTE - MINUTES_KEPT for m in self.minutes
        )


def _first_fine_minute(now_idx: int) -> int:
    """The oldest minute still kept as 10 s buckets: the one the 1 m window starts in."""
    return (now_idx - FINES_PER_MINUTE + 1) // FINES_PER_MINUTE
