"""The ``ops.ingest.requests`` consumer: decode, window, and dead-letter what is bad.

A message that is not a batch at all (not JSON, wrong shape, oversized) goes to
``ops.dlq.requests`` whole; a batch with some bad records keeps its good ones and sends the bad
ones (a JSON array of them) with one reason each. Every rejected record is counted by kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import Counter

from shared import DeadLetters

from .decode import Decoded, Rejected, decode_batch, encode_record
from .store import MetricsStore

ORIGIN = "requests"
RECORDS = Counter("opsplane_metrics_records_total", "Request records windowed.")
BATCHES = Counter("opsplane_metrics_batches_total", "Request batches received.")
REJECTED = Counter(
    "opsplane_metrics_records_rejected_total", "Request records rejected to the DLQ.", ["kind"]
)
MAX_REASONS = 10


class IngestHandler:
    def __init__(self, store: MetricsStore, dead_letters: DeadLetters,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._dead_letters = dead_letters
        self._clock = clock
        self.batches = 0
        self.rejected = 0

    async def handle(
        self, subject: str, body: bytes, headers: Mapping[str, Any] | None
    ) -> None:
        decoded = decode_batch(body)
        rejected = decoded.rejected
        if decoded.records:
            implausible = self.store.ingest(decoded.records, self._clock())
            if implausible:
                rejected = rejected + _implausible(decoded, implausible)
            RECORDS.inc(len(decoded.records) - len(implausible))
        self.batches += 1
        BATCHES.inc()
        if rejected:
            await self._reject(subject, body, rejected, headers)

    async def _reject(self, subject: str, body: bytes, rejected: list[Rejected],
                      headers: Mapping[str, Any] | None) -> None:
        for item in rejected:
            REJECTED.labels(kind=item.kind).inc()
        self.rejected += len(rejected)
        if len(rejected) == 1 and rejected[0].index is None:  # the message as a whole
            await self._dead_letters.reject(ORIGIN, subject, body, rejected[0].reason, headers)
            return
        rejected = sorted(rejected, key=lambda r: r.index or 0)
        reasons = "; ".join(f"[{r.index}] {r.reason}" for r in rejected[:MAX_REASONS])
        more = len(rejected) - MAX_REASONS
        tail = f" (+{more} more)" if more > 0 else ""
        reason = f"{len(rejected)} bad records: {reasons}{tail}"
        bad_body = b"[" + b",".join(r.raw for r in rejected) + b"]"
        await self._dead_letters.reject(ORIGIN, subject, bad_body, reason, headers)


def _implausible(decoded: Decoded, bad: list[tuple[int, str, str]]) -> list[Rejected]:
    return [
        Rejected(kind, reason, encode_record(decoded.records[position]),
                 decoded.index_of(position))
        for position, kind, reason in bad
    ]
