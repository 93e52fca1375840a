"""A cheap, closed-loop load generator for partitioned ingest: the app side of bench/partition.

It plays many app instances publishing per-tenant request batches
(``ops.ingest.requests.<tenant>``, the body ``BatchPublisher(by_tenant=True)`` sends) at whatever
rate the metrics instances can absorb, and costs as little CPU as possible, because on a small
machine it shares the CPUs with the services it measures:

- every tenant's batch is built once, as a complete NATS protocol frame
  (``PUB <subject> <size>\\r\\n<body>\\r\\n``; ``templates`` distinct sets of records,
  ``bench.ingest.records``, each tenant's frame one of them with its own ``tenant_id``); the
  frames of a stream (the tenants of one partition) form a ring sent round after round;
- frames go out with one ``sendmsg`` (scatter-gather, no copy in user space) per up to
  ``max_frames`` frames on one plain blocking TCP socket: no client library, no event loop;
- each record's ``ts`` is the time of publishing, as an app stamps it: a frame is re-stamped
  when it is about to be sent and its stamp is more than ``restamp_s`` old (same width, so the
  frame's size does not change; the frame is kept in pieces around its ``ts`` values and joined
  again, a copy rather than a search-and-replace);
- flow control: per stream, never more than ``window`` records ahead of what that instance has
  counted (its ``/stats``, polled every ``poll_s`` over one keep-alive HTTP connection), so the
  instances are always busy and no server buffer grows (core NATS would cut a slow consumer).

    python -m bench.partition.loadgen URL SPEC_JSON

SPEC: {"size": records a batch, "tenants": n, "templates": n, "window": records,
       "restamp_s": s, "poll_s": s, "max_frames": n,
       "partitions": n, "streams": [{"stats": "http://127.0.0.1:port/stats", "partition": k}]}

Tenant ``i`` is ``tenant_name(i)``; stream ``k`` sends the tenants ``partition_of`` puts in
partition ``k`` (the server's mapping sends them to instance ``k``).

Prints ``ready`` once connected and built, then sends until SIGTERM or SIGINT, then prints one
JSON line: records sent per stream and the generator's CPU seconds.
"""

from __future__ import annotations

import http.client
import json
import select
import signal
import socket
import sys
import time
from typing import Any
from urllib.parse import urlparse

from services.metrics.partition import partition_of
from shared import subjects

from ..ingest.records import _MARK_BYTES, batches, tenant_name

PLACEHOLDER = tenant_name(0).replace("0", "X").encode()  # same width as every tenant name


class Frame:
    """One tenant's batch as a protocol frame, its records' ``ts`` re-stamped without a search:
    the frame is kept as the pieces between the ``ts`` values, joined with the new value."""

    __slots__ = ("parts", "slots")

    def __init__(self, subject: bytes, body: bytes) -> None:
        pieces = body.split(_MARK_BYTES)
        pieces[0] = b"PUB %s %d\r\n%s" % (subject, len(body), pieces[0])
        pieces[-1] += b"\r\n"
        self.parts: list[bytes] = [_MARK_BYTES] * (2 * len(pieces) - 1)
        self.parts[::2] = pieces
        self.slots = len(pieces) - 1

    def stamped(self, stamp: bytes) -> bytes:
        self.parts[1::2] = [stamp] * self.slots
        return b"".join(self.parts)


