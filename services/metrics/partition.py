"""Partitioned ingest: N metrics instances, each owning the tenants NATS maps to it.

The app publishes each tenant's records on ``ops.ingest.requests.<tenant_id>``
(``BatchPublisher(by_tenant=True)``, or ``RequestMetricsMiddleware(by_tenant=True)``) and the
server maps them to partitions with its deterministic ``partition()`` transform
(``mapping_config``)::

    mappings = {
      "ops.ingest.requests.*": "ops.ingest.part.{{partition(2,1)}}.{{wildcard(1)}}"
    }

Instance ``k`` (``OPS_METRICS_PARTITION=k``, ``OPS_METRICS_PARTITIONS=N``) subscribes to
``ops.ingest.part.k.*``. Partition 0 also takes unsuffixed ``ops.ingest.requests`` batches,
runs the database collectors, merges every partition's partial global
(``ops.metrics.partition.<k>``, with latency sketches) into ``ops.metrics.global`` and
evaluates the global alert rules. ``partition_of`` is the server's hash (FNV-1a 32 of the
tenant token, modulo N), so an instance knows which tenants are its own (active timers).
Without ``OPS_METRICS_PARTITION`` one instance takes everything, suffixed or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared import subjects

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def partition_of(tenant_id: str, partitions: int) -> int:
    digest = FNV_OFFSET
    for byte in tenant_id.encode():
        digest = ((digest ^ byte) * FNV_PRIME) & 0xFFFFFFFF
    return digest % partitions


def mapping_config(partitions: int) -> str:
    """The nats-server configuration block that partitions ingest by tenant."""
    transform = "{{partition(" + str(partitions) + ",1)}}.{{wildcard(1)}}"
    target = f"{subjects.INGEST_PARTITION_PREFIX}.{transform}"
    return f'mappings = {{\n  "{subjects.INGEST_REQUESTS_BY_TENANT}": "{target}"\n}}\n'


@dataclass(frozen=True)
class Partitioning:
    partition: int | None = None
    partitions: int = 1

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError("OPS_METRICS_PARTITIONS must be >= 1")
        if self.partition is not None and not 0 <= self.partition < self.partitions:
            raise ValueError("OPS_METRICS_PARTITION must be in [0, OPS_METRICS_PARTITIONS)")

    @property
    def partitioned(self) -> bool:
        return self.partition is not None

    @property
    def owns_global(self) -> bool:
        return self.partition in (None, 0)

    @property
    def label(self) -> str:
        return str(self.partition or 0)

    def ingest_subjects(self) -> list[str]:
        if self.partition is None:
            return [subjects.INGEST_REQUESTS, subjects.INGEST_REQUESTS_BY_TENANT]
        own = [subjects.ingest_partition(self.partition)]
        return own + ([subjects.INGEST_REQUESTS] if self.owns_global else [])

    def owns(self, tenant_id: str) -> bool:
        return self.partition is None or partition_of(tenant_id, self.partitions) == self.partition
