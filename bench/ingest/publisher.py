"""A closed-loop publisher process: per stream, at most ``window`` batches unacknowledged.

Each consumer under test reports its progress: the count of batches it has handled on the
stream's ``progress`` subject, or the records in a service's ``/stats`` (``progress_url``, polled
every 100 ms). The publisher never runs more than ``window`` batches ahead, so consumers are
always busy but no buffer grows without bound (core NATS would drop instead of queueing).

The load generator must cost little next to what it measures (on a 2-CPU machine it shares the
CPUs with the services), so batches are written as pre-built NATS protocol frames
(``PUB <subject> <size>``) on a plain socket, several per write; each body's ``ts`` is
re-stamped at most once a second. Progress uses an ordinary nats-py connection.

    python -m bench.ingest.publisher URL SPEC_JSON

SPEC: {"distinct": n, "size": n, "tenants": n, "per_tenant": bool, "window": n, "rounds": n,
       "nice": n, "streams": [{"progress": subject | "progress_url": url, "size": n,
                               "items": [[subject, batch], ...]}]}
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlparse

import httpx
import nats

from .records import batches, stamp

CHUNK = 16  # frames a write


class RawPublisher:
    """Just enough of the NATS client protocol to publish fast (and answer PINGs)."""

    def __init__(self, url: str) -> None:
        self._url = urlparse(url)
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, writer = await asyncio.open_connection(self._url.hostname, self._url.port)
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"name":"bench"}\r\nPING\r\n')
        await writer.drain()
        assert (await reader.readline()).startswith(b"PONG")
        self._writer = writer

        async def answer_pings() -> None:
            while line := await reader.readline():
                if line.startswith(b"PING"):
                    writer.write(b"PONG\r\n")

        self._reader_task = asyncio.create_task(answer_pings())

    async def write(self, frames: list[bytes]) -> None:
        assert self._writer is not None
        self._writer.write(b"".join(frames))
        await self._writer.drain()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.write(b"PING\r\n")
            await self._writer.drain()
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


def frame(subject: str, body: bytes) -> bytes:
    return b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(body), body)


async def feed(client: Any, raw: RawPublisher, stream: dict[str, Any], bodies: list[bytes],
               window: int, rounds: int) -> None:
    acked = {"n": 0}
    moved = asyncio.Event()

    async def on_progress(msg: Any) -> None:
        acked["n"] = max(acked["n"], int(msg.data))
        moved.set()

    poller = None
    if "progress_url" in stream:  # a real service: its /stats, polled
        poller = asyncio.create_task(poll_stats(stream["progress_url"], stream["size"], acked,
                                                moved))
    else:
        await client.subscribe(stream["progress"], cb=on_progress)
        await client.flush()
    sent = 0
    stamped: dict[int, tuple[int, bytes]] = {}
    pending: list[bytes] = []
    items = stream["items"]
    for _ in range(rounds):
        for subject, index in items:
            sent += 1
            while sent - acked["n"] > window:
                if pending:
                    await raw.write(pending)
                    pending = []
                moved.clear()
                await asyncio.wait_for(moved.wait(), timeout=30)
            second = int(time.time())
            cached = stamped.get(index)
            if cached is None or cached[0] != second:
                cached = stamped[index] = (second, frame(subject, stamp(bodies[index],
                                                                       time.time())))
            pending.append(cached[1])
            if len(pending) >= CHUNK:
                await raw.write(pending)
                pending = []
    if pending:
        await raw.write(pending)
    if poller is not None:
        poller.cancel()


async def poll_stats(url: str, size: int, acked: dict[str, int], moved: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=5.0) as http:
        while True:
            records = (await http.get(url)).json()["records"]
            acked["n"] = max(acked["n"], records // size)
            moved.set()
            await asyncio.sleep(0.1)


async def main(url: str, spec: dict[str, Any]) -> None:
    if spec.get("nice"):
        os.nice(spec["nice"])  # the load generator yields the CPU to the services measured
    client = await nats.connect(url)
    raw = RawPublisher(url)
    await raw.connect()
    bodies = batches(spec["distinct"], size=spec["size"], tenants=spec["tenants"],
                     per_tenant=spec.get("per_tenant", False))
    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(feed(client, raw, s, bodies, spec["window"], spec["rounds"])
                           for s in spec["streams"]))
    await raw.close()
    await client.close()
    wall = time.perf_counter() - started
    print(json.dumps({"publisher_busy": (time.process_time() - cpu) / max(wall, 1e-9)}),
          flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
