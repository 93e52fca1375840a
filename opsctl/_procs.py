"""Child processes that die with their parent and stop cleanly.

Every child opsctl starts is put in its own process group (so Ctrl-C in a terminal reaches
opsctl only, which then stops children in order) and asks the kernel for SIGTERM if opsctl
itself dies (Linux ``PR_SET_PDEATHSIG``), so no orphan survives even a ``kill -9`` of opsctl.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # runs in the child between fork and exec
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    cwd: Path | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen[bytes]:
    out: IO[Any] | int = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child owns it; closed below
    try:
        return subprocess.Popen(
            list(args),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_child_setup,
            user=user,
            group=group,
        )
    finally:
        if not isinstance(out, int):
            out.close()


def stop(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout_s: float = 10.0
) -> int:
    """Signal the child's process group, wait, then SIGKILL what is left. Returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # Reap anything else left in the group (a grandchild that ignored the signal).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode


# Ports handed out by this process: never hand the same one out twice, even before it is bound.
_HANDED_OUT: set[int] = set()
# Below Linux's default ephemeral range (32768-60999): a port the kernel picks for bind(0) can be
# taken by any outgoing connection before our child binds it, which made servers exit at start.
_PICK_RANGE = (20000, 32000)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else a free port outside the ephemeral range."""
    if preferred and preferred not in _HANDED_OUT and _bindable(host, preferred):
        _HANDED_OUT.add(preferred)
        return preferred
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(*_PICK_RANGE)
        if port not in _HANDED_OUT and _bindable(host, port):
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel pick
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path | None, lines: int = 15) -> str:
    """The end of a child's log, for an error message that says why it died."""
    if path is None or not path.exists():
        return ""
    text = path.read_bytes()[-4000:].decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout_s: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_tail(log_path)
            raise RuntimeError(
                f"process exited with {proc.returncode} before listening on {port}"
                + (f"; its log ends:\n{tail}" if tail else "")
            )
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")
