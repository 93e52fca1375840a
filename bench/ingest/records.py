"""Request batches for the benchmarks: realistic records, pre-encoded, deterministic (seeded).

The same arguments give the same bytes, so every phase of a run sees the same batches. Every
record's ``ts`` is the placeholder ``TS_MARK``: the publisher stamps the time of publishing
(``stamp``), as an app would, so records are never stale however long a run lasts.
"""

from __future__ import annotations

import random
import uuid

import msgspec

ROUTES = ("/api/projects", "/api/projects/{id}", "/api/time-entries", "/api/timers/{id}/stop",
          "/api/users/me", "/api/reports/weekly")
METHODS = ("GET", "GET", "GET", "POST", "PATCH", "DELETE")


TS_MARK = 1000000000.125
_MARK_BYTES = b'"ts":1000000000.125'


def stamp(body: bytes, now: float) -> bytes:
    return body.replace(_MARK_BYTES, b'"ts":%.3f' % now)


def tenant_name(index: int) -> str:
    return f"tenant-{index:05d}"


def records(count: int, *, tenants: int, seed: int, tenant: str | None = None
            ) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        status = 500 if rng.random() < 0.02 else (404 if rng.random() < 0.03 else 200)
        out.append({
            "ts": TS_MARK,
            "tenant_id": tenant or tenant_name(rng.randrange(tenants)),
            "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "method": rng.choice(METHODS),
            "route": rng.choice(ROUTES),
            "status": status,
            "duration_ms": round(rng.lognormvariate(3.0, 0.9), 3),
        })
    return out


def batches(count: int, *, size: int, tenants: int, per_tenant: bool = False,
            seed: int = 7) -> list[bytes]:
    """``count`` batches of ``size`` records over ``tenants`` tenants: mixed in each batch, or
    (``per_tenant``) batch ``i`` all of tenant ``i % tenants`` (partitioned ingest)."""
    return [
        msgspec.json.encode(records(
            size, tenants=tenants, seed=seed + i,
            tenant=tenant_name(i % tenants) if per_tenant else None,
        ))
        for i in range(count)
    ]
