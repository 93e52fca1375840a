"""NATS: round-trip time to the server and the state of JetStream.

RTT is a real PING/PONG on the service's own connection. JetStream: the account must answer,
every stream opsplane declares must exist, and storage must not be near the account's or a
stream's limit (``warn_at``/``fail_at``, percent). A missing stream is a misconfiguration
(``fail``): commands or alerts would be published into nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.js.errors import NotFoundError

from shared import STREAMS, Status

from ..probe import ProbeConfig, ProbeResult, by_latency, by_threshold


def _percent(used: int, limit: int | None) -> float | None:
    return 100.0 * used / limit if limit and limit > 0 else None


@dataclass
class NatsProbe:
    client: Callable[[], Client]
    config: ProbeConfig = field(default_factory=ProbeConfig)
    streams: tuple[str, ...] = tuple(spec.name for spec in STREAMS)
    check: str = "nats"
    component: str = "nats"
    measurement: str = "responseTime"
    component_type: str = "component"

    async def run(self) -> ProbeResult:
        nc = self.client()
        started = time.perf_counter()
        await nc.flush(timeout=self.config.timeout_s)  # type: ignore[arg-type]
        rtt_ms = (time.perf_counter() - started) * 1000
        timing = by_latency(rtt_ms, self.config, "round trip")
        js = nc.jetstream(timeout=self.config.timeout_s)
        account = await js.account_info()
        statuses, notes = [timing.status], [timing.output]
        usage = _percent(account.storage, account.limits.max_storage)
        if usage is not None:
            statuses.append(by_threshold(usage, self.config))
            notes.append(f"account storage {usage:.0f}% used")
        missing, full = [], []
        for name in self.streams:
            try:
                info = await js.stream_info(name)
            except NotFoundError:
                missing.append(name)
                continue
            used = _percent(info.state.bytes, info.config.max_bytes)
            if used is not None and by_threshold(used, self.config) is not Status.PASS:
                statuses.append(by_threshold(used, self.config))
                full.append(f"{name} {used:.0f}% of max_bytes")
        if missing:
            statuses.append(Status.FAIL)
            notes.append(f"missing stream(s): {', '.join(missing)}")
        if full:
            notes.append("; ".join(full))
        notes.append(f"{account.streams} stream(s), {account.consumers} consumer(s)")
        return timing.model_copy(
            update={"status": Status.worst(statuses), "output": "; ".join(notes)}
        )
