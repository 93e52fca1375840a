"""``/api/health`` under wrk, against a bare uvicorn + Starlette static-JSON app, in one run.

    .venv/bin/python -m bench.gateway.run [--duration 10] [--connections 32]

1. Throughput: wrk at full speed on both, same connections; ratio = gateway / baseline
   (target >= 0.7).
2. Latency at a fixed 500 requests/s (wrk's Lua ``delay()`` paces every connection): p50/p99 of
   the gateway (target p99 < 10 ms).
3. Memory: the gateway's and the baseline's resident set size after the runs.
Needs ``wrk`` (Debian package ``wrk``). Exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from opsctl._procs import free_port

from .stack import env_for, nats_server, process, put_view, realistic_view, rss_mib, service

SUMMARY_LUA = """
done = function(summary, latency, requests)
  io.write(string.format('{"requests": %d, "duration_us": %d, "errors": %d, '
    .. '"non2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\\n',
    summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
"""
PACED_LUA = """
local pace_ms = tonumber(os.getenv("PACE_MS"))
delay = function() return pace_ms end
""" + SUMMARY_LUA


def wrk(url: str, *, seconds: int, connections: int, script: Path,
        env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script),
         url],
        capture_output=True, text=True, check=True, env=env,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return dict(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=int, default=500)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    full, paced = work / "full.lua", work / "paced.lua"
    full.write_text(SUMMARY_LUA)
    paced.write_text(PACED_LUA)
    with nats_server() as nats:
        asyncio.run(put_view(nats.url, realistic_view()))
        env = env_for(nats.url)
        g_args, g_env, g_port = service("gateway", env, work)
        gateway_url = f"http://127.0.0.1:{g_port}/api/health"
        with process(g_args, g_env, work / "gateway.log", gateway_url) as gateway:
            body = httpx.get(gateway_url).content
            (work / "body.json").write_bytes(body)
            b_port = free_port()
            b_args = [sys.executable, "-m", "uvicorn", "bench.gateway.baseline:app", "--host",
                      "127.0.0.1", "--port", str(b_port), "--no-access-log", "--log-level",
                      "warning"]
            baseline_url = f"http://127.0.0.1:{b_port}/api/health"
            with process(b_args, {**env, "BENCH_BODY": str(work / "body.json")},
                         work / "baseline.log", baseline_url) as baseline:
                warm = max(2, args.duration // 5)
                wrk(gateway_url, seconds=warm, connections=args.connections, script=full)
                wrk(baseline_url, seconds=warm, connections=args.connections, script=full)
                base = wrk(baseline_url, seconds=args.duration, connections=args.connections,
                           script=full)
                gate = wrk(gateway_url, seconds=args.duration, connections=args.connections,
                           script=full)
                connections = 10
                pace_ms = str(round(1000 * connections / args.rate))
                paced_env = {**env, "PACE_MS": pace_ms}
                at_rate = wrk(gateway_url, seconds=args.duration, connections=connections,
                              script=paced, env=paced_env)
                base_at_rate = wrk(baseline_url, seconds=args.duration, connections=connections,
                                   script=paced, env=paced_env)
                memory = {"gateway_rss_mib": round(rss_mib(gateway.pid), 1),
                          "baseline_rss_mib": round(rss_mib(baseline.pid), 1)}
    ratio = gate["rps"] / base["rps"]
    p99_ms = at_rate["p99_us"] / 1000
    report = {
        "body_bytes": len(body),
        "baseline_rps": round(base["rps"]), "gateway_rps": round(gate["rps"]),
        "ratio": round(ratio, 3),
        "at_rate": {"target_rps": args.rate, "gateway_rps": round(at_rate["rps"]),
                    "gateway_p50_ms": at_rate["p50_us"] / 1000, "gateway_p99_ms": p99_ms,
                    "gateway_max_ms": at_rate["max_us"] / 1000,
                    "baseline_p99_ms": base_at_rate["p99_us"] / 1000},
        "errors": gate["errors"] + at_rate["errors"], "non2xx": gate["non2xx"],
        **memory,
    }
    print(json.dumps(report, indent=2))
    ok = ratio >= 0.7 and p99_ms < 10 and report["errors"] == 0 and report["non2xx"] == 0
    print(f"ratio {ratio:.2f} (target >= 0.7), p99 at {args.rate} req/s {p99_ms:.2f} ms "
          f"(target < 10 ms), gateway RSS {memory['gateway_rss_mib']} MiB: "
          f"{'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
