"""Writes views to KV bucket ``ops_status`` with compare-and-set, and publishes transitions.

Two aggregator replicas see the same events but not at the same instant. Every write is a
compare-and-set on the revision this replica last knew. When it fails, another replica wrote in
between: we read that view, **merge** it into our state (newer results per check/instance/tenant
win), recompute, and write again only if the merged view still differs. So neither replica ever
takes back what the other knew, and the two converge on one view.

Transitions (``StatusChange`` on ``ops.status.*``) are computed against the previous revision's
content and published by the replica whose write made the change, with
``Nats-Msg-Id = <key>@<revision>/<kind>.<name>``: exactly one event per change, whatever N.

A view is written when it changed, or when it falls due a refresh (``refresh_s``, minus
``tick_s`` so that, checked every tick, it is never older than ``refresh_s`` in KV): readers tell
from ``system``'s ``generated_at`` that an aggregator is alive. KV puts are ~4k/s: on change or
on a tick, never per event.

A source with many keys (``tenant.*``: 10,000 tenants) tracks which changed
(``ChangeTracking``): ``sync`` then looks at those keys only, oldest first, at most ``limit`` of
them, and ``parallel`` writes in flight (a KV put is a round trip; one at a time would cap the
rate at 1/RTT). A key is settled when KV holds what it was built from; a failed write leaves it
dirty, behind the others, and ends this sync (NATS down or slow: the next tick tries again).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, Protocol

from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from prometheus_client import Counter

from shared import Status, StatusChange, get_logger, subjects

log = get_logger(__name__)
StatusMap = dict[tuple[str, str], tuple[Status, str]]
PublishChange = Callable[[StatusChange, str], Awaitable[None]]
MAX_ATTEMPTS = 5
VIEW_WRITES = Counter("opsplane_view_writes_total", "Views written to KV ops_status.")
VIEW_CONFLICTS = Counter(
    "opsplane_view_conflicts_total",
    "Compare-and-set writes refused because another aggregator replica wrote first.",
)
VIEW_WRITE_FAILURES = Counter(
    "opsplane_view_write_failures_total",
    "View writes that failed (NATS down or slow); the view stays due for the next tick.",
)
STATUS_CHANGES = Counter("opsplane_status_changes_total", "Status transitions published.")


class KeyValueLike(Protocol):
    async def get(self, key: str) -> Any: ...
    async def create(self, key: str, value: bytes) -> int: ...
    async def update(self, key: str, value: bytes, last: int | None = None) -> int: ...


class ViewSource(Protocol):
    """One family of keys (``system``; ``tenant.*``) and how to build, read and merge them."""

    def keys(self) -> Iterable[str]: ...
    def view(self, key: str, now: datetime) -> Any: ...
    def parse(self, key: str, raw: bytes) -> Any: ...
    def merge(self, key: str, raw: bytes) -> None: ...
    def statuses(self, view: Any) -> StatusMap: ...


class ChangeTracking(Protocol):
    """A source that knows which keys changed since KV last held them (``TenantBook``)."""

    def pending(self) -> Iterator[str]:
        """Dirty keys, the longest-waiting first."""

    def version(self, key: str) -> int | None:
        """The version of ``key``'s latest change (``None``: not dirty)."""

    def settle(self, key: str, version: int | None) -> None:
        """KV holds ``key`` as of ``version``: clean unless it changed again since."""

    def retry_later(self, key: str) -> None:
        """Keep ``key`` dirty, behind the other dirty keys."""


_TRACKING = ("pending", "version", "settle", "retry_later")


@functools.cache
def _tracks_changes(kind: type) -> bool:
    return all(callable(getattr(kind, name, None)) for name in _TRACKING)


def tracking(source: ViewSource) -> ChangeTracking | None:
    """``source`` as a ``ChangeTracking`` if it is one (checked once per class: a protocol
    ``isinstance`` costs ~10 us, too much per key)."""
    return source if _tracks_changes(type(source)) else None  # type: ignore[return-value]


def fingerprint(view: Any) -> bytes:
    """What a view says, without its time stamp (a 16-byte digest: 10,000 tenants kept cheap)."""
    dumped = view.model_dump_json(exclude={"generated_at"}).encode()
    return hashlib.blake2b(dumped, digest_size=16).digest()


@dataclass
class Known:
    """What this replica knows of one key in KV: its revision and content."""

    revision: int | None
    fingerprint: bytes | None
    statuses: StatusMap
    written_at: float  # monotonic; when the key was last fresh in KV as far as we know


