"""Aggregator at 10,000 tenants: does ``system`` stay fresh, and what does a view tick cost?

    .venv/bin/python -m bench.aggregator.run [--tenants 10000] [--duration 60]

Two phases in the same run, each on a fresh embedded nats-server, each with the real
aggregator (``bench.aggregator.node``: ``services.aggregator.main.build``) in a process of its
own, default settings (tick 0.25 s, ``system`` refresh 2 s, 250 tenant views a tick):
- ``baseline``: 0 tenants; health checks and global snapshots only;
- ``tenants``: the same plus N tenants' snapshots (``load.py``): everyone at once at the start,
  then each every 15 s (~670/s for 10,000), and every 20 s an incident firing a critical
  alert on 3,000 tenants at once (resolving the previous one's).
Figures: the interval between writes of ``system`` as KV stored them (server time stamps,
watched from this process), the CPU time of a tick's work (the aggregator thread's CPU from the
tick's start to its end: it includes snapshot handlers the loop ran during the tick's writes),
tenant views written, backlog, RSS. Targets: ``system`` write interval p99 <= refresh + tick
(what the gateways' freshness relies on) and tick CPU p99 < tick (a tick fits its period).
Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats

from bench.gateway.stack import REPO, env_for, nats_server
from services.aggregator.main import AggregatorSettings
from shared import SYSTEM_KEY, open_status_bucket

from .load import Load
from .node import READY, RESULT

_FIELDS = AggregatorSettings.model_fields  # the node runs with the defaults
TICK_S: float = _FIELDS["tick_s"].default
REFRESH_S: float = _FIELDS["refresh_s"].default
PER_TICK: int = _FIELDS["tenant_views_per_tick"].default
Row = tuple[str, Callable[[dict[str, Any]], str]]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def watch_system(kv: Any, since: datetime, stamps: list[float]) -> None:
    watcher = await kv.watch(SYSTEM_KEY)
    try:
        async for entry in watcher:
            if entry is not None and entry.created is not None and entry.created >= since:
                stamps.append(entry.created.timestamp())
    finally:
        await watcher.stop()


class Node:
    """The aggregator process: its stdout is its log, plus the bench's two marker lines."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log
        self.ready = asyncio.Event()
        self.result: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.log.open("ab") as log:
            async for line in self.proc.stdout:
                if line.startswith(READY.encode()):
                    self.ready.set()
                elif line.startswith(RESULT.encode()):
                    self.result.set_result(json.loads(line[len(RESULT):]))
                else:
                    log.write(line)
        if not self.result.done():
            self.result.set_exception(RuntimeError(f"aggregator exited; see {self.log}"))

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        return await asyncio.wait_for(self.result, timeout=60)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
        await self.proc.wait()
        await self._reader


