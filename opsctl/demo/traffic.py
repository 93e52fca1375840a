"""Simulated request traffic for the demo tenants: what the status page shows after ``make run``.

Four healthy tenants (~80-150 ms average, ~0.2% 5xx) and one that is not: "umbrella" averages
~700 ms (over the 500 ms threshold) with ~5% 5xx (over the 1% threshold).
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from typing import Any

from shared import request_record


@dataclass(frozen=True)
class TenantProfile:
    tenant_id: str
    mean_ms: float
    error_ratio: float  # share of 5xx
    weight: float = 1.0  # share of the traffic relative to the others


PROFILES: tuple[TenantProfile, ...] = (
    TenantProfile("acme", mean_ms=90, error_ratio=0.002, weight=1.5),
    TenantProfile("globex", mean_ms=120, error_ratio=0.002),
    TenantProfile("initech", mean_ms=150, error_ratio=0.003, weight=0.6),
    TenantProfile("umbrella", mean_ms=700, error_ratio=0.05),
    TenantProfile("hooli", mean_ms=80, error_ratio=0.001, weight=1.2),
)
SLOW_TENANT = "umbrella"

# (method, route template, weight): the app's routes, as a router reports them.
ROUTES: tuple[tuple[str, str, float], ...] = (
    ("GET", "/api/timers/active", 5.0),
    ("GET", "/api/time-entries", 4.0),
    ("POST", "/api/time-entries", 2.0),
    ("POST", "/api/timers/{id}/stop", 1.5),
    ("GET", "/api/projects", 2.0),
    ("GET", "/api/projects/{id}", 1.0),
    ("GET", "/api/users/me", 3.0),
    ("POST", "/api/auth/refresh", 0.5),
)
_SIGMA = 0.6  # spread of the log-normal latency


class TrafficModel:
    def __init__(self, rate_per_tenant: float, seed: int | None = None) -> None:
        self.rate = rate_per_tenant
        self._rng = random.Random(seed)  # noqa: S311 - simulated traffic, not security
        self._routes = [(m, r) for m, r, _ in ROUTES]
        self._route_weights = [w for _, _, w in ROUTES]

    def tick(self, seconds: float) -> list[dict[str, Any]]:
        """The request records of ``seconds`` of traffic (Poisson arrivals per tenant)."""
        records: list[dict[str, Any]] = []
        for profile in PROFILES:
            for _ in range(self._poisson(self.rate * profile.weight * seconds)):
                records.append(self.record(profile))
        return records

    def record(self, profile: TenantProfile) -> dict[str, Any]:
        method, route = self._rng.choices(self._routes, self._route_weights)[0]
        mu = math.log(profile.mean_ms) - _SIGMA**2 / 2  # so the mean is ``mean_ms``
        duration = self._rng.lognormvariate(mu, _SIGMA)
        return request_record(
            method=method,
            route=route,
            status=self._status(method, profile),
            duration_ms=duration,
            tenant_id=profile.tenant_id,
            request_id=uuid.uuid4().hex,
        )

    def _status(self, method: str, profile: TenantProfile) -> int:
        roll = self._rng.random()
        if roll < profile.error_ratio:
            return self._rng.choice((500, 502, 503, 504))
        if roll < profile.error_ratio + 0.02:
            return self._rng.choice((400, 401, 404, 409))
        return 201 if method == "POST" else 200

    def _poisson(self, lam: float) -> int:
        if lam <= 0:
            return 0
        # Knuth's method is fine for the small per-tick means used here.
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self._rng.random()
            if p <= limit:
                return k
            k += 1

    def chance(self, probability: float) -> bool:
        return self._rng.random() < probability

    def pick(self, options: list[str]) -> str:
        return self._rng.choice(options)
