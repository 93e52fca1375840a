"""A closed-loop publisher process: per stream, at most ``window`` batches unacknowledged.

Each consumer under test reports its progress (the count of batches it has handled) on its
stream's ``progress`` subject every few batches; the publisher never runs more than ``window``
batches ahead of it, so consumers are always busy but no buffer grows without bound (core NATS
would drop instead of queueing).

    python -m bench.ingest.publisher URL SPEC_JSON

SPEC: {"distinct": n, "size": n, "tenants": n, "per_tenant": bool, "window": n,
       "rounds": n, "streams": [{"progress": subject, "items": [[subject, batch], ...]}]}
A stream may name ``progress_url`` (a service's ``/stats``, with ``size``) instead.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import httpx
import nats

from .records import batches, stamp


async def feed(client: Any, stream: dict[str, Any], bodies: list[bytes], window: int,
               rounds: int) -> None:
    acked = {"n": 0}
    moved = asyncio.Event()

    async def on_progress(msg: Any) -> None:
        acked["n"] = max(acked["n"], int(msg.data))
        moved.set()

    if "progress_url" in stream:  # a real service: its /stats, polled
        poller = asyncio.create_task(poll_stats(stream["progress_url"], stream["size"], acked,
                                                moved))
    else:
        await client.subscribe(stream["progress"], cb=on_progress)
        await client.flush()
    sent = 0
    for _ in range(rounds):
        for subject, index in stream["items"]:
            sent += 1
            while sent - acked["n"] > window:
                moved.clear()
                await asyncio.wait_for(moved.wait(), timeout=30)
            await client.publish(subject, stamp(bodies[index], time.time()))
    await client.flush()
    if "progress_url" in stream:
        poller.cancel()


async def poll_stats(url: str, size: int, acked: dict[str, int], moved: asyncio.Event) -> None:
    """Progress of a service process: records counted in its ``/stats``, every 20 ms."""
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            records = (await http.get(url)).json()["records"]
            acked["n"] = max(acked["n"], records // size)
            moved.set()
            await asyncio.sleep(0.02)


async def main(url: str, spec: dict[str, Any]) -> None:
    client = await nats.connect(url, pending_size=256 * 1024 * 1024)
    bodies = batches(spec["distinct"], size=spec["size"], tenants=spec["tenants"],
                     per_tenant=spec.get("per_tenant", False))
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(feed(client, s, bodies, spec["window"], spec["rounds"])
                           for s in spec["streams"]))
    await client.close()
    wall = time.perf_counter() - started
    print(json.dumps({"publisher_busy": (time.process_time() - cpu) / max(wall, 1e-9)}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
