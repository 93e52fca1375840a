"""Ports for embedded servers and why a child that died at start-up died."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from opsctl._procs import free_port, spawn, wait_for_port


def _ephemeral_range() -> tuple[int, int]:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's ephemeral range")
def test_ports_are_outside_the_range_outgoing_connections_take() -> None:
    # A kernel-picked port can be grabbed by any outgoing connection before the child binds it:
    # that race made a nats-server exit at start in CI.
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert not [p for p in ports if low <= p <= high]
    assert len(set(ports)) == len(ports), "a port was handed out twice"


def test_a_taken_preferred_port_is_not_returned() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert free_port(taken) != taken


def test_a_child_that_dies_at_start_says_why(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    proc = spawn(
        [sys.executable, "-c", "import sys; print('listen: address already in use'); sys.exit(1)"],
        log_path=log,
    )
    with pytest.raises(RuntimeError, match=r"(?s)exited with 1.*address already in use"):
        wait_for_port("127.0.0.1", free_port(), timeout_s=10, proc=proc, log_path=log)
