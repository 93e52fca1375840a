"""The schedule file (``OPS_SCHEDULE``, TOML): what the worker runs on its own, and when.

```toml
timezone = "UTC"               # default for every entry (an IANA name)
misfire_grace_s = 600          # default: a fire missed by less than this still runs, once
include_defaults = false       # true: the built-in entries too (a same-named entry replaces one)

[[jobs]]
name = "nightly-backup"        # 1-64 of a-z 0-9 . _ - : the metric label, part of the job id
cron = "0 2 * * *"             # 5 fields (minute hour day-of-month month day-of-week) or @daily...
action = "backup.create"       # any non-destructive, non-control action
params = { label = "nightly" } # validated like a signed command's params
enabled = true
timezone = "Europe/Berlin"     # optional, overrides the file's
jitter_s = 0                   # optional: run up to this many seconds late (the same on every
                               # replica: derived from the name and the fire time)
misfire_grace_s = 600          # optional, overrides the file's
```

Unset ``OPS_SCHEDULE``: ``DEFAULTS`` below. Every problem is a ``ConfigError`` naming the entry.
Destructive actions (``shared.DESTRUCTIVE_ACTIONS``) are refused: they need a person's signed
command with a target. ``job.cancel`` is refused too (it acts on one job, never on a clock).
"""

from __future__ import annotations

import hashlib
import tomllib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import DESTRUCTIVE_ACTIONS, ActionParams, CommandRejected, ConfigError, parse_params

from .actions import CONTROL_ACTIONS

# Job ids of scheduled runs: uuid5 in this namespace of "<name>@<fire time, UTC>".
SCHEDULE_NAMESPACE = uuid.UUID("6f0b3d4e-2a7c-5b51-9a86-0c1e2f3a4b5d")
DEFAULT_MISFIRE_GRACE_S = 600.0
_NAME = r"^[a-z0-9][a-z0-9._\-]{0,63}$"

DEFAULTS = """
timezone = "UTC"

[[jobs]]
name = "nightly-backup"
cron = "0 2 * * *"
action = "backup.create"
params = { label = "nightly" }

[[jobs]]
name = "backup-verify"
cron = "0 3 * * *"
action = "backup.verify"
params = { mode = "quick" }

[[jobs]]
name = "restore-drill"
cron = "0 4 * * 0"
action = "backup.verify"
params = { mode = "restore" }

[[jobs]]
name = "backup-prune"
cron = "0 5 * * *"
action = "backup.prune"

[[jobs]]
name = "weekly-db-report"
cron = "0 6 * * 1"
action = "db.report"

[[jobs]]
name = "monthly-vacuum"
cron = "0 4 1 * *"
action = "db.vacuum"
"""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=_NAME)]
    cron: Annotated[str, Field(min_length=1, max_length=200)]
    action: Annotated[str, Field(min_length=1, max_length=64)]
    params: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    timezone: str | None = None
    jitter_s: Annotated[float, Field(ge=0, le=3600)] = 0.0
    misfire_grace_s: Annotated[float, Field(ge=0, le=7 * 86400)] | None = None


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    timezone: str = "UTC"
    misfire_grace_s: Annotated[float, Field(ge=0, le=7 * 86400)] = DEFAULT_MISFIRE_GRACE_S
    include_defaults: bool = False
    jobs: list[dict[str, Any]] = Field(default_factory=list)


def fire_key(fire: datetime) -> str:
    """A fire time as the canonical UTC text used in job ids and logs."""
    return fire.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def scheduled_job_id(name: str, fire: datetime) -> str:
    """The job id of entry ``name``'s run for ``fire``: the same on every replica."""
    return str(uuid.uuid5(SCHEDULE_NAMESPACE, f"{name}@{fire_key(fire)}"))


