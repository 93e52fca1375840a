"""Writes views to KV bucket ``ops_status`` with compare-and-set on the revision.

Two aggregator replicas see the same events and compute the same views; CAS makes sure neither
blindly overwrites a newer view of the other. A view is written when it changed, or every
``refresh_s`` so its ``generated_at`` tells readers the aggregator is alive (KV put costs ~0.25 ms:
writing on change or on a short tick, never per event).
"""

from __future__ import annotations

import time
from typing import Protocol

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError

from shared import get_logger

log = get_logger(__name__)


class KeyValueLike(Protocol):
    async def get(self, key: str) -> object: ...
    async def create(self, key: str, value: bytes) -> int: ...
    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...


class ViewWriter:
    def __init__(self, kv: KeyValueLike, *, refresh_s: float = 2.0) -> None:
        self._kv = kv
        self._refresh_s = refresh_s
        self._revisions: dict[str, int] = {}
        self._last: dict[str, tuple[bytes, float]] = {}
        self.writes = 0
        self.conflicts = 0

    def due(self, key: str, fingerprint: bytes) -> bool:
        """Whether ``key`` must be written: its content changed, or it is due a refresh."""
        last = self._last.get(key)
        return last is None or last[0] != fingerprint or time.monotonic() - last[1] >= self._refresh_s

    async def write(self, key: str, value: bytes, fingerprint: bytes) -> None:
        try:
            revision = await self._put(key, value)
        except KeyWrongLastSequenceError:
            # Another replica wrote since our last write: take its revision and write ours on top
            # (ours was computed from events at least as new; views carry generated_at).
            self.conflicts += 1
            revision = await self._put(key, value, reload=True)
        self._revisions[key] = revision
        self._last[key] = (fingerprint, time.monotonic())
        self.writes += 1

    async def _put(self, key: str, value: bytes, *, reload: bool = False) -> int:
        revision = None if reload else self._revisions.get(key)
        if revision is None:
            try:
                entry = await self._kv.get(key)
                revision = entry.revision  # type: ignore[attr-defined]
            except (NotFoundError, KeyError):
                revision = None
        if revision is None:
            try:
                return await self._kv.create(key, value)
            except KeyWrongLastSequenceError:
                entry = await self._kv.get(key)
                revision = entry.revision  # type: ignore[attr-defined]
        return await self._kv.update(key, value, last=revision)