class Stream:
    """One partition's tenants: a ring of frames and its flow-control state."""

    def __init__(self, frames: list[Frame], stats_url: str, size: int) -> None:
        self.templates = frames
        self.frames = [b""] * len(frames)
        self.stamped = [0] * len(frames)  # the second each frame was last stamped
        self.next = 0
        self.sent = 0  # records
        self.acked = 0  # records the instance has counted
        self.size = size
        url = urlparse(stats_url)
        self.path = url.path
        self.http = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=5)

    def poll(self) -> None:
        self.http.request("GET", self.path)
        response = self.http.getresponse()
        self.acked = int(json.loads(response.read())["records"])

    def take(self, count: int, now: float, restamp_s: float) -> list[bytes]:
        out = []
        second = int(now)
        stamp = b'"ts":%.3f' % now
        frames, stamped, templates = self.frames, self.stamped, self.templates
        n = len(frames)
        for _ in range(count):
            i = self.next
            if second - stamped[i] >= restamp_s:
                frames[i] = templates[i].stamped(stamp)
                stamped[i] = second
            out.append(frames[i])
            self.next = i + 1 if i + 1 < n else 0
        self.sent += count * self.size
        return out


def build_frames(tenants: list[int], bodies: list[bytes]) -> list[Frame]:
    out = []
    for index in tenants:
        name = tenant_name(index)
        body = bodies[index % len(bodies)].replace(PLACEHOLDER, name.encode())
        out.append(Frame(f"{subjects.INGEST_REQUESTS}.{name}".encode(), body))
    return out


def connect(url: str) -> socket.socket:
    parsed = urlparse(url)
    sock = socket.create_connection((parsed.hostname, parsed.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    read_until(sock, b"\r\n")  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"bench-loadgen"}\r\nPING\r\n')
    reply = read_until(sock, b"PONG\r\n")
    if b"-ERR" in reply:
        raise RuntimeError(f"nats: {reply!r}")
    return sock


def read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data and b"-ERR" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"nats closed the connection: {data!r}")
        data += chunk
    return data


def answer_server(sock: socket.socket) -> None:
    """PONG to the server's PINGs (it drops a client that misses two); report its errors."""
    while select.select([sock], [], [], 0)[0]:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("nats closed the connection")
        if b"-ERR" in data:
            print(data.decode(errors="replace").strip(), file=sys.stderr, flush=True)
        for _ in range(data.count(b"PING")):
            sock.sendall(b"PONG\r\n")


def send(sock: socket.socket, frames: list[bytes]) -> None:
    sent = sock.sendmsg(frames)
    total = sum(len(f) for f in frames)
    while sent < total:  # only on a signal mid-send: the rest, in one piece
        rest = b"".join(frames)[sent:]
        sock.sendall(rest)
        sent = total


def run(url: str, spec: dict[str, Any]) -> dict[str, Any]:
    size, window = spec["size"], spec["window"]
    restamp_s, poll_s = spec.get("restamp_s", 1.0), spec.get("poll_s", 0.1)
    max_frames = spec.get("max_frames", 64)
    # Distinct bodies of one tenant (``tenant_name(0)``), its name made a placeholder that each
    # tenant's frame replaces with its own.
    bodies = [body.replace(tenant_name(0).encode(), PLACEHOLDER) for body in batches(
        spec.get("templates", 50), size=size, tenants=1, per_tenant=True, seed=11)]
    owner = [partition_of(tenant_name(i), spec["partitions"]) for i in range(spec["tenants"])]
    streams = [Stream(build_frames([i for i, k in enumerate(owner) if k == s["partition"]],
                                   bodies), s["stats"], size)
               for s in spec["streams"]]
    sock = connect(url)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    print("ready", flush=True)
    cpu0 = time.process_time()
    next_poll = 0.0
    while not stopping:
        now = time.time()
        if now >= next_poll:
            for stream in streams:
                stream.poll()
            answer_server(sock)
            next_poll = now + poll_s
        idle = True
        for stream in streams:
            room = (stream.acked + window - stream.sent) // size
            if room > 0:
                send(sock, stream.take(min(room, max_frames), now, restamp_s))
                idle = False
        if idle:
            time.sleep(max(0.0, next_poll - time.time()))
    sock.sendall(b"PING\r\n")
    sock.close()
    return {"sent": [s.sent for s in streams], "cpu_s": time.process_time() - cpu0}


def main() -> None:
    result = run(sys.argv[1], json.loads(sys.argv[2]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
