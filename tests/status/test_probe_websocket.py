"""The WebSocket probe against a real WebSocket server: up, rejected, down, slow, bad URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from http import HTTPStatus

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from services.health.probe import ProbeConfig, run_once
from services.health.probes.websocket import WebSocketProbe
from shared import Status
from tests.status.fakes import blackhole

FAST = ProbeConfig(interval_s=1, timeout_s=1)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture()
async def ws_server() -> AsyncIterator[Server]:
    async with serve(echo, "127.0.0.1", 0) as server:
        yield server


def url_of(server: Server, path: str = "/ws") -> str:
    port = next(iter(server.sockets)).getsockname()[1]
    return f"ws://127.0.0.1:{port}{path}"


async def test_up_times_handshake_and_ping(ws_server: Server) -> None:
    event = await run_once(WebSocketProbe(url_of(ws_server), FAST), "t")
    assert event.status is Status.PASS, event.output
    assert "handshake" in event.output and "ping" in event.output
    assert event.observed_unit == "ms"


async def test_rejected_handshake_fails_with_the_status() -> None:
    def forbid(conn: ServerConnection, request: Request) -> Response:
        return conn.respond(HTTPStatus.FORBIDDEN, "no\n")

    async with serve(echo, "127.0.0.1", 0, process_request=forbid) as server:
        event = await run_once(WebSocketProbe(url_of(server), FAST), "t")
    assert event.status is Status.FAIL
    assert event.output == "handshake rejected: HTTP 403"


async def test_slow_handshake_times_out() -> None:
    release = asyncio.Event()

    async def stall(conn: ServerConnection, request: Request) -> None:
        await release.wait()

    async with serve(echo, "127.0.0.1", 0, process_request=stall) as server:
        event = await run_once(WebSocketProbe(url_of(server), ProbeConfig(timeout_s=0.3)), "t")
        release.set()
    assert event.status is Status.FAIL
    assert "tim" in event.output.lower()


async def test_a_port_that_never_answers_times_out() -> None:
    with blackhole() as port:
        probe = WebSocketProbe(f"ws://127.0.0.1:{port}/ws", ProbeConfig(timeout_s=0.3))
        event = await run_once(probe, "t")
    assert event.status is Status.FAIL


async def test_down_fails() -> None:
    with blackhole() as port:
        pass
    event = await run_once(WebSocketProbe(f"ws://127.0.0.1:{port}/ws", FAST), "t")
    assert event.status is Status.FAIL and "cannot connect" in event.output


async def test_bad_url_is_a_misconfiguration() -> None:
    event = await run_once(WebSocketProbe("http://127.0.0.1:1/ws", FAST), "t")
    assert event.status is Status.FAIL and "not a valid" in event.output