@dataclass(frozen=True)
class ScheduledJob:
    """One validated entry."""

    name: str
    cron: str
    action: str
    params: ActionParams
    timezone: str
    tz: ZoneInfo
    enabled: bool = True
    jitter_s: float = 0.0
    misfire_grace_s: float = DEFAULT_MISFIRE_GRACE_S

    @property
    def issuer(self) -> str:
        return f"scheduler:{self.name}"

    @property
    def _fixed_hour(self) -> bool:
        fields = self.cron.split()
        return len(fields) != 5 or not fields[1].startswith("*")

    def next_fire(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after``, in UTC.

        Cron fields are read in the entry's timezone. When the clocks go forward, a time that
        does not exist fires at the first minute after the gap; when they go back, a job at a
        fixed hour runs once (the repeated wall-clock time is skipped), as Vixie cron does."""
        it = croniter(self.cron, after.astimezone(self.tz))
        for _ in range(8):
            candidate: datetime = it.get_next(datetime).astimezone(self.tz)
            repeated = candidate.replace(fold=0).utcoffset() != candidate.utcoffset()
            if not (repeated and self._fixed_hour):
                return candidate.astimezone(UTC)
        raise ConfigError(f"schedule entry {self.name!r}: no fire time after {after}")

    def jitter(self, fire: datetime) -> float:
        """Seconds this fire runs late: derived from name and fire time (every replica agrees)."""
        if self.jitter_s <= 0:
            return 0.0
        digest = hashlib.sha256(f"{self.name}@{fire_key(fire)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 * self.jitter_s

    def run_at(self, fire: datetime) -> datetime:
        return fire + timedelta(seconds=self.jitter(fire))

    def describe(self) -> str:
        return f"cron {self.cron!r} in {self.timezone}"


@dataclass(frozen=True)
class Schedule:
    jobs: tuple[ScheduledJob, ...]
    source: str  # "defaults" or the file's path

    @property
    def enabled(self) -> tuple[ScheduledJob, ...]:
        return tuple(j for j in self.jobs if j.enabled)

    def by_name(self, name: str) -> ScheduledJob:
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"{where}: unknown timezone {name!r}") from exc


def _condense(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "entry"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)


def _entry(raw: Any, where: str, *, timezone: str, grace: float) -> ScheduledJob:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each [[jobs]] entry must be a table")
    label = raw.get("name") if isinstance(raw.get("name"), str) else None
    where = f"{where} {label!r}" if label else where
    try:
        entry = _Entry.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {_condense(exc)}") from None
    if entry.action in DESTRUCTIVE_ACTIONS:
        raise ConfigError(
            f"{where}: {entry.action} is destructive and cannot be scheduled: it needs a "
            "person's signed command with a target (opsctl cmd)"
        )
    if entry.action in CONTROL_ACTIONS:
        raise ConfigError(f"{where}: {entry.action} acts on one job and cannot be scheduled")
    try:
        params = parse_params(entry.action, entry.params)
    except CommandRejected as exc:
        raise ConfigError(f"{where}: {exc}") from None
    fields = entry.cron.split()
    if not (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@"))):
        raise ConfigError(
            f"{where}: cron {entry.cron!r} must have 5 fields (minute hour day month weekday) "
            "or be one of @hourly, @daily, @weekly, @monthly, @yearly"
        )
    if not croniter.is_valid(entry.cron):
        raise ConfigError(f"{where}: invalid cron expression {entry.cron!r}")
    zone_name = entry.timezone or timezone
    job = ScheduledJob(
        name=entry.name, cron=entry.cron, action=entry.action, params=params,
        timezone=zone_name, tz=_zone(zone_name, where), enabled=entry.enabled,
        jitter_s=entry.jitter_s,
        misfire_grace_s=grace if entry.misfire_grace_s is None else entry.misfire_grace_s,
    )
    try:
        job.next_fire(datetime(2000, 1, 1, tzinfo=UTC))
    except (CroniterBadCronError, CroniterBadDateError, ConfigError) as exc:
        raise ConfigError(f"{where}: cron {entry.cron!r} never fires ({exc})") from None
    return job


def parse_schedule(text: str, source: str = "schedule") -> Schedule:
    """Validate a schedule file's text; ``ConfigError`` with the entry's name otherwise."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        top = _File.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_condense(exc)}") from None
    _zone(top.timezone, source)
    jobs: dict[str, ScheduledJob] = {}
    if top.include_defaults:
        jobs = {j.name: j for j in parse_schedule(DEFAULTS, "defaults").jobs}
    seen: set[str] = set()
    for index, item in enumerate(top.jobs):
        job = _entry(item, f"{source}: jobs[{index}]", timezone=top.timezone,
                     grace=top.misfire_grace_s)
        if job.name in seen:
            raise ConfigError(f"{source}: jobs[{index}]: duplicate entry name {job.name!r}")
        seen.add(job.name)
        jobs[job.name] = job  # replaces a default of the same name
    return Schedule(jobs=tuple(jobs.values()), source=source)


def load_schedule(path: Path | None) -> Schedule:
    """``OPS_SCHEDULE``'s entries, or the built-in defaults when it is unset."""
    if path is None:
        return parse_schedule(DEFAULTS, "defaults")
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"OPS_SCHEDULE {path}: {exc.strerror or exc}") from None
    return parse_schedule(text, f"OPS_SCHEDULE {path}")
