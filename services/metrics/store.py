"""The metrics store: a window per tenant, one for everything, and cumulative traffic counters.

``ingest`` is the hot path (hundreds of thousands of records a second on one core): it puts
each record in its 10 s bucket of its tenant's window and of the global one (each window caches
the bucket it used last, so a record is a few attribute and dict updates). A batch of one
tenant within one 10 s bucket (partitioned ingest sends one tenant a message) is added as one
aggregate to both buckets instead. Records are bucketed by their own ``ts``: late ones go to
their minute (or only the 6 h ring); future ones within the allowed skew count as now.

Plausibility rules the pydantic model cannot express are enforced here and the offending
records rejected (DLQ): ``ts`` more than 5 minutes ahead or more than a day old, a duration
over a day.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from math import ceil, log10
from operator import attrgetter

from shared import TrafficTotals, utcnow

from .decode import Record
from .sketch import MIN_BIN, MIN_MS, cumulative_buckets, merge_into
from .window import FINE_S, FINES_PER_MINUTE, Bucket, Window

MAX_FUTURE_S = 300.0
MAX_AGE_S = 86_400.0
MAX_DURATION_MS = 86_400_000.0
EPOCH_MS_ABOVE = 2e10  # pydantic's rule: larger epoch numbers are milliseconds
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SCALE = 24.0
UNIFORM_MIN = 16  # smaller batches go record by record (the checks would cost more)

_tenant_of = attrgetter("tenant_id")
_ts_of = attrgetter("ts")
_duration_of = attrgetter("duration_ms")
_method_of = attrgetter("method")
_status_of = attrgetter("status")


class Traffic:
    """Cumulative counters since start: by method and status class, and a latency sketch."""

    def __init__(self) -> None:
        self.started_at = utcnow()
        self.requests: dict[str, int] = {}
        self.rolled = Bucket()  # global 10 s buckets already rolled up, plus late records

    def count_methods(self, batch: dict[tuple[str, int], int]) -> None:
        for (method, klass), count in batch.items():
            key = f"{method if method in KNOWN_METHODS else 'OTHER'} {klass}xx"
            self.requests[key] = self.requests.get(key, 0) + count

    def totals(self, unrolled: list[Bucket]) -> TrafficTotals:
        everything = Bucket()
        everything.add(self.rolled)
        for bucket in unrolled:
            everything.add(bucket)
        return TrafficTotals(
            started_at=self.started_at,
            requests=dict(self.requests),
            buckets=cumulative_buckets(everything.hist),
            count=everything.count,
            sum_s=round(everything.sum_ms / 1000.0, 6),
        )


class MetricsStore:
    def __init__(self) -> None:
        self.tenants: dict[str, Window] = {}
        self.everything = Window()
        self.traffic = Traffic()
        self.records = 0
        self.late = 0

    def ingest(self, records: list[Record], now: float) -> list[tuple[int, str, str]]:
        """Window ``records``; returns ``(index, kind, reason)`` of the implausible ones."""
        if len(records) >= UNIFORM_MIN and self._ingest_uniform(records, now):
            return []
        return self._ingest_each(records, now)

    def _ingest_uniform(self, records: list[Record], now: float) -> bool:
        """A batch of one tenant whose records all fall in one 10 s bucket (what partitioned
        ingest receives: ``BatchPublisher(by_tenant=True)`` sends one tenant a message), all
        plausible: added as one aggregate to the tenant's bucket and the global one, instead
        of record by record to each. Returns False, having changed nothing, for any other
        batch (``_ingest_each`` takes it); the windows end up exactly as ``_ingest_each``
        leaves them (same counts, same sketch, durations summed in the same order)."""
        tenant = records[0].tenant_id
        if records[-1].tenant_id != tenant:  # tenants mixed (unpartitioned ingest)
            return False
        tenants = [*map(_tenant_of, records)]
        if tenants.count(tenant) != len(tenants):
            return False
        stamps = [*map(_ts_of, records)]
        try:
            first, last = min(stamps), max(stamps)
        except TypeError:  # epoch seconds and datetimes mixed
            return False
        if isinstance(first, datetime) or isinstance(last, datetime):
            return False
        if not (now - MAX_AGE_S <= first and last <= now + MAX_FUTURE_S
                and last <= EPOCH_MS_ABOVE):  # implausible or milliseconds: record by record
            return False
        now_idx = int(now // FINE_S)
        idx = min(int(first // FINE_S), now_idx)
        if min(int(last // FINE_S), now_idx) != idx:
            return False
        durations = [*map(_duration_of, records)]
        if not max(durations) <= MAX_DURATION_MS:
            return False
        every = self.everything
        bucket = every.cur if every.cur_idx == idx else every.fine(idx, now_idx)
        if bucket is None:  # older than the 10 s buckets: record by record
            return False
        bins = Counter([ceil(log10(d) * SCALE) if d > MIN_MS else MIN_BIN for d in durations])
        pairs = Counter(zip(map(_method_of, records), map(_status_of, records), strict=True))
        errors = 0
        methods: dict[tuple[str, int], int] = {}
        for (method, status), count in pairs.items():
            key = (method, status // 100)
            methods[key] = methods.get(key, 0) + count
            if status >= 500:
                errors += count
        buckets = [bucket]
        if tenant is not None:
            window = self.tenants.get(tenant)
            if window is None:
                window = self.tenants[tenant] = Window()
            own = window.cur if window.cur_idx == idx else window.fine(idx, now_idx)
            if own is not None:  # always: the fine range is the same for every window
                buckets.append(own)
        for target in buckets:
            target.count += len(records)
            target.errors += errors
            target.sum_ms = sum(durations, target.sum_ms)
            merge_into(target.hist, bins)
        self.traffic.count_methods(methods)
        self.records += len(records)
        return True

    def _ingest_each(self, records: list[Record], now: float) -> list[tuple[int, str, str]]:
        now_idx = int(now // FINE_S)
        lo, hi = now - MAX_AGE_S, now + MAX_FUTURE_S
        tenants = self.tenants
        get_window = tenants.get
        every = self.everything
        methods: dict[tuple[str, int], int] = {}
        count_of = methods.get
        bad: list[tuple[int, str, str]] = []
        for index, record in enumerate(records):
            raw_ts = record.ts
            if isinstance(raw_ts, datetime):
                ts = raw_ts.timestamp()
            else:
                ts = raw_ts / 1000.0 if raw_ts > EPOCH_MS_ABOVE else raw_ts
            if not lo <= ts <= hi:
                bad.append((index, "timestamp", f"ts {ts} not within [now - 1 day, now + 5 min]"))
                continue
            duration = record.duration_ms
            if duration > MAX_DURATION_MS:
                bad.append((index, "duration", f"duration_ms {duration} is over a day"))
                continue
            bin_ = ceil(log10(duration) * SCALE) if duration > MIN_MS else MIN_BIN
            status = record.status
            error = status >= 500
            key = (record.method, status // 100)
            methods[key] = count_of(key, 0) + 1
            idx = int(ts // FINE_S)
            if idx > now_idx:  # ahead of our clock (within the allowed skew): now
                idx = now_idx
            tenant = record.tenant_id
            # Each window caches the 10 s bucket it used last: nearly every record hits it.
            bucket = every.cur if every.cur_idx == idx else every.fine(idx, now_idx)
            if bucket is None:  # older than the 10 s buckets
                self._add_old(tenant, idx, now_idx, duration, error, bin_)
                continue
            bucket.count += 1
            bucket.errors += error
            bucket.sum_ms += duration
            hist = bucket.hist
            hist[bin_] = hist.get(bin_, 0) + 1
            if tenant is None:
                continue
            window = get_window(tenant)
            if window is None:
                window = tenants[tenant] = Window()
            bucket = window.cur if window.cur_idx == idx else window.fine(idx, now_idx)
            if bucket is None:
                continue  # cannot happen: the fine range is the same for every window
            bucket.count += 1
            bucket.errors += error
            bucket.sum_ms += duration
            hist = bucket.hist
            hist[bin_] = hist.get(bin_, 0) + 1
        self.traffic.count_methods(methods)
        self.records += len(records) - len(bad)
        return bad

    def _add_old(self, tenant: str | None, idx: int, now_idx: int, duration: float,
                 error: bool, bin_: int) -> None:
        windows = [self.everything]
        if tenant is not None:
            window = self.tenants.get(tenant)
            if window is None:
                window = self.tenants[tenant] = Window()
            windows.append(window)
        for window in windows:
            bucket = window.fine(idx, now_idx)
            if bucket is not None:
                bucket.count += 1
                bucket.errors += error
                bucket.sum_ms += duration
                bucket.hist[bin_] = bucket.hist.get(bin_, 0) + 1
                continue
            kept = window.add_late(idx // FINES_PER_MINUTE, now_idx // FINES_PER_MINUTE,
                                   duration, error, bin_)
            if window is self.everything:
                if not kept:
                    self.late += 1
                # Not in a 10 s bucket, so not rolled later: count it in the totals now.
                rolled = self.traffic.rolled
                rolled.count += 1
                rolled.errors += error
                rolled.sum_ms += duration
                rolled.hist[bin_] = rolled.hist.get(bin_, 0) + 1

    def roll(self, now: float) -> list[str]:
        """Roll every window up; forget tenants with no data left. Returns the forgotten."""
        now_idx = int(now // FINE_S)
        for bucket in self.everything.roll(now_idx):
            self.traffic.rolled.add(bucket)
        forgotten = []
        for tenant, window in list(self.tenants.items()):
            window.roll(now_idx)
            if window.idle(now_idx):
                del self.tenants[tenant]
                forgotten.append(tenant)
        return forgotten

    def traffic_totals(self) -> TrafficTotals:
        return self.traffic.totals(list(self.everything.fines.values()))
