"""Stand-ins for third-party services we cannot run locally, as real servers on real sockets.

- ``FakeMailgun``: the slice of Mailgun's domains API the probe uses
  (``GET /v3/domains/<domain>``, basic auth ``api:<key>``), with a control endpoint to change the
  domain's state or add latency while it runs. Runs in a thread, or as a process:
  ``python -m tests.status.fakes --port N --key K --domain D``.
- ``blackhole``: a port that accepts TCP connections (kernel backlog) and never answers: the
  "slow" dependency every probe must time out on.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class MailgunState:
    key: str
    domains: dict[str, str] = field(default_factory=dict)  # domain -> state
    delay_s: float = 0.0
    requests: int = 0


def _handler(state: MailgunState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            state.requests += 1
            if state.delay_s:
                time.sleep(state.delay_s)
            expected = "Basic " + base64.b64encode(f"api:{state.key}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._send(401, {"message": "Invalid private key"})
                return
            prefix = "/v3/domains/"
            if not self.path.startswith(prefix):
                self._send(404, {"message": "not found"})
                return
            domain = self.path[len(prefix):]
            if domain not in state.domains:
                self._send(404, {"message": "Domain not found"})
                return
            self._send(200, {"domain": {"name": domain, "state": state.domains[domain]},
                             "receiving_dns_records": [], "sending_dns_records": []})

        def do_POST(self) -> None:  # /_control {"state": ..., "delay_s": ...}
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            for domain in state.domains:
                state.domains[domain] = body.get("state", state.domains[domain])
            state.delay_s = float(body.get("delay_s", state.delay_s))
            self._send(200, {"ok": True})

    return Handler


@dataclass
class FakeMailgun:
    key: str = "key-test"
    domain: str = "mg.example.test"
    domain_state: str = "active"
    port: int = 0
    state: MailgunState = field(init=False)
    _server: ThreadingHTTPServer | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.state = MailgunState(self.key, {self.domain: self.domain_state})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeMailgun:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def serve_forever(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self.state))
        self._server.daemon_threads = True
        self._server.serve_forever()


@contextmanager
def blackhole() -> Iterator[int]:
    """A listening port whose connections are never served; yields the port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description="a fake Mailgun domains API")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="key-test")
    parser.add_argument("--domain", default="mg.example.test")
    parser.add_argument("--state", default="active")
    args = parser.parse_args()
    FakeMailgun(args.key, args.domain, args.state, args.port).serve_forever()


if __name__ == "__main__":
    main()
