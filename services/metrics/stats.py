"""Window statistics: from a ``Window`` (or merged partition partials) to ``WindowStats``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from shared import FULL_WINDOWS, LONG_WINDOWS, WINDOW_SECONDS, MetricSnapshot, WindowStats

from .sketch import Sketch, merge_into, quantiles
from .window import FINE_S, FINES_PER_MINUTE, MINUTES_KEPT, Window

QUANTILES = (0.5, 0.95, 0.99)


def full_stats(window: str, count: int, errors: int, sum_ms: float, hist: Mapping[int, int],
               rate: float) -> WindowStats:
    p50, p95, p99 = quantiles(hist, QUANTILES) if count else (None, None, None)
    return WindowStats.model_construct(  # internal numbers: no validation needed
        window_s=WINDOW_SECONDS[window],
        count=count,
        errors=errors,
        sum_ms=round(sum_ms, 3),
        rate_per_s=round(rate, 4),
        error_ratio=round(errors / count, 6) if count else None,
        avg_ms=round(sum_ms / count, 3) if count else None,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
    )


def long_stats(window: str, count: int, errors: int) -> WindowStats:
    seconds = WINDOW_SECONDS[window]
    return WindowStats.model_construct(
        window_s=seconds,
        count=count,
        errors=errors,
        rate_per_s=round(count / seconds, 4),
        error_ratio=round(errors / count, 6) if count else None,
    )


def window_stats(window: Window, now: float) -> tuple[dict[str, WindowStats], dict[str, Sketch]]:
    """Stats of every window, and the latency sketches of the full ones."""
    now_idx = int(now // FINE_S)
    now_minute = now_idx // FINES_PER_MINUTE
    one = window.fine_range(now_idx, FINES_PER_MINUTE)
    five = window.five_minutes(now_idx)
    # The time each window really covers (its first bucket's start to now), for rates.
    span_1m = max(now - FINE_S * (now_idx - FINES_PER_MINUTE + 1), 1.0)
    span_5m = max(now - 60 * (now_minute - MINUTES_KEPT + 1), 1.0)
    out = {
        "1m": full_stats("1m", one.count, one.errors, one.sum_ms, one.hist, one.count / span_1m),
        "5m": full_stats("5m", five.count, five.errors, five.sum_ms, five.hist,
                         five.count / span_5m),
    }
    for name in LONG_WINDOWS:
        count, errors = window.long_counts(now_idx, WINDOW_SECONDS[name] // 60)
        out[name] = long_stats(name, count, errors)
    return out, {"1m": one.hist, "5m": five.hist}


def merge_partials(parts: Iterable[MetricSnapshot]) -> dict[str, WindowStats]:
    """The windows of the whole app from partition partials (sketches merge exactly)."""
    parts = list(parts)
    out: dict[str, WindowStats] = {}
    for name in FULL_WINDOWS:
        count = errors = 0
        sum_ms = rate = 0.0
        hist: Sketch = {}
        for part in parts:
            stats = part.windows.get(name)
            if stats is None:
                continue
            count += stats.count
            errors += stats.errors
            sum_ms += stats.sum_ms
            rate += stats.rate_per_s
            merge_into(hist, part.sketch.get(name, {}))
        out[name] = full_stats(name, count, errors, sum_ms, hist, rate)
    for name in LONG_WINDOWS:
        count = sum(p.windows[name].count for p in parts if name in p.windows)
        errors = sum(p.windows[name].errors for p in parts if name in p.windows)
        out[name] = long_stats(name, count, errors)
    return out
