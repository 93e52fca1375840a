"""The aggregator under test, in a process of its own (``bench.aggregator.run`` starts it).

    python -m bench.aggregator.node        # settings from the environment, as opsctl run

The real service (``services.aggregator.main.build``: subscribers, tenant book, writer, tick
loop) started the way FastStream starts it, minus the HTTP server. Prints ``BENCH-READY`` once
the first view tick ran, runs until a line (or EOF) arrives on stdin, then prints
``BENCH-RESULT`` and one JSON object: every tick (wall s, CPU s, tenant keys looked at,
backlog), writer counters and memory. Other lines on stdout are the service's log.

A tick's CPU is its own: every task is a pure-Python ``asyncio`` task here (``TickTask``) that
charges the CPU of its steps to the tick when it is the view-tick task or was started by it
(the writer's parallel writes), so the snapshot handlers the loop runs while a tick awaits its
writes are not counted (the thread's CPU over the tick's window, which does count them, is in
``Tick.cpu_s``). The pure-Python tasks cost a little more per step than the C ones, alike in
both phases.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from services.aggregator.main import AggregatorSettings, build
from services.aggregator.ticks import Tick
from shared import configure_logging

READY, RESULT = "BENCH-READY", "BENCH-RESULT"
VIEWS_TASK = "aggregator.views"  # ServiceRuntime names its tasks <service>.<task>
TICK_CPU = [0.0]  # CPU seconds charged to view ticks so far


class TickTask(asyncio.tasks._PyTask):  # type: ignore[name-defined,misc]
    """A task that charges its steps' CPU to the view tick when it works for it."""

    for_tick = False

    def _Task__step(self, exc: BaseException | None = None) -> None:  # Task.__step
        if not (self.for_tick or self.get_name() == VIEWS_TASK):
            super()._Task__step(exc)
            return
        started = time.thread_time()
        try:
            super()._Task__step(exc)
        finally:
            TICK_CPU[0] += time.thread_time() - started


def task_factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                 context: Any = None) -> asyncio.Task[Any]:
    task = TickTask(coro, loop=loop, context=context)
    parent = asyncio.current_task(loop)
    task.for_tick = parent is not None and (
        getattr(parent, "for_tick", False) or parent.get_name() == VIEWS_TASK)
    return task


def memory_mib() -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of this process, MiB."""
    out: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


async def main() -> dict[str, Any]:
    settings = AggregatorSettings()
    configure_logging("aggregator", instance=settings.instance, level="WARNING")
    service = build(settings)
    ticks: list[tuple[Tick, float]] = []
    first = asyncio.Event()
    asyncio.get_running_loop().set_task_factory(task_factory)  # type: ignore[arg-type]

    def record(tick: Tick) -> None:
        ticks.append((tick, TICK_CPU[0]))
        first.set()

    service.on_tick.append(record)
    await service.runtime.start()
    await first.wait()
    print(READY, flush=True)
    wall, cpu = time.monotonic(), time.process_time()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    busy = (time.process_time() - cpu) / (time.monotonic() - wall)
    memory = memory_mib()
    await service.runtime.stop()
    views = service.views
    assert views is not None
    return {
        # wall s, own CPU s, thread CPU s over the tick's window, tenant keys, backlog
        "ticks": [[t.wall_s, own - before, t.cpu_s, t.tenants, t.backlog]
                  for (t, own), (_, before) in zip(ticks[1:], ticks, strict=False)],
        "busy": busy,
        "writes": views.writes, "conflicts": views.conflicts, "failures": views.failures,
        "tenants": len(service.tenants.views),
        "snapshots": service.folder.tenant_snapshots,
        "rss_mib": memory.get("VmRSS", 0.0), "peak_rss_mib": memory.get("VmHWM", 0.0),
    }


if __name__ == "__main__":
    print(RESULT, json.dumps(asyncio.run(main())), flush=True)
