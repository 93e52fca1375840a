"""WebSocket: open a connection to the app's endpoint (``WS_URL``) and time a ping/pong.

The handshake proves the endpoint and whatever proxies sit in front of it upgrade connections;
the ping proves frames flow both ways. A rejected handshake (HTTP 4xx/5xx) is a ``fail`` with
the status; so is a bad URL (misconfiguration).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus, InvalidURI, WebSocketException

from shared import Status

from ..probe import ProbeConfig, ProbeResult, by_latency


@dataclass
class WebSocketProbe:
    url: str
    config: ProbeConfig = field(default_factory=ProbeConfig)
    check: str = "websocket"
    component: str = "websocket"
    measurement: str = "responseTime"
    component_type: str = "component"

    async def run(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with connect(
                self.url,
                open_timeout=self.config.timeout_s,
                close_timeout=1,
                ping_interval=None,
                user_agent_header="opsplane-health",
                max_size=2**16,
            ) as ws:
                handshake_ms = (time.perf_counter() - started) * 1000
                pong = await ws.ping()
                ping_ms = (await pong) * 1000
        except InvalidURI:
            return ProbeResult(
                status=Status.FAIL, output="WS_URL is not a valid ws:// or wss:// URL"
            )
        except InvalidStatus as exc:
            return ProbeResult(
                status=Status.FAIL,
                output=f"handshake rejected: HTTP {exc.response.status_code}",
            )
        except (InvalidHandshake, WebSocketException) as exc:
            return ProbeResult(status=Status.FAIL, output=f"handshake failed: {exc}")
        except OSError as exc:
            return ProbeResult(status=Status.FAIL, output=f"cannot connect: {exc.strerror or exc}")
        total_ms = handshake_ms + ping_ms
        result = by_latency(total_ms, self.config, "handshake + ping")
        detail = f" (handshake {handshake_ms:.1f} ms, ping {ping_ms:.1f} ms)"
        return result.model_copy(update={"output": result.output + detail})
