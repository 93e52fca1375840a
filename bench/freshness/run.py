"""Freshness: from a health event published to the change visible at ``/api/health``.

    .venv/bin/python -m bench.freshness.run [--samples 200]

Real processes (aggregator, gateway) on an embedded nats-server. Each sample publishes a
``HealthEvent`` for check ``bench`` with a new observed value, then polls ``/api/health`` (every
~2 ms) until that value shows. The path: core NATS → aggregator state → next view tick → KV
compare-and-set → gateway's KV watch → cache → pre-rendered document. Target: p99 <= 1 s.
Exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import nats

from bench.gateway.stack import env_for, nats_server, process, service
from shared import HealthEvent, Status, subjects


async def measure(nats_url: str, health_url: str, samples: int) -> list[float]:
    client = await nats.connect(nats_url)
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=2.0) as http:
        for n in range(samples):
            value = float(1000 + n)
            event = HealthEvent(check="bench", component="bench", status=Status.PASS,
                                observed_value=value, observed_unit="ms", instance="bench",
                                critical=False, interval_s=60)
            started = time.perf_counter()
            await client.publish(subjects.health("bench"), event.to_bytes())
            await client.flush()
            while True:
                body = (await http.get(health_url)).json()
                shown = body["checks"].get("bench:responseTime", [{}])[0].get("observedValue")
                if shown == value:
                    break
                if time.perf_counter() - started > 10:
                    raise RuntimeError(f"sample {n}: value never showed")
                await asyncio.sleep(0.002)
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(random.uniform(0.0, 0.3))  # land anywhere in a view tick
    await client.close()
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    with nats_server() as server:
        env = env_for(server.url)
        a_args, a_env, a_port = service("aggregator", env, work)
        g_args, g_env, g_port = service("gateway", env, work)
        health_url = f"http://127.0.0.1:{g_port}/api/health"
        with process(a_args, a_env, work / "aggregator.log", f"http://127.0.0.1:{a_port}/livez"), \
                process(g_args, g_env, work / "gateway.log", health_url):
            latencies = asyncio.run(measure(server.url, health_url, args.samples))
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    report = {
        "samples": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p99_ms": round(p99 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }
    print(json.dumps(report, indent=2))
    ok = p99 <= 1.0
    print(f"freshness p99 {report['p99_ms']} ms (target <= 1000 ms): {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
