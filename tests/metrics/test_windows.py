"""The latency sketch, the sliding windows and the store's hot path (no servers)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics.decode import Record
from services.metrics.sketch import (
    BOUND_BINS,
    bin_of,
    cumulative_buckets,
    merged,
    quantiles,
    value_of,
)
from services.metrics.stats import window_stats
from services.metrics.store import UNIFORM_MIN, MetricsStore
from services.metrics.window import RING_MINUTES, Window
from shared import DURATION_BOUNDS_S

T0 = 1_800_000_000.0  # a round 10 s and minute boundary


def sketch_of(values: list[float]) -> dict[int, int]:
    out: dict[int, int] = {}
    for value in values:
        out[bin_of(value)] = out.get(bin_of(value), 0) + 1
    return out


def rec(ts: float | datetime, duration: float = 10.0, status: int = 200,
        tenant: str | None = "acme", method: str = "GET") -> Record:
    return Record(ts=ts, method=method, route="/x", status=status, duration_ms=duration,
                  tenant_id=tenant)


@given(st.lists(st.floats(min_value=0.01, max_value=600_000), min_size=1, max_size=300))
@settings(max_examples=60, deadline=None)
def test_quantiles_are_within_five_percent(values: list[float]) -> None:
    ordered = sorted(values)
    for q, estimate in zip((0.5, 0.95, 0.99), quantiles(sketch_of(values), (0.5, 0.95, 0.99)),
                           strict=True):
        exact = ordered[max(1, math.ceil(q * len(ordered))) - 1]  # nearest rank
        assert estimate is not None
        assert abs(estimate - exact) <= 0.05 * exact + 1e-9, (q, estimate, exact)


@given(st.lists(st.floats(min_value=0, max_value=60_000), max_size=200),
       st.lists(st.floats(min_value=0, max_value=60_000), max_size=200))
@settings(max_examples=40, deadline=None)
def test_sketches_merge_exactly(a: list[float], b: list[float]) -> None:
    assert merged([sketch_of(a), sketch_of(b)]) == sketch_of(a + b)


@given(st.lists(st.floats(min_value=0, max_value=20_000), max_size=300))
@settings(max_examples=60, deadline=None)
def test_prometheus_buckets_are_exact(values: list[float]) -> None:
    buckets = cumulative_buckets(sketch_of(values))
    for bound_s, count in zip(DURATION_BOUNDS_S, buckets, strict=True):
        # Exact up to float rounding right at a bound (the bounds are rounded to 6 digits).
        expected = sum(1 for v in values if v <= bound_s * 1000 * (1 - 1e-6))
        expected_hi = sum(1 for v in values if v <= bound_s * 1000 * (1 + 1e-6))
        assert expected <= count <= expected_hi


def test_sketch_edges() -> None:
    assert quantiles({}, (0.5,)) == [None]
    assert value_of(bin_of(0.0)) == 0.0
    assert bin_of(10.0) == 24 and bin_of(10.0001) == 25  # upper-inclusive: 10 ms is in le=0.01
    assert len(BOUND_BINS) == len(DURATION_BOUNDS_S)


def test_one_and_five_minute_windows_slide() -> None:
    window = Window()
    store = MetricsStore()
    # One record every second for 6 minutes, 1 in 10 a 5xx; durations 1..100 ms.
    for second in range(360):
        now = T0 + second
        store.ingest([rec(now, duration=float(second % 100 + 1), status=500 if second % 10 == 0
                          else 200)], now)
        if second % 5 == 0:
            store.roll(now)
    now = T0 + 359.5
    store.roll(now)
    stats, sketches = window_stats(store.tenants["acme"], now)
    assert stats["1m"].count == 60 and stats["1m"].errors == 6
    assert abs(stats["1m"].rate_per_s - 1.0) < 0.05
    assert 240 <= stats["5m"].count <= 300
    assert stats["6h"].count == 360 and stats["6h"].errors == 36
    assert stats["1h"].error_ratio == 0.1
    assert stats["5m"].p99_ms is not None and 90 <= stats["5m"].p99_ms <= 105
    assert stats["1m"].avg_ms is not None and sum(sketches["1m"].values()) == 60
    assert window.idle(int(now // 10))


def test_late_future_and_old_records() -> None:
    store = MetricsStore()
    now = T0 + 600
    bad = store.ingest([
        rec(now - 30),                # still a 10 s bucket
        rec(now - 200),               # a minute bucket (5 m window)
        rec(now - 2 * 3600),          # only the 6 h ring
        rec(now - 7 * 3600),          # older than every window: counted late
        rec(now + 60),                # ahead within the skew: counts as now
        rec(now + 3600),              # absurd: rejected
        rec(now - 2 * 86_400),        # absurd: rejected
        rec(now, duration=10 * 86_400_000.0),  # absurd duration
        rec(datetime.fromtimestamp(now, UTC)),
        rec((now - 5) * 1000),        # epoch milliseconds, as pydantic reads them
    ], now)
    assert [kind for _, kind, _ in bad] == ["timestamp", "timestamp", "duration"]
    assert [index for index, _, _ in bad] == [5, 6, 7]
    store.roll(now)
    stats, _ = window_stats(store.tenants["acme"], now)
    assert stats["1m"].count == 4
    assert stats["5m"].count == 5
    assert stats["6h"].count == 6
    assert store.late == 1
    assert store.traffic_totals().count == 7  # everything plausible is counted once


def test_ring_forgets_after_six_hours_and_tenant_is_dropped() -> None:
    store = MetricsStore()
    store.ingest([rec(T0)], T0)
    store.roll(T0 + 120)
    window = store.tenants["acme"]
    assert window.long_counts(int((T0 + 120) // 10), 360) == (1, 0)
    later = T0 + RING_MINUTES * 60 + 120
    assert window.long_counts(int(later // 10), 360) == (0, 0)
    assert store.roll(later) == ["acme"]
    assert "acme" not in store.tenants


def test_ring_wraps_around() -> None:
    window = Window()
    for minute in range(400):  # more than the ring holds
        window.add_late(minute, 400, 1.0, minute % 2 == 0, 0)
    assert window.long_counts(400 * 6, 60) == (59, 29)  # minutes 341..399 (400 has none)
    assert window.long_counts(400 * 6, 360) == (359, 179)


def test_traffic_totals_are_monotonic_and_labelled() -> None:
    store = MetricsStore()
    rng = random.Random(3)
    previous = 0
    for step in range(30):
        now = T0 + step * 7
        batch = [rec(now, duration=rng.uniform(0.5, 3000), status=rng.choice([200, 201, 404, 503]),
                     method=rng.choice(["GET", "POST", "BREW"]), tenant=None) for _ in range(50)]
        store.ingest(batch, now)
        store.roll(now)
        totals = store.traffic_totals()
        assert totals.count == previous + 50 and totals.buckets[-1] <= totals.count
        assert all(a <= b for a, b in zip(totals.buckets, totals.buckets[1:], strict=False))
        previous = totals.count
    assert set(totals.requests) <= {f"{m} {c}xx" for m in ("GET", "POST", "OTHER")
                                    for c in (2, 4, 5)}
    assert sum(totals.requests.values()) == totals.count
    assert not store.tenants  # tenantless records only count globally


def store_state(store: MetricsStore) -> object:
    def window(w: Window) -> object:
        buckets = {**{("fine", i): b for i, b in w.fines.items()},
                   **{("minute", m): b for m, b in w.minutes.items()}}
        return {key: (b.count, b.errors, b.sum_ms, dict(b.hist)) for key, b in buckets.items()}

    return (window(store.everything), {t: window(w) for t, w in store.tenants.items()},
            dict(store.traffic.requests), store.records, store.late)


def uniform_records(offsets: st.SearchStrategy[float]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.tuples(
        offsets,
        st.one_of(st.floats(min_value=0, max_value=100_000), st.just(0.0005)),  # duration
        st.sampled_from([200, 201, 404, 500, 503]),
        st.sampled_from(["GET", "POST", "BREW"]),
    ), min_size=UNIFORM_MIN, max_size=60)


@given(st.one_of(uniform_records(st.floats(min_value=-5, max_value=4.99)),  # one 10 s bucket
                 uniform_records(st.floats(min_value=-20, max_value=400))),
       st.sampled_from(["acme", None]), st.booleans())
@settings(max_examples=150, deadline=None)
def test_a_one_tenant_batch_as_one_aggregate_equals_record_by_record(
        fields: list[tuple[float, float, int, str]], tenant: str | None, mixed: bool) -> None:
    """Partitioned ingest's batches (one tenant, one 10 s bucket) take the aggregate path;
    the windows end up exactly as record by record (and other batches still go that way)."""
    now = T0 + 605.0
    batch = [rec(now + offset, duration, status, tenant, method)
             for offset, duration, status, method in fields]
    if mixed:
        batch.append(rec(now, tenant="other"))
    warm = [rec(now - 3, 7.0, tenant="acme"), rec(now - 100, 9.0, tenant="acme")]
    fast, slow = MetricsStore(), MetricsStore()
    for store in (fast, slow):
        store.ingest(warm, now)
    assert fast.ingest(batch, now) == slow._ingest_each(batch, now)
    assert store_state(fast) == store_state(slow)


def test_one_tenant_batches_take_the_aggregate_path() -> None:
    store, now = MetricsStore(), T0 + 5.0
    batch = [rec(now - 1 + i / 100, 5.0 + i, 500 if i % 10 == 0 else 200) for i in range(50)]
    assert store._ingest_uniform(batch, now)
    assert not store._ingest_uniform([*batch, rec(now, tenant="other")], now)
    assert not store._ingest_uniform([*batch, rec(now - 20)], now)  # two 10 s buckets
    assert not store._ingest_uniform([*batch, rec(now + 3600)], now)  # implausible: rejected
    assert not store._ingest_uniform([*batch, rec(datetime.fromtimestamp(now, UTC))], now)
    bucket = store.tenants["acme"].fines[int(now // 10)]
    assert (bucket.count, bucket.errors, sum(bucket.hist.values())) == (50, 5, 50)
    assert store.records == 50