async def phase(tenants: int, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    with nats_server() as server:
        env = env_for(server.url, OPS_EXPECTED_SERVICES="aggregator",
                      OPS_INSTANCE=f"bench-aggregator-{tenants}")
        log = logdir / f"aggregator-{tenants}.log"
        node = Node(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.aggregator.node", cwd=REPO, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT), log)
        try:
            ready: asyncio.Future[Any] = asyncio.ensure_future(node.ready.wait())
            await asyncio.wait({ready, node.result}, timeout=60,
                               return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if not node.ready.is_set():
                raise RuntimeError(f"aggregator did not start; see {log}")
            client = await nats.connect(server.url)
            kv = await open_status_bucket(client.jetstream())
            load = Load(tenants, burst=min(args.burst, tenants))
            stamps: list[float] = []
            watcher = asyncio.create_task(watch_system(kv, datetime.now(UTC), stamps))
            began = time.monotonic()
            await load.run(client, args.duration)
            elapsed = time.monotonic() - began
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await client.close()
            result = await node.stop()
        finally:
            await node.close()
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    ticks = result.pop("ticks")
    cpu = [t[1] for t in ticks]
    return {
        "tenants": tenants, "published": load.published, "bursts": load.bursts,
        "system_writes": len(stamps),
        "interval_p50_s": statistics.median(intervals) if intervals else float("nan"),
        "interval_p99_s": pct(intervals, 0.99),
        "interval_max_s": max(intervals, default=float("nan")),
        "ticks": len(ticks), "tick_cpu_p50_ms": pct(cpu, 0.5) * 1000,
        "tick_cpu_p99_ms": pct(cpu, 0.99) * 1000, "tick_cpu_max_ms": max(cpu) * 1000,
        "tick_wall_p99_ms": pct([t[0] for t in ticks], 0.99) * 1000,
        "tick_window_cpu_p99_ms": pct([t[2] for t in ticks], 0.99) * 1000,
        "max_tenants_a_tick": max((t[3] for t in ticks), default=0),
        "max_backlog": max((t[4] for t in ticks), default=0),
        "tenant_writes_per_s": (result["writes"] - len(stamps)) / elapsed,
        **result,
    }


def report(base: dict[str, Any], load: dict[str, Any], args: argparse.Namespace) -> bool:
    rows: list[Row] = [
        ("system write interval p50 / p99 / max (s)", lambda r: f"{r['interval_p50_s']:.2f} / "
         f"{r['interval_p99_s']:.2f} / {r['interval_max_s']:.2f}"),
        ("system writes", lambda r: f"{r['system_writes']}"),
        ("tick CPU p50 / p99 / max (ms)", lambda r: f"{r['tick_cpu_p50_ms']:.2f} / "
         f"{r['tick_cpu_p99_ms']:.2f} / {r['tick_cpu_max_ms']:.1f}"),
        ("tick wall p99 (ms)", lambda r: f"{r['tick_wall_p99_ms']:.1f}"),
        ("thread CPU in a tick's window p99 (ms)",
         lambda r: f"{r['tick_window_cpu_p99_ms']:.1f}"),
        ("aggregator CPU busy", lambda r: f"{r['busy']:.1%}"),
        ("snapshots published / folded", lambda r: f"{r['published']:,} / {r['snapshots']:,}"),
        ("tenant views written /s", lambda r: f"{r['tenant_writes_per_s']:.0f}"),
        ("max tenants a tick / max backlog", lambda r: f"{r['max_tenants_a_tick']} / "
         f"{r['max_backlog']:,}"),
        ("CAS conflicts / failed writes", lambda r: f"{r['conflicts']} / {r['failures']}"),
        ("RSS / peak RSS (MiB)", lambda r: f"{r['rss_mib']:.0f} / {r['peak_rss_mib']:.0f}"),
    ]
    print(f"\naggregator, {args.duration:.0f} s a phase, tick {TICK_S} s, refresh {REFRESH_S} s, "
          f"{PER_TICK} tenant views a tick; {load['bursts']} bursts of {args.burst:,} tenants")
    print(f"{'':44s}{'baseline (0 tenants)':>26s}{f'{args.tenants:,} tenants':>26s}")
    for label, cell in rows:
        print(f"{label:44s}{cell(base):>26s}{cell(load):>26s}")
    cpu_ratio = load["tick_cpu_p99_ms"] / max(base["tick_cpu_p99_ms"], 1e-6)
    rss_ratio = load["peak_rss_mib"] / max(base["peak_rss_mib"], 1e-6)
    print(f"ratios to baseline: tick CPU p99 {cpu_ratio:.1f}x, peak RSS {rss_ratio:.2f}x")
    fresh = bool(load["interval_p99_s"] <= REFRESH_S + TICK_S)
    fits = bool(load["tick_cpu_p99_ms"] < TICK_S * 1000)
    print(f"system write interval p99 {load['interval_p99_s']:.2f} s (target <= "
          f"{REFRESH_S + TICK_S} s): {'OK' if fresh else 'MISSED'}; tick CPU p99 "
          f"{load['tick_cpu_p99_ms']:.1f} ms (target < {TICK_S * 1000:.0f} ms): "
          f"{'OK' if fits else 'MISSED'}")
    return fresh and fits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds a phase")
    parser.add_argument("--burst", type=int, default=3_000, help="tenants in an incident")
    parser.add_argument("--json", action="store_true", help="also print the raw figures")
    args = parser.parse_args()
    logdir = Path(REPO / ".opsplane" / "bench-aggregator")
    logdir.mkdir(parents=True, exist_ok=True)
    base = asyncio.run(phase(0, args, logdir))
    print(f"baseline done: {base['system_writes']} system writes", flush=True)
    load = asyncio.run(phase(args.tenants, args, logdir))
    if args.json:
        print(json.dumps({"baseline": base, "tenants": load}, indent=2))
    return 0 if report(base, load, args) else 1


if __name__ == "__main__":
    sys.exit(main())