class ViewWriter:
    def __init__(self, kv: KeyValueLike, publish: PublishChange | None = None, *,
                 refresh_s: float = 2.0, tick_s: float = 0.0, parallel: int = 16) -> None:
        self._kv = kv
        self._publish = publish
        self._refresh_s = refresh_s
        self._tick_s = tick_s  # the caller's tick: a refresh falls due one tick early
        self._parallel = max(1, parallel)
        self._known: dict[str, Known] = {}
        self.writes = 0
        self.conflicts = 0
        self.failures = 0
        self.changes_published = 0

    async def sync(self, source: ViewSource, now: datetime, *, limit: int | None = None,
                   refresh_s: float | None = None) -> int:
        """Write the keys of ``source`` that changed or are due a refresh; returns how many
        keys were looked at. A ``ChangeTracking`` source offers only its dirty keys (at most
        ``limit``); the others every key. ``refresh_s`` overrides the writer's for this call."""
        tracked = tracking(source)
        keys = list(islice(tracked.pending() if tracked else source.keys(), limit))
        if not keys:
            return 0
        refresh = self._refresh_s if refresh_s is None else refresh_s
        todo = iter(keys)  # shared by the workers: each key is taken once
        failed = False

        async def work() -> None:
            nonlocal failed
            for key in todo:
                if failed:
                    return
                try:
                    settled = await self.sync_key(source, key, now, refresh_s=refresh)
                except Exception as exc:  # NATS down or slow: the next tick tries again
                    failed = True
                    self.failures += 1
                    VIEW_WRITE_FAILURES.inc()
                    log.warning("view.write_failed", key=key, error=str(exc) or type(exc).__name__)
                    settled = False
                if not settled and tracked is not None:
                    tracked.retry_later(key)

        await asyncio.gather(*(work() for _ in range(min(self._parallel, len(keys)))))
        return len(keys)

    async def sync_key(self, source: ViewSource, key: str, now: datetime, *,
                       refresh_s: float | None = None) -> bool:
        """Bring ``key`` in KV up to date; ``True`` once it is (written, or nothing to write).
        A ``ChangeTracking`` source's key is then settled at the version that was written."""
        tracked = tracking(source)
        refresh = (self._refresh_s if refresh_s is None else refresh_s) - self._tick_s
        known = self._known.get(key)
        if known is None:
            known = await self._load(source, key)
        for _ in range(MAX_ATTEMPTS):
            version = tracked.version(key) if tracked else None  # no await until view() is built
            view = source.view(key, now)
            if view is None:
                if tracked:
                    tracked.settle(key, version)
                return True
            print_ = fingerprint(view)
            started = time.monotonic()
            if print_ == known.fingerprint and started - known.written_at < refresh:
                if tracked:
                    tracked.settle(key, version)
                return True
            try:
                revision = await self._cas(key, view.to_bytes(), known.revision)
            except KeyWrongLastSequenceError:
                self.conflicts += 1
                VIEW_CONFLICTS.inc()
                known = await self._load(source, key)
                continue
            previous = known.statuses
            known = Known(revision, print_, source.statuses(view), started)
            self._known[key] = known
            if tracked:
                tracked.settle(key, version)
            self.writes += 1
            VIEW_WRITES.inc()
            await self._transitions(key, revision, previous, known.statuses, view)
            return True
        log.warning("view.write_contended", key=key, attempts=MAX_ATTEMPTS)
        return False

    async def _cas(self, key: str, value: bytes, revision: int | None) -> int:
        if revision is None:
            return await self._kv.create(key, value)
        return await self._kv.update(key, value, last=revision)

    async def _load(self, source: ViewSource, key: str) -> Known:
        """Read ``key`` from KV and merge it into the source's state."""
        try:
            entry = await self._kv.get(key)
        except (NotFoundError, KeyError):
            entry = None
        if entry is None or entry.value is None:
            revision = None if entry is None else entry.revision
            known = Known(revision, None, {}, 0.0)
        else:
            source.merge(key, entry.value)
            current = source.parse(key, entry.value)
            statuses = source.statuses(current) if current is not None else {}
            stamp = getattr(current, "generated_at", None)
            age = (datetime.now(stamp.tzinfo) - stamp).total_seconds() if stamp else 1e9
            written_at = time.monotonic() - max(0.0, age)
            printed = fingerprint(current) if current is not None else None
            known = Known(entry.revision, printed, statuses, written_at)
        self._known[key] = known
        return known

    async def _transitions(self, key: str, revision: int, before: StatusMap, after: StatusMap,
                           view: Any) -> None:
        if self._publish is None:
            return
        for (kind, name), (status, output) in sorted(after.items()):
            previous = before.get((kind, name))
            if previous is not None and previous[0] is status:
                continue
            if previous is None and not before and kind != "system" and kind != "tenant":
                continue  # a brand-new view: one event for the whole, not one per part
            change = StatusChange(
                key=key, kind=kind, name=name,
                previous=None if previous is None else previous[0], status=status,
                output=output[:2048], revision=revision,
                time=getattr(view, "generated_at", None) or datetime.now().astimezone(),
            )
            msg_id = f"{key}@{revision}/{kind}.{name}"
            try:
                await self._publish(change, msg_id)
                self.changes_published += 1
                STATUS_CHANGES.inc()
            except Exception as exc:
                log.warning("status.publish_failed", key=key, error=str(exc))
            log.info("status.changed", key=key, kind=kind, name=name,
                     previous=change.previous, status=status)


def change_subject(change: StatusChange) -> str:
    if change.kind == "system":
        return subjects.status_change("system")
    return subjects.status_change(change.kind, change.name)
