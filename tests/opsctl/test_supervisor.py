"""The supervisor with real child processes: restart with backoff, crash loops, ordered stop."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil

from opsctl._supervisor import Policy, ServiceProcess, Supervisor
from tests.harness import wait_until
from tests.opsctl.conftest import assert_no_survivors

FAST = Policy(
    base_delay_s=0.05, max_delay_s=0.2, loop_window_s=30, loop_threshold=3, loop_delay_s=30
)


class Events:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def matching(self, text: str) -> list[str]:
        return [message for _, message in self.lines if text in message]


def python_child(name: str, code: str, tmp_path: Path) -> ServiceProcess:
    return ServiceProcess(
        name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log"
    )


def poll_until(sup: Supervisor, predicate: object, timeout_s: float, message: str) -> None:
    def check() -> bool:
        sup.poll()
        return bool(predicate())  # type: ignore[operator]

    wait_until(check, timeout_s=timeout_s, interval_s=0.02, message=message)


def test_a_killed_child_is_restarted_with_a_new_pid(tmp_path: Path) -> None:
    events = Events()
    sup = Supervisor(events, FAST)
    entry = sup.add(python_child("sleeper", "import time; time.sleep(60)", tmp_path), "service")
    sup.start(entry)
    first = entry.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    poll_until(sup, lambda: entry.pid not in (None, first), 10, "restart")
    assert entry.restarts == 1
    assert entry.last_exit == -signal.SIGKILL
    assert events.matching("sleeper exited with code -9")
    assert events.matching("sleeper restarted")
    sup.stop_all()
    assert entry.pid is None


def test_a_crash_loop_is_reported_once_and_not_spun(tmp_path: Path) -> None:
    events = Events()
    sup = Supervisor(events, FAST)
    entry = sup.add(python_child("broken", "raise SystemExit(3)", tmp_path), "service")
    sup.start(entry)
    poll_until(sup, lambda: entry.crash_loop, 10, "crash loop detected")
    assert entry.last_exit == 3
    assert entry.state == "crash-loop"
    assert len(events.matching("is crash-looping")) == 1
    # Backed off for the loop delay: polling on does not start it again.
    assert entry.due is not None and entry.due - time.monotonic() > FAST.loop_delay_s - 5
    restarts = entry.restarts
    for _ in range(50):
        sup.poll()
    assert entry.restarts == restarts
    assert len(events.matching("is crash-looping")) == 1


def test_backoff_doubles_between_quick_deaths(tmp_path: Path) -> None:
    events = Events()
    policy = Policy(base_delay_s=0.05, max_delay_s=10, loop_window_s=30, loop_threshold=10)
    sup = Supervisor(events, policy)
    entry = sup.add(python_child("flaky", "raise SystemExit(1)", tmp_path), "service")
    sup.start(entry)
    poll_until(sup, lambda: len(entry.deaths) >= 4, 10, "four deaths")
    delays = [float(m.split("restarting in ")[1].split(" s")[0]) for m in events.matching("exited")]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.4]


def test_stop_all_stops_services_before_servers_and_whole_groups(tmp_path: Path) -> None:
    order: list[str] = []

    class Recorded(ServiceProcess):
        def stop(self) -> None:
            order.append(self.name)
            super().stop()

    sup = Supervisor(Events(), FAST)
    # A "server" whose process group holds a grandchild that ignores SIGTERM.
    stubborn = "import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    stubborn += "subprocess.Popen(['sleep', '60']); time.sleep(60)"
    server = Recorded(
        "server",
        [sys.executable, "-c", stubborn],
        dict(os.environ),
        tmp_path / "s.log",
        stop_timeout_s=1,
    )
    service = Recorded("svc", ["sleep", "60"], dict(os.environ), tmp_path / "svc.log")
    for child, kind in ((server, "server"), (service, "service")):
        sup.start(sup.add(child, kind))  # type: ignore[arg-type]
    assert server.proc is not None
    wait_until(
        lambda: psutil.Process(server.proc.pid).children(), timeout_s=5, message="grandchild"
    )
    tree = [
        psutil.Process(server.proc.pid),
        *psutil.Process(server.proc.pid).children(recursive=True),
    ]
    groups = {server.proc.pid}
    assert service.proc is not None
    tree.append(psutil.Process(service.proc.pid))
    groups.add(service.proc.pid)

    sup.stop_all()
    assert order == ["svc", "server"]
    assert_no_survivors(tree, groups)
