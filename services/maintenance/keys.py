"""The worker's keyring (``OPS_KEYRING``), re-read when the file changes.

No keyring (unset, unreadable or invalid) never stops the worker: every command is then
rejected with reason ``keyring_unavailable`` and the problem is logged loudly, once per distinct
problem. Replacing the file rotates keys without a restart (checked by modification time and
size before each command).
"""

from __future__ import annotations

import os
from pathlib import Path

from shared import ConfigError, Keyring, get_logger

log = get_logger(__name__)


class KeyringSource:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keyring: Keyring | None = None
        self.problem: str | None = None
        self._logged: str | None = None

    def current(self) -> Keyring | None:
        """The keyring, or ``None`` with ``problem`` saying why."""
        if self.path is None:
            self._fail("OPS_KEYRING is not set: every command is rejected")
            return None
        try:
            stat = os.stat(self.path)
        except OSError as exc:
            self._keyring, self._stamp = None, None
            self._fail(f"keyring {self.path}: cannot read: {exc.strerror or exc}")
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._keyring = Keyring.load(self.path)
            except ConfigError as exc:
                self._keyring = None
                self._fail(f"{exc}: every command is rejected")
                return None
            self.problem = self._logged = None
            log.info("keyring.loaded", path=str(self.path), kids=self._keyring.kids)
        if self._keyring is None:
            self._fail(self.problem or f"keyring {self.path}: invalid")
        return self._keyring

    def _fail(self, problem: str) -> None:
        self.problem = problem
        if self._logged != problem:
            self._logged = problem
            log.error("keyring.unavailable", problem=problem)
